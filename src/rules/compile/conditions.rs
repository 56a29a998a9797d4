//! The `match` section: the topics, literals and field conditions an event must satisfy,
//! combined with `any`, `all` and `not`.

use super::{Builder, RuleCx, Section, compile_regex};
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::program::*;
use crate::rules::read::{MapView, scalar, strings};
use crate::rules::yaml::Node;

pub(super) const SECTION: Section = Section {
    keys: &["match"],
    compile: section,
};

/// Keys of a condition block: `match:` itself, and every block under `any`, `all` and `not`.
const BLOCK_KEYS: &[&str] = &["topic", "contains", "fields", "any", "all", "not"];
const TEST_KEYS: &[&str] = &["equals", "in", "exists", "regex", "contains"];

/// `match:` is a block whose parts must all hold. Top-level literals become prefilter clauses
/// (the prefilter alone decides them), a top-level `topic` is checked before anything else, and
/// the other parts are conditions checked before extraction, or after it when they read a
/// capture.
fn section(b: &mut Builder, m: &mut MapView<'_>, cx: &mut RuleCx<'_>, sink: &mut Sink) {
    if let Some(n) = m.get("match") {
        let mut parts = Vec::new();
        b.block(n, "`match`", cx, &mut parts, sink);
        let mut flat = Vec::new();
        flatten(parts, &mut flat);
        for c in flat {
            match c {
                Cond::Literal(l) => cx.clauses.push(vec![l]),
                Cond::Topic(t) if cx.topics.is_empty() => cx.topics = t,
                c => {
                    cx.clauses.extend(clause(&c));
                    if c.reads_captures() {
                        cx.post.push(c);
                    } else {
                        cx.pre.push(c);
                    }
                }
            }
        }
    }
    if cx.clauses.is_empty()
        && let Some(lit) = cx.line_literal.take()
    {
        cx.clauses.push(vec![b.literal(lit)]);
    }
    for c in &mut cx.clauses {
        c.sort_unstable();
        c.dedup();
    }
    cx.clauses.sort();
    cx.clauses.dedup();
}

/// Top-level `all`s add nothing but grouping: their parts are the rule's own.
fn flatten(parts: Vec<Cond>, out: &mut Vec<Cond>) {
    for c in parts {
        match c {
            Cond::All(cs) => flatten(cs, out),
            c => out.push(c),
        }
    }
}

/// Literals one of which occurs whenever `c` holds, if there is such a set: what the
/// prefilter may require of a rule with this condition.
fn clause(c: &Cond) -> Option<Vec<u32>> {
    match c {
        Cond::Literal(l) => Some(vec![*l]),
        // Any part's clause will do: the shortest is the most selective guess.
        Cond::All(cs) => cs.iter().filter_map(clause).min_by_key(Vec::len),
        // Whichever branch holds, its clause is met: the union of one clause per branch.
        Cond::Any(cs) if !cs.is_empty() => {
            let mut union = Vec::new();
            for c in cs {
                union.extend(clause(c)?);
            }
            Some(union)
        }
        Cond::Any(_) | Cond::Not(_) | Cond::Field(_) | Cond::Topic(_) => None,
    }
}

/// The parts a block's conditions are the conjunction of.
pub(super) fn all_of(mut parts: Vec<Cond>) -> Cond {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Cond::All(parts)
    }
}

impl Builder {
    /// Reads a condition block into `out`, one `Cond` per part.
    pub(super) fn block(
        &mut self,
        node: &Node,
        what: &str,
        cx: &RuleCx<'_>,
        out: &mut Vec<Cond>,
        sink: &mut Sink,
    ) {
        let Some(mut mm) = MapView::new(node, what, sink) else {
            return;
        };
        if let Some(n) = mm.get("topic") {
            let topics: Vec<TopicPattern> = strings(n, "`topic`", sink)
                .into_iter()
                .map(|(s, _)| TopicPattern::new(&s))
                .collect();
            out.push(Cond::Topic(topics));
        }
        if let Some(n) = mm.get("contains") {
            self.contains(n, out, sink);
        }
        if let Some(mut f) = mm
            .get("fields")
            .and_then(|n| MapView::new(n, "`fields`", sink))
        {
            for (k, v) in f.entries {
                let Some(field_name) = scalar(k, "a field name", sink) else {
                    continue;
                };
                let Some(field) = self.field_ref(&field_name, k.pos, &cx.scope, sink) else {
                    continue;
                };
                let Some(test) = self.test(v, sink) else {
                    continue;
                };
                out.push(Cond::Field(Condition { field, test }));
            }
            f.accept_all();
            f.finish(&[], "`fields`", sink);
        }
        if let Some(n) = mm.get("any") {
            let branches = self.blocks(n, "`any`", cx, sink);
            out.push(Cond::Any(branches));
        }
        if let Some(n) = mm.get("all") {
            out.extend(self.blocks(n, "`all`", cx, sink));
        }
        if let Some(n) = mm.get("not") {
            let parts = match n.as_seq() {
                Some(_) => self.blocks(n, "`not`", cx, sink),
                None => {
                    let mut parts = Vec::new();
                    self.block(n, "`not`", cx, &mut parts, sink);
                    parts
                }
            };
            out.push(Cond::Not(Box::new(all_of(parts))));
        }
        mm.finish(BLOCK_KEYS, what, sink);
    }

