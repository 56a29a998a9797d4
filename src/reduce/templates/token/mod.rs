//! Tokenising a message for the miner: words, punctuation and variables, with spans.
//!
//! A message is cut at whitespace into chunks, a chunk at `,` `;` `|` into pieces, and a piece
//! loses its enclosing brackets and quotes, its trailing punctuation, and a leading `key=` or
//! `key:`. What remains is one token: a *variable* when it holds a digit (`12ms`, `0x1f`,
//! `blk_-42`, `10.0.0.1:80`, `LOCAL(0)`) or is a month or weekday name, else a *word*.
//! Then one left-to-right pass folds what belongs to a variable into it: a unit after a number
//! (`16.0 KB`), a path or host name next to one (`/a/b HTTP/1.1`), a bracketed group holding
//! only a variable (`(1.16 KB)`, `[pid]`, `()`), and runs of variables joined by punctuation or
//! spaces (`Jul 3 10:05:25 2005`, `1, 2, 3`). So a list, a date or a size is one variable
//! whatever its token count, which is what keeps templates of varying length together.
//!
//! Everything here is linear in the line: one pass classifies its bytes into bit masks (64
//! bytes a word: whitespace, digits, split characters), so that cutting a chunk, asking
//! whether a piece holds a digit or where its first `=` is, are a few bit operations rather
//! than scans; one pass folds; and there are at most `max_tokens` tokens (the rest of a longer
//! line is one trailing variable).
//!
//! The fold is replayed rather than redone for the lines of a shape already folded (see
//! [`Replay`]): in steady state most lines come in a few shapes, and the fold is a third of the
//! cost of tokenising them.

mod chunks;
mod replay;
mod scan;
mod skeletons;
mod words;

use std::collections::HashMap;

use crate::reduce::hash::{BuildIdentity, combine, hash_byte, mix};
use chunks::{Chunks, Found, Messages};
use replay::{MAX_REPLAYED, MAX_REPLAYS, REPLAY_START, Replay, shape};
use scan::{Cursor, Mask, Masks, hash_span};
use skeletons::Skeletons;
use words::{PATH, UNIT, is_date_word, is_ident, is_key, is_name_with_index, is_pathlike, is_unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Var,
    Word,
    Punct,
}

/// One token: where it is in the message and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: Kind,
    pub start: u32,
    pub end: u32,
    /// No whitespace before it.
    pub glued: bool,
    /// Hash of the text for words and punctuation; a constant for variables.
    pub hash: u64,
    /// For a word, what the fold asks of its text ([`UNIT`], [`PATH`]); 0 otherwise.
    pub facts: u8,
}

pub(super) const VAR_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

impl Token {
    pub fn text<'a>(&self, message: &'a str) -> &'a str {
        &message[self.start as usize..self.end as usize]
    }
}

const SPACE: u8 = 1;
const DIGIT: u8 = 2;
/// `,` `;` `|` `=` `:`: a chunk holding one is split.
const SPLIT: u8 = 4;
const OPEN: u8 = 8;
const TRAIL: u8 = 16;
/// `,` `;` `|`: a chunk holding one is cut into pieces.
const SEP: u8 = 32;

/// Byte classes, so that one scan of a chunk says whether it needs more than one token.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut k = 0;
        if b.is_ascii_whitespace() {
            k |= SPACE;
        }
        if b.is_ascii_digit() {
            k |= DIGIT;
        }
        if matches!(b, b',' | b';' | b'|' | b'=' | b':') {
            k |= SPLIT;
        }
        if matches!(b, b',' | b';' | b'|') {
            k |= SEP;
        }
        if is_opener(b) {
            k |= OPEN;
        }
        if is_trailing(b) {
            k |= TRAIL;
        }
        t[c] = k;
        c += 1;
    }
    t
};

const fn is_opener(c: u8) -> bool {
    matches!(c, b'(' | b'[' | b'{' | b'<' | b'"' | b'\'')
}

const fn is_trailing(c: u8) -> bool {
    matches!(
        c,
        b')' | b']' | b'}' | b'>' | b'"' | b'\'' | b',' | b';' | b'.' | b':' | b'!' | b'?'
    )
}

fn opener(c: u8) -> bool {
    CLASS[c as usize] & OPEN != 0
}

fn trailing(c: u8) -> bool {
    CLASS[c as usize] & TRAIL != 0
}

/// The closer of an opener (quotes are their own pair); other bytes map to themselves.
static PAIR: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            b'(' => b')',
            b'[' => b']',
            b'{' => b'}',
            b'<' => b'>',
            q => q,
        };
        c += 1;
    }
    t
};

fn pair_of(open: u8) -> u8 {
    PAIR[open as usize]
}

/// The opening bracket of a closing one (`)` → `(`), or 0.
static OPENER_OF: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b')' as usize] = b'(';
    t[b']' as usize] = b'[';
    t[b'}' as usize] = b'{';
    t[b'>' as usize] = b'<';
    t
};

