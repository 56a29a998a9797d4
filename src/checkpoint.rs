//! Checkpoints: what an instance has exported, and where each partition it owns resumes.
//!
//! One record in the state topic is one atomic checkpoint, keyed by the instance's identity:
//! the encoded `Aggregates` this identity exports, and the next offset of every partition it
//! owned when the checkpoint was taken. The state topic is compacted, so the latest checkpoint
//! of each identity is all that is kept. See ARCHITECTURE.md, "Delivery".

use std::collections::HashMap;

/// Where a partition resumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub instance: String,
    /// Increases with every checkpoint of one identity.
    pub seq: u64,
    pub at_ms: u64,
    /// Next offset to read, per partition owned at the time.
    pub offsets: Vec<(PartitionKey, i64)>,
    /// `derive::snapshot::encode` of the exported aggregates.
    pub metrics: Vec<u8>,
}

const MAGIC: &[u8; 4] = b"LMCP";
const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("not a logmill checkpoint")]
    BadMagic,
    #[error("checkpoint version {0} is not supported")]
    Version(u8),
    #[error("checkpoint is truncated or corrupt")]
    Corrupt,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.metrics.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_bytes(&mut out, self.instance.as_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        for (k, off) in &self.offsets {
            put_bytes(&mut out, k.topic.as_bytes());
            out.extend_from_slice(&k.partition.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        put_bytes(&mut out, &self.metrics);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let mut r = b;
        if take(&mut r, 4)? != MAGIC {
            return Err(CheckpointError::BadMagic);
        }
        let v = take(&mut r, 1)?[0];
        if v != VERSION {
            return Err(CheckpointError::Version(v));
        }
        let instance =
            String::from_utf8(get_bytes(&mut r)?.to_vec()).map_err(|_| CheckpointError::Corrupt)?;
        let seq = u64::from_le_bytes(take(&mut r, 8)?.try_into().expect("8 bytes"));
        let at_ms = u64::from_le_bytes(take(&mut r, 8)?.try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(take(&mut r, 4)?.try_into().expect("4 bytes"));
        let mut offsets = Vec::new();
        for _ in 0..n {
            let topic = String::from_utf8(get_bytes(&mut r)?.to_vec())
                .map_err(|_| CheckpointError::Corrupt)?;
            let partition = i32::from_le_bytes(take(&mut r, 4)?.try_into().expect("4 bytes"));
            let off = i64::from_le_bytes(take(&mut r, 8)?.try_into().expect("8 bytes"));
            offsets.push((PartitionKey { topic, partition }, off));
        }
        let metrics = get_bytes(&mut r)?.to_vec();
        if !r.is_empty() {
            return Err(CheckpointError::Corrupt);
        }
        Ok(Checkpoint {
            instance,
            seq,
            at_ms,
            offsets,
            metrics,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], CheckpointError> {
    if r.len() < n {
        return Err(CheckpointError::Corrupt);
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Ok(a)
}

fn get_bytes<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], CheckpointError> {
    let n = u32::from_le_bytes(take(r, 4)?.try_into().expect("4 bytes")) as usize;
    take(r, n)
}

/// The latest checkpoint of every identity, as read from the state topic.
#[derive(Debug, Default)]
pub struct Latest {
    by_instance: HashMap<String, Checkpoint>,
}

impl Latest {
    /// Keeps `cp` if it is newer than what is known for its identity.
    pub fn observe(&mut self, cp: Checkpoint) {
        match self.by_instance.get(&cp.instance) {
            Some(known) if known.seq >= cp.seq => {}
            _ => {
                self.by_instance.insert(cp.instance.clone(), cp);
            }
        }
    }

    pub fn of(&self, instance: &str) -> Option<&Checkpoint> {
        self.by_instance.get(instance)
    }

    /// Where a partition resumes: the furthest offset any checkpoint records for it. Offsets
    /// only move forward, and only an owner checkpoints a partition, so the furthest is the
    /// freshest.
    pub fn resume_offset(&self, key: &PartitionKey) -> Option<i64> {
        self.by_instance
            .values()
            .flat_map(|cp| cp.offsets.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, off)| *off)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(instance: &str, seq: u64, offsets: &[(i32, i64)]) -> Checkpoint {
        Checkpoint {
            instance: instance.into(),
            seq,
            at_ms: 7,
            offsets: offsets
                .iter()
                .map(|(p, o)| {
                    (
                        PartitionKey {
                            topic: "logs".into(),
                            partition: *p,
                        },
                        *o,
                    )
                })
                .collect(),
            metrics: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let c = cp("pod-0", 3, &[(0, 10), (1, 20)]);
        let bytes = c.encode();
        assert_eq!(Checkpoint::decode(&bytes).unwrap(), c);
        for cut in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn resume_from_the_furthest_checkpoint() {
        let mut l = Latest::default();
        l.observe(cp("a", 2, &[(0, 100), (1, 50)]));
        l.observe(cp("a", 1, &[(0, 10)]));
        l.observe(cp("b", 5, &[(1, 80)]));
        let key = |p| PartitionKey {
            topic: "logs".into(),
            partition: p,
        };
        assert_eq!(
            l.resume_offset(&key(0)),
            Some(100),
            "an older checkpoint of `a` is ignored"
        );
        assert_eq!(l.resume_offset(&key(1)), Some(80));
        assert_eq!(l.resume_offset(&key(2)), None);
        assert_eq!(l.of("a").unwrap().seq, 2);
    }
}
