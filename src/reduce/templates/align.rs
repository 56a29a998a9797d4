//! Matching a tokenised line against a template, and deciding whether a near miss is the same
//! event with a new variable.
//!
//! Two ways to line up a line with a template:
//! - *positional*, when both have as many tokens: constants must be equal, except for a few
//!   *substitutions* (a constant word becomes a variable), each of which has to pass
//!   [`substitution_is_variable`];
//! - *varying length*, when the counts differ by at most [`MAX_LEN_DIFF`] (or are equal but the
//!   positional alignment needs substitutions): no substitution at all, only variables that are
//!   present in one and absent in the other (`bytes sent` against `bytes (1.16 KB) sent`); the
//!   absent ones become optional slots. A small dynamic programme in a diagonal band finds the
//!   cheapest alignment.
//!
//! Costs are integers so that ties break the same way everywhere: a substitution costs 50, a
//! variable slot taking a word 1, a variable missing from a non-optional slot or added to the
//! template 5. Cost 0 is an exact match.

use std::cell::Cell;
use std::collections::HashSet;

use super::token::{Kind, Token};
use crate::reduce::hash::BuildIdentity;

pub(super) const MAX_LEN_DIFF: usize = 4;
const SUBSTITUTION: u32 = 50;
const ABSORB_WORD: u32 = 1;
const INDEL: u32 = 5;
const BAND: usize = MAX_LEN_DIFF + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotKind {
    Word,
    Punct,
    /// A variable; `optional` when it may match nothing.
    Var {
        optional: bool,
    },
}

/// What the text of a word or punctuation says about it for [`Ctx::acceptable`], worked out
/// once per template slot (when it is made) and once per line token (when first needed), not
/// for every candidate a line is compared with.
pub(super) mod flag {
    /// A state, which names an event (`true`, `LEADING`): see [`super::is_state`].
    pub const STATE: u8 = 1;
    /// An identifier, path or host: a value.
    pub const IDENT: u8 = 2;
    /// Punctuation `=` or `:`: what follows it, glued, is a value.
    pub const KEY_SEP: u8 = 4;
    /// The word `user` or `for` (any case): the word after it is a name, a value.
    pub const NAME: u8 = 8;
    /// A line token's word was seen as a variable's value (looked up once per line).
    pub const LEARNED: u8 = 16;
    /// A line token's flags were worked out.
    pub const KNOWN: u8 = 128;
}

/// The [`flag`]s of a constant of kind `kind` written `text` (no [`flag::LEARNED`]: that one
/// changes as the miner learns).
pub(super) fn text_flags(kind: Kind, text: &str) -> u8 {
    match kind {
        Kind::Word => {
            let mut f = 0;
            if is_state(text) {
                f |= flag::STATE;
            }
            if is_identifier_like(text) {
                f |= flag::IDENT;
            }
            if text.eq_ignore_ascii_case("user") || text.eq_ignore_ascii_case("for") {
                f |= flag::NAME;
            }
            f
        }
        Kind::Punct if matches!(text, "=" | ":") => flag::KEY_SEP,
        Kind::Punct | Kind::Var => 0,
    }
}

/// The [`flag`]s of `token` of `message`, kept in `cell` once worked out.
pub(super) fn token_flags(
    cell: &Cell<u8>,
    token: &Token,
    message: &str,
    learned: &HashSet<u64, BuildIdentity>,
) -> u8 {
    if cell.get() & flag::KNOWN == 0 {
        let mut f = text_flags(token.kind, token.text(message)) | flag::KNOWN;
        // A word's hash is the hash of its text, as the learned values are kept.
        if token.kind == Kind::Word && learned.contains(&token.hash) {
            f |= flag::LEARNED;
        }
        cell.set(f);
    }
    cell.get()
}

/// What a template slot needs for matching; the template keeps the rest.
pub(super) trait SlotLike {
    fn kind(&self) -> SlotKind;
    fn hash(&self) -> u64;
    /// The constant's [`flag`]s (see [`text_flags`]).
    fn flags(&self) -> u8;
    /// Length of a constant's text.
    fn len(&self) -> usize;
}

