//! The intake: takes the connector's queue, forms batches by the limits and hands each to a
//! delivery task once a request slot is free, or parks it while the destination is detached.

use super::settle::LastAnswer;
use super::{Courier, PARKED};
use crate::batch::{Batch, Batcher, Push};
use crate::connector::Connector;
use crate::event::Event;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

pub(super) struct Intake<C> {
    pub(super) batcher: Batcher,
    /// One per request in flight: the concurrency bound.
    pub(super) permits: Arc<Semaphore>,
    pub(super) tasks: JoinSet<()>,
    pub(super) courier: Arc<Courier<C>>,
    /// The confirmation poller, when the destination confirms accepted requests later, and
    /// the switch that tells it the intake is done.
    pub(super) confirmer: Option<(watch::Sender<bool>, Poller)>,
}

/// The confirmation poller's task, stopped with the intake: a worker the pipeline stops at
/// its shutdown deadline stops asking too, leaving what was never confirmed unfinished.
pub(super) struct Poller(pub(super) JoinHandle<()>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<C: Connector> Intake<C> {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        loop {
            let deadline = self.batcher.deadline();
            tokio::select! {
                next = rx.recv() => match next {
                    Some(event) => self.accept(event).await,
                    None => break,
                },
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.flush().await;
                }
            }
            // Under a steady trickle `recv` is always ready; linger must still be honoured.
            if self.batcher.deadline().is_some_and(|d| d <= Instant::now()) {
                self.flush().await;
            }
            while self.tasks.try_join_next().is_some() {}
        }
        self.flush().await;
        while self.tasks.join_next().await.is_some() {}
        // Events still awaiting confirmation are not delivered yet: the worker ends once
        // they are confirmed (or sent again and confirmed). The pipeline's shutdown budget
        // bounds the wait; what is never confirmed stays uncommitted and is read again.
        if let Some((closing, mut poller)) = self.confirmer.take() {
            let _ = closing.send(true);
            let _ = (&mut poller.0).await;
        }
    }

    async fn accept(&mut self, event: Event) {
        // Field selection shapes events only when they are sent; what renaming and adding can
        // add is reserved now.
        let shaping = self
            .courier
            .settings
            .fields
            .as_ref()
            .map_or(0, |f| f.max_growth());
        let size =
            self.courier.connector.encoded_len(&event) + self.courier.records.bound() + shaping;
        match self.batcher.push(event, size) {
            Push::Added => {}
            Push::Full(batch) | Push::Rolled(batch) => self.dispatch(batch).await,
            Push::TooLarge(event) => {
                let reason = format!(
                    "event encodes to {size} bytes, over this connector's max batch bytes {}",
                    self.batcher.limits().max_bytes
                );
                self.courier.finish_rejected(vec![(event, reason)], 0, 0);
            }
        }
    }

    async fn flush(&mut self) {
        if let Some(batch) = self.batcher.take() {
            self.dispatch(batch).await;
        }
    }

    /// Waits for a free request slot (this is where a slow destination pushes back on the
    /// worker), then delivers `batch` in the background. While the destination is detached or
    /// draining, the batch is parked instead, unless it is due as a probe.
    async fn dispatch(&mut self, batch: Batch) {
        let probe = match self.courier.parking() {
            Some((isolation, _)) if isolation.is_parking() => {
                if !isolation.take_probe() {
                    let reason = format!("{}: destination {}", PARKED, isolation.state());
                    // Never sent: the time it was first queued stands for the first attempt.
                    let never_sent = LastAnswer {
                        status: 0,
                        attempts: 0,
                        first_attempt_ms: batch.opened_wall_ms,
                    };
                    self.courier.park(batch.events, &reason, never_sent);
                    return;
                }
                true
            }
            _ => false,
        };
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let courier = self.courier.clone();
        self.tasks.spawn(async move {
            courier.deliver(batch, probe).await;
            drop(permit);
        });
    }
}