fn bracket_index(open: u8) -> Option<usize> {
    BRACKET[open as usize].checked_sub(1).map(usize::from)
}

/// One more than the index of an opening bracket, 0 for other bytes.
static BRACKET: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'(' as usize] = 1;
    t[b'[' as usize] = 2;
    t[b'{' as usize] = 3;
    t[b'<' as usize] = 4;
    t
};

fn opener_of_bracket(close: u8) -> Option<u8> {
    Some(OPENER_OF[close as usize]).filter(|&o| o != 0)
}

/// What [`Tokenizer::begin`] found: whether the line is cut at `max_tokens`, and the name of
/// the memory's entry its tokens are in, when they were remembered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Begun {
    pub cut: bool,
    pub remembered: Option<u64>,
}

impl Begun {
    fn cut(cut: bool) -> Begun {
        Begun {
            cut,
            remembered: None,
        }
    }
}

/// Names of the skeletons' memory, apart from the messages' (each counts from 0).
const SKELETON_NAMES: u64 = 1 << 63;

/// Where the begun message's tokens are remembered, if they are.
#[derive(Debug, Default)]
enum Entry {
    /// Only in `out`.
    #[default]
    None,
    Skeleton(Found),
    Message(Found),
}

/// Limits on one line's tokens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_tokens: usize,
    pub max_word_bytes: usize,
}

/// Reusable buffers, and the folds already worked out: tokenising allocates nothing once they
/// have grown, but to keep a new fold.
#[derive(Debug, Default)]
pub(super) struct Tokenizer {
    raw: Vec<Token>,
    tails: Vec<(u32, u32)>,
    /// For each raw token, the set of closers that occur after it (bit per closer kind).
    closers_after: Vec<u8>,
    masks: Masks,
    /// The shape of each raw token (see [`Replay`]).
    shapes: Vec<u16>,
    /// Folds already worked out, by the hash of the raw tokens' shapes they were for.
    replays: HashMap<u64, Replay, BuildIdentity>,
    /// Shapes and steps held by `replays`, which are forgotten all at once past a cap.
    replayed_tokens: usize,
    /// Raw tokens of chunks cut before (see [`Chunks`]).
    chunks: Chunks,
    /// Short messages tokenised before (see [`Messages`]).
    messages: Messages,
    /// Longer ones, by their skeletons (see [`Skeletons`]).
    skeletons: Skeletons,
    entry: Entry,
    pub out: Vec<Token>,
    /// [`key_hash`] of `out`.
    pub shape: u64,
    /// Tests only: fold every replayed line too, and check that both agree.
    #[cfg(test)]
    pub cross_check: bool,
}

fn closer_bit(c: u8) -> u8 {
    CLOSER_BIT[c as usize]
}

static CLOSER_BIT: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b')' as usize] = 1;
    t[b']' as usize] = 2;
    t[b'}' as usize] = 4;
    t[b'>' as usize] = 8;
    t[b'"' as usize] = 16;
    t[b'\'' as usize] = 32;
    t
};

impl Tokenizer {
    /// Tokenises `message` into `self.out`; returns whether the line was cut at `max_tokens`.
    #[cfg(test)]
    pub fn run(&mut self, message: &str, limits: Limits) -> bool {
        let begun = self.begin(message, limits);
        self.finish(message, limits);
        begun.cut
    }

    /// Tokenises `message` as far as its shape: a message remembered (its skeleton, or its
    /// bytes) has its tokens in a memory, and into `self.out` only on [`Tokenizer::finish`],
    /// which a caller that remembers what it made of the memory's entry may never need.
    pub fn begin(&mut self, message: &str, limits: Limits) -> Begun {
        let b = message.as_bytes();
        let held = (limits.max_tokens, limits.max_word_bytes);
        self.entry = Entry::None;
        if !chunks::message_wanted(b) {
            if !Skeletons::wanted(b) {
                return Begun::cut(self.cut_and_fold(message, limits));
            }
            self.skeletons.load(b);
            if let Some(found) = self.skeletons.find(held) {
                self.shape = found.shape;
                self.entry = Entry::Skeleton(found);
                return Begun {
                    cut: found.cut,
                    remembered: Some(found.name | SKELETON_NAMES),
                };
            }
            let cut = self.cut_and_fold(message, limits);
            self.skeletons.put(b, &self.out, self.shape, cut, held);
            return Begun::cut(cut);
        }
        let (hash, _) = hash_span(b, 0, b.len());
        if let Some(found) = self.messages.get(hash, b, held) {
            self.shape = found.shape;
            self.entry = Entry::Message(found);
            return Begun {
                cut: found.cut,
                remembered: Some(found.name),
            };
        }
        let cut = self.cut_and_fold(message, limits);
        if self.messages.seen(hash) {
            let tokens = self.out.iter().copied();
            self.messages.put(hash, b, tokens, self.shape, cut, held);
        }
        Begun::cut(cut)
    }

