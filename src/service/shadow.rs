//! The candidate rule set of `rules_candidate`, evaluated by each worker beside the live one
//! over the same records (`derive::shadow` keeps and compares the results; `/-/shadow` shows
//! them). **The candidate never changes exported values, outputs or checkpoints**: its engine,
//! its reduction state and its values are its own, and what it decides is only compared.
//!
//! Its reduction state starts empty when the candidate is loaded and is not checkpointed;
//! trace summaries are gathered once, by the live rules, and the candidate's rules read them
//! as the live rules do.

use std::collections::HashMap;
use std::sync::Arc;

use crate::decode::{InputFormat, Limits};
use crate::derive::Aggregates;
use crate::derive::shadow::{Delta, EXAMPLES, Evaluation, Outcomes};
use crate::engine::{Engine, Record};
use crate::reduce::retain::RetainConfig;
use crate::reduce::{Reducer, Reduction, Source, Summary, outcome};
use crate::rules::Program;
use crate::source::kafka::OwnedRecord;

/// Rules are timed on one event in this many, on both sides.
const PROFILE_EVERY: u64 = 16;

pub struct Candidate {
    program: Arc<Program>,
    engine: Engine,
    traces: Engine,
    reducers: HashMap<(Arc<str>, i32), Reducer>,
    retain: RetainConfig,
}

impl Candidate {
    pub fn new(
        program: Arc<Program>,
        input: InputFormat,
        limits: Limits,
        retain: RetainConfig,
    ) -> Candidate {
        let mut engine = Engine::new(Arc::clone(&program), input, limits);
        engine.profile_rules_sampled(PROFILE_EVERY);
        // A candidate rule over its team's CPU budget is quarantined like a live one: trying
        // a rule must not slow the service.
        engine.enforce_cpu_budgets(super::worker::BUDGET_WINDOW, super::worker::QUARANTINE);
        let traces = Engine::new(
            Arc::clone(&program),
            InputFormat::Fixed(crate::decode::Format::Json),
            limits,
        );
        Candidate {
            program,
            engine,
            traces,
            reducers: HashMap::new(),
            retain,
        }
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// Times the live engine's rules the same way, so both sides' costs compare (the service
    /// always does: `logmill_rule_cpu_microseconds_total`).
    pub fn profile_live(live: &mut Engine) {
        if live.rule_nanos.is_empty() {
            live.profile_rules_sampled(PROFILE_EVERY);
        }
    }

    /// The partition is no longer this worker's.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.reducers
            .retain(|(t, p), _| !(&**t == topic && *p == partition));
    }

    /// Evaluates a batch the live rules just evaluated: `live` is what they found and
    /// `live_outcomes[i]` what became of `records[i]`; `trace_lines` are the trace summaries
    /// the live side gathered.
    pub fn batch(
        &mut self,
        live: Evaluation,
        live_outcomes: &[&'static str],
        records: &[OwnedRecord],
        trace_lines: &[Record<'_>],
        now_ms: u64,
    ) -> Delta {
        let program = Arc::clone(&self.program);
        let batch: Vec<Record> = records.iter().map(super::worker::as_record).collect();
        let mut fates = Vec::with_capacity(batch.len());
        self.engine.process(&batch, now_ms, &mut fates);
        super::worker::quarantines(&mut self.engine, &program, true);
        let mut verdicts = vec![None; records.len()];
        let mut reduction = Reduction::new(&program);
        let mut summaries: Vec<Summary> = Vec::new();
        for ask in &self.engine.asks {
            let i = ask.record as usize;
            let rec = &records[i];
            let retain = self.retain;
            let reducer = self
                .reducers
                .entry((Arc::clone(&rec.topic), rec.partition))
                .or_insert_with(|| Reducer::with_retention(retain));
            let source = Source {
                partition: rec.partition,
                offset: rec.offset,
                timestamp_ms: rec.timestamp_ms,
                part: crate::decode::Part::Whole,
            };
            verdicts[i] = Some(reducer.decide(
                &program,
                ask,
                &self.engine.text,
                &rec.payload,
                rec.event_ms,
                source,
                &mut reduction,
                &mut summaries,
            ));
            summaries.clear();
            reducer.released.clear();
        }
        let mut outcomes = Outcomes::default();
        for (i, rec) in records.iter().enumerate() {
            let theirs = outcome(&fates[i], verdicts[i].as_ref());
            outcomes.add(live_outcomes[i], theirs, &rec.payload, EXAMPLES);
        }
        let mut delta = std::mem::replace(&mut self.engine.local, Aggregates::new(&program));
        let mut matches = std::mem::replace(
            &mut self.engine.counters,
            crate::engine::Counters {
                rule_matches: vec![0; program.rules.len()],
                ..Default::default()
            },
        )
        .rule_matches;
        if !trace_lines.is_empty() {
            super::worker::read_trace_lines(
                &mut self.traces,
                &program,
                trace_lines,
                &mut delta,
                &mut matches,
            );
        }
        let nanos = std::mem::replace(&mut self.engine.rule_nanos, vec![0; program.rules.len()]);
        Delta {
            live,
            candidate: Evaluation {
                program,
                aggs: delta,
                matches,
                nanos,
            },
            outcomes,
        }
    }
}
