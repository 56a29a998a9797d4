//! The built-in grok library (Logstash's legacy pattern files, translated for the `regex` crate
//! and embedded as data) and the reader of pattern files in Logstash's `NAME regex` format,
//! used for the library and for teams' own pattern files alike.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The library's files in load order; a later definition of a name replaces an earlier one.
pub const FILES: &[(&str, &str)] = &[
    ("grok-patterns", include_str!("patterns/grok-patterns")),
    ("httpd", include_str!("patterns/httpd")),
    ("linux-syslog", include_str!("patterns/linux-syslog")),
    ("java", include_str!("patterns/java")),
    ("haproxy", include_str!("patterns/haproxy")),
    ("redis", include_str!("patterns/redis")),
    ("mongodb", include_str!("patterns/mongodb")),
    ("postgresql", include_str!("patterns/postgresql")),
    ("rails", include_str!("patterns/rails")),
    ("squid", include_str!("patterns/squid")),
    ("bind", include_str!("patterns/bind")),
    ("aws", include_str!("patterns/aws")),
    ("logmill", include_str!("patterns/logmill")),
];

/// One definition read from a pattern file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition<'a> {
    pub name: &'a str,
    pub regex: &'a str,
    /// 1-based line of the definition.
    pub line: usize,
    /// 1-based column (in characters) where the regex starts, for pointing into it.
    pub col: usize,
}

/// A line of a pattern file that is not a definition, nor blank, nor a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Reads a pattern file as Logstash does: one `NAME regex` per line, `#` starts a comment line,
/// the name ends at the first run of whitespace and the regex is the rest of the line (trailing
/// spaces included: `REDISLOG` ends with one).
pub fn parse(text: &str) -> (Vec<Definition<'_>>, Vec<LineError>) {
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        let rest = &body[name_end..];
        let regex = rest.trim_start();
        let col = line[..indent + name_end + (rest.len() - regex.len())]
            .chars()
            .count()
            + 1;
        if !valid_pattern_name(name) {
            errors.push(LineError {
                line: i + 1,
                col: indent + 1,
                message: format!("invalid pattern name `{name}`"),
            });
        } else if regex.is_empty() {
            errors.push(LineError {
                line: i + 1,
                col: indent + 1,
                message: format!("pattern `{name}` has no regex"),
            });
        } else {
            defs.push(Definition {
                name,
                regex,
                line: i + 1,
                col,
            });
        }
    }
    (defs, errors)
}

/// Names as Logstash's grok accepts them in `%{NAME}`.
pub fn valid_pattern_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The library, read once: parsing a few hundred lines costs microseconds, and a pattern is
/// expanded and compiled only where a rule refers to it.
pub fn builtin() -> &'static HashMap<&'static str, &'static str> {
    static LIBRARY: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let mut map = HashMap::new();
        for (_, text) in FILES {
            let (defs, errors) = parse(text);
            debug_assert!(errors.is_empty(), "{errors:?}");
            for d in defs {
                map.insert(d.name, d.regex);
            }
        }
        map
    })
}

/// Which library file defines `name` (the last one, as that definition wins).
pub fn file_of(name: &str) -> Option<&'static str> {
    FILES
        .iter()
        .rev()
        .find(|(_, text)| parse(text).0.iter().any(|d| d.name == name))
        .map(|(f, _)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_follows_logstash_format() {
        let text = "# comment\n\nA [a-z]+\n  B %{A} x \nbad-name y\nC\n";
        let (defs, errors) = parse(text);
        assert_eq!(
            defs,
            vec![
                Definition {
                    name: "A",
                    regex: "[a-z]+",
                    line: 3,
                    col: 3
                },
                Definition {
                    name: "B",
                    regex: "%{A} x ",
                    line: 4,
                    col: 5
                },
            ]
        );
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].message, "invalid pattern name `bad-name`");
        assert_eq!(errors[1].message, "pattern `C` has no regex");
    }

    #[test]
    fn every_library_file_parses_cleanly() {
        for (file, text) in FILES {
            let (defs, errors) = parse(text);
            assert!(errors.is_empty(), "{file}: {errors:?}");
            assert!(!defs.is_empty(), "{file}");
        }
        assert!(builtin().len() > 130, "{}", builtin().len());
        assert_eq!(file_of("COMBINEDAPACHELOG"), Some("httpd"));
    }
}
