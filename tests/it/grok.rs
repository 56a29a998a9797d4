//! Issue 12: the built-in grok library against logstash-patterns-core's own spec examples
//! (`tests/data/grok-conformance/`), with the deliberate differences listed in docs/grok.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use logmill::extract::matcher::{Matcher, Span};
use logmill::rules::grok;
use serde_json::Value;

use crate::support::repo;

/// What one example gives here, in the spec's terms; empty when it agrees with the spec.
fn differences(ex: &Value) -> Vec<String> {
    let pattern = ex["pattern"].as_str().expect("pattern");
    let message = ex["message"].as_str().expect("message");
    let mut text = if pattern
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        format!("%{{{pattern}}}")
    } else {
        pattern.to_string()
    };
    if ex["exact"].as_bool() == Some(true) {
        text = format!("^{text}$");
    }
    let expanded = match grok::expand(&text, &HashMap::new()) {
        Ok(e) => e,
        Err(errors) => return vec![format!("does not expand: {errors:?}")],
    };
    let matcher = match Matcher::new(&expanded.regex) {
        Ok(m) => m,
        Err(e) => return vec![format!("does not compile: {e}")],
    };
    // The split path and the regex crate must agree, whatever the spec says.
    let mut slots: Vec<Span> = vec![None; matcher.group_count()];
    let matched = matcher.captures(message, &mut slots, &mut None);
    let reference: Vec<Span> = match matcher.regex().captures(message) {
        Some(c) => (0..matcher.group_count())
            .map(|g| c.get(g).map(|m| (m.start(), m.end())))
            .collect(),
        None => vec![None; matcher.group_count()],
    };
    assert_eq!(
        slots, reference,
        "split path differs on {pattern}: {message:?}"
    );
    // As Logstash's legacy mode: every named capture is a field, empty captures are dropped,
    // a field captured twice is a list.
    let mut fields: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (g, name) in matcher.regex().capture_names().enumerate() {
        if let (Some(name), Some((a, b))) = (name, slots[g])
            && a < b
        {
            fields
                .entry(expanded.field_of(name))
                .or_default()
                .push(&message[a..b]);
        }
    }
    let mut out = Vec::new();
    if let Some(want) = ex["matches"].as_bool()
        && want != matched
    {
        out.push(format!(
            "{} where the spec expects {}",
            if matched { "matches" } else { "does not match" },
            if want { "a match" } else { "none" }
        ));
    }
    if let Some(captures) = ex["captures"].as_object() {
        for (field, want) in captures {
            let want: Vec<&str> = match want {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                other => panic!("unexpected value {other}"),
            };
            let got = fields.get(field.as_str()).cloned().unwrap_or_default();
            if got != want {
                out.push(format!("`{field}` is {got:?}, the spec expects {want:?}"));
            }
        }
    }
    for field in ex["absent"].as_array().into_iter().flatten() {
        let field = field.as_str().expect("a field name");
        if let Some(got) = fields.get(field) {
            out.push(format!("`{field}` is {got:?}, the spec expects none"));
        }
    }
    out
}

/// The ids in docs/grok.md's table of deliberate differences (rows starting with `` | `id` ``).
fn listed_differences() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/grok.md")).expect("docs/grok.md");
    let table = doc
        .split("<!-- conformance-differences -->")
        .nth(1)
        .expect("docs/grok.md has the conformance table between its markers");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn issue12_grok_conformance_against_logstash_spec_examples() {
    let dir = repo().join("tests/data/grok-conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let listed = listed_differences();
    let (mut total, mut identical, mut differing) = (0, 0, 0);
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for file in &files {
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let id = format!("{stem}:{}", n + 1);
            let ex: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{id}: {e}"));
            total += 1;
            seen.insert(id.clone());
            let diffs = differences(&ex);
            match (diffs.is_empty(), listed.contains(&id)) {
                (true, false) => identical += 1,
                (false, true) => differing += 1,
                (false, false) => failures.push(format!(
                    "{id} ({}) differs and is not in docs/grok.md's table: {}",
                    ex["pattern"],
                    diffs.join("; ")
                )),
                (true, true) => failures.push(format!(
                    "{id} is in docs/grok.md's table but no longer differs: take it out"
                )),
            }
        }
    }
    for id in listed.difference(&seen) {
        failures.push(format!("docs/grok.md lists {id}, which is not an example"));
    }
    eprintln!(
        "grok conformance: {total} examples, {identical} identical, {differing} listed differences"
    );
    assert!(total > 100, "the examples are there ({total})");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
