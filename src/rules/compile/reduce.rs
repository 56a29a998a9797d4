//! The `reduce` section: what happens to a kept event after it is counted — sampling,
//! deduplication, throttling, template summaries — and which events are never reduced. A
//! team's `defaults.reduce` applies to each of its rules, action by action, under the rule's
//! own.

use super::conditions::all_of;
use super::{Builder, RuleCx, Section};
use crate::decode::Format;
use crate::extract::time::TimeFormat;
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::program::*;
use crate::rules::read::{MapView, duration, limit, scalar, strings};
use crate::rules::suggest::did_you_mean;
use crate::rules::yaml::{Node, Pos};

pub(super) const SECTION: Section = Section {
    keys: &["reduce"],
    compile: section,
};

const KEYS: &[&str] = &[
    "message",
    "level",
    "time",
    "always_keep",
    "sample",
    "keep_traces",
    "dedupe",
    "throttle",
    "patterns",
    "max_keys",
];
const ACTIONS: &[&str] = &["sample", "dedupe", "throttle", "patterns"];

/// The reduce settings of a rule: its own keys, and the team's defaults for the others.
fn merged<'a>(
    own: Option<&'a Node>,
    defaults: Option<&'a Node>,
    sink: &mut Sink,
) -> Vec<(&'a Node, &'a Node)> {
    let mut out: Vec<(&Node, &Node)> = Vec::new();
    if let Some(own) = own
        && let Some(mut m) = MapView::new(own, "`reduce`", sink)
    {
        out.extend(m.entries.iter().map(|(k, v)| (k, v)));
        m.accept_all();
        m.finish(&[], "`reduce`", sink);
    }
    if let Some(d) = defaults.and_then(|d| d.as_map()) {
        for (k, v) in d {
            if !out.iter().any(|(o, _)| o.as_scalar() == k.as_scalar()) {
                out.push((k, v));
            }
        }
    }
    out
}

fn section(b: &mut Builder, m: &mut MapView<'_>, cx: &mut RuleCx<'_>, sink: &mut Sink) {
    let own = m.get("reduce");
    let defaults = cx.defaults.reduce.clone();
    if own.is_none() && defaults.is_none() {
        return;
    }
    let entries = merged(own, defaults.as_ref(), sink);
    let mut r = bare(format!(
        "{}/{}",
        cx.team,
        cx.name.as_deref().unwrap_or_default()
    ));
    let text = cx.scope.format == Some(Format::Text);
    let mut message = None;
    let mut level = None;
    let mut keep_traces_at = None;
    for (k, v) in &entries {
        let Some(key) = k.as_scalar() else {
            continue;
        };
        match key {
            "message" => message = Some(b.fields(v, "`message`", cx, sink)),
            "level" => level = Some(b.fields(v, "`level`", cx, sink)),
            "time" => r.time = b.time(v, cx, sink),
            "always_keep" => {
                let mut parts = Vec::new();
                b.block(v, "`always_keep`", cx, &mut parts, sink);
                r.always_keep = Some(all_of(parts));
            }
            "sample" => r.sample = b.sample(v, cx, sink),
            "keep_traces" => keep_traces_at = Some((k.pos, keep_traces(v, sink))),
            "dedupe" => r.dedupe = b.dedupe(v, cx, sink),
            "throttle" => r.throttle = b.throttle(v, cx, sink),
            "patterns" => r.patterns = patterns(v, sink),
            "max_keys" => r.max_keys = limit(v, "`max_keys`", sink).unwrap_or(DEFAULT_MAX_KEYS),
            other => {
                sink.error(
                    k.pos,
                    Code::UnknownKey,
                    format!("unknown key `{other}` in `reduce`"),
                )
                .hint(did_you_mean(other, KEYS));
            }
        }
    }
    // Where a JSON or logfmt event says what happened, and how bad it was.
    r.message = message.unwrap_or_else(|| {
        if text {
            Vec::new()
        } else {
            b.default_fields(&["message", "msg"])
        }
    });
    r.level = level.unwrap_or_else(
        || match cx.scope.captures.iter().position(|c| c == "level") {
            Some(i) => vec![FieldRef::Capture(i as u32)],
            None if text => Vec::new(),
            None => b.default_fields(&["level", "severity", "lvl"]),
        },
    );
    if let Some((pos, k)) = keep_traces_at {
        match &r.sample {
            Some(s) if s.key.fields.is_empty() => r.keep_traces = k,
            Some(_) => {
                sink.error(
                    pos,
                    Code::WrongType,
                    "`keep_traces` needs `sample` by trace id, and this one has a `key`",
                )
                .hint("remove `key` from `sample`: a trace is sampled by its id");
            }
            None => {
                sink.error(pos, Code::MissingKey, "`keep_traces` needs `sample`")
                    .hint("e.g. `sample: 10`: one trace in ten, and every trace with an error");
            }
        }
    }
    let pos = own.map_or(Pos { line: 1, col: 1 }, |n| n.pos);
    // Actions with errors were reported: no knock-on warning for them. A team's kept-bytes
    // budget is an action of every rule of the team (declared above the rules).
    let named = entries
        .iter()
        .any(|(k, _)| k.as_scalar().is_some_and(|k| ACTIONS.contains(&k)));
    if !named && !b.kept_budgets.contains_key(cx.team) {
        sink.warning(
            pos,
            Code::MissingKey,
            "`reduce` has no action: it reduces nothing",
        )
        .hint(format!("add one of {}", ACTIONS.join(", ")));
    }
    if cx.then == Then::Drop {
        sink.warning(
            pos,
            Code::WrongType,
            "this rule drops the events it matches: `reduce` never applies",
        )
        .hint("reduce is for events that are kept; remove `then: drop` or `reduce`");
    }
    cx.has_effect = true;
    cx.reduce = Some(Box::new(r));
}