/// One step of an alignment, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// Slot `i` takes token `j` (equal constant, or a variable slot taking the token).
    Match(u32, u32),
    /// Constant slot `i` becomes a variable holding token `j`.
    Substitute(u32, u32),
    /// Variable slot `i` gets nothing: it becomes optional.
    Skip(u32),
    /// Token `j` is a variable the template has no slot for: a new optional slot.
    Insert(u32),
}

#[derive(Debug, Default)]
pub(super) struct Alignment {
    pub cost: u32,
    pub ops: Vec<Op>,
    pub substitutions: u32,
    /// Variable slots that took a word.
    pub absorbed: u32,
}

/// The context the rules look at.
pub(super) struct Ctx<'a, S> {
    pub slots: &'a [S],
    pub tokens: &'a [Token],
    pub message: &'a str,
    /// The tokens' [`flag`]s, as far as worked out (one per token).
    pub token_flags: &'a [Cell<u8>],
    /// Hashes of the words seen as variables' values.
    pub learned: &'a HashSet<u64, BuildIdentity>,
}

impl<S: SlotLike> Ctx<'_, S> {
    /// The [`flag`]s of word or punctuation token `j`, worked out on first use.
    fn token_flags(&self, j: usize) -> u8 {
        token_flags(
            &self.token_flags[j],
            &self.tokens[j],
            self.message,
            self.learned,
        )
    }

    /// Whether slot `i` is the constant token `j` is.
    pub fn equal(&self, i: usize, j: usize) -> bool {
        let (s, t) = (&self.slots[i], &self.tokens[j]);
        let same_kind = matches!(
            (s.kind(), t.kind),
            (SlotKind::Word, Kind::Word) | (SlotKind::Punct, Kind::Punct)
        );
        // 64-bit hashes of the texts, and their lengths: a false match would take a collision
        // between two words of one length, about 2^-64 for each pair compared.
        same_kind && s.hash() == t.hash && s.len() == (t.end - t.start) as usize
    }

    /// Positional alignment of equal-length sequences; false when punctuation differs or a
    /// variable slot would take punctuation.
    pub fn positional(&self, allow_substitution: bool, out: &mut Alignment) -> bool {
        out.ops.clear();
        out.cost = 0;
        out.substitutions = 0;
        out.absorbed = 0;
        if self.slots.len() != self.tokens.len() {
            return false;
        }
        for (i, (s, t)) in self.slots.iter().zip(self.tokens).enumerate() {
            let op = match s.kind() {
                SlotKind::Var { .. } => {
                    if t.kind == Kind::Punct {
                        return false;
                    }
                    if t.kind == Kind::Word {
                        out.absorbed += 1;
                        out.cost += ABSORB_WORD;
                    }
                    Op::Match(i as u32, i as u32)
                }
                _ if self.equal(i, i) => Op::Match(i as u32, i as u32),
                SlotKind::Word if allow_substitution && t.kind != Kind::Punct => {
                    out.substitutions += 1;
                    out.cost += SUBSTITUTION;
                    Op::Substitute(i as u32, i as u32)
                }
                _ => return false,
            };
            out.ops.push(op);
        }
        true
    }

    /// Whether the positional alignment of equal-length sequences is certain not to be
    /// acceptable, found without building it: punctuation out of place, or a constant word
    /// facing a word that cannot be its variable (any such substitution makes
    /// [`Ctx::acceptable`] refuse). Most candidates of a new line fail here, at the first
    /// difference.
    pub fn positional_fails(&self) -> bool {
        debug_assert_eq!(self.slots.len(), self.tokens.len());
        for (i, (s, t)) in self.slots.iter().zip(self.tokens).enumerate() {
            match s.kind() {
                SlotKind::Var { .. } => {
                    if t.kind == Kind::Punct {
                        return true;
                    }
                }
                _ if self.equal(i, i) => {}
                SlotKind::Word if t.kind != Kind::Punct => {
                    if !self.substitution_is_variable(i, i) {
                        return true;
                    }
                }
                _ => return true,
            }
        }
        false
    }

    /// A quick alignment for a line that fits a template with optional variables as it is:
    /// an optional slot takes the next token when that is a variable, else it is skipped.
    /// False when that does not work out (the dynamic programme then decides).
    pub fn greedy(&self, out: &mut Alignment) -> bool {
        out.ops.clear();
        out.cost = 0;
        out.substitutions = 0;
        out.absorbed = 0;
        let mut j = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let t = self.tokens.get(j);
            match s.kind() {
                SlotKind::Var { optional: true } => {
                    if t.is_some_and(|t| t.kind == Kind::Var) {
                        out.ops.push(Op::Match(i as u32, j as u32));
                        j += 1;
                    } else {
                        out.ops.push(Op::Skip(i as u32));
                    }
                }
                SlotKind::Var { optional: false } => match t {
                    Some(t) if t.kind != Kind::Punct => {
                        if t.kind == Kind::Word {
                            out.absorbed += 1;
                            out.cost += ABSORB_WORD;
                        }
                        out.ops.push(Op::Match(i as u32, j as u32));
                        j += 1;
                    }
                    _ => return false,
                },
                _ => {
                    if t.is_none() || !self.equal(i, j) {
                        return false;
                    }
                    out.ops.push(Op::Match(i as u32, j as u32));
                    j += 1;
                }
            }
        }
        j == self.tokens.len()
    }

    /// Punctuation is never absorbed nor added, so an alignment without substitutions needs
    /// the same punctuation in the same order on both sides: a cheap test before the DP.
    fn same_punctuation(&self) -> bool {
        let mut slots = self.slots.iter().filter(|s| s.kind() == SlotKind::Punct);
        let mut tokens = self.tokens.iter().filter(|t| t.kind == Kind::Punct);
        loop {
            match (slots.next(), tokens.next()) {
                (None, None) => return true,
                (Some(s), Some(t)) if s.hash() == t.hash => {}
                _ => return false,
            }
        }
    }

    /// The cheapest alignment allowing only variables to be missing on either side; false when
    /// the constants cannot be lined up in order.
    pub fn varying(&self, dp: &mut Vec<(u32, u8)>, out: &mut Alignment) -> bool {
        out.ops.clear();
        out.substitutions = 0;
        out.absorbed = 0;
        let (m, n) = (self.slots.len(), self.tokens.len());
        if m.abs_diff(n) > MAX_LEN_DIFF || !self.same_punctuation() {
            return false;
        }
        const INF: u32 = u32::MAX;
        // Cell (i, j) lives at i * width + (j + BAND - i); only |i - j| <= BAND is kept.
        let width = 2 * BAND + 1;
        let at = |i: usize, j: usize| -> Option<usize> {
            (j + BAND >= i && j <= i + BAND).then(|| i * width + (j + BAND - i))
        };
        dp.clear();
        dp.resize((m + 1) * width, (INF, 0));
        dp[at(0, 0).expect("in band")] = (0, 0);
        // Relaxation order (diagonal, then skip, then insert; strict improvement) decides ties.
        for i in 0..=m {
            let lo = i.saturating_sub(BAND);
            let hi = (i + BAND).min(n);
            for j in lo..=hi {
                let c = dp[at(i, j).expect("in band")].0;
                if c == INF {
                    continue;
                }
                let mut relax = |i2: usize, j2: usize, cost: u32, op: u8| {
                    if let Some(k) = at(i2, j2).filter(|&k| cost < dp[k].0) {
                        dp[k] = (cost, op);
                    }
                };
                if i < m && j < n {
                    match self.slots[i].kind() {
                        SlotKind::Var { .. } => match self.tokens[j].kind {
                            Kind::Var => relax(i + 1, j + 1, c, 1),
                            Kind::Word => relax(i + 1, j + 1, c + ABSORB_WORD, 1),
                            Kind::Punct => {}
                        },
                        _ if self.equal(i, j) => relax(i + 1, j + 1, c, 1),
                        _ => {}
                    }
                }
                if i < m
                    && let SlotKind::Var { optional } = self.slots[i].kind()
                {
                    relax(i + 1, j, c + if optional { 0 } else { INDEL }, 2);
                }
                if j < n && self.tokens[j].kind == Kind::Var {
                    relax(i, j + 1, c + INDEL, 3);
                }
            }
        }
        let Some(end) = at(m, n) else { return false };
        if dp[end].0 == INF {
            return false;
        }
        out.cost = dp[end].0;
        let (mut i, mut j) = (m, n);
        while i > 0 || j > 0 {
            match dp[at(i, j).expect("on the path")].1 {
                1 => {
                    i -= 1;
                    j -= 1;
                    if self.tokens[j].kind == Kind::Word
                        && matches!(self.slots[i].kind(), SlotKind::Var { .. })
                    {
                        out.absorbed += 1;
                    }
                    out.ops.push(Op::Match(i as u32, j as u32));
                }
                2 => {
                    i -= 1;
                    out.ops.push(Op::Skip(i as u32));
                }
                _ => {
                    j -= 1;
                    out.ops.push(Op::Insert(j as u32));
                }
            }
        }
        out.ops.reverse();
        true
    }

    /// Whether an inexact alignment may generalise the template.
    pub fn acceptable(&self, a: &Alignment) -> bool {
        let words = self
            .slots
            .iter()
            .filter(|s| s.kind() == SlotKind::Word)
            .count() as u32;
        let shared = words.saturating_sub(a.substitutions);
        // Variables taking words must leave enough constant words to call it the same event.
        if a.absorbed > 0 && shared < a.absorbed.max(2) {
            return false;
        }
        if a.substitutions == 0 {
            // Adding or dropping variables needs constant words to anchor it: `<*>` alone is
            // not the same event as an empty line.
            let changes_length = a
                .ops
                .iter()
                .any(|op| matches!(op, Op::Insert(_) | Op::Skip(_)));
            return !changes_length || words >= 2;
        }
        if shared < 2 || a.substitutions > (shared / 2).max(1) {
            return false;
        }
        a.ops.iter().all(|op| match *op {
            Op::Substitute(i, j) => self.substitution_is_variable(i as usize, j as usize),
            _ => true,
        })
    }

    /// Whether constant slot `i` and token `j` are two values of one variable rather than two
    /// different events. Numbers are values; `true`/`false` and `UPPER_CASE` are states, which
    /// name events; paths, hosts and dotted or underscored names are values; so is the value of
    /// a `key=value` pair, the word after `user` or `for` (a name), and any word seen as a
    /// variable's value before.
    /// From the [`flag`]s worked out beforehand, not the texts: this runs for every candidate.
    fn substitution_is_variable(&self, i: usize, j: usize) -> bool {
        if self.tokens[j].kind == Kind::Var {
            return true;
        }
        let (a, b) = (self.slots[i].flags(), self.token_flags(j));
        if (a | b) & flag::STATE != 0 {
            return false;
        }
        if (a | b) & flag::IDENT != 0 {
            return true;
        }
        if i > 0 {
            let prev = &self.slots[i - 1];
            let after_separator = prev.kind() == SlotKind::Punct
                && prev.flags() & flag::KEY_SEP != 0
                && self.tokens[j].glued;
            if after_separator {
                return true;
            }
            if prev.kind() == SlotKind::Word && prev.flags() & flag::NAME != 0 {
                return true;
            }
        }
        // A constant's hash is the hash of its text, as the learned values are kept.
        b & flag::LEARNED != 0 || self.learned.contains(&self.slots[i].hash())
    }
}

