//! The commit and intent records: small, self-describing, and decoded totally (a record that is
//! not one is an error, never a panic).

use super::PartitionKey;
use crate::codec::{Corrupt, Reader, Writer};

const COMMIT_MAGIC: &[u8; 4] = b"LMC2";
const INTENT_MAGIC: &[u8; 4] = b"LMI2";
const VERSION: u8 = 1;

/// Sequence numbers at or beyond this are refused as corrupt: a writer adds one to the
/// largest it reads, which must not wrap (a checkpoint a second for 292 billion years).
pub const MAX_SEQ: u64 = 1 << 62;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("not a logmill checkpoint record")]
    BadMagic,
    #[error("checkpoint record version {0} is not supported")]
    Version(u8),
    #[error("checkpoint record is truncated or corrupt")]
    Corrupt,
}

impl From<Corrupt> for ManifestError {
    fn from(_: Corrupt) -> ManifestError {
        ManifestError::Corrupt
    }
}

/// One chunk record of a blob: where it is and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRef {
    pub offset: i64,
    pub len: u32,
    pub crc: u32,
}

/// A blob in the state topic: its chunks, in order, in one partition of the state topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The checkpoint that wrote it; with `name`, it makes the chunks' keys.
    pub seq: u64,
    pub name: String,
    pub partition: i32,
    pub chunks: Vec<ChunkRef>,
    /// Uncompressed length.
    pub raw_len: u64,
}

impl BlobRef {
    /// Bytes it takes in the state topic.
    pub fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }
}

/// What a partition's state is in a commit: small states ride in the commit record itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PartitionState {
    #[default]
    None,
    Inline(Vec<u8>),
    Blob(BlobRef),
}

/// Where a partition resumes, as an identity recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEntry {
    pub key: PartitionKey,
    /// Raised when an owner found the recorded offset beyond the end of the partition's log
    /// (the topic was recreated or truncated) and started over from the log's start: an entry
    /// of a higher epoch wins over every entry of a lower one, whatever its offset.
    pub epoch: u32,
    /// The next offset to read: every record before it is counted in this identity's values.
    pub next: i64,
    /// Owned when the checkpoint was taken; otherwise released, and kept in this identity's
    /// commits until another identity has checkpointed the partition further.
    pub owned: bool,
    pub state: PartitionState,
    /// The partition's reduction state (open windows, its template miner), when it has one.
    pub reduce: Option<BlobRef>,
}

impl PartitionEntry {
    /// Which of two entries for a partition is where it resumes.
    pub fn rank(&self) -> (u32, i64) {
        (self.epoch, self.next)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub group: String,
    pub instance: String,
    /// No `instance_id`: a new identity per start, whose records anyone may collect once
    /// every partition it names has moved on.
    pub anonymous: bool,
    /// Increases with every checkpoint an identity attempts, failed ones included.
    pub seq: u64,
    pub at_ms: u64,
    /// The input topics (or the regex) the identity consumed, for reports.
    pub subscription: String,
    pub rules_hash: u64,
    /// The full snapshot of the exported aggregates, and the incremental ones since, in order.
    pub base: Option<BlobRef>,
    pub deltas: Vec<BlobRef>,
    pub partitions: Vec<PartitionEntry>,
}

/// Written before a checkpoint's chunks: the keys they will have, so that chunks whose commit
/// never came can be removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub seq: u64,
    pub keys: Vec<String>,
}

fn write_blob(w: &mut Writer, b: &BlobRef) {
    w.u64(b.seq);
    w.str(&b.name);
    w.i32(b.partition);
    w.u64(b.raw_len);
    w.u32(b.chunks.len() as u32);
    for c in &b.chunks {
        w.i64(c.offset);
        w.u32(c.len);
        w.u32(c.crc);
    }
}

fn read_blob(r: &mut Reader<'_>) -> Result<BlobRef, Corrupt> {
    let seq = r.u64()?;
    let name = r.str()?.to_string();
    let partition = r.i32()?;
    let raw_len = r.u64()?;
    let n = r.count(16)?;
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        chunks.push(ChunkRef {
            offset: r.i64()?,
            len: r.u32()?,
            crc: r.u32()?,
        });
    }
    Ok(BlobRef {
        seq,
        name,
        partition,
        chunks,
        raw_len,
    })
}

fn header(r: &mut Reader<'_>, magic: &[u8; 4]) -> Result<(), ManifestError> {
    if r.take(4).map_err(|_| ManifestError::BadMagic)? != magic {
        return Err(ManifestError::BadMagic);
    }
    match r.u8()? {
        VERSION => Ok(()),
        v => Err(ManifestError::Version(v)),
    }
}

