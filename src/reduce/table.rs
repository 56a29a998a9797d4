//! Open windows of one reduction action in one partition: entries by key, each with the
//! event time its window closes, closed in deadline order as the partition's clock passes
//! them. The number of entries is capped: at the cap the entry that would close first is
//! closed early (its summary is not lost, it comes out then).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashMap;

use super::hash::BuildIdentity;

/// What one open window holds: what every event of its key reads, small and inline, and what
/// only suppressed events need, boxed. Most windows never suppress anything (their keys carry
/// ids), so a table at its cap holds mostly the small part and evicts without touching a box.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `team/rule` of the rule the window belongs to.
    pub rule: std::sync::Arc<str>,
    /// When the window (or interval) started, and when it closes.
    pub start_ms: u64,
    pub deadline: u64,
    /// Events kept in the window (bytes, for a budget's second).
    pub kept: u64,
    /// The template, for dedupe (its default key) and patterns.
    pub template: Option<u64>,
    /// What the window suppressed; `None` until its first suppressed event (a budget's second
    /// has it from the start, with its key).
    pub suppression: Option<Box<Suppression>>,
}

/// The suppressed events of a window: their number, first and last times and the records they
/// came from, and what a summary shows of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Suppression {
    pub count: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The key's field values, for summaries (`name=value` pairs joined by `\x1f`).
    pub key_text: Box<str>,
    /// Suppressed events (throttle), or variable values by variable number (patterns), at most
    /// `MAX_SAMPLES` of each.
    pub samples: Vec<Box<str>>,
    pub variables: Vec<(u16, Vec<Box<str>>)>,
}

impl Suppression {
    /// Nothing suppressed and nothing to show: what a window without a box stands for.
    pub fn is_empty(&self) -> bool {
        *self == Suppression::default()
    }
}

pub const MAX_SAMPLES: usize = 3;
/// Variables of a template whose values a patterns summary samples.
pub const MAX_VARIABLES: usize = 32;
/// Bytes of a sampled event kept in a summary; longer ones are cut (at a character boundary).
pub const MAX_SAMPLE_BYTES: usize = 512;
/// Bytes of a sampled variable value.
pub const MAX_VALUE_BYTES: usize = 128;

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn cut(s: &str, max: usize) -> Box<str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

impl Entry {
    /// A window with nothing suppressed yet.
    pub fn new(
        rule: &std::sync::Arc<str>,
        start_ms: u64,
        deadline: u64,
        kept: u64,
        template: Option<u64>,
    ) -> Entry {
        Entry {
            rule: std::sync::Arc::clone(rule),
            start_ms,
            deadline,
            kept,
            template,
            suppression: None,
        }
    }

    /// Events suppressed in the window.
    pub fn suppressed(&self) -> u64 {
        self.suppression.as_ref().map_or(0, |s| s.count)
    }

    /// Counts a suppressed event; its window's suppression, to add what a summary shows.
    pub fn suppress(&mut self, time_ms: u64, offset: i64) -> &mut Suppression {
        let s = self.suppression.get_or_insert_default();
        if s.count == 0 {
            s.first_ms = time_ms;
            s.first_offset = offset;
        }
        s.count += 1;
        s.last_ms = time_ms;
        s.last_offset = offset;
        s
    }
}

/// One place of the slab: an entry, or a free place the next window takes. A cache line each,
/// so reading an entry to close it touches one line.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Slot(Option<Entry>);

/// Entries live in a slab (a removal frees its place, which the next insertion takes: at the
/// cap, the place of the entry just evicted, still in cache), the map holds their places:
/// no entry moves after it was written, when the table grows or when another leaves.
#[derive(Debug, Default, Clone)]
pub struct Table {
    index: HashMap<u64, u32, BuildIdentity>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Every entry's `(deadline, key)`; an entry removed out of turn leaves a stale item.
    heap: BinaryHeap<Reverse<(u64, u64)>>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The open entries, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter_map(|s| s.0.as_ref())
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut Entry> {
        let i = *self.index.get(&key)?;
        self.slots[i as usize].0.as_mut()
    }

