//! Template mining: an online, one-pass miner that gives every message a template id on
//! arrival, with the values of its variables.
//!
//! ```
//! use logmill::reduce::templates::{Miner, MinerConfig};
//!
//! let mut miner = Miner::new(MinerConfig::default());
//! let a = miner.observe("session opened for user alice by (uid=0)").id;
//! let o = miner.observe("session opened for user bob by (uid=1001)");
//! assert_eq!(o.id, a);
//! let values: Vec<&str> = o
//!     .variables
//!     .iter()
//!     .map(|v| &"session opened for user bob by (uid=1001)"[v.span()])
//!     .collect();
//! assert_eq!(values, ["bob", "1001"]);
//! assert_eq!(
//!     miner.template(a).unwrap().to_string(),
//!     "session opened for user <*> by (uid=<*>)"
//! );
//! ```
//!
//! How it works, in three steps per message:
//! 1. **Tokenise** (`token.rs`): words, punctuation and variables. Anything holding a digit is
//!    a variable, and so are dates, units after numbers, paths and hosts next to values, and
//!    bracketed values; runs of values are folded into one variable, so lists and dates of any
//!    length do not change a template.
//! 2. **Look up the line's shape** (its words, punctuation and variable positions, hashed) in a
//!    cache of shapes already seen: most lines stop here, and are matched against their
//!    template only to extract the variables' spans.
//! 3. Otherwise **find candidates** through an inverted index from constant words to templates
//!    (rarest words first, at most `max_candidates`), line each up with the message
//!    (`align.rs`), and take the first exact match, else the cheapest acceptable near match,
//!    which generalises the template (a constant becomes a variable, a variable becomes
//!    optional, or an optional variable is added); else the message starts a new template.
//!
//! Whether a word that differs is a variable is decided from the words themselves, with no
//! per-dataset configuration: numbers and identifiers (paths, hosts, `dotted.names`,
//! `snake_case`) are values; `true`/`false` and `UPPER_CASE` words are states that distinguish
//! events; a value after `key=`, or a name after `user` or `for`, is a value; and a word that
//! was ever seen as a variable's value stays one. A plain English word that differs means a different event.
//! Constants are compared by their 64-bit hash and length.
//!
//! A template's text shows what all of a variable's values had around their digits
//! (`blk_<*>`, `(<*>)`, `<*>ms`); that part shrinks when a value without it arrives, which
//! changes the text but not the template (the observation is not `generalised` for it).
//!
//! **Ids are a function of a template's origin**: the hash of the shape of the line that
//! created it, by a fixed hash function. The same input gives the same ids on every instance
//! and after every restart; generalising a template never changes its id. **Memory is
//! bounded by `max_templates`**: at the cap, creating a template evicts the least recently used
//! one (counted in [`MinerStats::evicted`], reported in [`Observation::evicted`]); the shape
//! cache and the learned values have caps of their own and are cleared when full. A template
//! holds at most `max_tokens` slots of at most `max_word_bytes` bytes.
//!
//! The whole state has a deterministic byte encoding ([`Miner::encode`], [`Miner::decode`]):
//! a miner restored from a checkpoint continues exactly as the original would have.

mod align;

mod snapshot;
mod store;
mod token;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

pub use snapshot::SnapshotError;

use crate::reduce::hash::{BuildIdentity, mix};
use align::{Alignment, Ctx, Op, SlotKind};
use store::{Slot, Store, Summary, Template};
use token::{Kind, Limits, Tokenizer, VAR_HASH};

/// A template's id: stable for the template's life, equal across instances for the same input.
pub type TemplateId = u64;

/// Caps on the miner's work and memory. They bound resources; they are not tuning knobs (the
/// grouping does not depend on them until a cap is reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinerConfig {
    /// Templates kept; at the cap the least recently used one is evicted.
    pub max_templates: usize,
    /// Tokens considered per line; the rest of a longer line is one trailing variable.
    pub max_tokens: usize,
    /// Longer words are treated as variables (they are data, and they would cost memory).
    pub max_word_bytes: usize,
    /// Templates a new line shape is compared with, at most.
    pub max_candidates: usize,
    /// Line shapes remembered with their template; the cache is cleared when full.
    pub max_cached_shapes: usize,
    /// Words remembered as variable values; forgotten all at once when full.
    pub max_learned_values: usize,
}

impl Default for MinerConfig {
    fn default() -> MinerConfig {
        MinerConfig {
            max_templates: 1000,
            max_tokens: 128,
            max_word_bytes: 256,
            max_candidates: 32,
            max_cached_shapes: 8192,
            max_learned_values: 8192,
        }
    }
}

impl MinerConfig {
    fn limits(&self) -> Limits {
        Limits {
            max_tokens: self.max_tokens.max(2),
            max_word_bytes: self.max_word_bytes,
        }
    }

    fn sanitized(mut self) -> MinerConfig {
        self.max_templates = self.max_templates.clamp(1, u32::MAX as usize - 1);
        self.max_tokens = self.max_tokens.clamp(2, u16::MAX as usize);
        self.max_candidates = self.max_candidates.max(1);
        self.max_cached_shapes = self.max_cached_shapes.max(1);
        self.max_learned_values = self.max_learned_values.max(1);
        self
    }
}

