//! Real peers from Debian: promtool reads what we write, and mtail (the baseline) computes the
//! same values as logmill on the reference workload. `.ci/run` installs both.

use std::process::Command;

use crate::support::*;

fn generate(kind: &str, n: u32, tmp: &TempDir) -> std::path::PathBuf {
    let path = tmp.path(&format!("{kind}.log"));
    let o = run(&["gen", kind, &n.to_string()]);
    assert!(o.status.success());
    std::fs::write(&path, o.stdout).unwrap();
    path
}

fn replay(rules: &str, input: &std::path::Path, extra: &[&str]) -> String {
    let o = logmill()
        .current_dir(repo())
        .args(["replay", "-q", "--rules", rules])
        .args(extra)
        .arg(input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// Every shipped rule file's output on realistic input passes `promtool check metrics`,
/// lints included.
#[test]
fn promtool_accepts_real_output() {
    if !have("promtool") {
        return;
    }
    let tmp = TempDir::new("promtool");
    let nginx = generate("nginx", 20_000, &tmp);
    let json = generate("json", 20_000, &tmp);
    let mut outputs = vec![replay("rules/", &nginx, &[]), replay("rules/", &json, &[])];
    if let Some(shared) = shared() {
        for log in ["OpenSSH/OpenSSH_2k.log", "HDFS/HDFS_2k.log"] {
            outputs.push(replay("rules/", &shared.join("data/loghub").join(log), &[]));
        }
    }
    for out in outputs {
        assert!(out.lines().count() > 10, "{out}");
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), out.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "promtool: {}{}\n{out}",
            stdout(&o),
            stderr(&o)
        );
    }
}

/// logmill and mtail print the same value for every series of the bench rules.
#[test]
fn same_values_as_mtail() {
    if !have("mtail") || !have("python3") {
        return;
    }
    let Some(shared) = shared() else {
        eprintln!("skipped: ../shared (the mtail programs) is not beside the clone");
        return;
    };
    let tmp = TempDir::new("mtail");
    for kind in ["nginx", "json"] {
        let input = generate(kind, 50_000, &tmp);
        let ours = tmp.path(&format!("{kind}.logmill.prom"));
        std::fs::write(
            &ours,
            replay(&format!("benches/rules/{kind}.yaml"), &input, &[]),
        )
        .unwrap();
        let progs = tmp.path(&format!("progs-{kind}"));
        std::fs::create_dir_all(&progs).unwrap();
        std::fs::copy(
            shared.join(format!("bench/mtail/{kind}.mtail")),
            progs.join(format!("{kind}.mtail")),
        )
        .unwrap();
        let o = Command::new("mtail")
            .args([
                "--one_shot",
                "--one_shot_format",
                "prometheus",
                "--logtostderr",
                "--port",
                "0",
                "--progs",
            ])
            .arg(&progs)
            .arg("--logs")
            .arg(&input)
            .output()
            .unwrap();
        assert!(o.status.success(), "mtail: {}", stderr(&o));
        let theirs = tmp.path(&format!("{kind}.mtail.prom"));
        std::fs::write(&theirs, &o.stdout).unwrap();
        let cmp = Command::new("python3")
            .arg(repo().join("benches/compare.py"))
            .arg(&ours)
            .arg(&theirs)
            .output()
            .unwrap();
        assert!(cmp.status.success(), "{kind}: {}", stdout(&cmp));
        assert!(!stdout(&cmp).starts_with("0 series"), "{}", stdout(&cmp));
    }
}
