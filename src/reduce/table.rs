//! Open windows of one reduction action in one partition: entries by key, each with the
//! event time its window closes, closed in deadline order as the partition's clock passes
//! them. The number of entries is capped: at the cap the entry that would close first is
//! closed early (its summary is not lost, it comes out then).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashMap;

use super::hash::BuildIdentity;

/// What one open window holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// `team/rule` of the rule the window belongs to.
    pub rule: std::sync::Arc<str>,
    /// When the window (or interval) started, and when it closes.
    pub start_ms: u64,
    pub deadline: u64,
    /// Events kept in the window, and events suppressed with their first and last times and
    /// the records they came from.
    pub kept: u64,
    pub suppressed: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The template, for dedupe (its default key) and patterns.
    pub template: Option<u64>,
    /// The key's field values, for summaries (`name=value` pairs joined by `\x1f`).
    pub key_text: Box<str>,
    /// Suppressed events (throttle), or variable values by variable number (patterns), at most
    /// `MAX_SAMPLES` of each.
    pub samples: Vec<Box<str>>,
    pub variables: Vec<(u16, Vec<Box<str>>)>,
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
    /// Counts a suppressed event.
    pub fn suppress(&mut self, time_ms: u64, offset: i64) {
        if self.suppressed == 0 {
            self.first_ms = time_ms;
            self.first_offset = offset;
        }
        self.suppressed += 1;
        self.last_ms = time_ms;
        self.last_offset = offset;
    }
}

/// Entries live in a dense vector (a removal moves the last one into the hole), the map holds
/// their positions: an `Entry` is large, and a map of them moves every one when it grows or
/// cleans up its tombstones.
#[derive(Debug, Default, Clone)]
pub struct Table {
    index: HashMap<u64, u32, BuildIdentity>,
    slots: Vec<(u64, Entry)>,
    /// Every entry's `(deadline, key)`; an entry removed out of turn leaves a stale item.
    heap: BinaryHeap<Reverse<(u64, u64)>>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().map(|(_, e)| e)
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut Entry> {
        let i = *self.index.get(&key)?;
        Some(&mut self.slots[i as usize].1)
    }

    fn get(&self, key: u64) -> Option<&Entry> {
        let i = *self.index.get(&key)?;
        Some(&self.slots[i as usize].1)
    }

    /// Opens a window. At `cap` entries the one that would close first is closed now and
    /// returned.
    pub fn insert(&mut self, key: u64, entry: Entry, cap: usize) -> Option<(u64, Entry)> {
        let evicted = if self.slots.len() >= cap.max(1) {
            self.pop()
        } else {
            None
        };
        self.heap.push(Reverse((entry.deadline, key)));
        match self.index.get(&key) {
            Some(&i) => self.slots[i as usize].1 = entry,
            None => {
                self.index.insert(key, self.slots.len() as u32);
                self.slots.push((key, entry));
            }
        }
        evicted
    }

    /// The heap's first item that still stands for its entry (one removed by `remove` leaves
    /// its item behind, skipped here).
    fn live_top(&mut self) -> Option<(u64, u64)> {
        while let Some(Reverse((deadline, key))) = self.heap.peek().copied() {
            if self.get(key).is_some_and(|e| e.deadline == deadline) {
                return Some((deadline, key));
            }
            self.heap.pop();
        }
        None
    }

    fn pop(&mut self) -> Option<(u64, Entry)> {
        let (_, key) = self.live_top()?;
        self.heap.pop();
        let entry = self.remove(key)?;
        Some((key, entry))
    }

    /// Closes the next window whose deadline is at or before `now`.
    pub fn expire(&mut self, now: u64) -> Option<(u64, Entry)> {
        // Every item, stale or not, is at or after the top: a top not due means nothing is,
        // without looking the entry up (most events close nothing).
        if self
            .heap
            .peek()
            .is_none_or(|Reverse((deadline, _))| *deadline > now)
        {
            return None;
        }
        match self.live_top() {
            Some((deadline, _)) if deadline <= now => self.pop(),
            _ => None,
        }
    }

    /// Closes one window now, whatever its deadline.
    pub fn remove(&mut self, key: u64) -> Option<Entry> {
        let i = self.index.remove(&key)? as usize;
        let (_, entry) = self.slots.swap_remove(i);
        if let Some((moved, _)) = self.slots.get(i) {
            self.index.insert(*moved, i as u32);
        }
        Some(entry)
    }

    /// Closes every window, in deadline order (the end of a replay's input).
    pub fn close_all(&mut self) -> Option<(u64, Entry)> {
        self.pop()
    }

    /// Entries in deadline order, for a snapshot.
    pub fn ordered(&self) -> Vec<(u64, &Entry)> {
        let mut v: Vec<(u64, &Entry)> = self.slots.iter().map(|(k, e)| (*k, e)).collect();
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
        Entry {
            deadline,
            ..Entry::default()
        }
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
