//! `collector_observability` timings: what each delivery cost, in the record shape the
//! collectors already use (`time`, `metric_name`, `dimension`, `metric_value`).
//!
//! Semantics follow the sample's arithmetic: `time` is the start of the measured interval,
//! `process = queue + send`, and `send` spans every attempt. Only the last attempt gets a
//! `call` record; `attempt_count` on `process` and `send` says how many there were. One
//! record per attempt grew each event by ~130 bytes per retry, so after an outage the
//! records outweighed the event and pushed requests over the destinations' size limits.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One HTTP call (or SDK call) of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTiming {
    pub start_ms: u64,
    pub duration_ms: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// 0 when no answer came back (timeout, connection error).
    pub status_code: u16,
}

/// Everything measured for one delivery: a batch (or part of one) from the moment its first
/// event was queued to its final outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTimings {
    pub target: Arc<str>,
    pub events: usize,
    pub enqueued_ms: u64,
    pub queue_ms: u64,
    pub send_start_ms: u64,
    pub send_ms: u64,
    pub process_ms: u64,
    pub attempt_count: u32,
    /// The last call's status.
    pub status_code: u16,
    pub calls: Vec<CallTiming>,
}

/// One element of `ops_metadata.collector_observability`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimingRecord {
    pub time: u64,
    pub metric_name: &'static str,
    pub dimension: Dimension,
    pub metric_value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dimension {
    pub target: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

impl DeliveryTimings {
    /// The records in the sample's order: process, queue, send, then the last attempt's call.
    pub fn records(&self) -> Vec<TimingRecord> {
        let dim =
            |attempt_count: Option<u32>, attempt: Option<u32>, status: Option<u16>| Dimension {
                target: self.target.clone(),
                attempt_count,
                attempt,
                status_code: status,
            };
        let mut out = Vec::with_capacity(RECORDS);
        out.push(TimingRecord {
            time: self.enqueued_ms,
            metric_name: "process_duration_ms",
            dimension: dim(Some(self.attempt_count), None, Some(self.status_code)),
            metric_value: self.process_ms,
        });
        out.push(TimingRecord {
            time: self.enqueued_ms,
            metric_name: "queue_duration_ms",
            dimension: dim(None, None, None),
            metric_value: self.queue_ms,
        });
        out.push(TimingRecord {
            time: self.send_start_ms,
            metric_name: "send_duration_ms",
            dimension: dim(Some(self.attempt_count), None, Some(self.status_code)),
            metric_value: self.send_ms,
        });
        if let Some(c) = self.calls.last() {
            out.push(TimingRecord {
                time: c.start_ms,
                metric_name: "call_duration_ms",
                dimension: dim(None, Some(c.attempt), Some(c.status_code)),
                metric_value: c.duration_ms,
            });
        }
        out
    }
}

/// Records appended per delivery: process, queue, send and the last call.
pub const RECORDS: usize = 4;

/// The most bytes [`DeliveryTimings::records`] can serialize to for `target`, brackets
/// excluded: every number at its widest. Batches are sized with this bound, since the records
/// appended to an event are only known when its request is encoded.
pub fn max_records_len(target: &str) -> usize {
    let widest = DeliveryTimings {
        target: Arc::from(target),
        events: 0,
        enqueued_ms: u64::MAX,
        queue_ms: u64::MAX,
        send_start_ms: u64::MAX,
        send_ms: u64::MAX,
        process_ms: u64::MAX,
        attempt_count: u32::MAX,
        status_code: u16::MAX,
        calls: vec![CallTiming {
            start_ms: u64::MAX,
            duration_ms: u64::MAX,
            attempt: u32::MAX,
            status_code: u16::MAX,
        }],
    };
    // Serializing plain structs into a Vec cannot fail.
    serde_json::to_vec(&widest.records()).map_or(0, |v| v.len().saturating_sub(2))
}

/// Keeps the most recent deliveries' timings where tests (and later the exporters) can see
/// them. Bounded: old entries fall off.
pub struct TimingRecorder {
    recent: Mutex<VecDeque<DeliveryTimings>>,
    capacity: usize,
}

impl TimingRecorder {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(TimingRecorder {
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
        })
    }

    pub fn record(&self, t: DeliveryTimings) {
        if let Ok(mut q) = self.recent.lock() {
            if q.len() == self.capacity {
                q.pop_front();
            }
            q.push_back(t);
        }
    }

    /// Feeds the four timings to the `metrics` facade as histograms (exported by the binary
    /// as Prometheus text), labelled like the records' dimensions.
    pub fn record_metrics(
        &self,
        target: &Arc<str>,
        queue_ms: u64,
        send_ms: u64,
        process_ms: u64,
        status: u16,
        calls: &[CallTiming],
    ) {
        let target = target.to_string();
        let status = status.to_string();
        metrics::histogram!("switchyard_queue_duration_ms", "target" => target.clone())
            .record(queue_ms as f64);
        metrics::histogram!("switchyard_send_duration_ms", "target" => target.clone(), "status_code" => status.clone()).record(send_ms as f64);
        metrics::histogram!("switchyard_process_duration_ms", "target" => target.clone(), "status_code" => status).record(process_ms as f64);
        for c in calls {
            metrics::histogram!(
                "switchyard_call_duration_ms",
                "target" => target.clone(),
                "status_code" => c.status_code.to_string(),
                "attempt" => c.attempt.to_string()
            )
            .record(c.duration_ms as f64);
        }
    }

    /// The kept deliveries, oldest first.
    pub fn recent(&self) -> Vec<DeliveryTimings> {
        self.recent
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest delivery to `target`.
    pub fn latest(&self, target: &str) -> Option<DeliveryTimings> {
        let q = self.recent.lock().ok()?;
        q.iter().rev().find(|t| &*t.target == target).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delivery the sample event's records describe, to `target`.
    fn sample_delivery(target: &str) -> DeliveryTimings {
        DeliveryTimings {
            target: Arc::from(target),
            events: 3,
            enqueued_ms: 1712167311684,
            queue_ms: 56,
            send_start_ms: 1712167311740,
            send_ms: 115,
            process_ms: 171,
            attempt_count: 1,
            status_code: 200,
            calls: vec![CallTiming {
                start_ms: 1712167311740,
                duration_ms: 115,
                attempt: 1,
                status_code: 200,
            }],
        }
    }

    #[test]
    fn records_have_the_sample_shape() {
        let t = sample_delivery("splunk");
        let got = serde_json::to_value(t.records()).unwrap();
        let sample: serde_json::Value =
            serde_json::from_str(include_str!("../../testkit/data/sample-event.json")).unwrap();
        let mut want = sample["ops_metadata"]["collector_observability"].clone();
        for r in want.as_array_mut().unwrap() {
            r["dimension"]["target"] = "splunk".into();
        }
        assert_eq!(got, want);
    }

    /// The exact bytes one event gains per connector: the records are serde_json's compact
    /// form (no whitespace, integers as written) with only the sample's fields. 584 bytes for
    /// a 19-byte connector id, plus a comma when the event has a `collector_observability`
    /// list already (as the sample does), up to 46 when it has no `ops_metadata`.
    /// A change here changes every destination's bill: README "What the records cost".
    #[test]
    fn records_are_compact_to_the_byte() {
        let t = sample_delivery("dz-connector-splunk");
        let got = serde_json::to_vec(&t.records()).unwrap();
        let want = concat!(
            r#"[{"time":1712167311684,"metric_name":"process_duration_ms","dimension":{"target":"dz-connector-splunk","attempt_count":1,"status_code":200},"metric_value":171},"#,
            r#"{"time":1712167311684,"metric_name":"queue_duration_ms","dimension":{"target":"dz-connector-splunk"},"metric_value":56},"#,
            r#"{"time":1712167311740,"metric_name":"send_duration_ms","dimension":{"target":"dz-connector-splunk","attempt_count":1,"status_code":200},"metric_value":115},"#,
            r#"{"time":1712167311740,"metric_name":"call_duration_ms","dimension":{"target":"dz-connector-splunk","attempt":1,"status_code":200},"metric_value":115}]"#,
        );
        assert_eq!(String::from_utf8(got.clone()).unwrap(), want);
        assert_eq!(
            got.len() - 2,
            584,
            "bytes spliced per event, brackets excluded"
        );
        assert_eq!(crate::event::SPLICE_OVERHEAD, 46);
    }

    #[test]
    fn a_long_outage_appends_one_call_record_within_the_bound() {
        let calls: Vec<CallTiming> = (1..=500)
            .map(|attempt| CallTiming {
                start_ms: 1712167311740 + u64::from(attempt) * 1000,
                duration_ms: 30_000,
                attempt,
                status_code: if attempt == 500 { 202 } else { 503 },
            })
            .collect();
        let t = DeliveryTimings {
            target: Arc::from("dz-connector-datadog"),
            events: 1000,
            enqueued_ms: 1712167311684,
            queue_ms: 56,
            send_start_ms: 1712167311740,
            send_ms: 12_345_678,
            process_ms: 12_345_734,
            attempt_count: 500,
            status_code: 202,
            calls,
        };
        let records = serde_json::to_value(t.records()).unwrap();
        let records = records.as_array().unwrap();
        assert_eq!(records.len(), RECORDS);
        assert_eq!(records[0]["dimension"]["attempt_count"], 500);
        assert_eq!(records[3]["metric_name"], "call_duration_ms");
        assert_eq!(records[3]["dimension"]["attempt"], 500);
        assert_eq!(records[3]["dimension"]["status_code"], 202);
        let len = serde_json::to_vec(&t.records()).unwrap().len() - 2;
        assert!(len <= max_records_len("dz-connector-datadog"), "{len}");
        assert!(max_records_len("dz-connector-datadog") < 1000);
    }

    #[test]
    fn recorder_is_bounded_and_finds_latest() {
        let r = TimingRecorder::new(2);
        for (i, target) in ["a", "b", "a"].iter().enumerate() {
            r.record(DeliveryTimings {
                target: Arc::from(*target),
                events: i,
                enqueued_ms: 0,
                queue_ms: 0,
                send_start_ms: 0,
                send_ms: 0,
                process_ms: 0,
                attempt_count: 1,
                status_code: 200,
                calls: vec![],
            });
        }
        assert_eq!(r.recent().len(), 2);
        assert_eq!(r.latest("a").unwrap().events, 2);
        assert_eq!(r.latest("b").unwrap().events, 1);
    }
}
