//! Raw tokens of chunks already cut, by their bytes: a chunk's raw tokens depend on its bytes
//! alone, and most lines repeat most of their bracketed, quoted and `key=value` chunks byte
//! for byte (`"GET`, `HTTP/1.1"`, a user agent's words, the second of a timestamp).

use std::collections::HashMap;

use super::Token;
use crate::reduce::hash::BuildIdentity;

/// Chunks remembered, and the bytes and tokens they may hold in all; all are forgotten when
/// one is reached (a chunk costs one cut to learn again). A longer chunk is not remembered.
const MAX_CHUNKS: usize = 4096;
const MAX_HELD_BYTES: usize = 1 << 18;
const MAX_HELD_TOKENS: usize = 1 << 15;
const MAX_CHUNK_BYTES: usize = 256;
/// Hashes seen once, by their low bits.
const SEEN: usize = 1 << 12;

/// Hashes seen once: a chunk or message is remembered the second time it comes, so that those
/// seen only once (an address, a path with an id, a unique file name) do not push the others
/// out.
#[derive(Debug, Default)]
struct Seen(Vec<u64>);

impl Seen {
    /// Whether `hash` was seen before; it is from now on.
    fn before(&mut self, hash: u64) -> bool {
        if self.0.is_empty() {
            self.0.resize(SEEN, 0);
        }
        let seen = &mut self.0[hash as usize % SEEN];
        if *seen != hash {
            *seen = hash;
            return false;
        }
        true
    }
}

/// Where a remembered chunk's bytes and tokens are.
#[derive(Debug, Clone, Copy)]
struct Held {
    bytes: u32,
    len: u32,
    tokens: u32,
    count: u32,
}

#[derive(Debug, Default)]
pub(super) struct Chunks {
    map: HashMap<u64, Held, BuildIdentity>,
    bytes: Vec<u8>,
    /// Spans relative to the chunk's start.
    tokens: Vec<Token>,
    shapes: Vec<u16>,
    seen: Seen,
    /// The word length limit the tokens were cut under.
    max_word_bytes: usize,
}

impl Chunks {
    /// The raw tokens (spans relative to the chunk) and shapes of `chunk`, whose hash is
    /// `hash`, when it was remembered under the same word length limit.
    #[inline]
    pub(super) fn get(
        &self,
        hash: u64,
        chunk: &[u8],
        max_word_bytes: usize,
    ) -> Option<(&[Token], &[u16])> {
        let h = self.map.get(&hash)?;
        let at = h.bytes as usize;
        if self.bytes.get(at..at + h.len as usize) != Some(chunk)
            || self.max_word_bytes != max_word_bytes
        {
            return None;
        }
        let k = h.tokens as usize..(h.tokens + h.count) as usize;
        Some((&self.tokens[k.clone()], &self.shapes[k]))
    }

    /// Remembers a chunk just cut at `start` into `tokens` and `shapes`, if it was seen before.
    pub(super) fn put(
        &mut self,
        hash: u64,
        chunk: &[u8],
        start: usize,
        tokens: &[Token],
        shapes: &[u16],
        max_word_bytes: usize,
    ) {
        if chunk.len() > MAX_CHUNK_BYTES {
            return;
        }
        if !self.seen.before(hash) {
            return;
        }
        if self.max_word_bytes != max_word_bytes
            || self.map.len() >= MAX_CHUNKS
            || self.bytes.len() + chunk.len() > MAX_HELD_BYTES
            || self.tokens.len() + tokens.len() > MAX_HELD_TOKENS
        {
            self.map.clear();
            self.bytes.clear();
            self.tokens.clear();
            self.shapes.clear();
            self.max_word_bytes = max_word_bytes;
        }
        let held = Held {
            bytes: self.bytes.len() as u32,
            len: chunk.len() as u32,
            tokens: self.tokens.len() as u32,
            count: tokens.len() as u32,
        };
        self.bytes.extend_from_slice(chunk);
        let start = start as u32;
        self.tokens.extend(tokens.iter().map(|t| Token {
            start: t.start - start,
            end: t.end - start,
            ..*t
        }));
        self.shapes.extend_from_slice(shapes);
        self.map.insert(hash, held);
    }
}