/// One variable of an observed line: which variable of the template, and where its value is
/// in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    /// The variable's number within its template. Numbers are given in order of creation and
    /// never change, so they stay valid when the template later gains variables (the position
    /// in the text may shift; this does not).
    pub var: u16,
    pub start: u32,
    pub end: u32,
}

impl Variable {
    /// The value's byte range in the observed message (empty for an optional variable that
    /// this line does not have).
    pub fn span(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// What the miner made of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation<'a> {
    pub id: TemplateId,
    /// The message started this template.
    pub new: bool,
    /// The message changed its template (a constant became a variable, or a variable became
    /// optional, or a variable was added); the id is unchanged.
    pub generalised: bool,
    /// The values of the template's variables, in text order.
    pub variables: &'a [Variable],
    /// The template evicted to make room for this one (at the `max_templates` cap); see
    /// [`Miner::evicted`] for its last state.
    pub evicted: Option<TemplateId>,
}

/// Counters since the miner was created (carried by snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinerStats {
    pub lines: u64,
    pub created: u64,
    pub generalised: u64,
    /// Templates evicted at the `max_templates` cap.
    pub evicted: u64,
    /// Lines longer than `max_tokens` tokens.
    pub truncated: u64,
    /// Lines whose shape was not in the cache, so candidates were searched.
    pub searched: u64,
}

/// A read-only view of a template.
#[derive(Debug, Clone, Copy)]
pub struct TemplateView<'a> {
    t: &'a Template,
}

impl TemplateView<'_> {
    pub fn id(&self) -> TemplateId {
        self.t.id
    }

    /// Lines matched so far (including the first).
    pub fn count(&self) -> u64 {
        self.t.count
    }

    /// The variables' numbers in text order (see [`Variable::var`]).
    pub fn variables(&self) -> impl Iterator<Item = u16> + '_ {
        self.t
            .slots
            .iter()
            .filter(|s| matches!(s.kind, SlotKind::Var { .. }))
            .map(|s| s.var)
    }
}

/// The template's text: constants as they were written, `<*>` for each variable (as loghub
/// writes templates).
impl fmt::Display for TemplateView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, s) in self.t.slots.iter().enumerate() {
            if k > 0 && !s.glued {
                f.write_str(" ")?;
            }
            let (a, b) = (s.text.0 as usize, s.text.1 as usize);
            match s.kind {
                // An optional variable may be absent, with whatever surrounds its values.
                SlotKind::Var { optional: true } => f.write_str("<*>")?,
                SlotKind::Var { optional: false } => {
                    f.write_str(&self.t.text[a..a + s.pre as usize])?;
                    f.write_str("<*>")?;
                    f.write_str(&self.t.text[b - s.suf as usize..b])?;
                }
                _ => f.write_str(&self.t.text[a..b])?,
            }
        }
        Ok(())
    }
}

/// A variable slot born from `value`: its fixed prefix and suffix are kept in `text`.
fn var_slot(text: &mut String, value: &str, glued: bool, var: u16, optional: bool) -> Slot {
    let b = value.as_bytes();
    let (pre, suf) = store::affixes(b);
    let (pre, suf) = store::balanced(b, pre, b, suf);
    let start = text.len() as u32;
    text.push_str(&value[..pre]);
    text.push_str(&value[value.len() - suf..]);
    Slot {
        kind: SlotKind::Var { optional },
        glued,
        hash: VAR_HASH,
        text: (start, text.len() as u32),
        var,
        pre: pre as u16,
        suf: suf as u16,
        flags: 0,
    }
}

/// The miner. Feed it messages in order with [`Miner::observe`].
#[derive(Debug)]
pub struct Miner {
    config: MinerConfig,
    store: Store,
    stats: MinerStats,
    tok: Tokenizer,
    alignment: Alignment,
    alternative: Alignment,
    best: Alignment,
    dp: Vec<(u32, u8)>,
    vars: Vec<Variable>,
    /// The template slot of each of `vars`.
    var_slots: Vec<u32>,
    /// The current line's tokens' flags, worked out as the candidates need them.
    token_flags: Vec<Cell<u8>>,
    /// The current line as the candidate search sees templates (its `seq` unused).
    line: Summary,
    /// Bit `j` (of the first 64) for each token `j` of the current line that is a plain word:
    /// no identifier, not learned as a value (see [`Miner::positional_cannot`]).
    plain: u64,
    words: Vec<u64>,
    order: Vec<(usize, u64)>,
    hits: Vec<u16>,
    touched: Vec<u32>,
    /// Touched templates of a fitting length: `seq`, slot, how many of the line's words.
    ranked: Vec<(u64, u32, u16)>,
    /// Those with the fewest words shared that may be candidates: `seq`, slot.
    edge: Vec<(u64, u32)>,
    /// How many of `ranked` share each number of words.
    counts: Vec<u32>,
    candidates: Vec<u32>,
    removed: Vec<u64>,
    /// The template the last `observe` evicted, if it evicted one.
    evicted: Option<Template>,
    /// Greedy alignments already worked out (see [`Aligned`]), by line shape, and the steps
    /// they hold.
    aligned: HashMap<u64, Aligned, BuildIdentity>,
    aligned_ops: usize,
    /// What lines of remembered messages matched (see [`Recalled`]), by the name of the
    /// tokenizer's entry their tokens are in.
    recalled: HashMap<u64, Recalled, BuildIdentity>,
    recalled_places: usize,
    /// How many times a variable's affixes narrowed (see [`Recalled::narrowed`]).
    narrowings: u64,
    /// Tests only: lines whose variables were recalled.
    #[cfg(test)]
    recalls: u64,
    /// Tests only: check every search's shortcuts against the plain way (see `tests.rs`), and
    /// every fold the tokenizer replays against the fold.
    #[cfg(test)]
    cross_check: bool,
}

