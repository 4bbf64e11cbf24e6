//! Shared helpers for the end-to-end tests: a broker with a topic, a strict fake HEC, and
//! settings that point the real pipeline at both.

use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use switchyard::Settings;
use switchyard_testkit::{Broker, FakeHec, Generator};

pub const TOKEN: &str = "5f0b7e0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
pub const TOPIC: &str = "qoe";
pub const SPLUNK: &str = "dz-connector-splunk";
/// Long enough for a slow CI machine; tests end as soon as their condition holds.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// librdkafka's mock cluster keeps only the newest 5 MiB of each partition (hard-coded in
/// rdkafka_mock.c), so a test that preloads events keeps each partition under that: about
/// 1,400 sample-size events.
pub const MOCK_PARTITION_BYTES: usize = 5 << 20;

pub struct Harness {
    pub broker: Broker,
    pub hec: FakeHec,
    pub partitions: i32,
}

/// One produced record and where it landed.
#[derive(Debug, Clone)]
pub struct Produced {
    pub id: String,
    pub partition: i32,
    pub offset: i64,
    pub json: Value,
}

impl Harness {
    pub async fn new(partitions: i32) -> Harness {
        Self::with_hec(partitions, FakeHec::builder(TOKEN)).await
    }

    pub async fn with_hec(partitions: i32, hec: switchyard_testkit::hec::Builder) -> Harness {
        Self::on(Broker::from_env().expect("broker"), partitions, hec).await
    }

    /// A harness on a given broker.
    pub async fn on(
        broker: Broker,
        partitions: i32,
        hec: switchyard_testkit::hec::Builder,
    ) -> Harness {
        broker.create_topic(TOPIC, partitions).expect("topic");
        Harness {
            broker,
            hec: hec.start().await.expect("fake HEC"),
            partitions,
        }
    }

    /// Settings for a pipeline in consumer group `group`; `hec_extra` is appended to the
    /// connector's table (TOML lines), `sections` after everything.
    pub fn settings(&self, group: &str, hec_extra: &str, sections: &str) -> Settings {
        self.settings_with(group, "", hec_extra, sections)
    }

