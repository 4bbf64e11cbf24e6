//! The real binary while a destination is down: SIGTERM mid-delivery (finished work is
//! committed first, the stop fits its budget, nothing unfinished is committed or lost), and
//! large events held within `max_inflight_bytes`.

use std::time::{Duration, Instant};
use switchyard_testkit::probe::{http_get, metric};
use switchyard_testkit::{Broker, FakeDatadog, FakeHec, Generator};

mod common;
use common::{Router, TempFile, committed, counts, free_addr, peak_rss_mib, read_metric};

const TOKEN: &str = "outage-token";
const DD_KEY: &str = "outage-dd-key";
const HEC: &str = "dz-connector-splunk";
const DD: &str = "dz-connector-datadog";
const PATIENCE: Duration = Duration::from_secs(120);

/// `committed` on "qoe", on a blocking thread rather than the runtime's.
async fn committed_now(bootstrap: &str, group: &str, partitions: i32) -> Vec<Option<i64>> {
    let (b, g) = (bootstrap.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || committed(&b, &g, "qoe", partitions))
        .await
        .unwrap()
}

/// `router.shutdown_timeout_secs` in the test below: the whole stop, SIGTERM to exit.
const SHUTDOWN_SECS: u64 = 9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_destination_is_down_commits_finished_work_first_and_exits_in_budget() {
    let broker = Broker::mock().unwrap();
    broker.create_topic("qoe", 2).unwrap();
    broker.create_topic("qoe-parked", 2).unwrap();
    let hec = FakeHec::builder(TOKEN).start().await.unwrap();
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    dd.fail_randomly(1000); // Datadog is down until the restart

    // Partition 0: Splunk only, all delivered before SIGTERM. Partition 1: both, so none of
    // it finishes while Datadog is down.
    let mut only_hec = Generator::new("term-hec", 3).connector_lists(&[HEC]);
    let mut both = Generator::new("term-both", 4).connector_lists(&[&format!("{HEC},{DD}")]);
    let mut records = Vec::new();
    let mut p0 = Vec::new();
    let mut p1 = Vec::new();
    for _ in 0..300 {
        let (id, bytes) = only_hec.next_event();
        p0.push(id);
        records.push((0, bytes));
    }
    for _ in 0..100 {
        let (id, bytes) = both.next_event();
        p1.push(id);
        records.push((1, bytes));
    }
    broker.produce("qoe", records);
    let bootstrap = broker.bootstrap_servers().to_string();

    let file = TempFile::new(
        "sigterm-outage",
        &format!(
            r#"
[kafka]
brokers = "{bootstrap}"
topics = ["qoe"]
group_id = "sigterm-outage"
# No periodic commit before SIGTERM: any commit seen after it is the shutdown's.
commit_interval_ms = 600000
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[router]
shutdown_timeout_secs = {SHUTDOWN_SECS}
[parking]
topic = "qoe-parked"
[admin]
bind = "127.0.0.1:0"
[connectors.{HEC}]
kind = "splunk_hec"
endpoint = "{hec}"
token = "{TOKEN}"
[connectors.{HEC}.batch]
max_events = 50
max_linger_ms = 20
[connectors.{DD}]
kind = "datadog_logs"
endpoint = "{dd}"
api_key = "{DD_KEY}"
[connectors.{DD}.batch]
max_events = 50
max_linger_ms = 20
[connectors.{DD}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
"#,
            hec = hec.url(),
            dd = dd.url()
        ),
    );
    let mut router = Router::start(file.path(), None);

    // Everything reached Splunk, and Datadog is being retried: deliveries are in progress.
    assert!(hec.wait_for_received(400, PATIENCE).await);
    let dd_tries = dd.seen().len();
    assert!(
        dd.wait_for_seen(PATIENCE, |s| s.len() > dd_tries + 2).await,
        "Datadog is being retried"
    );
    assert_eq!(
        committed_now(&bootstrap, "sigterm-outage", 2).await,
        [None, None],
        "nothing committed before SIGTERM"
    );

    router.terminate();
    let sent = Instant::now();
    // The wait for Datadog lasts until the reserve before the deadline (6 s of 9); the
    // finished partition's commit must be visible long before that.
    let wait_ends = Duration::from_secs(SHUTDOWN_SECS) - Duration::from_secs(SHUTDOWN_SECS / 3);
    let committed_at = loop {
        let c = committed_now(&bootstrap, "sigterm-outage", 2).await;
        if c[0] == Some(300) {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(SHUTDOWN_SECS),
            "partition 0 not committed: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        router.0.try_wait().unwrap().is_none(),
        "committed while still waiting for Datadog, not at the end"
    );
    assert!(
        committed_at < wait_ends,
        "finished work committed {committed_at:?} after SIGTERM, not before the wait"
    );
    let status = loop {
        if let Some(status) = router.0.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = sent.elapsed();
    eprintln!(
        "SIGTERM with Datadog down: partition 0 committed after {committed_at:?}, exit after {took:?} (budget {SHUTDOWN_SECS} s)"
    );
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(SHUTDOWN_SECS),
        "shutdown took {took:?}, over router.shutdown_timeout_secs = {SHUTDOWN_SECS}"
    );
    assert_eq!(
        committed_now(&bootstrap, "sigterm-outage", 2).await,
        [Some(300), None],
        "partition 1 waits for Datadog: nothing of it is committed"
    );

    // Datadog is back: a new run delivers partition 1 (nothing lost) and not partition 0
    // again (its commit held).
    dd.fail_randomly(0);
    let router = Router::start(file.path(), None);
    let deadline = Instant::now() + PATIENCE;
    while counts(dd.received(), "/event_id").len() < p1.len() {
        assert!(Instant::now() < deadline, "partition 1 not redelivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = counts(dd.received(), "/event_id");
    assert!(p1.iter().all(|id| d.contains_key(id)));
    let h = counts(hec.received(), "/event/event_id");
    assert!(
        p0.iter().all(|id| h.get(id) == Some(&1)),
        "partition 0 delivered again after its commit"
    );
    router.terminate();
    drop(router);
}

/// A sample event padded to `size` bytes.
fn large_event(g: &mut Generator, size: usize) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&g.next_event().1).unwrap();
    let have = serde_json::to_vec(&v).unwrap().len();
    // `,"padding":""` is 13 bytes.
    v["padding"] = serde_json::Value::String("p".repeat(size - have - 13));
    let bytes = serde_json::to_vec(&v).unwrap();
    assert_eq!(bytes.len(), size);
    bytes
}

const EVENT_BYTES: usize = 256 << 10;
const INFLIGHT_MIB: usize = 8;
const PARTITIONS: i32 = 16;
/// 16 × 16 × 256 KiB = 64 MiB in the topic (the mock keeps about 5 MiB per partition), all
/// of it for Splunk, which is down: without the byte bound the router holds all of it.
const PER_PARTITION: i32 = 16;

/// The router's bound here, in MiB: `max_inflight_bytes` (8), plus one record per partition
/// let in past it before that partition paused (16 × 256 KiB = 4), librdkafka's prefetch and
/// the fetch response being decoded (8 + 8), Datadog's requests in flight (compressed while
/// encoded), and the debug binary with its runtime and librdkafka clients (about 40 MiB).
/// Measured: 69 MiB peak; with the byte bound lifted the router read the whole topic and
/// peaked at 130 MiB.
const LARGE_EVENTS_BOUND_MIB: f64 = 100.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_with_a_destination_down_stay_within_max_inflight_bytes() {
    let broker = Broker::mock().unwrap();
    broker.create_topic("qoe", PARTITIONS).unwrap();
    let hec = FakeHec::builder(TOKEN)
        .counting_only()
        .start()
        .await
        .unwrap();
    let dd = FakeDatadog::start_with(DD_KEY, switchyard_testkit::datadog::MAX_PAYLOAD, false)
        .await
        .unwrap();
    hec.fail_randomly(1000); // Splunk is down for the whole test; on_exhausted = block holds
    let admin = free_addr();
    let mut g = Generator::new("large", 9).connector_lists(&[&format!("{HEC},{DD}")]);
    let records: Vec<(i32, Vec<u8>)> = (0..PARTITIONS * PER_PARTITION)
        .map(|i| (i % PARTITIONS, large_event(&mut g, EVENT_BYTES)))
        .collect();
    broker.produce("qoe", records);
    let file = TempFile::new(
        "large-events",
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["qoe"]
group_id = "large-events"
max_inflight_bytes = {bytes}
# Isolation would park Splunk's events and let more in; the byte bound is under test here.
[parking]
enabled = false
[admin]
bind = "{admin}"
[connectors.{HEC}]
kind = "splunk_hec"
endpoint = "{hec}"
token = "{TOKEN}"
[connectors.{HEC}.retry]
initial_backoff_ms = 10
max_backoff_ms = 100
[connectors.{DD}]
kind = "datadog_logs"
endpoint = "{dd}"
api_key = "{DD_KEY}"
[connectors.{DD}.batch]
max_linger_ms = 20
"#,
            brokers = broker.bootstrap_servers(),
            bytes = INFLIGHT_MIB << 20,
            hec = hec.url(),
            dd = dd.url()
        ),
    );
    let router = Router::start(file.path(), None);
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(&admin).is_err() {
        assert!(Instant::now() < deadline, "admin server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Partitions pause once the unfinished payloads reach the bound; Datadog got what was
    // let in, Splunk holds it.
    let deadline = Instant::now() + PATIENCE;
    let (consumed, paused) = loop {
        let (_, text) = http_get(&admin, "/metrics").await;
        let consumed = metric(&text, "switchyard_events_consumed_total").unwrap_or(0.0);
        let paused = metric(&text, "switchyard_paused_partitions").unwrap_or(0.0);
        let delivered = metric(
            &text,
            "switchyard_events_delivered_total{connector=\"dz-connector-datadog\"}",
        )
        .unwrap_or(0.0);
        if (paused >= PARTITIONS as f64 && delivered >= consumed) || Instant::now() > deadline {
            break (consumed, paused);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rss = peak_rss_mib(router.0.id());
    let held_mib = consumed * EVENT_BYTES as f64 / (1 << 20) as f64;
    eprintln!(
        "large events, Splunk down: {consumed} of {} records read ({held_mib:.1} MiB), {paused} partitions paused, peak RSS {rss:.0} MiB (bound {LARGE_EVENTS_BOUND_MIB} MiB)",
        PARTITIONS * PER_PARTITION
    );
    assert_eq!(paused, PARTITIONS as f64, "every partition paused");
    // The bound, plus at most one record per partition past it.
    let most = (INFLIGHT_MIB << 20) / EVENT_BYTES + PARTITIONS as usize;
    assert!(
        consumed >= ((INFLIGHT_MIB << 20) / EVENT_BYTES) as f64 && consumed <= most as f64,
        "read {consumed} records of {EVENT_BYTES} bytes, bound {INFLIGHT_MIB} MiB"
    );
    assert!(
        rss > 0.0 && rss < LARGE_EVENTS_BOUND_MIB,
        "peak RSS {rss} MiB"
    );
    let (_, text) = http_get(&admin, "/metrics").await;
    let unfinished = metric(&text, "switchyard_unfinished_bytes").unwrap_or(0.0);
    assert_eq!(
        unfinished,
        consumed * EVENT_BYTES as f64,
        "every event read is held for Splunk, and counted"
    );
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_an_outage_cancels_the_revoked_work_instead_of_letting_in_more() {
    let partitions = 4;
    let broker = Broker::mock().unwrap();
    broker.create_topic("qoe", partitions).unwrap();
    let hec = FakeHec::builder(TOKEN)
        .counting_only()
        .start()
        .await
        .unwrap();
    hec.fail_randomly(1000); // Splunk is down for the whole test; on_exhausted = block holds
    let mut g = Generator::new("rebalance", 21).connector_lists(&[HEC]);
    let records: Vec<(i32, Vec<u8>)> = (0..partitions * 300)
        .map(|i| (i % partitions, g.next_event().1))
        .collect();
    broker.produce("qoe", records);
    let config = |admin: &str| {
        format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["qoe"]
group_id = "rebalance-outage"
max_inflight_per_partition = 50
max_inflight_events = 100
revoke_drain_timeout_secs = 1
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[parking]
enabled = false
[admin]
bind = "{admin}"
[connectors.{HEC}]
kind = "splunk_hec"
endpoint = "{hec}"
token = "{TOKEN}"
[connectors.{HEC}.retry]
initial_backoff_ms = 10
max_backoff_ms = 100
"#,
            brokers = broker.bootstrap_servers(),
            hec = hec.url(),
        )
    };
    let (admin_a, admin_b) = (free_addr(), free_addr());
    let file_a = TempFile::new("rebalance-a", &config(&admin_a));
    let file_b = TempFile::new("rebalance-b", &config(&admin_b));
    let routed = format!("switchyard_events_routed_total{{connector=\"{HEC}\"}}");
    let cancelled = format!("switchyard_events_cancelled_total{{connector=\"{HEC}\"}}");

    let a = Router::start(file_a.path(), None);
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(&admin_a).is_err()
        || read_metric(&admin_a, "switchyard_paused_partitions").await < 1.0
    {
        assert!(Instant::now() < deadline, "the first router never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second member joins: the partitions that move to it are revoked from the first one
    // mid-retry (cooperative-sticky revokes just those; the eager protocol would revoke all
    // and hand half back under new ids). Whatever the first one's Splunk worker still held of
    // them must be dropped, so that all it holds is what its bounds count: every event routed
    // to Splunk is then either unfinished or cancelled. Before, the revoked events stayed in
    // the retries, uncounted, and new ones came in beside them.
    let b = Router::start(file_b.path(), None);
    let deadline = Instant::now() + PATIENCE;
    let (held, unfinished, dropped) = loop {
        let (_, text) = http_get(&admin_a, "/metrics").await;
        let get = |name: &str| metric(&text, name).unwrap_or(0.0);
        let (r, c) = (get(&routed), get(&cancelled));
        let unfinished = get("switchyard_unfinished_events");
        // After the revocation: nothing it read is held outside the count.
        if c > 0.0 && r - c == unfinished {
            break (r - c, unfinished, c);
        }
        assert!(
            Instant::now() < deadline,
            "router A: {r} routed to Splunk, {c} cancelled, {unfinished} unfinished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "rebalance with Splunk down: router A dropped {dropped} revoked events, holds {held} ({unfinished} unfinished)"
    );
    assert!(held <= 100.0 + partitions as f64, "held {held}");
    assert_eq!(hec.received_count(), 0);
    drop(b);
    drop(a);
}
