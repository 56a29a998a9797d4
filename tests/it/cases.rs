//! Data-driven cases: `tests/data/<case>/` holds `rules.yaml` (or a `rules/` directory of
//! files), and either `input.log` with the
//! expected outputs (`expected.prom`, and `expected.kept` / `expected.dead` when present) or
//! `expected.diag` with what `logmill check` prints, or `expected.explain` (and
//! `expected.explain.jsonl`) with what `logmill explain` says of each input line. An `args`
//! file adds replay flags.
//! `UPDATE_EXPECT=1 cargo test` rewrites the expectations from what the code does now.

use crate::support::*;

#[test]
fn data_cases() {
    let root = repo().join("tests/data");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        // grok-conformance holds examples for tests/it/grok.rs, not a rule case.
        .filter(|p| p.is_dir() && !p.ends_with("grok-conformance"))
        .collect();
    cases.sort();
    assert!(cases.len() > 20, "the cases are there");
    let mut failures = Vec::new();
    for case in &cases {
        // A `rules/` directory stands for several files (teams) checked together.
        let rules = if case.join("rules").is_dir() {
            case.join("rules")
        } else {
            case.join("rules.yaml")
        };
        let rel = |p: &std::path::Path| p.strip_prefix(repo()).unwrap().display().to_string();
        if case.join("expected.diag").exists() {
            let o = logmill()
                .current_dir(repo())
                .args(["check", &rel(&rules)])
                .output()
                .unwrap();
            let got = format!("exit {}\n{}", o.status.code().unwrap_or(-1), stderr(&o));
            failures.extend(expect_file(&case.join("expected.diag"), &got));
            continue;
        }
        // `logmill explain` over the input, for a person and for tools.
        if case.join("expected.explain").exists() {
            for (file, json) in [
                ("expected.explain", false),
                ("expected.explain.jsonl", true),
            ] {
                let mut args = vec!["explain", "--rules", "RULES", "--file", "INPUT"];
                if json {
                    args.push("--json");
                }
                let (r, i) = (rel(&rules), rel(&case.join("input.log")));
                let args: Vec<&str> = args
                    .iter()
                    .map(|a| match *a {
                        "RULES" => r.as_str(),
                        "INPUT" => i.as_str(),
                        a => a,
                    })
                    .collect();
                let o = logmill().current_dir(repo()).args(&args).output().unwrap();
                assert!(o.status.success(), "{}: {}", case.display(), stderr(&o));
                failures.extend(expect_file(&case.join(file), &stdout(&o)));
            }
            continue;
        }
        let tmp = TempDir::new(case.file_name().unwrap().to_str().unwrap());
        let (prom, kept, dead) = (
            tmp.path("out.prom"),
            tmp.path("kept.log"),
            tmp.path("dead.json"),
        );
        let mut args: Vec<String> = vec![
            "replay".into(),
            "-q".into(),
            "--rules".into(),
            rel(&rules),
            "--metrics-out".into(),
            prom.display().to_string(),
            "--logs-out".into(),
            kept.display().to_string(),
            "--dead-letter-out".into(),
            dead.display().to_string(),
        ];
        if let Ok(extra) = std::fs::read_to_string(case.join("args")) {
            args.extend(extra.split_whitespace().map(str::to_string));
        }
        args.push(rel(&case.join("input.log")));
        let o = logmill().current_dir(repo()).args(&args).output().unwrap();
        assert!(o.status.success(), "{}: {}", case.display(), stderr(&o));
        let prom_text = std::fs::read_to_string(&prom).unwrap();
        failures.extend(expect_file(&case.join("expected.prom"), &prom_text));
        for (file, actual) in [("expected.kept", &kept), ("expected.dead", &dead)] {
            if case.join(file).exists() {
                failures.extend(expect_file(
                    &case.join(file),
                    &std::fs::read_to_string(actual).unwrap(),
                ));
            }
        }
        if !args.iter().any(|a| a == "--openmetrics") && have("promtool") {
            let check = std::process::Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(std::fs::File::open(&prom).unwrap())
                .output()
                .unwrap();
            // Strict: promtool's lints (naming, HELP) must pass as well as its parser.
            if !check.status.success() {
                failures.push(format!(
                    "{}: promtool rejects the output: {}{}",
                    case.display(),
                    stdout(&check),
                    stderr(&check)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
