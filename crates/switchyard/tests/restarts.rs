//! Restarts: the real binary is SIGKILLed and started again, as Kubernetes restarts a
//! crashed container in the same pod. With static membership (`group_instance_id`, the pod
//! name) the restarted router takes its partitions back at once; without it, the group waits
//! for the dead member's session to expire first.
//!
//! librdkafka's mock cluster does not implement static membership for the classic group
//! protocol (it tracks members by member id only), so both cases run on Tansu, where the
//! difference is visible. docs/kafka-group.md has the measurements, the mock's included.

use std::collections::HashSet;
use std::time::{Duration, Instant};
use switchyard_testkit::{Broker, FakeHec, Generator};

mod common;
use common::{Router, TempFile};

const TOKEN: &str = "restarts-token";
const HEC: &str = "dz-connector-splunk";
const PARTITIONS: i32 = 4;
/// switchyard's default. Far longer than a restart takes, so which side of it the resume
/// falls on shows whether the group waited for the old session to expire.
const SESSION: Duration = Duration::from_secs(45);
/// The dead member's last heartbeat (every second here) may precede the kill by this much,
/// and its session expire that much earlier.
const HEARTBEAT: Duration = Duration::from_secs(1);
const PATIENCE: Duration = Duration::from_secs(180);

fn produce(broker: &Broker, run: &str, n: usize) -> HashSet<String> {
    let mut g = Generator::new(run, 3).connector_lists(&[HEC]);
    let mut ids = HashSet::new();
    let records: Vec<(i32, Vec<u8>)> = (0..n)
        .map(|i| {
            let (id, bytes) = g.next_event();
            ids.insert(id);
            ((i as i32) % PARTITIONS, bytes)
        })
        .collect();
    broker.produce("qoe", records);
    ids
}

async fn wait_indexed(hec: &FakeHec, ids: &HashSet<String>) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let seen = hec.received_count();
        let indexed: HashSet<String> = hec
            .received()
            .iter()
            .filter_map(|v| v.pointer("/event/event_id")?.as_str().map(String::from))
            .collect();
        if ids.iter().all(|id| indexed.contains(id)) {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || !hec.wait_for_received(seen + 1, left).await {
            return false;
        }
    }
}

/// Starts a router, lets it deliver, SIGKILLs it, writes more events and starts it again.
/// Returns the time from the restart until the new events were all delivered.
async fn restart_to_resume(broker: Broker, group: &str, instance: Option<&str>) -> Duration {
    broker.create_topic("qoe", PARTITIONS).unwrap();
    let hec = FakeHec::builder(TOKEN).start().await.unwrap();
    let file = TempFile::new(
        group,
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
topics = ["qoe"]
group_id = "{group}"
commit_interval_ms = 100
[kafka.options]
"session.timeout.ms" = "{session}"
"heartbeat.interval.ms" = "1000"
[parking]
enabled = false
[admin]
bind = "127.0.0.1:0"
[connectors.{HEC}]
kind = "splunk_hec"
endpoint = "{hec}"
token = "{TOKEN}"
[connectors.{HEC}.batch]
max_linger_ms = 20
"#,
            brokers = broker.bootstrap_servers(),
            session = SESSION.as_millis(),
            hec = hec.url(),
        ),
    );
    let first = produce(&broker, "first", 200);
    let started = Instant::now();
    let router = Router::start(file.path(), instance);
    assert!(wait_indexed(&hec, &first).await, "the first run delivers");
    let first_join = started.elapsed();
    router.kill_nine();

    let second = produce(&broker, "second", 200);
    let restarted = Instant::now();
    let router = Router::start(file.path(), instance);
    assert!(
        wait_indexed(&hec, &second).await,
        "the restarted run delivers"
    );
    let resumed = restarted.elapsed();
    drop(router);
    eprintln!(
        "{group}: restart to resumed delivery {:.1} s (start to first delivery {:.1} s; session.timeout.ms {} s, group.instance.id {instance:?})",
        resumed.as_secs_f64(),
        first_join.as_secs_f64(),
        SESSION.as_secs()
    );
    resumed
}

fn tansu() -> Broker {
    Broker::tansu().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_after_kill_nine_resumes_without_waiting_out_its_session() {
    let resumed = restart_to_resume(tansu(), "restart-static", Some("router-0")).await;
    // Tansu takes about 23 s to complete any join, a first one included; what matters is
    // that the restarted member did not wait for the old session to expire.
    assert!(
        resumed < SESSION - HEARTBEAT,
        "resumed after {resumed:?}: the group waited for the old member's session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_instance_id_a_restarted_member_waits_out_the_old_session() {
    // The contrast: the same restart as a new dynamic member. The group holds the dead
    // member's partitions until its session expires.
    let resumed = restart_to_resume(tansu(), "restart-dynamic", None).await;
    assert!(resumed >= SESSION - HEARTBEAT, "resumed after {resumed:?}");
}
