//! The miner's byte encoding, for checkpoints: deterministic (maps written sorted), and decoded
//! by a total function that checks every count, index and range before using it, so corrupt
//! or hostile input is an error, never a panic or a huge allocation.
//!
//! Layout (little-endian): magic, version, the config, the counters, then the templates slot by
//! slot, the least-recently-used order, the learned values and the shape cache. Word hashes
//! and the word index are recomputed from the texts.

use super::align::{SlotKind, text_flags};
use super::store::{Cached, NONE, Slot, Store, Template};
use super::token::{Kind, VAR_HASH};
use super::{Miner, MinerConfig, MinerStats};
use crate::reduce::hash::hash_bytes;

const MAGIC: &[u8; 4] = b"LMTP";
const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a template miner snapshot")]
    BadMagic,
    #[error("template miner snapshot version {0} is not supported")]
    Version(u8),
    #[error("template miner snapshot is truncated or corrupt")]
    Corrupt,
}

use SnapshotError::Corrupt;

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(Corrupt);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| Corrupt)?,
        ))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| Corrupt)?,
        ))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| Corrupt)?,
        ))
    }
    fn usize(&mut self) -> Result<usize, SnapshotError> {
        usize::try_from(self.u64()?).map_err(|_| Corrupt)
    }
    /// A count of items of at least `min_size` bytes each: never more than the input holds.
    fn count(&mut self, min_size: usize) -> Result<usize, SnapshotError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.0.len() {
            return Err(Corrupt);
        }
        Ok(n)
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn kind_code(k: SlotKind) -> u8 {
    match k {
        SlotKind::Word => 0,
        SlotKind::Punct => 1,
        SlotKind::Var { optional: false } => 2,
        SlotKind::Var { optional: true } => 3,
    }
}

fn kind_of(code: u8) -> Result<SlotKind, SnapshotError> {
    Ok(match code {
        0 => SlotKind::Word,
        1 => SlotKind::Punct,
        2 => SlotKind::Var { optional: false },
        3 => SlotKind::Var { optional: true },
        _ => return Err(Corrupt),
    })
}

