//! Destination isolation end to end (docs/isolation.md): a destination that is down, or only
//! throttles, is detached and its events parked in Kafka, while the others keep receiving
//! every event and the commit point moves on; once it answers again, its parked events are
//! drained to it and it flows directly again. Nothing is lost on the way.

use std::collections::HashMap;
use switchyard::Pipeline;
use switchyard_core::State;
use switchyard_testkit::FakeDatadog;
use switchyard_testkit::hec::Reply;
use switchyard_testkit::probe::{http_get, metric};
use switchyard_tests::*;

/// Small in-flight limits, so that without isolation a destination that is down would pause
/// every partition after a few hundred events.
const KAFKA: &str = "max_inflight_per_partition = 200\nmax_inflight_events = 400";

/// HEC detaches after failing for 1 s; the parking topic has room for every test event
/// (the mock cluster keeps 5 MiB per partition).
fn settings(h: &Harness, group: &str, dd: &FakeDatadog) -> switchyard::Settings {
    let parking = format!("{group}-parked");
    h.broker.create_topic(&parking, 4).unwrap();
    h.settings_with(
        group,
        KAFKA,
        "detach_after_secs = 1",
        &format!(
            "[connectors.{SPLUNK}.batch]\nmax_linger_ms = 20\n{}\n[parking]\ntopic = \"{parking}\"",
            datadog_table(
                &dd.url(),
                &format!("[connectors.{DD}.batch]\nmax_linger_ms = 20")
            )
        ),
    )
}

fn both(run: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    events_to(run, n, &[&format!("{SPLUNK},{DD}")])
}

/// Waits until the group has committed `end` on every partition of the test topic.
fn committed_to(pipeline: &Pipeline, end: i64) -> bool {
    tokio::task::block_in_place(|| {
        pipeline.wait_for_source(PATIENCE, |s| {
            let c = committed_by_partition(&s.committed);
            c.len() == 2 && c.values().all(|o| *o == end)
        })
    })
}

fn state(pipeline: &Pipeline) -> State {
    pipeline.isolation(SPLUNK).unwrap().isolation.state()
}

