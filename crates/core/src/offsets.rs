//! Which Kafka offsets may be committed.
//!
//! Completion is tracked per (partition, offset, connector): an offset is finished when every
//! connector it was routed to has delivered or permanently rejected it. Per partition, the
//! committable offset is one past the longest finished prefix, so a failed or slow event is
//! never skipped, however many later events finish first.
//!
//! It also counts the payload bytes of unfinished offsets, which the source bounds, and says
//! which partitions are still owned: the delivery engines drop the events of a revoked
//! partition rather than deliver them for a member that no longer owns it.

use crate::event::{Event, Origin, PartitionId};
use crate::route::{ConnectorIndex, TargetSet};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug)]
struct Entry {
    offset: i64,
    pending: Owed,
    /// Payload bytes, released when the last connector finishes it.
    bytes: usize,
}

/// Who still owes an offset something.
#[derive(Debug)]
enum Owed {
    /// A record that is one event: the connectors that still owe it.
    Event(TargetSet),
    /// An array record: per member, the connectors that still owe it, and how many members
    /// are not finished. The offset is finished when every member is.
    Members { owed: Box<[TargetSet]>, left: u32 },
}

impl Owed {
    fn members(owed: Vec<TargetSet>) -> Self {
        let left = owed.iter().filter(|t| !t.is_empty()).count() as u32;
        Owed::Members {
            owed: owed.into_boxed_slice(),
            left,
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Owed::Event(t) => t.is_empty(),
            Owed::Members { left, .. } => *left == 0,
        }
    }

    /// Clears `connector` for `member` (None: the record's one event). True when that
    /// finished the record. A second clear, or a member the record does not have, changes
    /// nothing.
    fn clear(&mut self, member: Option<u32>, connector: ConnectorIndex) -> bool {
        match (self, member) {
            (Owed::Event(t), None) => t.remove(connector) && t.is_empty(),
            (Owed::Members { owed, left }, Some(m)) => {
                let Some(t) = owed.get_mut(m as usize) else {
                    return false;
                };
                if !(t.remove(connector) && t.is_empty()) {
                    return false;
                }
                *left -= 1;
                *left == 0
            }
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct Track {
    /// Registered offsets not yet below the watermark, ascending.
    entries: VecDeque<Entry>,
    unfinished: usize,
    unfinished_bytes: usize,
    /// One past the highest offset of the finished prefix: what Kafka should store.
    watermark: Option<i64>,
    committed: Option<i64>,
}

/// A registration the tracker refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("partition is not assigned")]
    NotAssigned,
    #[error("offset {offset} is not after the last registered offset {last}")]
    NotAscending { offset: i64, last: i64 },
}

/// The watermark bookkeeping, without locking. See [`Acker`] for the shared form.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<PartitionId, Track>,
    total_unfinished: usize,
    total_unfinished_bytes: usize,
    /// Counts revocations; engines sleeping between retries wake on a change to drop the
    /// events of the revoked partitions at once rather than at their next attempt.
    revocations: Arc<watch::Sender<u64>>,
}

impl OffsetTracker {
    pub fn assign(&mut self, p: PartitionId) {
        self.partitions.entry(p).or_default();
    }

    /// Forgets `p`; returns the offset to commit for it, if it moved since the last commit.
    /// Unfinished offsets are abandoned: not committed, so Kafka redelivers them, and the
    /// engines cancel what they still hold of them (see [`OffsetTracker::owns`]).
    pub fn revoke(&mut self, p: PartitionId) -> Option<i64> {
        let t = self.partitions.remove(&p)?;
        self.total_unfinished -= t.unfinished;
        self.total_unfinished_bytes -= t.unfinished_bytes;
        self.revocations.send_modify(|n| *n += 1);
        t.watermark.filter(|w| Some(*w) != t.committed)
    }

    /// Whether `p` is still assigned. Every event reaches an engine only after its offset was
    /// registered, which needs the partition assigned, so "not assigned" means "revoked since".
    pub fn owns(&self, p: PartitionId) -> bool {
        self.partitions.contains_key(&p)
    }