/// `true`, `disabled`, `LEADING`, `SCREEN_ON`, `android.intent.action.TIME_TICK`: a state.
/// (On bytes, without allocating: every new template's words go through it.)
pub(super) fn is_state(w: &str) -> bool {
    let b = w.as_bytes();
    if (2..=9).contains(&b.len()) {
        let mut buf = [0u8; 9];
        for (d, s) in buf.iter_mut().zip(b) {
            *d = s.to_ascii_lowercase();
        }
        let named = matches!(
            &buf[..b.len()],
            b"true"
                | b"false"
                | b"null"
                | b"none"
                | b"yes"
                | b"no"
                | b"on"
                | b"off"
                | b"nil"
                | b"undefined"
                | b"enabled"
                | b"disabled"
                | b"enable"
                | b"disable"
        );
        if named {
            return true;
        }
    }
    // The last part of a dotted, slashed or coloned name, in upper case.
    let end = b.iter().rposition(|&c| c != b'.').map_or(0, |k| k + 1);
    if end == 0 || !(b[end - 1].is_ascii_uppercase() || b[end - 1] == b'_') {
        // Most words end in a lower-case letter.
        return false;
    }
    let start = b.iter().position(|&c| c != b'.').unwrap_or(b.len());
    let trimmed = &b[start..end.max(start)];
    let last = trimmed
        .iter()
        .rposition(|c| matches!(c, b'.' | b'/' | b':'))
        .map_or(trimmed, |k| &trimmed[k + 1..]);
    last.len() >= 2
        && last.iter().any(u8::is_ascii_alphabetic)
        && last.iter().all(|&c| c.is_ascii_uppercase() || c == b'_')
}

