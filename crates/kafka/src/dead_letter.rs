//! The dead-letter topic: permanently refused records, produced with their original bytes and
//! headers saying who refused them and why.

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_core::timings::now_ms;
use switchyard_core::{DeadLetters, Letter};
use tokio::runtime::Handle;

/// Header names on dead-lettered records.
pub mod headers {
    /// Every router header starts with this.
    pub const PREFIX: &str = "switchyard.";
    pub const CONNECTOR: &str = "switchyard.connector";
    pub const REASON: &str = "switchyard.reason";
    pub const STATUS_CODE: &str = "switchyard.status_code";
    pub const ATTEMPTS: &str = "switchyard.attempts";
    pub const SOURCE_TOPIC: &str = "switchyard.source_topic";
    pub const SOURCE_PARTITION: &str = "switchyard.source_partition";
    pub const SOURCE_OFFSET: &str = "switchyard.source_offset";
    pub const TIME: &str = "switchyard.time";
}

/// Writes letters to a Kafka topic, retrying until the broker acknowledges each one.
pub struct DlqProducer {
    producer: FutureProducer,
    topic: String,
    runtime: Handle,
}

impl DlqProducer {
    /// `options` are raw librdkafka producer properties (security settings and the like).
    pub fn new(
        brokers: &str,
        topic: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, KafkaError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            // No duplicates in the dead-letter topic from the producer's own retries.
            .set("enable.idempotence", "true")
            .set("linger.ms", "20");
        for (k, v) in options {
            cfg.set(k, v);
        }
        Ok(DlqProducer {
            producer: cfg.create()?,
            topic: topic.to_string(),
            // Letters come from the engine's tasks and from the consumer thread alike.
            runtime: Handle::current(),
        })
    }
}

/// The producer's own headers first, as they were, then the router's. Headers already named
/// `switchyard.…` (a record dead-lettered before, replayed and refused again) are left out so
/// each of ours appears once and describes this refusal.
fn headers_of(l: &Letter) -> OwnedHeaders {
    let original = l
        .envelope
        .iter()
        .flat_map(|e| e.headers.iter())
        .filter(|(key, _)| !key.starts_with(headers::PREFIX))
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: value.as_deref(),
            })
        });
    ours(l, original)
}

fn ours(l: &Letter, headers: OwnedHeaders) -> OwnedHeaders {
    let pairs = [
        (headers::CONNECTOR, l.connector.to_string()),
        (headers::REASON, l.reason.clone()),
        (headers::STATUS_CODE, l.status_code.to_string()),
        (headers::ATTEMPTS, l.attempts.to_string()),
        (headers::SOURCE_TOPIC, l.origin.topic.to_string()),
        (
            headers::SOURCE_PARTITION,
            l.origin.kafka_partition.to_string(),
        ),
        (headers::SOURCE_OFFSET, l.origin.offset.to_string()),
        (headers::TIME, now_ms().to_string()),
    ];
    pairs.iter().fold(headers, |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
    })
}

impl DeadLetters for DlqProducer {
    fn write(&self, letter: Letter, done: Box<dyn FnOnce() + Send>) {
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        self.runtime.spawn(async move {
            let headers = headers_of(&letter);
            let mut wait = Duration::from_millis(100);
            loop {
                let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                    .payload(&letter.raw[..])
                    .headers(headers.clone());
                // Keyed as the original, so a keyed producer's ordering and partitioning carry
                // over to the dead-letter topic.
                if let Some(key) = letter.envelope.as_ref().and_then(|e| e.key.as_deref()) {
                    record = record.key(key);
                }
                match producer.send(record, Timeout::Never).await {
                    Ok(_) => {
                        tracing::warn!(
                            connector = %letter.connector,
                            topic = %letter.origin.topic,
                            partition = letter.origin.kafka_partition,
                            offset = letter.origin.offset,
                            reason = %letter.reason,
                            dead_letter_topic = %topic,
                            "event dead-lettered"
                        );
                        done();
                        return;
                    }
                    Err((e, _)) => {
                        // The offset waits for this write: keep trying, and say so.
                        tracing::error!(error = %e, dead_letter_topic = %topic, offset = letter.origin.offset, "dead-letter write failed; retrying (the partition waits)");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
}