    /// [`OffsetTracker::register_sized`] for a record whose size is not counted.
    pub fn register(
        &mut self,
        p: PartitionId,
        offset: i64,
        targets: TargetSet,
    ) -> Result<(), RegisterError> {
        self.register_sized(p, offset, targets, 0)
    }

    /// Tracks `offset` until every connector of `targets` is done with it; its `bytes` of
    /// payload count towards [`OffsetTracker::unfinished_bytes`] until then.
    pub fn register_sized(
        &mut self,
        p: PartitionId,
        offset: i64,
        targets: TargetSet,
        bytes: usize,
    ) -> Result<(), RegisterError> {
        self.register_owed(p, offset, Owed::Event(targets), bytes)
    }

    /// Tracks an array record's `offset` until every member is finished at every connector
    /// of its own set (`members[i]` for member `i`; an empty set is finished already). Its
    /// `bytes` count once, for the whole record.
    pub fn register_members(
        &mut self,
        p: PartitionId,
        offset: i64,
        members: Vec<TargetSet>,
        bytes: usize,
    ) -> Result<(), RegisterError> {
        self.register_owed(p, offset, Owed::members(members), bytes)
    }

    fn register_owed(
        &mut self,
        p: PartitionId,
        offset: i64,
        pending: Owed,
        bytes: usize,
    ) -> Result<(), RegisterError> {
        let t = self
            .partitions
            .get_mut(&p)
            .ok_or(RegisterError::NotAssigned)?;
        let last = t
            .entries
            .back()
            .map(|e| e.offset)
            .or(t.watermark.map(|w| w - 1));
        if let Some(last) = last.filter(|l| offset <= *l) {
            return Err(RegisterError::NotAscending { offset, last });
        }
        let done = pending.is_done();
        if done && t.entries.is_empty() {
            // Nothing ahead of it: finished on arrival.
            t.watermark = Some(offset + 1);
            return Ok(());
        }
        let bytes = if done { 0 } else { bytes };
        if !done {
            t.unfinished += 1;
            t.unfinished_bytes += bytes;
            self.total_unfinished += 1;
            self.total_unfinished_bytes += bytes;
        }
        t.entries.push_back(Entry {
            offset,
            pending,
            bytes,
        });
        Ok(())
    }

    /// Records that `connector` is done with `offset`. Unknown offsets (a revoked assignment,
    /// a second acknowledgement) are ignored.
    pub fn complete(&mut self, p: PartitionId, offset: i64, connector: ConnectorIndex) {
        self.complete_member(p, offset, None, connector);
    }

    /// [`OffsetTracker::complete`] for one member of an array record (None: a record that is
    /// one event).
    pub fn complete_member(
        &mut self,
        p: PartitionId,
        offset: i64,
        member: Option<u32>,
        connector: ConnectorIndex,
    ) {
        let Some(t) = self.partitions.get_mut(&p) else {
            return;
        };
        let Ok(i) = t.entries.binary_search_by_key(&offset, |e| e.offset) else {
            return;
        };
        let e = &mut t.entries[i];
        if e.pending.clear(member, connector) {
            t.unfinished -= 1;
            t.unfinished_bytes -= e.bytes;
            self.total_unfinished -= 1;
            self.total_unfinished_bytes -= e.bytes;
        }
        while t.entries.front().is_some_and(|e| e.pending.is_done()) {
            let done = t.entries.pop_front().map(|e| e.offset);
            t.watermark = done.map(|o| o + 1);
        }
    }

    /// Offsets that have moved past what was last committed, one per partition.
    pub fn commit_points(&self) -> Vec<(PartitionId, i64)> {
        let mut v: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(p, t)| {
                t.watermark
                    .filter(|w| Some(*w) != t.committed)
                    .map(|w| (*p, w))
            })
            .collect();
        v.sort();
        v
    }