    /// The tokens of the message begun into `self.out`.
    #[cfg_attr(not(test), allow(unused_variables))]
    pub fn finish(&mut self, message: &str, limits: Limits) {
        let cut = match &self.entry {
            Entry::None => return,
            Entry::Skeleton(found) => {
                self.skeletons.get(found, &mut self.out);
                found.cut
            }
            Entry::Message(found) => {
                self.out.clear();
                self.out.extend_from_slice(self.messages.tokens(found));
                found.cut
            }
        };
        #[cfg(test)]
        self.check_remembered(message, limits, cut);
    }

    /// The span of the remembered message's token `i` in its entry (for a skeleton, in its
    /// positions, which [`Tokenizer::positions`] maps to any of its messages').
    pub fn entry_span(&self, i: usize) -> Option<(u32, u32)> {
        match &self.entry {
            Entry::Skeleton(found) => Some(self.skeletons.token(found, i)),
            Entry::Message(found) => {
                let t = &self.messages.tokens(found)[i];
                Some((t.start, t.end))
            }
            Entry::None => None,
        }
    }

    /// Positions in the begun message's entry (ascending) to the message's.
    pub fn positions(
        &self,
        spans: impl Iterator<Item = (u32, u32)>,
        mut each: impl FnMut(u32, u32),
    ) {
        match &self.entry {
            Entry::Skeleton(_) => {
                let mut shift = self.skeletons.shifter();
                for (start, end) in spans {
                    let start = shift(start);
                    each(start, shift(end));
                }
            }
            _ => spans.for_each(|(start, end)| each(start, end)),
        }
    }

    /// Tests only: what a memory gave for `message` is what cutting and folding it gives.
    #[cfg(test)]
    fn check_remembered(&self, message: &str, limits: Limits, cut: bool) {
        if self.cross_check {
            let mut fresh = Tokenizer::default();
            assert_eq!(fresh.cut_and_fold(message, limits), cut, "{message:?}");
            assert_eq!((&fresh.out, fresh.shape), (&self.out, self.shape));
        }
    }

    /// Tokenises `message` (see [`Tokenizer::run`]).
    fn cut_and_fold(&mut self, message: &str, limits: Limits) -> bool {
        self.raw.clear();
        self.shapes.clear();
        self.out.clear();
        self.masks.clear();
        let b = message.as_bytes();
        let len = b.len().min(u32::MAX as usize);
        let b = &b[..len];
        let budget = limits.max_tokens.max(2) - 1;
        let mut cut = false;
        let mut i = self.masks.skip_space(b, 0);
        while i < b.len() {
            if self.raw.len() >= budget {
                // The rest of the line, whatever it holds, is one variable.
                let mut end = b.len();
                while end > i && b[end - 1].is_ascii_whitespace() {
                    end -= 1;
                }
                self.push_raw_var(var(i, end, false));
                cut = true;
                break;
            }
            let start = i;
            i = self.masks.chunk_end(b, i);
            let split = self.masks.any(Mask::Split, start, i);
            // Most chunks are a plain word or number: nothing to peel or split.
            let plain = !split
                && CLASS[b[start] as usize] & OPEN == 0
                && CLASS[b[i - 1] as usize] & TRAIL == 0;
            if plain {
                let digit = self.masks.any(Mask::Digit, start, i);
                self.core_known(b, start, i, false, digit, limits);
            } else {
                // Chunks to peel or split cost the most, and repeat the most.
                let (hash, _) = hash_span(b, start, i);
                let max_word = limits.max_word_bytes;
                if let Some((raw, shapes)) = self.chunks.get(hash, &b[start..i], max_word) {
                    let at = start as u32;
                    self.raw.extend(raw.iter().map(|t| Token {
                        start: t.start + at,
                        end: t.end + at,
                        ..*t
                    }));
                    self.shapes.extend_from_slice(shapes);
                    #[cfg(test)]
                    if self.cross_check {
                        self.check_chunk(b, start, i, shapes.len(), limits);
                    }
                } else {
                    let before = self.raw.len();
                    if !split {
                        self.simple_piece(b, start, i, false, limits);
                    } else {
                        self.chunk(b, start, i, limits);
                    }
                    self.chunks.put(
                        hash,
                        &b[start..i],
                        start,
                        &self.raw[before..],
                        &self.shapes[before..],
                        max_word,
                    );
                }
            }
            i = self.masks.skip_space(b, i);
        }
        if self.raw.len() > limits.max_tokens {
            // A chunk can yield several tokens; fold the overflow into one trailing variable.
            let keep = limits.max_tokens - 1;
            let start = self.raw[keep].start;
            let end = self.raw.last().map_or(start, |t| t.end);
            let glued = self.raw[keep].glued;
            self.raw.truncate(keep);
            self.shapes.truncate(keep);
            self.push_raw_var(var(start as usize, end as usize, glued));
            cut = true;
        }
        self.fold_or_replay(b);
        cut
    }