impl Miner {
    /// Appends the miner's whole state to `out`. Equal states give equal bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let c = &self.config;
        for v in [
            c.max_templates,
            c.max_tokens,
            c.max_word_bytes,
            c.max_candidates,
            c.max_cached_shapes,
            c.max_learned_values,
        ] {
            put_u64(out, v as u64);
        }
        let s = &self.stats;
        for v in [
            s.lines,
            s.created,
            s.generalised,
            s.evicted,
            s.truncated,
            s.searched,
        ] {
            put_u64(out, v);
        }
        let store = &self.store;
        put_u64(out, store.next_seq);
        put_u32(out, store.templates.len() as u32);
        for (t, g) in store.templates.iter().zip(&store.generations) {
            put_u32(out, *g);
            put_u64(out, t.id);
            put_u64(out, t.seq);
            put_u64(out, t.count);
            put_u16(out, t.next_var);
            put_u32(out, t.text.len() as u32);
            out.extend_from_slice(t.text.as_bytes());
            put_u32(out, t.slots.len() as u32);
            for s in &t.slots {
                out.push(kind_code(s.kind));
                out.push(u8::from(s.glued));
                put_u16(out, s.var);
                put_u32(out, s.text.0);
                put_u32(out, s.text.1);
                put_u16(out, s.pre);
                put_u16(out, s.suf);
            }
        }
        for s in store.lru_order() {
            put_u32(out, s);
        }
        let mut learned: Vec<u64> = store.learned.iter().copied().collect();
        learned.sort_unstable();
        put_u32(out, learned.len() as u32);
        for w in learned {
            put_u64(out, w);
        }
        let mut cache: Vec<(u64, Cached)> = store.cache.iter().map(|(k, v)| (*k, *v)).collect();
        cache.sort_unstable_by_key(|(k, _)| *k);
        put_u32(out, cache.len() as u32);
        for (k, c) in cache {
            put_u64(out, k);
            put_u32(out, c.slot);
            put_u32(out, c.generation);
        }
    }

    /// Restores a miner from [`Miner::encode`]'s bytes, with the config it was encoded with.
    pub fn decode(bytes: &[u8]) -> Result<Miner, SnapshotError> {
        let mut r = R(bytes);
        if r.take(4).map_err(|_| SnapshotError::BadMagic)? != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        let config = MinerConfig {
            max_templates: r.usize()?,
            max_tokens: r.usize()?,
            max_word_bytes: r.usize()?,
            max_candidates: r.usize()?,
            max_cached_shapes: r.usize()?,
            max_learned_values: r.usize()?,
        };
        if config != config.sanitized() {
            return Err(Corrupt);
        }
        let stats = MinerStats {
            lines: r.u64()?,
            created: r.u64()?,
            generalised: r.u64()?,
            evicted: r.u64()?,
            truncated: r.u64()?,
            searched: r.u64()?,
        };
        let mut store = Store::new();
        let mut seqs = std::collections::HashSet::new();
        store.next_seq = r.u64()?;
        let n = r.count(4 + 8 * 3 + 2 + 4 + 4)?;
        if n > config.max_templates {
            return Err(Corrupt);
        }
        for _ in 0..n {
            let generation = r.u32()?;
            let id = r.u64()?;
            let seq = r.u64()?;
            let count = r.u64()?;
            let next_var = r.u16()?;
            let text_len = r.count(1)?;
            let text = std::str::from_utf8(r.take(text_len)?)
                .map_err(|_| Corrupt)?
                .to_string();
            let n_slots = r.count(16)?;
            if n_slots > config.max_tokens || seq >= store.next_seq {
                return Err(Corrupt);
            }
            let mut slots = Vec::with_capacity(n_slots);
            for _ in 0..n_slots {
                let kind = kind_of(r.u8()?)?;
                let glued = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(Corrupt),
                };
                let var = r.u16()?;
                let range = (r.u32()?, r.u32()?);
                let (pre, suf) = (r.u16()?, r.u16()?);
                let t = text
                    .get(range.0 as usize..range.1 as usize)
                    .ok_or(Corrupt)?;
                let affixes_fit = t.len() >= pre as usize + suf as usize
                    && t.is_char_boundary(pre as usize)
                    && t.is_char_boundary(t.len() - suf as usize);
                let is_var = matches!(kind, SlotKind::Var { .. });
                if !affixes_fit || (!is_var && (pre, suf) != (0, 0)) {
                    return Err(Corrupt);
                }
                let (hash, flags) = match kind {
                    SlotKind::Var { .. } => {
                        if var >= next_var {
                            return Err(Corrupt);
                        }
                        (VAR_HASH, 0)
                    }
                    _ if t.is_empty() => return Err(Corrupt),
                    SlotKind::Word => (hash_bytes(t.as_bytes()), text_flags(Kind::Word, t)),
                    SlotKind::Punct => (hash_bytes(t.as_bytes()), text_flags(Kind::Punct, t)),
                };
                slots.push(Slot {
                    kind,
                    glued,
                    hash,
                    text: range,
                    var,
                    pre,
                    suf,
                    flags,
                });
            }
            if store.by_id.contains_key(&id) || !seqs.insert(seq) {
                return Err(Corrupt);
            }
            store.restore(
                Template {
                    id,
                    seq,
                    count,
                    slots,
                    text,
                    next_var,
                },
                generation,
            );
        }
        let mut order = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        for _ in 0..n {
            let s = r.u32()?;
            if s as usize >= n || std::mem::replace(&mut seen[s as usize], true) {
                return Err(Corrupt);
            }
            order.push(s);
        }
        store.finish_restore(&order);
        let learned = r.count(8)?;
        if learned > config.max_learned_values {
            return Err(Corrupt);
        }
        let mut last = None;
        for _ in 0..learned {
            let w = r.u64()?;
            if last.is_some_and(|l| l >= w) {
                return Err(Corrupt);
            }
            last = Some(w);
            store.learned.insert(w);
        }
        let cached = r.count(16)?;
        if cached > config.max_cached_shapes {
            return Err(Corrupt);
        }
        let mut last = None;
        for _ in 0..cached {
            let k = r.u64()?;
            let c = Cached {
                slot: r.u32()?,
                generation: r.u32()?,
            };
            if last.is_some_and(|l| l >= k) || c.slot as usize >= n || c.slot == NONE {
                return Err(Corrupt);
            }
            last = Some(k);
            store.cache.insert(k, c);
        }
        if !r.0.is_empty() {
            return Err(Corrupt);
        }
        let mut miner = Miner::new(config);
        miner.store = store;
        miner.stats = stats;
        Ok(miner)
    }
}
