//! The `match` section: the topics, literals and field conditions an event must satisfy.

use super::{Builder, RuleCx, Section, compile_regex};
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::program::*;
use crate::rules::read::{MapView, scalar, strings};
use crate::rules::yaml::Node;

pub(super) const SECTION: Section = Section {
    keys: &["match"],
    compile: section,
};

const MATCH_KEYS: &[&str] = &["topic", "contains", "fields"];
const TEST_KEYS: &[&str] = &["equals", "in", "exists", "regex", "contains"];

fn section(b: &mut Builder, m: &mut MapView<'_>, cx: &mut RuleCx<'_>, sink: &mut Sink) {
    if let Some(mut mm) = m
        .get("match")
        .and_then(|n| MapView::new(n, "`match`", sink))
    {
        if let Some(n) = mm.get("topic") {
            cx.topics = strings(n, "`topic`", sink)
                .into_iter()
                .map(|(s, _)| s)
                .collect();
        }
        if let Some(n) = mm.get("contains") {
            for (lit, pos) in strings(n, "`contains`", sink) {
                if lit.is_empty() {
                    sink.warning(pos, Code::WrongType, "empty `contains` matches everything");
                    continue;
                }
                cx.literals.push(b.literal(lit.into_bytes()));
            }
        }
        if let Some(mut f) = mm
            .get("fields")
            .and_then(|n| MapView::new(n, "`match.fields`", sink))
        {
            for (k, v) in f.entries {
                let Some(field_name) = scalar(k, "a field name", sink) else {
                    continue;
                };
                let Some(field) = b.field_ref(&field_name, k.pos, &cx.scope, sink) else {
                    continue;
                };
                let Some(test) = b.test(v, sink) else {
                    continue;
                };
                let cond = Condition { field, test };
                if matches!(field, FieldRef::Capture(_)) {
                    cx.post.push(cond)
                } else {
                    cx.pre.push(cond)
                }
            }
            f.accept_all();
            f.finish(&[], "`match.fields`", sink);
        }
        mm.finish(MATCH_KEYS, "`match`", sink);
    }
    if cx.literals.is_empty() {
        if let Some(lit) = cx.line_literal.take() {
            cx.literals.push(b.literal(lit));
        }
    }
}

impl Builder {
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
                out = compile_regex(&p, n, sink).map(|r| Test::Regex(Box::new(r)));
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
