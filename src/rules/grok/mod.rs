//! Grok: named patterns (`%{IP:client} %{INT:status:int}`) expanded to one regex.
//!
//! The built-in library is Logstash's (`library`, data files under `patterns/`), translated for
//! the `regex` crate: look-around, atomic groups and possessive quantifiers are gone, and so are
//! word-boundary assertions. Grok fields are delimited by the literals around them, and patterns
//! without look-around let `extract::matcher` split a line on those literals instead of running
//! a capture engine (same result, several times faster). docs/grok.md lists every difference.
//!
//! As in Logstash, the named captures inside a pattern (`%{IPORHOST:clientip}` inside
//! `COMBINEDAPACHELOG`) are fields too; a field captured twice (`BIND9`'s `query`) is one field
//! whose last matching capture wins.

pub mod library;

use std::collections::HashMap;

/// The names of the built-in patterns, sorted, for documentation and suggestions.
pub fn builtin_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = library::builtin().keys().copied().collect();
    names.sort_unstable();
    names
}

/// One `%{PATTERN:field:type}` reference found in a grok expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrokField {
    pub name: String,
    /// The conversion written after the second colon, if any (`int`, `float`, ...).
    pub ty: Option<String>,
    /// Character offset of the reference in the grok text, for diagnostics.
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrokError {
    pub offset: usize,
    /// A cycle of patterns rather than an unknown or malformed reference.
    pub cycle: bool,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Expanded {
    pub regex: String,
    pub fields: Vec<GrokField>,
    /// Capture group names that are not the field's own name (the second `query` of `BIND9`
    /// is group `query__2`, since a regex cannot name two groups alike), to their field.
    pub renamed: HashMap<String, String>,
    used: HashMap<String, usize>,
}

impl Expanded {
    /// The field a capture group of the expanded regex fills.
    pub fn field_of<'a>(&'a self, group: &'a str) -> &'a str {
        self.renamed.get(group).map_or(group, String::as_str)
    }

    /// Opens a named group for `field`, renaming it if the name is taken.
    fn open_group(&mut self, field: &str) {
        let n = self.used.entry(field.to_string()).or_insert(0);
        *n += 1;
        self.regex.push_str("(?P<");
        if *n == 1 {
            self.regex.push_str(field);
        } else {
            let group = format!("{field}__{n}");
            self.regex.push_str(&group);
            self.renamed.insert(group, field.to_string());
        }
        self.regex.push('>');
    }
}

/// Where a pattern is defined: a team's own (`custom`) replaces a built-in one of that name.
fn lookup<'a>(custom: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    match custom.get(name) {
        Some(def) => Some(def.as_str()),
        None => library::builtin().get(name).copied(),
    }
}

const LIBRARY_LIST: &str = "the built-in patterns are listed in docs/grok.md";

/// Expands a grok expression with the built-in library plus a team's own patterns.
/// Collects every error rather than stopping at the first.
pub fn expand(text: &str, custom: &HashMap<String, String>) -> Result<Expanded, Vec<GrokError>> {
    let mut out = Expanded {
        regex: String::with_capacity(text.len() * 4),
        ..Expanded::default()
    };
    let mut errors = Vec::new();
    let mut stack = Vec::new();
    expand_into(text, custom, &mut out, &mut errors, &mut stack, None);
    // Where the library is listed, once per expression is enough.
    let suffix = format!(" ({LIBRARY_LIST})");
    let mut listed = false;
    for hint in errors.iter_mut().filter_map(|e| e.hint.as_mut()) {
        if hint.ends_with(&suffix) {
            if listed {
                hint.truncate(hint.len() - suffix.len());
            }
            listed = true;
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// An error in a team's own pattern definition, at a character offset in its regex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub name: String,
    pub offset: usize,
    pub cycle: bool,
    pub message: String,
    pub hint: Option<String>,
}

/// Checks a team's own patterns where they are defined: references to unknown patterns and
/// cycles (`A` uses `B` uses `A`), each cycle reported once, at its first name in `order`.
pub fn check_definitions(
    custom: &HashMap<String, String>,
    order: &[String],
) -> Vec<DefinitionError> {
    let mut errors = Vec::new();
    for name in order {
        let Some(def) = custom.get(name) else {
            continue;
        };
        for r in references(def) {
            if lookup(custom, r.name).is_none() {
                errors.push(DefinitionError {
                    name: name.clone(),
                    offset: r.offset,
                    cycle: false,
                    message: format!("unknown grok pattern `{}`", r.name),
                    hint: Some(unknown_hint(r.name, custom)),
                });
            }
        }
    }
    let mut reported: Vec<Vec<String>> = Vec::new();
    for name in order {
        if let Some((cycle, offset)) = find_cycle(name, custom) {
            let mut key = cycle[..cycle.len() - 1].to_vec();
            key.sort();
            if reported.contains(&key) {
                continue;
            }
            reported.push(key);
            errors.push(DefinitionError {
                name: name.clone(),
                offset,
                cycle: true,
                message: format!("grok patterns refer to each other: {}", cycle.join(" -> ")),
                hint: Some(
                    "a pattern cannot use itself, directly or through others: break the cycle"
                        .into(),
                ),
            });
        }
    }
    errors
}

struct Reference<'a> {
    name: &'a str,
    /// Character offset of the `%{`.
    offset: usize,
}

fn references(def: &str) -> Vec<Reference<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = def[at..].find("%{") {
        let start = at + start;
        let Some(len) = def[start + 2..].find('}') else {
            break;
        };
        let inner = &def[start + 2..start + 2 + len];
        out.push(Reference {
            name: inner.split(':').next().unwrap_or_default(),
            offset: def[..start].chars().count(),
        });
        at = start + 2 + len + 1;
    }
    out
}