/// `keep_traces: {wait: 30s, slower_than: 2s}`, or `keep_traces: true` for the default wait.
fn keep_traces(node: &Node, sink: &mut Sink) -> Option<KeepTraces> {
    const DEFAULT_WAIT_MS: u64 = 30_000;
    if node.as_bool() == Some(true) {
        return Some(KeepTraces {
            wait_ms: DEFAULT_WAIT_MS,
            slower_ms: None,
        });
    }
    let mut m = MapView::new(node, "`keep_traces`", sink)?;
    let wait = match m.get("wait") {
        Some(n) => duration(n, "`wait`", sink).map(|d| (d.as_millis() as u64).max(1)),
        None => Some(DEFAULT_WAIT_MS),
    };
    let slower = m
        .get("slower_than")
        .map(|n| duration(n, "`slower_than`", sink).map(|d| d.as_millis() as u64));
    m.finish(&["wait", "slower_than"], "`keep_traces`", sink);
    let slower_ms = match slower {
        Some(None) => return None,
        Some(Some(ms)) => Some(ms),
        None => None,
    };
    Some(KeepTraces {
        wait_ms: wait?,
        slower_ms,
    })
}

fn patterns(node: &Node, sink: &mut Sink) -> Option<Patterns> {
    let mut m = MapView::new(node, "`patterns`", sink)?;
    let keep = match m.get("keep") {
        Some(n) => match n.as_u64() {
            Some(k) => Some(k.min(u32::MAX as u64) as u32),
            None => {
                sink.error(n.pos, Code::WrongType, "`keep` must be a number of events")
                    .hint("e.g. `keep: 5`: the first five of each template per interval");
                None
            }
        },
        None => Some(5),
    };
    let per = interval(&mut m, "per", "`patterns`", node.pos, sink);
    m.finish(&["keep", "per"], "`patterns`", sink);
    Some(Patterns {
        keep: keep?,
        per_ms: per?,
    })
}

