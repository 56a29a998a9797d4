//! The partitions an instance owns, and the ones it released but still speaks for: where
//! each stands (read, merged, checkpointed), its event-time clock, and its state as the
//! checkpoint carries it, so that it moves with the partition to its next owner.
//!
//! **Event time is monotonic within a partition**: a record's event time is the larger of its
//! Kafka timestamp and the event time of the record before it in the partition. A record
//! stamped late is as recent as its predecessor (so the later record of a partition always
//! wins a gauge `set`, as in replay); one stamped in the future moves its partition's clock
//! forward, and only its partition's.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::checkpoint::BlobRef;
use crate::checkpoint::PartitionKey;
use crate::checkpoint::manifest::{PartitionEntry, PartitionState};
use crate::codec::{Corrupt, Reader, Writer};

const STATE_VERSION: u8 = 1;

/// What a partition carries from owner to owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    /// The event time of the last record counted.
    pub clock: u64,
}

impl Carried {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(STATE_VERSION);
        w.u64(self.clock);
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Carried, Corrupt> {
        let mut r = Reader(bytes);
        if r.u8()? != STATE_VERSION {
            return Err(Corrupt);
        }
        let clock = r.u64()?;
        r.finish()?;
        Ok(Carried { clock })
    }
}

#[derive(Debug, Clone)]
pub struct Owned {
    /// The worker that evaluates (and reduces) the partition's records, always the same one,
    /// so that its reduction sees them in order.
    pub worker: usize,
    /// The partition's reduction state as the last durable checkpoint has it.
    pub reduce: Option<BlobRef>,
    /// Whether this identity wrote that state (its chunks are then this identity's to remove
    /// once a newer one replaces it); one restored from another owner is that owner's.
    pub reduce_ours: bool,
    pub epoch: u32,
    /// Next offset to read, as far as merged results go.
    pub next: i64,
    pub carried: Carried,
    /// The same, as the last durable checkpoint has them: where a rollback goes back to.
    pub committed_next: i64,
    pub committed: Carried,
}

/// The poll loop's view of one partition: its clock as of the last record read.
#[derive(Debug)]
struct Polled {
    topic: Arc<str>,
    partition: i32,
    clock: u64,
    worker: usize,
}

#[derive(Debug, Default)]
pub struct Partitions {
    pub owned: BTreeMap<PartitionKey, Owned>,
    /// Released partitions: where this identity's counts of them end. Every commit carries
    /// them until another identity has checkpointed the partition further.
    pub released: BTreeMap<PartitionKey, PartitionEntry>,
    polled: Vec<Polled>,
    last: usize,
}

impl Partitions {
    /// Starts following a partition from a checkpoint or a log start; it goes to the worker
    /// with the fewest partitions (of `workers`), which is returned.
    #[allow(clippy::too_many_arguments)]
    pub fn assign(
        &mut self,
        key: PartitionKey,
        topic: Arc<str>,
        epoch: u32,
        next: i64,
        carried: Carried,
        reduce: Option<BlobRef>,
        workers: usize,
    ) -> usize {
        self.released.remove(&key);
        self.polled
            .retain(|p| !(p.partition == key.partition && *p.topic == *key.topic));
        let mut load = vec![0usize; workers.max(1)];
        for o in self.owned.values() {
            if let Some(l) = load.get_mut(o.worker) {
                *l += 1;
            }
        }
        let worker = (0..load.len()).min_by_key(|w| load[*w]).unwrap_or(0);
        self.polled.push(Polled {
            topic,
            partition: key.partition,
            clock: carried.clock,
            worker,
        });
        self.owned.insert(
            key,
            Owned {
                worker,
                reduce,
                reduce_ours: false,
                epoch,
                next,
                carried,
                committed_next: next,
                committed: carried,
            },
        );
        worker
    }

    /// Stops following a partition; it is released where the last checkpoint left it.
    pub fn revoke(&mut self, key: &PartitionKey) {
        self.polled
            .retain(|p| !(p.partition == key.partition && *p.topic == *key.topic));
        self.last = 0;
        if let Some(o) = self.owned.remove(key) {
            self.released.insert(
                key.clone(),
                PartitionEntry {
                    key: key.clone(),
                    epoch: o.epoch,
                    next: o.committed_next,
                    owned: false,
                    state: PartitionState::Inline(o.committed.encode()),
                    reduce: o.reduce,
                },
            );
        }
    }

