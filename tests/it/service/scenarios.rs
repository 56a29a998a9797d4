//! Issue 10's scenario suite: what an operator does to a running group, with exact numbers.
//! (The others of the suite sit with the defect they cover: two groups on one state topic, a
//! regex subscription with a new topic, timestamps 0 / future / late, both delivery modes
//! under SIGKILL.)

use super::*;

/// The mixed workload (nginx, JSON, logfmt, noise, malformed records), `n` lines.
fn mixed(n: u64, seed: u64) -> Vec<Vec<u8>> {
    logmill::workload::generate(logmill::workload::Kind::Mixed, n, seed)
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The series whose values do not depend on merge order or the wall clock: counters,
/// histogram buckets, sums and counts (summaries' quantiles move with their window).
fn additive(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .filter(|(s, _)| {
            let name = s.split('{').next().unwrap();
            ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .any(|e| name.ends_with(e))
        })
        .map(|(s, v)| (s.clone(), *v))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Reloads while events flow, with the shipped rules (which have a summary: a reload passes
/// every family through the restore, and that crashed both instances of a group at their first
/// reload), and a graceful restart between the reloads. The families the reloads did not
/// change end exactly where replay of the same events puts them.
#[test]
fn issue10_reload_under_load_with_the_shipped_rules() {
    let c = cluster(4);
    let tmp = TempDir::new("i10-reload-load");
    let rules = tmp.path("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for f in std::fs::read_dir(repo().join("rules")).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".yaml") && !name.ends_with(".test.yaml") {
            std::fs::copy(&p, rules.join(&name)).unwrap();
        }
    }
    let lines = mixed(60_000, 7);
    std::fs::write(tmp.path("rules.yaml"), "unused").unwrap();
    let input = tmp.path("input.log");
    std::fs::write(&input, lines.join(&b"\n"[..])).unwrap();
    let replay = run(&[
        "replay",
        "-q",
        "--rules",
        rules.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let mut want = BTreeMap::new();
    for l in stdout(&replay).lines().filter(|l| !l.starts_with('#')) {
        let (s, v) = l.rsplit_once(' ').unwrap();
        want.insert(s.to_string(), v.parse::<f64>().unwrap());
    }
    // Replay closes every trace at the end of its input; the service only when a later event's
    // time passes its window: what rules derive from trace summaries is compared elsewhere
    // (`service::traces`).
    let want: BTreeMap<String, f64> = additive(&want)
        .into_iter()
        .filter(|(s, _)| !s.starts_with("trace") && !s.starts_with("service_graph_"))
        .collect();
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "reload-load-0", port);
    let yaml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("rules: [rules.yaml]", "rules: [rules/]");
    std::fs::write(&cfg, yaml).unwrap();
    let chunk = lines.len() / 4;
    // Spread over the partitions: keyless records stick to one partition for a while, and the
    // embedded broker drops what is past 5 MiB in a partition whether or not it was read (a
    // slow group join once let it drop the first 4,975 records of partition 0).
    let spread = |part: &[Vec<u8>]| {
        let records = part.iter().enumerate();
        let records = records.map(|(i, l)| Rec::new("logs", l.clone()).partition(i as i32 % 4));
        produce_records(&c.bootstrap, &[], records.collect());
    };
    spread(&lines[..chunk]);
    let mut child = start(&cfg);
    let is_ready = || wait_for(Duration::from_secs(60), || ready(port) == 200);
    assert!(is_ready(), "{}", log_of(&cfg));
    let added = |n: usize| {
        format!(
            "  - name: reload_{n}\n    format: json\n    metrics:\n      - {{name: it_reload_{n}_total, type: counter, help: Added by reload {n}.}}\n"
        )
    };
    let mut reloads = 0;
    for (i, part) in lines[chunk..].chunks(chunk).enumerate() {
        // The events of this part are still being processed when the rules change.
        spread(part);
        if i % 2 == 0 {
            let f = rules.join("service.yaml");
            let mut text = std::fs::read_to_string(&f).unwrap();
            text.push_str(&added(i));
            std::fs::write(&f, text).unwrap();
            reloads += 1;
            assert!(
                wait_for(Duration::from_secs(30), || log_of(&cfg)
                    .matches("rules reloaded")
                    .count()
                    == reloads),
                "{}",
                log_of(&cfg)
            );
        } else {
            assert!(stop(child).success(), "{}", log_of(&cfg));
            child = start(&cfg);
            assert!(is_ready(), "{}", log_of(&cfg));
        }
    }
    let mut got = BTreeMap::new();
    let ok = wait_for(Duration::from_secs(90), || {
        let Some(m) = scrape(port) else {
            return false;
        };
        got = additive(&m);
        want.iter()
            .all(|(s, w)| got.get(s).is_some_and(|g| close(*g, *w)))
            && got.contains_key("it_reload_0_total")
            && got.contains_key("it_reload_2_total")
    });
    let differ: Vec<_> = want
        .iter()
        .filter(|(s, w)| !got.get(*s).is_some_and(|g| close(*g, **w)))
        .take(10)
        .map(|(s, w)| format!("{s}: {:?}, want {w}", got.get(s)))
        .collect();
    assert!(ok, "{differ:?}\n{}", log_of(&cfg));
    assert!(child.0.try_wait().unwrap().is_none(), "{}", log_of(&cfg));
}

/// Three instances join, one is SIGKILLed and comes back under its identity, another leaves
/// gracefully and lingers: what the three export sums to the ground truth exactly.
#[test]
fn issue10_three_instances_with_a_sigkill() {
    let c = cluster(6);
    let n = 60_000;
    produce(&c.bootstrap, (0..n).map(|i| event(i, false)));
    let tmp = TempDir::new("i10-three-kill");
    let ports = [free_port(), free_port(), free_port()];
    let cfgs: Vec<PathBuf> = ["ka", "kb", "kc"]
        .iter()
        .zip(ports)
        .map(|(id, p)| config_with(&tmp.0, &c.bootstrap, id, p, "120s", ""))
        .collect();
    let a = start(&cfgs[0]);
    std::thread::sleep(Duration::from_millis(700));
    let mut b = start(&cfgs[1]);
    std::thread::sleep(Duration::from_millis(700));
    let c3 = start(&cfgs[2]);
    std::thread::sleep(Duration::from_millis(1500));
    b.0.kill().unwrap();
    b.0.wait().unwrap();
    produce(&c.bootstrap, (n..n + 10_000).map(|i| event(i, false)));
    std::thread::sleep(Duration::from_millis(1000));
    let _b = start(&cfgs[1]);
    std::thread::sleep(Duration::from_millis(1500));
    sigterm(&c3);
    let (want, _, _) = truth(n + 10_000, false);
    assert_exports(&ports, &want, 120, || true, &[&cfgs[0], &cfgs[1], &cfgs[2]]);
    drop((a, c3));
}
