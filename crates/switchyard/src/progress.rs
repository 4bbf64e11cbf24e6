//! The one-line progress report of `switchyard demo` and the periodic log of `run`.

use crate::pipeline::{Pipeline, Progress};
use std::fmt::Write;
use std::future::Future;
use std::time::{Duration, Instant};
use switchyard_core::State;

/// Calls `show` with a fresh progress line every `every` until `stop` resolves.
pub async fn report_until(
    pipeline: &Pipeline,
    every: Duration,
    stop: impl Future<Output = ()>,
    mut show: impl FnMut(&str),
) {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut before = pipeline.progress();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {
                let now = pipeline.progress();
                show(&line(&now, &before, started.elapsed(), every));
                before = now;
            }
        }
    }
}

/// `in 24010 (2001/s) malformed 24 unknown-ids 1203 | splunk: ok 23900 rej 0 retry 0 …`
pub fn line(now: &Progress, before: &Progress, elapsed: Duration, interval: Duration) -> String {
    let rate = (now.consumed - before.consumed) as f64 / interval.as_secs_f64().max(1e-3);
    let unknown: u64 = now.unknown_connectors.iter().map(|(_, n)| n).sum();
    let mut s = format!(
        "[{:>5}s] in {} ({:.0}/s) malformed {} unknown-ids {} paused {}",
        elapsed.as_secs(),
        now.consumed,
        rate,
        now.malformed,
        unknown,
        now.paused_partitions
    );
    for (id, c) in &now.connectors {
        let _ = write!(
            s,
            " | {id}: delivered {} rejected {} retried {} in-flight {}",
            c.delivered, c.rejected, c.retried, c.in_flight_requests
        );
        if let Some(i) = now.isolation.iter().find(|i| &i.id == id)
            && (i.state != State::Flowing || i.parked > 0)
        {
            let _ = write!(
                s,
                " [{} parked {} drained {} oldest {}s]",
                i.state, i.parked, i.drained, i.oldest_parked_age_secs
            );
        }
    }
    s
}