/// A required duration key of an action, in milliseconds.
fn interval(m: &mut MapView<'_>, key: &str, what: &str, pos: Pos, sink: &mut Sink) -> Option<u64> {
    match m.get(key) {
        Some(n) => duration(n, &format!("`{key}`"), sink).map(|d| (d.as_millis() as u64).max(1)),
        None => {
            sink.error(pos, Code::MissingKey, format!("{what} needs `{key}`"))
                .hint(format!("e.g. `{key}: 1m`"));
            None
        }
    }
}

impl Builder {
    /// Field names (one, or a list) resolved in the rule's scope.
    fn fields(
        &mut self,
        node: &Node,
        what: &str,
        cx: &RuleCx<'_>,
        sink: &mut Sink,
    ) -> Vec<FieldRef> {
        strings(node, what, sink)
            .into_iter()
            .filter_map(|(name, pos)| self.field_ref(&name, pos, &cx.scope, sink))
            .collect()
    }

    fn key_fields(
        &mut self,
        node: &Node,
        what: &str,
        cx: &RuleCx<'_>,
        sink: &mut Sink,
    ) -> KeyFields {
        let mut k = KeyFields::default();
        for (name, pos) in strings(node, what, sink) {
            if let Some(f) = self.field_ref(&name, pos, &cx.scope, sink) {
                k.fields.push(f);
                k.names.push(name);
            }
        }
        k
    }

    /// Event fields read when present, without a diagnostic when absent.
    pub(super) fn default_fields(&mut self, names: &[&str]) -> Vec<FieldRef> {
        names
            .iter()
            .filter_map(|n| super::parse_path(n))
            .map(|p| FieldRef::Event(self.event_field(p)))
            .collect()
    }

    pub(super) fn time(
        &mut self,
        node: &Node,
        cx: &RuleCx<'_>,
        sink: &mut Sink,
    ) -> Option<TimeSource> {
        let (field_node, format) = if node.as_map().is_some() {
            let mut m = MapView::new(node, "`time`", sink)?;
            let field = m.get("field");
            let format = match m.get("format") {
                Some(n) => {
                    let f = scalar(n, "`format`", sink)?;
                    match TimeFormat::parse(&f) {
                        Some(f) => f,
                        None => {
                            sink.error(
                                n.pos,
                                Code::UnknownVariant,
                                format!("unknown time format `{f}`"),
                            )
                            .hint(did_you_mean(&f, TimeFormat::NAMES));
                            return None;
                        }
                    }
                }
                None => TimeFormat::Auto,
            };
            m.finish(&["field", "format"], "`time`", sink);
            match field {
                Some(f) => (f, format),
                None => {
                    sink.error(node.pos, Code::MissingKey, "`time` needs `field`")
                        .hint("name the field that holds the event's time");
                    return None;
                }
            }
        } else {
            (node, TimeFormat::Auto)
        };
        let name = scalar(field_node, "`time`", sink)?;
        let field = self.field_ref(&name, field_node.pos, &cx.scope, sink)?;
        Some(TimeSource { field, format })
    }

    fn sample(&mut self, node: &Node, cx: &RuleCx<'_>, sink: &mut Sink) -> Option<Sample> {
        let rate_of = |n: &Node, sink: &mut Sink| match n
            .as_u64()
            .filter(|r| (1..=u32::MAX as u64).contains(r))
        {
            Some(r) => Some(r as u32),
            None => {
                sink.error(
                    n.pos,
                    Code::WrongType,
                    "`rate` must be a whole number of at least 1",
                )
                .hint("`sample: 10` keeps one event in ten");
                None
            }
        };
        let (rate, key) = if node.as_map().is_some() {
            let mut m = MapView::new(node, "`sample`", sink)?;
            let rate = match m.get("rate") {
                Some(n) => rate_of(n, sink),
                None => {
                    sink.error(node.pos, Code::MissingKey, "`sample` needs `rate`")
                        .hint("e.g. `rate: 10`: one event in ten is kept");
                    None
                }
            };
            let key = m.get("key").map(|n| self.key_fields(n, "`key`", cx, sink));
            m.finish(&["rate", "key"], "`sample`", sink);
            (rate?, key.unwrap_or_default())
        } else {
            (rate_of(node, sink)?, KeyFields::default())
        };
        Some(Sample { rate, key })
    }

