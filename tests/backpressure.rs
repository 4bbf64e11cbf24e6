//! A destination that is down must pause the partitions feeding it, not pull the topic into
//! memory; when it recovers, everything is delivered. A destination that is merely a little
//! behind must not cause pauses: pausing makes librdkafka discard what it prefetched.

use switchyard::Pipeline;
use switchyard_testkit::hec::Reply;
use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_pauses_partitions_and_bounds_what_is_read() {
    let h = Harness::new(4).await;
    h.hec.script(std::iter::repeat_n(Reply::busy(), 100_000));
    let produced = h.produce(events("bp", 4000));
    let settings = h.settings_with(
        "g-bp",
        "max_inflight_per_partition = 100\nmax_inflight_events = 400",
        "",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 50\nmax_linger_ms = 10",
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();

    // Every failed attempt wakes us; no sleeping.
    let paused_all = loop {
        let p = pipeline.progress();
        if p.paused_partitions == 4 {
            break p;
        }
        let n = h.hec.seen().len();
        assert!(
            h.hec.wait_for_seen(PATIENCE, |s| s.len() > n).await,
            "no retries while waiting for pauses: {p:?}"
        );
    };
    // Paused with its backlog at the limit: a partition pauses once 100 of its offsets are
    // unfinished, so a few hundred read of 4000 — not the whole topic.
    assert!(
        paused_all.consumed < 1000,
        "read {} records while the destination was down",
        paused_all.consumed
    );
    assert_eq!(h.hec.received_count(), 0);

    h.hec.clear_script();
    assert!(
        h.hec.wait_for_received(4000, PATIENCE).await,
        "{:?}",
        pipeline.progress()
    );
    let after = pipeline.progress();
    assert!(pipeline.shutdown().await);
    assert_eq!(after.consumed, 4000);
    assert!(after.pauses >= 4, "{after:?}");
    let counts = h.indexed_ids();
    assert!(
        produced.iter().all(|p| counts.get(&p.id) == Some(&1)),
        "every event once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_overload_is_waited_out_without_pausing() {
    let h = Harness::new(4).await;
    let produced = h.produce(events("ovl", 2000));
    // The global limit is hit over and over (2,000 records, 200 allowed in flight), and a
    // healthy destination always clears it. The wait is long here so that a slow machine
    // cannot turn "cleared within the wait" into a pause: only code that pauses instead of
    // waiting fails this test.
    let mut settings = h.settings_with(
        "g-ovl",
        "max_inflight_per_partition = 2000\nmax_inflight_events = 200",
        "",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 50\nmax_linger_ms = 10",
    );
    settings.kafka.overload_wait = std::time::Duration::from_secs(120);
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        h.hec.wait_for_received(2000, PATIENCE).await,
        "{:?}",
        pipeline.progress()
    );
    let after = pipeline.progress();
    assert!(pipeline.shutdown().await);
    assert_eq!(after.consumed, 2000);
    assert!(
        after.overloads > 0,
        "the global limit was never reached, so nothing was tested: {after:?}"
    );
    assert_eq!(after.pauses, 0, "no partition paused: {after:?}");
    let counts = h.indexed_ids();
    assert!(produced.iter().all(|p| counts.get(&p.id) == Some(&1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_that_does_not_clear_pauses_partitions() {
    let h = Harness::new(4).await;
    h.hec.script(std::iter::repeat_n(Reply::busy(), 100_000));
    h.produce(events("ovl-down", 2000));
    // Only the global limit can be reached (the per-partition one is the whole topic), and
    // the destination is down, so the wait runs out and partitions pause.
    let mut settings = h.settings_with(
        "g-ovl-down",
        "max_inflight_per_partition = 2000\nmax_inflight_events = 200",
        "",
        "[connectors.dz-connector-splunk.batch]\nmax_events = 50\nmax_linger_ms = 10",
    );
    settings.kafka.overload_wait = std::time::Duration::from_millis(50);
    let pipeline = Pipeline::start(&settings).await.unwrap();
    let paused = loop {
        let p = pipeline.progress();
        if p.paused_partitions == 4 {
            break p;
        }
        let n = h.hec.seen().len();
        assert!(
            h.hec.wait_for_seen(PATIENCE, |s| s.len() > n).await,
            "no retries while waiting for pauses: {p:?}"
        );
    };
    assert!(paused.consumed < 1000, "{paused:?}");
    h.hec.clear_script();
    assert!(h.hec.wait_for_received(2000, PATIENCE).await);
    assert!(pipeline.shutdown().await);
}
