//! Summary records: what a closed window says about the events it suppressed, as one JSON
//! object. They go where kept events go (the kept topic, replay's kept output), so the counts
//! of suppressed events are never lost: for every key and template, the events kept plus the
//! `suppressed` of its summaries are the events that came in.

use std::fmt::Write;

use super::Action;
use super::hash::{combine, hash_bytes};
use super::table::{Entry, Suppression};
use crate::sink::output::json_string;

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub action: Action,
    /// Unique and the same every time the partition is read: the partition, the action, the
    /// key and the window. Readers drop a summary seen twice (after a crash) by it.
    pub id: u64,
    pub partition: i32,
    /// The window, without its suppression (below).
    pub entry: Entry,
    pub suppression: Box<Suppression>,
    pub template_text: Option<String>,
}

impl Summary {
    pub fn new(
        action: Action,
        partition: i32,
        key: u64,
        mut entry: Entry,
        template_text: Option<String>,
    ) -> Summary {
        let suppression = entry.suppression.take().unwrap_or_default();
        let id = combine(
            combine(
                combine(hash_bytes(action.as_str().as_bytes()), partition as u64),
                key,
            ),
            entry.start_ms,
        );
        Summary {
            action,
            id,
            partition,
            entry,
            suppression,
            template_text,
        }
    }

    /// One field as text, as a test expectation names it (`testfile::SUMMARY_FIELDS`; a key's
    /// value is `key.<name>`, `samples` is their number).
    pub fn field(&self, name: &str) -> Option<String> {
        let (e, s) = (&self.entry, &self.suppression);
        Some(match name {
            "action" => self.action.as_str().to_string(),
            "rule" => e.rule.to_string(),
            "template" => self.template_text.clone()?,
            "repeat_count" | "suppressed" => s.count.to_string(),
            "kept" => e.kept.to_string(),
            "first_ms" => s.first_ms.to_string(),
            "last_ms" => s.last_ms.to_string(),
            "window_start_ms" => e.start_ms.to_string(),
            "samples" => s.samples.len().to_string(),
            key => {
                let want = key.strip_prefix("key.")?;
                s.key_text
                    .split('\u{1f}')
                    .find_map(|p| p.split_once('=').filter(|(k, _)| *k == want))?
                    .1
                    .to_string()
            }
        })
    }

    /// The offsets of the first and last suppressed events.
    pub fn offsets(&self) -> (i64, i64) {
        (self.suppression.first_offset, self.suppression.last_offset)
    }

    /// One JSON line (with its newline).
    pub fn json(&self, out: &mut String) {
        let (e, s) = (&self.entry, &*self.suppression);
        out.push_str("{\"logmill\":\"summary\",\"action\":\"");
        out.push_str(self.action.as_str());
        let _ = write!(out, "\",\"id\":\"{:016x}\",\"rule\":", self.id);
        json_string(out, &e.rule);
        if !s.key_text.is_empty() {
            out.push_str(",\"key\":{");
            for (i, pair) in s.key_text.split('\u{1f}').enumerate() {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if i > 0 {
                    out.push(',');
                }
                json_string(out, name);
                out.push(':');
                json_string(out, value);
            }
            out.push('}');
        }
        if let Some(t) = e.template {
            let _ = write!(out, ",\"template_id\":\"{t:016x}\"");
        }
        if let Some(text) = &self.template_text {
            out.push_str(",\"template\":");
            json_string(out, text);
        }
        let count = match self.action {
            Action::Dedupe => "repeat_count",
            _ => "suppressed",
        };
        // A budget's second counts the bytes it kept, not events.
        let kept = match self.action {
            Action::Budget => "kept_bytes",
            _ => "kept",
        };
        let _ = write!(
            out,
            ",\"{count}\":{},\"{kept}\":{},\"window_start_ms\":{},\"first_ms\":{},\"last_ms\":{},\"partition\":{},\"first_offset\":{},\"last_offset\":{}",
            s.count,
            e.kept,
            e.start_ms,
            s.first_ms,
            s.last_ms,
            self.partition,
            s.first_offset,
            s.last_offset
        );
        if !s.samples.is_empty() {
            out.push_str(",\"samples\":[");
            for (i, x) in s.samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(out, x);
            }
            out.push(']');
        }
        if !s.variables.is_empty() {
            let mut vars: Vec<&(u16, Vec<Box<str>>)> = s.variables.iter().collect();
            vars.sort_by_key(|(v, _)| *v);
            out.push_str(",\"variables\":{");
            for (i, (v, values)) in vars.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{v}\":[");
                for (j, x) in values.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    json_string(out, x);
                }
                out.push(']');
            }
            out.push('}');
        }
        out.push_str("}\n");
    }
}