/// `a.example`, `/var/log`, `snake_case`, `x-y`, `@home`: a value. (Paths and hosts, which
/// `is_pathlike` tells, all hold a `.` or a `/`.)
fn is_identifier_like(w: &str) -> bool {
    w.bytes().any(|c| {
        matches!(
            c,
            b'.' | b'/' | b'\\' | b'_' | b'-' | b'@' | b'#' | b'$' | b'~'
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_name_events() {
        for w in [
            "true",
            "LEADING",
            "SCREEN_ON",
            "android.intent.action.TIME_TICK",
            "Off",
        ] {
            assert!(is_state(w), "{w}");
        }
        for w in ["root", "Paused", "com.example.Main", "X", "a_b"] {
            assert!(!is_state(w), "{w}");
        }
    }

    /// The definition `is_state` implements on bytes.
    fn is_state_by_definition(w: &str) -> bool {
        const STATES: [&str; 14] = [
            "true",
            "false",
            "null",
            "none",
            "yes",
            "no",
            "on",
            "off",
            "nil",
            "undefined",
            "enabled",
            "disabled",
            "enable",
            "disable",
        ];
        if STATES.iter().any(|s| s.eq_ignore_ascii_case(w)) {
            return true;
        }
        let last = w
            .trim_matches('.')
            .rsplit(['.', '/', ':'])
            .next()
            .unwrap_or("");
        last.len() >= 2
            && last.bytes().any(|c| c.is_ascii_alphabetic())
            && last.bytes().all(|c| c.is_ascii_uppercase() || c == b'_')
    }

    #[test]
    fn states_on_bytes_as_defined() {
        let words = [
            "",
            ".",
            "..",
            "on",
            "ON",
            "On.",
            ".on",
            "off",
            "Undefined",
            "undefinedx",
            "x.ON",
            "a.b.",
            "A.",
            ".AB.",
            "AB",
            "A_",
            "_A",
            "__",
            "a/B_C",
            "a:BC",
            "BC:",
            "BC:.",
            "ÉTAT",
            "NUL\u{e9}",
            "enable",
            "disabled",
            "TRUE",
            "tru",
            "é",
            "x.Y.Z_",
            "...A",
            "A..B",
            "nonE",
            "nil",
            "Yes.",
            "yes",
        ];
        for w in words {
            assert_eq!(is_state(w), is_state_by_definition(w), "{w:?}");
        }
    }
}
