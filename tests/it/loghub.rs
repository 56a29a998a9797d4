//! The shipped rules against real logs with ground truth: loghub's `*_structured.csv` gives
//! every line's event template, so each counter must equal the number of lines of its events.
//! Reads `../shared/data/loghub/`; without it the tests say so and pass.

use std::collections::HashMap;

use crate::support::*;

/// Minimal CSV: quoted fields with `""` escapes, as loghub writes them.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        fields.push(cur);
        rows.push(fields);
    }
    rows
}

fn event_counts(csv: &str) -> (HashMap<String, u64>, Vec<Vec<String>>) {
    let rows = csv_rows(csv);
    let mut counts = HashMap::new();
    for r in &rows {
        *counts.entry(r[r.len() - 2].clone()).or_insert(0) += 1;
    }
    (counts, rows)
}

/// Sum of every sample of `name` whose labels contain `filter`.
fn total(exposition: &str, name: &str, filter: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(filter))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// What `replay` says its reduction did: events in, events kept, summary records written.
struct Reduction {
    input: u64,
    kept: u64,
    protected: u64,
    summaries: u64,
}

fn reduction(summary: &str) -> Reduction {
    let line = summary
        .lines()
        .find(|l| l.starts_with("reduction: "))
        .unwrap_or_else(|| panic!("no reduction line in:\n{summary}"));
    let num = |after: &str, text: &str| -> u64 {
        let at = text
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} in {text}"))
            + after.len();
        text[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let protected = summary
        .lines()
        .filter_map(|l| l.find(" protected)").map(|at| &l[..at]))
        .map(|l| l.rsplit('(').next().unwrap().parse::<u64>().unwrap())
        .sum();
    Reduction {
        input: num("reduction:", line),
        kept: num("in,", line),
        protected,
        summaries: num("summaries", line),
    }
}

/// Replays `log` through `rules`: the exposition, the lines written as kept logs (kept events
/// and the reduction's summaries) and what the reduction did.
fn replay(rules: &str, log: &std::path::Path, tmp: &TempDir) -> (String, u64, Reduction) {
    let kept = tmp.path("kept.log");
    let o = logmill()
        .current_dir(repo())
        .args([
            "replay",
            "--rules",
            rules,
            "--logs-out",
            kept.to_str().unwrap(),
            log.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    (
        stdout(&o),
        std::fs::read_to_string(kept).unwrap().lines().count() as u64,
        reduction(&stderr(&o)),
    )
}

#[test]
fn openssh_rules_match_ground_truth() {
    let Some(shared) = shared() else {
        eprintln!("skipped: ../shared is not beside the clone");
        return;
    };
    let dir = shared.join("data/loghub/OpenSSH");
    let (ev, rows) =
        event_counts(&std::fs::read_to_string(dir.join("OpenSSH_2k.log_structured.csv")).unwrap());
    let n = |ids: &[&str]| {
        ids.iter()
            .map(|i| ev.get(*i).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let tmp = TempDir::new("openssh");
    let (out, written, red) = replay("rules/openssh.yaml", &dir.join("OpenSSH_2k.log"), &tmp);
    assert_eq!(
        total(&out, "ssh_failed_passwords_total", ""),
        n(&["E9", "E10"])
    );
    assert_eq!(
        total(&out, "ssh_failed_passwords_total", "user_kind=\"invalid\""),
        n(&["E10"])
    );
    assert_eq!(
        total(&out, "ssh_invalid_user_attempts_total", ""),
        n(&["E13"])
    );
    assert_eq!(total(&out, "ssh_logins_total", ""), n(&["E1"]));
    assert_eq!(total(&out, "ssh_sessions_total", "opened"), n(&["E23"]));
    assert_eq!(total(&out, "ssh_sessions_total", "closed"), n(&["E22"]));
    assert_eq!(
        total(&out, "ssh_pam_auth_failures_total", ""),
        n(&["E19", "E20"])
    );
    assert_eq!(
        total(&out, "ssh_reverse_mapping_failures_total", ""),
        n(&["E27"])
    );
    assert_eq!(
        total(&out, "ssh_disconnects_total", ""),
        n(&["E24", "E25", "E26"])
    );
    assert_eq!(
        total(&out, "ssh_disconnects_total", "reason=\"bye\""),
        n(&["E24"])
    );
    let dropped = n(&["E19", "E20", "E27", "E24", "E25", "E26"]);
    // Only failed passwords are throttled; every other line the rules keep is written.
    assert_eq!(red.input, n(&["E9", "E10"]), "failed passwords reduced");
    assert!(red.kept < red.input / 2, "a brute force is throttled");
    assert_eq!(
        written,
        rows.len() as u64 - dropped - (red.input - red.kept) + red.summaries,
        "every other line is kept, and each throttled key and interval has its summary"
    );
}

#[test]
fn hdfs_rules_match_ground_truth() {
    let Some(shared) = shared() else {
        eprintln!("skipped: ../shared is not beside the clone");
        return;
    };
    let dir = shared.join("data/loghub/HDFS");
    let (ev, rows) =
        event_counts(&std::fs::read_to_string(dir.join("HDFS_2k.log_structured.csv")).unwrap());
    let n = |ids: &[&str]| {
        ids.iter()
            .map(|i| ev.get(*i).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let tmp = TempDir::new("hdfs");
    let (out, written, red) = replay("rules/hdfs.yaml", &dir.join("HDFS_2k.log"), &tmp);
    assert_eq!(
        total(&out, "hdfs_blocks_received_total", ""),
        n(&["E11", "E12"])
    );
    assert_eq!(total(&out, "hdfs_blocks_receiving_total", ""), n(&["E13"]));
    assert_eq!(
        total(&out, "hdfs_packet_responders_terminated_total", ""),
        n(&["E10"])
    );
    assert_eq!(total(&out, "hdfs_blockmap_updates_total", ""), n(&["E6"]));
    assert_eq!(total(&out, "hdfs_blocks_allocated_total", ""), n(&["E7"]));
    assert_eq!(total(&out, "hdfs_block_deletions_total", ""), n(&["E9"]));
    assert_eq!(total(&out, "hdfs_log_lines_total", ""), rows.len() as u64);
    for level in ["INFO", "WARN"] {
        let want = rows.iter().filter(|r| r[4] == level).count() as u64;
        assert_eq!(
            total(&out, "hdfs_log_lines_total", &format!("level=\"{level}\"")),
            want,
            "{level}"
        );
    }
    // What the rules keep, the patterns reduce; warnings are protected from it.
    let kept_by_rules = rows.len() as u64 - n(&["E13", "E10", "E6"]);
    assert_eq!(red.input, kept_by_rules);
    let warnings = rows.iter().filter(|r| r[4] == "WARN").count() as u64;
    assert_eq!(red.protected, warnings);
    assert!(
        red.kept < red.input / 4,
        "repeated templates are summarised"
    );
    assert_eq!(
        written,
        kept_by_rules - (red.input - red.kept) + red.summaries
    );
}
