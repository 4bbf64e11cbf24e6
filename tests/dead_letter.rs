//! The dead-letter topic: what a destination refuses for good, and malformed input, is
//! produced there with its original bytes and headers saying why; its offset is committed
//! only after that write is acknowledged.

use serde_json::Value;
use std::time::Duration;
use switchyard::Pipeline;
use switchyard_testkit::hec::Reply;
use switchyard_tests::*;

const DLQ: &str = "qoe-dlq";

/// Reads `n` records from the dead-letter topic (one partition), in order.
fn read_dlq(bootstrap: &str, n: usize) -> Vec<Letter> {
    read_letters(bootstrap, DLQ, 1, n)
}

fn committed_to_end(pipeline: &Pipeline, end: i64) -> bool {
    tokio::task::block_in_place(|| {
        pipeline.wait_for_source(PATIENCE, |s| {
            s.committed.get(&(TOPIC.to_string(), 0)) == Some(&end)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_malformed_records_go_to_the_dead_letter_topic_once() {
    let h = Harness::new(1).await;
    h.broker.create_topic(DLQ, 1).unwrap();
    h.hec
        .reject_when(|env| env["event"]["poison"] == Value::Bool(true));
    let mut records = events("dlq", 20);
    let mut poisoned: Value = serde_json::from_slice(&records[7].1).unwrap();
    poisoned["poison"] = true.into();
    records[7].1 = serde_json::to_vec(&poisoned).unwrap();
    records.push(("bad".into(), b"{\"event\": nope".to_vec()));
    let poison_bytes = records[7].1.clone();
    h.produce(records);
    let settings = h.settings(
        "g-dlq",
        "",
        &format!("[connectors.dz-connector-splunk.batch]\nmax_events = 20\nmax_linger_ms = 60000\n[dead_letter]\ntopic = \"{DLQ}\""),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(h.hec.wait_for_received(19, PATIENCE).await);
    // All 21 offsets finish, the two dead-letter writes included.
    assert!(
        committed_to_end(&pipeline, 21),
        "{:?}",
        pipeline.source_status()
    );
    let stats = pipeline.connector_stats(SPLUNK).unwrap();
    let source = pipeline.source_stats().clone();
    assert!(pipeline.shutdown().await);
    assert_eq!(
        (stats.snapshot().rejected, stats.snapshot().dead_lettered),
        (1, 1)
    );
    assert_eq!(
        source
            .malformed_dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let letters = read_dlq(h.broker.bootstrap_servers(), 2);
    assert_eq!(letters.len(), 2, "exactly the two refused records");
    let poison = letters
        .iter()
        .find(|l| l.headers["switchyard.connector"] == SPLUNK)
        .expect("the poison event");
    assert_eq!(poison.payload, poison_bytes, "original bytes");
    assert!(
        poison.headers["switchyard.reason"].contains("code 6"),
        "{:?}",
        poison.headers
    );
    assert_eq!(poison.headers["switchyard.status_code"], "400");
    assert_eq!(poison.headers["switchyard.attempts"], "1");
    assert_eq!(poison.headers["switchyard.source_topic"], TOPIC);
    assert_eq!(poison.headers["switchyard.source_partition"], "0");
    assert_eq!(poison.headers["switchyard.source_offset"], "7");
    assert!(poison.headers["switchyard.time"].parse::<u64>().is_ok());
    let bad = letters
        .iter()
        .find(|l| l.headers["switchyard.connector"] == "router")
        .expect("the malformed record");
    assert_eq!(bad.payload, b"{\"event\": nope");
    assert!(
        bad.headers["switchyard.reason"].starts_with("malformed: not_json"),
        "{:?}",
        bad.headers
    );
    assert_eq!(bad.headers["switchyard.source_offset"], "20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_keep_the_producers_key_and_headers_and_say_why_in_plain_words() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer};
    let h = Harness::new(1).await;
    h.broker.create_topic(DLQ, 1).unwrap();
    h.hec
        .reject_when(|env| env["event"]["poison"] == Value::Bool(true));
    let poison = format!(
        r#"{{"event":{{"type":"x","timestamp":{}}},"connector_list":"{SPLUNK}","poison":true}}"#,
        now_ms()
    );
    // Key, payload, and the letter's payload: a bad member of an array record is
    // dead-lettered as its own bytes, with the record's key and headers.
    let records: [(&str, &[u8], &[u8]); 4] = [
        ("k-string", b"\"text\"", b"\"text\""),
        ("k-null", b"null", b"null"),
        ("k-poison", poison.as_bytes(), poison.as_bytes()),
        (
            "k-nested",
            br#"[[{"event":{"timestamp":1}}]]"#,
            br#"[{"event":{"timestamp":1}}]"#,
        ),
    ];
    let producer = h.broker.producer();
    for (i, (key, payload, _)) in records.iter().enumerate() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace-id",
                value: Some(format!("t-{i}").as_bytes()),
            })
            .insert(Header {
                key: "no-value",
                value: None::<&[u8]>,
            })
            // A spoofed router header: the letter's own must be the only one.
            .insert(Header {
                key: "switchyard.reason",
                value: Some("spoofed"),
            });
        producer
            .send(
                BaseRecord::to(TOPIC)
                    .partition(0)
                    .key(*key)
                    .payload(*payload)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let settings = h.settings(
        "g-dlq-envelope",
        "",
        &format!(
            "[connectors.{SPLUNK}.batch]\nmax_linger_ms = 20\n[dead_letter]\ntopic = \"{DLQ}\""
        ),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        committed_to_end(&pipeline, 4),
        "{:?}",
        pipeline.source_status()
    );
    assert!(pipeline.shutdown().await);

    let letters = read_dlq(h.broker.bootstrap_servers(), 4);
    assert_eq!(letters.len(), 4);
    for (i, (key, _, payload)) in records.iter().enumerate() {
        let l = letters
            .iter()
            .find(|l| l.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("a letter keyed {key}"));
        assert_eq!(l.payload, *payload);
        // The producer's headers first, as they were, then the router's.
        assert_eq!(
            l.listed[..2],
            [
                ("trace-id".to_string(), Some(format!("t-{i}").into_bytes())),
                ("no-value".to_string(), None)
            ]
        );
        let reasons: Vec<_> = l
            .listed
            .iter()
            .filter(|(k, _)| k == "switchyard.reason")
            .collect();
        assert_eq!(reasons.len(), 1, "one reason, the router's");
        assert_ne!(reasons[0].1.as_deref(), Some(&b"spoofed"[..]));
    }
    let reason = |key: &str| {
        letters
            .iter()
            .find(|l| l.key.as_deref() == Some(key.as_bytes()))
            .map(|l| l.headers["switchyard.reason"].clone())
            .unwrap()
    };
    assert_eq!(
        reason("k-string"),
        "malformed: not_object: the record is a JSON string, not an event object"
    );
    assert_eq!(
        reason("k-nested"),
        "malformed: not_object: array member 0 is a JSON array, not an event object (arrays of events do not nest)"
    );
    assert_eq!(
        reason("k-null"),
        "malformed: not_object: the record is JSON null, not an event object"
    );
    assert!(
        reason("k-poison").contains("code 6"),
        "{}",
        reason("k-poison")
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dead_letter_policy_exhausted_retries_go_to_the_dead_letter_topic() {
    let h = Harness::new(1).await;
    h.broker.create_topic(DLQ, 1).unwrap();
    h.hec.script(std::iter::repeat_n(Reply::busy(), 3));
    let produced = h.produce(events("exh", 5));
    let settings = h.settings(
        "g-exh",
        "",
        &format!("[connectors.dz-connector-splunk.batch]\nmax_events = 5\nmax_linger_ms = 60000\n[dead_letter]\ntopic = \"{DLQ}\""),
    );
    // `on_exhausted` belongs in the harness's retry table, so it is set here instead.
    let settings = {
        let mut s = settings;
        s.connectors[0].engine.retry.on_exhausted = switchyard_core::OnExhausted::DeadLetter;
        s.connectors[0].engine.retry.max_attempts = 2;
        s
    };
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        committed_to_end(&pipeline, 5),
        "{:?}",
        pipeline.source_status()
    );
    assert!(pipeline.shutdown().await);
    let letters = read_dlq(h.broker.bootstrap_servers(), 5);
    assert_eq!(letters.len(), 5);
    assert!(
        letters
            .iter()
            .all(|l| l.headers["switchyard.reason"].starts_with("retries exhausted"))
    );
    assert!(
        letters
            .iter()
            .all(|l| l.headers["switchyard.attempts"] == "2"
                && l.headers["switchyard.status_code"] == "503")
    );
    // Each letter is written on its own, so the topic's order is not the source's.
    let mut ids: Vec<String> = letters
        .iter()
        .map(|l| {
            serde_json::from_slice::<Value>(&l.payload).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        produced.iter().map(|p| p.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        h.hec.received_count(),
        0,
        "two attempts, both refused; never delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_dead_letter_topic_holds_the_partition_instead_of_skipping() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let h = Harness::new(1).await;
    h.broker.create_topic(DLQ, 1).unwrap();
    h.hec
        .reject_when(|env| env["event"]["poison"] == Value::Bool(true));
    let mut records = events("held", 20);
    let mut poisoned: Value = serde_json::from_slice(&records[7].1).unwrap();
    poisoned["poison"] = true.into();
    records[7].1 = serde_json::to_vec(&poisoned).unwrap();
    h.produce(records);
    // From now on every Produce request fails (retriably): the dead-letter write cannot land.
    let mock = h
        .broker
        .mock_cluster()
        .expect("fault injection needs the mock cluster");
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let settings = h.settings(
        "g-held",
        "",
        &format!("[connectors.dz-connector-splunk.batch]\nmax_events = 5\nmax_linger_ms = 20\n[dead_letter]\ntopic = \"{DLQ}\""),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        h.hec.wait_for_received(19, PATIENCE).await,
        "the other events are delivered"
    );
    // Everything before the poison event is committed; nothing after it, however delivered.
    assert!(
        committed_to_end(&pipeline, 7),
        "{:?}",
        pipeline.source_status()
    );
    let stats = pipeline.connector_stats(SPLUNK).unwrap();
    assert_eq!(
        (stats.snapshot().rejected, stats.snapshot().dead_lettered),
        (1, 0)
    );
    assert_eq!(
        pipeline
            .source_status()
            .committed
            .get(&(TOPIC.to_string(), 0)),
        Some(&7)
    );

    // The topic comes back: the letter lands and the partition moves on to the end.
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    assert!(
        committed_to_end(&pipeline, 20),
        "{:?}",
        pipeline.source_status()
    );
    assert_eq!(stats.snapshot().dead_lettered, 1);
    assert!(pipeline.shutdown().await);
    assert_eq!(read_dlq(h.broker.bootstrap_servers(), 1).len(), 1);
}

/// The whole dead-letter round trip through every Kafka client switchyard has: the consumer
/// and the dead-letter producer of `run`, then replay's watermark reader and consumer. Each
/// must take `[kafka.options]` (where SASL and SSL settings live): here `brokers` names a
/// port nothing listens on and only `[kafka.options]` says where the broker is, so a client
/// that ignored the options would never reach it and the test would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_delivers_the_letters_again_once_the_destination_is_fixed() {
    let h = Harness::new(1).await;
    h.broker.create_topic(DLQ, 1).unwrap();
    h.hec
        .reject_when(|env| env["event"]["poison"] == Value::Bool(true));
    let mut records = events("replay", 12);
    let mut poisoned = Vec::new();
    for i in [2, 5, 9] {
        let mut v: Value = serde_json::from_slice(&records[i].1).unwrap();
        v["poison"] = true.into();
        records[i].1 = serde_json::to_vec(&v).unwrap();
        poisoned.push(records[i].0.clone());
    }
    h.produce(records);
    let mut settings = h.settings(
        "g-replay",
        "",
        &format!("[connectors.dz-connector-splunk.batch]\nmax_events = 12\nmax_linger_ms = 100\n[dead_letter]\ntopic = \"{DLQ}\""),
    );
    settings.kafka.options.insert(
        "bootstrap.servers".into(),
        h.broker.bootstrap_servers().into(),
    );
    settings.kafka.brokers = "127.0.0.1:1".into();

    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        committed_to_end(&pipeline, 12),
        "{:?}",
        pipeline.source_status()
    );
    let stats = pipeline.connector_stats(SPLUNK).unwrap().snapshot();
    assert!(pipeline.shutdown().await);
    assert_eq!((stats.delivered, stats.dead_lettered), (9, 3));
    let before = h.indexed_ids();
    assert!(poisoned.iter().all(|id| !before.contains_key(id)));

    // The cause is fixed: the destination takes them now.
    h.hec.reject_when(|_| false);
    let timeout = Duration::from_secs(120);
    let report = switchyard::replay::run(&settings, SPLUNK, timeout)
        .await
        .expect("replay");
    assert_eq!((report.delivered, report.refused_again), (3, 0));
    let after = h.indexed_ids();
    for id in &poisoned {
        assert_eq!(after.get(id), Some(&1), "{id} replayed once");
    }
    assert_eq!(
        after.values().sum::<usize>(),
        12,
        "only the letters were sent again"
    );

    // The replay group remembers where it stopped: a second run finds nothing new.
    let again = switchyard::replay::run(&settings, SPLUNK, timeout)
        .await
        .expect("second replay");
    assert_eq!((again.delivered, again.refused_again), (0, 0));
    assert_eq!(h.indexed_ids().values().sum::<usize>(), 12);
}
