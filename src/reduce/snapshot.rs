//! A byte encoding of a partition's reduction state, for the checkpoint: it moves with the
//! partition to its next owner, which goes on deciding exactly as this owner would have.
//! Deterministic (entries in deadline order) and total to decode.

use super::reducer::{BUDGET, Reducer};
use super::table::{Entry, Suppression, Table};
use super::templates::Miner;
use crate::codec::{Corrupt, Reader, Writer};

const MAGIC: &[u8; 4] = b"LMRD";
const VERSION: u8 = 2;

/// An entry as it was before its suppression was boxed: a window without a box writes the
/// zeros and empty fields it stands for, so the bytes did not change.
fn write_entry(w: &mut Writer, key: u64, e: &Entry) {
    let none = Suppression::default();
    let s = e.suppression.as_deref().unwrap_or(&none);
    w.u64(key);
    w.str(&e.rule);
    w.u64(e.start_ms);
    w.u64(e.deadline);
    w.u64(e.kept);
    w.u64(s.count);
    w.u64(s.first_ms);
    w.u64(s.last_ms);
    w.i64(s.first_offset);
    w.i64(s.last_offset);
    w.bool(e.template.is_some());
    w.u64(e.template.unwrap_or(0));
    w.str(&s.key_text);
    w.u32(s.samples.len() as u32);
    for x in &s.samples {
        w.str(x);
    }
    w.u32(s.variables.len() as u32);
    for (v, values) in &s.variables {
        w.u32(u32::from(*v));
        w.u32(values.len() as u32);
        for x in values {
            w.str(x);
        }
    }
}

fn read_entry(r: &mut Reader<'_>) -> Result<(u64, Entry), Corrupt> {
    let key = r.u64()?;
    let mut e = Entry {
        rule: r.str()?.into(),
        start_ms: r.u64()?,
        deadline: r.u64()?,
        kept: r.u64()?,
        template: None,
        suppression: None,
    };
    let mut s = Suppression {
        count: r.u64()?,
        first_ms: r.u64()?,
        last_ms: r.u64()?,
        first_offset: r.i64()?,
        last_offset: r.i64()?,
        ..Suppression::default()
    };
    let has_template = r.bool()?;
    let t = r.u64()?;
    e.template = has_template.then_some(t);
    s.key_text = r.str()?.into();
    for _ in 0..r.count(4)? {
        s.samples.push(r.str()?.into());
    }
    for _ in 0..r.count(8)? {
        let v = u16::try_from(r.u32()?).map_err(|_| Corrupt)?;
        let mut values = Vec::new();
        for _ in 0..r.count(4)? {
            values.push(r.str()?.into());
        }
        s.variables.push((v, values));
    }
    // Exactly the windows written without a box get none back: the bytes round-trip.
    if !s.is_empty() {
        e.suppression = Some(Box::new(s));
    }
    Ok((key, e))
}

impl Reducer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(MAGIC);
        w.u8(VERSION);
        w.u64(self.clock);
        let mut miner = Vec::new();
        self.miner.encode(&mut miner);
        w.bytes(&miner);
        // Without open budget seconds, the three tables older checkpoints have: the same bytes
        // as before budgets existed.
        let n = if self.tables[BUDGET].is_empty() { 3 } else { 4 };
        w.u32(n as u32);
        for t in &self.tables[..n] {
            let entries = t.ordered();
            w.u32(entries.len() as u32);
            for (k, e) in entries {
                write_entry(&mut w, k, e);
            }
        }
        // Only the evicted templates' texts some window still needs, sorted.
        let open: std::collections::BTreeSet<u64> = self
            .tables
            .iter()
            .flat_map(|t| t.entries())
            .filter_map(|e| e.template)
            .collect();
        let texts: Vec<(&u64, &Box<str>)> = open
            .iter()
            .filter_map(|id| self.texts.get_key_value(id))
            .collect();
        w.u32(texts.len() as u32);
        for (id, text) in texts {
            w.u64(*id);
            w.str(text);
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Reducer, Corrupt> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return Err(Corrupt);
        }
        let clock = r.u64()?;
        let miner = Miner::decode(r.bytes()?).map_err(|_| Corrupt)?;
        let mut tables: [Table; 4] = Default::default();
        let n = r.u32()? as usize;
        if !(3..=tables.len()).contains(&n) {
            return Err(Corrupt);
        }
        for t in &mut tables[..n] {
            let n = r.count(80)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(read_entry(&mut r)?);
            }
            *t = Table::from_entries(entries);
        }
        let mut texts = hashbrown::HashMap::new();
        for _ in 0..r.count(12)? {
            let id = r.u64()?;
            texts.insert(id, r.str()?.into());
        }
        r.finish()?;
        Ok(Reducer::restored(clock, miner, tables, texts))
    }
}
