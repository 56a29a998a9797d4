//! The miner's state: templates in a fixed number of slots with least-recently-used eviction,
//! an inverted index from constant words to templates, the cache of line shapes already
//! matched, and the words learned as variable values.
//!
//! Nothing here depends on hash-map iteration order: posting lists are vectors in creation
//! order, maps are only looked up, and the snapshot writes them sorted.

use std::collections::{HashMap, HashSet};

use super::align::{SlotKind, SlotLike, flag};
use crate::reduce::hash::BuildIdentity;

pub(super) const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slot {
    pub kind: SlotKind,
    pub glued: bool,
    pub hash: u64,
    /// Range of the constant's text in `Template::text`. For a variable born as one, the
    /// range of its first value's fixed prefix and suffix (see `pre`, `suf`).
    pub text: (u32, u32),
    /// Stable number of this variable within its template (creation order).
    pub var: u16,
    /// A variable's fixed prefix, `text.0..text.0 + pre`, and suffix, `text.1 - suf..text.1`:
    /// what every value so far had around its digits (`blk_` in `blk_<*>`, `(` `)` in
    /// `(<*>)`). They only shrink.
    pub pre: u16,
    pub suf: u16,
    /// The constant's [`flag`](super::align::flag)s, from its text (0 for a variable).
    pub flags: u8,
}

/// Longest fixed prefix and suffix `value` allows: what precedes its first digit and follows
/// its last (nothing without a digit), when short and shaped like a marker rather than
/// like data: `blk_`, `node-`, `(`, `/`, `[`; `)`, `ms`, `KB)`. A path or a file name around
/// a number (`/etc/workers2.properties`) is all value.
pub(super) fn affixes(value: &[u8]) -> (usize, usize) {
    let Some(first) = value.iter().position(u8::is_ascii_digit) else {
        return (0, 0);
    };
    let last = value
        .iter()
        .rposition(u8::is_ascii_digit)
        .expect("has a digit");
    // Up to the first digit, or back to the last separator before it (`[Thunderbird_` of
    // `[Thunderbird_A8]`).
    let cut = value[..first]
        .iter()
        .rposition(|c| !c.is_ascii_alphanumeric())
        .map_or(0, |k| k + 1);
    let pre = [first, cut]
        .into_iter()
        .find(|&p| p <= MAX_AFFIX && marker_prefix(&value[..p]))
        .unwrap_or(0);
    let suf = value.len() - 1 - last;
    let suf = if suf <= MAX_AFFIX && marker_suffix(&value[last + 1..]) {
        suf
    } else {
        0
    };
    (pre, suf)
}

