//! Folds worked out once and replayed on the next lines whose raw tokens have the same shapes.

use super::{Kind, Token, var};

/// Replays kept, and the shapes and steps they may hold in all; all are forgotten when either
/// is reached (a shape costs one fold to learn again).
pub(super) const MAX_REPLAYS: usize = 1024;
pub(super) const MAX_REPLAYED: usize = 1 << 16;

/// A raw token's shape (see [`Replay`]): its kind, whether it is glued, and `detail`: a
/// punctuation's character, a word's facts, whether a variable is empty.
#[inline]
pub(super) fn shape(kind: Kind, glued: bool, detail: u8) -> u16 {
    kind as u16 | u16::from(glued) << 2 | u16::from(detail) << 3
}

pub(super) const REPLAY_START: u64 = 0x6a09_e667_f3bc_c908;

/// One step of a replayed fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Raw tokens `from..to` as they are.
    Copy { from: u32, to: u32 },
    /// A variable from the start of raw token `first` to the end of raw token `last`.
    Var { first: u32, last: u32, glued: bool },
}

/// A fold worked out once, replayed on the lines whose raw tokens have the same shapes.
///
/// A raw token's shape is what the fold looks at in it other than its span: its kind, whether
/// it is glued, a punctuation's character, a word's facts ([`UNIT`](super::words::UNIT),
/// [`PATH`](super::words::PATH)), whether a variable is empty. The fold decides from these
/// alone and copies spans from raw tokens, never computing one; so for raw tokens of the same
/// shapes it takes the same steps, and its output is the same raw tokens, or variables
/// spanning the same ones. Steps name raw tokens by index, found from positions when the fold
/// is recorded: two raw tokens share a start or an end only beside an empty variable (`()`,
/// `key=`), which sits at its neighbours' position in every line of its shape (the tokens of
/// a chunk are contiguous, and an empty variable is never a chunk's first). A recording is
/// kept only if it gives back the fold's output.
#[derive(Debug)]
pub(super) struct Replay {
    pub(super) shapes: Vec<u16>,
    pub(super) steps: Vec<Step>,
}

impl Replay {
    /// The steps that make `out` from `raw`, if positions tell which raw tokens they take.
    pub(super) fn record(raw: &[Token], shapes: &[u16], out: &[Token]) -> Option<Replay> {
        let first_at = |pos: u32| -> Option<usize> {
            let k = raw.partition_point(|t| t.start < pos);
            (raw.get(k)?.start == pos).then_some(k)
        };
        let last_at = |pos: u32| -> Option<usize> {
            let k = raw.partition_point(|t| t.end <= pos);
            (k > 0 && raw[k - 1].end == pos).then(|| k - 1)
        };
        let mut steps: Vec<Step> = Vec::new();
        for t in out {
            let (first, last) = (first_at(t.start)?, last_at(t.end)?);
            if first == last && raw[first] == *t {
                if let Some(Step::Copy { to, .. }) = steps.last_mut()
                    && *to as usize == first
                {
                    *to += 1;
                    continue;
                }
                steps.push(Step::Copy {
                    from: first as u32,
                    to: first as u32 + 1,
                });
            } else if t.kind == Kind::Var {
                steps.push(Step::Var {
                    first: first as u32,
                    last: last as u32,
                    glued: t.glued,
                });
            } else {
                return None;
            }
        }
        let r = Replay {
            shapes: shapes.to_vec(),
            steps,
        };
        let mut again = Vec::with_capacity(out.len());
        r.apply(raw, &mut again);
        (again == out).then_some(r)
    }

    #[inline]
    pub(super) fn apply(&self, raw: &[Token], out: &mut Vec<Token>) {
        for step in &self.steps {
            match *step {
                Step::Copy { from, to } => out.extend_from_slice(&raw[from as usize..to as usize]),
                Step::Var { first, last, glued } => out.push(var(
                    raw[first as usize].start as usize,
                    raw[last as usize].end as usize,
                    glued,
                )),
            }
        }
    }
}
