//! The `extract` section (with `types`): pattern steps (`grok`, `regex`) and field aliases
//! (`json`, `logfmt`) that define a rule's captures, and the value types of those captures.

use std::collections::HashMap;

use super::{Builder, RuleCx, RuleScope, Section, compile_regex, parse_path};
use crate::decode::Format;
use crate::extract::matcher::Matcher;
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::grok;
use crate::rules::program::*;
use crate::rules::read::{MapView, scalar};
use crate::rules::suggest::did_you_mean;
use crate::rules::yaml::{Node, Pos};

pub(super) const SECTION: Section = Section {
    keys: &["types", "extract"],
    compile: section,
};

const STEP_KEYS: &[&str] = &["grok", "regex", "json", "logfmt", "from"];
const TYPES: &[&str] = &["int", "float", "duration", "bool"];

/// Extraction comes first: it defines the captures every other section may refer to.
fn section(b: &mut Builder, m: &mut MapView<'_>, cx: &mut RuleCx<'_>, sink: &mut Sink) {
    if let Some(mut t) = m
        .get("types")
        .and_then(|n| MapView::new(n, "`types`", sink))
    {
        for (k, v) in t.entries {
            let (Some(k), Some(ty)) = (k.as_scalar(), scalar(v, "a type", sink)) else {
                continue;
            };
            if let Some(ty) = value_type(&ty, v.pos, sink) {
                cx.scope.types.insert(k.to_string(), ty);
            }
        }
        t.accept_all();
        t.finish(&[], "`types`", sink);
    }
    if let Some(ex) = m.get("extract") {
        let items: Vec<&Node> = match ex.as_seq() {
            Some(items) => items.iter().collect(),
            None => vec![ex],
        };
        for step in items {
            let errors = sink.diags.iter().filter(|d| d.is_error()).count();
            if let Some((new, lit)) = b.step(step, &mut cx.scope, cx.patterns, sink) {
                if cx.line_literal.is_none() && cx.steps.is_empty() {
                    cx.line_literal = lit;
                }
                cx.steps.extend(new);
            }
            if sink.diags.iter().filter(|d| d.is_error()).count() > errors {
                cx.scope.incomplete = true;
            }
        }
    }
}

impl Builder {
    fn step(
        &mut self,
        node: &Node,
        scope: &mut RuleScope,
        patterns: &HashMap<String, String>,
        sink: &mut Sink,
    ) -> Option<(Vec<Step>, Option<Vec<u8>>)> {
        let mut s = MapView::new(node, "an extract step", sink)?;
        let from_node = s.get("from");
        let from = match from_node {
            Some(n) => {
                let name = scalar(n, "`from`", sink)?;
                self.field_ref(&name, n.pos, scope, sink)?
            }
            None => FieldRef::Line,
        };
        let grok_node = s.get("grok");
        let regex_node = s.get("regex");
        let json_node = s.get("json");
        let logfmt_node = s.get("logfmt");
        s.finish(STEP_KEYS, "an extract step", sink);
        let kinds = [grok_node, regex_node, json_node, logfmt_node]
            .iter()
            .filter(|n| n.is_some())
            .count();
        if kinds != 1 {
            sink.error(
                node.pos,
                Code::WrongType,
                "an extract step needs exactly one of `grok`, `regex`, `json`, `logfmt`",
            );
            return None;
        }
        if let Some(n) = json_node.or(logfmt_node) {
            let format = if json_node.is_some() {
                Format::Json
            } else {
                Format::Logfmt
            };
            let mut a = MapView::new(n, "a field list", sink)?;
            let mut aliases = Vec::new();
            for (k, v) in a.entries {
                let (Some(alias), Some(path)) = (k.as_scalar(), scalar(v, "a field path", sink))
                else {
                    continue;
                };
                if !grok::valid_field_name(alias) {
                    sink.error(
                        k.pos,
                        Code::InvalidName,
                        format!("invalid field name `{alias}`"),
                    )
                    .hint("field names match [A-Za-z_][A-Za-z0-9_]*");
                    continue;
                }
                let field = if format == Format::Logfmt {
                    FieldPath {
                        name: path.clone(),
                        segments: vec![PathSegment::Key(path.clone())],
                    }
                } else {
                    match parse_path(&path) {
                        Some(p) => p,
                        None => {
                            sink.error(
                                v.text_pos,
                                Code::BadJsonPath,
                                format!("invalid field path `{path}`"),
                            )
                            .hint("paths look like `level`, `http.status` or `tags[0]`");
                            continue;
                        }
                    }
                };
                let from = self.event_field(field);
                aliases.push(Step::Alias {
                    format,
                    from,
                    to: scope.capture_slot(alias),
                });
            }
            a.accept_all();
            return Some((aliases, None));
        }
        let (pattern, node, expanded) = if let Some(n) = grok_node {
            let text = scalar(n, "`grok`", sink)?;
            match grok::expand(&text, patterns) {
                Ok(e) => (e.regex.clone(), n, e),
                Err(errors) => {
                    for e in errors {
                        let code = if e.cycle {
                            Code::PatternCycle
                        } else {
                            Code::UnknownPattern
                        };
                        sink.error(n.text_pos.shifted(e.offset), code, e.message)
                            .maybe_hint(e.hint);
                    }
                    return None;
                }
            }
        } else {
            let n = regex_node.expect("one kind is present");
            (scalar(n, "`regex`", sink)?, n, grok::Expanded::default())
        };
        for f in &expanded.fields {
            if let Some(ty) = &f.ty
                && let Some(ty) = value_type(ty, node.text_pos.shifted(f.offset), sink)
            {
                scope.types.insert(f.name.clone(), ty);
            }
        }
        compile_regex(&pattern, node, self.regex_size_limit, sink)?;
        let matcher = match Matcher::new(&pattern) {
            Ok(m) => m,
            Err(e) => {
                sink.error(node.pos, Code::BadRegex, format!("invalid regex: {e}"));
                return None;
            }
        };
        if matcher.anchoring_helps() {
            sink.warning(
                node.pos,
                Code::SlowPattern,
                "the pattern starts with a field and is not anchored, so it runs on the general regex engine",
            )
            .hint("if events start with it, begin the pattern with `^`: it is then split at its literals, 2-3 times faster");
        }
        let groups = matcher
            .regex()
            .capture_names()
            .skip(1)
            .map(|name| name.map(|n| scope.capture_slot(expanded.field_of(n))))
            .collect();
        let lit = (from == FieldRef::Line)
            .then(|| matcher.required_literal().map(<[u8]>::to_vec))
            .flatten();
        Some((
            vec![Step::Pattern {
                from,
                matcher: Box::new(matcher),
                groups,
            }],
            lit,
        ))
    }
}

fn value_type(ty: &str, pos: Pos, sink: &mut Sink) -> Option<ValueType> {
    match ty {
        "int" => Some(ValueType::Int),
        "float" => Some(ValueType::Float),
        "duration" => Some(ValueType::Duration),
        "bool" => Some(ValueType::Bool),
        other => {
            sink.error(pos, Code::UnknownVariant, format!("unknown type `{other}`"))
                .hint(did_you_mean(other, TYPES));
            None
        }
    }
}
