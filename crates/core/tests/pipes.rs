//! Per-connector sampling and field selection through the whole core pipeline: records in by
//! the dispatcher, routed, delivered by the engine to in-memory connectors, offsets
//! committed.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::*;

/// Keeps the JSON of every event it is given, as the shipment writes it, by offset.
#[derive(Default)]
struct Recorder {
    shipped: Mutex<Vec<(i64, Vec<u8>)>>,
}

struct Mem(Arc<Recorder>);

impl Connector for Mem {
    type Request = Vec<(i64, Vec<u8>)>;
    type Response = ();

    fn hard_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: 10_000,
            max_bytes: 1 << 30,
            max_linger: Duration::from_secs(60),
        }
    }
    fn encoded_len(&self, event: &Event) -> usize {
        event.json().len()
    }
    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<Self::Request>, EncodeError> {
        let mut request = Vec::new();
        for e in shipment.events() {
            let mut json = Vec::new();
            shipment.write_event(e, &mut json);
            assert_eq!(json.len(), shipment.event_json_len(e), "exact length");
            let mut scratch = Vec::new();
            assert_eq!(shipment.event_json(e, &mut scratch), &json[..]);
            request.push((e.origin().offset, json));
        }
        Ok(Encoded::all(request))
    }
    fn request_size(&self, request: &Self::Request) -> usize {
        request.iter().map(|(_, j)| j.len()).sum()
    }
    async fn send(&self, request: &Self::Request) -> Result<(), SendError> {
        self.0
            .shipped
            .lock()
            .unwrap()
            .extend(request.iter().cloned());
        Ok(())
    }
    fn classify(&self, _: &(), _events: &[Event]) -> Verdict {
        Verdict::new(200, Outcome::Delivered)
    }
}

const P: PartitionId = PartitionId(0);

fn settings() -> EngineSettings {
    EngineSettings {
        limits: BatchLimits {
            max_events: 50,
            max_bytes: 1 << 20,
            max_linger: Duration::from_millis(5),
        },
        retry: RetryPolicy::default(),
        concurrency: 2,
        request_timeout: Duration::from_secs(5),
        append_observability: false,
        health_check: HealthCheck {
            enabled: false,
            ..HealthCheck::default()
        },
        rate_limit: None,
        fields: None,
    }
}

/// A dispatcher over `routes`, each delivered by its own in-memory connector.
struct Pipes {
    dispatcher: Dispatcher,
    router: Arc<Router>,
    recorders: Vec<Arc<Recorder>>,
}

fn pipes(routes: Vec<(Route, EngineSettings)>) -> Pipes {
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    let timings = TimingRecorder::new(16);
    let mut reach = Vec::new();
    let mut recorders = Vec::new();
    let mut plain = Vec::new();
    for (i, (route, settings)) in routes.into_iter().enumerate() {
        let recorder = Arc::new(Recorder::default());
        let wiring = Wiring {
            acker: acker.clone(),
            timings: timings.clone(),
            dead_letters: None,
            isolation: None,
            stats: None,
        };
        let handle = Engine::spawn(
            Mem(recorder.clone()),
            &route.id,
            ConnectorIndex(i as u8),
            settings,
            wiring,
        );
        reach.push(Some(Reach::One(handle)));
        recorders.push(recorder);
        plain.push(route);
    }
    let router = Arc::new(Router::new(plain, &[]));
    let stats = Arc::new(SourceStats::default());
    let dispatcher = Dispatcher::new(
        router.clone(),
        reach,
        acker,
        stats,
        switchyard_core::record::Limits {
            max_bytes: 1 << 20,
            max_members: 1_000,
        },
        None,
    );
    Pipes {
        dispatcher,
        router,
        recorders,
    }
}

impl Pipes {
    fn feed(&self, records: &[String]) {
        let topic: Arc<str> = Arc::from("qoe");
        for (offset, r) in records.iter().enumerate() {
            let origin = Origin {
                partition: P,
                topic: topic.clone(),
                kafka_partition: 0,
                offset: offset as i64,
                member: None,
            };
            self.dispatcher.accept(Bytes::from(r.clone()), None, origin);
        }
    }

    /// Closes every worker once its deliveries settle; returns what each connector got and
    /// the partition's commit point.
    async fn finish(self) -> (Vec<Vec<(i64, Vec<u8>)>>, Option<i64>, Arc<Router>) {
        let acker = self.dispatcher.acker().clone();
        for h in self.dispatcher.close() {
            h.await.unwrap();
        }
        let commit = acker
            .lock()
            .commit_points()
            .into_iter()
            .find(|(p, _)| *p == P)
            .map(|(_, o)| o);
        let shipped = self
            .recorders
            .iter()
            .map(|r| {
                let mut v = r.shipped.lock().unwrap().clone();
                v.sort_by_key(|(o, _)| *o);
                v
            })
            .collect();
        (shipped, commit, self.router)
    }
}

