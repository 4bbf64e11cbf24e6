//! The offered load: benchmark events made from the sample event, either preloaded into the
//! broker (the throughput run) or produced at a fixed rate (the latency run).

use crate::standins::{MARKER, MARKER_LEN, SEQ_DIGITS, TIME_DIGITS};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::Value;
use std::time::{Duration, Instant};
use switchyard_testkit::Generator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// The sample event as collectors write it (compact JSON, about 4.7 KB).
    Sample,
    /// A heartbeat-sized event: routing fields, a few metrics and the collector's timings.
    Small,
}

/// One event template per connector list; event `seq` uses template `seq % len`, so a
/// destination can tell which events were meant for it.
pub struct Events {
    templates: Vec<(Vec<u8>, usize)>,
    /// Events per Kafka record: 1 writes each event as its own object, more writes JSON
    /// arrays of that many consecutive events (the vendor's payload shape).
    pub per_record: u64,
}

impl Events {
    pub fn new(size: Size, lists: &[String], per_record: u64) -> Events {
        let templates = lists.iter().map(|l| template(size, l)).collect();
        Events {
            templates,
            per_record: per_record.max(1),
        }
    }

    /// Bytes per event (all templates of a run differ by their connector list only).
    pub fn bytes(&self) -> usize {
        self.templates.iter().map(|(t, _)| t.len()).sum::<usize>() / self.templates.len()
    }

    /// The record holding events `first..first + per_record`, stamped with its produce time.
    pub fn write_record(&self, first: u64, produced_us: u64, out: &mut Vec<u8>) {
        out.clear();
        if self.per_record == 1 {
            self.append(first, produced_us, out);
            return;
        }
        out.push(b'[');
        for seq in first..first + self.per_record {
            if seq > first {
                out.push(b',');
            }
            self.append(seq, produced_us, out);
        }
        out.push(b']');
    }

    /// Appends event `seq`.
    fn append(&self, seq: u64, produced_us: u64, out: &mut Vec<u8>) {
        let (template, at) = &self.templates[(seq % self.templates.len() as u64) as usize];
        let start = out.len();
        out.extend_from_slice(template);
        let digits = format!("{seq:0SEQ_DIGITS$}:{produced_us:0TIME_DIGITS$}");
        let at = start + at;
        out[at + MARKER.len()..at + MARKER_LEN].copy_from_slice(digits.as_bytes());
    }
}

fn template(size: Size, connector_list: &str) -> (Vec<u8>, usize) {
    let mut e: Value = serde_json::from_str(Generator::sample()).expect("the sample is JSON");
    let placeholder = format!(
        "{}{}:{}",
        String::from_utf8_lossy(MARKER),
        "0".repeat(SEQ_DIGITS),
        "0".repeat(TIME_DIGITS)
    );
    e["event_id"] = placeholder.into();
    e["connector_list"] = connector_list.into();
    // Now, as collectors stamp it (Datadog and New Relic refuse old timestamps).
    e["event"]["timestamp"] = (crate::standins::now_us() / 1000).into();
    if size == Size::Small {
        if let Some(o) = e.as_object_mut() {
            for k in [
                "custom",
                "geo_location",
                "user_details",
                "player",
                "device",
                "ad",
                "video",
            ] {
                o.remove(k);
            }
        }
        if let Some(m) = e["event"]["metrics"].as_object_mut() {
            let keep: Vec<String> = m.keys().take(8).cloned().collect();
            m.retain(|k, _| keep.contains(k));
        }
    }
    let bytes = serde_json::to_vec(&e).expect("a Value serializes");
    let at = memchr::memmem::find(&bytes, MARKER).expect("the marker is in the template");
    (bytes, at)
}

/// Produces events `0..count` (in records of `per_record` events) round-robin over
/// `partitions` and waits until the broker has them. Partition by partition, in batches of about a megabyte: the mock cluster answers a
/// Fetch with one produced batch per partition, so small batches would make the broker, not
/// the router, the bottleneck (a real broker returns up to `max.partition.fetch.bytes`).
pub fn preload(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    events: &Events,
    count: u64,
) -> Result<(), KafkaError> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "100")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("message.max.bytes", "10000000")
        .create()?;
    let now = crate::standins::now_us();
    let mut out = Vec::new();
    let parts = partitions as u64;
    let records = count / events.per_record;
    for partition in 0..parts {
        for record in (partition..records).step_by(parts as usize) {
            events.write_record(record * events.per_record, now, &mut out);
            send(&producer, topic, partition as i32, &out)?;
        }
    }
    producer.flush(Duration::from_secs(120))
}

/// Sends one record, waiting for room in the producer's queue when it is full.
fn send(
    producer: &BaseProducer,
    topic: &str,
    partition: i32,
    payload: &[u8],
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::<(), [u8]>::to(topic)
        .partition(partition)
        .payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(1));
                record = r;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Produces events `first..first + count` at `rate` per second, each record stamped as it is
/// sent; `count` is rounded down to whole records. Returns the rate achieved: lower than
/// asked when the machine could not keep up.
pub fn offer(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    events: &Events,
    first: u64,
    count: u64,
    rate: f64,
) -> Result<f64, KafkaError> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Latency is measured from the send call: do not hold records back to batch them.
        .set("linger.ms", "5")
        .set("message.max.bytes", "10000000")
        .create()?;
    let start = Instant::now();
    let mut out = Vec::new();
    let mut sent = 0;
    let per = events.per_record;
    let count = count / per * per;
    while sent < count {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(count);
        while sent + per <= due {
            let seq = first + sent;
            events.write_record(seq, crate::standins::now_us(), &mut out);
            let record = seq / per;
            send(&producer, topic, (record % partitions as u64) as i32, &out)?;
            sent += per;
        }
        producer.poll(Duration::ZERO);
        // Pacing, not synchronisation: wake each millisecond to send what has come due.
        std::thread::sleep(Duration::from_millis(1));
    }
    let achieved = count as f64 / start.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60))?;
    Ok(achieved)
}
