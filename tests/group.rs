//! Group membership under rebalances: with the cooperative-sticky assignor (the default), a
//! member joining takes partitions from the others without revoking the ones they keep.
//! (Static membership needs a process to kill: crates/switchyard/tests/restarts.rs.)

use std::collections::HashSet;
use switchyard::{Pipeline, Settings};
use switchyard_testkit::Broker;
use switchyard_tests::*;

const PARTITIONS: i32 = 6;

/// Events for the fake HEC to index, and their ids.
fn batch(h: &Harness, run: &str, n: usize) -> HashSet<String> {
    let events = events_to(run, n, &[SPLUNK]);
    let ids = events.iter().map(|(id, _)| id.clone()).collect();
    h.broker.produce(
        TOPIC,
        events
            .into_iter()
            .enumerate()
            .map(|(i, (_, bytes))| ((i as i32) % PARTITIONS, bytes)),
    );
    ids
}

async fn all_indexed(h: &Harness, ids: &HashSet<String>) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let seen = h.hec.received_count();
        let indexed = h.indexed_ids();
        if ids.iter().all(|id| indexed.contains_key(id)) {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || !h.hec.wait_for_received(seen + 1, left).await {
            return false;
        }
    }
}

/// A second member joins a group of one. Returns the first member's status once the
/// partitions are shared, after checking that every event arrived.
async fn second_member_joins(h: &Harness, settings: &Settings) -> switchyard_kafka::Status {
    let first = Pipeline::start(settings).await.unwrap();
    let mut ids = batch(h, "before", 600);
    assert!(
        all_indexed(h, &ids).await,
        "the first member delivers alone"
    );
    tokio::task::block_in_place(|| {
        assert!(first.wait_for_source(PATIENCE, |s| s.assigned == PARTITIONS as usize))
    });

    let second = Pipeline::start(settings).await.unwrap();
    // Events written while the group rebalances, and after.
    ids.extend(batch(h, "during", 600));
    tokio::task::block_in_place(|| {
        assert!(
            first.wait_for_source(PATIENCE, |s| s.assigned > 0
                && s.assigned < PARTITIONS as usize),
            "{:?}",
            first.source_status()
        );
        assert!(second.wait_for_source(PATIENCE, |s| s.assigned > 0));
    });
    ids.extend(batch(h, "after", 600));
    assert!(
        all_indexed(h, &ids).await,
        "nothing is lost to the rebalance"
    );
    let status = first.source_status();
    let second_status = second.source_status();
    assert_eq!(
        status.assigned + second_status.assigned,
        PARTITIONS as usize,
        "every partition has exactly one owner"
    );
    assert!(first.shutdown().await);
    assert!(second.shutdown().await);
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_takes_partitions_without_revoking_those_the_first_keeps() {
    let h = Harness::on(
        Broker::mock().unwrap(),
        PARTITIONS,
        switchyard_testkit::FakeHec::builder(TOKEN),
    )
    .await;
    let settings = h.settings("g-coop", "", "");
    let first = second_member_joins(&h, &settings).await;
    let moved = PARTITIONS as u64 - first.assigned as u64;
    assert_eq!(
        first.partitions_revoked, moved,
        "only the partitions that moved were revoked: {first:?}"
    );
    assert_eq!(
        first.partitions_assigned, PARTITIONS as u64,
        "the kept partitions were never handed back: {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_eager_assignor_every_partition_is_revoked_and_reassigned() {
    // The contrast that shows the test above measures the assignor: the same join under
    // the eager protocol revokes everything, kept partitions included.
    let h = Harness::on(
        Broker::mock().unwrap(),
        PARTITIONS,
        switchyard_testkit::FakeHec::builder(TOKEN),
    )
    .await;
    let mut settings = h.settings("g-eager", "", "");
    settings
        .kafka
        .options
        .insert("partition.assignment.strategy".into(), "range".into());
    let first = second_member_joins(&h, &settings).await;
    // Every partition, the kept ones included, was revoked at least once. On a loaded
    // machine a slow rejoin can cost the eager group another round, which again revokes
    // all the member holds; the cooperative test above allows none.
    assert!(
        first.partitions_revoked >= PARTITIONS as u64,
        "the kept partitions were not revoked: {first:?}"
    );
    assert_eq!(
        first.partitions_assigned,
        first.partitions_revoked + first.assigned as u64,
        "each revoked partition was assigned back or moved: {first:?}"
    );
}
