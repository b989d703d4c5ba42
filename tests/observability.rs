//! The alerts and the dashboard shipped in `deploy/observability/`: the
//! rules load and their unit tests pass under Prometheus' own `promtool`,
//! the scrape configuration is valid, and every metric the alerts and the
//! dashboard use is one `docs/metrics.md` documents (and so one the services
//! export: the Prometheus test of `cli/tests/observability.rs` reads them
//! back from a running mesh).

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use agentmesh_testkit::images::workspace_root;

fn observability_dir() -> PathBuf {
    workspace_root().join("deploy/observability")
}

/// `promtool <args>` in `deploy/observability`, or `None` where it is not
/// installed, outside CI (CI installs it and fails instead).
fn promtool(args: &[&str]) -> Option<String> {
    let output = match Command::new("promtool").args(args).current_dir(observability_dir()).output() {
        Ok(output) => output,
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "`promtool` (Debian's prometheus package) must be installed in CI"
            );
            eprintln!("skipped: no `promtool` (apt-get install prometheus)");
            return None;
        }
    };
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} failed:\n{printed}");
    Some(printed)
}

#[test]
fn the_alert_rules_load_and_pass_their_unit_tests() {
    let Some(checked) = promtool(&["check", "rules", "alerts.yml"]) else { return };
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"]).unwrap();
    assert!(tested.contains("SUCCESS"), "{tested}");
    promtool(&["check", "config", "prometheus.yml"]).unwrap();
}

/// The metric names `text` mentions: words that begin `agentmesh_` or
/// `process_`, without the suffixes Prometheus adds to counters and
/// histograms.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !(word.starts_with("agentmesh_") || word.starts_with("process_")) {
            continue;
        }
        let base =
            ["_bucket", "_count", "_sum", "_total"].iter().find_map(|suffix| word.strip_suffix(suffix)).unwrap_or(word);
        names.insert(base.to_owned());
    }
    names
}

#[test]
fn alerts_and_dashboard_use_only_documented_metrics() {
    let documented = metric_names(&std::fs::read_to_string(workspace_root().join("docs/metrics.md")).unwrap());
    assert!(documented.len() > 20, "docs/metrics.md names the metrics: {documented:?}");
    let dashboard = std::fs::read_to_string(observability_dir().join("grafana-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|panels| !panels.is_empty()));
    let alerts = std::fs::read_to_string(observability_dir().join("alerts.yml")).unwrap();
    for (file, text) in [("alerts.yml", &alerts), ("grafana-dashboard.json", &dashboard)] {
        let used = metric_names(text);
        assert!(!used.is_empty());
        let undocumented: Vec<_> = used.difference(&documented).collect();
        assert!(undocumented.is_empty(), "{file} uses metrics docs/metrics.md does not name: {undocumented:?}");
    }
}
