//! `logmill explain`: the engine's own evaluation of each event, rule by rule.

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use logmill::decode::{InputFormat, Limits};
use logmill::derive::Version;
use logmill::engine::split::Splitting;
use logmill::engine::{Engine, Record};
use logmill::rules::Program;

pub fn run(program: Arc<Program>, topic: &str, input: &[u8], json: bool) -> Result<()> {
    let mut engine = Engine::new(program, InputFormat::Auto, Limits::default());
    let now = super::replay::now_ms();
    let mut out = String::new();
    let lines = super::evaluate::events(input);
    let mut splitting = Splitting::default();
    let mut first = true;
    for (i, line) in lines.enumerate() {
        let whole = Record {
            payload: line,
            topic,
            version: Version {
                offset: i as u64,
                ..Version::default()
            },
            event_ms: now,
            part: logmill::decode::Part::Whole,
        };
        // A message of many events (an OTLP line) is explained event by event, each under
        // the line's number.
        for (_, rec) in splitting.records(&engine, &[whole]) {
            let report = engine.explain(&rec, now);
            if json {
                report.json(&mut out);
            } else {
                if !first {
                    out.push('\n');
                }
                report.text(i + 1, &mut out);
            }
            first = false;
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}
