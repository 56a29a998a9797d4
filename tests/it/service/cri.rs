//! Issue 12: a CRI line whose parts straddle two polls, and a crash, is still one event.

use super::*;

const CRI_RULES: &str = "team: platform
envelopes:
  logs: cri
rules:
  - name: joined
    match: {contains: 'BEGIN-END'}
    metrics:
      - {name: cri_joined_total, type: counter, help: Lines joined from their parts., labels: {stream: stream}}
  - name: lines
    metrics:
      - {name: cri_lines_total, type: counter, help: Lines by stream., labels: {stream: stream}}
";

fn cri(stream: &str, tag: &str, message: &str) -> Vec<u8> {
    format!("2026-11-27T02:00:00.000000001Z {stream} {tag} {message}").into_bytes()
}

#[test]
fn issue12_cri_parts_across_polls_and_a_crash_are_joined_once() {
    let c = cluster(1);
    let tmp = TempDir::new("svc-cri");
    std::fs::write(tmp.path("rules.yaml"), CRI_RULES).unwrap();
    let port = free_port();
    // The line's last part comes after a crash and a restart: longer than the default wait.
    let cfg = config_with(
        &tmp.0,
        &c.bootstrap,
        "cri-0",
        port,
        "0s",
        "input: {cri_wait: 60s}\n",
    );
    let child = start(&cfg);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    // 100 whole lines, the first part of a long one, then 50 lines of the other stream.
    let mut first = Vec::new();
    for i in 0..100 {
        first.push(Rec::new("logs", cri("stdout", "F", &format!("line {i}"))).at(now()));
    }
    first.push(Rec::new("logs", cri("stdout", "P", "BEGIN-")).at(now()));
    for i in 0..50 {
        first.push(Rec::new("logs", cri("stderr", "F", &format!("err {i}"))).at(now()));
    }
    produce_records(&c.bootstrap, &[], first);
    let before: BTreeMap<String, f64> =
        [(r#"cri_lines_total{stream="stdout"}"#.to_string(), 100.0)].into();
    assert_exports(&[port], &before, 60, || true, &[&cfg]);
    // The line's first part and everything after it in the partition wait for its last part:
    // none of it is counted yet, nothing is dead-lettered.
    std::thread::sleep(Duration::from_secs(2));
    let got = scrape(port).unwrap();
    assert_eq!(
        got.get(r#"cri_lines_total{stream="stderr"}"#),
        None,
        "{got:?}"
    );
    assert_eq!(got.get(r#"cri_lines_total{stream="stdout"}"#), Some(&100.0));
    // A crash while they wait: the next run reads them again from the checkpoint.
    let mut child = child;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let _child = start(&cfg);
    produce_records(
        &c.bootstrap,
        &[],
        vec![Rec::new("logs", cri("stdout", "F", "END")).at(now())],
    );
    let want: BTreeMap<String, f64> = [
        (r#"cri_lines_total{stream="stdout"}"#, 101.0),
        (r#"cri_lines_total{stream="stderr"}"#, 50.0),
        (r#"cri_joined_total{stream="stdout"}"#, 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_exports(&[port], &want, 60, || true, &[&cfg]);
    assert!(consume_all(&c.bootstrap, "dead").is_empty());
}

/// A partition that goes quiet in the middle of a line: after the worker's wait its parts are
/// dead letters with their reason and the records after them are counted; nothing waits
/// forever.
#[test]
fn issue12_a_quiet_partition_gives_up_its_unfinished_line() {
    let c = cluster(1);
    let tmp = TempDir::new("svc-cri-quiet");
    std::fs::write(tmp.path("rules.yaml"), CRI_RULES).unwrap();
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "cri-q", port);
    let _child = start(&cfg);
    let mut records = vec![Rec::new("logs", cri("stdout", "P", "BEGIN-"))];
    for i in 0..20 {
        records.push(Rec::new("logs", cri("stderr", "F", &format!("err {i}"))));
    }
    produce_records(&c.bootstrap, &[], records);
    let want: BTreeMap<String, f64> =
        [(r#"cri_lines_total{stream="stderr"}"#.to_string(), 20.0)].into();
    assert_exports(&[port], &want, 60, || true, &[&cfg]);
    let dead = consume_all(&c.bootstrap, "dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].2, "cri_partial_unfinished");
    assert_eq!(dead[0].0, cri("stdout", "P", "BEGIN-"));
}