/// A cycle through `start` (`[start, .., start]`) and the offset in `start`'s definition of
/// the reference that begins it. Built-in patterns use no cycles, but may use a team's
/// pattern that replaces one of theirs, so the walk goes through both.
fn find_cycle(start: &str, custom: &HashMap<String, String>) -> Option<(Vec<String>, usize)> {
    fn walk<'a>(
        name: &'a str,
        start: &str,
        custom: &'a HashMap<String, String>,
        path: &mut Vec<&'a str>,
        seen: &mut Vec<&'a str>,
    ) -> bool {
        let Some(def) = lookup(custom, name) else {
            return false;
        };
        for r in references(def) {
            if r.name == start {
                path.push(r.name);
                return true;
            }
            if seen.contains(&r.name) {
                continue;
            }
            seen.push(r.name);
            path.push(r.name);
            if walk(r.name, start, custom, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start];
    let mut seen = Vec::new();
    if !walk(start, start, custom, &mut path, &mut seen) {
        return None;
    }
    let first = path[1];
    let offset = references(lookup(custom, start)?)
        .iter()
        .find(|r| r.name == first)
        .map_or(0, |r| r.offset);
    Some((path.iter().map(|s| s.to_string()).collect(), offset))
}

fn unknown_hint(pattern: &str, custom: &HashMap<String, String>) -> String {
    let mut names = builtin_names();
    names.extend(custom.keys().map(String::as_str));
    names.sort_unstable();
    names.dedup();
    // Other dialects' names are prefixes or extensions of these (`TIMESTAMP`, `IPADDR`):
    // with a few hundred names, some unrelated name is as close by edit distance.
    let guess = closest_prefix(pattern, &names)
        .or_else(|| super::suggest::closest(pattern, names.iter().copied()));
    match guess {
        Some(c) => format!("did you mean `{c}`? ({LIBRARY_LIST})"),
        None => {
            format!("define it under `patterns:` or in a file of `patterns_dir:` ({LIBRARY_LIST})")
        }
    }
}

fn expand_into<'a>(
    text: &'a str,
    custom: &'a HashMap<String, String>,
    out: &mut Expanded,
    errors: &mut Vec<GrokError>,
    // The patterns being expanded, outermost first, to stop at a cycle.
    stack: &mut Vec<&'a str>,
    // Where the top-level reference being expanded starts; `None` at the top level.
    parent: Option<usize>,
) {
    let top = parent.is_none();
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(start) = rest.find("%{") {
        copy_regex(&rest[..start], out);
        let offset = parent.unwrap_or_else(|| text[..consumed + start].chars().count());
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            if top {
                errors.push(GrokError {
                    offset,
                    cycle: false,
                    message: "unterminated `%{`".into(),
                    hint: Some("a reference looks like `%{PATTERN}` or `%{PATTERN:field}`".into()),
                });
            }
            out.regex.push_str(&rest[start..]);
            return;
        };
        let inner = &after[..end];
        let mut parts = inner.splitn(3, ':');
        let pattern = parts.next().unwrap_or_default();
        let field = parts.next();
        let ty = parts.next();
        match lookup(custom, pattern) {
            None if top => errors.push(GrokError {
                offset,
                cycle: false,
                message: format!("unknown grok pattern `{pattern}`"),
                hint: Some(unknown_hint(pattern, custom)),
            }),
            None => errors.push(GrokError {
                offset,
                cycle: false,
                message: format!(
                    "grok pattern `{}` uses unknown pattern `{pattern}`",
                    stack[0]
                ),
                hint: Some(format!(
                    "see the definition of `{}`",
                    stack[stack.len() - 1]
                )),
            }),
            Some(_) if stack.contains(&pattern) => {
                let mut cycle: Vec<&str> = stack.clone();
                cycle.push(pattern);
                errors.push(GrokError {
                    offset,
                    cycle: true,
                    message: format!(
                        "grok pattern `{}` refers to itself: {}",
                        stack[0],
                        cycle.join(" -> ")
                    ),
                    hint: Some("a pattern cannot use itself, directly or through others".into()),
                });
            }
            Some(def) => {
                stack.push(pattern);
                // Named fields inside patterns are captured too, as in Logstash.
                match field.filter(|f| !f.is_empty()) {
                    Some(f) if !valid_field_name(f) => {
                        errors.push(GrokError {
                            offset,
                            cycle: false,
                            message: format!("invalid field name `{f}`"),
                            hint: Some("field names match [A-Za-z_][A-Za-z0-9_]*".into()),
                        });
                        out.regex.push_str("(?:");
                    }
                    Some(f) => {
                        out.fields.push(GrokField {
                            name: f.to_string(),
                            ty: ty.map(str::to_string),
                            offset,
                        });
                        out.open_group(f);
                    }
                    None => out.regex.push_str("(?:"),
                }
                expand_into(def, custom, out, errors, stack, Some(offset));
                out.regex.push(')');
                stack.pop();
            }
        }
        let skip = start + 2 + end + 1;
        consumed += skip;
        rest = &rest[skip..];
    }
    copy_regex(rest, out);
}

