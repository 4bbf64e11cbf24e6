//! The crash loop: the real binary is SIGKILLed at random moments K times while the fake
//! destinations randomly fail, and restarted each time. At the end every event must have
//! reached every destination of its connector_list at least once, and every duplicate must be
//! an event that had been delivered past the group's committed offset at a kill (read from the
//! broker while the router is frozen just before it is killed).
//!
//! `make test` runs it small; `make soak` sets SWITCHYARD_SOAK_EVENTS and
//! SWITCHYARD_SOAK_KILLS higher.

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use switchyard_testkit::probe::{http_get, metric};
use switchyard_testkit::{Broker, FakeDatadog, FakeHec, Generator};

mod common;
use common::{Router, TempFile, committed, counts, free_addr, peak_rss_mib};

const TOKEN: &str = "crash-loop-token";
const DD_KEY: &str = "crash-loop-dd-key";
const HEC: &str = "dz-connector-splunk";
const DD: &str = "dz-connector-datadog";
const PATIENCE: Duration = Duration::from_secs(300);
const COMMIT_INTERVAL_MS: u64 = 200;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where each event of a connector sits in the topic, by event id.
type Placed = HashMap<String, (i32, i64)>;

/// The group's committed offsets on "qoe", by partition; partitions without one left out.
fn committed_offsets(broker: &Broker, group: &str, partitions: i32) -> HashMap<i32, i64> {
    committed(broker.bootstrap_servers(), group, "qoe", partitions)
        .into_iter()
        .zip(0..)
        .filter_map(|(offset, p)| Some((p, offset?)))
        .collect()
}

