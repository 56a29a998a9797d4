//! Open windows of one reduction action in one partition: entries by key, each with the
//! event time its window closes, closed in deadline order as the partition's clock passes
//! them. The number of entries is capped: at the cap the entry that would close first is
//! closed early (its summary is not lost, it comes out then).

use super::places::{Places, prefetch};

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

    /// [`Entry::suppress`] for a keyed window (dedupe, throttle): the key's text, read only
    /// by a summary, is made on the first suppressed event, so a key that never repeats does
    /// not pay for it.
    pub fn suppress_keyed(
        &mut self,
        time_ms: u64,
        offset: i64,
        key_text: impl FnOnce() -> Box<str>,
    ) -> &mut Suppression {
        let s = self.suppress(time_ms, offset);
        if s.count == 1 {
            s.key_text = key_text();
        }
        s
    }
}

/// A window's deadline, its key, and its entry's place in the slab: the place lets the next
/// window to close be prefetched, bucket and entry, while the heap holds it at the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    deadline: u64,
    key: u64,
    place: u32,
}

impl Item {
    /// The heap's order, `(deadline, key)`, as one number: choosing the least of several
    /// compiles to conditional moves rather than branches that mispredict on every level.
    fn order(&self) -> u128 {
        (u128::from(self.deadline) << 64) | u128::from(self.key)
    }
}

/// A min-heap of items by `(deadline, key)`, four children a node: half the levels of a binary
/// heap, and a node's children (24 bytes each) in two cache lines.
#[derive(Debug, Default, Clone)]
struct Deadlines(Vec<Item>);

impl Deadlines {
    const ARITY: usize = 4;

    fn peek(&self) -> Option<Item> {
        self.0.first().copied()
    }

    fn push(&mut self, x: Item) {
        let h = &mut self.0;
        let mut i = h.len();
        h.push(x);
        while i > 0 {
            let parent = (i - 1) / Self::ARITY;
            if h[parent].order() <= x.order() {
                break;
            }
            h[i] = h[parent];
            i = parent;
        }
        h[i] = x;
    }

    fn pop(&mut self) -> Option<Item> {
        let h = &mut self.0;
        let last = h.pop()?;
        if h.is_empty() {
            return Some(last);
        }
        let top = h[0];
        // The last item goes down from the root to where it is not above a child.
        let n = h.len();
        let last_order = last.order();
        let mut i = 0;
        loop {
            let first = Self::ARITY * i + 1;
            if first >= n {
                break;
            }
            let c = if first + Self::ARITY <= n {
                // The least of four by index arithmetic: no branch depends on the items.
                let o = |j: usize| h[j].order();
                let a = first + usize::from(o(first + 1) < o(first));
                let b = first + 2 + usize::from(o(first + 3) < o(first + 2));
                a + usize::from(o(b) < o(a)) * (b - a)
            } else {
                let mut c = first;
                for j in first + 1..n {
                    if h[j].order() < h[c].order() {
                        c = j;
                    }
                }
                c
            };
            if h[c].order() >= last_order {
                break;
            }
            h[i] = h[c];
            i = c;
        }
        h[i] = last;
        Some(top)
    }
}

/// One place of the slab: an entry, or a free place the next window takes. A cache line each,
/// so reading an entry to close it touches one line.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Slot(Option<Entry>);

