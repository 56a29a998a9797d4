//! CPU budgets per rule (`budget.cpu` of a team), enforced by the service: a rule that used
//! more CPU than its team allows over a window is quarantined, not evaluated, for a cool-down,
//! then tried again. Time is measured on a sample of events (one in `SAMPLE`), so the guard
//! costs next to nothing; a quarantined rule costs one comparison per candidate event.
//!
//! This is the one place where wall-clock time changes what is counted: a quarantined rule's
//! events are not counted by it (they are counted as skipped). Replay and `test` never
//! enforce budgets, so they stay deterministic.

use std::time::{Duration, Instant};

use crate::rules::Program;

/// One event in this many has its rules timed.
pub const SAMPLE: u64 = 16;

#[derive(Debug)]
pub struct CpuGuard {
    /// Per rule: its budget in nanoseconds per second, if its team has one.
    budgets: Vec<Option<u64>>,
    /// Estimated nanoseconds spent in the current window.
    pub(super) spent: Vec<u64>,
    /// Quarantined until then.
    pub(super) until: Vec<Option<Instant>>,
    window_start: Instant,
    window: Duration,
    cool_down: Duration,
    events: u64,
    /// Candidate events skipped while quarantined, per rule, since last taken.
    pub(super) skipped: Vec<u64>,
    /// Quarantines started since last taken: the rule and its CPU per second then.
    quarantined: Vec<(u32, Duration)>,
}

impl CpuGuard {
    /// `None` when no rule has a budget.
    pub fn new(program: &Program, window: Duration, cool_down: Duration) -> Option<CpuGuard> {
        let budgets: Vec<Option<u64>> = program
            .rules
            .iter()
            .map(|r| r.cpu_budget.map(|d| d.as_nanos() as u64))
            .collect();
        if budgets.iter().all(Option::is_none) {
            return None;
        }
        let n = budgets.len();
        Some(CpuGuard {
            budgets,
            spent: vec![0; n],
            until: vec![None; n],
            window_start: Instant::now(),
            window,
            cool_down,
            events: 0,
            skipped: vec![0; n],
            quarantined: Vec::new(),
        })
    }

    /// Whether this event's rules are timed.
    pub(super) fn sample(&mut self) -> bool {
        self.events += 1;
        self.events.is_multiple_of(SAMPLE)
    }

    /// Whether rule `r` is quarantined at `now`.
    #[inline]
    pub(super) fn quarantined(&self, r: usize, now: Instant) -> bool {
        self.until[r].is_some_and(|t| t > now)
    }

    pub(super) fn spent(&mut self, r: usize, nanos: u64) {
        self.spent[r] += nanos * SAMPLE;
    }

    /// At a batch's end: once a window has passed, quarantines the rules over their budget.
    pub(super) fn roll(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.window_start);
        if elapsed < self.window {
            return;
        }
        let secs = elapsed.as_secs_f64();
        for r in 0..self.budgets.len() {
            let Some(budget) = self.budgets[r] else {
                continue;
            };
            let per_second = self.spent[r] as f64 / secs;
            if per_second > budget as f64 && !self.quarantined(r, now) {
                self.until[r] = Some(now + self.cool_down);
                self.quarantined
                    .push((r as u32, Duration::from_nanos(per_second as u64)));
            }
            self.spent[r] = 0;
        }
        self.window_start = now;
    }

    /// Quarantines started since the last call.
    pub fn take_quarantined(&mut self) -> Vec<(u32, Duration)> {
        std::mem::take(&mut self.quarantined)
    }

    /// Events skipped per rule since the last call.
    pub fn take_skipped(&mut self) -> Vec<u64> {
        let n = self.skipped.len();
        std::mem::replace(&mut self.skipped, vec![0; n])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::decode::{InputFormat, Limits};
    use crate::derive::Version;
    use crate::engine::{Engine, Record};
    use crate::rules::{SourceFile, compile};

    #[test]
    fn issue9_a_rule_over_its_teams_cpu_budget_is_quarantined_then_tried_again() {
        let rules = |team: &str, budget: &str| {
            format!(
                "team: {team}\n{budget}rules:\n  - name: r\n    format: text\n    extract:\n      - regex: '(?P<a>\\w+) (?P<b>\\w+)$'\n    metrics: [{{name: {team}_total, type: counter}}]\n"
            )
        };
        let (program, diags) = compile(&[
            SourceFile {
                name: "greedy.yaml".into(),
                text: rules("greedy", "budget: {cpu: 1us}\n"),
            },
            SourceFile {
                name: "modest.yaml".into(),
                text: rules("modest", ""),
            },
        ]);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let program = Arc::new(program);
        let mut e = Engine::new(Arc::clone(&program), InputFormat::Auto, Limits::default());
        e.enforce_cpu_budgets(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(200),
        );
        let line = "hello there";
        let batch: Vec<Record> = (0..256)
            .map(|i| Record {
                payload: line.as_bytes(),
                topic: "t",
                version: Version {
                    offset: i,
                    ..Version::default()
                },
                event_ms: 0,
                part: crate::decode::Part::Whole,
            })
            .collect();
        let mut fates = Vec::new();
        let matches = |e: &Engine| (e.counters.rule_matches[0], e.counters.rule_matches[1]);
        e.process(&batch, 0, &mut fates);
        assert_eq!(matches(&e), (256, 256));
        std::thread::sleep(std::time::Duration::from_millis(5));
        // The window has passed: the greedy rule is over a microsecond a second.
        e.process(&batch, 0, &mut fates);
        let g = e.cpu_guard.as_mut().unwrap();
        let q = g.take_quarantined();
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].0, 0);
        e.process(&batch, 0, &mut fates);
        assert_eq!(matches(&e), (512, 768), "the greedy rule is not evaluated");
        assert_eq!(e.cpu_guard.as_mut().unwrap().take_skipped()[0], 256);
        std::thread::sleep(std::time::Duration::from_millis(250));
        e.process(&batch, 0, &mut fates);
        assert_eq!(matches(&e).0, 768, "tried again after the cool-down");
    }
}
