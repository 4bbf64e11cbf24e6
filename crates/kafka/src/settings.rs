//! The `[kafka]` section of `connectors.toml`: its keys, defaults and checks. The binary's
//! loader deserializes it and reports its problems with the others'.

use crate::SourceConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_core::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    #[serde(default)]
    pub brokers: String,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub group_id: String,
    /// librdkafka `group.instance.id` (static membership). In Kubernetes, the pod name through
    /// `SWITCHYARD__KAFKA__GROUP_INSTANCE_ID`; a `Scalar` because an override that looks like a
    /// number arrives as one.
    #[serde(default)]
    pub group_instance_id: Option<Scalar>,
    /// Raw librdkafka properties, passed through.
    #[serde(default)]
    pub options: BTreeMap<String, Scalar>,
    #[serde(default = "d_commit_interval_ms")]
    pub commit_interval_ms: u64,
    #[serde(default = "d_per_partition")]
    pub max_inflight_per_partition: usize,
    #[serde(default = "d_inflight")]
    pub max_inflight_events: usize,
    #[serde(default = "d_inflight_bytes")]
    pub max_inflight_bytes: usize,
    #[serde(default = "d_revoke")]
    pub revoke_drain_timeout_secs: u64,
}

/// A librdkafka property value as TOML may spell it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    S(String),
    I(i64),
    B(bool),
    F(f64),
}

impl Scalar {
    pub fn into_string(self) -> String {
        match self {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::B(b) => b.to_string(),
            Scalar::F(f) => f.to_string(),
        }
    }
}

fn d_commit_interval_ms() -> u64 {
    5000
}
// Sized by make bench (docs/performance.md): enough to keep four destinations' batches and
// requests in flight at full speed, and no more, since every unfinished event is held in
// memory and redelivered after a crash.
fn d_per_partition() -> usize {
    2500
}
fn d_inflight() -> usize {
    5_000
}
// Payload bytes of unfinished events: 5,000 events of 1 MiB would otherwise be 5 GiB. Sample
// events (about 4.4 KB) reach the 5,000-event bound first, at 22 MiB, and peaked at 150 MiB
// RSS healthy and 290 MiB with a destination down and isolating (docs/performance.md); those
// figures include librdkafka's 8 MiB prefetch plus 8 MiB of fetch in flight, and the requests
// in flight. Large events may hold 64 MiB, 42 MiB more than that: about 330 MiB at worst,
// under the 384Mi limit in deploy/.
fn d_inflight_bytes() -> usize {
    64 << 20
}
fn d_revoke() -> u64 {
    10
}

impl KafkaSection {
    pub fn check(&self, problems: &mut Vec<Problem>) {
        if self.brokers.trim().is_empty() {
            problems.push(Problem::new(
                "kafka.brokers",
                "is missing (host:port[,host:port…])",
            ));
        }
        if self.topics.is_empty() {
            problems.push(Problem::new("kafka.topics", "name at least one topic"));
        }
        if self.group_id.trim().is_empty() {
            problems.push(Problem::new("kafka.group_id", "is missing"));
        }
        if let Some(Scalar::S(id)) = &self.group_instance_id
            && id.trim().is_empty()
        {
            problems.push(Problem::new(
                "kafka.group_instance_id",
                "is empty (leave it out for dynamic membership)",
            ));
        }
        for (key, v) in [
            ("kafka.commit_interval_ms", self.commit_interval_ms as usize),
            (
                "kafka.max_inflight_per_partition",
                self.max_inflight_per_partition,
            ),
            ("kafka.max_inflight_events", self.max_inflight_events),
            ("kafka.max_inflight_bytes", self.max_inflight_bytes),
        ] {
            if v == 0 {
                problems.push(Problem::new(key, "must be at least 1"));
            }
        }
    }

    pub fn into_source(self, shutdown_timeout: Duration) -> SourceConfig {
        SourceConfig {
            brokers: self.brokers,
            topics: self.topics,
            group_id: self.group_id,
            group_instance_id: self.group_instance_id.map(Scalar::into_string),
            options: self
                .options
                .into_iter()
                .map(|(k, v)| (k, v.into_string()))
                .collect(),
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            max_inflight_per_partition: self.max_inflight_per_partition,
            max_inflight_events: self.max_inflight_events,
            max_inflight_bytes: self.max_inflight_bytes,
            revoke_drain_timeout: Duration::from_secs(self.revoke_drain_timeout_secs),
            shutdown_timeout,
            only_with_header: None,
            overload_wait: crate::OVERLOAD_WAIT,
        }
    }
}
