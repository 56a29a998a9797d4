//! Reduce: what happens to an event after it was counted.
//!
//! First the `then:` decision of the rules that matched (`Decision`), in the engine. Then,
//! for a kept event whose rule has a `reduce:` section, the reduction (`Reducer`): sampling,
//! deduplication, throttling and template summaries, with per-partition state, run in each
//! partition's order after the engine (by the service's worker that owns the partition, by
//! replay's writer). The engine hands it an `Ask` per such event: what the rule's fields say,
//! hashed, so the sequential part does little.

pub mod hash;
mod places;
pub mod reducer;
pub mod retain;
mod snapshot;
pub mod summary;
pub mod table;
pub mod templates;

pub use reducer::{Reducer, Source};
pub use summary::Summary;

use crate::extract::value::ValueError;
use crate::rules::program::{FieldRef, Program, Then, TracePart};

/// The fate of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Keep,
    Drop,
    DeadLetter(Reason),
}

/// Why an event went to the dead-letter path. `as_str` is bounded, so it can be a label
/// value; `culprit` says more, for the dead letter itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Decode(crate::decode::DecodeError),
    Value(ValueFailure),
}

/// A value a metric could not use, and where: the rule and which of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueFailure {
    pub error: ValueError,
    /// Index into `Program::rules`.
    pub rule: u32,
    /// Index into that rule's `updates`.
    pub update: u32,
}

/// What a dead letter names besides its reason: the rule (`team/name`), the metric and the
/// field whose value failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Culprit {
    pub rule: String,
    pub metric: String,
    pub field: String,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Decode(e) => e.as_str(),
            Reason::Value(f) => f.error.as_str(),
        }
    }

    /// The rule, metric and field of a value failure, named from the program that produced
    /// it; `None` for decode failures (no rule ran).
    pub fn culprit(self, program: &Program) -> Option<Culprit> {
        let Reason::Value(f) = self else {
            return None;
        };
        let rule = program.rules.get(f.rule as usize)?;
        let update = rule.updates.get(f.update as usize)?;
        let field = match update.value.map(|v| v.field) {
            Some(FieldRef::Capture(i)) => rule.capture_names.get(i as usize).cloned(),
            Some(FieldRef::Event(i)) => {
                program.event_fields.get(i as usize).map(|p| p.name.clone())
            }
            Some(FieldRef::Line) => Some("_line".to_string()),
            Some(FieldRef::Topic) => Some("_topic".to_string()),
            Some(FieldRef::Trace(part)) => Some(
                match part {
                    TracePart::Trace => "_trace_id",
                    TracePart::Span => "_span_id",
                    TracePart::Parent => "_parent_span_id",
                }
                .to_string(),
            ),
            None => None,
        };
        Some(Culprit {
            rule: format!("{}/{}", rule.team, rule.name),
            metric: program.families.get(update.family as usize)?.name.clone(),
            field: field.unwrap_or_default(),
        })
    }
}

/// Folds the `then:` of each matching rule: an explicit `keep` beats `drop`, `drop` beats the
/// default. An event no rule matched is kept: logmill never drops what it does not understand.
#[derive(Debug, Default, Clone, Copy)]
pub struct Decision {
    keep: bool,
    drop: bool,
}

impl Decision {
    pub fn add(&mut self, then: Then) {
        match then {
            Then::Keep => self.keep = true,
            Then::Drop => self.drop = true,
            Then::Default => {}
        }
    }

    pub fn fate(self) -> Fate {
        if self.drop && !self.keep {
            Fate::Drop
        } else {
            Fate::Keep
        }
    }
}

