//! Grok: named patterns (`%{IP:client} %{INT:status:int}`) expanded to one regex.
//!
//! The built-in library follows the names users know from Logstash, written for the `regex`
//! crate. Word-boundary assertions are left out on purpose: grok fields are delimited by the
//! literals around them, and patterns without look-around let `extract::matcher` split a line on
//! those literals instead of running a capture engine (same result, several times faster).

use std::collections::HashMap;

/// `(name, regex)`; a regex may itself use `%{OTHER}`.
const LIBRARY: &[(&str, &str)] = &[
    ("USERNAME", r"[a-zA-Z0-9._-]+"),
    ("USER", r"%{USERNAME}"),
    ("INT", r"[+-]?[0-9]+"),
    ("POSINT", r"[1-9][0-9]*"),
    ("NONNEGINT", r"[0-9]+"),
    ("NUMBER", r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"),
    ("BASE10NUM", r"%{NUMBER}"),
    ("BASE16NUM", r"[+-]?(?:0x)?[0-9A-Fa-f]+"),
    ("WORD", r"\w+"),
    ("NOTSPACE", r"\S+"),
    ("NOTQUOTE", r#"[^"]*"#),
    ("SPACE", r"\s*"),
    ("DATA", r".*?"),
    ("GREEDYDATA", r".*"),
    ("QUOTEDSTRING", r#""(?:[^"\\]|\\.)*""#),
    (
        "UUID",
        r"[A-Fa-f0-9]{8}-(?:[A-Fa-f0-9]{4}-){3}[A-Fa-f0-9]{12}",
    ),
    (
        "IPV4",
        r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
    ),
    (
        "IPV6",
        r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:%{IPV4}|[0-9A-Fa-f]{1,4})?(?:%[0-9A-Za-z]+)?",
    ),
    ("IP", r"(?:%{IPV6}|%{IPV4})"),
    (
        "HOSTNAME",
        r"[0-9A-Za-z][0-9A-Za-z-]{0,62}(?:\.[0-9A-Za-z][0-9A-Za-z-]{0,62})*\.?",
    ),
    ("IPORHOST", r"(?:%{IP}|%{HOSTNAME})"),
    ("HOSTPORT", r"%{IPORHOST}:%{POSINT}"),
    (
        "MONTH",
        r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|Sep(?:tember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)",
    ),
    ("MONTHNUM", r"(?:0?[1-9]|1[0-2])"),
    ("MONTHDAY", r"(?:0[1-9]|[12][0-9]|3[01]|[1-9])"),
    (
        "DAY",
        r"(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?)",
    ),
    ("YEAR", r"[0-9]{4}"),
    ("HOUR", r"(?:2[0-3]|[01]?[0-9])"),
    ("MINUTE", r"[0-5][0-9]"),
    ("SECOND", r"(?:[0-5]?[0-9]|60)(?:[.,][0-9]+)?"),
    ("TIME", r"%{HOUR}:%{MINUTE}:%{SECOND}"),
    ("ISO8601_TIMEZONE", r"(?:Z|[+-]%{HOUR}(?::?%{MINUTE}))"),
    (
        "TIMESTAMP_ISO8601",
        r"%{YEAR}-%{MONTHNUM}-%{MONTHDAY}[T ]%{HOUR}:?%{MINUTE}(?::?%{SECOND})?%{ISO8601_TIMEZONE}?",
    ),
    (
        "HTTPDATE",
        r"%{MONTHDAY}/%{MONTH}/%{YEAR}:%{TIME} [+-][0-9]{4}",
    ),
    ("SYSLOGTIMESTAMP", r"%{MONTH} +%{MONTHDAY} %{TIME}"),
    (
        "LOGLEVEL",
        r"(?i:trace|debug|info|notice|warn(?:ing)?|err(?:or)?|crit(?:ical)?|fatal|severe|emerg(?:ency)?|alert)",
    ),
    ("URIPATH", r"(?:/[A-Za-z0-9$.+!*'(){},~:;=@#%&_\-]*)+"),
    ("URIPARAM", r"\?[A-Za-z0-9$.+!*'|(){},~@#%&/=:;_?\-\[\]<>]*"),
    ("URIPATHPARAM", r"%{URIPATH}(?:%{URIPARAM})?"),
    ("DURATION", r"[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h)"),
    ("PROG", r"[\w._/%-]+"),
    ("SYSLOGPROG", r"%{PROG}(?:\[%{POSINT}\])?"),
];

const LIBRARY_LIST: &str = " (the patterns are: ";

/// The names of the built-in patterns, for documentation and suggestions.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    LIBRARY.iter().map(|(n, _)| *n)
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
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Expanded {
    pub regex: String,
    pub fields: Vec<GrokField>,
}

/// Expands a grok expression with the built-in library plus a file's own `patterns:`.
/// Collects every error rather than stopping at the first.
pub fn expand(text: &str, custom: &HashMap<String, String>) -> Result<Expanded, Vec<GrokError>> {
    let lib: HashMap<&str, &str> = LIBRARY
        .iter()
        .copied()
        .chain(custom.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    let mut out = Expanded {
        regex: String::with_capacity(text.len() * 4),
        fields: Vec::new(),
    };
    let mut errors = Vec::new();
    expand_into(text, &lib, &mut out, &mut errors, 0, None);
    // The list of patterns once per expression is enough.
    let mut listed = false;
    for hint in errors.iter_mut().filter_map(|e| e.hint.as_mut()) {
        if let Some(at) = hint.find(LIBRARY_LIST) {
            if listed {
                hint.truncate(at);
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

fn expand_into(
    text: &str,
    lib: &HashMap<&str, &str>,
    out: &mut Expanded,
    errors: &mut Vec<GrokError>,
    depth: usize,
    // Where the top-level reference being expanded starts; `None` at the top level.
    parent: Option<usize>,
) {
    let top = parent.is_none();
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(start) = rest.find("%{") {
        out.regex.push_str(&rest[..start]);
        let offset = parent.unwrap_or_else(|| text[..consumed + start].chars().count());
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            if top {
                errors.push(GrokError {
                    offset,
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
        match lib.get(pattern) {
            None => {
                let mut names: Vec<&str> = lib.keys().copied().collect();
                names.sort_unstable();
                let guess = super::suggest::closest(pattern, names.iter().copied())
                    .or_else(|| closest_prefix(pattern, &names));
                errors.push(GrokError {
                    offset,
                    message: format!("unknown grok pattern `{pattern}`"),
                    hint: Some(match guess {
                        Some(c) => {
                            format!("did you mean `{c}`?{LIBRARY_LIST}{})", names.join(", "))
                        }
                        None => format!(
                            "define it under `patterns:` at the top of the file{LIBRARY_LIST}{})",
                            names.join(", ")
                        ),
                    }),
                });
            }
            Some(_) if depth > 16 => {
                errors.push(GrokError {
                    offset,
                    message: format!("grok pattern `{pattern}` refers to itself"),
                    hint: None,
                });
            }
            Some(def) => {
                let def = *def;
                // Named fields inside a file's own patterns are captured too, as in Logstash.
                match field.filter(|f| !f.is_empty()) {
                    Some(f) if !valid_field_name(f) => {
                        errors.push(GrokError {
                            offset,
                            message: format!("invalid field name `{f}`"),
                            hint: Some("field names match [A-Za-z_][A-Za-z0-9_]*".into()),
                        });
                        out.regex.push_str("(?:");
                        expand_into(def, lib, out, errors, depth + 1, Some(offset));
                        out.regex.push(')');
                    }
                    Some(f) => {
                        out.fields.push(GrokField {
                            name: f.to_string(),
                            ty: ty.map(str::to_string),
                            offset,
                        });
                        out.regex.push_str("(?P<");
                        out.regex.push_str(f);
                        out.regex.push('>');
                        expand_into(def, lib, out, errors, depth + 1, Some(offset));
                        out.regex.push(')');
                    }
                    None => {
                        out.regex.push_str("(?:");
                        expand_into(def, lib, out, errors, depth + 1, Some(offset));
                        out.regex.push(')');
                    }
                }
            }
        }
        let skip = start + 2 + end + 1;
        consumed += skip;
        rest = &rest[skip..];
    }
    out.regex.push_str(rest);
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
        for (name, _) in LIBRARY {
            let e = expand(&format!("%{{{name}}}"), &HashMap::new()).unwrap();
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
            assert!(
                hint.contains("IPV6, ISO8601_TIMEZONE, LOGLEVEL, MINUTE"),
                "{hint}"
            );
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
                .starts_with("did you mean `IP`? (the patterns are: BASE10NUM, BASE16NUM, DATA,")
        );
        assert_eq!(errs[1].offset, 9);
    }
}
