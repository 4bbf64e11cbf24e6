//! How every librdkafka client of switchyard is configured, so that the connection settings in
//! `[kafka.options]` (SASL, SSL, client.rack…) reach all of them: the consumer, the
//! dead-letter and parking producers, and replay's consumer and watermark reader.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A client of `brokers`: switchyard's own choices for this kind of client first, then each
/// layer of the user's properties in order, a later one winning (`[kafka.options]`, then a
/// producer's own `[dead_letter.options]`, say).
pub fn client_config<'a>(
    brokers: &str,
    ours: impl IntoIterator<Item = (&'a str, &'a str)>,
    theirs: &[&BTreeMap<String, String>],
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers);
    for (k, v) in ours {
        cfg.set(k, v);
    }
    for layer in theirs {
        for (k, v) in *layer {
            cfg.set(k, v);
        }
    }
    cfg
}

/// The next offset to be written, per partition of `topic`.
pub fn high_watermarks(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
) -> Result<HashMap<i32, i64>, KafkaError> {
    let consumer: BaseConsumer = client_config(brokers, [], &[options]).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut ends = HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(30))?;
            ends.insert(p.id(), high);
        }
    }
    Ok(ends)
}

/// The offsets `group` has committed on `partitions` of `topic` (a partition without a
/// commit is left out).
pub fn committed_offsets(
    brokers: &str,
    options: &BTreeMap<String, String>,
    group: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<HashMap<i32, i64>, KafkaError> {
    let consumer: BaseConsumer =
        client_config(brokers, [("group.id", group)], &[options]).create()?;
    let mut wanted = TopicPartitionList::new();
    for p in partitions {
        wanted.add_partition(topic, p);
    }
    let mut out = HashMap::new();
    {
        // Dropped before the consumer: a list from `committed_offsets` that outlives its
        // consumer hangs the consumer's drop (kafka-testing.md).
        let committed = consumer.committed_offsets(wanted, Duration::from_secs(30))?;
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert(e.partition(), o);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_layers_win_in_order() {
        let connection = BTreeMap::from([
            ("security.protocol".to_string(), "sasl_ssl".to_string()),
            ("linger.ms".to_string(), "5".to_string()),
        ]);
        let producer = BTreeMap::from([("linger.ms".to_string(), "50".to_string())]);
        let cfg = client_config(
            "b:9092",
            [("linger.ms", "20"), ("acks", "all")],
            &[&connection, &producer],
        );
        assert_eq!(cfg.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(cfg.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cfg.get("linger.ms"), Some("50"));
        assert_eq!(cfg.get("acks"), Some("all"));
    }
}