impl Commit {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(256 + 48 * self.partitions.len()));
        w.0.extend_from_slice(COMMIT_MAGIC);
        w.u8(VERSION);
        w.str(&self.group);
        w.str(&self.instance);
        w.bool(self.anonymous);
        w.u64(self.seq);
        w.u64(self.at_ms);
        w.str(&self.subscription);
        w.u64(self.rules_hash);
        w.bool(self.base.is_some());
        if let Some(b) = &self.base {
            write_blob(&mut w, b);
        }
        w.u32(self.deltas.len() as u32);
        for d in &self.deltas {
            write_blob(&mut w, d);
        }
        w.u32(self.partitions.len() as u32);
        for p in &self.partitions {
            w.str(&p.key.topic);
            w.i32(p.key.partition);
            w.u32(p.epoch);
            w.i64(p.next);
            w.bool(p.owned);
            match &p.state {
                PartitionState::None => w.u8(0),
                PartitionState::Inline(b) => {
                    w.u8(1);
                    w.bytes(b);
                }
                PartitionState::Blob(b) => {
                    w.u8(2);
                    write_blob(&mut w, b);
                }
            }
            w.bool(p.reduce.is_some());
            if let Some(b) = &p.reduce {
                write_blob(&mut w, b);
            }
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Commit, ManifestError> {
        let mut r = Reader(bytes);
        header(&mut r, COMMIT_MAGIC)?;
        let group = r.str()?.to_string();
        let instance = r.str()?.to_string();
        let anonymous = r.bool()?;
        let seq = r.u64()?;
        if seq >= MAX_SEQ {
            return Err(ManifestError::Corrupt);
        }
        let at_ms = r.u64()?;
        let subscription = r.str()?.to_string();
        let rules_hash = r.u64()?;
        let base = if r.bool()? {
            Some(read_blob(&mut r)?)
        } else {
            None
        };
        let n = r.count(24)?;
        let mut deltas = Vec::with_capacity(n);
        for _ in 0..n {
            deltas.push(read_blob(&mut r)?);
        }
        let n = r.count(22)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let key = PartitionKey {
                topic: r.str()?.to_string(),
                partition: r.i32()?,
            };
            let epoch = r.u32()?;
            let next = r.i64()?;
            let owned = r.bool()?;
            let state = match r.u8()? {
                0 => PartitionState::None,
                1 => PartitionState::Inline(r.bytes()?.to_vec()),
                2 => PartitionState::Blob(read_blob(&mut r)?),
                _ => return Err(ManifestError::Corrupt),
            };
            let reduce = if r.bool()? {
                Some(read_blob(&mut r)?)
            } else {
                None
            };
            partitions.push(PartitionEntry {
                key,
                epoch,
                next,
                owned,
                state,
                reduce,
            });
        }
        r.finish()?;
        Ok(Commit {
            group,
            instance,
            anonymous,
            seq,
            at_ms,
            subscription,
            rules_hash,
            base,
            deltas,
            partitions,
        })
    }

    /// Every blob the commit names.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobRef> {
        self.base
            .iter()
            .chain(&self.deltas)
            .chain(self.partitions.iter().filter_map(|p| match &p.state {
                PartitionState::Blob(b) => Some(b),
                _ => None,
            }))
    }
}

impl Intent {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(INTENT_MAGIC);
        w.u8(VERSION);
        w.u64(self.seq);
        w.u32(self.keys.len() as u32);
        for k in &self.keys {
            w.str(k);
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Intent, ManifestError> {
        let mut r = Reader(bytes);
        header(&mut r, INTENT_MAGIC)?;
        let seq = r.u64()?;
        if seq >= MAX_SEQ {
            return Err(ManifestError::Corrupt);
        }
        let n = r.count(4)?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(r.str()?.to_string());
        }
        r.finish()?;
        Ok(Intent { seq, keys })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn blob(seq: u64, name: &str) -> BlobRef {
        BlobRef {
            seq,
            name: name.into(),
            partition: 1,
            chunks: vec![
                ChunkRef {
                    offset: 10,
                    len: 100,
                    crc: 7,
                },
                ChunkRef {
                    offset: 12,
                    len: 5,
                    crc: 9,
                },
            ],
            raw_len: 400,
        }
    }

    pub fn commit(instance: &str, seq: u64, partitions: &[(i32, u32, i64, bool)]) -> Commit {
        Commit {
            group: "g".into(),
            instance: instance.into(),
            anonymous: false,
            seq,
            at_ms: 5,
            subscription: "logs".into(),
            rules_hash: 42,
            base: Some(blob(seq, "base")),
            deltas: vec![blob(seq + 1, "delta")],
            partitions: partitions
                .iter()
                .map(|&(p, epoch, next, owned)| PartitionEntry {
                    key: PartitionKey {
                        topic: "logs".into(),
                        partition: p,
                    },
                    epoch,
                    next,
                    owned,
                    state: if p % 2 == 0 {
                        PartitionState::Inline(vec![1, 2, 3])
                    } else {
                        PartitionState::Blob(blob(seq, "p"))
                    },
                    reduce: (p % 3 == 0).then(|| blob(seq, "r")),
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips_and_every_truncation_is_an_error() {
        let c = commit("pod-0", 3, &[(0, 0, 10, true), (1, 2, 20, false)]);
        let bytes = c.encode();
        assert_eq!(Commit::decode(&bytes).unwrap(), c);
        for cut in 0..bytes.len() {
            assert!(Commit::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let i = Intent {
            seq: 4,
            keys: vec!["a".into(), "b".into()],
        };
        assert_eq!(Intent::decode(&i.encode()).unwrap(), i);
        assert_eq!(Commit::decode(&i.encode()), Err(ManifestError::BadMagic));
        let mut other = bytes.clone();
        other[4] = 9;
        assert_eq!(Commit::decode(&other), Err(ManifestError::Version(9)));
        // Issue 10: a sequence number from a record must not make `seq + 1` wrap.
        let mut last = c.clone();
        last.seq = u64::MAX;
        assert_eq!(Commit::decode(&last.encode()), Err(ManifestError::Corrupt));
    }
}