/// A greedy alignment of a line shape with a template, kept for the next lines of that
/// shape: [`align::Ctx::greedy`] looks at a token's kind, hash and length only, which its
/// line's shape stands for, and at the template's slots, which only `apply` changes (every
/// one is forgotten then) or a reused slot (its generation). Capped like the shape cache.
#[derive(Debug)]
struct Aligned {
    slot: u32,
    generation: u32,
    tokens: u32,
    cost: u32,
    absorbed: u32,
    ops: Box<[Op]>,
}

/// What a line whose tokens the tokenizer remembered matched: the template, and where in the
/// entry each variable's value is. The tokens of every line of the entry are the same but for
/// their spans (a skeleton's lines differ in their digits, which are inside variables), so
/// every such line matches the same way while its shape leads to the same template, which has
/// not changed since: its slot's generation is the same, and `apply` (which forgets them all)
/// did not generalise it. Such a line goes from its memory's entry straight to its variables'
/// spans, without its tokens or a comparison with the template's slots (a quarter of the
/// miner's instructions on the loghub samples).
#[derive(Debug)]
struct Recalled {
    slot: u32,
    generation: u32,
    /// The miner's [`Miner::narrowings`] when narrowing the template's affixes with this
    /// entry's values last changed nothing ([`NARROW`] until then). The part of a value a
    /// prefix or suffix is compared with is what comes before its first digit and after its
    /// last, the same for every line of the entry: while no affix of any template changes,
    /// narrowing with the next line changes nothing either, and is skipped.
    narrowed: u64,
    /// Where each variable is.
    places: Box<[Place]>,
}

/// A variable of a recalled line: its number, its slot in the template, and its value's span
/// in the entry (for a skeleton, in its positions; empty where the token before it ends when
/// the variable is absent). Held here rather than read from the entry's tokens, which are
/// rarely still in cache.
#[derive(Debug, Clone, Copy)]
struct Place {
    var: u16,
    slot: u16,
    span: (u32, u32),
}

/// A recalled entry's values still to be narrowed with.
const NARROW: u64 = u64::MAX;

/// Lines remembered (the tokenizer's memories hold ~3,000 entries, and forget them all at once
/// when full: their old names linger here until this is cleared), and the variables they may
/// hold in all, like the memories' tokens (a place is 12 bytes): at most ~1 MiB a miner.
const MAX_RECALLED: usize = 8192;
const MAX_RECALLED_PLACES: usize = 1 << 16;

const MAX_ALIGNED: usize = 4096;
/// Steps all kept alignments may hold (a line has at most `max_tokens` tokens, so one
/// alignment may be long).
const MAX_ALIGNED_OPS: usize = 1 << 15;

const ID_SEED: u64 = 0x6c6f_676d_696c_6c31; // "logmill1"

impl Miner {
    pub fn new(config: MinerConfig) -> Miner {
        Miner {
            config: config.sanitized(),
            store: Store::new(),
            stats: MinerStats::default(),
            tok: Tokenizer::default(),
            alignment: Alignment::default(),
            alternative: Alignment::default(),
            best: Alignment::default(),
            dp: Vec::new(),
            vars: Vec::new(),
            var_slots: Vec::new(),
            token_flags: Vec::new(),
            line: Summary::default(),
            plain: 0,
            words: Vec::new(),
            order: Vec::new(),
            hits: Vec::new(),
            touched: Vec::new(),
            ranked: Vec::new(),
            edge: Vec::new(),
            counts: Vec::new(),
            candidates: Vec::new(),
            removed: Vec::new(),
            evicted: None,
            recalled: HashMap::default(),
            recalled_places: 0,
            narrowings: 0,
            aligned: HashMap::default(),
            aligned_ops: 0,
            #[cfg(test)]
            cross_check: false,
            #[cfg(test)]
            recalls: 0,
        }
    }

    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    pub fn stats(&self) -> MinerStats {
        self.stats
    }

    /// Templates currently held.
    pub fn len(&self) -> usize {
        self.store.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.templates.is_empty()
    }