/// Every produced id, and how often HEC indexed it.
fn hec_counts(h: &Harness, ids: &[String]) -> HashMap<String, usize> {
    let indexed = h.indexed_ids();
    ids.iter()
        .map(|id| (id.clone(), indexed.get(id).copied().unwrap_or(0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_long_holds_back_neither_the_others_nor_the_commit_point() {
    down_for_long(Harness::new(2).await, "g-iso-down").await;
}

/// The same on Tansu, an independent Kafka-compatible broker: parking, the drain's
/// end-of-partition and the commits are not an artefact of librdkafka's own mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tansu_too_a_destination_down_holds_back_neither_the_others_nor_the_commit_point() {
    let broker = switchyard_testkit::Broker::tansu().unwrap_or_else(|e| panic!("{e}"));
    let h = Harness::on(broker, 2, switchyard_testkit::FakeHec::builder(TOKEN)).await;
    down_for_long(h, "g-iso-tansu").await;
}

async fn down_for_long(h: Harness, group: &str) {
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    h.hec.fail_randomly(1000); // HEC answers 503 to everything
    let first = h.produce(both("down-a", 1000));
    let pipeline = Pipeline::start(&settings(&h, group, &dd)).await.unwrap();

    // Datadog gets every event while HEC is down, and the commit point reaches the end.
    assert!(dd.wait_for_received(1000, PATIENCE).await);
    assert!(
        committed_to(&pipeline, 500),
        "{:?}",
        pipeline.source_status()
    );
    assert_eq!(state(&pipeline), State::Detached);
    // Producers keep writing during the outage: those flow too.
    let second = both("down-b", 600);
    let mut ids: Vec<String> = first.iter().map(|p| p.id.clone()).collect();
    ids.extend(second.iter().map(|(id, _)| id.clone()));
    h.broker.produce(
        TOPIC,
        second
            .into_iter()
            .enumerate()
            .map(|(i, (_, b))| ((i % 2) as i32, b)),
    );
    assert!(dd.wait_for_received(1600, PATIENCE).await);
    assert!(
        committed_to(&pipeline, 800),
        "{:?}",
        pipeline.source_status()
    );
    assert_eq!(h.hec.received_count(), 0, "HEC is still down");
    assert_eq!(state(&pipeline), State::Detached);
    // Its health check fails, but a detached destination does not make the pod unready.
    assert!(matches!(
        pipeline.connector_stats(SPLUNK).unwrap().health(),
        switchyard_core::stats::Health::Failing(_)
    ));
    assert_eq!(pipeline.monitor().readiness(), Ok(()));
    // And it is visible: state, parked events, the oldest one's age.
    switchyard::admin::prometheus();
    let (addr, _server) =
        switchyard::admin::serve("127.0.0.1:0".parse().unwrap(), pipeline.monitor())
            .await
            .unwrap();
    let (_, text) = http_get(&addr.to_string(), "/metrics").await;
    for line in [
        "switchyard_connector_state{connector=\"dz-connector-splunk\",state=\"detached\"} 1",
        "switchyard_connector_state{connector=\"dz-connector-splunk\",state=\"flowing\"} 0",
        "switchyard_connector_state{connector=\"dz-connector-datadog\",state=\"flowing\"} 1",
        "switchyard_events_parked_total{connector=\"dz-connector-splunk\"} 1600",
        "switchyard_events_parked_total{connector=\"dz-connector-datadog\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        metric(
            &text,
            "switchyard_parked_oldest_age_seconds{connector=\"dz-connector-splunk\"}"
        )
        .is_some()
    );
    let parked = pipeline.connector_stats(SPLUNK).unwrap().snapshot().parked;
    assert_eq!(parked, 1600, "every HEC event parked once");
    // A parked record is the original bytes with headers saying whose, why and from where.
    let parked = read_letters(
        h.broker.bootstrap_servers(),
        &format!("{group}-parked"),
        4,
        1,
    );
    let Letter {
        payload, headers, ..
    } = parked.into_iter().next().expect("a parked record");
    let original: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert!(ids.contains(&original["event_id"].as_str().unwrap().to_string()));
    assert_eq!(headers["switchyard.connector"], SPLUNK);
    assert!(
        headers["switchyard.reason"].starts_with("parked: "),
        "{headers:?}"
    );
    assert_eq!(headers["switchyard.source_topic"], TOPIC);
    for key in [
        "switchyard.attempts",
        "switchyard.source_partition",
        "switchyard.source_offset",
        "switchyard.first_attempt_time",
    ] {
        assert!(headers[key].parse::<u64>().is_ok(), "{key}: {headers:?}");
    }

    // HEC recovers: its parked events are drained to it, then it flows directly again.
    h.hec.fail_randomly(0);
    assert!(h.hec.wait_for_received(1600, PATIENCE).await);
    assert!(
        until(|| state(&pipeline) == State::Flowing).await,
        "{:?}",
        state(&pipeline)
    );
    let counts = hec_counts(&h, &ids);
    assert!(counts.values().all(|n| *n >= 1), "every event reached HEC");
    let third = both("down-c", 100);
    h.broker.produce(
        TOPIC,
        third
            .into_iter()
            .enumerate()
            .map(|(i, (_, b))| ((i % 2) as i32, b)),
    );
    assert!(h.hec.wait_for_received(1700, PATIENCE).await);
    assert!(committed_to(&pipeline, 850));
    let isolated = pipeline.isolation(SPLUNK).unwrap();
    assert_eq!(
        isolated.isolation.parked(),
        1600,
        "flowing: nothing more parked"
    );
    assert_eq!(isolated.drain.snapshot().delivered, 1600);
    assert!(dd.violations().is_empty());
    assert!(pipeline.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_only_throttles_does_not_stall_the_others() {
    let h = Harness::new(2).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    // 429 with Retry-After for a long while: never a failure that gives up.
    h.hec
        .script((0..100_000).map(|_| Reply::queue_full(Some(2))));
    let produced = h.produce(both("throttle", 1000));
    let pipeline = Pipeline::start(&settings(&h, "g-iso-429", &dd))
        .await
        .unwrap();
    assert!(dd.wait_for_received(1000, PATIENCE).await);
    assert!(
        committed_to(&pipeline, 500),
        "{:?}",
        pipeline.source_status()
    );
    assert_ne!(state(&pipeline), State::Flowing);
    h.hec.clear_script();
    assert!(h.hec.wait_for_received(1000, PATIENCE).await);
    let ids: Vec<String> = produced.iter().map(|p| p.id.clone()).collect();
    assert!(hec_counts(&h, &ids).values().all(|n| *n >= 1));
    assert!(pipeline.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_parking_topic_down_the_partition_holds_and_nothing_is_skipped() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let h = Harness::new(2).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    h.hec.fail_randomly(1000);
    let produced = h.produce(both("held", 200));
    let settings = settings(&h, "g-iso-held", &dd);
    // Every Produce fails from now on (retriably): parking cannot land.
    let mock = h
        .broker
        .mock_cluster()
        .expect("fault injection needs the mock cluster");
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        dd.wait_for_received(200, PATIENCE).await,
        "Datadog still gets its events"
    );
    assert!(until(|| state(&pipeline) == State::Detached).await);
    // Detached, but nothing could be parked: the commit point has not moved.
    let stats = pipeline.connector_stats(SPLUNK).unwrap();
    assert_eq!(stats.snapshot().parked, 0);
    assert!(
        committed_by_partition(&pipeline.source_status().committed)
            .values()
            .all(|o| *o == 0),
        "{:?}",
        pipeline.source_status()
    );
    // The topic takes writes again: every event is parked, then the partitions move on.
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    assert!(
        committed_to(&pipeline, 100),
        "{:?}",
        pipeline.source_status()
    );
    assert_eq!(stats.snapshot().parked, 200);
    h.hec.fail_randomly(0);
    assert!(h.hec.wait_for_received(200, PATIENCE).await);
    let ids: Vec<String> = produced.iter().map(|p| p.id.clone()).collect();
    assert!(hec_counts(&h, &ids).values().all(|n| *n >= 1));
    assert!(pipeline.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_destination_loses_nothing() {
    let h = Harness::new(2).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    let pipeline = Pipeline::start(&settings(&h, "g-iso-flap", &dd))
        .await
        .unwrap();
    // HEC goes down and up while events keep coming: detach, drain, detach again...
    let mut ids = Vec::new();
    for round in 0..4 {
        h.hec.fail_randomly(if round % 2 == 0 { 1000 } else { 0 });
        let batch = both(&format!("flap-{round}"), 300);
        ids.extend(batch.iter().map(|(id, _)| id.clone()));
        h.broker.produce(
            TOPIC,
            batch
                .into_iter()
                .enumerate()
                .map(|(i, (_, b))| ((i % 2) as i32, b)),
        );
        // Down: until it is detached. Up: until its backlog is drained and it flows again.
        let want = if round % 2 == 0 {
            State::Detached
        } else {
            State::Flowing
        };
        assert!(
            until(|| dd.received_count() >= 300 * (round + 1) && state(&pipeline) == want).await,
            "round {round}: {:?}",
            state(&pipeline)
        );
    }
    h.hec.fail_randomly(0);
    assert!(h.hec.wait_for_received(1200, PATIENCE).await);
    assert!(until(|| hec_counts(&h, &ids).values().all(|n| *n >= 1)).await);
    assert!(until(|| state(&pipeline) == State::Flowing).await);
    assert!(committed_to(&pipeline, 600));
    let isolation = pipeline.isolation(SPLUNK).unwrap().isolation;
    assert!(isolation.changes() >= 4, "detached and back at least twice");
    assert!(pipeline.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_detached_loses_nothing() {
    let h = Harness::new(2).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    h.hec.fail_randomly(1000);
    let produced = h.produce(both("rebalance", 800));
    let settings = settings(&h, "g-iso-rebalance", &dd);
    let first = Pipeline::start(&settings).await.unwrap();
    assert!(until(|| state(&first) == State::Detached).await);
    // A second replica joins both groups (main and drains): partitions move while parked
    // events wait and HEC is still down.
    let second = Pipeline::start(&settings).await.unwrap();
    assert!(
        tokio::task::block_in_place(|| {
            second.wait_for_source(PATIENCE, |s| s.assigned > 0 && s.rebalances > 0)
        }),
        "the second replica got partitions"
    );
    assert!(dd.wait_for_received(800, PATIENCE).await);
    h.hec.fail_randomly(0);
    let ids: Vec<String> = produced.iter().map(|p| p.id.clone()).collect();
    assert!(until(|| hec_counts(&h, &ids).values().all(|n| *n >= 1)).await);
    assert!(second.shutdown().await);
    assert!(first.shutdown().await);
}
