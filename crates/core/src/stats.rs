//! Counters the pipeline keeps as it runs: read by the progress line, tests and (later) the
//! metrics exporter. Plain atomics: cheap on the hot path, no locks.

use crate::connector::Fix;
use crate::event::MalformedReason;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Per connector.
#[derive(Debug, Default)]
pub struct ConnectorStats {
    /// Events handed to this connector.
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    /// Permanently refused (by the destination, for size, or after retries ran out).
    pub rejected: AtomicU64,
    /// Event re-sends: one event in a retried request counts once per retry.
    pub retried: AtomicU64,
    pub requests: AtomicU64,
    /// Requests that did not end in full delivery on that attempt.
    pub failed_requests: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub in_flight_requests: AtomicU64,
    /// Rejected events durably written to the dead-letter destination.
    pub dead_lettered: AtomicU64,
    /// Events of a detached destination durably written to the parking topic.
    pub parked: AtomicU64,
    /// Events dropped undelivered because their partition was revoked: its next owner
    /// delivers them.
    pub cancelled: AtomicU64,
    /// Events the destination accepted and then reported dropped, without saying which
    /// (see `Verdict::dropped`).
    pub dropped_by_destination: AtomicU64,
    /// Whether the destination confirms accepted requests later (`Connector::confirmation`):
    /// the two counters below mean something only then.
    pub confirming: std::sync::atomic::AtomicBool,
    /// Receipts of accepted requests awaiting the destination's confirmation.
    pub awaiting_confirmation: AtomicU64,
    /// Receipts never confirmed within their timeout: their events were sent again.
    pub confirm_timeouts: AtomicU64,
    /// Events a customer's instance sampled out (`sample_rate` in a tenant file); the
    /// router counts the connector-wide ones (`Router::sampled_out_counts`).
    pub sampled_out: AtomicU64,
    /// Adjustments encoders made to fit the API, by reason (see `Encoded::fixes`).
    fixes: Mutex<BTreeMap<&'static str, u64>>,
    /// Rejected events by reason class (the reason's text up to its first colon).
    rejections: Mutex<BTreeMap<String, u64>>,
    health: Mutex<Health>,
}

/// The connector's startup health check (docs/health.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Health {
    #[default]
    Pending,
    Healthy,
    Failing(String),
    /// The check is disabled and no delivery has succeeded yet: it counts as ready.
    Unchecked,
}

/// A consistent-enough copy of [`ConnectorStats`] for display and assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectorSnapshot {
    pub queued: u64,
    pub delivered: u64,
    pub rejected: u64,
    pub retried: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub bytes_sent: u64,
    pub in_flight_requests: u64,
    pub dead_lettered: u64,
    pub parked: u64,
    pub cancelled: u64,
    pub dropped_by_destination: u64,
    pub awaiting_confirmation: u64,
    pub confirm_timeouts: u64,
}

impl ConnectorStats {
    pub fn count_fixes(&self, fixes: &[Fix]) {
        if fixes.is_empty() {
            return;
        }
        if let Ok(mut m) = self.fixes.lock() {
            for f in fixes {
                *m.entry(f.kind).or_default() += 1;
            }
        }
    }

    pub fn fixes(&self) -> BTreeMap<&'static str, u64> {
        self.fixes.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn set_health(&self, h: Health) {
        if let Ok(mut g) = self.health.lock() {
            *g = h;
        }
    }

    /// A delivery went through: whatever a health check said, the destination works.
    pub fn mark_healthy(&self) {
        if let Ok(mut g) = self.health.lock()
            && *g != Health::Healthy
        {
            *g = Health::Healthy;
        }
    }

    /// A failed health check, unless a delivery has shown the destination healthy since.
    /// False when it was already healthy.
    pub fn mark_failing(&self, why: String) -> bool {
        match self.health.lock() {
            Ok(mut g) if *g != Health::Healthy => {
                *g = Health::Failing(why);
                true
            }
            _ => false,
        }
    }

    pub fn health(&self) -> Health {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    pub fn count_rejection(&self, reason: &str, n: u64) {
        let class = reason.split(':').next().unwrap_or(reason).trim();
        if let Ok(mut m) = self.rejections.lock() {
            *m.entry(class.to_string()).or_default() += n;
        }
    }

    /// Rejected events by reason class.
    pub fn rejections(&self) -> BTreeMap<String, u64> {
        self.rejections
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> ConnectorSnapshot {
        ConnectorSnapshot {
            queued: self.queued.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            retried: self.retried.load(Relaxed),
            requests: self.requests.load(Relaxed),
            failed_requests: self.failed_requests.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            in_flight_requests: self.in_flight_requests.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            parked: self.parked.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            dropped_by_destination: self.dropped_by_destination.load(Relaxed),
            awaiting_confirmation: self.awaiting_confirmation.load(Relaxed),
            confirm_timeouts: self.confirm_timeouts.load(Relaxed),
        }
    }
}

/// For the input side.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub consumed: AtomicU64,
    /// Parsed events that no enabled connector takes.
    pub unrouted: AtomicU64,
    /// Records that were a JSON array of events (counted in `consumed` once each).
    pub array_records: AtomicU64,
    /// The members of those arrays, malformed ones included.
    pub array_members: AtomicU64,
    malformed: [AtomicU64; MalformedReason::ALL.len()],
    pub paused_partitions: AtomicU64,
    /// Times a partition was paused for backpressure.
    pub pauses: AtomicU64,
    /// Times a record found the router over `max_inflight_events` and waited for deliveries
    /// rather than pausing its partition at once.
    pub overload_waits: AtomicU64,
    /// Malformed records durably written to the dead-letter destination.
    pub malformed_dead_lettered: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
}

impl SourceStats {
    pub fn count_malformed(&self, reason: MalformedReason) {
        self.malformed[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn malformed(&self, reason: MalformedReason) -> u64 {
        self.malformed[reason as usize].load(Relaxed)
    }

    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().map(|c| c.load(Relaxed)).sum()
    }
}