    /// The template the last [`Miner::observe`] evicted, as it was (its text, its count), so
    /// that what was pending for it can be flushed. `None` when that call evicted nothing.
    pub fn evicted(&self) -> Option<TemplateView<'_>> {
        self.evicted.as_ref().map(|t| TemplateView { t })
    }

    pub fn template(&self, id: TemplateId) -> Option<TemplateView<'_>> {
        let slot = *self.store.by_id.get(&id)?;
        Some(TemplateView {
            t: &self.store.templates[slot as usize],
        })
    }

    /// Every template, oldest first.
    pub fn templates(&self) -> impl Iterator<Item = TemplateView<'_>> + '_ {
        let mut slots: Vec<&Template> = self.store.templates.iter().collect();
        slots.sort_by_key(|t| t.seq);
        slots.into_iter().map(|t| TemplateView { t })
    }

    /// Gives `message` its template id and the values of its variables.
    pub fn observe(&mut self, message: &str) -> Observation<'_> {
        self.stats.lines += 1;
        self.evicted = None;
        #[cfg(test)]
        {
            self.tok.cross_check = self.cross_check;
        }
        let limits = self.config.limits();
        let begun = self.tok.begin(message, limits);
        if begun.cut {
            self.stats.truncated += 1;
        }
        let shape = self.tok.shape;
        let cached = self.store.cache_get(shape);
        if let (Some(slot), Some(name)) = (cached, begun.remembered)
            && self.recall(slot, name, message)
        {
            return self.seen(slot, false, false);
        }
        self.tok.finish(message, limits);
        if let Some(slot) = cached
            && self.extract(slot, message)
        {
            if let Some(name) = begun.remembered {
                self.remember(name, slot);
            }
            return self.seen(slot, false, false);
        }
        self.stats.searched += 1;
        self.token_flags.clear();
        self.token_flags.resize(self.tok.out.len(), Cell::new(0));
        self.line = line_summary(&self.tok.out);
        self.find_candidates();
        #[cfg(test)]
        if self.cross_check {
            assert_eq!(self.candidates, self.reference_candidates(), "{message:?}");
        }
        self.plain = 0;
        if !self.candidates.is_empty() {
            for (j, t) in self.tok.out.iter().enumerate().take(64) {
                let plain = t.kind == Kind::Word
                    && align::token_flags(&self.token_flags[j], t, message, &self.store.learned)
                        & (align::flag::IDENT | align::flag::LEARNED)
                        == 0;
                self.plain |= u64::from(plain) << j;
            }
        }
        let mut best: Option<u32> = None;
        for c in 0..self.candidates.len() {
            let slot = self.candidates[c];
            if !self.evaluate(slot, message) {
                continue;
            }
            let cost = self.alignment.cost;
            if cost > 0 && best.is_some_and(|_| cost >= self.best.cost) {
                continue;
            }
            std::mem::swap(&mut self.alignment, &mut self.best);
            best = Some(slot);
            if cost == 0 {
                break;
            }
        }
        let (slot, new, generalised) = match best {
            Some(slot) => {
                let generalised = self.best.cost > 0 && self.apply(slot, message);
                (slot, false, generalised)
            }
            None => (self.create(shape, message), true, false),
        };
        self.store
            .cache_put(shape, slot, self.config.max_cached_shapes);
        let matched = self.extract(slot, message);
        debug_assert!(matched, "a line matches the template it was given");
        self.seen(slot, new, generalised)
    }

    fn seen(&mut self, slot: u32, new: bool, generalised: bool) -> Observation<'_> {
        self.store.touch(slot);
        let t = &mut self.store.templates[slot as usize];
        t.count += 1;
        let id = t.id;
        if generalised {
            self.stats.generalised += 1;
        }
        Observation {
            id,
            new,
            generalised,
            variables: &self.vars,
            evicted: self.evicted.as_ref().map(|t| t.id),
        }
    }

    fn ctx<'a>(
        store: &'a Store,
        tokens: &'a [token::Token],
        token_flags: &'a [Cell<u8>],
        slot: u32,
        message: &'a str,
    ) -> Ctx<'a, Slot> {
        let t = &store.templates[slot as usize];
        Ctx {
            slots: &t.slots,
            tokens,
            message,
            token_flags,
            learned: &store.learned,
        }
    }

    /// Lines the message up with template `slot` without changing it, and records the
    /// variables' values. False when the message does not fit the template as it is.
    fn extract(&mut self, slot: u32, message: &str) -> bool {
        self.vars.clear();
        self.var_slots.clear();
        let ctx = Self::ctx(&self.store, &self.tok.out, &[], slot, message);
        let ok = if ctx.slots.len() == ctx.tokens.len() {
            // The common case, straight to the variables without an alignment: one pass checks
            // that every constant is its token and no variable takes punctuation, and takes the
            // variables.
            for (i, (s, t)) in ctx.slots.iter().zip(ctx.tokens).enumerate() {
                match s.kind {
                    SlotKind::Var { .. } if t.kind != Kind::Punct => {
                        self.vars.push(Variable {
                            var: s.var,
                            start: t.start,
                            end: t.end,
                        });
                        self.var_slots.push(i as u32);
                    }
                    SlotKind::Var { .. } => return false,
                    _ if ctx.equal(i, i) => {}
                    _ => return false,
                }
            }
            self.alignment.ops.clear();
            true
        } else {
            let generation = self.store.generations[slot as usize];
            let known = self.aligned.get(&self.tok.shape).filter(|a| {
                a.slot == slot
                    && a.generation == generation
                    && a.tokens as usize == ctx.tokens.len()
            });
            if let Some(a) = known {
                let out = &mut self.alignment;
                out.ops.clear();
                out.ops.extend_from_slice(&a.ops);
                (out.cost, out.substitutions, out.absorbed) = (a.cost, 0, a.absorbed);
                #[cfg(test)]
                if self.cross_check {
                    let mut fresh = Alignment::default();
                    assert!(ctx.greedy(&mut fresh), "{message:?}");
                    assert_eq!(fresh.ops, self.alignment.ops, "{message:?}");
                    assert_eq!((fresh.cost, fresh.absorbed), (a.cost, a.absorbed));
                }
                true
            } else if ctx.greedy(&mut self.alignment) {
                let a = &self.alignment;
                if self.aligned.len() >= MAX_ALIGNED
                    || self.aligned_ops + a.ops.len() > MAX_ALIGNED_OPS
                {
                    self.aligned.clear();
                    self.aligned_ops = 0;
                }
                self.aligned_ops += a.ops.len();
                self.aligned.insert(
                    self.tok.shape,
                    Aligned {
                        slot,
                        generation,
                        tokens: ctx.tokens.len() as u32,
                        cost: a.cost,
                        absorbed: a.absorbed,
                        ops: a.ops.as_slice().into(),
                    },
                );
                true
            } else {
                ctx.varying(&mut self.dp, &mut self.alignment)
                    && self.alignment.ops.iter().all(|op| match *op {
                        Op::Skip(i) => {
                            matches!(ctx.slots[i as usize].kind, SlotKind::Var { optional: true })
                        }
                        Op::Match(..) => true,
                        Op::Substitute(..) | Op::Insert(_) => false,
                    })
            }
        };
        if !ok {
            return false;
        }
        let mut pos = 0u32;
        for op in &self.alignment.ops {
            match *op {
                Op::Match(i, j) => {
                    let t = ctx.tokens[j as usize];
                    pos = t.end;
                    if let SlotKind::Var { .. } = ctx.slots[i as usize].kind {
                        self.vars.push(Variable {
                            var: ctx.slots[i as usize].var,
                            start: t.start,
                            end: t.end,
                        });
                        self.var_slots.push(i);
                    }
                }
                Op::Skip(i) => {
                    self.vars.push(Variable {
                        var: ctx.slots[i as usize].var,
                        start: pos,
                        end: pos,
                    });
                    self.var_slots.push(i);
                }
                Op::Substitute(..) | Op::Insert(_) => {}
            }
        }
        self.narrow(slot, message);
        true
    }

    /// Values without a template's fixed prefix or suffix shrink it (an absent value leaves
    /// them as they are).
    fn narrow(&mut self, slot: u32, message: &str) {
        let t = &mut self.store.templates[slot as usize];
        for (v, &i) in self.vars.iter().zip(&self.var_slots) {
            let s = &mut t.slots[i as usize];
            if (s.pre > 0 || s.suf > 0) && v.start < v.end {
                let was = (s.pre, s.suf);
                s.narrow(&t.text, &message.as_bytes()[v.span()]);
                if (s.pre, s.suf) != was {
                    self.narrowings += 1;
                }
            }
        }
    }

    /// The variables of a line whose tokens the tokenizer remembered, as the last line of
    /// its entry matched `slot` (see [`Recalled`]); false when that does not hold.
    fn recall(&mut self, slot: u32, name: u64, message: &str) -> bool {
        let Miner {
            recalled,
            tok,
            store,
            vars,
            var_slots,
            ..
        } = self;
        let Some(r) = recalled.get(&name) else {
            return false;
        };
        if r.slot != slot || r.generation != store.generations[slot as usize] {
            return false;
        }
        vars.clear();
        var_slots.clear();
        let mut places = r.places.iter();
        tok.positions(r.places.iter().map(|p| p.span), |start, end| {
            let p = places.next().expect("a place for each span");
            vars.push(Variable {
                var: p.var,
                start,
                end,
            });
            var_slots.push(u32::from(p.slot));
        });
        let before = self.narrowings;
        if r.narrowed != before {
            self.narrow(slot, message);
            if let Some(r) = self.recalled.get_mut(&name)
                && self.narrowings == before
            {
                // Narrowing with this line's values changed nothing: with the next line's,
                // the same but for their digits, it changes nothing either, until a slot
                // changes.
                r.narrowed = self.narrowings;
            }
        }
        #[cfg(test)]
        {
            self.recalls += 1;
        }
        #[cfg(test)]
        if self.cross_check {
            let recalled = (self.vars.clone(), self.var_slots.clone());
            self.tok.finish(message, self.config.limits());
            assert!(self.extract(slot, message), "{message:?}");
            assert_eq!(
                recalled,
                (self.vars.clone(), self.var_slots.clone()),
                "{message:?}"
            );
        }
        true
    }

    /// Remembers how the line just extracted matched `slot`, for the next lines of the
    /// tokenizer's entry `name`.
    fn remember(&mut self, name: u64, slot: u32) {
        let t = &self.store.templates[slot as usize];
        if t.slots.len() > usize::from(u16::MAX) {
            return;
        }
        let tok = &self.tok;
        let span = |j: usize| tok.entry_span(j).expect("the line's tokens are remembered");
        let places: Box<[Place]> = if t.slots.len() == self.tok.out.len() {
            // Token for token (see `extract`).
            let slots = self.var_slots.iter();
            let place = |(v, &i): (&Variable, &u32)| Place {
                var: v.var,
                slot: i as u16,
                span: span(i as usize),
            };
            self.vars.iter().zip(slots).map(place).collect()
        } else {
            // As the alignment gave them (see `extract`): an absent variable is empty where
            // the last token matched ends.
            let mut end = 0;
            let mut places = Vec::with_capacity(self.vars.len());
            for op in &self.alignment.ops {
                match *op {
                    Op::Match(i, j) => {
                        let span = span(j as usize);
                        end = span.1;
                        let s = &t.slots[i as usize];
                        if let SlotKind::Var { .. } = s.kind {
                            places.push(Place {
                                var: s.var,
                                slot: i as u16,
                                span,
                            });
                        }
                    }
                    Op::Skip(i) => places.push(Place {
                        var: t.slots[i as usize].var,
                        slot: i as u16,
                        span: (end, end),
                    }),
                    Op::Substitute(..) | Op::Insert(_) => {}
                }
            }
            places.into()
        };
        let narrow = places.iter().any(|p| {
            let s = &t.slots[usize::from(p.slot)];
            s.pre > 0 || s.suf > 0
        });
        // Narrowing only shrinks: a template without affixes now never narrows again.
        let narrowed = if narrow { NARROW } else { self.narrowings };
        if self.recalled.len() >= MAX_RECALLED
            || self.recalled_places + places.len() > MAX_RECALLED_PLACES
        {
            self.recalled.clear();
            self.recalled_places = 0;
        }
        self.recalled_places += places.len();
        let generation = self.store.generations[slot as usize];
        let recalled = Recalled {
            slot,
            generation,
            narrowed,
            places,
        };
        if let Some(old) = self.recalled.insert(name, recalled) {
            self.recalled_places -= old.places.len();
        }
    }

    /// The cheapest acceptable alignment of the line with a candidate, allowing
    /// generalisation; the result is in `self.alignment`. Lines of the template's length are
    /// tried positionally first and, unless that is exact, also with variables present on one
    /// side only (`a <*> b , c` against `a b , <*> c`).
    fn evaluate(&mut self, slot: u32, message: &str) -> bool {
        // What the summaries rule out first, without following the template's pointers.
        let summary = &self.store.summaries[slot as usize];
        let positional = summary.len as usize == self.tok.out.len();
        let may_position = positional && !self.positional_cannot(slot);
        let may_vary = may_vary(summary, &self.line);
        #[cfg(test)]
        if self.cross_check {
            self.check_rejections(slot, message, positional && !may_position, !may_vary);
        }
        if !may_position && !may_vary {
            return false;
        }
        let ctx = Self::ctx(&self.store, &self.tok.out, &self.token_flags, slot, message);
        let mut found = false;
        #[cfg(test)]
        if self.cross_check && may_position && ctx.positional_fails() {
            self.check_rejections(slot, message, true, false);
        }
        if may_position && !ctx.positional_fails() {
            found = ctx.positional(true, &mut self.alignment)
                && (self.alignment.cost == 0 || ctx.acceptable(&self.alignment));
            if found && self.alignment.substitutions == 0 {
                return true;
            }
        }
        let words = &self.words;
        let may_vary = may_vary
            && ctx
                .slots
                .iter()
                .all(|s| s.kind != SlotKind::Word || words.binary_search(&s.hash).is_ok());
        #[cfg(test)]
        if self.cross_check {
            self.check_rejections(slot, message, false, !may_vary);
        }
        if !may_vary {
            return found;
        }
        let alt = &mut self.alternative;
        let varying = ctx.varying(&mut self.dp, alt)
            && (alt.cost == 0 || ctx.acceptable(alt))
            // Inserted slots make the template longer: never beyond what a line may have.
            && ctx.slots.len() + alt.ops.iter().filter(|op| matches!(op, Op::Insert(_))).count()
                <= self.config.max_tokens;
        if varying && (!found || alt.cost < self.alignment.cost) {
            std::mem::swap(&mut self.alignment, &mut self.alternative);
            found = true;
        }
        found
    }

    /// Whether the positional alignment of the line with template `slot` (of its length) is
    /// certain to fail, from the template's summary: where the line has a plain word, the
    /// template has a constant other than that word (its bit is not among the template's)
    /// and one that may not become a variable (unless it was learned as a value, which takes
    /// a look at the template when the miner learned any). No pointer is followed for most
    /// of a new line's candidates.
    fn positional_cannot(&self, slot: u32) -> bool {
        let t = &self.store.summaries[slot as usize];
        let mut differ = self.plain & !t.flexible;
        while differ != 0 {
            let j = differ.trailing_zeros() as usize;
            differ &= differ - 1;
            if t.word_bits & store::word_bit(self.tok.out[j].hash) != 0 {
                continue;
            }
            let learned = &self.store.learned;
            if learned.is_empty() {
                return true;
            }
            let s = &self.store.templates[slot as usize].slots[j];
            let state = s.flags & align::flag::STATE != 0;
            if s.kind != SlotKind::Word || state || !learned.contains(&s.hash) {
                return true;
            }
        }
        false
    }

    /// Applies `self.best` to template `slot`; returns whether the template changed.
    fn apply(&mut self, slot: u32, message: &str) -> bool {
        let tokens = &self.tok.out;
        let cap = self.config.max_learned_values;
        let t = &self.store.templates[slot as usize];
        let mut text = t.text.clone();
        let mut slots = Vec::with_capacity(self.best.ops.len());
        let mut next_var = t.next_var;
        let mut changed = false;
        let mut learn: Vec<u64> = Vec::new();
        self.removed.clear();
        for op in &self.best.ops {
            match *op {
                Op::Match(i, j) => {
                    let s = t.slots[i as usize].clone();
                    if matches!(s.kind, SlotKind::Var { .. })
                        && tokens[j as usize].kind == Kind::Word
                    {
                        learn.push(tokens[j as usize].hash);
                    }
                    slots.push(s);
                }
                Op::Substitute(i, j) => {
                    let s = &t.slots[i as usize];
                    if tokens[j as usize].kind == Kind::Word {
                        learn.push(tokens[j as usize].hash);
                    }
                    learn.push(s.hash);
                    self.removed.push(s.hash);
                    slots.push(Slot {
                        kind: SlotKind::Var { optional: false },
                        glued: s.glued,
                        hash: VAR_HASH,
                        text: s.text,
                        var: next_var,
                        pre: 0,
                        suf: 0,
                        flags: 0,
                    });
                    next_var = next_var.saturating_add(1);
                    changed = true;
                }
                Op::Skip(i) => {
                    let mut s = t.slots[i as usize].clone();
                    if s.kind != (SlotKind::Var { optional: true }) {
                        s.kind = SlotKind::Var { optional: true };
                        changed = true;
                    }
                    slots.push(s);
                }
                Op::Insert(j) => {
                    let tok = tokens[j as usize];
                    slots.push(var_slot(
                        &mut text,
                        tok.text(message),
                        tok.glued,
                        next_var,
                        true,
                    ));
                    next_var = next_var.saturating_add(1);
                    changed = true;
                }
            }
        }
        for w in learn {
            self.store.learn(w, cap);
        }
        if changed {
            // Alignments with the template as it was no longer hold, nor how lines matched it.
            self.aligned.clear();
            self.aligned_ops = 0;
            self.recalled.clear();
            self.recalled_places = 0;
            let t = &mut self.store.templates[slot as usize];
            t.slots = slots;
            t.text = text;
            t.next_var = next_var;
            self.store.changed(slot);
            for k in 0..self.removed.len() {
                let w = self.removed[k];
                self.store.word_removed(slot, w);
            }
        }
        changed
    }

    fn create(&mut self, shape: u64, message: &str) -> u32 {
        let mut text = String::with_capacity(message.len());
        let mut slots = Vec::with_capacity(self.tok.out.len());
        let mut next_var = 0u16;
        for (k, tok) in self.tok.out.iter().enumerate() {
            let (kind, range, var) = match tok.kind {
                Kind::Var => {
                    slots.push(var_slot(
                        &mut text,
                        tok.text(message),
                        tok.glued,
                        next_var,
                        false,
                    ));
                    next_var = next_var.saturating_add(1);
                    continue;
                }
                k => {
                    let s = text.len() as u32;
                    text.push_str(tok.text(message));
                    let kind = if k == Kind::Word {
                        SlotKind::Word
                    } else {
                        SlotKind::Punct
                    };
                    (kind, (s, text.len() as u32), 0)
                }
            };
            slots.push(Slot {
                kind,
                glued: tok.glued,
                hash: tok.hash,
                text: range,
                var,
                pre: 0,
                suf: 0,
                // The line's own flags, mostly worked out by the search already.
                flags: align::token_flags(&self.token_flags[k], tok, message, &self.store.learned)
                    & !(align::flag::LEARNED | align::flag::KNOWN),
            });
        }
        let t = Template {
            id: mix(shape ^ ID_SEED),
            seq: 0,
            count: 0,
            slots,
            text,
            next_var,
        };
        let (slot, evicted) = self.store.insert(t, self.config.max_templates);
        self.stats.created += 1;
        if evicted.is_some() {
            self.stats.evicted += 1;
        }
        self.evicted = evicted;
        slot
    }

    /// Candidate templates for the current line, in creation order: those sharing the most
    /// constant words with it, the oldest first among equals, from the posting lists of its
    /// rarest words within a budget of postings to read. When only the rarest word's list
    /// fits in the budget, the candidates are that list's oldest templates of a fitting
    /// length, and the list is read no further than they go (and never beyond the budget):
    /// a word shared by every template, as in a flood of new templates around a few common
    /// words, costs `max_candidates` postings, not `max_templates`.
    fn find_candidates(&mut self) {
        let tokens = &self.tok.out;
        let store = &mut self.store;
        let summaries = &store.summaries;
        self.candidates.clear();
        self.words.clear();
        self.words.extend(
            tokens
                .iter()
                .filter(|t| t.kind == Kind::Word)
                .map(|t| t.hash),
        );
        self.words.sort_unstable();
        self.words.dedup();
        let n = tokens.len() as u32;
        let max = self.config.max_candidates;
        let budget = 16 * max;
        let fits = |s: u32| summaries[s as usize].len.abs_diff(n) as usize <= align::MAX_LEN_DIFF;
        if self.words.is_empty() {
            let list = &mut store.wordless;
            list.read_oldest(summaries, fits, max, budget, &mut self.candidates);
            return;
        }
        // Rarest words first.
        self.order.clear();
        for &w in &self.words {
            if let Some(list) = store.postings.get(&w) {
                self.order.push((list.live, w));
            }
        }
        self.order.sort_unstable();
        let (mut read, mut lists) = (0, 0);
        for &(len, _) in &self.order {
            if read > 0 && read + len > budget {
                break;
            }
            read += len;
            lists += 1;
        }
        if lists == 1 {
            // Every template read shares one word with the line: the oldest win.
            let list = store.postings.get_mut(&self.order[0].1).expect("listed");
            list.read_oldest(summaries, fits, max, budget, &mut self.candidates);
            return;
        }
        self.hits.resize(store.templates.len(), 0);
        self.touched.clear();
        let (hits, touched) = (&mut self.hits, &mut self.touched);
        for &(_, w) in &self.order[..lists] {
            let list = store.postings.get_mut(&w).expect("listed");
            list.read_all(summaries, |s| {
                if hits[s as usize] == 0 {
                    touched.push(s);
                }
                hits[s as usize] = hits[s as usize].saturating_add(1);
            });
        }
        // The most words shared first, then the oldest (as a sort by both would choose, the
        // `seq`s being unique), by counting: at most `lists` words are shared.
        self.ranked.clear();
        self.counts.clear();
        self.counts.resize(lists + 1, 0);
        for &s in &self.touched {
            let hits = std::mem::take(&mut self.hits[s as usize]);
            if fits(s) {
                self.counts[hits as usize] += 1;
                self.ranked.push((summaries[s as usize].seq, s, hits));
            }
        }
        if self.ranked.len() > max {
            // The fewest shared words a candidate has, and how many have more.
            let (mut fewest, mut more) = (lists, 0);
            while more + self.counts[fewest] < max as u32 {
                more += self.counts[fewest];
                fewest -= 1;
            }
            self.edge.clear();
            self.edge.extend(
                self.ranked
                    .iter()
                    .filter(|r| r.2 as usize == fewest)
                    .map(|r| (r.0, r.1)),
            );
            let need = max - more as usize;
            if self.edge.len() > need {
                self.edge.select_nth_unstable(need - 1);
                self.edge.truncate(need);
            }
            self.ranked.retain(|r| r.2 as usize > fewest);
            self.ranked
                .extend(self.edge.iter().map(|&(seq, s)| (seq, s, 0)));
        }
        self.ranked.sort_unstable();
        self.candidates
            .extend(self.ranked.iter().map(|&(_, s, _)| s));
    }
}

/// The current line as the candidate search sees a template.
fn line_summary(tokens: &[token::Token]) -> Summary {
    let mut s = Summary {
        len: tokens.len() as u32,
        ..Summary::default()
    };
    for t in tokens {
        match t.kind {
            Kind::Word => {
                s.words += 1;
                s.word_bits |= store::word_bit(t.hash);
            }
            Kind::Punct => s.puncts += 1,
            Kind::Var => s.vars += 1,
        }
    }
    s
}

/// Whether the varying-length alignment ([`Ctx::varying`]) may line up template `t` with
/// `line`, from their summaries: it matches each of the template's constants with an equal
/// token, in order, and each of the line's words with an equal constant or a variable slot
/// of its own. So the template's words are among the line's (the caller checks that exactly
/// when these bits allow it), the punctuation is as much, and the variable slots take the
/// line's other words. A flood of new templates fails here rather than in the dynamic
/// programme.
fn may_vary(t: &Summary, line: &Summary) -> bool {
    t.len.abs_diff(line.len) as usize <= align::MAX_LEN_DIFF
        && t.puncts == line.puncts
        && t.word_bits & !line.word_bits == 0
        && t.words <= line.words
        && line.words - t.words <= t.vars
}

#[cfg(test)]
mod tests;
