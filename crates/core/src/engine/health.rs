//! The destination's health check, for the readiness probe (docs/health.md).

use super::Courier;
use crate::connector::Connector;
use crate::stats::Health;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, timeout};

/// The same health-check failure is logged at WARN at most this often.
const HEALTH_WARN_EVERY: Duration = Duration::from_secs(300);

/// Runs the connector's health check every `health_check.interval` until it passes, or until
/// a delivery succeeds (which shows more than any probe), for the readiness probe. A check
/// gets the request timeout to answer, so a destination that never answers reads as failing,
/// not pending. The destination's answer is clipped and the same failure is warned about once
/// per [`HEALTH_WARN_EVERY`], not every retry.
pub(super) async fn check_health<C: Connector>(courier: Arc<Courier<C>>) {
    let warnings = crate::log::Throttle::new(HEALTH_WARN_EVERY);
    let interval = courier.settings.health_check.interval;
    let limit = courier.settings.request_timeout;
    loop {
        if courier.stats.health() == Health::Healthy {
            return;
        }
        let answer = timeout(limit, courier.connector.health())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
        match answer {
            Ok(()) => {
                courier.stats.set_health(Health::Healthy);
                return;
            }
            Err(e) => {
                let error = crate::log::clip(&e);
                if !courier.stats.mark_failing(error.clone()) {
                    return;
                }
                match warnings.allow(&error) {
                    Some(held_back) => {
                        tracing::warn!(connector = %courier.id, %error, held_back, retry_every = ?interval, "health check failed; retrying (a successful delivery also counts as healthy)")
                    }
                    None => tracing::debug!(connector = %courier.id, %error, "health check failed"),
                }
            }
        }
        sleep(interval).await;
    }
}
