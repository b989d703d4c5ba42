//! A real Prometheus (Debian's `prometheus` package) scraping services on
//! this machine, for tests that check what an operator's Prometheus sees.
//! Where the binary is missing the test is skipped with a note, except in
//! CI, which installs it and fails instead.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

const BINARY: &str = "prometheus";

/// A Prometheus server of the test's own, stopped when dropped.
pub struct Prometheus {
    child: Child,
    address: SocketAddr,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// One series of a query's answer: its labels and its value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping each `(job, address)` every second, with
    /// the alerting rules of `rules` evaluated as often, and waits until it
    /// is ready; `None` where no `prometheus` binary is installed, outside CI.
    pub async fn scraping(targets: &[(&str, SocketAddr)], rules: Option<&Path>) -> Option<Self> {
        if Command::new(BINARY).arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "`prometheus` must be installed in CI");
            eprintln!("skipped: no `prometheus` binary (apt-get install prometheus)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = scrape_config(targets, rules);
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let address: SocketAddr = ([127, 0, 0, 1], crate::free_port()).into();
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log_file(dir.path()))
            .spawn()
            .expect("starting prometheus");
        let prometheus = Self { child, address, http: reqwest::Client::new(), _dir: dir };
        crate::eventually(Duration::from_secs(30), || async {
            let ready = prometheus.http.get(format!("http://{address}/-/ready")).send().await.ok()?;
            ready.status().is_success().then_some(())
        })
        .await;
        Some(prometheus)
    }

    /// The answer to an instant PromQL query.
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        let url = format!("http://{}/api/v1/query", self.address);
        let answer: Value = self.http.get(url).query(&[("query", promql)]).send().await.unwrap().json().await.unwrap();
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        let series = answer["data"]["result"].as_array().cloned().unwrap_or_default();
        series
            .into_iter()
            .map(|series| Sample {
                labels: series["metric"].as_object().cloned().unwrap_or_default(),
                value: series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// The alerting and recording rules loaded, once every group has been
    /// evaluated at least once, each as the rules API describes it.
    pub async fn rules(&self) -> Vec<Value> {
        crate::eventually(Duration::from_secs(30), || async {
            let url = format!("http://{}/api/v1/rules", self.address);
            let answer: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
            let groups = answer["data"]["groups"].as_array()?.clone();
            let evaluated =
                groups.iter().all(|group| group["lastEvaluation"].as_str().is_some_and(|at| !at.starts_with("0001")));
            evaluated.then(|| groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect())
        })
        .await
    }

    /// Waits until `promql` has a series whose value passes `check`, as the
    /// next scrapes bring it in; fails after 30 s.
    pub async fn until(&self, promql: &str, check: impl Fn(f64) -> bool) -> Sample {
        crate::eventually(Duration::from_secs(30), || async {
            self.query(promql).await.into_iter().find(|sample| check(sample.value))
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scrape_config(targets: &[(&str, SocketAddr)], rules: Option<&Path>) -> String {
    let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n");
    if let Some(rules) = rules {
        config.push_str(&format!("rule_files: ['{}']\n", rules.display()));
    }
    config.push_str("scrape_configs:\n");
    for (job, address) in targets {
        config.push_str(&format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{address}']\n"));
    }
    config
}

fn log_file(dir: &Path) -> Stdio {
    std::fs::File::create(dir.join("prometheus.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
}