/// Whether `sample` drops the event of this key: the same key gets the same decision on every
/// instance and after every restart, and the engine can tell in advance (an event sampled
/// out is no exemplar).
pub fn sampled_out(key: u64, rate: u32) -> bool {
    !hash::mix(key).is_multiple_of(u64::from(rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_keep_wins() {
        let mut d = Decision::default();
        assert_eq!(d.fate(), Fate::Keep);
        d.add(Then::Drop);
        assert_eq!(d.fate(), Fate::Drop);
        d.add(Then::Default);
        assert_eq!(d.fate(), Fate::Drop);
        d.add(Then::Keep);
        assert_eq!(d.fate(), Fate::Keep);
    }
}

/// A reduction action. Bounded: a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Sample = 0,
    Dedupe = 1,
    Throttle = 2,
    Patterns = 3,
    /// Over its team's kept bytes per second (`budget.kept_bytes`).
    Budget = 4,
}

/// The number of actions: the size of arrays indexed by `Action`.
pub const ACTIONS: usize = 5;

impl Action {
    pub const ALL: [Action; ACTIONS] = [
        Action::Sample,
        Action::Dedupe,
        Action::Throttle,
        Action::Patterns,
        Action::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Sample => "sample",
            Action::Dedupe => "dedupe",
            Action::Throttle => "throttle",
            Action::Patterns => "patterns",
            Action::Budget => "budget",
        }
    }
}

/// What the reduction decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Kept; `sample_rate` when sampling kept it (one in that many), so readers can re-weigh;
    /// `template` when the event's template was mined.
    Keep {
        sample_rate: Option<u32>,
        template: Option<u64>,
    },
    Suppressed(Action),
    /// Held until its trace is decided (`keep_traces`): it comes out later, if at all, as a
    /// released event.
    Held,
}

/// An event's outcome in words, as `shadow` and `test` compare them: `keep`, `drop`,
/// `dead_letter`, the reduction that removed it (`sampled`, `deduped`, `throttled`,
/// `patterned`, `over_budget`), or `held` until its trace is decided.
pub fn outcome(fate: &Fate, verdict: Option<&Verdict>) -> &'static str {
    match (fate, verdict) {
        (Fate::Keep, Some(Verdict::Held)) => "held",
        (Fate::Keep, Some(Verdict::Suppressed(a))) => match a {
            Action::Sample => "sampled",
            Action::Dedupe => "deduped",
            Action::Throttle => "throttled",
            Action::Patterns => "patterned",
            Action::Budget => "over_budget",
        },
        (Fate::Keep, _) => "keep",
        (Fate::Drop, _) => "drop",
        (Fate::DeadLetter(_), _) => "dead_letter",
    }
}

/// What the engine found out about one kept event whose rule reduces: everything the
/// reduction needs from the event's fields, so that the reduction itself (sequential per
/// partition) does no decoding. Text it needs is in the batch's text arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// Index of the record in its batch.
    pub record: u32,
    /// Index of the rule in the program.
    pub rule: u32,
    /// An error level, or `always_keep`: never reduced.
    pub protected: bool,
    /// The event's own time (the rule's `time` field), when it has one.
    pub time_ms: Option<u64>,
    pub sample_key: u64,
    /// `sample_key` is the event's trace id: `keep_traces` applies.
    pub traced: bool,
    /// The dedupe key's fields (the template is added by the reduction).
    pub dedupe_key: u64,
    pub throttle_key: u64,
    /// Ranges of the text arena: the message templates are mined from, and the key fields'
    /// `name=value` pairs for summaries.
    pub message: (u32, u32),
    /// The message is the whole event (a rule without `message:` over a bare line): it is
    /// read from the event rather than copied into the text arena, which for lines mined whole
    /// would otherwise hold a second copy of most of the input.
    pub message_is_event: bool,
    pub dedupe_text: (u32, u32),
    pub throttle_text: (u32, u32),
    /// Instead of those texts, when every value of the key is a span of the event (or
    /// absent): the text is then written only for the summary that needs it.
    pub dedupe_spans: KeySpans,
    pub throttle_spans: KeySpans,
}

/// Most keys name a few fields.
pub const MAX_KEY_SPANS: usize = 4;

