//! The admin HTTP server: `/metrics` (Prometheus text), `/health/live`, `/health/ready`.
//!
//! Counters live as plain atomics on the hot path; a scrape copies them into the `metrics`
//! recorder, whose Prometheus exporter renders them with the timing histograms the engine
//! records as deliveries finish.

use crate::pipeline::Monitor;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::OnceLock;
use switchyard_core::MalformedReason;
use switchyard_core::stats::Health;
use tokio::task::JoinHandle;

/// Histogram buckets for the delivery timings, in milliseconds.
const BUCKETS_MS: [f64; 14] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0, 30_000.0,
    60_000.0,
];

/// The process's Prometheus recorder, installed on first use. Install it before the
/// pipeline starts so no timing is recorded into the void.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS_MS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; the handle still renders ours.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves the admin endpoints on `bind`; returns the bound address.
pub async fn serve(
    bind: SocketAddr,
    monitor: Monitor,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    prometheus();
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(monitor);
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin server listening (/metrics, /health/live, /health/ready)");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok((addr, task))
}

async fn live(State(m): State<Monitor>) -> impl IntoResponse {
    match m.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(stalled) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not live:\n{}\n", stalled.join("\n")),
        ),
    }
}

async fn ready(State(m): State<Monitor>) -> impl IntoResponse {
    match m.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(missing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", missing.join("\n")),
        ),
    }
}

async fn metrics_text(State(m): State<Monitor>) -> impl IntoResponse {
    refresh(&m);
    (
        [("content-type", "text/plain; version=0.0.4")],
        prometheus().render(),
    )
}

/// Copies the pipeline's counters into the recorder.
fn refresh(m: &Monitor) {
    use std::sync::atomic::Ordering::Relaxed;
    let src = m.source_stats();
    counter!("switchyard_events_consumed_total").absolute(src.consumed.load(Relaxed));
    counter!("switchyard_events_unrouted_total").absolute(src.unrouted.load(Relaxed));
    counter!("switchyard_array_records_total").absolute(src.array_records.load(Relaxed));
    counter!("switchyard_array_members_total").absolute(src.array_members.load(Relaxed));
    counter!("switchyard_commits_total").absolute(src.commits.load(Relaxed));
    counter!("switchyard_commit_failures_total").absolute(src.commit_failures.load(Relaxed));
    gauge!("switchyard_paused_partitions").set(src.paused_partitions.load(Relaxed) as f64);
    counter!("switchyard_partition_pauses_total").absolute(src.pauses.load(Relaxed));
    counter!("switchyard_overload_waits_total").absolute(src.overload_waits.load(Relaxed));
    let (events, bytes) = m.unfinished();
    gauge!("switchyard_unfinished_events").set(events as f64);
    gauge!("switchyard_unfinished_bytes").set(bytes as f64);
    counter!("switchyard_malformed_dead_lettered_total")
        .absolute(src.malformed_dead_lettered.load(Relaxed));
    for reason in MalformedReason::ALL {
        counter!("switchyard_malformed_total", "reason" => reason.as_str())
            .absolute(src.malformed(reason));
    }
    for (id, n) in m.progress().unknown_connectors {
        counter!("switchyard_unknown_connector_events_total", "connector" => id).absolute(n);
    }
    for (id, n) in m.sampled_out() {
        counter!("switchyard_events_sampled_out_total", "connector" => id).absolute(n);
    }
    for (id, stats) in m.connectors() {
        let id = id.to_string();
        let s = stats.snapshot();
        counter!("switchyard_events_routed_total", "connector" => id.clone()).absolute(s.queued);
        counter!("switchyard_events_delivered_total", "connector" => id.clone())
            .absolute(s.delivered);
        counter!("switchyard_events_retried_total", "connector" => id.clone()).absolute(s.retried);
        counter!("switchyard_requests_total", "connector" => id.clone()).absolute(s.requests);
        counter!("switchyard_requests_failed_total", "connector" => id.clone())
            .absolute(s.failed_requests);
        counter!("switchyard_bytes_sent_total", "connector" => id.clone()).absolute(s.bytes_sent);
        counter!("switchyard_events_dead_lettered_total", "connector" => id.clone())
            .absolute(s.dead_lettered);
        counter!("switchyard_events_cancelled_total", "connector" => id.clone())
            .absolute(s.cancelled);
        counter!("switchyard_events_dropped_by_destination_total", "connector" => id.clone())
            .absolute(s.dropped_by_destination);
        gauge!("switchyard_in_flight_requests", "connector" => id.clone())
            .set(s.in_flight_requests as f64);
        // Only connectors whose destination confirms accepted requests later: HEC with
        // `ack = true` is the one today, hence the names the issue gave them.
        if stats.confirming.load(Relaxed) {
            counter!("switchyard_hec_ack_timeouts_total", "connector" => id.clone())
                .absolute(s.confirm_timeouts);
            gauge!("switchyard_hec_acks_pending", "connector" => id.clone())
                .set(s.awaiting_confirmation as f64);
        }
        let healthy = if stats.health() == Health::Healthy {
            1.0
        } else {
            0.0
        };
        gauge!("switchyard_connector_healthy", "connector" => id.clone()).set(healthy);
        for (reason, n) in stats.rejections() {
            counter!("switchyard_events_rejected_total", "connector" => id.clone(), "reason" => reason).absolute(n);
        }
        for (fix, n) in stats.fixes() {
            counter!("switchyard_events_fixed_total", "connector" => id.clone(), "fix" => fix)
                .absolute(n);
        }
    }
    for c in m.customer_series() {
        let (id, customer) = (c.connector.to_string(), c.customer.to_string());
        counter!("switchyard_customer_events_routed_total", "connector" => id.clone(), "customer" => customer.clone())
            .absolute(c.routed);
        for state in c.state.iter().flat_map(|_| switchyard_core::State::ALL) {
            let on = if c.state == Some(state) { 1.0 } else { 0.0 };
            gauge!("switchyard_customer_instance_state", "connector" => id.clone(), "customer" => customer.clone(), "state" => state.as_str())
                .set(on);
        }
    }
    for (id, running) in m.customer_instances() {
        gauge!("switchyard_customer_instances", "connector" => id.to_string()).set(running as f64);
    }
    for i in m.progress().isolation {
        for state in switchyard_core::State::ALL {
            let on = if i.state == state { 1.0 } else { 0.0 };
            gauge!("switchyard_connector_state", "connector" => i.id.clone(), "state" => state.as_str())
                .set(on);
        }
        counter!("switchyard_events_parked_total", "connector" => i.id.clone()).absolute(i.parked);
        counter!("switchyard_events_drained_total", "connector" => i.id.clone())
            .absolute(i.drained);
        gauge!("switchyard_parked_oldest_age_seconds", "connector" => i.id)
            .set(i.oldest_parked_age_secs as f64);
    }
    let status = m.source_status();
    gauge!("switchyard_assigned_partitions").set(status.assigned as f64);
    for ((topic, partition), offset) in status.committed {
        gauge!("switchyard_committed_offset", "topic" => topic, "partition" => partition.to_string()).set(offset as f64);
    }
    for ((topic, partition), lag) in status.lag {
        gauge!("switchyard_consumer_lag", "topic" => topic, "partition" => partition.to_string())
            .set(lag as f64);
    }
}
