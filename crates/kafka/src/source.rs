//! The consumer thread: poll, dispatch, pause/resume, commit.

use crate::client::client_config;
use crate::context::{Assigned, Context, Shared, Status};
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchyard_core::{Dispatcher, Envelope, Heartbeat, OffsetTracker, Origin, PartitionId};
use tokio::task::JoinHandle as TaskHandle;

/// `[kafka]` settings the source needs.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    /// Static membership (KIP-345): a member that restarts under the same id within
    /// `session.timeout.ms` gets its partitions back at once, without a rebalance. Unique per
    /// member of a group (in Kubernetes, the pod name).
    pub group_instance_id: Option<String>,
    /// Raw librdkafka properties; they override switchyard's defaults.
    pub options: crate::KafkaOptions,
    pub commit_interval: Duration,
    /// Pause a partition once this many of its offsets are unfinished.
    pub max_inflight_per_partition: usize,
    /// Pause every partition that delivers more once this many offsets are unfinished.
    pub max_inflight_events: usize,
    /// The same, once the payloads of the unfinished offsets add up to this many bytes.
    pub max_inflight_bytes: usize,
    pub revoke_drain_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Only records carrying this header (name, value) are dispatched; the others finish at
    /// once. For replaying a dead-letter topic to one connector.
    pub only_with_header: Option<(String, String)>,
    /// How long a record that finds the router over `max_inflight_events` waits for
    /// deliveries before its partition pauses ([`OVERLOAD_WAIT`]; not a file setting).
    pub overload_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("could not start the consumer thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// librdkafka settings switchyard chooses unless `[kafka.options]` says otherwise.
fn defaults() -> [(&'static str, &'static str); 11] {
    [
        // Offsets are stored and committed by the watermark, never automatically.
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        // Prefetch dominates RSS otherwise (librdkafka's default is 64 MiB). 8 MiB is ~70 ms
        // of input at full speed, refilled every 20 ms (below).
        ("queued.max.messages.kbytes", "8192"),
        ("fetch.max.bytes", "8388608"),
        // Once that prefetch is full librdkafka waits this long before fetching again; its
        // default (1 s) idles a router that drains the queue in well under a second, capping
        // throughput at about the queue's size per second.
        ("fetch.queue.backoff.ms", "20"),
        ("enable.partition.eof", "false"),
        // Consumer lag per partition for the metrics.
        ("statistics.interval.ms", "10000"),
        // A member joining or leaving moves only the partitions that change owner; the
        // others keep flowing instead of all being revoked and re-fetched (KIP-429). Every
        // member of a group must use it, so a rolling upgrade from the eager default needs
        // one step with both strategies listed (docs/kafka-group.md).
        ("partition.assignment.strategy", "cooperative-sticky"),
        // Long enough that a static member's container restart (a crash, OOM kill or failed
        // liveness probe; kubelet's first back-off is 10 s) comes back before the group gives
        // its partitions away; short enough that a member that never comes back stalls its
        // partitions for under a minute. A graceful stop leaves the group at once instead.
        ("session.timeout.ms", "45000"),
        ("heartbeat.interval.ms", "3000"),
    ]
}

const RUN: u8 = 0;
const STOP: u8 = 1;
const CRASH: u8 = 2;

/// A running consumer. [`Source::stop`] shuts it down gracefully.
pub struct Source {
    thread: Option<JoinHandle<SourceExit>>,
    state: Arc<AtomicU8>,
    shared: Arc<Shared>,
    heartbeat: Arc<Heartbeat>,
}

/// How the consumer thread ended.
pub struct SourceExit {
    /// The connector workers: finished, or still settling if the drain timed out.
    pub engines: Vec<TaskHandle<()>>,
    /// Whether every dispatched event finished before the shutdown timeout.
    pub drained: bool,
}

impl Source {
    /// Joins the group and starts consuming into `dispatcher`.
    pub fn start(cfg: SourceConfig, dispatcher: Dispatcher) -> Result<Source, SourceError> {
        let member = cfg
            .group_instance_id
            .as_deref()
            .map(|id| ("group.instance.id", id));
        let ours = defaults()
            .into_iter()
            .chain([("group.id", cfg.group_id.as_str())])
            .chain(member);
        let client = client_config(&cfg.brokers, ours, &[&cfg.options]);
        let shared = Arc::new(Shared {
            acker: dispatcher.acker().clone(),
            stats: dispatcher.stats().clone(),
            assigned: Mutex::new(Assigned::default()),
            status: Mutex::default(),
            status_changed: Condvar::new(),
            revoke_drain_timeout: cfg.revoke_drain_timeout,
            crashed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let consumer: BaseConsumer<Context> = client.create_with_context(Context {
            shared: shared.clone(),
        })?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let state = Arc::new(AtomicU8::new(RUN));
        let heartbeat = Arc::new(Heartbeat::new());
        let worker = Worker {
            heartbeat: heartbeat.clone(),
            consumer,
            dispatcher: Some(dispatcher),
            shared: shared.clone(),
            state: state.clone(),
            paused: HashSet::new(),
            overloaded: false,
            at_end: HashSet::new(),
            cfg,
        };
        let thread = std::thread::Builder::new()
            .name("kafka-source".into())
            .spawn(move || worker.run())?;
        Ok(Source {
            thread: Some(thread),
            state,
            shared,
            heartbeat,
        })
    }

    /// Graceful stop within `shutdown_timeout` in all: no more fetching, open batches
    /// flushed, finished offsets committed at once, in-flight deliveries awaited (and
    /// committed as they finish) until [`shutdown_reserve`] before the end, a final commit,
    /// group left. Events still unfinished then are redelivered to the next owner.
    pub fn stop(mut self) -> SourceExit {
        self.state.store(STOP, Ordering::SeqCst);
        self.join()
    }

    /// Stops as a crash would: nothing more is committed. For tests of redelivery.
    pub fn crash(mut self) -> SourceExit {
        self.shared.crashed.store(true, Ordering::SeqCst);
        self.state.store(CRASH, Ordering::SeqCst);
        self.join()
    }

    fn join(&mut self) -> SourceExit {
        let exit = self.thread.take().map(|t| t.join());
        match exit {
            Some(Ok(exit)) => exit,
            _ => SourceExit {
                engines: Vec::new(),
                drained: false,
            },
        }
    }

    /// A handle that reads the status after the source is gone (for the admin server).
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(self.shared.clone())
    }

    /// Beats once per turn of the poll loop: silent while a poll, a rebalance callback, a
    /// commit or a dispatch blocks it, and for good once the loop has ended.
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        self.heartbeat.clone()
    }

    /// Assignment and commits as of now.
    pub fn status(&self) -> Status {
        self.shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The offsets committed so far, by (topic, partition).
    pub fn committed(&self) -> HashMap<(String, i32), i64> {
        self.status().committed
    }

    /// Blocks until `done` holds for the status, or `timeout` passes; returns whether it holds.
    pub fn wait_for_status(&self, timeout: Duration, done: impl Fn(&Status) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done(&status) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            status = match self.shared.status_changed.wait_timeout(status, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.state.store(STOP, Ordering::SeqCst);
            let _ = self.join();
        }
    }
}

/// Reads a source's [`Status`].
#[derive(Clone)]
pub struct StatusHandle(Arc<Shared>);

impl StatusHandle {
    pub fn status(&self) -> Status {
        self.0.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

struct Worker {
    consumer: BaseConsumer<Context>,
    dispatcher: Option<Dispatcher>,
    shared: Arc<Shared>,
    state: Arc<AtomicU8>,
    heartbeat: Arc<Heartbeat>,
    paused: HashSet<PartitionId>,
    /// Over `max_inflight_events` for longer than [`OVERLOAD_WAIT`]: pause without waiting.
    overloaded: bool,
    /// Partitions last seen at their end (`enable.partition.eof`); mirrors `Status::at_end`
    /// so that a record costs no status update unless its partition was at the end.
    at_end: HashSet<i32>,
    cfg: SourceConfig,
}

/// How long, by default, a record that finds the router over `max_inflight_events` waits for
/// deliveries before its partition pauses. Under full load the limit is reached constantly and clears in
/// milliseconds; pausing then would cost more than it saves, because librdkafka discards a
/// paused partition's prefetched records and fetches them again on resume.
pub const OVERLOAD_WAIT: Duration = Duration::from_millis(500);

impl Worker {
    fn run(mut self) -> SourceExit {
        let mut last_commit = Instant::now();
        while self.state.load(Ordering::SeqCst) == RUN {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(msg)) => {
                    if !self.at_end.is_empty() && self.at_end.remove(&msg.partition()) {
                        let p = msg.partition();
                        self.shared.update_status(|s| {
                            s.at_end.remove(&p);
                        });
                    }
                    let over_limit = self.accept(&msg);
                    drop(msg);
                    if let Some((id, topic, partition)) = over_limit
                        && !self.ride_out_overload(id)
                    {
                        self.pause(id, &topic, partition);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_end.insert(p);
                    self.shared.update_status(|s| {
                        s.at_end.insert(p);
                    });
                }
                Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
            }
            self.resume_drained();
            let now = Instant::now();
            self.heartbeat.beat(now);
            if now.saturating_duration_since(last_commit) >= self.cfg.commit_interval {
                self.commit();
                last_commit = Instant::now();
            }
        }
        if self.state.load(Ordering::SeqCst) == CRASH {
            let engines = self
                .dispatcher
                .take()
                .map(Dispatcher::close)
                .unwrap_or_default();
            return SourceExit {
                engines,
                drained: false,
            };
        }
        self.shutdown()
    }

    /// Dispatches one record. Returns its partition if that partition should now pause.
    fn accept(&self, msg: &BorrowedMessage<'_>) -> Option<(PartitionId, Arc<str>, i32)> {
        let dispatcher = self.dispatcher.as_ref()?;
        let partition = msg.partition();
        // None: fetched just before its partition was revoked; the next owner reads it.
        let (id, topic) = self.shared.assigned().id(msg.topic(), partition)?;
        let origin = Origin {
            partition: id,
            topic,
            kafka_partition: partition,
            offset: msg.offset(),
            member: None,
        };
        // The one copy of the payload: librdkafka's buffer is gone after the next poll.
        let topic = origin.topic.clone();
        if let Some((name, value)) = &self.cfg.only_with_header {
            use rdkafka::message::Headers;
            let matches = msg.headers().is_some_and(|h| {
                h.iter()
                    .any(|x| x.key == name && x.value == Some(value.as_bytes()))
            });
            if !matches {
                dispatcher.skip(&origin);
                return None;
            }
        }
        let raw = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
        dispatcher.accept(raw, envelope(msg), origin);
        // Checked after the record is let in, so one record over the byte bound on its own
        // still goes through (alone) rather than stalling its partition for good.
        let over = {
            let t = self.shared.acker.lock();
            t.unfinished(id) >= self.cfg.max_inflight_per_partition || self.over_total(&t)
        };
        (over && !self.paused.contains(&id)).then_some((id, topic, partition))
    }

    /// Whether `id`, over a limit, may go on unpaused: only when the overload is global, not
    /// this partition's, and deliveries bring it back under the limit within
    /// `overload_wait`. If they do not, the router counts as overloaded until its backlog
    /// halves, and partitions pause as their records arrive.
    fn ride_out_overload(&mut self, id: PartitionId) -> bool {
        if self.overloaded
            || self.shared.acker.lock().unfinished(id) >= self.cfg.max_inflight_per_partition
        {
            return false;
        }
        self.shared
            .stats
            .overload_waits
            .fetch_add(1, Ordering::Relaxed);
        if self
            .shared
            .acker
            .wait_until(self.cfg.overload_wait, |t| !self.over_total(t))
        {
            return true;
        }
        self.overloaded = true;
        false
    }

    /// Over the router-wide bound, in events or in bytes.
    fn over_total(&self, t: &OffsetTracker) -> bool {
        t.total_unfinished() >= self.cfg.max_inflight_events
            || t.unfinished_bytes() >= self.cfg.max_inflight_bytes
    }

    /// Back to half the router-wide bound, in events and in bytes: paused partitions may
    /// resume.
    fn total_halved(&self, t: &OffsetTracker) -> bool {
        t.total_unfinished() <= self.cfg.max_inflight_events / 2
            && t.unfinished_bytes() <= self.cfg.max_inflight_bytes / 2
    }

    fn pause(&mut self, id: PartitionId, topic: &str, partition: i32) {
        self.set_paused(topic, partition, true);
        self.paused.insert(id);
        self.shared.stats.pauses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            topic,
            partition,
            "partition paused: too many unfinished offsets"
        );
    }

    /// Resumes paused partitions once their backlog has halved.
    fn resume_drained(&mut self) {
        if self.overloaded && self.total_halved(&self.shared.acker.lock()) {
            self.overloaded = false;
        }
        if self.paused.is_empty() {
            return;
        }
        let ready: Vec<PartitionId> = {
            let t = self.shared.acker.lock();
            let total_ok = self.total_halved(&t);
            self.paused
                .iter()
                .filter(|p| {
                    total_ok && t.unfinished(**p) <= self.cfg.max_inflight_per_partition / 2
                })
                .copied()
                .collect()
        };
        for id in ready {
            self.paused.remove(&id);
            let name = self.shared.assigned().name(id).cloned();
            if let Some((topic, partition)) = name {
                self.set_paused(&topic, partition, false);
            }
        }
        // Revoked partitions are no longer paused (or ours).
        let assigned = self.shared.assigned();
        self.paused.retain(|p| assigned.name(*p).is_some());
        self.shared
            .stats
            .paused_partitions
            .store(self.paused.len() as u64, Ordering::Relaxed);
    }

    fn set_paused(&self, topic: &str, partition: i32, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(topic, partition, Offset::Invalid);
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            tracing::warn!(topic, partition, pause, error = %e, "pause/resume failed");
        }
    }

    fn commit(&self) {
        let points = self.shared.acker.lock().commit_points();
        self.shared.commit(&self.consumer, &points);
    }

    fn shutdown(mut self) -> SourceExit {
        let deadline = Instant::now() + self.cfg.shutdown_timeout
            - shutdown_reserve(self.cfg.shutdown_timeout);
        tracing::info!("stopping: no more fetching; flushing batches and waiting for deliveries");
        // The wait below is this shutdown's wait: leaving the group must not wait again.
        self.shared.stopping.store(true, Ordering::SeqCst);
        let engines = self
            .dispatcher
            .take()
            .map(Dispatcher::close)
            .unwrap_or_default();
        // Finished work first: if the pod is killed during the wait, it is not redelivered.
        self.commit();
        let drained = self.wait_committing(deadline);
        if !drained {
            tracing::warn!(timeout = ?self.cfg.shutdown_timeout, "deliveries still in flight at the shutdown timeout; their events will be redelivered");
        }
        self.commit();
        // Leaving the group runs the revoke callback, and the revocation cancels what the
        // engines still retry.
        self.consumer.unsubscribe();
        SourceExit { engines, drained }
    }

    /// Waits until every dispatched event is finished or `deadline` passes, committing every
    /// `commit_interval` meanwhile; returns whether all finished.
    fn wait_committing(&self, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let step = left.min(self.cfg.commit_interval);
            if self
                .shared
                .acker
                .wait_until(step, |t| t.total_unfinished() == 0)
            {
                return true;
            }
            if step == left {
                return false;
            }
            self.commit();
        }
    }
}

/// The part of `shutdown_timeout` kept, after the wait for deliveries, for the final commit,
/// leaving the group, the engines cancelling what they still hold and the process exiting:
/// a third of it, at most 5 s (25 s of waiting at the default 30).
pub fn shutdown_reserve(shutdown_timeout: Duration) -> Duration {
    (shutdown_timeout / 3).min(Duration::from_secs(5))
}

/// The record's key and headers, copied (librdkafka's buffers do not outlive the poll); None
/// for the usual record that has neither.
fn envelope(msg: &BorrowedMessage<'_>) -> Option<Arc<Envelope>> {
    use rdkafka::message::Headers;
    let key = msg.key().map(Bytes::copy_from_slice);
    let headers: Vec<(String, Option<Bytes>)> = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_owned(), x.value.map(Bytes::copy_from_slice)))
                .collect()
        })
        .unwrap_or_default();
    let envelope = Envelope { key, headers };
    (!envelope.is_empty()).then(|| Arc::new(envelope))
}
