//! Datadog Logs, New Relic Events and OTLP logs end to end: Kafka (mock cluster) → router →
//! strict fakes that enforce each API's auth, compression, body shape and limits.

use serde_json::Value;
use std::collections::HashMap;
use switchyard::Pipeline;
use switchyard_testkit::otlp::OtlpAnswer;
use switchyard_testkit::{FakeDatadog, FakeNewRelic, FakeOtlp, datadog, newrelic};
use switchyard_tests::*;

const NR: &str = "dz-connector-newrelic";
const OTLP: &str = "dz-connector-otlp";

fn newrelic_table(fake: &FakeNewRelic, extra: &str) -> String {
    format!(
        r#"
[connectors.{NR}]
kind = "newrelic_events"
endpoint = "{}"
account_id = "{NR_ACCOUNT}"
license_key = "${{NR_KEY}}"
event_type = "Qoe_{{event.type}}"
{extra}
[connectors.{NR}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
max_attempts = 50
"#,
        fake.url()
    )
}

fn by_id(items: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut m: HashMap<String, Vec<&Value>> = HashMap::new();
    for v in items {
        if let Some(id) = v["event_id"].as_str() {
            m.entry(id.to_string()).or_default().push(v);
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_receives_every_event_once_as_a_log_with_its_fields() {
    let h = Harness::new(4).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    let produced = h.produce(events_to(
        "dd",
        1200,
        &[DD, "dz-connector-splunk,dz-connector-datadog"],
    ));
    let settings = h.settings_for(
        "g-dd",
        &datadog_table(&dd.url(),
            // One request at a time: each batch is encoded after the previous delivery
            // completed, so it carries that delivery's collector_observability records.
            "concurrency = 1\n[connectors.dz-connector-datadog.batch]\nmax_events = 100\nmax_linger_ms = 20",
        ),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        dd.wait_for_received(1200, PATIENCE).await,
        "{:?}",
        pipeline.progress()
    );
    assert!(pipeline.shutdown().await);

    assert!(dd.violations().is_empty(), "{:?}", dd.violations());
    assert!(
        dd.seen()
            .iter()
            .all(|s| s.status == 202 && s.compressed && s.items <= datadog::MAX_ENTRIES)
    );
    let logs = dd.received();
    let carrying = logs
        .iter()
        .filter(|l| !split_router_records((*l).clone(), DD).1.is_empty())
        .count();
    assert!(
        carrying > 0,
        "logs sent after the first delivery carry its collector_observability records"
    );
    let logs = by_id(&logs);
    for p in &produced {
        let got = &logs[&p.id];
        assert_eq!(got.len(), 1, "{} delivered once", p.id);
        let (log, _) = split_router_records(got[0].clone(), DD);
        let log = log.as_object().unwrap();
        for (k, v) in p.json.as_object().unwrap() {
            assert_eq!(&log[k], v, "{}: attribute {k}", p.id);
        }
        let ms = p.json["event"]["timestamp"].as_i64().unwrap();
        assert_eq!(log["timestamp"], ms, "indexed at event time");
        let tags = format!(
            "env:test,customer_code:{},event_type:{}",
            p.json["customer_code"].as_str().unwrap(),
            p.json["event"]["type"].as_str().unwrap()
        );
        assert_eq!(log["ddtags"], tags.as_str());
        assert_eq!(
            (log["ddsource"].as_str(), log["service"].as_str()),
            (Some("qoe"), Some("video-qoe"))
        );
        assert_eq!(log["message"], p.json["event"]["type"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_limits_are_enforced_before_sending() {
    let h = Harness::new(1).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    // 2,500 small events and one over Datadog's 1 MB per log.
    let mut records: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| {
            let id = format!("small-{i}");
            let json = format!(r#"{{"event_id":"{id}","connector_list":"{DD}","customer_code":"c","event":{{"type":"heartbeat","timestamp":{}}}}}"#, now_ms());
            (id, json.into_bytes())
        })
        .collect();
    let big = format!(
        r#"{{"event_id":"big","connector_list":"{DD}","event":{{"type":"x","timestamp":{}}},"pad":"{}"}}"#,
        now_ms(),
        "x".repeat(1_100_000)
    );
    records.insert(1234, ("big".into(), big.into_bytes()));
    let produced = h.produce(records);
    let table = datadog_table(
        &dd.url(),
        "[connectors.dz-connector-datadog.batch]\nmax_linger_ms = 50",
    );
    let settings = h.settings_for(
        "g-dd-limits",
        &format!("[router]\nmax_event_bytes = 2000000\n{table}"),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(dd.wait_for_received(2500, PATIENCE).await);
    let stats = pipeline.connector_stats(DD).unwrap();
    assert!(pipeline.shutdown().await);

    let seen = dd.seen();
    assert!(
        seen.len() >= 3,
        "2,500 logs need at least 3 requests of ≤ 1000"
    );
    assert!(
        seen.iter().all(|s| s.status == 202 && s.items <= 1000),
        "{seen:?}"
    );
    assert!(
        dd.violations().is_empty(),
        "nothing truncated, nothing refused: {:?}",
        dd.violations()
    );
    let logs = dd.received();
    let logs = by_id(&logs);
    assert!(
        !logs.contains_key("big"),
        "the oversize event is never sent"
    );
    assert!(
        produced
            .iter()
            .filter(|p| p.id != "big")
            .all(|p| logs.get(&p.id).map(Vec::len) == Some(1))
    );
    let snap = stats.snapshot();
    assert_eq!((snap.delivered, snap.rejected), (2500, 1));
    assert_eq!(stats.rejections().get("oversize"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_outage_datadog_never_gets_a_request_over_its_limits() {
    // Full-size batches (Datadog's own 5 MB / 1000 logs), one request at a time, and an
    // outage of 40 failed attempts. The first delivery's timings are then appended to every
    // later log: before, one record per attempt (~5 KB a log) on batches sized without them
    // pushed requests past 5 MB, and Datadog answered 413.
    let h = Harness::new(3).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    dd.script((0..40).map(|_| datadog::reply(503, "Service Unavailable")));
    let produced = h.produce(events_to("outage", 3000, &[DD]));
    let mut table = datadog_table(&dd.url(), "concurrency = 1");
    table = table.replace("max_backoff_ms = 200", "max_backoff_ms = 20");
    let pipeline = Pipeline::start(&h.settings_for("g-dd-outage", &table))
        .await
        .unwrap();
    assert!(dd.wait_for_received(3000, PATIENCE).await);
    let stats = pipeline.connector_stats(DD).unwrap();
    let timings = pipeline.timings().latest(DD).unwrap();
    assert!(pipeline.shutdown().await);

    let seen = dd.seen();
    assert_eq!(seen.iter().filter(|s| s.status == 503).count(), 40);
    assert!(
        seen.iter().all(|s| s.status != 413),
        "not one request refused for size: {:?}",
        seen.iter().map(|s| s.status).collect::<Vec<_>>()
    );
    assert!(dd.violations().is_empty(), "{:?}", dd.violations());
    let s = stats.snapshot();
    assert_eq!((s.delivered, s.rejected), (3000, 0));
    let logs = dd.received();
    assert!(
        produced
            .iter()
            .all(|p| by_id(&logs).get(&p.id).map(Vec::len) == Some(1)),
        "each event once"
    );
    // The outage's records travelled, bounded: the last attempt, with the attempt count.
    let after_outage = logs
        .iter()
        .filter_map(|l| {
            let (_, ours) = split_router_records(l.clone(), DD);
            (!ours.is_empty()).then_some(ours)
        })
        .find(|ours| ours[0]["dimension"]["attempt_count"] == 41)
        .expect("a log carries the outage delivery's records");
    assert_eq!(after_outage.len(), 4, "{after_outage:?}");
    assert_eq!(after_outage[3]["dimension"]["attempt"], 41);
    assert!(timings.attempt_count >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_and_new_relic_retry_429_and_503_without_loss_or_duplicates() {
    let h = Harness::new(2).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    let nr = FakeNewRelic::start(NR_ACCOUNT, NR_KEY).await.unwrap();
    dd.script([
        datadog::reply(429, "Too Many Requests"),
        datadog::reply(503, "Service Unavailable"),
        datadog::reply(408, "Request Timeout"),
    ]);
    let mut retry_after_nr = newrelic::reply(429);
    // New Relic's own rate limit has no Retry-After; a short one keeps the test quick.
    retry_after_nr.retry_after = Some(1);
    nr.script([newrelic::reply(503), retry_after_nr, newrelic::reply(500)]);
    let produced = h.produce(events_to(
        "rt",
        500,
        &["dz-connector-datadog,dz-connector-newrelic"],
    ));
    let linger = "[connectors.{}.batch]\nmax_events = 100\nmax_linger_ms = 20";
    let settings = h.settings_for(
        "g-retry",
        &format!(
            "{}{}",
            datadog_table(&dd.url(), &linger.replace("{}", DD)),
            newrelic_table(&nr, &linger.replace("{}", NR))
        ),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(dd.wait_for_received(500, PATIENCE).await);
    assert!(nr.wait_for_received(500, PATIENCE).await);
    let (dd_stats, nr_stats) = (
        pipeline.connector_stats(DD).unwrap(),
        pipeline.connector_stats(NR).unwrap(),
    );
    assert!(pipeline.shutdown().await);

    for (name, items, stats) in [
        ("datadog", dd.received(), dd_stats),
        ("newrelic", nr.received(), nr_stats),
    ] {
        let items = by_id(&items);
        assert!(
            produced
                .iter()
                .all(|p| items.get(&p.id).map(Vec::len) == Some(1)),
            "{name}: each event once"
        );
        let s = stats.snapshot();
        assert_eq!((s.delivered, s.rejected), (500, 0), "{name}");
        assert!(s.retried > 0 && s.failed_requests == 3, "{name}: {s:?}");
    }
    assert!(
        nr.integration_errors().is_empty(),
        "{:?}",
        nr.integration_errors()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_relic_receives_flat_valid_events_and_counts_what_it_fixed() {
    let h = Harness::new(2).await;
    let nr = FakeNewRelic::start(NR_ACCOUNT, NR_KEY).await.unwrap();
    let mut records = events_to("nr", 300, &[NR]);
    // One event with a value New Relic would cut (5,000 characters) and one with too many
    // attributes: fixed and counted, not silently dropped.
    let long = format!(
        r#"{{"event_id":"long","connector_list":"{NR}","event":{{"type":"error","timestamp":{}}},"message":"{}"}}"#,
        now_ms(),
        "m".repeat(5000)
    );
    // 400 attributes, the identifying ones last: New Relic would keep the first 254.
    let wide_attrs: Vec<String> = (0..396).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let wide = format!(
        r#"{{"connector_list":"{NR}",{},"event":{{"type":"error","timestamp":{}}},"customer_code":"c-wide","event_id":"wide"}}"#,
        wide_attrs.join(","),
        now_ms(),
    );
    records.push(("long".into(), long.into_bytes()));
    records.push(("wide".into(), wide.into_bytes()));
    let produced = h.produce(records);
    let settings = h.settings_for(
        "g-nr",
        &newrelic_table(
            &nr,
            "concurrency = 1\n[connectors.dz-connector-newrelic.batch]\nmax_events = 50\nmax_linger_ms = 20",
        ),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        nr.wait_for_received(302, PATIENCE).await,
        "{:?} {:?}",
        pipeline.progress(),
        nr.integration_errors()
    );
    let stats = pipeline.connector_stats(NR).unwrap();
    assert!(pipeline.shutdown().await);

    assert!(
        nr.integration_errors().is_empty(),
        "New Relic would have dropped: {:?}",
        nr.integration_errors()
    );
    assert!(nr.violations().is_empty(), "{:?}", nr.violations());
    assert!(
        nr.seen()
            .iter()
            .all(|s| s.compressed && s.body_bytes <= newrelic::MAX_PAYLOAD)
    );
    let events = nr.received();
    let events = by_id(&events);
    for p in &produced {
        let e = events[&p.id][0].as_object().unwrap();
        assert_eq!(events[&p.id].len(), 1);
        assert!(e.values().all(|v| v.is_string() || v.is_number()), "flat");
        let ty = p.json["event"]["type"].as_str().unwrap();
        assert_eq!(e["eventType"], format!("Qoe_{ty}").as_str());
        assert_eq!(e["timestamp"], p.json["event"]["timestamp"]);
        if p.id != "long" && p.id != "wide" {
            assert_eq!(
                e["event.metrics.event_count"],
                p.json["event"]["metrics"]["event_count"]
            );
            assert_eq!(e["customer_code"], p.json["customer_code"]);
        }
    }
    // The router's records arrive flattened after the sample's four, with target set.
    let carrying = events
        .values()
        .filter(|e| {
            e[0].get("ops_metadata.collector_observability.4.metric_name")
                == Some(&Value::from("process_duration_ms"))
        })
        .inspect(|e| {
            assert_eq!(
                e[0]["ops_metadata.collector_observability.4.dimension.target"],
                NR
            )
        })
        .count();
    assert!(
        carrying > 0,
        "events sent after the first delivery carry its records"
    );
    assert_eq!(events["long"][0]["message"].as_str().unwrap().len(), 4096);
    let wide = events["wide"][0].as_object().unwrap();
    assert_eq!(wide.len(), newrelic::MAX_ATTRIBUTES);
    assert_eq!(wide["event_id"], "wide", "kept: it identifies the event");
    assert_eq!(wide["customer_code"], "c-wide");
    assert_eq!(wide["event.type"], "error");
    assert!(wide.contains_key("k0") && !wide.contains_key("k395"));
    let fixes = stats.fixes();
    assert_eq!(fixes.get("value_truncated"), Some(&1));
    assert_eq!(fixes.get("too_many_attributes"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yesterdays_events_are_restamped_for_datadog_and_new_relic_not_lost() {
    // A replay of yesterday's dead letters: both APIs would answer 2xx and drop them.
    let h = Harness::new(1).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    let nr = FakeNewRelic::start(NR_ACCOUNT, NR_KEY).await.unwrap();
    let day_ago = now_ms() - 26 * 3_600_000;
    let records: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| {
            let id = format!("old-{i}");
            let json = format!(
                r#"{{"event_id":"{id}","connector_list":"{DD},{NR}","event":{{"type":"heartbeat","timestamp":{}}}}}"#,
                day_ago + i
            );
            (id, json.into_bytes())
        })
        .collect();
    h.produce(records);
    let linger = "[connectors.{}.batch]\nmax_linger_ms = 20";
    let settings = h.settings_for(
        "g-old",
        &format!(
            "{}{}",
            datadog_table(&dd.url(), &linger.replace("{}", DD)),
            newrelic_table(&nr, &linger.replace("{}", NR))
        ),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(dd.wait_for_received(50, PATIENCE).await);
    assert!(nr.wait_for_received(50, PATIENCE).await);
    let (dd_stats, nr_stats) = (
        pipeline.connector_stats(DD).unwrap(),
        pipeline.connector_stats(NR).unwrap(),
    );
    assert!(pipeline.shutdown().await);

    assert!(dd.violations().is_empty(), "{:?}", dd.violations());
    assert!(
        nr.integration_errors().is_empty(),
        "{:?}",
        nr.integration_errors()
    );
    for (name, items, stats) in [
        ("datadog", dd.received(), dd_stats),
        ("newrelic", nr.received(), nr_stats),
    ] {
        for item in &items {
            let original = item["original_timestamp"].as_u64().unwrap();
            assert!(
                (day_ago..day_ago + 50).contains(&original),
                "{name}: {item}"
            );
            let sent = item["timestamp"].as_u64().unwrap();
            assert!(sent.abs_diff(now_ms()) < 600_000, "{name}: stamped now");
        }
        assert_eq!(stats.fixes().get("restamped"), Some(&50), "{name}");
        assert_eq!(stats.snapshot().delivered, 50, "{name}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The fifth kind through the whole router, as the other four are: every event becomes one
/// log record with its attributes, under the configured resource; a 503 with Retry-After is
/// waited out and resent; a partial success's refused records are counted, not resent; and
/// the offsets commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_receives_every_event_once_as_a_log_record_with_its_attributes() {
    let h = Harness::new(4).await;
    let otlp = FakeOtlp::start(OTLP_KEY).await.unwrap();
    otlp.script_otlp([
        OtlpAnswer::fail(503, "collector busy", Some(1)),
        OtlpAnswer::partial(2, "2 records over the backend's attribute limit"),
    ]);
    let produced = h.produce(events_to(
        "otlp",
        900,
        &[OTLP, "dz-connector-splunk,dz-connector-otlp"],
    ));
    let settings = h.settings_for(
        "g-otlp",
        &format!(
            r#"
[connectors.{OTLP}]
kind = "otlp_logs"
endpoint = "{}"
service_name = "qoe-router"
concurrency = 1
[connectors.{OTLP}.headers]
x-api-key = "${{OTLP_KEY}}"
[connectors.{OTLP}.resource_attributes]
"deployment.environment.name" = "test"
[connectors.{OTLP}.batch]
max_events = 100
max_linger_ms = 20
[connectors.{OTLP}.retry]
initial_backoff_ms = 10
max_backoff_ms = 2000
max_attempts = 50
"#,
            otlp.logs_url()
        ),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        otlp.wait_for_received(898, PATIENCE).await,
        "{:?}",
        pipeline.progress()
    );
    let end: i64 = produced.len() as i64;
    assert!(
        pipeline.wait_for_source(PATIENCE, |s| s.committed.values().sum::<i64>() == end),
        "every offset commits, the partially refused ones included: {:?}",
        pipeline.source_status()
    );
    let stats = pipeline.connector_stats(OTLP).unwrap().snapshot();
    assert!(pipeline.shutdown().await);

    assert!(otlp.violations().is_empty(), "{:?}", otlp.violations());
    let seen = otlp.seen();
    assert_eq!(seen[0].status, 503, "the scripted overload came first");
    assert!(seen.iter().all(|s| s.compressed), "gzip by default");
    assert_eq!(
        (
            stats.delivered,
            stats.dropped_by_destination,
            stats.rejected
        ),
        (900, 2, 0),
        "a partial success is delivery, with the refused records counted as dropped"
    );

    let records = otlp.records();
    assert_eq!(records.len(), 898, "the two refused records are not resent");
    let carrying = records
        .iter()
        .filter(|r| !split_router_records(r.event.clone(), OTLP).1.is_empty())
        .count();
    assert!(
        carrying > 0,
        "records sent after the first delivery carry its collector_observability records"
    );
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let wanted: HashMap<&str, &Value> = produced.iter().map(|p| (p.id.as_str(), &p.json)).collect();
    for r in &records {
        let id = r.event["event_id"].as_str().unwrap().to_string();
        *by_id.entry(id.clone()).or_default() += 1;
        let original = wanted[id.as_str()];
        let (event, _) = split_router_records(r.event.clone(), OTLP);
        assert_eq!(&event, original, "{id}: the body is the event");
        let ms = original["event"]["timestamp"].as_u64().unwrap();
        assert_eq!(r.time_unix_nano, ms * 1_000_000, "{id}");
        let attribute = |k: &str| r.attributes.get(k).map(String::as_str);
        assert_eq!(
            attribute("customer_code"),
            original["customer_code"].as_str()
        );
        assert_eq!(attribute("event.type"), original["event"]["type"].as_str());
        assert_eq!(
            attribute("configuration_id"),
            original["configuration_id"].as_str()
        );
        assert_eq!(r.resource["service.name"], "qoe-router");
        assert_eq!(r.resource["deployment.environment.name"], "test");
    }
    assert!(by_id.values().all(|n| *n == 1), "no record twice");
    assert_eq!(by_id.len(), 898);
}
