//! Letter topics: the dead-letter topic (permanently refused records) and the parking topic
//! (events of a detached destination), each record produced with its original bytes, key and
//! headers, and headers saying which connector and why.

use crate::client::client_config;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchyard_core::log::Throttle;
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
    /// Which event of an array record the letter holds, from 0; absent when the record was
    /// one event. The letter's value is that event alone.
    pub const SOURCE_MEMBER: &str = "switchyard.source_member";
    pub const TIME: &str = "switchyard.time";
    /// When the first attempt to deliver it began (epoch ms); absent if it was never sent.
    pub const FIRST_ATTEMPT_TIME: &str = "switchyard.first_attempt_time";
}

/// What a letter topic is for, which decides what is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Each letter is a refusal worth a log line of its own.
    DeadLetters,
    /// Letters come by the thousand while a destination is detached; its state change is
    /// the log line.
    Parking,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::DeadLetters => "dead-letter",
            Purpose::Parking => "parking",
        }
    }
}

/// Writes letters to a Kafka topic, retrying until the broker acknowledges each one.
pub struct LetterProducer {
    producer: Arc<Polled>,
    topic: Arc<str>,
    purpose: Purpose,
    runtime: Handle,
    /// A failing topic fails every letter: one line per 10 s says so.
    failures: Arc<Throttle>,
}

impl LetterProducer {
    /// `options` are raw librdkafka properties, later layers winning: the connection's
    /// (`[kafka.options]`: SASL, SSL), then this producer's own.
    pub fn new(
        brokers: &str,
        topic: &str,
        purpose: Purpose,
        options: &[&BTreeMap<String, String>],
    ) -> Result<Self, KafkaError> {
        let ours = [
            // No duplicates in the topic from the producer's own retries.
            ("enable.idempotence", "true"),
            // A letter's offset is committed once this write is acknowledged: by every
            // in-sync replica, not only the leader.
            ("acks", "all"),
            ("linger.ms", "20"),
        ];
        let cfg = client_config(brokers, ours, options);
        Ok(LetterProducer {
            producer: Arc::new(Polled::start(cfg.create_with_context(Acks)?)?),
            topic: Arc::from(topic),
            purpose,
            // Letters come from the engine's tasks and from the consumer thread alike.
            runtime: Handle::current(),
            failures: Arc::new(Throttle::new(Duration::from_secs(10))),
        })
    }
}

/// How long each call of the polling thread waits for delivery reports. A report is handled
/// as soon as it arrives, whatever this is; it bounds how long the thread outlives its
/// producer. Not rdkafka's `ThreadedProducer` (inside `FutureProducer`), whose thread polls
/// with 100 ms: rdkafka 0.39 passes the rest of each poll's deadline to librdkafka in whole
/// milliseconds, so the last fraction of a millisecond of every call is a busy loop of
/// zero-timeout polls. Ten times a second per producer, six producers in a router (the
/// parking topic and each flow's dead letters), that was 0.04 of a core with nothing to
/// do (docs/performance.md, "CPU at every load").
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Hands each delivery report to the task awaiting it.
struct Acks;

type Ack = tokio::sync::oneshot::Sender<Result<(), KafkaError>>;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        let _ = ack.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// A producer and the thread that polls it for delivery reports, until the last clone of
/// the letter producer's handle is dropped.
struct Polled {
    producer: Arc<BaseProducer<Acks>>,
    stop: Arc<AtomicBool>,
}