    fn dedupe(&mut self, node: &Node, cx: &RuleCx<'_>, sink: &mut Sink) -> Option<Dedupe> {
        let mut m = MapView::new(node, "`dedupe`", sink)?;
        let window = interval(&mut m, "window", "`dedupe`", node.pos, sink);
        let (key, whole) = match m.get("key") {
            Some(n) if n.as_scalar() == Some("event") => (KeyFields::default(), true),
            Some(n) => (self.key_fields(n, "`key`", cx, sink), false),
            None => (KeyFields::default(), false),
        };
        m.finish(&["window", "key"], "`dedupe`", sink);
        Some(Dedupe {
            window_ms: window?,
            key,
            whole,
        })
    }

    fn throttle(&mut self, node: &Node, cx: &RuleCx<'_>, sink: &mut Sink) -> Option<Throttle> {
        let mut m = MapView::new(node, "`throttle`", sink)?;
        let limit = match m.get("limit") {
            Some(n) => match n.as_u64().filter(|l| (1..=u32::MAX as u64).contains(l)) {
                Some(l) => Some(l as u32),
                None => {
                    sink.error(
                        n.pos,
                        Code::WrongType,
                        "`limit` must be a whole number of at least 1",
                    );
                    None
                }
            },
            None => {
                sink.error(node.pos, Code::MissingKey, "`throttle` needs `limit`")
                    .hint("e.g. `limit: 100, per: 1m`");
                None
            }
        };
        let per = interval(&mut m, "per", "`throttle`", node.pos, sink);
        let key = m
            .get("key")
            .map(|n| self.key_fields(n, "`key`", cx, sink))
            .unwrap_or_default();
        m.finish(&["limit", "per", "key"], "`throttle`", sink);
        Some(Throttle {
            limit: limit?,
            per_ms: per?,
            key,
        })
    }
}

/// A team's kept-bytes budget on each of its rules. A rule without `reduce` gets one that only
/// does that, with `reduce`'s default level fields, so its error events stay protected.
pub(super) fn kept_bytes_budgets(b: &mut Builder) {
    for i in 0..b.rules.len() {
        let Some(per_second) = b.kept_budgets.get(&b.rules[i].team).map(|(n, _)| *n) else {
            continue;
        };
        let team = b.rules[i].team.clone();
        let budget = KeptBytes {
            team_hash: crate::reduce::hash::hash_bytes(team.as_bytes()),
            team: team.into(),
            per_second,
        };
        if b.rules[i].reduce.is_none() {
            let rule = &b.rules[i];
            let name = format!("{}/{}", rule.team, rule.name);
            let level = match rule.capture_names.iter().position(|c| c == "level") {
                Some(c) => vec![FieldRef::Capture(c as u32)],
                None if rule.format == Some(Format::Text) => Vec::new(),
                None => b.default_fields(&["level", "severity", "lvl"]),
            };
            b.rules[i].reduce = Some(Box::new(Reduce {
                level,
                ..bare(name)
            }));
        }
        if let Some(r) = b.rules[i].reduce.as_mut() {
            r.kept_bytes = Some(budget);
        }
    }
}

/// A reduction of rule `rule` (`team/name`) that does nothing yet.
fn bare(rule: String) -> Reduce {
    Reduce {
        rule_hash: crate::reduce::hash::hash_bytes(rule.as_bytes()),
        rule: rule.into(),
        message: Vec::new(),
        level: Vec::new(),
        time: None,
        always_keep: None,
        sample: None,
        keep_traces: None,
        dedupe: None,
        throttle: None,
        patterns: None,
        max_keys: DEFAULT_MAX_KEYS,
        kept_bytes: None,
    }
}
