//! The admin server over real HTTP: liveness, readiness that names what is missing, and
//! Prometheus metrics that reflect what the pipeline did. The HEC connector runs with
//! `append_observability = false`: the metrics-only way to have the delivery timings, so the
//! events go as produced and the four histograms are still exported.

use std::time::Duration;
use switchyard::Pipeline;
use switchyard_testkit::probe::http_get;
use switchyard_tests::*;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_get(&addr.to_string(), path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_reflect_the_pipeline() {
    let h = Harness::new(2).await;
    let produced = h.produce(events("adm", 100));
    // One malformed record, after the good ones on partition 0.
    h.produce(vec![("bad".into(), b"not json".to_vec())]);
    // A second HEC whose endpoint refuses connections: its health check fails.
    let dead = "[connectors.dz-connector-dead]\nkind = \"splunk_hec\"\nendpoint = \"http://127.0.0.1:1\"\ntoken = \"x\"\n";
    let settings = h.settings(
        "g-admin",
        "append_observability = false",
        &format!(
            "[connectors.dz-connector-splunk.batch]\nmax_linger_ms = 20\nmax_events = 10\n{dead}"
        ),
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
    tokio::task::block_in_place(|| {
        assert!(pipeline.wait_for_source(PATIENCE, |s| s.committed.values().sum::<i64>() == 101));
    });

    assert_eq!(get(addr, "/health/live").await.0, 200);
    // Readiness settles within the health checks' first round; poll it with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = get(addr, "/health/ready").await;
        let settled = body.contains("dz-connector-dead: ") && !body.contains("pending");
        if settled || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("dz-connector-dead") && !body.contains("dz-connector-splunk"),
        "only the dead connector is named: {body}"
    );
    assert!(!body.contains("kafka"), "the consumer has joined: {body}");

    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "switchyard_events_consumed_total 101",
        "switchyard_events_delivered_total{connector=\"dz-connector-splunk\"} 100",
        "switchyard_malformed_total{reason=\"not_json\"} 1",
        "switchyard_connector_healthy{connector=\"dz-connector-splunk\"} 1",
        "switchyard_connector_healthy{connector=\"dz-connector-dead\"} 0",
        "switchyard_assigned_partitions 2",
        "switchyard_connector_state{connector=\"dz-connector-splunk\",state=\"flowing\"} 1",
        "switchyard_connector_state{connector=\"dz-connector-splunk\",state=\"detached\"} 0",
        "switchyard_events_parked_total{connector=\"dz-connector-splunk\"} 0",
        "switchyard_parked_oldest_age_seconds{connector=\"dz-connector-splunk\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for prefix in [
        "switchyard_send_duration_ms_bucket{target=\"dz-connector-splunk\",status_code=\"200\",le=",
        "switchyard_call_duration_ms_bucket{target=\"dz-connector-splunk\",status_code=\"200\",attempt=\"1\",le=",
        "switchyard_queue_duration_ms_count{target=\"dz-connector-splunk\"}",
        "switchyard_process_duration_ms_sum{target=\"dz-connector-splunk\",status_code=\"200\"}",
        "switchyard_committed_offset{topic=\"qoe\",partition=\"0\"}",
        "switchyard_bytes_sent_total{connector=\"dz-connector-splunk\"}",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "missing {prefix:?} in\n{text}"
        );
    }
    // Metrics only: ten deliveries, and no event carries the router's records.
    let by_id: std::collections::HashMap<&str, &Produced> =
        produced.iter().map(|p| (p.id.as_str(), p)).collect();
    let received = h.hec.received();
    assert_eq!(received.len(), produced.len());
    for env in &received {
        let p = by_id[env["event"]["event_id"].as_str().unwrap()];
        assert_eq!(
            env["event"], p.json,
            "sent as produced, no records appended"
        );
    }
    assert!(pipeline.shutdown().await);
}
