//! The spine end to end: Kafka wire protocol (librdkafka's mock cluster) → router → strict fake
//! Splunk HEC, through the real pipeline.

use serde_json::Value;
use std::collections::HashMap;
use switchyard::Pipeline;
use switchyard_core::MalformedReason;
use switchyard_testkit::hec::Reply;
use switchyard_tests::*;

/// The Splunk connector's counters; read them after shutdown, when every response is settled.
fn splunk(p: &Pipeline) -> std::sync::Arc<switchyard_core::ConnectorStats> {
    p.connector_stats(SPLUNK).expect("splunk connector")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_are_each_delivered_once_with_correct_envelopes() {
    let h = Harness::new(10).await;
    let produced = h.produce(events("a", 10_000));
    let settings = h.settings(
        "g-a",
        "",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 500\nmax_linger_ms = 50",
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();

    assert!(
        h.hec.wait_for_received(10_000, PATIENCE).await,
        "only {} indexed; {:?}; seen {:?}",
        h.hec.received_count(),
        pipeline.progress(),
        h.hec.seen().len()
    );
    let timings = pipeline.timings().clone();
    let stats = splunk(&pipeline);
    assert!(
        pipeline.shutdown().await,
        "shutdown should settle everything"
    );
    let (stats, timings) = (stats.snapshot(), timings.recent());

    let counts = h.indexed_ids();
    for p in &produced {
        assert_eq!(
            counts.get(&p.id),
            Some(&1),
            "{} should be indexed exactly once",
            p.id
        );
    }
    assert_eq!(h.hec.received_count(), 10_000);
    assert!(h.hec.violations().is_empty(), "{:?}", h.hec.violations());
    let seen = h.hec.seen();
    assert!(seen.iter().all(|s| s.compressed && s.status == 200));
    assert!(
        seen.iter().all(|s| s.items <= 500),
        "batch max_events honoured"
    );
    assert_eq!(stats.delivered, 10_000);
    assert_eq!(stats.rejected, 0);

    // Envelopes: time from event.timestamp in seconds, configured metadata, event as sent.
    let by_id: HashMap<&str, &Produced> = produced.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut with_records = 0;
    for env in h.hec.received().iter() {
        let p = by_id[env["event"]["event_id"].as_str().unwrap()];
        let ms = p.json["event"]["timestamp"].as_f64().unwrap();
        assert!((env["time"].as_f64().unwrap() - ms / 1000.0).abs() < 1e-6);
        assert_eq!(env["index"], "qoe");
        assert_eq!(env["sourcetype"], "_json");
        assert_eq!(env["source"], "switchyard-test");
        assert_eq!(env["host"], "router-1");
        let (event, records) = split_router_records(env["event"].clone(), SPLUNK);
        assert_eq!(
            event, p.json,
            "event embedded unchanged but for the router's records"
        );
        with_records += usize::from(!records.is_empty());
    }
    // Every event sent after the first delivery completed carries that delivery's records.
    assert!(
        with_records >= 10_000 - 4 * 500,
        "{with_records} events carried router records"
    );

    // Every request's timings, in collector_observability's arithmetic.
    assert!(!timings.is_empty());
    for t in &timings {
        assert_eq!(&*t.target, SPLUNK);
        assert_eq!(t.attempt_count as usize, t.calls.len());
        assert_eq!(t.status_code, 200);
        assert!(
            t.process_ms >= t.queue_ms + t.send_ms && t.process_ms <= t.queue_ms + t.send_ms + 1
        );
        assert!(t.send_ms + 1 >= t.calls.iter().map(|c| c.duration_ms).sum::<u64>());
        let records = serde_json::to_value(t.records()).unwrap();
        let names: Vec<&str> = records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metric_name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "process_duration_ms",
                "queue_duration_ms",
                "send_duration_ms",
                "call_duration_ms"
            ]
        );
        // `time` is each interval's start: send starts when queueing ends.
        assert_eq!(t.send_start_ms, t.enqueued_ms + t.queue_ms);
        assert_eq!(
            records[2]["dimension"],
            serde_json::json!({"target": SPLUNK, "attempt_count": 1, "status_code": 200})
        );
        assert_eq!(
            records[3]["dimension"],
            serde_json::json!({"target": SPLUNK, "attempt": 1, "status_code": 200})
        );
    }
    assert_eq!(timings.iter().map(|t| t.events).sum::<usize>(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_throttled_hec_is_retried_until_everything_is_delivered() {
    let h = Harness::new(2).await;
    h.hec.script([
        Reply::busy(),
        Reply::busy(),
        Reply::busy(),
        Reply::queue_full(Some(1)),
        Reply::busy(),
        Reply::queue_full(None),
    ]);
    let produced = h.produce(events("b", 600));
    let mut settings = h.settings(
        "g-b",
        "",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 100\nmax_linger_ms = 20",
    );
    // Retry-After is honoured up to max_backoff (200 ms in the harness); room for its 1 s.
    for c in settings.connectors.iter_mut().filter(|c| c.id == SPLUNK) {
        c.engine.retry.max_backoff = std::time::Duration::from_secs(2);
    }
    let pipeline = Pipeline::start(&settings).await.unwrap();

    assert!(h.hec.wait_for_received(600, PATIENCE).await);
    let stats = splunk(&pipeline);
    let timings = pipeline.timings().clone();
    assert!(pipeline.shutdown().await);
    let (stats, timings) = (stats.snapshot(), timings.recent());

    let counts = h.indexed_ids();
    assert!(
        produced.iter().all(|p| counts.get(&p.id) == Some(&1)),
        "none lost, none duplicated"
    );
    assert!(stats.retried > 0 && stats.failed_requests >= 6, "{stats:?}");
    assert_eq!((stats.delivered, stats.rejected), (600, 0));
    let statuses: Vec<u16> = h.hec.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 4);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);

    // Retry-After: 1 was honoured — the call after that 429 started at least 1 s later.
    let retried: Vec<_> = timings.iter().filter(|t| t.attempt_count > 1).collect();
    assert!(!retried.is_empty());
    for t in &retried {
        assert_eq!(t.calls.last().unwrap().status_code, 200);
        for pair in t.calls.windows(2) {
            assert!(pair[1].attempt == pair[0].attempt + 1);
        }
    }
    let after_retry_after = timings
        .iter()
        .flat_map(|t| t.calls.windows(2).map(|w| (w[0].clone(), w[1].clone())))
        .filter(|(a, _)| a.status_code == 429)
        .map(|(a, b)| b.start_ms - a.start_ms)
        .collect::<Vec<_>>();
    assert!(
        after_retry_after.iter().any(|gap| *gap >= 1000),
        "{after_retry_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_without_commit_redelivers_only_the_uncommitted_tail() {
    let h = Harness::new(3).await;
    let produced = h.produce(events("c", 3000));
    // Small sequential requests: the run spans many commit intervals.
    let settings = h.settings(
        "g-c",
        "concurrency = 1",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 10\nmax_linger_ms = 10",
    );

    let first = Pipeline::start(&settings).await.unwrap();
    // Crash once some progress is committed, while deliveries are still going on.
    loop {
        let indexed = h.hec.received_count();
        if !first.committed().is_empty() && indexed >= 500 {
            break;
        }
        assert!(
            h.hec.wait_for_received(indexed + 1, PATIENCE).await,
            "stalled before the crash"
        );
    }
    assert!(
        h.hec.received_count() < 3000,
        "the crash must leave work undone"
    );
    first.crash().await;
    // The first pipeline can commit nothing more: this is the group's position at the crash.
    let committed_before = committed_offsets(&h, "g-c");
    assert!(
        !committed_before.is_empty(),
        "some progress was committed before the crash"
    );
    let second = Pipeline::start(&settings).await.unwrap();
    let all_ids = produced.len();
    let ok = wait_all_ids(&h, &produced).await;
    assert!(
        ok,
        "every event must arrive; {} of {all_ids} ids seen",
        h.indexed_ids().len()
    );
    assert!(second.shutdown().await);

    let counts = h.indexed_ids();
    let mut duplicates = 0;
    for p in &produced {
        let n = counts[&p.id];
        if n > 1 {
            duplicates += 1;
            let committed = committed_before.get(&p.partition).copied().unwrap_or(0);
            assert!(
                p.offset >= committed,
                "{} (partition {} offset {}) was committed at {committed} yet delivered again",
                p.id,
                p.partition,
                p.offset
            );
        }
    }
    eprintln!("duplicates after crash: {duplicates} of {}", produced.len());
}

/// The group's committed offsets, read with a fresh consumer (not a member of the group).
fn committed_offsets(h: &Harness, group: &str) -> HashMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", h.broker.bootstrap_servers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..h.partitions {
        tpl.add_partition(TOPIC, p);
    }
    let committed = consumer
        .committed_offsets(tpl, std::time::Duration::from_secs(10))
        .unwrap();
    let out = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    // Dropped before the consumer: a live list would make the consumer's drop hang.
    drop(committed);
    out
}