    /// Tests only: the `count` raw tokens just taken from [`Chunks`] for the chunk at
    /// `start..end` are what cutting it gives.
    #[cfg(test)]
    fn check_chunk(&self, b: &[u8], start: usize, end: usize, count: usize, limits: Limits) {
        let mut fresh = Tokenizer::default();
        assert_eq!(fresh.masks.chunk_end(b, start), end);
        if fresh.masks.any(Mask::Split, start, end) {
            fresh.chunk(b, start, end, limits);
        } else {
            fresh.simple_piece(b, start, end, false, limits);
        }
        let line = String::from_utf8_lossy(b);
        let n = self.raw.len();
        assert_eq!(
            self.raw[n - count..],
            fresh.raw[..],
            "{line:?} {start}..{end}"
        );
        assert_eq!(
            self.shapes[n - count..],
            fresh.shapes[..],
            "{line:?} {start}..{end}"
        );
    }

    /// The fold, or its replay when raw tokens of these shapes were folded before.
    fn fold_or_replay(&mut self, b: &[u8]) {
        debug_assert_eq!(self.shapes.len(), self.raw.len());
        let mut key = REPLAY_START;
        for &s in &self.shapes {
            key = combine(key, u64::from(s));
        }
        if let Some(r) = self.replays.get(&key)
            && r.shapes == self.shapes
        {
            r.apply(&self.raw, &mut self.out);
            self.shape = key_hash(&self.out);
            #[cfg(test)]
            if self.cross_check {
                let replayed = std::mem::take(&mut self.out);
                self.fold(b);
                assert_eq!(replayed, self.out, "{:?}", String::from_utf8_lossy(b));
            }
            return;
        }
        self.fold(b);
        self.shape = key_hash(&self.out);
        if let Some(r) = Replay::record(&self.raw, &self.shapes, &self.out) {
            let size = r.shapes.len() + r.steps.len();
            if self.replays.len() >= MAX_REPLAYS || self.replayed_tokens + size > MAX_REPLAYED {
                self.replays.clear();
                self.replayed_tokens = 0;
            }
            self.replayed_tokens += size;
            self.replays.insert(key, r);
        }
    }

    /// A chunk holding `,` `;` `|` (or, the mask being wider, only `=` `:` `<` `>`).
    fn chunk(&mut self, b: &[u8], start: usize, end: usize, limits: Limits) {
        let mut last = start;
        let mut at = start;
        while let Some(k) = self.masks.first(Mask::Split, at, end) {
            at = k + 1;
            if CLASS[b[k] as usize] & SEP == 0 {
                continue;
            }
            if k > last {
                self.any_piece(b, last, k, last != start, limits);
            }
            self.push_punct(b, k, k != start);
            last = k + 1;
        }
        if last < end {
            self.any_piece(b, last, end, last != start, limits);
        }
    }

    // Inlined, like the other steps of a chunk below: they run a few times per chunk, and a
    // call costs about what they do.
    #[inline(always)]
    fn any_piece(&mut self, b: &[u8], i: usize, j: usize, glued: bool, limits: Limits) {
        if self.masks.any(Mask::Split, i, j) {
            self.piece(b, i, j, glued, limits);
        } else {
            self.simple_piece(b, i, j, glued, limits);
        }
    }

    /// [`Tokenizer::piece`] for a piece without `=` or `:`: openers, a core, trailing
    /// punctuation, in one step.
    #[inline(always)]
    fn simple_piece(
        &mut self,
        b: &[u8],
        mut i: usize,
        mut j: usize,
        mut glued: bool,
        limits: Limits,
    ) {
        let piece_start = i;
        while i < j && opener(b[i]) {
            self.push_punct(b, i, glued);
            glued = true;
            i += 1;
        }
        let tail_end = j;
        // A closing bracket whose opener is inside stays (`LOCAL(0)`). The opening brackets
        // inside, a bit per kind, are looked for once: what is peeled is never one.
        let mut inside: Option<u8> = None;
        while j > i && trailing(b[j - 1]) {
            let kind = BRACKET[OPENER_OF[b[j - 1] as usize] as usize];
            if kind != 0 {
                let inside = *inside.get_or_insert_with(|| {
                    b[i..j].iter().fold(0, |m, &c| m | 1 << BRACKET[c as usize])
                });
                if inside & 1 << kind != 0 {
                    break;
                }
            }
            j -= 1;
        }
        if i == j {
            // `()`, `[]`: an empty value, still a variable slot.
            if i > piece_start && j < tail_end && b[j] == pair_of(b[i - 1]) {
                self.push_raw_var(var(i, i, true));
            }
        } else {
            self.core(b, i, j, glued, limits);
        }
        for k in j..tail_end {
            self.push_punct(b, k, true);
        }
    }