    /// A list of blocks (`any:`, `all:`), each one condition.
    fn blocks(&mut self, node: &Node, what: &str, cx: &RuleCx<'_>, sink: &mut Sink) -> Vec<Cond> {
        let Some(items) = node.as_seq() else {
            sink.error(
                node.pos,
                Code::WrongType,
                format!(
                    "{what} must be a list of conditions, found {}",
                    node.describe()
                ),
            )
            .hint(format!(
                "e.g. `{}: [{{contains: timeout}}, {{fields: {{level: error}}}}]`",
                what.trim_matches('`')
            ));
            return Vec::new();
        };
        if items.is_empty() {
            sink.error(node.pos, Code::WrongType, format!("{what} is empty"))
                .hint("list at least one condition");
        }
        items
            .iter()
            .map(|item| {
                let mut parts = Vec::new();
                self.block(item, "a condition", cx, &mut parts, sink);
                all_of(parts)
            })
            .collect()
    }

    /// `contains:` a literal, a list of literals (all of them), or `{any: [...]}` /
    /// `{all: [...]}`.
    fn contains(&mut self, node: &Node, out: &mut Vec<Cond>, sink: &mut Sink) {
        let literals = |b: &mut Builder, n: &Node, sink: &mut Sink| -> Vec<Cond> {
            strings(n, "`contains`", sink)
                .into_iter()
                .map(|(lit, pos)| {
                    if lit.is_empty() {
                        sink.warning(pos, Code::WrongType, "empty `contains` matches everything");
                        // Always true, and requires nothing of the prefilter.
                        Cond::All(Vec::new())
                    } else {
                        Cond::Literal(b.literal(lit.into_bytes()))
                    }
                })
                .collect()
        };
        if node.as_map().is_none() {
            out.extend(literals(self, node, sink));
            return;
        }
        let Some(mut c) = MapView::new(node, "`contains`", sink) else {
            return;
        };
        let any = c.get("any");
        let all = c.get("all");
        c.finish(&["any", "all"], "`contains`", sink);
        if let Some(n) = all {
            out.extend(literals(self, n, sink));
        }
        if let Some(n) = any {
            let branches = literals(self, n, sink);
            if branches.is_empty() {
                sink.error(n.pos, Code::WrongType, "`any` is empty")
                    .hint("list at least one literal");
            }
            out.push(Cond::Any(branches));
        }
        if any.is_none() && all.is_none() {
            sink.error(
                node.pos,
                Code::WrongType,
                "`contains` as a mapping takes `any` or `all`",
            )
            .hint("e.g. `contains: {any: [timeout, refused]}`");
        }
    }

    fn test(&mut self, node: &Node, sink: &mut Sink) -> Option<Test> {
        if node.as_map().is_none() {
            return scalar(node, "a field condition", sink).map(Test::Equals);
        }
        let mut t = MapView::new(node, "a field condition", sink)?;
        let mut out = None;
        let mut count = 0;
        if let Some(n) = t.get("equals") {
            count += 1;
            out = scalar(n, "`equals`", sink).map(Test::Equals);
        }
        if let Some(n) = t.get("in") {
            count += 1;
            out = Some(Test::In(
                strings(n, "`in`", sink)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            ));
        }
        if let Some(n) = t.get("exists") {
            count += 1;
            match n.as_bool() {
                Some(b) => out = Some(Test::Exists(b)),
                None => {
                    sink.error(n.pos, Code::WrongType, "`exists` must be true or false");
                }
            }
        }
        if let Some(n) = t.get("regex") {
            count += 1;
            if let Some(p) = scalar(n, "`regex`", sink) {
                out = compile_regex(&p, n, self.regex_size_limit, sink)
                    .map(|r| Test::Regex(Box::new(FieldRegex::new(r))));
            }
        }
        if let Some(n) = t.get("contains") {
            count += 1;
            out = scalar(n, "`contains`", sink).map(|s| {
                Test::Contains(Box::new(
                    memchr::memmem::Finder::new(s.as_bytes()).into_owned(),
                ))
            });
        }
        if count != 1 {
            sink.error(
                node.pos,
                Code::WrongType,
                "a field condition needs exactly one test",
            )
            .hint(format!("use one of: {}", TEST_KEYS.join(", ")));
        }
        t.finish(TEST_KEYS, "a field condition", sink);
        out
    }
}
