//! Reduce: what happens to an event after it was counted.
//!
//! Today this is the `then:` decision of the rules that matched. Sampling, deduplication,
//! throttling and template mining plug in here, after `derive`, with per-partition state.

pub mod templates;

use crate::rules::program::Then;

/// The fate of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Keep,
    Drop,
    DeadLetter(Reason),
}

/// Why an event went to the dead-letter path. Bounded, so it can be a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Decode(crate::decode::DecodeError),
    Value(crate::extract::value::ValueError),
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Decode(e) => e.as_str(),
            Reason::Value(e) => e.as_str(),
        }
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
