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

/// The files of `paths` (a directory's YAML files, or every file of it for `patterns_dir`s).
fn fingerprint(paths: &[PathBuf], only_yaml: bool) -> Fingerprint {
    let mut files = Vec::new();
    for p in paths {
        let entries: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !only_yaml || crate::rules::compile::is_yaml(p))
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

/// The candidate rules (`rules_candidate`): the live files, with the candidate's in place of
/// those of the same file name. `Ok(None)` without candidate files (none configured, or none
/// in the directories); `Err` (reported) when the
/// candidate has errors: the live rules run on, without a shadow.
pub fn candidate(cfg: &Config) -> Result<Option<Arc<Program>>, String> {
    if cfg.rules_candidate.is_empty() {
        return Ok(None);
    }
    let (candidate, mut diags) = crate::rules::load_paths(&cfg.rules_candidate);
    // An empty candidate directory is no candidate: a team's file removed once promoted ends
    // its shadow, which would otherwise evaluate the live rules twice.
    if candidate.is_empty() && diags.iter().all(|d| !d.is_error()) {
        return Ok(None);
    }
    let (live, more) = crate::rules::load_paths(&cfg.rules);
    diags.extend(more);
    let (files, _) = crate::rules::compile::overlay(live, candidate);
    let (program, more) = crate::rules::compile::compile_with(&files, &cfg.compile_options());
    diags.extend(more);
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    if errors.is_empty() {
        return Ok(Some(Arc::new(program)));
    }
    for e in &errors {
        tracing::warn!(diagnostic = %e, "candidate rules");
    }
    tracing::warn!("the candidate rules have errors: no shadow evaluation until they are fixed");
    Err(errors.join("\n"))
}

/// Recompiles the rules; `None` (and the diagnostics reported) when they have errors.
fn recompile(cfg: &Config) -> Option<Arc<Program>> {
    let (files, mut diags) = crate::rules::load_paths(&cfg.rules);
    let (program, more) = crate::rules::compile::compile_with(&files, &cfg.compile_options());
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

/// What a look at the rule files found.
pub struct Changed {
    pub live: Option<Arc<Program>>,
    pub candidate: Result<Option<Arc<Program>>, String>,
}

/// Watches the rule files (the candidate's too).
pub struct RuleFiles {
    seen: Fingerprint,
    /// The pattern directories the rules in force read (`Program::pattern_dirs`).
    pattern_dirs: Vec<PathBuf>,
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
            pattern_dirs: Vec::new(),
            last: Instant::now(),
            valid: true,
        }
    }

    /// When the files changed (or `asked`): a new live program if they compile to other
    /// rules, and the candidate as it is now (`candidate`).
    pub fn check(&mut self, cfg: &Config, current: u64, asked: bool) -> Option<Changed> {
        if !asked && self.last.elapsed() < Duration::from_secs(1) {
            return None;
        }
        self.last = Instant::now();
        let mut now = fingerprint(&cfg.rules, true);
        now.extend(fingerprint(&cfg.rules_candidate, true));
        now.extend(fingerprint(&self.pattern_dirs, false));
        if !asked && now == self.seen {
            return None;
        }
        self.seen = now;
        let live = match recompile(cfg) {
            None => {
                self.valid = false;
                None
            }
            Some(p) => {
                // Watched from now on (the next look sees them as they are: a change).
                self.pattern_dirs = p.pattern_dirs.clone();
                if !self.valid {
                    tracing::info!("rules are valid again");
                }
                self.valid = true;
                (p.hash != current).then_some(p)
            }
        };
        let candidate = candidate(cfg);
        // The candidate's pattern files are watched too: its shadow follows their edits.
        if let Ok(Some(c)) = &candidate {
            self.pattern_dirs.extend(c.pattern_dirs.iter().cloned());
            self.pattern_dirs.sort();
            self.pattern_dirs.dedup();
        }
        Some(Changed { live, candidate })
    }
}

impl Coordinator {
    /// Evaluates `candidate` beside the live rules from the next batch on (`None`: stop).
    /// Its shadow starts again whenever the candidate or the live rules change.
    pub(super) fn set_candidate(&mut self, candidate: Result<Option<Arc<Program>>, String>) {
        let (candidate, error) = match candidate {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e)),
        };
        // The same candidate beside the same live rules goes on comparing; anything else
        // starts again (no candidate, or one with errors, replaces what was shown).
        let unchanged = match (&self.candidate, &candidate) {
            (Some(a), Some(b)) => {
                a.hash == b.hash
                    && self
                        .exported
                        .shadow_live()
                        .is_some_and(|live| Arc::ptr_eq(&live, &self.program))
            }
            _ => false,
        };
        if unchanged {
            return;
        }
        if let Some(c) = &candidate {
            tracing::info!(
                rules = c.rules.len(),
                hash = format!("{:016x}", c.hash),
                "candidate rules loaded: compared with the live rules at /-/shadow"
            );
        }
        self.exported.set_shadow(
            candidate.as_ref().map(|c| {
                crate::derive::shadow::Shadow::new(
                    Arc::clone(&self.program),
                    Arc::clone(c),
                    super::now_ms(),
                )
            }),
            error,
        );
        self.candidate = candidate;
    }

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