    /// One piece of a chunk: `(`key`=`value`)`, peeled iteratively (a value may itself be
    /// `k=v`), trailing punctuation emitted after the innermost core.
    fn piece(&mut self, b: &[u8], mut i: usize, mut j: usize, mut glued: bool, limits: Limits) {
        let tails_base = self.tails.len();
        // Where each kind of opening bracket last occurs: a closing bracket at the end is
        // peeled only when its opener is not inside. Trailing characters are never openers,
        // so one scan (made when first needed) serves every step below.
        let mut last_open: Option<[Option<usize>; 4]> = None;
        let (mut next_eq, mut next_colon) = (Cursor(i), Cursor(i));
        loop {
            let piece_start = i;
            while i < j && opener(b[i]) {
                self.push_punct(b, i, glued);
                glued = true;
                i += 1;
            }
            let tail_end = j;
            while j > i && trailing(b[j - 1]) {
                let c = b[j - 1];
                let inside = opener_of_bracket(c)
                    .and_then(bracket_index)
                    .is_some_and(|t| {
                        let last = last_open.get_or_insert_with(|| {
                            let mut last = [None; 4];
                            for (k, &c) in b[i..j].iter().enumerate() {
                                if let Some(t) = bracket_index(c) {
                                    last[t] = Some(i + k);
                                }
                            }
                            last
                        });
                        last[t].is_some_and(|at| at >= i)
                    });
                if inside {
                    break;
                }
                j -= 1;
            }
            self.tails.push((j as u32, tail_end as u32));
            let core = &b[i..j];
            // The first `=` and `:` of the core. `i` only grows, so each search resumes where
            // the last one stopped: `k:k:k:…` is not rescanned at every step.
            let eq = next_eq.find(&self.masks, b, i, j, b'=');
            let colon = next_colon.find(&self.masks, b, i, j, b':');
            if let Some(k) = eq.filter(|&k| k > 0 && is_key(&core[..k])) {
                self.core(b, i, i + k, glued, limits);
                self.push_punct(b, i + k, true);
                if i + k + 1 == j {
                    self.push_raw_var(var(j, j, true));
                    break;
                }
                i += k + 1;
                glued = true;
                continue;
            }
            // (A quote before the colon is `"key":`, below: no identifier ends in one.)
            let unquoted = |k: usize| !matches!(core[k - 1], b'"' | b'\'');
            if let Some(k) = colon
                .filter(|&k| k > 0 && k + 1 < core.len() && unquoted(k) && is_ident(&core[..k]))
            {
                self.core(b, i, i + k, glued, limits);
                self.push_punct(b, i + k, true);
                i += k + 1;
                glued = true;
                continue;
            }
            // `"key":value`, as in JSON: the key, its closing quote, the colon, the value.
            let quoted_key = colon.filter(|&k| {
                k > 1
                    && k + 1 < core.len()
                    && matches!(core[k - 1], b'"' | b'\'')
                    && is_ident(&core[..k - 1])
            });
            if let Some(k) = quoted_key {
                self.core(b, i, i + k - 1, glued, limits);
                self.push_punct(b, i + k - 1, true);
                self.push_punct(b, i + k, true);
                i += k + 1;
                glued = true;
                continue;
            }
            if core.is_empty() {
                // `()`, `[]`: an empty value, still a variable slot.
                if i > piece_start && j < tail_end && b[j] == pair_of(b[i - 1]) {
                    self.push_raw_var(var(i, i, true));
                }
            } else {
                self.core(b, i, j, glued, limits);
            }
            break;
        }
        while self.tails.len() > tails_base {
            let (s, e) = self.tails.pop().expect("non-empty");
            for k in s..e {
                self.push_punct(b, k as usize, true);
            }
        }
    }

    #[inline(always)]
    fn core(&mut self, b: &[u8], i: usize, j: usize, glued: bool, limits: Limits) {
        if i == j {
            return;
        }
        let digit = self.masks.any(Mask::Digit, i, j);
        self.core_known(b, i, j, glued, digit, limits);
    }

    #[inline(always)]
    fn core_known(
        &mut self,
        b: &[u8],
        i: usize,
        j: usize,
        glued: bool,
        digit: bool,
        limits: Limits,
    ) {
        let t = &b[i..j];
        let variable = if digit {
            !is_name_with_index(t)
        } else {
            t.len() > limits.max_word_bytes || is_date_word(t)
        };
        if variable {
            self.push_raw_var(var(i, j, glued));
        } else {
            let (hash, dotted) = hash_span(b, i, j);
            let mut facts = 0;
            if is_unit(t) {
                facts |= UNIT;
            }
            if dotted && is_pathlike(t) {
                facts |= PATH;
            }
            self.shapes.push(shape(Kind::Word, glued, facts));
            self.raw.push(Token {
                kind: Kind::Word,
                start: i as u32,
                end: j as u32,
                glued,
                hash,
                facts,
            });
        }
    }