fn route(id: &str) -> Route {
    Route {
        id: id.into(),
        enabled: true,
        filter: Filter::default(),
    }
}

fn record(session: &str, i: usize) -> String {
    format!(
        r#"{{"connector_list":"all,some","event":{{"type":"heartbeat","timestamp":{i}}},"user_details":{{"content_session_id":"{session}"}}}}"#
    )
}

#[tokio::test]
async fn sampled_out_events_skip_that_connector_reach_the_others_and_still_commit() {
    let sample = Sample::new(0.3, DEFAULT_SAMPLE_KEY).unwrap();
    let mut some = route("some");
    some.filter.sample = Some(sample.clone());
    let p = pipes(vec![(route("all"), settings()), (some, settings())]);
    // 300 sessions of 3 events each, interleaved as a live topic would have them.
    let records: Vec<String> = (0..900)
        .map(|i| record(&format!("session-{}", i % 300), i))
        .collect();
    p.feed(&records);
    let (shipped, commit, router) = p.finish().await;

    let all: Vec<i64> = shipped[0].iter().map(|(o, _)| *o).collect();
    assert_eq!(
        all,
        (0..900).collect::<Vec<_>>(),
        "the other connector gets all"
    );
    let expected: Vec<i64> = (0..900)
        .filter(|i| sample.takes_session(&format!("session-{}", i % 300)))
        .collect();
    let some: Vec<i64> = shipped[1].iter().map(|(o, _)| *o).collect();
    assert_eq!(some, expected, "whole sessions, as the hash decides");
    assert!(!expected.is_empty() && expected.len() < 900);
    assert_eq!(
        router.sampled_out_counts(),
        [("some".to_string(), (900 - expected.len()) as u64)]
    );
    assert_eq!(commit, Some(900), "nothing is left unfinished");
}

const SAMPLE: &str = include_str!("../../testkit/data/sample-event.json");

/// The sample event, sent to `connectors`, as the producer wrote it (its key order kept).
fn sample_to(connectors: &str, i: usize) -> String {
    let mut e: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
    e["connector_list"] = connectors.into();
    e["event_id"] = format!("e-{i}").into();
    serde_json::to_string_pretty(&e).unwrap()
}

#[tokio::test]
async fn field_selection_shapes_one_connectors_events_and_leaves_the_others_raw() {
    let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let fields = FieldSelection::new(
        &s(&["event", "user_details"]),
        &s(&["user_details.client_ip"]),
        &[("event.type".into(), "event_type".into())],
        &[("env".into(), "prod".into())],
    )
    .unwrap();
    let shaping = EngineSettings {
        // One event per request, one at a time: the second and third carry the records of
        // the delivery before them.
        limits: BatchLimits {
            max_events: 1,
            ..settings().limits
        },
        concurrency: 1,
        append_observability: true,
        fields: Some(Arc::new(fields)),
        ..settings()
    };
    let p = pipes(vec![(route("raw"), settings()), (route("shaped"), shaping)]);
    let records: Vec<String> = (0..3).map(|i| sample_to("raw,shaped", i)).collect();
    p.feed(&records);
    let (shipped, commit, _) = p.finish().await;

    // Untouched: byte for byte the record without its trailing whitespace.
    for (o, json) in &shipped[0] {
        assert_eq!(json.as_slice(), records[*o as usize].trim_end().as_bytes());
    }
    assert_eq!(shipped[1].len(), 3);
    let raw: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
    for (o, json) in &shipped[1] {
        let v: serde_json::Value = serde_json::from_slice(json).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec!["event", "user_details", "event_type", "env"];
        if *o > 0 {
            // The records still land in ops_metadata.collector_observability, made anew
            // since `include` left the event's own out.
            expected.push("ops_metadata");
            let list = v["ops_metadata"]["collector_observability"]
                .as_array()
                .unwrap();
            assert_eq!(list.len(), 4, "{list:?}");
            assert!(list.iter().any(|r| r["metric_name"] == "send_duration_ms"));
        }
        assert_eq!(keys, expected, "offset {o}");
        assert_eq!(v["event_type"], raw["event"]["type"]);
        assert!(v["user_details"].get("client_ip").is_none());
        assert_eq!(v["env"], "prod");
    }
    assert_eq!(commit, Some(3));
}
