//! A YAML tree that remembers where every node came from.
//!
//! Rule diagnostics must point at `file:line:col`, and `serde`-style deserialisation loses
//! positions, so rule files are first read into this small spanned tree and then walked by
//! hand (see `spec.rs`), collecting every error on the way.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    fn from_marker(m: Marker) -> Pos {
        // yaml-rust2 markers count lines from 1 and columns from 0.
        Pos {
            line: m.line() as u32,
            col: m.col() as u32 + 1,
        }
    }

    /// The position `n` characters to the right, for pointing inside a single-line scalar.
    pub fn shifted(self, n: usize) -> Pos {
        Pos {
            line: self.line,
            col: self.col + n as u32,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar with its text and whether it was written as a plain (unquoted) scalar.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
    /// Where the scalar's text starts (after an opening quote), for pointing into patterns.
    pub text_pos: Pos,
    pub quoted: bool,
    /// A literal block scalar (`|`), whose lines are the file's lines.
    pub literal: bool,
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true } if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Plain scalars only: `"1"` in quotes is a string, as YAML 1.2 says.
    pub fn as_f64(&self) -> Option<f64> {
        match &self.kind {
            Kind::Scalar { text, plain: true } => match text.as_str() {
                ".inf" | "+.inf" | ".Inf" | "+.Inf" => Some(f64::INFINITY),
                "-.inf" | "-.Inf" => Some(f64::NEG_INFINITY),
                t => t.parse::<f64>().ok().filter(|v| v.is_finite()),
            },
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match &self.kind {
            Kind::Scalar { text, plain: true } => text.replace('_', "").parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match &self.kind {
            Kind::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// Where character `col` of line `line` (both from 0) of a scalar's text is in the file:
    /// exact for single-line scalars and literal blocks (`|`), the scalar's start otherwise.
    pub fn pos_in_text(&self, line: usize, col: usize) -> Pos {
        let Kind::Scalar { text, .. } = &self.kind else {
            return self.pos;
        };
        if !text.contains('\n') {
            return self.text_pos.shifted(col);
        }
        // A literal block keeps its lines; its marker is at the first non-blank one.
        let leading = text.chars().take_while(|c| *c == '\n').count();
        if self.literal && self.pos.line as usize >= leading {
            Pos {
                line: (self.pos.line as usize - leading + line) as u32,
                col: self.pos.col + col as u32,
            }
        } else {
            self.pos
        }
    }

    /// What the node is, in words, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. An empty document is a null scalar at 1:1.
pub fn parse(src: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: Pos::from_marker(*e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        kind: Kind::Scalar {
            text: String::new(),
            plain: true,
        },
        pos: Pos { line: 1, col: 1 },
        text_pos: Pos { line: 1, col: 1 },
        quoted: false,
        literal: false,
    }))
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, usize)>,
    /// Map keys waiting for their value, one slot per open mapping.
    keys: Vec<Option<Node>>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some((parent, _)) => match &mut parent.kind {
                Kind::Seq(items) => items.push(node),
                Kind::Map(entries) => {
                    let slot = self.keys.last_mut().expect("a key slot per open mapping");
                    match slot.take() {
                        None => *slot = Some(node),
                        Some(key) => entries.push((key, node)),
                    }
                }
                Kind::Scalar { .. } => unreachable!("scalars are never pushed on the stack"),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = matches!(style, TScalarStyle::Plain);
                let quoted = matches!(
                    style,
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
                );
                let literal = matches!(style, TScalarStyle::Literal);
                let text_pos = if quoted { pos.shifted(1) } else { pos };
                let node = Node {
                    kind: Kind::Scalar { text, plain },
                    pos,
                    text_pos,
                    quoted,
                    literal,
                };
                self.push_value(node, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    kind: Kind::Seq(Vec::new()),
                    pos,
                    text_pos: pos,
                    quoted: false,
                    literal: false,
                };
                self.stack.push((node, anchor));
            }
            Event::MappingStart(anchor, _) => {
                let node = Node {
                    kind: Kind::Map(Vec::new()),
                    pos,
                    text_pos: pos,
                    quoted: false,
                    literal: false,
                };
                self.stack.push((node, anchor));
                self.keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = self.stack.pop().expect("balanced events");
                if matches!(node.kind, Kind::Map(_)) {
                    self.keys.pop();
                }
                self.push_value(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.push_value(node, 0),
                None => {
                    self.error.get_or_insert(SyntaxError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                    });
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let doc = parse("team: a\nrules:\n  - name: x\n    match: 'q'\n").unwrap();
        let map = doc.as_map().unwrap();
        assert_eq!(map[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(map[0].1.pos, Pos { line: 1, col: 7 });
        let rules = map[1].1.as_seq().unwrap();
        let rule = rules[0].as_map().unwrap();
        assert_eq!(rule[0].0.pos, Pos { line: 3, col: 5 });
        assert_eq!(rule[1].1.pos, Pos { line: 4, col: 12 });
        assert_eq!(rule[1].1.text_pos, Pos { line: 4, col: 13 });
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn positions_inside_scalars() {
        let doc = parse("a: |\n  x 1\n    y 2\nb: 'q r'\n").unwrap();
        let map = doc.as_map().unwrap();
        assert_eq!(map[0].1.pos_in_text(1, 2), Pos { line: 3, col: 5 });
        assert_eq!(map[1].1.pos_in_text(0, 2), Pos { line: 4, col: 7 });
    }

    #[test]
    fn aliases_are_resolved() {
        let doc = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let map = doc.as_map().unwrap();
        assert_eq!(map[1].1.as_seq().unwrap().len(), 2);
    }
}
