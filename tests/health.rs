//! Health over real HTTP (docs/health.md): liveness follows the consumer's poll loop, a
//! disabled health check asks the destination nothing, and the consumer lag metric reports
//! what is consumed but not yet committed.
//!
//! Its own test binary: `/metrics` sets process-wide gauges, which another test's pipeline
//! in the same process would overwrite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchyard::Pipeline;
use switchyard_core::stats::Health;
use switchyard_testkit::FakeHec;
use switchyard_testkit::probe::{http_get, metric};
use switchyard_tests::*;

async fn serve(pipeline: &Pipeline) -> std::net::SocketAddr {
    let (addr, _server) =
        switchyard::admin::serve("127.0.0.1:0".parse().unwrap(), pipeline.monitor())
            .await
            .unwrap();
    addr
}

/// GETs `path` every 50 ms until `done` holds for the answer or PATIENCE runs out; returns
/// the last answer.
async fn get_until(
    addr: std::net::SocketAddr,
    path: &str,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = http_get(&addr.to_string(), path).await;
        if done(status, &body) || std::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Another member of a consumer group, polling on its own thread until dropped: its joining
/// makes the group rebalance.
struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn join(bootstrap: &str, group: &str) -> Member {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            // The router's assignor: a group's members must share one (Kafka refuses a
            // join that does not; librdkafka's mock cluster aborts).
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .expect("a plain consumer config");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        });
        Member {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The poll loop is held for real: a second member joins, and the revoke callback (which
/// runs inside the poll) waits for events the destination does not take. The stall limit is
/// set below that wait on purpose, which a file may not do, to show what the limit guards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_fails_while_the_poll_loop_is_held_and_recovers_when_it_turns_again() {
    let h = Harness::new(2).await;
    let mut settings = h.settings_with(
        "g-stall",
        "revoke_drain_timeout_secs = 300",
        "",
        "[parking]\nenabled = false\n",
    );
    settings.admin.stall_after = Duration::from_secs(2);
    let pipeline = Pipeline::start(&settings).await.unwrap();
    let addr = serve(&pipeline).await;
    tokio::task::block_in_place(|| {
        assert!(pipeline.wait_for_source(PATIENCE, |s| s.assigned == 2));
    });
    // Idle, the loop still turns every poll timeout.
    let (status, body) = http_get(&addr.to_string(), "/health/live").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    h.hec.fail_randomly(1000);
    h.produce(events("stall", 10));
    let stats = pipeline.source_stats().clone();
    assert!(until(|| stats.consumed.load(Ordering::Relaxed) == 10).await);
    let _other = Member::join(h.broker.bootstrap_servers(), "g-stall");

    let (status, body) = get_until(addr, "/health/live", |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("kafka: poll loop has not turned for") && body.contains("(limit 2 s)"),
        "{body}"
    );
    assert_eq!(
        pipeline.source_status().revokes_drained,
        0,
        "the revoke is still waiting"
    );

    // The destination takes the events, the revoke finishes and the loop turns again.
    h.hec.fail_randomly(0);
    let (status, body) = get_until(addr, "/health/live", |s, _| s == 200).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(pipeline.source_status().revokes_drained >= 1);
    assert!(pipeline.shutdown().await);
}

/// Both destinations are down. The checked one is asked every second and keeps the router
/// unready; the unchecked one is never asked and does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_health_check_asks_nothing_and_counts_as_ready() {
    let h = Harness::new(1).await;
    let quiet = FakeHec::builder(TOKEN).start().await.unwrap();
    h.hec.fail_randomly(1000);
    quiet.fail_randomly(1000);
    let unchecked = format!(
        "[connectors.dz-connector-quiet]\nkind = \"splunk_hec\"\nendpoint = \"{}\"\ntoken = \"${{TEST_HEC_TOKEN}}\"\nhealth_check = {{ enabled = false }}\n",
        quiet.url()
    );
    let settings = h.settings(
        "g-unchecked",
        "health_check = { interval_secs = 1 }",
        &unchecked,
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    let addr = serve(&pipeline).await;

    assert!(until(|| h.hec.health_requests() >= 3).await);
    assert_eq!(quiet.health_requests(), 0);
    let quiet_stats = pipeline.connector_stats("dz-connector-quiet").unwrap();
    assert_eq!(quiet_stats.health(), Health::Unchecked);
    let (status, body) = get_until(addr, "/health/ready", |_, b| !b.contains("kafka")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("{SPLUNK}: ")) && !body.contains("dz-connector-quiet"),
        "only the checked connector is named: {body}"
    );
    assert!(pipeline.shutdown().await);
}

fn lag(text: &str, partition: i32) -> Option<f64> {
    metric(
        text,
        &format!("switchyard_consumer_lag{{topic=\"{TOPIC}\",partition=\"{partition}\"}}"),
    )
}

/// librdkafka's consumer lag is the partition's end minus the committed offset: events the
/// router has read but not yet delivered count, so a held destination shows as lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_counts_the_events_not_yet_committed_per_partition() {
    let h = Harness::new(2).await;
    let mut settings = h.settings("g-lag", "", "[parking]\nenabled = false\n");
    settings
        .kafka
        .options
        .insert("statistics.interval.ms".into(), "100".into());
    switchyard::admin::prometheus();
    let pipeline = Pipeline::start(&settings).await.unwrap();
    let addr = serve(&pipeline).await;

    // 5 delivered and committed on each partition.
    h.produce(events("lag-a", 10));
    assert!(h.hec.wait_for_received(10, PATIENCE).await);
    tokio::task::block_in_place(|| {
        assert!(pipeline.wait_for_source(PATIENCE, |s| {
            committed_by_partition(&s.committed) == [(0, 5), (1, 5)].into()
        }));
    });

    // 7 more on each, read but held: the destination is down.
    h.hec.fail_randomly(1000);
    h.produce(events("lag-b", 14));
    let stats = pipeline.source_stats().clone();
    assert!(until(|| stats.consumed.load(Ordering::Relaxed) == 24).await);
    let (_, text) = get_until(addr, "/metrics", |_, t| {
        lag(t, 0) == Some(7.0) && lag(t, 1) == Some(7.0)
    })
    .await;
    assert_eq!(
        (lag(&text, 0), lag(&text, 1)),
        (Some(7.0), Some(7.0)),
        "{text}"
    );
    assert_eq!(
        committed_by_partition(&pipeline.committed()),
        [(0, 5), (1, 5)].into(),
        "nothing more is committed while the destination is down"
    );

    // Delivered and committed: no lag.
    h.hec.fail_randomly(0);
    let (_, text) = get_until(addr, "/metrics", |_, t| {
        lag(t, 0) == Some(0.0) && lag(t, 1) == Some(0.0)
    })
    .await;
    assert_eq!(
        (lag(&text, 0), lag(&text, 1)),
        (Some(0.0), Some(0.0)),
        "{text}"
    );
    assert_eq!(h.hec.received_count(), 24);
    assert!(pipeline.shutdown().await);
}
