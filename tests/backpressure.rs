//! A destination that is down must pause the partitions feeding it, not pull the topic into
//! memory; when it recovers, everything is delivered.

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
    let counts = h.indexed_ids();
    assert!(
        produced.iter().all(|p| counts.get(&p.id) == Some(&1)),
        "every event once"
    );
}