async fn wait_all_ids(h: &Harness, produced: &[Produced]) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let target = h.hec.received_count() + 1;
        let counts = h.indexed_ids();
        if produced.iter().all(|p| counts.contains_key(&p.id)) {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || !h.hec.wait_for_received(target, left).await {
            return false;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_counted_and_skipped_while_good_ones_flow() {
    let h = Harness::new(1).await;
    let good = events("d", 6);
    let big = format!(
        r#"{{"event":{{"timestamp":1}},"pad":"{}"}}"#,
        "x".repeat(20_000)
    );
    let records: Vec<(String, Vec<u8>)> = vec![
        good[0].clone(),
        ("bad-json".into(), b"{\"event\": nope".to_vec()),
        good[1].clone(),
        ("bad-scalar".into(), b"\"a string\"".to_vec()),
        good[2].clone(),
        (
            "bad-no-ts".into(),
            br#"{"event":{"type":"x"},"connector_list":"dz-connector-splunk"}"#.to_vec(),
        ),
        good[3].clone(),
        ("bad-big".into(), big.into_bytes()),
        good[4].clone(),
        ("bad-empty".into(), Vec::new()),
        good[5].clone(),
    ];
    let produced = h.produce(records);
    let settings = h.settings("g-d", "", "[connectors.dz-connector-splunk.batch]\nmax_linger_ms = 20\n[router]\nmax_event_bytes = 10000");
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(h.hec.wait_for_received(6, PATIENCE).await);
    let source = pipeline.source_stats().clone();
    assert!(pipeline.shutdown().await);

    let counts = h.indexed_ids();
    for (id, _) in &good {
        assert_eq!(counts.get(id), Some(&1));
    }
    for reason in [
        MalformedReason::NotJson,
        MalformedReason::NotObject,
        MalformedReason::MissingTimestamp,
        MalformedReason::Oversize,
        MalformedReason::Empty,
    ] {
        assert_eq!(source.malformed(reason), 1, "{reason}");
    }
    // The offsets of bad records advanced with the good ones: the group is at the end.
    assert_eq!(
        committed_offsets(&h, "g-d").get(&0),
        Some(&(produced.len() as i64))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_event_number_keeps_the_prefix_rejects_one_and_resends_the_rest() {
    let h = Harness::new(1).await;
    h.hec
        .reject_when(|env| env["event"]["poison"] == Value::Bool(true));
    let mut records = events("e", 20);
    let mut poisoned: Value = serde_json::from_slice(&records[7].1).unwrap();
    poisoned["poison"] = true.into();
    records[7].1 = serde_json::to_vec(&poisoned).unwrap();
    let poison_id = records[7].0.clone();
    let produced = h.produce(records);
    // Exactly one batch of 20: it closes when full, never by linger.
    let settings = h.settings(
        "g-e",
        "",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 20\nmax_linger_ms = 60000",
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(h.hec.wait_for_received(19, PATIENCE).await);
    let stats = splunk(&pipeline);
    assert!(pipeline.shutdown().await);
    let stats = stats.snapshot();

    let counts = h.indexed_ids();
    for p in &produced {
        let want = if p.id == poison_id { None } else { Some(&1) };
        assert_eq!(counts.get(&p.id), want, "{}", p.id);
    }
    let seen = h.hec.seen();
    assert_eq!(
        (seen[0].status, seen[0].code, seen[0].items),
        (400, 6, 8),
        "first request: 7 indexed, #7 refused"
    );
    assert_eq!(
        (seen[1].status, seen[1].items),
        (200, 12),
        "only the suffix is resent"
    );
    assert_eq!(seen.len(), 2);
    assert_eq!((stats.delivered, stats.rejected), (19, 1));
    assert_eq!(
        committed_offsets(&h, "g-e").get(&0),
        Some(&20),
        "the rejected event does not hold the partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_batch_until_it_fits() {
    let h = Harness::with_hec(
        1,
        switchyard_testkit::FakeHec::builder(TOKEN).max_content_length(40_000),
    )
    .await;
    let produced = h.produce(events("f", 64));
    let settings = h.settings(
        "g-f",
        "compression = \"none\"",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 64\nmax_linger_ms = 60000",
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(h.hec.wait_for_received(64, PATIENCE).await);
    assert!(pipeline.shutdown().await);

    let counts = h.indexed_ids();
    assert!(produced.iter().all(|p| counts.get(&p.id) == Some(&1)));
    let seen = h.hec.seen();
    assert!(seen.iter().any(|s| s.status == 413));
    assert!(
        seen.iter()
            .filter(|s| s.status == 200)
            .all(|s| s.body_bytes <= 40_000)
    );
}

/// A second member joins while the first is mid-delivery (a slow indexer). Returns the
/// group's commits at the handover, what was produced, and how often each event arrived.
async fn rebalance_mid_delivery(
    h: &Harness,
) -> (HashMap<i32, i64>, Vec<Produced>, HashMap<String, usize>) {
    let produced = h.produce(events("r", 2000));
    let mut settings = h.settings_with(
        "g-r",
        "revoke_drain_timeout_secs = 60",
        "concurrency = 2",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 50\nmax_linger_ms = 10",
    );
    // The premise: the first member has read all 2,000 records (8.8 MB) before the second
    // joins, so that what is committed at the handover is all of it. The default 8 MiB
    // prefetch would leave the last fetch to chance under a loaded CI machine.
    for (key, value) in [
        ("queued.max.messages.kbytes", "65536"),
        ("fetch.max.bytes", "52428800"),
    ] {
        settings.kafka.options.insert(key.into(), value.into());
    }
    let first = Pipeline::start(&settings).await.unwrap();
    tokio::task::block_in_place(|| assert!(first.wait_for_source(PATIENCE, |s| s.assigned == 4)));
    assert!(h.hec.wait_for_received(200, PATIENCE).await);
    assert!(
        h.hec.received_count() < 2000,
        "the rebalance must start mid-delivery"
    );

    // The second member commits only at shutdown, so the group's commits at the handover
    // are the first member's: exactly where the second starts each partition it takes.
    let mut later = settings.clone();
    later.kafka.commit_interval = std::time::Duration::from_secs(3600);
    let second = Pipeline::start(&later).await.unwrap();
    tokio::task::block_in_place(|| {
        // The first member's revoke waited for its in-flight deliveries rather than
        // abandoning them, then the partitions were shared out.
        assert!(
            first.wait_for_source(PATIENCE, |s| s.revokes_drained >= 1),
            "{:?}",
            first.source_status()
        );
        assert!(second.wait_for_source(PATIENCE, |s| s.assigned > 0));
        assert!(first.wait_for_source(PATIENCE, |s| s.assigned > 0 && s.assigned < 4));
    });
    assert_eq!(first.source_status().revokes_timed_out, 0);
    let handover = committed_offsets(h, "g-r");
    assert!(wait_all_ids(h, &produced).await, "every event arrives");
    assert!(first.shutdown().await);
    assert!(second.shutdown().await);
    let counts = h.indexed_ids();
    (handover, produced, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_mid_delivery_drains_revoked_partitions_and_loses_nothing() {
    let hec = switchyard_testkit::FakeHec::builder(TOKEN)
        .respond_after(std::time::Duration::from_millis(100));
    let h = Harness::with_hec(4, hec).await;
    let (handover, produced, counts) = rebalance_mid_delivery(&h).await;
    // At-least-once across the handover: a duplicate is only ever an event at or past the
    // offset the group had committed when the second member took over. (librdkafka's mock
    // refuses the revoke-time commit, so duplicates are expected here; see the Tansu test.)
    for p in &produced {
        if counts[&p.id] > 1 {
            let committed = handover.get(&p.partition).copied().unwrap_or(0);
            assert!(
                p.offset >= committed,
                "{} at {} was committed ({committed}) yet redelivered",
                p.id,
                p.offset
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_broker_that_accepts_it_the_revoke_commit_hands_over_without_duplicates() {
    // Tansu, an independent Kafka-compatible broker, accepts commits while a group
    // rebalances, as Kafka does: the first member's drained work is committed at the revoke.
    let broker = switchyard_testkit::Broker::tansu().unwrap_or_else(|e| panic!("{e}"));
    let hec = switchyard_testkit::FakeHec::builder(TOKEN)
        .respond_after(std::time::Duration::from_millis(100));
    let h = Harness::on(broker, 4, hec).await;
    let (handover, produced, counts) = rebalance_mid_delivery(&h).await;
    assert_eq!(
        handover,
        (0..4).map(|p| (p, 500)).collect::<HashMap<_, _>>(),
        "everything committed at the handover"
    );
    assert!(
        produced.iter().all(|p| counts[&p.id] == 1),
        "so nothing was delivered twice"
    );
}
