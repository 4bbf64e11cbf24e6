//! HEC indexer acknowledgement through the whole pipeline: Kafka offsets are committed only
//! once Splunk acknowledges the events, and the ack metrics show what waits.

use switchyard::Pipeline;
use switchyard_testkit::FakeHec;
use switchyard_testkit::probe::http_get;
use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_once_splunk_acknowledges_the_events() {
    let h = Harness::with_hec(1, FakeHec::builder(TOKEN).ack()).await;
    h.hec.withhold_acks(true);
    let produced = h.produce(events("ack", 20));
    let settings = h.settings(
        "g-hec-ack",
        "ack = true\nack_poll_interval_secs = 1",
        "[connectors.dz-connector-splunk.batch]\nmax_linger_ms = 20\n",
    );
    switchyard::admin::prometheus();
    let pipeline = Pipeline::start(&settings).await.unwrap();
    let (addr, _server) =
        switchyard::admin::serve("127.0.0.1:0".parse().unwrap(), pipeline.monitor())
            .await
            .unwrap();

    assert!(
        h.hec
            .wait_for_received(produced.len() as u64, PATIENCE)
            .await
    );
    // Two rounds of polls, each a second apart: twenty commit intervals have passed.
    assert!(h.hec.wait_for_ack_polls(2, PATIENCE).await);
    let committed: i64 = pipeline.committed().values().sum();
    assert_eq!(
        committed, 0,
        "indexed is not acknowledged: nothing committed"
    );
    let stats = pipeline.connector_stats(SPLUNK).unwrap().snapshot();
    assert_eq!(stats.delivered, 0);
    assert!(stats.awaiting_confirmation >= 1);
    let (_, text) = http_get(&addr.to_string(), "/metrics").await;
    let pending = format!("switchyard_hec_acks_pending{{connector=\"{SPLUNK}\"}} ");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&pending) && !l.ends_with(" 0")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "switchyard_hec_ack_timeouts_total{{connector=\"{SPLUNK}\"}} 0"
    )));

    h.hec.withhold_acks(false);
    tokio::task::block_in_place(|| {
        assert!(pipeline.wait_for_source(PATIENCE, |s| s.committed.values().sum::<i64>() == 20));
    });
    let stats = pipeline.connector_stats(SPLUNK).unwrap().snapshot();
    assert_eq!((stats.delivered, stats.awaiting_confirmation), (20, 0));
    assert_eq!(
        h.hec.received_count(),
        20,
        "acknowledged in time: sent once"
    );
    assert!(h.hec.violations().is_empty(), "{:?}", h.hec.violations());
    assert!(pipeline.shutdown().await);
}