    /// Records a successful commit.
    pub fn committed(&mut self, p: PartitionId, offset: i64) {
        if let Some(t) = self.partitions.get_mut(&p) {
            t.committed = Some(offset);
        }
    }

    pub fn watermark(&self, p: PartitionId) -> Option<i64> {
        self.partitions.get(&p).and_then(|t| t.watermark)
    }

    /// Offsets of `p` some connector still owes.
    pub fn unfinished(&self, p: PartitionId) -> usize {
        self.partitions.get(&p).map_or(0, |t| t.unfinished)
    }

    pub fn total_unfinished(&self) -> usize {
        self.total_unfinished
    }

    /// Payload bytes of every unfinished offset: what the events still to deliver hold.
    pub fn unfinished_bytes(&self) -> usize {
        self.total_unfinished_bytes
    }
}

/// The tracker shared by the Kafka source (which registers and commits) and the delivery
/// engines (which complete). Waiters are woken on every completion, so draining on revoke or
/// shutdown needs no polling.
#[derive(Debug)]
pub struct Acker {
    tracker: Mutex<OffsetTracker>,
    changed: Condvar,
    revocations: Arc<watch::Sender<u64>>,
}

impl Default for Acker {
    fn default() -> Self {
        let revocations = Arc::new(watch::Sender::new(0));
        Acker {
            tracker: Mutex::new(OffsetTracker {
                revocations: revocations.clone(),
                ..OffsetTracker::default()
            }),
            changed: Condvar::new(),
            revocations,
        }
    }
}