    /// The event time of the next record read from a partition (see the module docs), and the
    /// worker it goes to. Called once per record, in partition order, by the poll loop.
    #[inline]
    pub fn event_time(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp_ms: Option<i64>,
    ) -> (u64, usize) {
        let hit = self
            .polled
            .get(self.last)
            .is_some_and(|p| p.partition == partition && *p.topic == *topic);
        if !hit {
            match self
                .polled
                .iter()
                .position(|p| p.partition == partition && *p.topic == *topic)
            {
                Some(i) => self.last = i,
                None => {
                    // Not assigned through a rebalance callback (cannot happen with a group
                    // consumer); follow it from here.
                    self.polled.push(Polled {
                        topic: topic.into(),
                        partition,
                        clock: 0,
                        worker: 0,
                    });
                    self.last = self.polled.len() - 1;
                }
            }
        }
        let p = &mut self.polled[self.last];
        p.clock = p.clock.max(timestamp_ms.map_or(0, |t| t.max(0) as u64));
        (p.clock, p.worker)
    }

    /// A batch's results were merged: the partition is counted up to `next`.
    pub fn merged(&mut self, key: &PartitionKey, next: i64, clock: u64) {
        if let Some(o) = self.owned.get_mut(key) {
            o.next = o.next.max(next);
            o.carried.clock = o.carried.clock.max(clock);
        }
    }

    /// The entries a checkpoint taken now records: every owned partition where its merged
    /// results stand, and the released ones.
    pub fn entries(&self) -> Vec<PartitionEntry> {
        self.owned
            .iter()
            .map(|(k, o)| PartitionEntry {
                key: k.clone(),
                epoch: o.epoch,
                next: o.next,
                owned: true,
                state: PartitionState::Inline(o.carried.encode()),
                reduce: o.reduce.clone(),
            })
            .chain(self.released.values().cloned())
            .collect()
    }

    /// A checkpoint with these entries is durable.
    pub fn committed(&mut self, entries: &[PartitionEntry]) {
        for e in entries.iter().filter(|e| e.owned) {
            if let Some(o) = self.owned.get_mut(&e.key) {
                o.committed_next = e.next;
                if o.reduce != e.reduce {
                    o.reduce = e.reduce.clone();
                    o.reduce_ours = true;
                }
                if let PartitionState::Inline(b) = &e.state {
                    o.committed = Carried::decode(b).unwrap_or(o.committed);
                }
            }
        }
    }

    /// Back to the last checkpoint: where each owned partition is read again from.
    pub fn roll_back(&mut self) -> Vec<(PartitionKey, i64)> {
        for o in self.owned.values_mut() {
            o.next = o.committed_next;
            o.carried = o.committed;
        }
        for p in &mut self.polled {
            if let Some(o) = self.owned.get(&PartitionKey {
                topic: p.topic.to_string(),
                partition: p.partition,
            }) {
                p.clock = o.committed.clock;
            }
        }
        self.owned
            .iter()
            .map(|(k, o)| (k.clone(), o.committed_next))
            .collect()
    }

    /// The latest event time merged, over owned partitions: the clock `expire_after` runs on.
    pub fn clock(&self) -> u64 {
        self.owned
            .values()
            .map(|o| o.carried.clock)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        PartitionKey {
            topic: "logs".into(),
            partition: p,
        }
    }

    #[test]
    fn event_time_is_monotonic_per_partition() {
        let mut ps = Partitions::default();
        let c = Carried { clock: 100 };
        assert_eq!(ps.assign(key(0), "logs".into(), 0, 0, c, None, 2), 0);
        assert_eq!(
            ps.assign(key(1), "logs".into(), 0, 0, Carried::default(), None, 2),
            1
        );
        let mut t = |p, ts| ps.event_time("logs", p, ts).0;
        assert_eq!(t(0, Some(50)), 100, "no older than the checkpoint");
        assert_eq!(t(0, Some(500)), 500);
        assert_eq!(t(1, Some(7)), 7, "partitions have their own clocks");
        assert_eq!(t(0, None), 500);
        assert_eq!(t(0, Some(-1)), 500);
        assert_eq!(
            ps.event_time("logs", 1, None).1,
            1,
            "the partition's worker"
        );
    }

    #[test]
    fn checkpoint_rollback_and_release() {
        let mut ps = Partitions::default();
        ps.assign(key(0), "logs".into(), 2, 10, Carried::default(), None, 1);
        ps.event_time("logs", 0, Some(9));
        ps.merged(&key(0), 20, 9);
        let entries = ps.entries();
        assert_eq!((entries[0].epoch, entries[0].next), (2, 20));
        ps.committed(&entries);
        ps.merged(&key(0), 30, 12);
        assert_eq!(ps.roll_back(), vec![(key(0), 20)]);
        assert_eq!(
            ps.event_time("logs", 0, Some(1)).0,
            9,
            "the clock rolls back too"
        );
        ps.revoke(&key(0));
        let e = &ps.entries()[0];
        assert_eq!((e.owned, e.next), (false, 20));
        assert_eq!(
            e.state,
            PartitionState::Inline(Carried { clock: 9 }.encode())
        );
        assert!(Carried::decode(&[1, 2]).is_err());
    }
}
