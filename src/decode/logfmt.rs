//! logfmt: `key=value key2="quoted \"value\"" flag`. A bare key is `true`.

use super::{DecodeError, Decoded, Span};

pub fn scan(line: &str, keys: &[(Box<[u8]>, u32)], out: &mut Decoded) -> Result<(), DecodeError> {
    walk(line, |key, value| {
        if let Some((_, slot)) = keys.iter().find(|(k, _)| **k == *key) {
            out.slots[*slot as usize] = Some(span(line, value, &mut out.scratch));
        }
    })
}

/// Every pair of a logfmt line, its value as text (unescaped; a bare key is `true`).
pub fn pairs(
    line: &str,
    mut visit: impl FnMut(&[u8], std::borrow::Cow<'_, str>),
) -> Result<(), DecodeError> {
    let mut scratch = String::new();
    walk(line, |key, value| {
        scratch.clear();
        let s = span(line, value, &mut scratch);
        visit(key, std::borrow::Cow::Borrowed(s.get(line, &scratch)));
    })
}

fn span(line: &str, value: Value, scratch: &mut String) -> Span {
    match value {
        Value::Plain(s, e) => Span::raw(s, e),
        Value::Quoted {
            start,
            end,
            escaped: false,
        } => Span::raw(start, end),
        Value::Quoted {
            start,
            end,
            escaped: true,
        } => {
            let s = scratch.len();
            super::unescape_json_into(&line[start..end], scratch);
            Span {
                start: s as u32,
                end: scratch.len() as u32,
                scratch: true,
            }
        }
        Value::Bare => {
            let s = scratch.len();
            scratch.push_str("true");
            Span {
                start: s as u32,
                end: scratch.len() as u32,
                scratch: true,
            }
        }
    }
}

fn walk<'a>(line: &'a str, mut visit: impl FnMut(&'a [u8], Value)) -> Result<(), DecodeError> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            if b[i] == b'"' {
                return Err(DecodeError::MalformedLogfmt);
            }
            i += 1;
        }
        let key = &b[key_start..i];
        let value = if i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let start = i;
                let mut escaped = false;
                loop {
                    match b.get(i) {
                        None => return Err(DecodeError::MalformedLogfmt),
                        Some(b'\\') => {
                            escaped = true;
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                let end = i.min(b.len());
                i += 1;
                if i < b.len() && !b[i].is_ascii_whitespace() {
                    return Err(DecodeError::MalformedLogfmt);
                }
                Value::Quoted {
                    start,
                    end,
                    escaped,
                }
            } else {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                Value::Plain(start, i)
            }
        } else {
            Value::Bare
        };
        visit(key, value);
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Value {
    Plain(usize, usize),
    Quoted {
        start: usize,
        end: usize,
        escaped: bool,
    },
    Bare,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_quotes_and_flags() {
        let keys: Vec<(Box<[u8]>, u32)> = vec![
            (b"level".as_slice().into(), 0),
            (b"msg".as_slice().into(), 1),
            (b"tls".as_slice().into(), 2),
        ];
        let mut out = Decoded {
            slots: vec![None; 3],
            ..Default::default()
        };
        let line = r#"level=warn msg="slow \"db\" call" tls dur=1.5s"#;
        scan(line, &keys, &mut out).unwrap();
        let get = |i: usize| out.slots[i].map(|s| s.get(line, &out.scratch).to_string());
        assert_eq!(get(0).as_deref(), Some("warn"));
        assert_eq!(get(1).as_deref(), Some("slow \"db\" call"));
        assert_eq!(get(2).as_deref(), Some("true"));
    }
}
