//! deploy/: every manifest parses, the team ConfigMaps carry exactly the shipped rules, and
//! the config they make up passes `logmill check --config`.

use std::collections::BTreeMap;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::*;

fn docs(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_at<'a>(y: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(y, |y, k| y.as_hash()?.get(&Yaml::String((*k).into())))
        .and_then(Yaml::as_str)
}

/// deploy/k8s/rules.yaml: one ConfigMap per team holding its files from rules/.
fn rules_manifest(teams: &[(&str, Vec<&str>)]) -> String {
    let mut out = String::from(
        "# One ConfigMap per team, mounted under /etc/logmill/rules/<team>/ and reloaded when it\n\
         # changes. Kept identical to rules/ by the test suite (tests/it/deploy.rs).\n",
    );
    for (team, files) in teams {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: logmill-rules-{team}\n  \
             labels: {{app.kubernetes.io/name: logmill, logmill/team: {team}}}\ndata:\n"
        ));
        for file in files {
            out.push_str(&format!("  {file}: |\n"));
            let text = std::fs::read_to_string(repo().join("rules").join(file)).unwrap();
            for line in text.lines() {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
    }
    out
}

#[test]
fn manifests_parse_and_their_config_passes_check() {
    let mut configmaps: BTreeMap<String, Yaml> = BTreeMap::new();
    let mut kinds = Vec::new();
    for file in [
        "deploy/k8s/config.yaml",
        "deploy/k8s/rules.yaml",
        "deploy/k8s/statefulset.yaml",
        "deploy/k8s/kustomization.yaml",
    ] {
        for doc in docs(file) {
            let kind = str_at(&doc, &["kind"])
                .unwrap_or_else(|| panic!("{file}: a document without `kind`"))
                .to_string();
            assert!(
                str_at(&doc, &["apiVersion"]).is_some(),
                "{file}: {kind} without apiVersion"
            );
            if kind != "Kustomization" {
                let name = str_at(&doc, &["metadata", "name"])
                    .unwrap_or_else(|| panic!("{file}: {kind} without a name"));
                if kind == "ConfigMap" {
                    configmaps.insert(name.to_string(), doc.clone());
                }
            }
            kinds.push(kind);
        }
    }
    for k in [
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ConfigMap",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in deploy/k8s");
    }

    // The rules' ConfigMaps are rules/ as the teams own it (UPDATE_EXPECT=1 rewrites them).
    let teams: Vec<(&str, Vec<&str>)> = configmaps
        .iter()
        .filter_map(|(name, cm)| {
            let files = cm["data"].as_hash()?.keys().filter_map(|k| k.as_str());
            Some((name.strip_prefix("logmill-rules-")?, files.collect()))
        })
        .collect();
    if let Some(diff) = expect_file(
        &repo().join("deploy/k8s/rules.yaml"),
        &rules_manifest(&teams),
    ) {
        panic!("{diff}");
    }

    // Lay the ConfigMaps out as the pod sees them, then check the config.
    let tmp = TempDir::new("deploy");
    let config = str_at(&configmaps["logmill-config"], &["data", "logmill.yaml"]).unwrap();
    std::fs::write(tmp.path("logmill.yaml"), config).unwrap();
    let mut teams = 0;
    for (name, cm) in &configmaps {
        let Some(team) = name.strip_prefix("logmill-rules-") else {
            continue;
        };
        teams += 1;
        let dir = tmp.path(&format!("rules/{team}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in cm["data"].as_hash().unwrap() {
            let (file, text) = (file.as_str().unwrap(), text.as_str().unwrap());
            let shipped = std::fs::read_to_string(repo().join("rules").join(file)).unwrap();
            assert_eq!(text, shipped, "{name}/{file} has drifted from rules/{file}");
            std::fs::write(dir.join(file), text).unwrap();
        }
    }
    assert_eq!(teams, 5);
    let o = logmill()
        .env("POD_NAME", "logmill-0")
        .args([
            "check",
            "--config",
            tmp.path("logmill.yaml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // The grace period covers the linger.
    let sts = docs("deploy/k8s/statefulset.yaml")
        .into_iter()
        .find(|d| str_at(d, &["kind"]) == Some("StatefulSet"))
        .unwrap();
    let grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    let linger: i64 = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("linger: "))
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        grace > linger,
        "terminationGracePeriodSeconds {grace} must exceed the linger {linger}s"
    );
}

#[test]
fn demo_config_and_systemd_unit() {
    let o = logmill()
        .current_dir(repo())
        .args(["check", "--config", "deploy/demo.yaml"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let unit = std::fs::read_to_string(repo().join("deploy/logmill.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/logmill run --config /etc/logmill/logmill.yaml")
    );
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

/// The metric names logmill's self-telemetry exports (its `logmill_*` constants).
fn telemetry_names() -> std::collections::BTreeSet<String> {
    let src = std::fs::read_to_string(repo().join("src/telemetry.rs")).unwrap();
    src.split('"')
        .filter(|s| {
            s.starts_with("logmill_") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(str::to_string)
        .collect()
}

/// Every `logmill_*` metric an expression names, with summary and histogram suffixes taken
/// off; recorded names (`instance:logmill_…:rate5m`) are not metrics.
fn metrics_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("logmill_") {
        let start = i + at;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end] == b'_' || b[end].is_ascii_digit())
        {
            end += 1;
        }
        let recorded = start > 0 && b[start - 1] == b':';
        if !recorded {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.push(base.to_string());
        }
        i = end;
    }
    out
}

/// deploy/k8s/prometheusrule.yaml: the rule file's groups for the Prometheus Operator.
fn prometheus_rule_manifest() -> String {
    let rules =
        std::fs::read_to_string(repo().join("deploy/monitoring/logmill.rules.yaml")).unwrap();
    let mut out = String::from(
        "# logmill's recording and alerting rules for the Prometheus Operator (apply it where the\n\
         # PrometheusRule CRD is installed). Generated from deploy/monitoring/logmill.rules.yaml\n\
         # by tests/it/deploy.rs (UPDATE_EXPECT=1).\n\
         apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: logmill\n  \
         labels: {app.kubernetes.io/name: logmill}\nspec:\n",
    );
    for line in rules.lines().skip_while(|l| l.starts_with('#')) {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// Monitoring as mixins ship it (issue 12): the alerting and recording rules pass `promtool
/// check rules` and their unit tests (`promtool test rules`, the real tool), the PrometheusRule
/// manifest carries the same groups, the Grafana dashboard's every expression parses, and every
/// metric the rules and the dashboard name is one logmill exports.
#[test]
fn issue12_alerts_and_dashboard_pass_promtool_and_name_real_metrics() {
    let known = telemetry_names();
    assert!(known.contains("logmill_consumer_lag"), "{known:?}");
    let rules =
        std::fs::read_to_string(repo().join("deploy/monitoring/logmill.rules.yaml")).unwrap();
    for m in metrics_in(&rules) {
        assert!(
            known.contains(&m),
            "the rules name `{m}`, which logmill does not export"
        );
    }
    let mut failures: Vec<String> = expect_file(
        &repo().join("deploy/k8s/prometheusrule.yaml"),
        &prometheus_rule_manifest(),
    )
    .into_iter()
    .collect();
    let manifest = docs("deploy/k8s/prometheusrule.yaml");
    assert_eq!(str_at(&manifest[0], &["kind"]), Some("PrometheusRule"));
    // The dashboard: panels with targets, every expression on a real metric.
    let mut json = std::fs::read(repo().join("deploy/monitoring/grafana-dashboard.json")).unwrap();
    let dash = simd_json::to_owned_value(&mut json).expect("the dashboard is JSON");
    use simd_json::prelude::*;
    assert_eq!(dash.get_str("uid"), Some("logmill-overview"));
    let panels = dash.get_array("panels").expect("panels");
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let mut exprs = Vec::new();
    for p in panels {
        let title = p.get_str("title").expect("a panel has a title");
        assert!(p.get("gridPos").is_some(), "{title}: no gridPos");
        let targets = p.get_array("targets").expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t.get_str("expr").expect("expr");
            for m in metrics_in(expr) {
                assert!(
                    known.contains(&m),
                    "panel `{title}` names `{m}`, which logmill does not export"
                );
            }
            exprs.push(expr.to_string());
        }
    }
    if !have("promtool") {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        return;
    }
    let dir = repo().join("deploy/monitoring");
    let run_promtool = |args: &[&str], cwd: &std::path::Path| {
        let o = std::process::Command::new("promtool")
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
    };
    let (ok, out) = run_promtool(&["check", "rules", "logmill.rules.yaml"], &dir);
    assert!(ok, "{out}");
    let (ok, out) = run_promtool(&["test", "rules", "logmill.rules.test.yaml"], &dir);
    assert!(ok, "{out}");
    // Each dashboard expression, its variables given values, as a recording rule promtool parses.
    let tmp = TempDir::new("dashboard");
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        file.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: '{}'\n",
            e.replace('\'', "''")
        ));
    }
    std::fs::write(tmp.path("dashboard.rules.yaml"), &file).unwrap();
    let (ok, out) = run_promtool(&["check", "rules", "dashboard.rules.yaml"], &tmp.0);
    assert!(ok, "{out}\n{file}");
    failures.retain(|f| !f.is_empty());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
