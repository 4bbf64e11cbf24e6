//! Faults on both sides, each checked for "no event lost, duplicates only from the
//! uncommitted tail": destinations that never answer, connection resets, a destination that
//! refuses credentials while the others keep delivering, and brokers that go down and return.

use std::collections::HashMap;
use std::time::Duration;
use switchyard::Pipeline;
use switchyard_testkit::FakeDatadog;
use switchyard_testkit::fake::ResetProxy;
use switchyard_tests::*;

fn all_once(h: &Harness, produced: &[Produced]) -> bool {
    let counts = h.indexed_ids();
    produced.iter().all(|p| counts.get(&p.id) == Some(&1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_never_answers_is_retried_after_the_timeout() {
    let h = Harness::new(1).await;
    h.hec.hang(2, Duration::from_secs(4));
    let produced = h.produce(events("hang", 40));
    let settings = h.settings(
        "g-hang",
        "timeout_secs = 1",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 40\nmax_linger_ms = 60000",
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(h.hec.wait_for_received(40, PATIENCE).await);
    let timings = pipeline.timings().clone();
    assert!(pipeline.shutdown().await);
    assert!(
        all_once(&h, &produced),
        "the hung requests indexed nothing, so nothing is twice"
    );
    let calls: Vec<u16> = timings.recent()[0]
        .calls
        .iter()
        .map(|c| c.status_code)
        .collect();
    assert_eq!(
        calls,
        [0, 0, 200],
        "two timeouts (no status), then delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried() {
    let h = Harness::new(1).await;
    let proxy = ResetProxy::start(h.hec.addr(), 3).await.unwrap();
    let produced = h.produce(events("reset", 30));
    let settings = h.settings(
        "g-reset",
        &format!("endpoint = \"{}\"", proxy.url()),
        "[connectors.dz-connector-splunk.batch]\nmax_events = 30\nmax_linger_ms = 60000",
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(h.hec.wait_for_received(30, PATIENCE).await);
    let stats = pipeline.connector_stats(SPLUNK).unwrap();
    assert!(pipeline.shutdown().await);
    assert!(all_once(&h, &produced));
    // hyper itself retries a connection reset before the request was written (nothing was
    // sent, so nothing can duplicate); the others reach the engine as failed attempts.
    assert!(
        stats.snapshot().failed_requests >= 1,
        "{:?}",
        stats.snapshot()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_refusing_credentials_does_not_hold_back_the_others() {
    let h = Harness::new(2).await;
    h.broker.create_topic("qoe-dlq", 1).unwrap();
    // Datadog answers 403: the configured key is not the one it knows.
    let dd = FakeDatadog::start("the-real-key").await.unwrap();
    let produced = h.produce(events_to(
        "auth",
        200,
        &["dz-connector-splunk,dz-connector-datadog"],
    ));
    let dd_table = format!(
        "[connectors.dz-connector-datadog]\nkind = \"datadog_logs\"\nendpoint = \"{}\"\napi_key = \"${{DD_KEY}}\"\n[connectors.dz-connector-datadog.batch]\nmax_linger_ms = 20",
        dd.url()
    );
    let settings = h.settings(
        "g-auth",
        "",
        &format!("[connectors.dz-connector-splunk.batch]\nmax_linger_ms = 20\n{dd_table}\n[dead_letter]\ntopic = \"qoe-dlq\""),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        h.hec.wait_for_received(200, PATIENCE).await,
        "Splunk keeps delivering"
    );
    tokio::task::block_in_place(|| {
        let ends: HashMap<i32, i64> = [(0, 100), (1, 100)].into();
        assert!(pipeline.wait_for_source(PATIENCE, |s| {
            ends.iter()
                .all(|(p, e)| s.committed.get(&(TOPIC.to_string(), *p)) == Some(e))
        }));
    });
    let dd_stats = pipeline.connector_stats("dz-connector-datadog").unwrap();
    assert!(pipeline.shutdown().await);
    assert!(all_once(&h, &produced));
    let s = dd_stats.snapshot();
    assert_eq!(
        (s.delivered, s.rejected, s.dead_lettered),
        (0, 200, 200),
        "refused, not retried forever, and kept"
    );
    assert!(dd.seen().iter().all(|r| r.status == 403));
    assert_eq!(dd.received_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_going_down_and_up_lose_nothing() {
    let h = Harness::new(2).await;
    let produced = h.produce(events("down", 1000));
    let settings = h.settings(
        "g-down",
        "concurrency = 1",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 20\nmax_linger_ms = 10",
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(h.hec.wait_for_received(100, PATIENCE).await);
    let mock = h
        .broker
        .mock_cluster()
        .expect("fault injection needs the mock cluster");
    for id in 1..=3 {
        mock.broker_down(id).unwrap();
    }
    // While the brokers are down, deliveries of what was already fetched go on (commits fail
    // and are retried later): the outage lasts 40 more deliveries.
    let during = h.hec.received_count();
    assert!(h.hec.wait_for_received(during + 40, PATIENCE).await);
    for id in 1..=3 {
        mock.broker_up(id).unwrap();
    }
    assert!(
        wait_until_all(&h, &produced).await,
        "{:?} (during outage: {during})",
        pipeline.progress()
    );
    assert!(pipeline.shutdown().await);
    let counts = h.indexed_ids();
    assert!(
        produced.iter().all(|p| counts.contains_key(&p.id)),
        "none lost"
    );
}

async fn wait_until_all(h: &Harness, produced: &[Produced]) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let n = h.hec.received_count();
        let counts = h.indexed_ids();
        if produced.iter().all(|p| counts.contains_key(&p.id)) {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || !h.hec.wait_for_received(n + 1, left).await {
            return false;
        }
    }
}