/// Copies regex text, giving its own named groups (`(?<controller>..)` in `RCONTROLLER`)
/// the same treatment as `%{PATTERN:field}`: a field, renamed when taken.
fn copy_regex(text: &str, out: &mut Expanded) {
    let mut rest = text;
    loop {
        let found = [rest.find("(?P<"), rest.find("(?<")]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = found.filter(|&at| !escaped(rest, at)) else {
            out.regex.push_str(rest);
            return;
        };
        let open = if rest[at..].starts_with("(?P<") { 4 } else { 3 };
        let name_end = rest[at + open..].find('>').map(|e| at + open + e);
        match name_end {
            Some(e) if valid_field_name(&rest[at + open..e]) => {
                out.regex.push_str(&rest[..at]);
                out.open_group(&rest[at + open..e]);
                rest = &rest[e + 1..];
            }
            _ => {
                // Look-behind (`(?<=`, `(?<!`) or not a name: left for the regex to judge.
                out.regex.push_str(&rest[..at + open]);
                rest = &rest[at + open..];
            }
        }
    }
}

/// Is the byte at `at` escaped by an odd number of backslashes?
fn escaped(text: &str, at: usize) -> bool {
    text[..at].bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// A pattern name that `word` is a prefix of (the shortest), or that is a prefix of `word`:
/// other grok dialects spell names longer or shorter (`IPADDR` for `IP`, `TIMESTAMP` for
/// `TIMESTAMP_ISO8601`).
fn closest_prefix<'a>(word: &str, names: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_uppercase();
    names
        .iter()
        .filter(|n| word.len() >= 3 && n.starts_with(&word))
        .min_by_key(|n| n.len())
        .or_else(|| {
            names
                .iter()
                .filter(|n| n.len() >= 2 && word.starts_with(*n))
                .max_by_key(|n| n.len())
        })
        .copied()
}

