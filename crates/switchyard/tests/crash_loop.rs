//! The crash loop: the real binary is SIGKILLed at random moments K times while the fake
//! destinations randomly fail, and restarted each time. At the end every event must have
//! reached every destination of its connector_list at least once; the duplicate rate (which
//! only the uncommitted tails at the kills can cause) is reported.
//!
//! `make test` runs it small; `make soak` sets SWITCHYARD_SOAK_EVENTS and
//! SWITCHYARD_SOAK_KILLS higher.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchyard_testkit::probe::{http_get, metric, peak_rss_bytes};
use switchyard_testkit::{Broker, FakeDatadog, FakeHec, Generator};

mod common;
use common::TempFile;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const TOKEN: &str = "crash-loop-token";
const DD_KEY: &str = "crash-loop-dd-key";
const HEC: &str = "dz-connector-splunk";
const DD: &str = "dz-connector-datadog";
const PATIENCE: Duration = Duration::from_secs(300);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The router process; SIGKILLed if the test ends early.
struct Router(Child);

impl Router {
    fn start(config: &std::path::Path) -> Router {
        let child = Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .env("SWITCHYARD_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Router(child)
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Event ids each fake received, with how often.
fn counts(items: Vec<serde_json::Value>, path: &str) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for v in items {
        if let Some(id) = v.pointer(path).and_then(|x| x.as_str()) {
            *m.entry(id.to_string()).or_default() += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_restarts_lose_nothing() {
    let n = env_or("SWITCHYARD_SOAK_EVENTS", 2000);
    let kills = env_or("SWITCHYARD_SOAK_KILLS", 3);
    // The mock keeps 5 MiB per partition: about 1,400 sample-size events.
    let partitions = (n / 1000 + 2) as i32;
    let broker = Broker::mock().unwrap();
    broker.create_topic("qoe", partitions).unwrap();
    let hec = FakeHec::builder(TOKEN).start().await.unwrap();
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    hec.fail_randomly(100);
    dd.fail_randomly(100);

    let lists = [HEC, DD, "dz-connector-splunk,dz-connector-datadog"];
    let mut g = Generator::new("crash", 11).connector_lists(&lists);
    let mut want_hec = HashSet::new();
    let mut want_dd = HashSet::new();
    let mut records = Vec::new();
    for i in 0..n {
        let (id, bytes) = g.next_event();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let list = v["connector_list"].as_str().unwrap();
        if list.contains(HEC) {
            want_hec.insert(id.clone());
        }
        if list.contains(DD) {
            want_dd.insert(id);
        }
        records.push(((i as i32) % partitions, bytes));
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
commit_interval_ms = 200
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
    let config = std::path::Path::new(file.path());

    for kill in 0..kills {
        let mut router = Router::start(config);
        // A random moment, measured in deliveries rather than time.
        let step = fastrand::u64(40..(n / (kills + 1)).max(41));
        let target = hec.received_count() + step;
        assert!(
            hec.wait_for_received(target, PATIENCE).await,
            "router {kill} made no progress"
        );
        router.0.kill().unwrap(); // SIGKILL: no flush, no commit
        router.0.wait().unwrap();
    }

    // The last run goes to the end, then stops gracefully.
    let mut router = Router::start(config);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (h, d) = (
            counts(hec.received(), "/event/event_id"),
            counts(dd.received(), "/event_id"),
        );
        if want_hec.iter().all(|id| h.contains_key(id))
            && want_dd.iter().all(|id| d.contains_key(id))
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
    Command::new("kill")
        .args(["-TERM", &router.0.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || router.0.wait())
        .await
        .unwrap()
        .unwrap();
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
    eprintln!(
        "crash loop: {n} events, {kills} SIGKILLs, 10% random 503s: {wanted} deliveries wanted, {delivered} made, duplicate rate {:.2}%",
        100.0 * duplicates as f64 / wanted as f64
    );
    assert!(
        h.keys().all(|id| want_hec.contains(id)) && d.keys().all(|id| want_dd.contains(id)),
        "nothing sent where it was not routed"
    );
}

/// Peak resident memory of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    peak_rss_bytes(pid).map_or(0.0, |b| b as f64 / (1 << 20) as f64)
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
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();

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
    let config = std::path::Path::new(file.path());
    let router = Router::start(config);

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
    let config = std::path::Path::new(file.path());
    let kill_when = async |what: &str, done: &dyn Fn() -> bool| {
        let mut router = Router::start(config);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        router.0.kill().unwrap(); // SIGKILL: no flush, no commit
        router.0.wait().unwrap();
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
    let mut router = Router::start(config);
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
    Command::new("kill")
        .args(["-TERM", &router.0.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || router.0.wait())
        .await
        .unwrap()
        .unwrap();
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
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
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
    let router = Router::start(std::path::Path::new(file.path()));
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
        if parked == Some(8000.0) || std::time::Instant::now() > deadline {
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
