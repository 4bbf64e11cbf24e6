//! Partition bookkeeping and the rebalance callbacks.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use switchyard_core::{Acker, PartitionId, SourceStats};

/// A Kafka partition by name.
pub type TopicPartition = (Arc<str>, i32);

/// The partitions this member owns now, each under a fresh [`PartitionId`] per assignment.
#[derive(Default)]
pub struct Assigned {
    /// Keyed by topic first so a lookup by `&str` allocates nothing.
    by_name: HashMap<Arc<str>, HashMap<i32, PartitionId>>,
    by_id: HashMap<PartitionId, TopicPartition>,
    next: u32,
}

impl Assigned {
    /// The id of a partition, and the shared topic name to put in origins.
    pub fn id(&self, topic: &str, partition: i32) -> Option<(PartitionId, Arc<str>)> {
        let (name, parts) = self.by_name.get_key_value(topic)?;
        parts.get(&partition).map(|id| (*id, name.clone()))
    }

    pub fn name(&self, id: PartitionId) -> Option<&TopicPartition> {
        self.by_id.get(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    fn add(&mut self, topic: &str, partition: i32) -> PartitionId {
        let id = PartitionId(self.next);
        self.next += 1;
        let name: Arc<str> = match self.by_name.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => Arc::from(topic),
        };
        self.by_name
            .entry(name.clone())
            .or_default()
            .insert(partition, id);
        self.by_id.insert(id, (name, partition));
        id
    }

    fn remove(&mut self, topic: &str, partition: i32) -> Option<PartitionId> {
        let id = self.by_name.get_mut(topic)?.remove(&partition)?;
        self.by_id.remove(&id);
        Some(id)
    }
}

/// The source as observers see it.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Partitions this member owns now.
    pub assigned: usize,
    /// Rebalances seen (assignments and revocations).
    pub rebalances: u64,
    /// Partitions taken away from this member, summed over every revocation. Under the
    /// cooperative protocol only those that change owner; under the eager one, all of them.
    pub partitions_revoked: u64,
    /// Partitions given to this member, summed over every assignment.
    pub partitions_assigned: u64,
    /// Last committed offset per (topic, partition).
    pub committed: HashMap<(String, i32), i64>,
    /// Revocations whose deliveries all finished within `revoke_drain_timeout`.
    pub revokes_drained: u64,
    /// Revocations that gave up waiting (their unfinished events are redelivered).
    pub revokes_timed_out: u64,
    /// Consumer lag per (topic, partition), from librdkafka's statistics.
    pub lag: HashMap<(String, i32), i64>,
    /// Partitions read to their end and nothing since, by number (one topic), when
    /// `enable.partition.eof` is set; cleared by every rebalance.
    pub at_end: HashSet<i32>,
}

impl Status {
    /// Every assigned partition has been read to its end (see `at_end`).
    pub fn caught_up(&self) -> bool {
        self.rebalances > 0 && self.at_end.len() >= self.assigned
    }
}

pub struct Shared {
    pub acker: Arc<Acker>,
    pub stats: Arc<SourceStats>,
    pub assigned: Mutex<Assigned>,
    /// What observers (tests, metrics, readiness) may see; waiters are woken on change.
    pub status: Mutex<Status>,
    pub status_changed: Condvar,
    pub revoke_drain_timeout: Duration,
    /// Set when simulating a crash: nothing more is committed, even on revoke.
    pub crashed: AtomicBool,
    /// Set by a graceful stop, which has already waited for deliveries in its own budget.
    pub stopping: AtomicBool,
}

impl Shared {
    pub fn assigned(&self) -> MutexGuard<'_, Assigned> {
        self.assigned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the observable status and wakes its waiters.
    pub fn update_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
        self.status_changed.notify_all();
    }

    /// Commits `points` synchronously and records them; false if Kafka refused.
    pub fn commit(&self, consumer: &BaseConsumer<Context>, points: &[(PartitionId, i64)]) -> bool {
        if points.is_empty() || self.crashed.load(Ordering::SeqCst) {
            return true;
        }
        let mut tpl = TopicPartitionList::new();
        let mut named = Vec::with_capacity(points.len());
        {
            let assigned = self.assigned();
            for (id, offset) in points {
                if let Some((topic, partition)) = assigned.name(*id) {
                    // Infallible for a non-negative offset on a fresh list.
                    let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
                    named.push((*id, topic.to_string(), *partition, *offset));
                }
            }
        }
        self.commit_list(consumer, &tpl, &named)
    }

    fn commit_list(
        &self,
        consumer: &BaseConsumer<Context>,
        tpl: &TopicPartitionList,
        named: &[(PartitionId, String, i32, i64)],
    ) -> bool {
        if tpl.count() == 0 {
            return true;
        }
        match consumer.commit(tpl, CommitMode::Sync) {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                {
                    let mut acker = self.acker.lock();
                    for (id, _, _, offset) in named {
                        acker.committed(*id, *offset);
                    }
                }
                self.update_status(|s| {
                    for (_, topic, partition, offset) in named {
                        s.committed.insert((topic.clone(), *partition), *offset);
                    }
                });
                true
            }
            // Nothing new since the last commit: not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => true,
            Err(e) => {
                self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, partitions = tpl.count(), "offset commit failed; will retry");
                false
            }
        }
    }
}