    fn push_raw_var(&mut self, v: Token) {
        self.shapes
            .push(shape(Kind::Var, v.glued, u8::from(v.start == v.end)));
        self.raw.push(v);
    }

    /// The folding pass (see the module doc), as a shift-reduce over the raw tokens.
    fn fold(&mut self, b: &[u8]) {
        // Filled on first use: only a value glued to a lone opener needs it.
        self.closers_after.clear();
        for k in 0..self.raw.len() {
            let t = self.raw[k];
            match t.kind {
                Kind::Word => {
                    let after_var = self.out.last().is_some_and(|l| l.kind == Kind::Var);
                    if after_var && t.facts & UNIT != 0 {
                        self.out.last_mut().expect("after a variable").end = t.end;
                    } else if after_var && !t.glued && t.facts & PATH != 0 {
                        self.push_var(b, var(t.start as usize, t.end as usize, t.glued), k);
                    } else {
                        self.out.push(t);
                    }
                }
                Kind::Punct => {
                    self.out.push(t);
                    self.reduce_group(b, k);
                }
                Kind::Var => self.push_var(b, t, k),
            }
        }
    }

    /// `( v )` → v, and `(host)` next to a variable → a variable.
    fn reduce_group(&mut self, b: &[u8], k: usize) {
        let n = self.out.len();
        if n < 3 {
            return;
        }
        let (open, mid, close) = (self.out[n - 3], self.out[n - 2], self.out[n - 1]);
        if !(close.glued && mid.glued && open.kind == Kind::Punct && mid.kind != Kind::Punct) {
            return;
        }
        let c = b[close.start as usize];
        let o = b[open.start as usize];
        if !opener(o) || pair_of(o) != c {
            return;
        }
        let reduce = match mid.kind {
            Kind::Var => true,
            Kind::Word => mid.facts & PATH != 0,
            Kind::Punct => false,
        };
        if reduce {
            self.out.truncate(n - 3);
            self.push_var(
                b,
                var(open.start as usize, close.end as usize, open.glued),
                k,
            );
        }
    }

    /// Whether closer `c` occurs among the raw tokens after `k`.
    fn closer_after(&mut self, b: &[u8], k: usize, c: u8) -> bool {
        if self.closers_after.len() != self.raw.len() {
            self.closers_after.resize(self.raw.len(), 0);
            let mut seen = 0u8;
            for k in (0..self.raw.len()).rev() {
                self.closers_after[k] = seen;
                let t = self.raw[k];
                if t.kind == Kind::Punct {
                    seen |= closer_bit(b[t.start as usize]);
                }
            }
        }
        self.closers_after[k] & closer_bit(c) != 0
    }

    fn push_punct(&mut self, b: &[u8], i: usize, glued: bool) {
        self.shapes.push(shape(Kind::Punct, glued, b[i]));
        self.raw.push(punct(b, i, glued));
    }

    #[inline(always)]
    fn push_var(&mut self, b: &[u8], mut v: Token, k: usize) {
        // Iterative, not recursive: a line may hold thousands of these in a row.
        while !v.glued {
            let n = self.out.len();
            let Some(last) = self.out.last().copied() else {
                break;
            };
            // A path or host just before, across a space, is part of the value.
            if last.kind == Kind::Word && !last.glued && last.facts & PATH != 0 {
                self.out.pop();
                v = var(last.start as usize, v.end as usize, last.glued);
                continue;
            }
            // `(host)` before a variable: the group is a value too.
            if n >= 3 {
                let (open, mid) = (self.out[n - 3], self.out[n - 2]);
                let o = b[open.start as usize];
                if open.kind == Kind::Punct
                    && opener(o)
                    && last.kind == Kind::Punct
                    && b[last.start as usize] == pair_of(o)
                    && mid.kind == Kind::Word
                    && mid.glued
                    && last.glued
                    && mid.facts & PATH != 0
                {
                    self.out.truncate(n - 3);
                    v = var(open.start as usize, v.end as usize, open.glued);
                    continue;
                }
            }
            break;
        }
        // A lone opener glued to a value (`<1 sec`, `#3`) with no closer later: part of it.
        let opener = self.out.last().copied().filter(|last| {
            v.glued && last.kind == Kind::Punct && !last.glued && opener(b[last.start as usize])
        });
        let lone_opener =
            opener.is_some_and(|o| !self.closer_after(b, k, pair_of(b[o.start as usize])));
        if lone_opener {
            let last = self.out.pop().expect("checked");
            v.start = last.start;
            v.glued = last.glued;
        }
        // Runs of variables joined by glued punctuation or spaces are one variable. The look
        // back is bounded, so that `((((…` cannot make this quadratic.
        let mut m = self.out.len();
        let floor = m.saturating_sub(MAX_JOINING_PUNCT + 1);
        while m > floor {
            let t = self.out[m - 1];
            match t.kind {
                Kind::Var => {
                    v.start = t.start;
                    v.glued = t.glued;
                    self.out.truncate(m - 1);
                    break;
                }
                Kind::Punct if t.glued && !matches!(b[t.start as usize], b'"' | b'\'') => m -= 1,
                _ => break,
            }
        }
        self.out.push(v);
    }
}

