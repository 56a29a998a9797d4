//! What the state topic says about one consumer group: the latest commit and intent of each
//! of its identities, read in log order. Records of other groups and records that are not
//! logmill's are counted and skipped; nothing here keeps a snapshot in memory, only the small
//! commit records, so reading the state topic costs memory in identities, not in series.

use std::collections::{BTreeMap, HashMap};

use super::PartitionKey;
use super::keys::{self, Kind};
use super::manifest::{Commit, Intent, ManifestError, PartitionEntry};

/// What one record of the state topic was.
#[derive(Debug, PartialEq, Eq)]
pub enum Observed {
    /// A commit or intent of this group, now known (or its tombstone, now forgotten).
    Recorded,
    /// A chunk of this group: read by offset when needed, not here.
    Chunk,
    /// A record of another group.
    Foreign,
    /// A record that is not logmill's, or one it cannot read: skipped.
    Unreadable(String),
}

#[derive(Debug, Default)]
pub struct Directory {
    group: String,
    commits: HashMap<String, Commit>,
    intents: HashMap<String, Intent>,
    /// Records of other groups, by group: a shared state topic is reported, not used.
    pub foreign: BTreeMap<String, u64>,
    pub unreadable: u64,
}

impl Directory {
    pub fn new(group: &str) -> Directory {
        Directory {
            group: group.to_string(),
            ..Directory::default()
        }
    }