pub struct Context {
    pub shared: Arc<Shared>,
}

impl ClientContext for Context {
    /// librdkafka's periodic statistics (`statistics.interval.ms`): the consumer lag of each
    /// partition this member owns.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = HashMap::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    lag.insert((topic.clone(), *partition), p.consumer_lag);
                }
            }
        }
        self.shared.update_status(|s| s.lag = lag);
    }

    /// Client-level errors. The end of a partition is not one: a drain asks to be told
    /// (`enable.partition.eof`), and librdkafka also reports it here.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if matches!(error, rdkafka::error::KafkaError::PartitionEOF(_)) {
            return;
        }
        tracing::error!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let ids: Vec<PartitionId> = {
            let assigned = self.shared.assigned();
            tpl.elements()
                .iter()
                .filter_map(|e| assigned.id(e.topic(), e.partition()).map(|(id, _)| id))
                .collect()
        };
        let crashed = self.shared.crashed.load(Ordering::SeqCst);
        let stopping = self.shared.stopping.load(Ordering::SeqCst);
        let drained = crashed
            || stopping
            || self
                .shared
                .acker
                .wait_until(self.shared.revoke_drain_timeout, |t| {
                    ids.iter().all(|p| t.unfinished(*p) == 0)
                });
        if !drained {
            tracing::warn!(
                partitions = ids.len(),
                timeout = ?self.shared.revoke_drain_timeout,
                "revoked partitions still had deliveries in flight; committing what finished, the rest will be redelivered to the next owner"
            );
        }
        let points: Vec<(PartitionId, i64)> = {
            let t = self.shared.acker.lock();
            ids.iter()
                .filter_map(|p| t.watermark(*p).map(|w| (*p, w)))
                .collect()
        };
        // Kafka accepts this commit while the group prepares the rebalance. (librdkafka's mock
        // cluster refuses it as RebalanceInProgress; then the next owner starts from the last
        // periodic commit, which costs duplicates, never events.)
        let _ = self.shared.commit(consumer, &points);
        let owned = {
            let mut assigned = self.shared.assigned();
            let mut acker = self.shared.acker.lock();
            for e in tpl.elements() {
                if let Some(id) = assigned.remove(e.topic(), e.partition()) {
                    acker.revoke(id);
                }
            }
            assigned.len()
        };
        let revoked = tpl.count() as u64;
        self.shared.update_status(|s| {
            s.assigned = owned;
            s.rebalances += 1;
            s.partitions_revoked += revoked;
            s.at_end.clear();
            if drained {
                s.revokes_drained += 1;
            } else {
                s.revokes_timed_out += 1;
            }
        });
        tracing::info!(partitions = tpl.count(), drained, "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut added = TopicPartitionList::new();
                let owned = {
                    let mut assigned = self.shared.assigned();
                    let mut acker = self.shared.acker.lock();
                    for e in tpl.elements() {
                        if assigned.id(e.topic(), e.partition()).is_none() {
                            let id = assigned.add(e.topic(), e.partition());
                            acker.assign(id);
                            added.add_partition(e.topic(), e.partition());
                        }
                    }
                    assigned.len()
                };
                resume_fresh(consumer, &added);
                let count = added.count() as u64;
                self.shared.update_status(|s| {
                    s.assigned = owned;
                    s.rebalances += 1;
                    s.partitions_assigned += count;
                    s.at_end.clear();
                });
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(error = %e, "commit callback reported an error");
        }
    }
}

/// Unpauses partitions that have just become this member's. librdkafka keeps a partition's
/// pause across its revocation and a later re-assignment, while the source forgot it at the
/// revocation (a fresh assignment gets a fresh [`PartitionId`], never paused): without this
/// a partition paused under back-pressure and then moved away and back would stay paused
/// for good. Partitions the cooperative protocol lets this member keep are not in the list
/// and keep their pause and their id.
fn resume_fresh(consumer: &BaseConsumer<Context>, added: &TopicPartitionList) {
    if added.count() == 0 {
        return;
    }
    if let Err(e) = consumer.resume(added) {
        tracing::warn!(error = %e, partitions = added.count(), "could not clear the pause of newly assigned partitions");
    }
}
