//! Issue 9, shadow evaluation in the service: a candidate rule set (`rules_candidate`) sees
//! the same events as the live one, its series are served only at `/-/shadow/metrics`, and
//! `/-/shadow` reports the difference; promotion is moving the file.

use simd_json::prelude::*;

use super::*;

/// The candidate of `RULES`: the same events family, `it_value_total` replaced by
/// `it_candidate_total` (a count of the events with `n`), and warn events dropped instead of
/// debug ones.
const CANDIDATE: &str = r#"team: it
rules:
  - name: events
    format: logfmt
    metrics:
      - {name: it_events_total, type: counter, help: Events by level., labels: {level: level}}
      - {name: it_candidate_total, type: counter, help: Events with n.}
  - name: debug
    format: logfmt
    match: {fields: {level: warn}}
    then: drop
"#;

fn get(port: u16, path: &str, accept: &str) -> (u16, String) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    logmill::sink::http::get(addr, path, accept).unwrap_or((0, String::new()))
}

/// The series of an exposition, summed by name and labels.
fn series(body: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (s, v) = l.rsplit_once(' ').unwrap();
        *out.entry(s.to_string()).or_insert(0.0) += v.parse::<f64>().unwrap();
    }
    out
}

#[test]
fn issue9_a_candidate_in_the_service_is_compared_and_changes_nothing_live() {
    let c = cluster(2);
    let tmp = TempDir::new("i9-shadow");
    let port = free_port();
    std::fs::create_dir(tmp.0.join("candidate")).unwrap();
    std::fs::write(tmp.0.join("candidate/rules.yaml"), CANDIDATE).unwrap();
    let cfg = config_with(
        &tmp.0,
        &c.bootstrap,
        "shadow-0",
        port,
        "0s",
        "rules_candidate: [candidate/]\n",
    );
    let _child = start(&cfg);
    let n = 1500;
    produce(&c.bootstrap, (0..n).map(|i| event(i, false)));

    // Live: exactly what it exports without a candidate, and its kept topic.
    let (want, kept, _) = truth(n, false);
    assert_exports(&[port], &want, 60, || true, &[&cfg]);
    let kept_got: HashSet<Vec<u8>> = consume_all(&c.bootstrap, "kept")
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_same(&kept_got, &kept, "kept topic");

    // The candidate's series, only at /-/shadow/metrics.
    let valid = (0..n).filter(|i| i % 97 != 0 && i % 101 != 0);
    let mut want_shadow: BTreeMap<String, f64> = want
        .iter()
        .filter(|(k, _)| k.starts_with("it_events_total"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    want_shadow.insert("it_candidate_total".into(), valid.clone().count() as f64);
    let mut shadow = BTreeMap::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            let (status, body) = get(port, "/-/shadow/metrics", "text/plain");
            shadow = series(&body);
            status == 200 && shadow == want_shadow
        }),
        "{shadow:?}\n{}",
        log_of(&cfg)
    );

    // The report, as JSON: a family added, one removed, the rest the same, and the outcomes
    // that change (warn events now dropped, debug ones now kept).
    let warn = valid.clone().filter(|i| level(*i, false) == "warn").count() as u64;
    let debug = valid
        .clone()
        .filter(|i| level(*i, false) == "debug")
        .count() as u64;
    let (status, body) = get(port, "/-/shadow", "application/json");
    assert_eq!(status, 200, "{body}");
    let report =
        simd_json::to_owned_value(&mut body.clone().into_bytes()).expect("the report is JSON");
    assert_eq!(report.get_u64("events"), Some(n), "{report}");
    let family = |name: &str, what: &str| {
        report
            .get("families")
            .and_then(|f| f.get(name))
            .and_then(|f| f.get_array(what))
            .map_or(0, |a| a.len())
    };
    assert_eq!(family("it_candidate_total", "added"), 1, "{report}");
    assert_eq!(family("it_value_total", "removed"), 1, "{report}");
    assert_eq!(family("it_events_total", "changed"), 0, "{report}");
    let outcome = |live: &str, candidate: &str| {
        report
            .get_array("outcomes")
            .into_iter()
            .flatten()
            .find(|o| o.get_str("live") == Some(live) && o.get_str("candidate") == Some(candidate))
            .and_then(|o| o.get_u64("events"))
    };
    assert_eq!(outcome("keep", "drop"), Some(warn), "{report}");
    assert_eq!(outcome("drop", "keep"), Some(debug), "{report}");
    let rules = report.get("rules").expect("rules");
    let matches = |r: &str, side: &str| {
        rules
            .get(r)
            .and_then(|x| x.get(side))
            .and_then(|x| x.get_u64("matches"))
    };
    assert_eq!(matches("it/debug", "live"), Some(debug));
    assert_eq!(matches("it/debug", "candidate"), Some(warn));
    let (_, text) = get(port, "/-/shadow", "text/plain");
    assert!(text.contains("keep -> drop: "), "{text}");
    // Nothing of the candidate is exported live.
    let live = scrape(port).unwrap();
    assert!(!live.contains_key("it_candidate_total"), "{live:?}");

    // A candidate with errors: no shadow, a reason, and the live rules go on.
    std::fs::write(
        tmp.0.join("candidate/rules.yaml"),
        "team: it\nrules:\n  - name: [broken\n",
    )
    .unwrap();
    let mut answer = (0, String::new());
    assert!(
        wait_for(Duration::from_secs(15), || {
            answer = get(port, "/-/shadow", "text/plain");
            answer.0 == 503
        }),
        "{answer:?}"
    );
    assert!(answer.1.contains("candidate/rules.yaml:"), "{}", answer.1);

    // Promotion: the candidate file moves over the live one; the live series of the families
    // it keeps go on from their values.
    std::fs::write(tmp.0.join("rules.yaml"), CANDIDATE).unwrap();
    std::fs::remove_file(tmp.0.join("candidate/rules.yaml")).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || log_of(&cfg)
            .contains("rules reloaded")),
        "{}",
        log_of(&cfg)
    );
    produce(&c.bootstrap, (n..2 * n).map(|i| event(i, false)));
    let (all, _, _) = truth(2 * n, false);
    let mut want: BTreeMap<String, f64> = all
        .into_iter()
        .filter(|(k, _)| k.starts_with("it_events_total"))
        .collect();
    let later = (n..2 * n).filter(|i| i % 97 != 0 && i % 101 != 0).count();
    want.insert("it_candidate_total".into(), later as f64);
    assert_exports(&[port], &want, 60, || true, &[&cfg]);
    // The candidate directory is empty now: no candidate, no shadow.
    assert_eq!(get(port, "/-/shadow", "text/plain").0, 404);
    assert!(
        warnings_in(&cfg).iter().all(|w| w.contains("candidate")),
        "{:?}",
        warnings_in(&cfg)
    );
}