    /// Settings whose connectors are exactly `connectors` (TOML tables), with the test
    /// `[kafka]` table. `${DD_KEY}`, `${NR_KEY}`, `${OTLP_KEY}` and `${TEST_HEC_TOKEN}` resolve to the fakes' keys.
    pub fn settings_for(&self, group: &str, connectors: &str) -> Settings {
        let toml = format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["{TOPIC}"]
group_id = "{group}"
commit_interval_ms = 100
[kafka.options]
"session.timeout.ms" = "6000"
{connectors}
"#,
            brokers = self.broker.bootstrap_servers(),
        );
        Settings::from_toml(&toml, &lookup, false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Harness::settings`], with `kafka_extra` lines in the `[kafka]` table.
    pub fn settings_with(
        &self,
        group: &str,
        kafka_extra: &str,
        hec_extra: &str,
        sections: &str,
    ) -> Settings {
        // Test defaults, unless the caller sets the key itself (TOML forbids duplicates).
        let mut hec_extra = hec_extra.to_string();
        if !hec_extra.contains("timeout_secs") {
            hec_extra.push_str("\ntimeout_secs = 5");
        }
        let endpoint = if hec_extra.contains("endpoint =") {
            String::new()
        } else {
            format!("endpoint = \"{}\"", self.hec.url())
        };
        let mut kafka_extra = kafka_extra.to_string();
        for (key, value) in [
            ("commit_interval_ms", "100"),
            ("revoke_drain_timeout_secs", "5"),
        ] {
            if !kafka_extra.contains(key) {
                kafka_extra.push_str(&format!("\n{key} = {value}"));
            }
        }
        let toml = format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["{TOPIC}"]
group_id = "{group}"
{kafka_extra}
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[connectors.{SPLUNK}]
kind = "splunk_hec"
{endpoint}
token = "${{TEST_HEC_TOKEN}}"
index = "qoe"
source = "switchyard-test"
host = "router-1"
{hec_extra}

[connectors.{SPLUNK}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
max_attempts = 50
{sections}
"#,
            brokers = self.broker.bootstrap_servers(),
        );
        Settings::from_toml(&toml, &lookup, false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Produces `payloads` round-robin over the partitions; returns where each landed.
    /// Offsets are known because the topic is fresh and each partition is written in order.
    pub fn produce(&self, payloads: Vec<(String, Vec<u8>)>) -> Vec<Produced> {
        let mut next = vec![0i64; self.partitions as usize];
        let mut out = Vec::with_capacity(payloads.len());
        let mut records = Vec::with_capacity(payloads.len());
        for (i, (id, bytes)) in payloads.into_iter().enumerate() {
            let p = (i as i32) % self.partitions;
            out.push(Produced {
                id,
                partition: p,
                offset: next[p as usize],
                json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
            next[p as usize] += 1;
            records.push((p, bytes));
        }
        let mut per_partition = vec![0usize; self.partitions as usize];
        for (p, bytes) in &records {
            per_partition[*p as usize] += bytes.len();
        }
        assert!(
            per_partition.iter().all(|b| *b < MOCK_PARTITION_BYTES),
            "the mock cluster would drop the oldest of these records: use more partitions"
        );
        self.broker.produce(TOPIC, records);
        out
    }

    /// How many times each `event_id` was indexed by the fake HEC.
    pub fn indexed_ids(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for env in self.hec.received() {
            if let Some(id) = env["event"]["event_id"].as_str() {
                *counts.entry(id.to_string()).or_default() += 1;
            }
        }
        counts
    }
}

pub const DD_KEY: &str = "dd-api-key-0123456789abcdef";
pub const NR_KEY: &str = "nr-license-key-0123456789";
pub const NR_ACCOUNT: &str = "1234567";
pub const OTLP_KEY: &str = "otlp-api-key-0123456789";

fn lookup(name: &str) -> Option<String> {
    match name {
        "TEST_HEC_TOKEN" => Some(TOKEN.into()),
        "DD_KEY" => Some(DD_KEY.into()),
        "NR_KEY" => Some(NR_KEY.into()),
        "OTLP_KEY" => Some(OTLP_KEY.into()),
        _ => None,
    }
}

/// `n` generated events, each naming the connectors in one of `lists`.
pub fn events_to(run: &str, n: usize, lists: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut g = Generator::new(run, 42).connector_lists(lists);
    (0..n).map(|_| g.next_event()).collect()
}

/// `n` generated events, all routed to the Splunk connector.
pub fn events(run: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut g = Generator::new(run, 42)
        .connector_lists(&[SPLUNK, "dz-connector-splunk,dz-connector-datadog"]);
    (0..n).map(|_| g.next_event()).collect()
}

/// Committed offsets per partition of the test topic.
pub fn committed_by_partition(committed: &HashMap<(String, i32), i64>) -> HashMap<i32, i64> {
    committed
        .iter()
        .filter(|((t, _), _)| t == TOPIC)
        .map(|((_, p), o)| (*p, *o))
        .collect()
}

/// Splits the router's collector_observability records for `target` off an event as it was
/// sent: returns the event as it was produced and those records, after checking they are one
/// delivery's records in the sample's shape (process, queue, send, then the last attempt's
/// call).
pub fn split_router_records(mut sent: Value, target: &str) -> (Value, Vec<Value>) {
    let Some(list) = sent
        .pointer_mut("/ops_metadata/collector_observability")
        .and_then(Value::as_array_mut)
    else {
        return (sent, Vec::new());
    };
    let ours: Vec<Value> = list
        .iter()
        .filter(|r| r["dimension"]["target"] == target)
        .cloned()
        .collect();
    list.retain(|r| r["dimension"]["target"] != target);
    if !ours.is_empty() {
        let names: Vec<&str> = ours
            .iter()
            .map(|r| r["metric_name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(
            names[..3],
            [
                "process_duration_ms",
                "queue_duration_ms",
                "send_duration_ms"
            ]
        );
        assert_eq!(
            names[3..],
            ["call_duration_ms"],
            "the last attempt's call only"
        );
        let attempts = ours[2]["dimension"]["attempt_count"].as_u64().unwrap_or(0);
        assert_eq!(
            ours[3]["dimension"]["attempt"].as_u64(),
            Some(attempts),
            "the call record is the last attempt's"
        );
        for r in &ours {
            assert!(r["time"].is_u64() && r["metric_value"].is_u64(), "{r}");
        }
        assert_eq!(
            ours[0]["metric_value"].as_u64().unwrap(),
            ours[1]["metric_value"].as_u64().unwrap() + ours[2]["metric_value"].as_u64().unwrap(),
            "process = queue + send"
        );
    }
    (sent, ours)
}

/// A record of a letter topic (dead letters, parking): payload, key and headers, by name and
/// as listed.
pub struct Letter {
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    pub listed: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads up to `n` records of `topic`'s partitions `0..partitions`, from the beginning,
/// waiting at most PATIENCE.
pub fn read_letters(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> Vec<Letter> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "letter-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a plain consumer config");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("a partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let listed: Vec<(String, Option<Vec<u8>>)> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            let headers = listed
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_deref().unwrap_or_default());
                    (k.clone(), v.into_owned())
                })
                .collect();
            out.push(Letter {
                payload: m.payload().unwrap_or_default().to_vec(),
                key: m.key().map(<[u8]>::to_vec),
                headers,
                listed,
            });
        }
    }
    out
}

pub const DD: &str = "dz-connector-datadog";

/// A Datadog connector table pointing at `url` (a fake), with `extra` TOML lines in it.
pub fn datadog_table(url: &str, extra: &str) -> String {
    format!(
        r#"
[connectors.{DD}]
kind = "datadog_logs"
endpoint = "{url}"
api_key = "${{DD_KEY}}"
tags = ["env:test"]
{extra}
[connectors.{DD}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
max_attempts = 50
"#
    )
}

/// Polls `done` every 20 ms, for conditions on state the pipeline changes on other
/// threads; false if it does not hold within PATIENCE.
pub async fn until(done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
