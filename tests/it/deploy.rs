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