    /// Takes one record, in log order: a later record of a key replaces an earlier one, as
    /// compaction does.
    pub fn observe(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Observed {
        let Some(parsed) = key.and_then(keys::parse) else {
            self.unreadable += 1;
            return Observed::Unreadable("not a logmill checkpoint key".into());
        };
        if parsed.group != self.group {
            *self.foreign.entry(parsed.group).or_insert(0) += 1;
            return Observed::Foreign;
        }
        let decoded = match (parsed.kind, payload) {
            (Kind::Chunk, _) => return Observed::Chunk,
            (Kind::Commit, None) => {
                self.commits.remove(&parsed.instance);
                return Observed::Recorded;
            }
            (Kind::Intent, None) => {
                self.intents.remove(&parsed.instance);
                return Observed::Recorded;
            }
            (Kind::Commit, Some(p)) => Commit::decode(p).and_then(|c| {
                if (c.group.as_str(), c.instance.as_str())
                    == (parsed.group.as_str(), parsed.instance.as_str())
                {
                    self.commits.insert(parsed.instance, c);
                    Ok(())
                } else {
                    Err(ManifestError::Corrupt)
                }
            }),
            (Kind::Intent, Some(p)) => Intent::decode(p).map(|i| {
                self.intents.insert(parsed.instance, i);
            }),
        };
        match decoded {
            Ok(()) => Observed::Recorded,
            Err(e) => {
                self.unreadable += 1;
                Observed::Unreadable(e.to_string())
            }
        }
    }

    /// Records a commit this process wrote and saw acknowledged.
    pub fn committed(&mut self, c: Commit) {
        self.commits.insert(c.instance.clone(), c);
    }

    pub fn commit_of(&self, instance: &str) -> Option<&Commit> {
        self.commits.get(instance)
    }

    pub fn intent_of(&self, instance: &str) -> Option<&Intent> {
        self.intents.get(instance)
    }

    /// Where a partition resumes: the entry with the highest `(epoch, next)` among the
    /// identities' latest commits, leaving out `except` (an identity whose state could not be
    /// restored). Offsets only move forward within an epoch and only an owner checkpoints a
    /// partition, so the highest is the freshest.
    pub fn resume(
        &self,
        key: &PartitionKey,
        except: Option<&str>,
    ) -> Option<(&str, &PartitionEntry)> {
        self.commits
            .values()
            .filter(|c| Some(c.instance.as_str()) != except)
            .flat_map(|c| {
                c.partitions
                    .iter()
                    .filter(|p| &p.key == key)
                    .map(move |p| (c.instance.as_str(), p))
            })
            .max_by_key(|(instance, p)| (p.rank(), *instance))
    }

    /// Whether another identity has checkpointed this partition past `entry`: then a released
    /// entry is no longer needed by anyone.
    pub fn superseded(&self, instance: &str, entry: &PartitionEntry) -> bool {
        self.commits.values().any(|c| {
            c.instance != instance
                && c.partitions
                    .iter()
                    .any(|p| p.key == entry.key && p.owned && p.rank() >= entry.rank())
        })
    }

    /// Anonymous identities other than `me` whose every partition has moved on: nobody can
    /// resume them (a new start gets a new identity), so their records are garbage.
    pub fn abandoned(&self, me: &str) -> Vec<&Commit> {
        let mut out: Vec<&Commit> = self
            .commits
            .values()
            .filter(|c| c.anonymous && c.instance != me)
            .filter(|c| c.partitions.iter().all(|p| self.superseded(&c.instance, p)))
            .collect();
        out.sort_by(|a, b| a.instance.cmp(&b.instance));
        out
    }

    pub fn identities(&self) -> usize {
        self.commits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::manifest::tests::commit;
    use super::*;

    fn key(p: i32) -> PartitionKey {
        PartitionKey {
            topic: "logs".into(),
            partition: p,
        }
    }

    fn put(d: &mut Directory, c: &Commit) -> Observed {
        d.observe(
            Some(keys::commit(&c.group, &c.instance).as_bytes()),
            Some(&c.encode()),
        )
    }

    #[test]
    fn resume_from_the_highest_epoch_then_offset() {
        let mut d = Directory::new("g");
        put(
            &mut d,
            &commit("a", 2, &[(0, 0, 100, true), (1, 0, 50, false)]),
        );
        put(
            &mut d,
            &commit("b", 5, &[(1, 0, 80, true), (2, 1, 3, true)]),
        );
        put(&mut d, &commit("c", 1, &[(2, 0, 900, false)]));
        assert_eq!(d.resume(&key(0), None).unwrap().1.next, 100);
        assert_eq!(d.resume(&key(1), None).unwrap().0, "b");
        let (who, e) = d.resume(&key(2), None).unwrap();
        assert_eq!(
            (who, e.next),
            ("b", 3),
            "a higher epoch wins over a larger offset"
        );
        assert_eq!(d.resume(&key(0), Some("a")), None);
        assert!(d.superseded("a", &d.commit_of("a").unwrap().partitions[1].clone()));
        assert!(!d.superseded("a", &d.commit_of("a").unwrap().partitions[0].clone()));
    }

    /// Issue 10, item 7: two groups on one state topic. A record of another group, even of an
    /// identity with the same instance id, is counted and never used.
    #[test]
    fn issue10_other_groups_are_ignored() {
        let mut d = Directory::new("g");
        let mut theirs = commit("a", 9, &[(0, 0, 1000, true)]);
        theirs.group = "canary".into();
        assert_eq!(put(&mut d, &theirs), Observed::Foreign);
        assert_eq!(d.foreign.get("canary"), Some(&1));
        assert!(d.commit_of("a").is_none());
        assert_eq!(d.resume(&key(0), None), None);
        // A record whose key and contents disagree is not trusted either.
        let wrong = commit("b", 1, &[]);
        let r = d.observe(
            Some(keys::commit("g", "a").as_bytes()),
            Some(&wrong.encode()),
        );
        assert!(matches!(r, Observed::Unreadable(_)), "{r:?}");
    }

    #[test]
    fn later_records_replace_earlier_ones_and_tombstones_forget() {
        let mut d = Directory::new("g");
        put(&mut d, &commit("a", 7, &[(0, 0, 100, true)]));
        put(&mut d, &commit("a", 3, &[(0, 0, 10, true)]));
        assert_eq!(
            d.commit_of("a").unwrap().seq,
            3,
            "log order, as compaction keeps"
        );
        d.observe(Some(keys::commit("g", "a").as_bytes()), None);
        assert!(d.commit_of("a").is_none());
        assert!(matches!(
            d.observe(Some(b"pod-0"), Some(b"LMCP\x01")),
            Observed::Unreadable(_)
        ));
        assert_eq!(d.unreadable, 1);
    }

    #[test]
    fn abandoned_anonymous_identities() {
        let mut d = Directory::new("g");
        let mut old = commit("anonymous-1", 4, &[(0, 0, 10, false)]);
        old.anonymous = true;
        put(&mut d, &old);
        assert!(
            d.abandoned("me").is_empty(),
            "nobody has moved its partition on"
        );
        put(&mut d, &commit("b", 1, &[(0, 0, 20, true)]));
        assert_eq!(d.abandoned("me").len(), 1);
        assert!(d.abandoned("anonymous-1").is_empty());
    }
}
