//! Amazon Kinesis Data Firehose end to end, through the real aws-sdk-firehose: into moto (the
//! AWS emulator) and on to S3; and against a strict fake of PutRecordBatch's JSON 1.1 wire
//! format for what moto does not emulate (partial failures, throttling, limits).

use std::collections::HashMap;
use switchyard::Pipeline;
use switchyard_testkit::firehose::{self, FakeFirehose, Moto};
use switchyard_tests::*;

const FH: &str = "dz-connector-kinesis-firehose";
const STREAM: &str = "qoe-stream";

fn firehose_table(endpoint: &str, access_key: &str, extra: &str) -> String {
    format!(
        r#"
[connectors.{FH}]
kind = "kinesis_firehose"
delivery_stream = "{STREAM}"
region = "us-east-1"
endpoint = "{endpoint}"
access_key_id = "{access_key}"
secret_access_key = "testing-secret"
timeout_secs = 10
{extra}
[connectors.{FH}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
max_attempts = 20
"#
    )
}

/// Waits until the group has committed every produced offset: every event finished.
async fn wait_all_committed(pipeline: &Pipeline, produced: &[Produced]) {
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in produced {
        let e = ends.entry(p.partition).or_default();
        *e = (*e).max(p.offset + 1);
    }
    let done = tokio::task::block_in_place(|| {
        pipeline.wait_for_source(PATIENCE, |s| {
            ends.iter()
                .all(|(p, end)| s.committed.get(&(TOPIC.to_string(), *p)) == Some(end))
        })
    });
    assert!(done, "{:?}", pipeline.progress());
}

/// Lines of `data`, counted by event_id; checks each line is one of the produced events,
/// unchanged but for the router's own collector_observability records.
fn lines_by_id(data: &[u8], produced: &[Produced]) -> HashMap<String, usize> {
    let by_id: HashMap<&str, &Produced> = produced.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut counts = HashMap::new();
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_slice(line).expect("each line is one JSON event");
        let id = v["event_id"].as_str().expect("event_id").to_string();
        let (original, _) = split_router_records(v, FH);
        assert_eq!(
            original,
            by_id[id.as_str()].json,
            "{id} arrived unchanged but for the router's records"
        );
        *counts.entry(id).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_s3_through_moto_exactly_once_and_newline_delimited() {
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let moto = std::sync::Arc::new(moto);
    let m = moto.clone();
    tokio::task::spawn_blocking(move || m.create_stream("qoe-bucket", STREAM))
        .await
        .unwrap()
        .unwrap();

    let h = Harness::new(2).await;
    let produced = h.produce(events_to(
        "s3",
        400,
        &[FH, "dz-connector-splunk,dz-connector-kinesis-firehose"],
    ));
    let table = firehose_table(
        &moto.endpoint,
        "testing",
        &format!("[connectors.{FH}.batch]\nmax_events = 100\nmax_linger_ms = 20"),
    );
    let pipeline = Pipeline::start(&h.settings_for("g-s3", &table))
        .await
        .unwrap();
    wait_all_committed(&pipeline, &produced).await;
    let health = pipeline.connector_stats(FH).unwrap().health();
    assert_eq!(
        health,
        switchyard_core::stats::Health::Healthy,
        "DescribeDeliveryStream against moto"
    );
    let stats = pipeline.connector_stats(FH).unwrap().snapshot();
    assert!(pipeline.shutdown().await);
    assert_eq!((stats.delivered, stats.rejected), (400, 0));

    let m = moto.clone();
    let data = tokio::task::spawn_blocking(move || m.s3_contents("qoe-bucket"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        data.last(),
        Some(&b'\n'),
        "every record ends with a newline"
    );
    let counts = lines_by_id(&data, &produced);
    assert_eq!(counts.len(), 400);
    assert!(counts.values().all(|n| *n == 1), "exactly once");
}

async fn fake_pipeline(
    group: &str,
    extra: &str,
    n: usize,
) -> (Harness, FakeFirehose, Vec<Produced>, String) {
    let h = Harness::new(1).await;
    let fake = FakeFirehose::start(STREAM, "AKIDFAKE", true).await.unwrap();
    let produced = h.produce(events_to(group, n, &[FH]));
    let table = firehose_table(&fake.url(), "AKIDFAKE", extra);
    (h, fake, produced, table)
}

fn received_ids(fake: &FakeFirehose, produced: &[Produced]) -> HashMap<String, usize> {
    let data: Vec<u8> = fake
        .received()
        .iter()
        .flat_map(|v| v.as_str().unwrap().as_bytes().to_vec())
        .collect();
    lines_by_id(&data, produced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_resend_only_the_failed_records() {
    let batch = format!("[connectors.{FH}.batch]\nmax_events = 10\nmax_linger_ms = 60000");
    let (h, fake, produced, table) = fake_pipeline("fh-partial", &batch, 10).await;
    fake.fail_records([vec![1, 3, 8], vec![0]]);
    let pipeline = Pipeline::start(&h.settings_for("g-fh-partial", &table))
        .await
        .unwrap();
    assert!(fake.wait_for_received(10, PATIENCE).await);
    let stats = pipeline.connector_stats(FH).unwrap();
    let timings = pipeline.timings().clone();
    assert!(pipeline.shutdown().await);

    let seen: Vec<usize> = fake.seen().iter().map(|s| s.items).collect();
    assert_eq!(
        seen,
        [10, 3, 1],
        "first all, then the three failed, then the one that failed again"
    );
    assert!(received_ids(&fake, &produced).values().all(|n| *n == 1));
    let s = stats.snapshot();
    assert_eq!((s.delivered, s.rejected, s.retried), (10, 0, 4));
    let t = &timings.recent()[0];
    assert_eq!((t.attempt_count, t.status_code), (3, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_by_the_engine_alone() {
    let batch = format!("[connectors.{FH}.batch]\nmax_events = 20\nmax_linger_ms = 60000");
    let (h, fake, produced, table) = fake_pipeline("fh-throttle", &batch, 20).await;
    fake.script([
        firehose::error(400, "ThrottlingException", "Rate exceeded"),
        firehose::error(400, "ServiceUnavailableException", "Slow down."),
        firehose::error(503, "ServiceUnavailableException", "Slow down."),
    ]);
    let pipeline = Pipeline::start(&h.settings_for("g-fh-throttle", &table))
        .await
        .unwrap();
    assert!(fake.wait_for_received(20, PATIENCE).await);
    assert!(pipeline.shutdown().await);
    // Three failures, one success: four calls. Had the SDK retried too, each failure would
    // have been tried several times.
    assert_eq!(
        fake.seen().iter().map(|s| s.status).collect::<Vec<_>>(),
        [400, 400, 503, 200]
    );
    assert!(received_ids(&fake, &produced).values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_respect_the_call_limits_and_oversize_events_are_never_sent() {
    let h = Harness::new(2).await;
    let fake = FakeFirehose::start(STREAM, "AKIDFAKE", true).await.unwrap();
    let mut records = events_to("fh-limits", 1200, &[FH]);
    let big = format!(
        r#"{{"event_id":"big","connector_list":"{FH}","event":{{"timestamp":1}},"pad":"{}"}}"#,
        "x".repeat(firehose::MAX_RECORD)
    );
    records.insert(600, ("big".into(), big.into_bytes()));
    let produced = h.produce(records);
    let table = firehose_table(
        &fake.url(),
        "AKIDFAKE",
        &format!("[connectors.{FH}.batch]\nmax_linger_ms = 20"),
    );
    let settings = h.settings_for(
        "g-fh-limits",
        &format!("[router]\nmax_event_bytes = 2000000\n{table}"),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(fake.wait_for_received(1200, PATIENCE).await);
    let stats = pipeline.connector_stats(FH).unwrap();
    assert!(pipeline.shutdown().await);

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert!(
        fake.seen()
            .iter()
            .all(|s| s.status == 200 && s.items <= firehose::MAX_RECORDS)
    );
    assert!(
        fake.seen().len() >= 3,
        "1200 records need at least three calls"
    );
    let ids = received_ids(
        &fake,
        &produced
            .iter()
            .filter(|p| p.id != "big")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(ids.len(), 1200);
    assert_eq!(
        (
            stats.snapshot().rejected,
            stats.rejections().get("oversize").copied()
        ),
        (1, Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_is_rejected_with_a_reason_not_retried() {
    let h = Harness::new(1).await;
    let fake = FakeFirehose::start("some-other-stream", "AKIDFAKE", true)
        .await
        .unwrap();
    h.produce(events_to("fh-404", 5, &[FH]));
    let table = firehose_table(
        &fake.url(),
        "AKIDFAKE",
        &format!("[connectors.{FH}.batch]\nmax_events = 5\nmax_linger_ms = 60000"),
    );
    let pipeline = Pipeline::start(&h.settings_for("g-fh-404", &table))
        .await
        .unwrap();
    assert!(fake.wait_for_seen(PATIENCE, |s| !s.is_empty()).await);
    let stats = pipeline.connector_stats(FH).unwrap();
    assert!(pipeline.shutdown().await);
    assert_eq!(fake.seen().len(), 1, "not retried");
    assert_eq!(stats.snapshot().rejected, 5);
    assert!(
        stats
            .rejections()
            .keys()
            .any(|r| r.contains("ResourceNotFoundException")),
        "{:?}",
        stats.rejections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_packing_puts_many_events_in_one_record() {
    let batch = format!(
        "record_packing = true\n[connectors.{FH}.batch]\nmax_events = 50\nmax_linger_ms = 60000"
    );
    let (h, fake, produced, table) = fake_pipeline("fh-pack", &batch, 50).await;
    let pipeline = Pipeline::start(&h.settings_for("g-fh-pack", &table))
        .await
        .unwrap();
    assert!(fake.wait_for_received(1, PATIENCE).await);
    assert!(pipeline.shutdown().await);
    assert_eq!(
        fake.seen()[0].items,
        1,
        "50 sample-size events fit one record"
    );
    assert_eq!(received_ids(&fake, &produced).len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_makes_a_connector_ready_whatever_its_health_check_says() {
    let (h, fake, produced, table) = fake_pipeline("fh-health", "", 20).await;
    fake.deny_describe();
    let pipeline = Pipeline::start(&h.settings_for("g-fh-health", &table))
        .await
        .unwrap();
    assert!(fake.wait_for_received(20, PATIENCE).await);
    wait_all_committed(&pipeline, &produced).await;
    let stats = pipeline.connector_stats(FH).unwrap();
    // The health check was refused (Describe answered 403 with an HTML page) ...
    assert!(until(|| fake.describes_denied() > 0).await);
    assert!(
        fake.seen().iter().all(|s| s.status == 200),
        "deliveries were never refused"
    );
    // ... but deliveries went through, and that counts.
    assert!(until(|| pipeline.monitor().readiness().is_ok()).await);
    assert_eq!(stats.health(), switchyard_core::stats::Health::Healthy);
    assert!(pipeline.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_reports_a_short_reason_without_the_body() {
    // Nothing to deliver: the health check's own verdict stands.
    let (h, fake, _, table) = fake_pipeline("fh-health-only", "", 0).await;
    fake.deny_describe();
    let pipeline = Pipeline::start(&h.settings_for("g-fh-health-only", &table))
        .await
        .unwrap();
    let stats = pipeline.connector_stats(FH).unwrap();
    let failing = || match stats.health() {
        switchyard_core::stats::Health::Failing(why) => Some(why),
        _ => None,
    };
    assert!(
        until(|| failing().is_some()).await,
        "the health check fails"
    );
    let failing = failing().unwrap_or_default();
    assert!(failing.contains("HTTP 403"), "{failing}");
    assert!(
        failing.chars().count() <= switchyard_core::log::MAX_DETAIL_CHARS + 1,
        "{failing}"
    );
    assert!(!failing.contains(firehose::DENIED_PAGE_MARKER), "{failing}");
    assert!(pipeline.monitor().readiness().is_err());
    assert!(pipeline.shutdown().await);
}