impl Polled {
    fn start(producer: BaseProducer<Acks>) -> Result<Polled, KafkaError> {
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            .name("letters-poll".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    p.poll(POLL_EVERY);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("letters polling thread: {e}")))?;
        Ok(Polled { producer, stop })
    }

    /// Produces `record` once the producer's queue has room, and waits for its delivery
    /// report. The error is the broker's (or librdkafka's) final answer.
    async fn send<'a>(
        &self,
        record: impl Fn(Box<Ack>) -> BaseRecord<'a, [u8], [u8], Box<Ack>>,
    ) -> Result<(), KafkaError> {
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match self.producer.send(record(Box::new(tx))) {
                Ok(()) => {
                    return rx.await.unwrap_or(Err(KafkaError::Canceled));
                }
                // As FutureProducer with `Timeout::Never`: wait for room, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

impl Drop for Polled {
    fn drop(&mut self) {
        // The thread ends within POLL_EVERY and drops the producer (which flushes) then.
        self.stop.store(true, Ordering::Relaxed);
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
    let first = (l.first_attempt_ms > 0)
        .then(|| (headers::FIRST_ATTEMPT_TIME, l.first_attempt_ms.to_string()));
    let member = l
        .origin
        .member
        .map(|m| (headers::SOURCE_MEMBER, m.to_string()));
    pairs
        .iter()
        .chain(first.iter())
        .chain(member.iter())
        .fold(headers, |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}

impl DeadLetters for LetterProducer {
    fn write(&self, letter: Letter, done: Box<dyn FnOnce() + Send>) {
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        let (purpose, failures) = (self.purpose, self.failures.clone());
        self.runtime.spawn(async move {
            let headers = headers_of(&letter);
            let mut wait = Duration::from_millis(100);
            loop {
                let record = |ack| {
                    let record = BaseRecord::<[u8], [u8], Box<Ack>>::with_opaque_to(&topic, ack)
                        .payload(&letter.raw[..])
                        .headers(headers.clone());
                    // Keyed as the original, so a keyed producer's ordering and partitioning
                    // carry over to the dead-letter topic.
                    match letter.envelope.as_ref().and_then(|e| e.key.as_deref()) {
                        Some(key) => record.key(key),
                        None => record,
                    }
                };
                match producer.send(record).await {
                    Ok(()) => {
                        if purpose == Purpose::DeadLetters {
                            tracing::warn!(
                                connector = %letter.connector,
                                topic = %letter.origin.topic,
                                partition = letter.origin.kafka_partition,
                                offset = letter.origin.offset,
                                reason = %letter.reason,
                                dead_letter_topic = %topic,
                                "event dead-lettered"
                            );
                        }
                        done();
                        return;
                    }
                    Err(e) => {
                        // The offset waits for this write: keep trying, and say so.
                        if let Some(held_back) = failures.allow("write") {
                            tracing::error!(error = %e, topic = %topic, offset = letter.origin.offset, held_back, "{} write failed; retrying (the partition waits)", purpose.name());
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use switchyard_core::{Origin, PartitionId};

    fn letter(offset: i64) -> Letter {
        Letter {
            raw: bytes::Bytes::from_static(b"{\"a\":1}"),
            envelope: None,
            origin: Origin {
                partition: PartitionId(0),
                topic: Arc::from("in"),
                kafka_partition: 0,
                offset,
                member: None,
            },
            connector: Arc::from("c"),
            reason: "test".into(),
            status_code: 0,
            attempts: 1,
            first_attempt_ms: 0,
        }
    }

    /// Each letter's `done` runs once the broker has it, through the producer's own polling
    /// thread, and that thread ends once the producer is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn done_once_acknowledged_and_the_poller_ends_with_the_producer() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("letters", 1, 1).unwrap();
        let producer = LetterProducer::new(
            &cluster.bootstrap_servers(),
            "letters",
            Purpose::Parking,
            &[],
        )
        .unwrap();
        let stop = Arc::downgrade(&producer.producer.stop);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for offset in 0..3 {
            let tx = tx.clone();
            producer.write(letter(offset), Box::new(move || tx.send(offset).unwrap()));
        }
        let mut done = Vec::new();
        for _ in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            done.push(got.expect("a letter was not acknowledged").unwrap());
        }
        done.sort();
        assert_eq!(done, [0, 1, 2]);
        drop(producer);
        // The thread holds the stop flag until it returns.
        let deadline = std::time::Instant::now() + POLL_EVERY * 3;
        while stop.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the polling thread outlived its producer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