/// Punctuation characters that may join two variables into one (`10:05:25`, `1),(2`).
const MAX_JOINING_PUNCT: usize = 8;

fn var(start: usize, end: usize, glued: bool) -> Token {
    Token {
        kind: Kind::Var,
        start: start as u32,
        end: end as u32,
        glued,
        hash: VAR_HASH,
        facts: 0,
    }
}

fn punct(b: &[u8], i: usize, glued: bool) -> Token {
    Token {
        kind: Kind::Punct,
        start: i as u32,
        end: i as u32 + 1,
        glued,
        hash: BYTE_HASH[b[i] as usize],
        facts: 0,
    }
}

/// `hash_bytes` of each single byte, for punctuation.
static BYTE_HASH: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = hash_byte(c as u8);
        c += 1;
    }
    t
};

const KEY_START: u64 = 0x243f_6a88_85a3_08d3;

/// The hash of a tokenised line's shape: its words and punctuation, and where variables are.
pub(super) fn key_hash(tokens: &[Token]) -> u64 {
    let mut h = KEY_START;
    for t in tokens {
        h = combine(h, t.hash ^ ((t.kind as u64) << 62));
    }
    mix(h ^ tokens.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::hash::hash_bytes;

    const LIMITS: Limits = Limits {
        max_tokens: 128,
        max_word_bytes: 256,
    };

    fn show(line: &str) -> String {
        let mut t = Tokenizer::default();
        t.run(line, LIMITS);
        t.out
            .iter()
            .map(|tok| match tok.kind {
                Kind::Var => format!("<{}>", tok.text(line)),
                _ => tok.text(line).to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn numbers_glued_to_units_and_punctuation_are_one_variable() {
        assert_eq!(show("took 12ms"), "took <12ms>");
        assert_eq!(show("pid (1234) [77]"), "pid <(1234) [77]>");
        assert_eq!(show("listening on port:8080"), "listening on port : <8080>");
        assert_eq!(show("size 16.0 KB, free 3"), "size <16.0 KB> , free <3>");
        assert_eq!(show("lifetime <1 sec"), "lifetime <<1 sec>");
    }

    #[test]
    fn key_value_pairs_split_at_the_separator() {
        assert_eq!(show("uid=0 user=root"), "uid = <0> user = root");
        assert_eq!(show("logname= tty=x"), "logname = <> tty = x");
        assert_eq!(show("GET /a?x=1&y=2 HTTP/1.1"), "GET </a?x=1&y=2 HTTP/1.1>");
    }

    #[test]
    fn hosts_ports_paths_and_dates_are_variables() {
        assert_eq!(
            show("proxy.example.com:5070 open through 10.0.0.1:80"),
            "<proxy.example.com:5070> open through <10.0.0.1:80>"
        );
        assert_eq!(
            show("connection from 1.2.3.4 (a.b.com) at Sun Jul 10 03:55:15 2005"),
            "connection from <1.2.3.4 (a.b.com)> at <Sun Jul 10 03:55:15 2005>"
        );
        assert_eq!(show("from 1.2.3.4 () at x"), "from <1.2.3.4 ()> at x");
        assert_eq!(
            show("synchronized to LOCAL(0), stratum 2"),
            "synchronized to <LOCAL(0)> , stratum <2>"
        );
    }

    #[test]
    fn lists_of_values_are_one_variable() {
        assert_eq!(show("irqs 3 4 5 10 11 ok"), "irqs <3 4 5 10 11> ok");
        assert_eq!(show("ids 1, 2, 3."), "ids <1, 2, 3> .");
        assert_eq!(
            show("Fan speeds ( 1 2 **** 3 )"),
            "Fan speeds ( <1 2> **** <3> )"
        );
    }

    #[test]
    fn names_with_an_index_stay_words() {
        assert_eq!(show("via interface eth0"), "via interface eth0");
        assert_eq!(show("node-12 up"), "<node-12> up");
    }

    /// Lines for the tests here and in `scan` and `words`: every byte class, at and across 8- and 64-byte boundaries.
    pub(super) fn sample_lines() -> Vec<String> {
        let mut lines: Vec<String> = [
            "plainword rest",
            "a1",
            "",
            "   ",
            "key=value,x;y|z: 12:00 \t tab",
            "é€ unicode ünïcödé42 end",
            "ctl\x01char\x1fhere\x0bmore\x0c\r\n",
            "exactly8 bytes12 x",
            "0123456789abcdef:ghij,",
            "sixteen_bytes_ab sixteen_bytes_abc x",
            "a<b>c (x) [y] {z} \"q\" 'r' a.b/c .. ./ /.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let alphabet: Vec<char> = "aZ09_-./:=,;|()[]{}<>\"'!? \t\x01\x0bé".chars().collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in 0..300 {
            let mut line = String::new();
            for _ in 0..n % 150 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                line.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            lines.push(line);
        }
        lines
    }

    #[test]
    fn replayed_folds_are_the_folds() {
        // Each line three times, with its numbers changed: the first folds, the others replay
        // (checked against the fold by `cross_check`), and all agree with a fresh tokenizer.
        let shapes = [
            "took 12ms",
            "pid (1234) [77]",
            "listening on port:8080",
            "size 16.0 KB, free 3",
            "lifetime <1 sec",
            "uid=0 user=root logname= tty=x",
            "GET /a?x=1&y=2 HTTP/1.1",
            "connection from 1.2.3.4 (a.b.com) at Sun Jul 10 03:55:15 2005",
            "from 1.2.3.4 () at x",
            "synchronized to LOCAL(0), stratum 2",
            "irqs 3 4 5 10 11 ok",
            "ids 1, 2, 3.",
            "Fan speeds ( 1 2 **** 3 )",
            r#"{"level":"info","took":12,"msg":"a b"}"#,
            r#"tag="View Lock", name=x"#,
            "x (a.b) 7 (c/d) e",
            "k= ( ) 1",
            "#3 <4 (5",
        ];
        let mut lines: Vec<String> = Vec::new();
        for round in 0..3 {
            for s in shapes {
                lines.push(s.replace(|c: char| c.is_ascii_digit(), &(round + 1).to_string()));
            }
        }
        // Longer than a message remembered whole: remembered by their skeletons, with runs of
        // digits of one to five (a skeleton tells one from more only right after a letter,
        // and never two from four).
        for digits in ["1", "22", "333", "4444", "4", "55555"] {
            for s in shapes {
                let long = format!("{s} then {s} and again {s} eth1 x{digits}");
                lines.push(long.replace(|c: char| c.is_ascii_digit(), digits));
            }
        }
        // Three times: the third meets chunks and messages remembered (checked against
        // cutting them by `cross_check`).
        for _ in 0..3 {
            lines.extend(sample_lines());
        }
        for limits in [
            LIMITS,
            Limits {
                max_tokens: 6,
                max_word_bytes: 4,
            },
        ] {
            let mut t = Tokenizer {
                cross_check: true,
                ..Tokenizer::default()
            };
            for line in &lines {
                let cut = t.run(line, limits);
                let mut fresh = Tokenizer::default();
                assert_eq!(fresh.run(line, limits), cut, "{line:?}");
                assert_eq!(fresh.out, t.out, "{line:?}");
                assert_eq!(t.shape, key_hash(&t.out), "{line:?}");
            }
            assert!(
                t.replays.len() < lines.len(),
                "lines of one shape share a replay"
            );
            assert!(
                t.skeletons.len() > 10,
                "long lines of one skeleton share its tokens"
            );
        }
    }

    #[test]
    fn byte_hashes_are_the_hashes_of_one_byte() {
        for c in 0..=255u8 {
            assert_eq!(BYTE_HASH[c as usize], hash_bytes(&[c]));
        }
    }

    #[test]
    fn json_keys_and_values() {
        assert_eq!(
            show(r#"{"level":"info","took":12}"#),
            r#"{ " level " : " info " , " took " : <12> }"#
        );
    }

    #[test]
    fn quotes_and_brackets_are_punctuation() {
        assert_eq!(
            show(r#"tag="View Lock", name=x"#),
            r#"tag = " View Lock " , name = x"#
        );
        assert_eq!(show("'Active'"), "' Active '");
    }

    #[test]
    fn long_lines_end_in_one_variable() {
        let line = (0..1000)
            .map(|i| "ab".repeat(i % 7 + 1))
            .collect::<Vec<_>>()
            .join(" ");
        let mut t = Tokenizer::default();
        let cut = t.run(
            &line,
            Limits {
                max_tokens: 8,
                max_word_bytes: 256,
            },
        );
        assert!(cut);
        assert_eq!(t.out.len(), 8);
        let last = t.out.last().unwrap();
        assert_eq!(last.kind, Kind::Var);
        assert_eq!(last.end as usize, line.len());
    }

    #[test]
    fn spans_point_into_the_message() {
        let line = "a=1 b (2) c";
        let mut t = Tokenizer::default();
        t.run(line, LIMITS);
        for tok in &t.out {
            assert!(tok.start <= tok.end && tok.end as usize <= line.len());
        }
    }
}