/// Messages remembered whole (up to this length), and the bytes and tokens they may hold.
const MAX_MESSAGE_BYTES: usize = 64;
pub(super) type Messages = Memory<1024, { 1024 * MAX_MESSAGE_BYTES }, { 1 << 14 }>;

/// Whether a message of this length is looked up in [`Messages`] at all.
#[inline]
pub(super) fn message_wanted(message: &[u8]) -> bool {
    message.len() <= MAX_MESSAGE_BYTES
}

/// Where a remembered message's bytes and tokens are, and what tokenising it gave.
#[derive(Debug, Clone, Copy)]
struct HeldMessage {
    bytes: u32,
    len: u32,
    tokens: u32,
    count: u32,
    shape: u64,
    cut: bool,
    name: u64,
}

/// A remembered message: where its tokens are in the memory, its shape, whether it was cut at
/// `max_tokens`, and its entry's name. Two look-ups give the same name only if they found the
/// same entry (names are never given again), so what was worked out from an entry's tokens can
/// be remembered by its name.
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    tokens: (u32, u32),
    pub shape: u64,
    pub cut: bool,
    pub name: u64,
}

/// Messages tokenised before, by their bytes (a message whole, or a long one's skeleton):
/// their folded tokens, shape, and whether they were cut at `max_tokens`. At most `ENTRIES`
/// of them, `BYTES` bytes and `TOKENS` tokens in all; all are forgotten when one is reached
/// (a message costs one cut and fold to learn again). A message field (`msg`) repeats word
/// for word more often than not, and for a short message the look-up costs a fraction of the
/// cut and fold.
#[derive(Debug, Default)]
pub(super) struct Memory<const ENTRIES: usize, const BYTES: usize, const TOKENS: usize> {
    map: HashMap<u64, HeldMessage, BuildIdentity>,
    bytes: Vec<u8>,
    tokens: Vec<Token>,
    seen: Seen,
    /// The limits the tokens were cut under (`max_tokens`, `max_word_bytes`).
    limits: (usize, usize),
    /// Entries ever put: the next one's name (see [`Memory::get`]).
    named: u64,
}

impl<const ENTRIES: usize, const BYTES: usize, const TOKENS: usize> Memory<ENTRIES, BYTES, TOKENS> {
    /// The entry of `message` (hash `hash`) when it was remembered under the same limits: see
    /// [`Found`].
    #[inline]
    pub(super) fn get(&self, hash: u64, message: &[u8], limits: (usize, usize)) -> Option<Found> {
        let h = self.map.get(&hash)?;
        let at = h.bytes as usize;
        if self.bytes.get(at..at + h.len as usize) != Some(message) || self.limits != limits {
            return None;
        }
        Some(Found {
            tokens: (h.tokens, h.tokens + h.count),
            shape: h.shape,
            cut: h.cut,
            name: h.name,
        })
    }

    /// The tokens of an entry just found.
    #[inline]
    pub(super) fn tokens(&self, found: &Found) -> &[Token] {
        &self.tokens[found.tokens.0 as usize..found.tokens.1 as usize]
    }

    /// Whether a message of hash `hash` came before (then [`Memory::put`] is worth it); it
    /// has from now on.
    pub(super) fn seen(&mut self, hash: u64) -> bool {
        self.seen.before(hash)
    }

    /// Remembers a message just tokenised into `tokens`.
    pub(super) fn put(
        &mut self,
        hash: u64,
        message: &[u8],
        tokens: impl ExactSizeIterator<Item = Token>,
        shape: u64,
        cut: bool,
        limits: (usize, usize),
    ) {
        if self.limits != limits
            || self.map.len() >= ENTRIES
            || self.bytes.len() + message.len() > BYTES
            || self.tokens.len() + tokens.len() > TOKENS
        {
            self.map.clear();
            self.bytes.clear();
            self.tokens.clear();
            self.limits = limits;
        }
        let held = HeldMessage {
            bytes: self.bytes.len() as u32,
            len: message.len() as u32,
            tokens: self.tokens.len() as u32,
            count: tokens.len() as u32,
            shape,
            cut,
            name: self.named,
        };
        self.named += 1;
        self.bytes.extend_from_slice(message);
        self.tokens.extend(tokens);
        self.map.insert(hash, held);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