impl Acker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes whenever a partition is revoked (for waits that should end then).
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Splits `events` into those of partitions still owned, in order, and the number of
    /// the others, which nobody should deliver any more: the next owner of their partition
    /// reads them again from the last commit. One lock, and one lookup per run of events of
    /// the same partition (a batch is usually a few such runs).
    pub fn retain_owned<T>(
        &self,
        mut events: Vec<T>,
        event: impl Fn(&T) -> &Event,
    ) -> (Vec<T>, usize) {
        let before = events.len();
        {
            let t = self.lock();
            let mut last: Option<(PartitionId, bool)> = None;
            events.retain(|e| {
                let p = event(e).origin().partition;
                match last {
                    Some((q, owned)) if q == p => owned,
                    _ => {
                        let owned = t.owns(p);
                        last = Some((p, owned));
                        owned
                    }
                }
            });
        }
        let cancelled = before - events.len();
        (events, cancelled)
    }

    /// The tracker, locked. Held briefly: the engines complete through the same lock.
    pub fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        // A panic while holding this lock would be a bug in this module; the data is still
        // consistent enough to keep committing, which beats stopping the daemon.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `events` finished at `connector`.
    pub fn complete(&self, connector: ConnectorIndex, events: &[Event]) {
        {
            let mut t = self.lock();
            for e in events {
                let o = e.origin();
                t.complete_member(o.partition, o.offset, o.member, connector);
            }
        }
        self.changed.notify_all();
    }

    /// Marks one record, or one member of an array record, finished at `connector` (for
    /// work that has no `Event`, such as a malformed record's dead-letter write).
    pub fn complete_origin(&self, connector: ConnectorIndex, origin: &Origin) {
        self.lock()
            .complete_member(origin.partition, origin.offset, origin.member, connector);
        self.changed.notify_all();
    }

    /// Blocks until `done` holds or `timeout` passes; returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&OffsetTracker) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut t = self.lock();
        loop {
            if done(&t) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            t = match self.changed.wait_timeout(t, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId(3);
    const HEC: ConnectorIndex = ConnectorIndex(0);
    const DD: ConnectorIndex = ConnectorIndex(1);

    fn set(cs: &[ConnectorIndex]) -> TargetSet {
        let mut s = TargetSet::default();
        cs.iter().for_each(|c| s.insert(*c));
        s
    }

    #[test]
    fn design_doc_worked_example() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        t.register(P, 10, set(&[HEC, DD])).unwrap();
        t.register(P, 11, set(&[DD])).unwrap();
        t.register(P, 12, set(&[])).unwrap();
        t.complete(P, 11, DD);
        assert_eq!(t.watermark(P), None, "10 is still pending");
        t.complete(P, 10, HEC);
        assert_eq!(t.watermark(P), None, "10 still pending at dd");
        t.complete(P, 10, DD);
        assert_eq!(t.watermark(P), Some(13));
        assert_eq!(t.commit_points(), [(P, 13)]);
        assert_eq!(t.total_unfinished(), 0);
    }

    #[test]
    fn a_failed_offset_is_never_skipped() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        for o in 0..100 {
            t.register(P, o, set(&[HEC])).unwrap();
        }
        for o in 1..100 {
            t.complete(P, o, HEC);
        }
        assert_eq!(t.watermark(P), None);
        assert_eq!(t.unfinished(P), 1);
        t.complete(P, 0, HEC);
        assert_eq!(t.watermark(P), Some(100));
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        t.register(P, 5, set(&[HEC])).unwrap();
        t.register(P, 9, set(&[HEC])).unwrap();
        t.complete(P, 9, HEC);
        t.complete(P, 5, HEC);
        assert_eq!(t.watermark(P), Some(10));
    }

    #[test]
    fn unrouted_offsets_finish_on_arrival_but_wait_their_turn() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        t.register(P, 0, set(&[])).unwrap();
        assert_eq!(t.watermark(P), Some(1));
        t.register(P, 1, set(&[HEC])).unwrap();
        t.register(P, 2, set(&[])).unwrap();
        assert_eq!(t.watermark(P), Some(1));
        t.complete(P, 1, HEC);
        assert_eq!(t.watermark(P), Some(3));
    }

    #[test]
    fn commit_points_only_report_movement() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        t.register(P, 0, set(&[HEC])).unwrap();
        t.complete(P, 0, HEC);
        assert_eq!(t.commit_points(), [(P, 1)]);
        t.committed(P, 1);
        assert!(t.commit_points().is_empty());
    }

    #[test]
    fn revoke_abandons_unfinished_and_ignores_late_acks() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        t.register(P, 0, set(&[HEC])).unwrap();
        t.register(P, 1, set(&[HEC])).unwrap();
        t.complete(P, 0, HEC);
        assert_eq!(t.revoke(P), Some(1));
        assert_eq!(t.total_unfinished(), 0);
        t.complete(P, 1, HEC);
        assert_eq!(t.watermark(P), None);
        assert_eq!(
            t.register(P, 2, set(&[HEC])),
            Err(RegisterError::NotAssigned)
        );
    }

    #[test]
    fn bytes_are_held_until_the_last_connector_finishes_or_the_partition_is_revoked() {
        let mut t = OffsetTracker::default();
        let q = PartitionId(4);
        t.assign(P);
        t.assign(q);
        t.register_sized(P, 0, set(&[HEC, DD]), 1000).unwrap();
        t.register_sized(P, 1, set(&[]), 500).unwrap();
        t.register_sized(P, 2, set(&[HEC]), 300).unwrap();
        t.register_sized(q, 0, set(&[HEC]), 70).unwrap();
        assert_eq!(
            t.unfinished_bytes(),
            1370,
            "an unrouted record holds nothing"
        );
        t.complete(P, 0, HEC);
        assert_eq!(t.unfinished_bytes(), 1370, "still owed to dd");
        t.complete(P, 0, DD);
        t.complete(P, 0, DD);
        assert_eq!(t.unfinished_bytes(), 370);
        assert!(t.owns(P));
        t.revoke(P);
        assert!(!t.owns(P));
        assert_eq!(t.unfinished_bytes(), 70);
        t.complete(P, 2, HEC);
        assert_eq!(
            t.unfinished_bytes(),
            70,
            "a late ack of a revoked partition"
        );
    }

    #[test]
    fn retain_owned_drops_only_revoked_partitions_in_order() {
        use crate::event::tests::event;
        let acker = Acker::new();
        let mine = event(r#"{"event":{"timestamp":1}}"#);
        let p = mine.origin().partition;
        let mut theirs_origin = mine.origin().clone();
        theirs_origin.partition = PartitionId(p.0 + 1);
        let theirs = Event::parse(mine.raw().clone(), theirs_origin, 1 << 20).unwrap();
        acker.lock().assign(p);
        acker.lock().assign(PartitionId(p.0 + 1));
        let revoked = acker.revocations();
        acker.lock().revoke(PartitionId(p.0 + 1));
        assert!(revoked.has_changed().unwrap(), "waiters are told");
        let events = vec![mine.clone(), theirs.clone(), mine.clone(), theirs];
        let (kept, cancelled) = acker.retain_owned(events, |e| e);
        assert_eq!(cancelled, 2);
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|e| e.origin().partition == p));
    }

    #[test]
    fn duplicate_acks_and_out_of_order_registration() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        t.register(P, 0, set(&[HEC, DD])).unwrap();
        t.complete(P, 0, HEC);
        t.complete(P, 0, HEC);
        assert_eq!(t.unfinished(P), 1);
        assert_eq!(
            t.register(P, 0, set(&[HEC])),
            Err(RegisterError::NotAscending { offset: 0, last: 0 })
        );
    }

    #[test]
    fn an_array_record_finishes_when_every_member_is_finished_everywhere() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        // Member 0 to hec and dd, member 1 nowhere (filtered out), member 2 to dd.
        let members = vec![set(&[HEC, DD]), set(&[]), set(&[DD])];
        t.register_members(P, 0, members, 900).unwrap();
        t.register(P, 1, set(&[HEC])).unwrap();
        t.complete(P, 1, HEC);
        t.complete_member(P, 0, Some(0), HEC);
        t.complete_member(P, 0, Some(0), DD);
        t.complete_member(P, 0, Some(0), DD);
        assert_eq!(t.watermark(P), None, "member 2 still owed to dd");
        assert_eq!(t.unfinished_bytes(), 900, "the record's bytes count once");
        t.complete(P, 0, DD);
        t.complete_member(P, 0, Some(7), DD);
        assert_eq!(
            t.watermark(P),
            None,
            "no such member, nor a whole-record ack"
        );
        t.complete_member(P, 0, Some(2), DD);
        assert_eq!(t.watermark(P), Some(2));
        assert_eq!((t.total_unfinished(), t.unfinished_bytes()), (0, 0));
    }

    #[test]
    fn an_array_record_with_nothing_owed_finishes_on_arrival_in_turn() {
        let mut t = OffsetTracker::default();
        t.assign(P);
        t.register_members(P, 0, vec![], 10).unwrap();
        assert_eq!(t.watermark(P), Some(1), "an empty array");
        t.register(P, 1, set(&[HEC])).unwrap();
        t.register_members(P, 2, vec![set(&[]), set(&[])], 10)
            .unwrap();
        assert_eq!(t.watermark(P), Some(1));
        assert_eq!(t.unfinished_bytes(), 0);
        t.complete(P, 1, HEC);
        assert_eq!(t.watermark(P), Some(3));
    }

    #[test]
    fn waiters_wake_on_completion() {
        use crate::event::tests::event;
        let acker = std::sync::Arc::new(Acker::new());
        let e = event(r#"{"event":{"timestamp":1}}"#);
        let p = e.origin().partition;
        acker.lock().assign(p);
        acker.lock().register(p, 0, set(&[HEC])).unwrap();
        let a = acker.clone();
        let waiter = std::thread::spawn(move || {
            a.wait_until(Duration::from_secs(30), |t| t.total_unfinished() == 0)
        });
        acker.complete(HEC, &[e]);
        assert!(waiter.join().unwrap());
        assert!(!acker.wait_until(Duration::from_millis(1), |_| false));
    }
}