// An entry that grows past a cache line makes every eviction read two.
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// Entries live in a slab (a removal frees its place, which the next insertion takes: at the
/// cap, the place of the entry just evicted, still in cache), the index holds their places:
/// no entry moves after it was written, when the table grows or when another leaves.
#[derive(Debug, Default, Clone)]
pub struct Table {
    index: Places,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Every entry's `(deadline, key, place)`; an entry removed out of turn leaves a stale item.
    heap: Deadlines,
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
        let i = self.index.get(key)?;
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
        let deadline = entry.deadline;
        let place = match self.index.get(key) {
            Some(i) => {
                self.slots[i as usize].0 = Some(entry);
                i
            }
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
                i
            }
        };
        self.heap.push(Item {
            deadline,
            key,
            place,
        });
        evicted
    }

    /// Closes the window that closes first, if its deadline is at or before `now`. Heap items
    /// that no longer stand for their entry (one removed out of turn, or opened again with
    /// another deadline) are dropped on the way.
    fn pop_due(&mut self, now: u64) -> Option<(u64, Entry)> {
        while let Some(top) = self.heap.peek() {
            if top.deadline > now {
                return None;
            }
            self.heap.pop();
            self.warm();
            let Some(at) = self.index.find(top.key) else {
                continue;
            };
            let i = self.index.place(at);
            let slot = &mut self.slots[i as usize].0;
            if i == top.place && slot.as_ref().is_some_and(|e| e.deadline == top.deadline) {
                self.index.remove_at(at);
                self.free.push(i);
                return slot.take().map(|e| (top.key, e));
            }
        }
        None
    }

    /// Brings the next window to close into cache: its bucket and its entry. It was opened
    /// long ago, and closing it would otherwise wait on two reads from memory, one after the
    /// other; by then (the next event with a new key at the cap, or the clock passing its
    /// deadline) they are in.
    fn warm(&self) {
        if let Some(next) = self.heap.peek() {
            self.index.prefetch(next.key);
            if let Some(slot) = self.slots.get(next.place as usize) {
                prefetch(slot);
            }
        }
    }

    /// Closes the next window whose deadline is at or before `now`. Every event asks every
    /// table, and almost always nothing is due: that answer is inlined into the caller.
    #[inline]
    pub fn expire(&mut self, now: u64) -> Option<(u64, Entry)> {
        match self.heap.peek() {
            Some(top) if top.deadline <= now => self.pop_due(now),
            _ => None,
        }
    }

    /// Closes one window now, whatever its deadline.
    pub fn remove(&mut self, key: u64) -> Option<Entry> {
        let i = self.index.remove(key)?;
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
            .filter_map(|(k, i)| Some((k, self.slots[i as usize].0.as_ref()?)))
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

    /// A pseudo-random sequence (the crate's mixer over a counter), for the model tests.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 += 1;
            crate::reduce::hash::mix(self.0) % n
        }
    }

    #[test]
    fn the_deadline_heap_pops_in_deadline_then_key_order() {
        let mut rng = Rng(7);
        let mut heap = Deadlines::default();
        let mut want = std::collections::BinaryHeap::new();
        let pair = |x: Option<Item>| x.map(|x| (x.deadline, x.key));
        for step in 0..20_000 {
            // Few deadlines and keys, so that ties and equal items are common.
            if rng.below(3) > 0 || step < 100 {
                let (d, k) = (rng.below(50), rng.below(200));
                heap.push(Item {
                    deadline: d,
                    key: k,
                    place: step,
                });
                want.push(std::cmp::Reverse((d, k)));
            } else {
                assert_eq!(pair(heap.pop()), want.pop().map(|r| r.0), "step {step}");
            }
            assert_eq!(pair(heap.peek()), want.peek().map(|r| r.0));
        }
        while let Some(r) = want.pop() {
            assert_eq!(pair(heap.pop()), Some(r.0));
        }
        assert_eq!(heap.pop(), None);
    }

    /// The table against the simplest table that closes in `(deadline, key)` order: a sorted
    /// set and a map. Any sequence of operations gives the same windows back in the same order.
    #[test]
    fn a_table_closes_windows_as_a_sorted_set_would() {
        use std::collections::{BTreeSet, HashMap};
        for seed in 0..20 {
            let mut rng = Rng(seed * 1_000_003);
            let mut t = Table::default();
            let mut order: BTreeSet<(u64, u64)> = BTreeSet::new();
            let mut open: HashMap<u64, Entry> = HashMap::new();
            let cap = 1 + rng.below(64) as usize;
            let mut now = 0;
            for step in 0..5_000u64 {
                let key = rng.below(300);
                match rng.below(10) {
                    0..=5 => {
                        let mut e = entry(now + rng.below(20));
                        e.kept = step;
                        if rng.below(4) == 0 {
                            e.suppress(now, step as i64);
                        }
                        // The model: a key opened again replaces its window; at the cap the
                        // first to close goes (before the new one counts).
                        let evicted = if open.len() >= cap {
                            order
                                .pop_first()
                                .map(|(_, k)| (k, open.remove(&k).unwrap()))
                        } else {
                            None
                        };
                        if let Some(old) = open.insert(key, e.clone()) {
                            order.remove(&(old.deadline, key));
                        }
                        order.insert((e.deadline, key));
                        assert_eq!(t.insert(key, e, cap), evicted, "seed {seed} step {step}");
                    }
                    6 => {
                        now += rng.below(5);
                        loop {
                            let want = match order.first() {
                                Some(&(d, k)) if d <= now => {
                                    order.pop_first();
                                    Some((k, open.remove(&k).unwrap()))
                                }
                                _ => None,
                            };
                            let got = t.expire(now);
                            assert_eq!(got, want, "seed {seed} step {step}");
                            if got.is_none() {
                                break;
                            }
                        }
                    }
                    7 => {
                        let want = open.remove(&key);
                        if let Some(e) = &want {
                            order.remove(&(e.deadline, key));
                        }
                        assert_eq!(t.remove(key), want, "seed {seed} step {step}");
                    }
                    _ => {
                        let e = t.get_mut(key);
                        assert_eq!(e.is_some(), open.contains_key(&key));
                        if let Some(e) = e {
                            e.kept += 1;
                            open.get_mut(&key).unwrap().kept += 1;
                        }
                    }
                }
                assert_eq!(t.len(), open.len());
            }
            let ordered: Vec<(u64, Entry)> = t
                .ordered()
                .into_iter()
                .map(|(k, e)| (k, e.clone()))
                .collect();
            let want: Vec<(u64, Entry)> =
                order.iter().map(|&(_, k)| (k, open[&k].clone())).collect();
            assert_eq!(ordered, want, "seed {seed}");
            let mut entries: Vec<u64> = t.entries().map(|e| e.kept).collect();
            let mut want_entries: Vec<u64> = open.values().map(|e| e.kept).collect();
            entries.sort_unstable();
            want_entries.sort_unstable();
            assert_eq!(entries, want_entries);
            // A table rebuilt from its snapshot closes the same way.
            let mut back = Table::from_entries(want);
            let mut closed = Vec::new();
            while let Some(c) = t.close_all() {
                assert_eq!(back.close_all().as_ref(), Some(&c));
                closed.push(c.0);
            }
            assert_eq!(back.close_all(), None);
            assert_eq!(closed, order.iter().map(|&(_, k)| k).collect::<Vec<_>>());
        }
    }
}