/// Freezes the router (SIGSTOP) so that nothing more is delivered or committed while the
/// test reads what it delivered and what it committed, then waits for requests it had
/// already sent to be taken in by the fakes.
async fn freeze(router: &Router, hec: &FakeHec, dd: &FakeDatadog) {
    // SAFETY: kill(2) on a child this test started and has not yet reaped.
    assert_eq!(
        unsafe { libc::kill(router.0.id() as i32, libc::SIGSTOP) },
        0
    );
    let mut seen = (hec.received_count(), dd.received_count());
    loop {
        let _ = hec
            .wait_for_received(seen.0 + 1, Duration::from_millis(300))
            .await;
        let now = (hec.received_count(), dd.received_count());
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// At one kill: the events each fake had received whose offsets the group had not yet
/// committed. These, and only these, the next run may deliver again.
struct Tail {
    hec: HashSet<String>,
    dd: HashSet<String>,
}

impl Tail {
    fn len(&self) -> usize {
        self.hec.len() + self.dd.len()
    }
}

fn uncommitted(
    got: &HashMap<String, usize>,
    placed: &Placed,
    committed: &HashMap<i32, i64>,
) -> HashSet<String> {
    got.keys()
        .filter(|id| {
            placed
                .get(*id)
                .is_some_and(|(p, o)| *o >= committed.get(p).copied().unwrap_or(0))
        })
        .cloned()
        .collect()
}

/// Copies of an event beyond the first that no kill explains: more than one plus the
/// number of tails it was in.
fn unexplained(
    got: &HashMap<String, usize>,
    tails: &[&HashSet<String>],
) -> Vec<(String, usize, usize)> {
    got.iter()
        .filter_map(|(id, n)| {
            let allowed = 1 + tails.iter().filter(|t| t.contains(id)).count();
            (*n > allowed).then(|| (id.clone(), *n, allowed))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_restarts_lose_nothing() {
    let n = env_or("SWITCHYARD_SOAK_EVENTS", 2000);
    let kills = env_or("SWITCHYARD_SOAK_KILLS", 3);
    // The mock keeps 5 MiB per partition: about 1,400 sample-size events.
    let partitions = (n / 1000 + 2) as i32;
    let broker = Broker::from_env().unwrap();
    broker.create_topic("qoe", partitions).unwrap();
    let hec = FakeHec::builder(TOKEN).start().await.unwrap();
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    hec.fail_randomly(100);
    dd.fail_randomly(100);

    let lists = [HEC, DD, "dz-connector-splunk,dz-connector-datadog"];
    let mut g = Generator::new("crash", 11).connector_lists(&lists);
    let mut want_hec = Placed::new();
    let mut want_dd = Placed::new();
    let mut records = Vec::new();
    for i in 0..n {
        let (id, bytes) = g.next_event();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let list = v["connector_list"].as_str().unwrap();
        // A fresh topic written in order, round robin: the offset follows from the index.
        let place = ((i as i32) % partitions, (i / partitions as u64) as i64);
        if list.contains(HEC) {
            want_hec.insert(id.clone(), place);
        }
        if list.contains(DD) {
            want_dd.insert(id, place);
        }
        records.push((place.0, bytes));
    }
    broker.produce("qoe", records);

    let file = TempFile::new(
        "crash-loop",
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["qoe"]
group_id = "crash-loop"
commit_interval_ms = {COMMIT_INTERVAL_MS}
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[admin]
bind = "127.0.0.1:0"
[connectors.{HEC}]
kind = "splunk_hec"
endpoint = "{hec}"
token = "{TOKEN}"
[connectors.{HEC}.batch]
max_events = 50
max_linger_ms = 20
[connectors.{HEC}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
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
            brokers = broker.bootstrap_servers(),
            hec = hec.url(),
            dd = dd.url()
        ),
    );
    let config = file.path();
    // With SWITCHYARD_TEST_KAFKA=tansu, the restarts are static members' (the mock cluster
    // ignores group.instance.id): compare the restart times.
    let instance = std::env::var("SWITCHYARD_CRASH_INSTANCE_ID").ok();

    let mut tails = Vec::new();
    let mut resumes = Vec::new();
    for kill in 0..kills {
        let before = hec.received_count();
        let restarted = tokio::time::Instant::now();
        let router = Router::start(config, instance.as_deref());
        assert!(
            hec.wait_for_received(before + 1, PATIENCE).await,
            "router {kill} made no progress"
        );
        resumes.push(restarted.elapsed());
        // A random moment, measured in deliveries rather than time.
        let step = fastrand::u64(40..(n / (kills + 1)).max(41));
        assert!(
            hec.wait_for_received(before + step, PATIENCE).await,
            "router {kill} stalled"
        );
        freeze(&router, &hec, &dd).await;
        let committed = committed_offsets(&broker, "crash-loop", partitions);
        let (h, d) = (
            counts(hec.received(), "/event/event_id"),
            counts(dd.received(), "/event_id"),
        );
        tails.push(Tail {
            hec: uncommitted(&h, &want_hec, &committed),
            dd: uncommitted(&d, &want_dd, &committed),
        });
        drop(router); // SIGKILL: no flush, no commit
    }

    // The last run goes to the end, then stops gracefully.
    let router = Router::start(config, instance.as_deref());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (h, d) = (
            counts(hec.received(), "/event/event_id"),
            counts(dd.received(), "/event_id"),
        );
        if want_hec.keys().all(|id| h.contains_key(id))
            && want_dd.keys().all(|id| d.contains_key(id))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything arrived"
        );
        let seen = hec.received_count();
        let _ = hec
            .wait_for_received(seen + 1, Duration::from_millis(500))
            .await;
        let seen = dd.received_count();
        let _ = dd
            .wait_for_received(seen + 1, Duration::from_millis(500))
            .await;
    }
    router.terminate();
    let status = router.exited().await;
    assert!(
        status.success(),
        "graceful stop after the crash loop: {status:?}"
    );

    let (h, d) = (
        counts(hec.received(), "/event/event_id"),
        counts(dd.received(), "/event_id"),
    );
    let delivered: usize = h.values().sum::<usize>() + d.values().sum::<usize>();
    let wanted = want_hec.len() + want_dd.len();
    let duplicates = delivered - wanted;
    let tail_sum: usize = tails.iter().map(Tail::len).sum();
    let secs = |d: &Duration| format!("{:.1}", d.as_secs_f64());
    eprintln!(
        "crash loop: {n} events, {kills} SIGKILLs, 10% random 503s, commit every {COMMIT_INTERVAL_MS} ms: {wanted} deliveries wanted, {delivered} made, duplicate rate {:.2}%; duplicates per kill {:.0}; delivered but uncommitted at each kill {:?} (sum {tail_sum}); restart to resumed delivery (s) {:?}",
        100.0 * duplicates as f64 / wanted as f64,
        duplicates as f64 / kills.max(1) as f64,
        tails.iter().map(Tail::len).collect::<Vec<_>>(),
        resumes.iter().map(secs).collect::<Vec<_>>(),
    );
    assert!(
        h.keys().all(|id| want_hec.contains_key(id)) && d.keys().all(|id| want_dd.contains_key(id)),
        "nothing sent where it was not routed"
    );
    // At-least-once costs only what was delivered past the commit point at a kill: every
    // copy beyond the first is one such tail delivered again.
    let hec_tails: Vec<&HashSet<String>> = tails.iter().map(|t| &t.hec).collect();
    let dd_tails: Vec<&HashSet<String>> = tails.iter().map(|t| &t.dd).collect();
    let (bad_hec, bad_dd) = (unexplained(&h, &hec_tails), unexplained(&d, &dd_tails));
    assert!(
        bad_hec.is_empty() && bad_dd.is_empty(),
        "copies no kill explains (id, copies, allowed): Splunk {:?}, Datadog {:?}",
        &bad_hec[..bad_hec.len().min(5)],
        &bad_dd[..bad_dd.len().min(5)]
    );
    assert!(
        duplicates <= tail_sum,
        "{duplicates} duplicates, tails {tail_sum}"
    );
}

/// The bound this test holds the router to: the in-flight limits below (400 events of about
/// 4 KB) plus librdkafka's 8 MiB prefetch, the runtime and a debug build's overhead.
const MEMORY_BOUND_MIB: f64 = 128.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_long_keeps_memory_bounded() {
    let partitions = 8;
    let broker = Broker::mock().unwrap();
    broker.create_topic("qoe", partitions).unwrap();
    let hec = FakeHec::builder(TOKEN)
        .counting_only()
        .start()
        .await
        .unwrap();
    let dd = FakeDatadog::start_with(DD_KEY, switchyard_testkit::datadog::MAX_PAYLOAD, false)
        .await
        .unwrap();
    hec.fail_randomly(1000); // Splunk is down for the whole test; on_exhausted = block holds.
    let admin = free_addr();

    let file = TempFile::new(
        "memory",
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["qoe"]
group_id = "memory"
max_inflight_per_partition = 100
max_inflight_events = 400
# Without isolation: the held partitions are what bound memory here.
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
            hec = hec.url(),
            dd = dd.url()
        ),
    );
    let router = Router::start(file.path(), None);

    // Producers keep writing while Splunk is down: 8,000 events, every one for both.
    let bootstrap = broker.bootstrap_servers().to_string();
    let producer = std::thread::spawn(move || {
        let broker_client: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let mut g =
            Generator::new("mem", 5).connector_lists(&["dz-connector-splunk,dz-connector-datadog"]);
        use rdkafka::producer::Producer;
        for i in 0..8000 {
            let payload = g.next_event().1;
            let mut record = rdkafka::producer::BaseRecord::<(), _>::to("qoe")
                .partition(i % partitions)
                .payload(&payload);
            while let Err((_, r)) = broker_client.send(record) {
                broker_client.poll(Duration::from_millis(10));
                record = r;
            }
            broker_client.poll(Duration::ZERO);
        }
        broker_client.flush(Duration::from_secs(60)).unwrap();
    });
    tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    // Datadog gets what was let in before the partitions paused; then the inflow stops.
    assert!(dd.wait_for_received(400, PATIENCE).await);

    // A record over the limit first waits up to 500 ms for deliveries (a brief overload is
    // ridden out); with Splunk down they never come, so partitions then pause.
    let deadline = std::time::Instant::now() + PATIENCE;
    let (consumed, paused) = loop {
        let (_, text) = http_get(&admin, "/metrics").await;
        let consumed = metric(&text, "switchyard_events_consumed_total").unwrap_or(f64::MAX);
        let paused = metric(&text, "switchyard_paused_partitions").unwrap_or(0.0);
        if paused >= 1.0 || std::time::Instant::now() > deadline {
            break (consumed, paused);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rss = peak_rss_mib(router.0.id());
    eprintln!(
        "destination down: {consumed} of 8000 records read, {paused} partitions paused, peak RSS {rss:.0} MiB (bound {MEMORY_BOUND_MIB} MiB)"
    );
    assert!(
        consumed <= 1200.0,
        "read {consumed} records while Splunk held every one"
    );
    assert!(paused >= 1.0, "partitions are paused, not buffered");
    assert!(rss > 0.0 && rss < MEMORY_BOUND_MIB, "peak RSS {rss} MiB");
    drop(router);
}

/// Which of `ids` each fake has not received yet.
fn missing(want: &HashSet<String>, got: &HashMap<String, usize>) -> usize {
    want.iter().filter(|id| !got.contains_key(*id)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_while_detached_and_while_draining_loses_nothing() {
    let n = env_or("SWITCHYARD_SOAK_EVENTS", 2000);
    let partitions = (n / 1000 + 2) as i32;
    let broker = Broker::mock().unwrap();
    broker.create_topic("qoe", partitions).unwrap();
    broker.create_topic("qoe-parked", 2 * partitions).unwrap();
    let hec = FakeHec::builder(TOKEN).start().await.unwrap();
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    hec.fail_randomly(1000); // Splunk is down until the drain phase
    dd.fail_randomly(100);

    let both = "dz-connector-splunk,dz-connector-datadog";
    let mut g = Generator::new("detach", 13).connector_lists(&[both]);
    let mut want = HashSet::new();
    let mut records = Vec::new();
    for i in 0..n {
        let (id, bytes) = g.next_event();
        want.insert(id);
        records.push(((i as i32) % partitions, bytes));
    }
    broker.produce("qoe", records);
    let file = TempFile::new(
        "detach-loop",
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["qoe"]
group_id = "detach-loop"
commit_interval_ms = 200
max_inflight_per_partition = 200
max_inflight_events = 400
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[parking]
topic = "qoe-parked"
[admin]
bind = "127.0.0.1:0"
[connectors.{HEC}]
kind = "splunk_hec"
endpoint = "{hec}"
token = "{TOKEN}"
detach_after_secs = 1
[connectors.{HEC}.batch]
max_events = 50
max_linger_ms = 20
[connectors.{HEC}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
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
            brokers = broker.bootstrap_servers(),
            hec = hec.url(),
            dd = dd.url()
        ),
    );
    let config = file.path();
    let kill_when = async |what: &str, done: &dyn Fn() -> bool| {
        let router = Router::start(config, None);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        router.kill_nine();
    };
    // While detached: Datadog progresses with Splunk down (more than the in-flight limit of
    // 400 could let through without isolation).
    let third = n / 3;
    kill_when("detached, first kill", &|| dd.received_count() >= third).await;
    kill_when("detached, second kill", &|| {
        dd.received_count() >= 2 * third
    })
    .await;
    assert_eq!(hec.received_count(), 0);
    // Splunk comes back; kill while its parked events are being drained.
    hec.fail_randomly(0);
    kill_when("draining", &|| hec.received_count() >= third / 2).await;

    // The last run goes to the end, then stops gracefully.
    let router = Router::start(config, None);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (h, d) = (
            counts(hec.received(), "/event/event_id"),
            counts(dd.received(), "/event_id"),
        );
        if missing(&want, &h) == 0 && missing(&want, &d) == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything arrived: {} missing at Splunk, {} at Datadog",
            missing(&want, &h),
            missing(&want, &d)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    router.terminate();
    let status = router.exited().await;
    assert!(status.success(), "graceful stop: {status:?}");
    let (h, d) = (
        counts(hec.received(), "/event/event_id"),
        counts(dd.received(), "/event_id"),
    );
    let delivered: usize = h.values().sum::<usize>() + d.values().sum::<usize>();
    eprintln!(
        "detach loop: {n} events, 3 SIGKILLs (2 detached, 1 draining): {} deliveries wanted, {delivered} made, duplicate rate {:.2}%",
        2 * n,
        100.0 * (delivered as f64 - 2.0 * n as f64) / (2.0 * n as f64)
    );
    assert!(h.keys().chain(d.keys()).all(|id| want.contains(id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_long_is_detached_and_memory_stays_bounded() {
    let partitions = 8;
    let broker = Broker::mock().unwrap();
    broker.create_topic("qoe", partitions).unwrap();
    broker.create_topic("qoe-parked", 16).unwrap();
    let hec = FakeHec::builder(TOKEN)
        .counting_only()
        .start()
        .await
        .unwrap();
    let dd = FakeDatadog::start_with(DD_KEY, switchyard_testkit::datadog::MAX_PAYLOAD, false)
        .await
        .unwrap();
    hec.fail_randomly(1000); // Splunk is down for the whole test
    let admin = free_addr();
    let file = TempFile::new(
        "detached-memory",
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["qoe"]
group_id = "detached-memory"
max_inflight_per_partition = 100
max_inflight_events = 400
[parking]
topic = "qoe-parked"
[admin]
bind = "{admin}"
[connectors.{HEC}]
kind = "splunk_hec"
endpoint = "{hec}"
token = "{TOKEN}"
detach_after_secs = 1
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
            hec = hec.url(),
            dd = dd.url()
        ),
    );
    let router = Router::start(file.path(), None);
    let mut g =
        Generator::new("dmem", 5).connector_lists(&["dz-connector-splunk,dz-connector-datadog"]);
    let records: Vec<(i32, Vec<u8>)> = (0..8000)
        .map(|i| (i % partitions, g.next_event().1))
        .collect();
    broker.produce("qoe", records);
    // Every event reaches Datadog while Splunk is down: nothing holds the partitions.
    assert!(dd.wait_for_received(8000, PATIENCE).await);
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        let (_, text) = http_get(&admin, "/metrics").await;
        let parked = metric(
            &text,
            "switchyard_events_parked_total{connector=\"dz-connector-splunk\"}",
        );
        // The partitions paused before the detach resume on the consumer's next turn after
        // the last event is parked, so that is waited for too.
        let resumed = metric(&text, "switchyard_paused_partitions") == Some(0.0);
        if (parked == Some(8000.0) && resumed) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rss = peak_rss_mib(router.0.id());
    eprintln!(
        "destination detached: 8000 events parked, peak RSS {rss:.0} MiB (bound {MEMORY_BOUND_MIB} MiB)"
    );
    for line in [
        "switchyard_events_parked_total{connector=\"dz-connector-splunk\"} 8000",
        "switchyard_connector_state{connector=\"dz-connector-splunk\",state=\"detached\"} 1",
        "switchyard_paused_partitions 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(rss > 0.0 && rss < MEMORY_BOUND_MIB, "peak RSS {rss} MiB");
    assert_eq!(hec.received_count(), 0);
    drop(router);
}