/// A key's values as spans of the event, in the key's order (an absent value as an empty
/// span); `n` is 0 when the key's text is in the text arena instead. (`n` is as wide as a span's
/// half: the padding is there anyway, and a byte stored then copied as a word with the rest
/// stalled every key's return on the failed store-to-load forwarding.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySpans {
    pub n: u32,
    pub spans: [(u32, u32); MAX_KEY_SPANS],
}

impl Ask {
    /// The message to mine: in `text`, or the event itself (its payload, which the engine
    /// decoded as this text).
    pub fn message<'a>(&self, text: &'a str, event: &'a [u8]) -> &'a str {
        if self.message_is_event {
            return std::str::from_utf8(event).unwrap_or_default();
        }
        text.get(self.message.0 as usize..self.message.1 as usize)
            .unwrap_or_default()
    }

    pub fn key_text<'a>(&self, text: &'a str, range: (u32, u32)) -> &'a str {
        text.get(range.0 as usize..range.1 as usize)
            .unwrap_or_default()
    }

    /// A key's text (`name=value` pairs joined by `\x1f`): from the text arena, or written
    /// from the event's spans and the key's field names.
    pub fn key_text_of(
        &self,
        text: &str,
        event: &[u8],
        range: (u32, u32),
        spans: &KeySpans,
        names: &[String],
    ) -> Box<str> {
        if spans.n == 0 {
            return self.key_text(text, range).into();
        }
        let mut out = String::new();
        for (i, (name, &(a, b))) in names
            .iter()
            .zip(&spans.spans[..spans.n as usize])
            .enumerate()
        {
            if i > 0 {
                out.push('\u{1f}');
            }
            out.push_str(name);
            out.push('=');
            let value = event.get(a as usize..b as usize).unwrap_or_default();
            out.push_str(std::str::from_utf8(value).unwrap_or_default());
        }
        out.into()
    }
}

/// Events and bytes through a rule's reduction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleReduction {
    pub events_in: u64,
    pub bytes_in: u64,
    pub events_out: u64,
    pub bytes_out: u64,
    /// Kept because of their level or `always_keep`.
    pub protected: u64,
    /// By `Action` as index.
    pub suppressed: [u64; ACTIONS],
    pub suppressed_bytes: [u64; ACTIONS],
}

/// Plain counters of the reduction, per rule (by index) and per action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reduction {
    pub rules: Vec<RuleReduction>,
    /// Windows closed early at a cap (or templates evicted), by `Action` as index.
    pub evictions: [u64; ACTIONS],
    /// Summary records emitted, by `Action` as index.
    pub summaries: [u64; ACTIONS],
    /// Traces decided by `keep_traces`.
    pub retain: retain::RetainCounts,
}

impl Reduction {
    pub fn new(program: &Program) -> Reduction {
        Reduction {
            rules: vec![RuleReduction::default(); program.rules.len()],
            ..Reduction::default()
        }
    }

    pub fn absorb(&mut self, o: &Reduction) {
        if self.rules.len() < o.rules.len() {
            self.rules.resize(o.rules.len(), RuleReduction::default());
        }
        for (a, b) in self.rules.iter_mut().zip(&o.rules) {
            a.events_in += b.events_in;
            a.bytes_in += b.bytes_in;
            a.events_out += b.events_out;
            a.bytes_out += b.bytes_out;
            a.protected += b.protected;
            for i in 0..ACTIONS {
                a.suppressed[i] += b.suppressed[i];
                a.suppressed_bytes[i] += b.suppressed_bytes[i];
            }
        }
        for i in 0..ACTIONS {
            self.evictions[i] += o.evictions[i];
            self.summaries[i] += o.summaries[i];
        }
        self.retain.absorb(&o.retain);
    }

    /// Events and bytes in and out over every rule.
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        self.rules.iter().fold((0, 0, 0, 0), |(a, b, c, d), r| {
            (
                a + r.events_in,
                b + r.bytes_in,
                c + r.events_out,
                d + r.bytes_out,
            )
        })
    }
}
