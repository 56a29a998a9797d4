//! Rule reloads: rule files are watched (and SIGHUP asks for a look); a rule set with errors is
//! reported and the running one stays; a valid one is swapped in between batches, with the
//! values of unchanged families moved over, and checkpointed at once so that what is exported
//! is always described by the rules in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::BaseConsumer;

use super::coordinator::Coordinator;
use super::rebalance::Ctx;
use crate::config::Config;
use crate::derive::snapshot;
use crate::rules::Program;

/// The rule files' names, sizes and modification times, to notice edits.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut files = Vec::new();
    for p in paths {
        let entries: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| crate::rules::compile::is_yaml(p))
                .collect()
        } else {
            vec![p.clone()]
        };
        for f in entries {
            let md = std::fs::metadata(&f).ok();
            files.push((
                f,
                md.as_ref().map_or(0, |m| m.len()),
                md.and_then(|m| m.modified().ok()),
            ));
        }
    }
    files.sort();
    files
}

/// Recompiles the rules; `None` (and the diagnostics reported) when they have errors.
fn recompile(cfg: &Config) -> Option<Arc<Program>> {
    let (files, mut diags) = crate::rules::load_paths(&cfg.rules);
    let (program, more) = crate::rules::compile(&files);
    diags.extend(more);
    for d in diags.iter().filter(|d| d.is_error()) {
        tracing::warn!(diagnostic = %d, "rule reload");
    }
    if diags.iter().any(|d| d.is_error()) {
        crate::telemetry::reload_failed();
        tracing::warn!("the changed rules have errors: still running the previous rules");
        return None;
    }
    Some(Arc::new(program))
}

/// Watches the rule files.
pub struct RuleFiles {
    seen: Fingerprint,
    last: Instant,
    /// Whether the files as they are now compile; the rules in force always do.
    pub valid: bool,
}

impl RuleFiles {
    /// The first look compiles the files again: they may have changed between the program's
    /// compilation and now (while the service started), and then the hash tells.
    pub fn new(_cfg: &Config) -> RuleFiles {
        RuleFiles {
            seen: Fingerprint::new(),
            last: Instant::now(),
            valid: true,
        }
    }

    /// A new program when the files changed (or `asked`) and compile to other rules.
    pub fn check(&mut self, cfg: &Config, current: u64, asked: bool) -> Option<Arc<Program>> {
        if !asked && self.last.elapsed() < Duration::from_secs(1) {
            return None;
        }
        self.last = Instant::now();
        let now = fingerprint(&cfg.rules);
        if !asked && now == self.seen {
            return None;
        }
        self.seen = now;
        match recompile(cfg) {
            None => {
                self.valid = false;
                None
            }
            Some(p) => {
                if !self.valid {
                    tracing::info!("rules are valid again");
                }
                self.valid = true;
                (p.hash != current).then_some(p)
            }
        }
    }
}

impl Coordinator {
    /// Swaps in a new rule set between batches. Series of families that did not change keep
    /// their values; the exported values move over the same way; the next checkpoint is a full
    /// one, taken at once.
    pub(super) fn swap_program(&mut self, consumer: &BaseConsumer<Ctx>, program: Arc<Program>) {
        // A barrier or cut in flight is taken over by the full checkpoint below; the states
        // it took must still be written.
        self.wait_idle();
        if let Some(cut) = self.checkpoints.cut.take() {
            self.abandon(cut);
        }
        self.pending = snapshot::remap(&self.program, &program, &self.pending);
        let shown = self.exported.current();
        self.exported.publish(
            Arc::clone(&program),
            snapshot::remap(&shown.program, &program, &shown.aggs),
        );
        let old = std::mem::replace(&mut self.program, program);
        self.counters.rule_matches = vec![0; self.program.rules.len()];
        self.checkpoints.needs_full = true;
        tracing::info!(
            rules = self.program.rules.len(),
            hash = format!("{:016x}", self.program.hash),
            previous = format!("{:016x}", old.hash),
            "rules reloaded"
        );
        let deadline = Instant::now() + self.cfg.state_write_timeout + Duration::from_secs(5);
        if let Err(f) = self.checkpoint_now(consumer, deadline) {
            // The regular checkpoints take it from here; nothing shown changed.
            self.failed(&f);
        }
    }
}