    /// Opens a window. At `cap` entries the one that would close first is closed now and
    /// returned.
    pub fn insert(&mut self, key: u64, entry: Entry, cap: usize) -> Option<(u64, Entry)> {
        let evicted = if self.index.len() >= cap.max(1) {
            self.pop_due(u64::MAX)
        } else {
            None
        };
        self.heap.push(Reverse((entry.deadline, key)));
        match self.index.get(&key) {
            Some(&i) => self.slots[i as usize].0 = Some(entry),
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize].0 = Some(entry);
                        i
                    }
                    None => {
                        self.slots.push(Slot(Some(entry)));
                        (self.slots.len() - 1) as u32
                    }
                };
                self.index.insert(key, i);
            }
        }
        evicted
    }

    /// Closes the window that closes first, if its deadline is at or before `now`. Heap items
    /// that no longer stand for their entry (one removed out of turn, or opened again with
    /// another deadline) are dropped on the way.
    fn pop_due(&mut self, now: u64) -> Option<(u64, Entry)> {
        while let Some(&Reverse((deadline, key))) = self.heap.peek() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            // One probe of the map finds the entry, checks it and removes it.
            if let hashbrown::hash_map::Entry::Occupied(o) = self.index.entry(key) {
                let i = *o.get();
                let slot = &mut self.slots[i as usize].0;
                if slot.as_ref().is_some_and(|e| e.deadline == deadline) {
                    o.remove();
                    self.free.push(i);
                    return slot.take().map(|e| (key, e));
                }
            }
        }
        None
    }

    /// Closes the next window whose deadline is at or before `now`.
    pub fn expire(&mut self, now: u64) -> Option<(u64, Entry)> {
        self.pop_due(now)
    }

    /// Closes one window now, whatever its deadline.
    pub fn remove(&mut self, key: u64) -> Option<Entry> {
        let i = self.index.remove(&key)?;
        self.free.push(i);
        self.slots[i as usize].0.take()
    }

    /// Closes every window, in deadline order (the end of a replay's input).
    pub fn close_all(&mut self) -> Option<(u64, Entry)> {
        self.pop_due(u64::MAX)
    }

    /// Entries in deadline order, for a snapshot.
    pub fn ordered(&self) -> Vec<(u64, &Entry)> {
        let mut v: Vec<(u64, &Entry)> = self
            .index
            .iter()
            .filter_map(|(k, i)| Some((*k, self.slots[*i as usize].0.as_ref()?)))
            .collect();
        v.sort_by_key(|(k, e)| (e.deadline, *k));
        v
    }

    /// Rebuilds a table from a snapshot's entries.
    pub fn from_entries(entries: Vec<(u64, Entry)>) -> Table {
        let mut t = Table::default();
        for (k, e) in entries {
            t.insert(k, e, usize::MAX);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(deadline: u64) -> Entry {
        Entry::new(&"t/r".into(), 0, deadline, 0, None)
    }

    #[test]
    fn windows_close_in_deadline_order_and_the_cap_closes_the_first() {
        let mut t = Table::default();
        assert!(t.insert(1, entry(30), 3).is_none());
        assert!(t.insert(2, entry(10), 3).is_none());
        assert!(t.insert(3, entry(20), 3).is_none());
        let (k, e) = t.insert(4, entry(40), 3).expect("at the cap");
        assert_eq!((k, e.deadline), (2, 10));
        assert_eq!(t.expire(19).map(|(k, _)| k), None);
        assert_eq!(t.expire(25).map(|(k, _)| k), Some(3));
        assert_eq!(t.expire(100).map(|(k, _)| k), Some(1));
        assert_eq!(t.close_all().map(|(k, _)| k), Some(4));
        assert!(t.is_empty());
        assert_eq!(&*cut("héllo", 2), "h");
    }

    #[test]
    fn removal_out_of_turn_keeps_every_other_entry_reachable() {
        let mut t = Table::default();
        for k in 0..100 {
            t.insert(k, entry(1000 - k), usize::MAX);
        }
        for k in (0..100).step_by(3) {
            assert_eq!(t.remove(k).map(|e| e.deadline), Some(1000 - k));
        }
        for k in 0..100 {
            assert_eq!(t.get_mut(k).is_some(), k % 3 != 0, "{k}");
        }
        // Deadline order skips the removed entries' heap items.
        let mut closed = Vec::new();
        while let Some((k, _)) = t.close_all() {
            closed.push(k);
        }
        let want: Vec<u64> = (0..100).rev().filter(|k| k % 3 != 0).collect();
        assert_eq!(closed, want);
    }
}