/// Punctuation, then at most one word followed by punctuation: `(`, `/`, `blk_`, `(blk_-`.
fn marker_prefix(p: &[u8]) -> bool {
    let punct = |c: &u8| !c.is_ascii_alphanumeric() && c.is_ascii();
    let lead = p.iter().take_while(|c| punct(c)).count();
    let word = p[lead..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    let tail = &p[lead + word..];
    tail.iter().all(punct) && (word == 0 || !tail.is_empty())
}

/// Punctuation, or a short unit then punctuation: `)`, `]:`, `ms`, `KB)`; not hex digits
/// (`0x800f080d` has no suffix `d`).
fn marker_suffix(s: &[u8]) -> bool {
    let punct = |c: &u8| !c.is_ascii_alphanumeric() && c.is_ascii();
    let unit = s.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let unit_ok = unit == 0 || (unit <= 3 && s[..unit].iter().any(|c| !c.is_ascii_hexdigit()));
    unit_ok && s[unit..].iter().all(punct)
}

pub(super) const MAX_AFFIX: usize = 32;

impl Slot {
    /// Shrinks the fixed prefix and suffix to what `value` shares with them. A prefix ends
    /// right before the value's digits or after a separator (`blk_`, `(`), never inside a
    /// word or a character.
    pub fn narrow(&mut self, text: &str, value: &[u8]) {
        if self.pre == 0 && self.suf == 0 {
            return;
        }
        let (vp, vs) = affixes(value);
        let t = text.as_bytes();
        let prefix = &t[self.text.0 as usize..self.text.0 as usize + self.pre as usize];
        let mut p = prefix
            .iter()
            .zip(&value[..vp])
            .take_while(|(a, b)| a == b)
            .count();
        while p > 0
            && (p != vp && prefix[p - 1].is_ascii_alphanumeric()
                || !text.is_char_boundary(self.text.0 as usize + p))
        {
            p -= 1;
        }
        let suffix = &t[self.text.1 as usize - self.suf as usize..self.text.1 as usize];
        let mut q = suffix
            .iter()
            .rev()
            .zip(value[value.len() - vs..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        while q > 0
            && (q != vs && suffix[suffix.len() - q].is_ascii_alphanumeric()
                || !text.is_char_boundary(self.text.1 as usize - q))
        {
            q -= 1;
        }
        let p = if marker_prefix(&prefix[..p]) { p } else { 0 };
        let q = if marker_suffix(&suffix[suffix.len() - q..]) {
            q
        } else {
            0
        };
        let (p, q) = balanced(prefix, p, suffix, q);
        self.pre = p as u16;
        self.suf = q as u16;
    }
}

/// Cuts a prefix of `prefix[..p]` and a suffix of `suffix[suffix.len() - q..]` so that their
/// brackets and quotes pair up: `(<*>)` stays, `<*>]` (the `[` was inside the value) loses
/// its `]`.
pub(super) fn balanced(prefix: &[u8], p: usize, suffix: &[u8], q: usize) -> (usize, usize) {
    let (pre, suf) = (&prefix[..p], &suffix[suffix.len() - q..]);
    let bracket = |c: &u8| BRACKET_INDEX[*c as usize] != 0;
    // Most affixes hold no bracket or quote: nothing to balance.
    if !pre.iter().chain(suf).any(bracket) {
        return (p, q);
    }
    // How many of each bracket and quote either side holds, in one pass each (this runs for
    // every value of a variable with a prefix or suffix).
    let count = |s: &[u8]| {
        let mut n = [0usize; 11];
        for &c in s {
            n[usize::from(BRACKET_INDEX[c as usize])] += 1;
        }
        n
    };
    let (a, z) = (count(pre), count(suf));
    // Index 1 + 2k is the opening bracket of pair k, 2 + 2k its closing one; 9 and 10 quotes.
    let even = (0..4)
        .all(|k| a[1 + 2 * k] == z[2 + 2 * k] && a[2 + 2 * k] == 0 && z[1 + 2 * k] == 0)
        && a[9] == z[9]
        && a[10] == z[10];
    if even {
        return (p, q);
    }
    let p = pre.iter().position(bracket).unwrap_or(p);
    let q = suf.iter().rev().position(bracket).unwrap_or(q);
    (p, q)
}

/// For [`balanced`]: 1 + 2k for the opening bracket of pair k of `()[]{}<>`, 2 + 2k for its
/// closing one, 9 for `"`, 10 for `'`, 0 for any other byte.
static BRACKET_INDEX: [u8; 256] = {
    let mut t = [0u8; 256];
    let brackets = b"()[]{}<>\"'";
    let mut k = 0;
    while k < brackets.len() {
        t[brackets[k] as usize] = k as u8 + 1;
        k += 1;
    }
    t
};

impl SlotLike for Slot {
    fn kind(&self) -> SlotKind {
        self.kind
    }
    fn hash(&self) -> u64 {
        self.hash
    }
    fn flags(&self) -> u8 {
        self.flags
    }
    fn len(&self) -> usize {
        (self.text.1 - self.text.0) as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    pub id: u64,
    /// Creation order, for deterministic preference among candidates.
    pub seq: u64,
    pub count: u64,
    pub slots: Vec<Slot>,
    pub text: String,
    pub next_var: u16,
}

impl Template {
    /// Distinct constant words (their hashes, sorted).
    pub fn words(&self, out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            self.slots
                .iter()
                .filter(|s| s.kind == SlotKind::Word)
                .map(|s| s.hash),
        );
        out.sort_unstable();
        out.dedup();
    }
}

/// What the candidate search needs to know of a template, in one array: no pointer to follow
/// for the templates it rules out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Summary {
    /// The template's `seq`: which template the slot holds now.
    pub seq: u64,
    /// Bit `hash >> 58` of each constant word's hash.
    pub word_bits: u64,
    /// Bit `i` (of the first 64) for each slot `i` that may take a word it does not equal
    /// whatever that word is: a variable, or a word that may become one (an identifier, or
    /// after `=`, `:`, `user` or `for`; not a state). A word the miner learned as a value
    /// may too, which these bits do not say: it changes as the miner learns.
    pub flexible: u64,
    /// Slots.
    pub len: u32,
    /// Constant word slots, variable slots, punctuation slots.
    pub words: u32,
    pub vars: u32,
    pub puncts: u32,
}

/// The bit of `word_bits` for a word's hash.
pub(super) fn word_bit(hash: u64) -> u64 {
    1 << (hash >> 58)
}

impl Summary {
    pub fn of(t: &Template) -> Summary {
        let mut s = Summary {
            seq: t.seq,
            len: t.slots.len() as u32,
            ..Summary::default()
        };
        for (i, slot) in t.slots.iter().enumerate() {
            let flexible = match slot.kind {
                SlotKind::Word => {
                    s.words += 1;
                    s.word_bits |= word_bit(slot.hash);
                    let after = |kind, f| {
                        i > 0 && t.slots[i - 1].kind == kind && t.slots[i - 1].flags & f != 0
                    };
                    slot.flags & flag::STATE == 0
                        && (slot.flags & flag::IDENT != 0
                            || after(SlotKind::Punct, flag::KEY_SEP)
                            || after(SlotKind::Word, flag::NAME))
                }
                SlotKind::Punct => {
                    s.puncts += 1;
                    false
                }
                SlotKind::Var { .. } => {
                    s.vars += 1;
                    true
                }
            };
            if flexible && i < 64 {
                s.flexible |= 1 << i;
            }
        }
        s
    }
}

/// The templates holding one word (or, for [`Store::wordless`], none), oldest first.
///
/// Evicting a template leaves its entries in place: they are dead from then on, because their
/// slot holds a template of another `seq`. Dead entries are dropped by the reads that pass
/// over them, and all at once when they outnumber the live ones; so an eviction costs O(1)
/// (amortised) per word of the template however many templates share the word, each dead
/// entry is read at most once, and the list stays in creation order, which the candidate
/// search relies on. What a read returns never depends on the dead entries (a miner restored
/// from a snapshot has none).
#[derive(Debug, Default)]
pub(super) struct Postings {
    /// The list is `entries[start..]`; before `start`, room left by dead entries dropped from
    /// the front (reclaimed when it is most of the vector).
    entries: Vec<Posting>,
    start: usize,
    /// Live entries.
    pub live: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Posting {
    seq: u64,
    slot: u32,
}

impl Posting {
    fn is_live(&self, summaries: &[Summary]) -> bool {
        summaries[self.slot as usize].seq == self.seq
    }
}

impl Postings {
    /// Entries worth keeping dead before a list is compacted, so that short lists are not
    /// rewritten on every eviction.
    const SLACK: usize = 8;

    fn stored(&self) -> usize {
        self.entries.len() - self.start
    }

    /// Appends the newest template.
    fn push(&mut self, seq: u64, slot: u32) {
        debug_assert!(self.entries.last().is_none_or(|p| p.seq < seq));
        self.entries.push(Posting { seq, slot });
        self.live += 1;
    }

    /// Puts a live template's entry at its place in creation order.
    fn insert(&mut self, seq: u64, slot: u32) {
        let at = self.start + self.entries[self.start..].partition_point(|p| p.seq < seq);
        self.entries.insert(at, Posting { seq, slot });
        self.live += 1;
    }

    /// Removes a live template's entry now (it keeps its slot, so it would not look dead).
    fn remove(&mut self, seq: u64) {
        if let Ok(at) = self.entries[self.start..].binary_search_by_key(&seq, |p| p.seq) {
            self.entries.remove(self.start + at);
            self.live -= 1;
        }
    }

    /// One of the live entries died (its template was evicted): compacts when the dead
    /// outnumber the live.
    fn died(&mut self, summaries: &[Summary]) {
        self.live -= 1;
        if self.stored() - self.live > self.live.max(Self::SLACK) {
            self.compact(summaries);
        }
    }

    fn compact(&mut self, summaries: &[Summary]) {
        self.entries.drain(..self.start);
        self.start = 0;
        self.entries.retain(|p| p.is_live(summaries));
        debug_assert_eq!(self.entries.len(), self.live);
    }

    /// Every live template's slot, oldest first; the dead entries on the way are dropped.
    pub fn read_all(&mut self, summaries: &[Summary], mut f: impl FnMut(u32)) {
        if self.stored() == self.live {
            for p in &self.entries[self.start..] {
                f(p.slot);
            }
            return;
        }
        let mut w = self.start;
        for r in self.start..self.entries.len() {
            let p = self.entries[r];
            if p.is_live(summaries) {
                self.entries[w] = p;
                w += 1;
                f(p.slot);
            }
        }
        self.entries.truncate(w);
        debug_assert_eq!(self.stored(), self.live);
    }

    /// The slots of the oldest live templates that `keep`, at most `max` of them, looking at
    /// no more than `budget` live ones, into `out`.
    pub fn read_oldest(
        &mut self,
        summaries: &[Summary],
        keep: impl Fn(u32) -> bool,
        max: usize,
        budget: usize,
        out: &mut Vec<u32>,
    ) {
        // Dead entries at the front (the oldest templates are the first evicted) go for free.
        while self.start < self.entries.len() && !self.entries[self.start].is_live(summaries) {
            self.start += 1;
        }
        let (mut taken, mut looked, mut dead) = (0, 0, 0);
        let mut end = self.start;
        while end < self.entries.len() && taken < max && looked < budget {
            let p = self.entries[end];
            end += 1;
            if !p.is_live(summaries) {
                dead += 1;
                continue;
            }
            looked += 1;
            if keep(p.slot) {
                out.push(p.slot);
                taken += 1;
            }
        }
        if dead > 0 {
            // Drop the dead entries read: move the live ones read up against the unread
            // rest, in order, and start the list there.
            let mut w = end;
            for r in (self.start..end).rev() {
                let p = self.entries[r];
                if p.is_live(summaries) {
                    w -= 1;
                    self.entries[w] = p;
                }
            }
            self.start = w;
        }
        if self.start > self.stored() {
            self.entries.drain(..self.start);
            self.start = 0;
        }
    }
}

/// The shape cache's value: which slot, in which of its lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cached {
    pub slot: u32,
    pub generation: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `balanced` was written as: a count per bracket and quote on each side.
    fn balanced_by_definition(prefix: &[u8], p: usize, suffix: &[u8], q: usize) -> (usize, usize) {
        let (pre, suf) = (&prefix[..p], &suffix[suffix.len() - q..]);
        let pairs = [(b'(', b')'), (b'[', b']'), (b'{', b'}'), (b'<', b'>')];
        let count = |s: &[u8], c: u8| s.iter().filter(|&&x| x == c).count();
        let even = pairs.iter().all(|&(o, c)| {
            count(pre, o) == count(suf, c) && count(pre, c) == 0 && count(suf, o) == 0
        }) && [b'"', b'\'']
            .iter()
            .all(|&c| count(pre, c) == count(suf, c));
        if even {
            return (p, q);
        }
        let bracket = |c: &u8| b"()[]{}<>\"'".contains(c);
        let p = pre.iter().position(bracket).unwrap_or(p);
        let q = suf.iter().rev().position(bracket).unwrap_or(q);
        (p, q)
    }

    #[test]
    fn brackets_balance_as_defined() {
        let alphabet = b"()[]{}<>\"'a_-1";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..20_000 {
            let prefix: Vec<u8> = (0..next(6))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let suffix: Vec<u8> = (0..next(6))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let (p, q) = (next(prefix.len() + 1), next(suffix.len() + 1));
            assert_eq!(
                balanced(&prefix, p, &suffix, q),
                balanced_by_definition(&prefix, p, &suffix, q),
                "{:?} {p} {:?} {q}",
                String::from_utf8_lossy(&prefix),
                String::from_utf8_lossy(&suffix)
            );
        }
    }

    #[test]
    fn markers_around_values() {
        let show = |v: &str| {
            let (p, q) = affixes(v.as_bytes());
            let (p, q) = balanced(v.as_bytes(), p, v.as_bytes(), q);
            format!("{}<*>{}", &v[..p], &v[v.len() - q..])
        };
        assert_eq!(show("blk_-1608999687919862906"), "blk_-<*>");
        assert_eq!(show("(1234)"), "(<*>)");
        assert_eq!(show("/10.250.19.102:50010"), "/<*>");
        assert_eq!(show("12ms"), "<*>ms");
        assert_eq!(show("0x800f080d"), "<*>");
        assert_eq!(show("/etc/httpd/conf/workers2.properties"), "<*>");
        assert_eq!(show("jk2_init()"), "<*>");
        assert_eq!(show("12ms (1234) [77]"), "<*>");
        assert_eq!(show("root"), "<*>");
        assert_eq!(show("[Thunderbird_A8]"), "[Thunderbird_<*>]");
        let mut s = Slot {
            kind: SlotKind::Var { optional: false },
            glued: false,
            hash: 0,
            text: (0, 6),
            var: 0,
            pre: 4,
            suf: 2,
            flags: 0,
        };
        // `blk_` and `ms` stored; a value `blk_9ms`, then one without the suffix.
        let text = "blk_ms";
        s.narrow(text, b"blk_9ms");
        assert_eq!((s.pre, s.suf), (4, 2));
        s.narrow(text, b"blk_12");
        assert_eq!((s.pre, s.suf), (4, 0));
        s.narrow(text, b"bl_3");
        assert_eq!((s.pre, s.suf), (0, 0));
    }
}

#[derive(Debug, Default)]
pub(super) struct Store {
    pub templates: Vec<Template>,
    /// Bumped each time a slot is reused, so cache entries of an evicted template go stale.
    pub generations: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    /// Most recently used.
    pub head: u32,
    /// Least recently used: the next to be evicted.
    pub tail: u32,
    /// What the candidate search needs of each slot's template.
    pub summaries: Vec<Summary>,
    pub by_id: HashMap<u64, u32, BuildIdentity>,
    pub postings: HashMap<u64, Postings, BuildIdentity>,
    /// Templates without a constant word (`<*>: <*>`).
    pub wordless: Postings,
    pub cache: HashMap<u64, Cached, BuildIdentity>,
    pub learned: HashSet<u64, BuildIdentity>,
    pub next_seq: u64,
    scratch_words: Vec<u64>,
}

impl Store {
    pub fn new() -> Store {
        Store {
            head: NONE,
            tail: NONE,
            ..Store::default()
        }
    }

    pub fn touch(&mut self, s: u32) {
        if self.head == s {
            return;
        }
        self.unlink(s);
        self.push_front(s);
    }

    fn unlink(&mut self, s: u32) {
        let (p, n) = (self.prev[s as usize], self.next[s as usize]);
        if p != NONE {
            self.next[p as usize] = n;
        } else if self.head == s {
            self.head = n;
        }
        if n != NONE {
            self.prev[n as usize] = p;
        } else if self.tail == s {
            self.tail = p;
        }
        self.prev[s as usize] = NONE;
        self.next[s as usize] = NONE;
    }

    fn push_front(&mut self, s: u32) {
        self.prev[s as usize] = NONE;
        self.next[s as usize] = self.head;
        if self.head != NONE {
            self.prev[self.head as usize] = s;
        }
        self.head = s;
        if self.tail == NONE {
            self.tail = s;
        }
    }

    /// Slots from most to least recently used.
    pub fn lru_order(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.templates.len());
        let mut s = self.head;
        while s != NONE && out.len() < self.templates.len() {
            out.push(s);
            s = self.next[s as usize];
        }
        out
    }

    /// Adds a template; at the cap, the least recently used one gives up its slot first.
    /// Returns the slot and the evicted template. O(1) in the number of templates (amortised:
    /// see [`Postings`]).
    pub fn insert(&mut self, mut t: Template, cap: usize) -> (u32, Option<Template>) {
        t.seq = self.next_seq;
        self.next_seq += 1;
        while self.by_id.contains_key(&t.id) {
            // A 64-bit collision between live templates: derive another id, deterministically.
            t.id = crate::reduce::hash::mix(t.id.wrapping_add(1));
        }
        let summary = Summary::of(&t);
        let (slot, evicted) = if self.templates.len() < cap.max(1) {
            let s = self.templates.len() as u32;
            self.templates.push(t);
            self.summaries.push(summary);
            self.generations.push(0);
            self.prev.push(NONE);
            self.next.push(NONE);
            (s, None)
        } else {
            let s = self.tail;
            self.by_id.remove(&self.templates[s as usize].id);
            self.unlink(s);
            self.generations[s as usize] = self.generations[s as usize].wrapping_add(1);
            let old = std::mem::replace(&mut self.templates[s as usize], t);
            // The slot's new `seq` makes the old template's postings dead.
            self.summaries[s as usize] = summary;
            self.unindex(&old);
            (s, Some(old))
        };
        self.by_id.insert(self.templates[slot as usize].id, slot);
        self.index(slot);
        self.push_front(slot);
        (slot, evicted)
    }

    /// Adds a template at a known slot, for decoding; the caller restores the LRU order.
    pub fn restore(&mut self, t: Template, generation: u32) {
        let slot = self.templates.len() as u32;
        self.by_id.insert(t.id, slot);
        self.summaries.push(Summary::of(&t));
        self.templates.push(t);
        self.generations.push(generation);
        self.prev.push(NONE);
        self.next.push(NONE);
    }

    /// Rebuilds the index (in creation order) and links `order` (most recent first).
    pub fn finish_restore(&mut self, order: &[u32]) {
        let mut by_seq: Vec<u32> = (0..self.templates.len() as u32).collect();
        by_seq.sort_by_key(|&s| self.templates[s as usize].seq);
        for s in by_seq {
            self.index(s);
        }
        for &s in order.iter().rev() {
            self.push_front(s);
        }
    }

    /// Posts the template of slot `s`, the newest: at the end of each list.
    fn index(&mut self, s: u32) {
        let mut words = std::mem::take(&mut self.scratch_words);
        let t = &self.templates[s as usize];
        t.words(&mut words);
        if words.is_empty() {
            self.wordless.push(t.seq, s);
        }
        for w in &words {
            self.postings.entry(*w).or_default().push(t.seq, s);
        }
        self.scratch_words = words;
    }

    /// Forgets `old`, whose slot holds another template now.
    fn unindex(&mut self, old: &Template) {
        let mut words = std::mem::take(&mut self.scratch_words);
        old.words(&mut words);
        if words.is_empty() {
            self.wordless.died(&self.summaries);
        }
        for w in &words {
            if let Some(list) = self.postings.get_mut(w) {
                if list.live == 1 {
                    self.postings.remove(w);
                } else {
                    list.died(&self.summaries);
                }
            }
        }
        self.scratch_words = words;
    }

    /// After template `s` lost the constant word `w` (one of its slots became a variable).
    pub fn word_removed(&mut self, s: u32, w: u64) {
        let t = &self.templates[s as usize];
        if t.slots
            .iter()
            .any(|x| x.kind == SlotKind::Word && x.hash == w)
        {
            return;
        }
        let wordless = !t.slots.iter().any(|x| x.kind == SlotKind::Word);
        if let Some(list) = self.postings.get_mut(&w) {
            list.remove(t.seq);
            if list.live == 0 {
                self.postings.remove(&w);
            }
        }
        if wordless {
            self.wordless.insert(t.seq, s);
        }
    }

    /// After template `s` changed (generalised): what the search knows of it.
    pub fn changed(&mut self, s: u32) {
        self.summaries[s as usize] = Summary::of(&self.templates[s as usize]);
    }

    pub fn learn(&mut self, word: u64, cap: usize) {
        if self.learned.len() >= cap {
            // Forget everything at once: deterministic, and cheap to snapshot.
            self.learned.clear();
        }
        self.learned.insert(word);
    }

    pub fn cache_put(&mut self, shape: u64, slot: u32, cap: usize) {
        if self.cache.len() >= cap && !self.cache.contains_key(&shape) {
            self.cache.clear();
        }
        let generation = self.generations[slot as usize];
        self.cache.insert(shape, Cached { slot, generation });
    }

    pub fn cache_get(&self, shape: u64) -> Option<u32> {
        let c = self.cache.get(&shape)?;
        (self.generations.get(c.slot as usize) == Some(&c.generation)).then_some(c.slot)
    }
}
