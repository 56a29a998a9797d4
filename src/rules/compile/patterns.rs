//! A rule file's own grok patterns: `patterns:` (an inline map) and `patterns_dir:` (files in
//! Logstash's `NAME regex` format, relative to the rule file), checked where they are defined
//! for unknown references and cycles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Builder;
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::grok::{self, library};
use crate::rules::read::{MapView, scalar};
use crate::rules::yaml::{Node, Pos};

/// Where a team's pattern is defined, to point diagnostics at it.
#[derive(Clone)]
enum DefinedAt {
    /// The regex scalar of an inline `patterns:` entry.
    Inline(Box<Node>),
    /// A line of a pattern file: the file, and the position of the regex's first character.
    File(Arc<str>, Pos),
}

/// The definitions read from one pattern directory (each file once per compilation).
pub(super) type DirPatterns = Vec<(String, String, Arc<str>, Pos)>;

impl Builder {
    /// Reads the file's `patterns_dir:` then `patterns:` (an inline pattern replaces a file's of
    /// the same name, which replaces a built-in one) and reports bad definitions.
    pub(super) fn file_patterns(
        &mut self,
        top: &mut MapView<'_>,
        sink: &mut Sink,
    ) -> HashMap<String, String> {
        let mut patterns = HashMap::new();
        let mut at: HashMap<String, DefinedAt> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        if let Some(n) = top.get("patterns_dir") {
            let dirs: Vec<&Node> = match n.as_seq() {
                Some(items) => items.iter().collect(),
                None => vec![n],
            };
            for d in dirs {
                let Some(dir) = scalar(d, "a directory", sink) else {
                    continue;
                };
                for (name, regex, file, pos) in self.pattern_dir(&dir, d, sink) {
                    if !order.contains(&name) {
                        order.push(name.clone());
                    }
                    at.insert(name.clone(), DefinedAt::File(file, pos));
                    patterns.insert(name, regex);
                }
            }
        }
        if let Some(mut p) = top
            .get("patterns")
            .and_then(|n| MapView::new(n, "`patterns`", sink))
        {
            for (k, v) in p.entries {
                let (Some(k), Some(regex)) = (k.as_scalar(), scalar(v, "a pattern", sink)) else {
                    continue;
                };
                if !library::valid_pattern_name(k) {
                    sink.error(
                        v.pos,
                        Code::InvalidName,
                        format!("invalid pattern name `{k}`"),
                    )
                    .hint("pattern names match [A-Za-z0-9_]+");
                    continue;
                }
                if !order.iter().any(|o| o == k) {
                    order.push(k.to_string());
                }
                at.insert(k.to_string(), DefinedAt::Inline(Box::new(v.clone())));
                patterns.insert(k.to_string(), regex);
            }
            p.accept_all();
            p.finish(&[], "`patterns`", sink);
        }
        for e in grok::check_definitions(&patterns, &order) {
            let code = if e.cycle {
                Code::PatternCycle
            } else {
                Code::UnknownPattern
            };
            let d = match &at[&e.name] {
                DefinedAt::Inline(node) => {
                    sink.error(node.pos_in_text(0, e.offset), code, e.message)
                }
                DefinedAt::File(file, pos) => {
                    let d = sink.error(pos.shifted(e.offset), code, e.message);
                    d.file = file.clone();
                    d
                }
            };
            d.maybe_hint(e.hint);
        }
        patterns
    }

    /// The definitions of every file in `dir` (relative to the rule file), in name order, each
    /// directory read and its errors reported once per compilation.
    fn pattern_dir(&mut self, dir: &str, node: &Node, sink: &mut Sink) -> DirPatterns {
        if self.no_files {
            sink.error(
                node.pos,
                Code::Io,
                "`patterns_dir` is not read here: rules from this source cannot read files",
            )
            .hint("write the patterns under `patterns:` instead");
            return Vec::new();
        }
        let base = Path::new(sink.file().as_ref())
            .parent()
            .unwrap_or(Path::new("."));
        let path = base.join(dir);
        if let Some(known) = self.pattern_dirs.get(&path) {
            return known.clone();
        }
        let mut out = Vec::new();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&path) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                })
                .collect(),
            Err(e) => {
                sink.error(
                    node.text_pos,
                    Code::Io,
                    format!("cannot read pattern directory `{}`: {e}", path.display()),
                )
                .hint("`patterns_dir` is relative to the rule file's directory");
                Vec::new()
            }
        };
        files.sort();
        for f in files {
            let name: Arc<str> = f.display().to_string().into();
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) => {
                    let d = sink.error(
                        Pos { line: 1, col: 1 },
                        Code::Io,
                        format!("cannot read pattern file: {e}"),
                    );
                    d.file = name.clone();
                    continue;
                }
            };
            let (defs, errors) = library::parse(&text);
            for e in errors {
                let d = sink.error(
                    Pos {
                        line: e.line as u32,
                        col: e.col as u32,
                    },
                    Code::InvalidName,
                    e.message,
                );
                d.file = name.clone();
                d.hint("a pattern file has one `NAME regex` per line; names match [A-Za-z0-9_]+");
            }
            for d in defs {
                out.push((
                    d.name.to_string(),
                    d.regex.to_string(),
                    name.clone(),
                    Pos {
                        line: d.line as u32,
                        col: d.col as u32,
                    },
                ));
            }
        }
        self.pattern_dirs.insert(path, out.clone());
        out
    }
}
