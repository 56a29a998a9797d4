//! Reduce: what happens to an event after it was counted.
//!
//! Today this is the `then:` decision of the rules that matched. Sampling, deduplication,
//! throttling and template mining plug in here, after `derive`, with per-partition state.

pub mod templates;

use crate::extract::value::ValueError;
use crate::rules::program::{FieldRef, Program, Then};

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