pub fn valid_field_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grok(text: &str) -> regex::Regex {
        regex::Regex::new(&format!(
            "^{}$",
            expand(text, &HashMap::new()).unwrap().regex
        ))
        .unwrap()
    }

    #[test]
    fn library_compiles_and_matches() {
        for name in builtin_names() {
            let e = expand(&format!("%{{{name}}}"), &HashMap::new())
                .unwrap_or_else(|err| panic!("{name}: {err:?}"));
            regex::Regex::new(&e.regex).unwrap_or_else(|err| panic!("{name}: {err}"));
        }
        assert!(grok("%{IP}").is_match("10.0.0.1"));
        assert!(grok("%{IP}").is_match("2001:db8::8a2e:370:7334"));
        assert!(grok("%{IP}").is_match("::1"));
        assert!(!grok("%{IPV4}").is_match("256.1.1.1"));
        assert!(grok("%{HTTPDATE}").is_match("10/Mar/2024:12:00:00 +0000"));
        assert!(grok("%{TIMESTAMP_ISO8601}").is_match("2024-03-10T12:00:00.123Z"));
        assert!(grok("%{UUID}").is_match("123e4567-e89b-12d3-a456-426614174000"));
        assert!(grok("%{LOGLEVEL}").is_match("WARN"));
        assert!(grok("%{NUMBER}").is_match("-1.5"));
        assert!(grok("%{QUOTEDSTRING}").is_match(r#""a \"b\" c""#));
        assert!(grok("%{SYSLOGTIMESTAMP}").is_match("Dec 10 06:55:46"));
    }

    /// Issue 12: every name of logmill's own library before it took Logstash's still resolves,
    /// so existing rule files keep working.
    #[test]
    fn issue12_names_of_the_former_library_remain() {
        let former = "USERNAME USER INT POSINT NONNEGINT NUMBER BASE10NUM BASE16NUM WORD NOTSPACE \
            NOTQUOTE SPACE DATA GREEDYDATA QUOTEDSTRING UUID IPV4 IPV6 IP HOSTNAME IPORHOST \
            HOSTPORT MONTH MONTHNUM MONTHDAY DAY YEAR HOUR MINUTE SECOND TIME ISO8601_TIMEZONE \
            TIMESTAMP_ISO8601 HTTPDATE SYSLOGTIMESTAMP LOGLEVEL URIPATH URIPARAM URIPATHPARAM \
            DURATION PROG SYSLOGPROG";
        for name in former.split_whitespace() {
            assert!(library::builtin().contains_key(name), "{name}");
        }
        assert!(grok("%{NOTQUOTE}").is_match("Mozilla/5.0 (X11)"));
        assert!(grok("%{DURATION}").is_match("1.5ms"));
    }

    #[test]
    fn fields_and_types_are_reported() {
        let e = expand("%{IP:client} %{INT:status:int}", &HashMap::new()).unwrap();
        assert_eq!(e.fields.len(), 2);
        assert_eq!(e.fields[1].name, "status");
        assert_eq!(e.fields[1].ty.as_deref(), Some("int"));
        assert_eq!(e.fields[1].offset, 13);
    }

    /// Issue 9: `IPADDR` suggested nothing; names of other dialects find theirs.
    #[test]
    fn issue9_unknown_patterns_suggest_the_closest_name() {
        for (written, want) in [
            ("IPADDR", "IP"),
            ("TIMESTAMP", "TIMESTAMP_ISO8601"),
            ("HOST", "HOSTNAME"),
            ("LOGLVL", "LOGLEVEL"),
        ] {
            let errs = expand(&format!("%{{{written}:x}}"), &HashMap::new()).unwrap_err();
            let hint = errs[0].hint.as_deref().unwrap();
            assert!(
                hint.starts_with(&format!("did you mean `{want}`?")),
                "{written}: {hint}"
            );
            assert!(hint.ends_with("(the built-in patterns are listed in docs/grok.md)"));
        }
    }

    #[test]
    fn every_unknown_pattern_is_reported() {
        let errs = expand("%{IPP:a} %{NUMBR:b} %{", &HashMap::new()).unwrap_err();
        assert_eq!(errs.len(), 3);
        assert!(
            errs[0]
                .hint
                .as_deref()
                .unwrap()
                .starts_with("did you mean `IP`? (the built-in patterns")
        );
        assert_eq!(errs[1].offset, 9);
    }

    /// Issue 12: the patterns' own captures are fields, a name captured twice is one field.
    #[test]
    fn issue12_nested_captures_are_fields_and_duplicates_are_renamed() {
        let e = expand(
            "%{SYSLOGPROG} %{GREEDYDATA:query} %{GREEDYDATA:query}",
            &HashMap::new(),
        )
        .unwrap();
        let re = regex::Regex::new(&e.regex).unwrap();
        let names: Vec<&str> = re.capture_names().flatten().collect();
        assert_eq!(names, ["program", "pid", "query", "query__2"]);
        assert_eq!(e.field_of("query__2"), "query");
        assert_eq!(e.field_of("pid"), "pid");
        let e = expand("%{RCONTROLLER} %{WORD:action}", &HashMap::new()).unwrap();
        assert!(e.regex.contains("(?P<controller>"), "{}", e.regex);
        assert_eq!(e.field_of("action__2"), "action");
    }

    #[test]
    fn issue12_definitions_are_checked_for_unknown_names_and_cycles() {
        let custom: HashMap<String, String> = [
            ("A", "x %{B} %{IPP}"),
            ("B", "%{C}"),
            ("C", "%{A}"),
            ("D", "%{D}"),
            ("E", "%{INT}"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let order: Vec<String> = ["A", "B", "C", "D", "E"].map(String::from).to_vec();
        let errs = check_definitions(&custom, &order);
        let messages: Vec<(&str, usize, &str)> = errs
            .iter()
            .map(|e| (e.name.as_str(), e.offset, e.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                ("A", 7, "unknown grok pattern `IPP`"),
                (
                    "A",
                    2,
                    "grok patterns refer to each other: A -> B -> C -> A"
                ),
                ("D", 0, "grok patterns refer to each other: D -> D"),
            ]
        );
        let errs = expand("%{D:d}", &custom).unwrap_err();
        assert_eq!(errs[0].message, "grok pattern `D` refers to itself: D -> D");
    }
}
