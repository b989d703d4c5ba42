//! `message/send` throughput and latency against several targets in one
//! run: the agent itself (the nearest limit), the gateway, and reverse
//! proxies in front of the agent. Closed loop: C keep-alive connections,
//! each sending its next message as soon as the last one is answered.
//! Targets take turns, every concurrency of a round against every target,
//! so that drift on a shared machine spreads over all of them alike.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use http::HeaderValue;
use serde_json::json;
use tokio::time::sleep_until;

use super::{
    cpu::{self, Usage, Watched},
    has_result,
    http::{Connection, Endpoint, bearer},
    mesh::{Workspace, read_token},
    message_send, open_results, run_tag,
};
use crate::{
    GatewayThroughputArgs,
    report::{Samples, quantile_ms},
};

/// Somewhere to send messages.
struct Target {
    name: String,
    endpoint: Endpoint,
}

/// When a measurement runs.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

/// One target at one concurrency in one round.
struct Measured {
    round: usize,
    target: String,
    concurrency: usize,
    duration: Duration,
    /// Sorted, in microseconds.
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    usage: Usage,
}

impl Measured {
    fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    fn throughput(&self) -> f64 {
        self.ok() as f64 / self.duration.as_secs_f64()
    }

    fn p(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }
}

pub async fn run(args: GatewayThroughputArgs) -> anyhow::Result<()> {
    ensure!(args.rounds > 0, "--rounds must be positive");
    ensure!(args.duration_secs > 0, "--duration-secs must be positive");
    ensure!(!args.concurrency.is_empty() && !args.concurrency.contains(&0), "--concurrency must be positive");
    let mesh = &args.mesh;
    let operator_token = read_token(&mesh.token_file)?;
    let tag = run_tag();
    let workspace = Workspace::online(
        &mesh.registry,
        &operator_token,
        &format!("bench-throughput-{tag}"),
        &mesh.agent,
        args.max_concurrent_tasks,
    )
    .await?;
    let _online = workspace.keep_online(Duration::from_secs(mesh.heartbeat_secs.max(1)));

    let mut targets = vec![
        Target { name: "direct".to_owned(), endpoint: Endpoint::parse(&mesh.agent)? },
        Target {
            name: "gateway".to_owned(),
            endpoint: Endpoint::parse(&format!("{}/a2a/{}", mesh.gateway.trim_end_matches('/'), workspace.id))?,
        },
    ];
    let ca_file = args.ca_file.as_deref();
    for route in &args.gateway_routes {
        let (name, base) =
            route.split_once('=').with_context(|| format!("--gateway-route {route}: expected name=url"))?;
        let url = format!("{}/a2a/{}", base.trim_end_matches('/'), workspace.id);
        targets.push(Target { name: name.to_owned(), endpoint: Endpoint::trusting(&url, ca_file)? });
    }
    for proxy in &args.proxies {
        let (name, url) = proxy.split_once('=').with_context(|| format!("--proxy {proxy}: expected name=url"))?;
        targets.push(Target { name: name.to_owned(), endpoint: Endpoint::trusting(url, ca_file)? });
    }
    // Every target gets the same request, headers included; only the
    // gateway reads the credential.
    let authorization = bearer(&operator_token)?;
    eprintln!(
        "workspace {} online; {} rounds of {} s (after {} s warm-up) per target and concurrency",
        workspace.id, args.rounds, args.duration_secs, args.warmup_secs
    );

    let mut results_file = mesh.results_file.as_deref().map(open_results).transpose()?;
    let mut measured = Vec::new();
    let mut sequence = 0usize;
    for round in 1..=args.rounds {
        for &concurrency in &args.concurrency {
            for turn in 0..targets.len() {
                let target = &targets[(turn + round - 1) % targets.len()];
                sequence += 1;
                let id_prefix = format!("{tag}-{sequence}");
                let shape = Shape {
                    concurrency,
                    warmup: Duration::from_secs(args.warmup_secs),
                    duration: Duration::from_secs(args.duration_secs),
                };
                let m = measure(round, target, shape, &authorization, &id_prefix, &mesh.processes).await?;
                println!("{}", describe(&m));
                if let Some(file) = &mut results_file {
                    writeln!(file, "{}", measurement_json(&m))?;
                }
                measured.push(m);
            }
        }
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    summarize(&measured, &names, &args.concurrency, &mesh.processes, results_file.as_mut())?;
    Ok(())
}

#[derive(Clone, Copy)]
struct Shape {
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
}

async fn measure(
    round: usize,
    target: &Target,
    shape: Shape,
    authorization: &HeaderValue,
    id_prefix: &str,
    watched: &[Watched],
) -> anyhow::Result<Measured> {
    let mut connections = Vec::with_capacity(shape.concurrency);
    for _ in 0..shape.concurrency {
        connections.push(Connection::open(&target.endpoint, Some(authorization.clone())).await?);
    }
    let from = Instant::now() + shape.warmup;
    let window = Window { from, until: from + shape.duration };
    let workers: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(task, connection)| {
            let prefix = format!("{id_prefix}-{task}");
            let endpoint = target.endpoint.clone();
            let authorization = authorization.clone();
            tokio::spawn(send_loop(connection, endpoint, authorization, prefix, window))
        })
        .collect();
    sleep_until(window.from.into()).await;
    let before = cpu::snapshot(watched);
    sleep_until(window.until.into()).await;
    let after = cpu::snapshot(watched);
    let mut samples = Samples::default();
    for worker in workers {
        samples.merge(worker.await?);
    }
    samples.latencies_us.sort_unstable();
    Ok(Measured {
        round,
        target: target.name.clone(),
        concurrency: shape.concurrency,
        duration: shape.duration,
        latencies_us: samples.latencies_us,
        errors: samples.errors,
        first_error: samples.first_error,
        usage: cpu::usage(watched, &before, &after),
    })
}

/// Sends messages one after the other on one connection until the window
/// closes; records those answered inside it. A broken connection is
/// reopened once per failure, so a target that drops connections shows up
/// as errors rather than ending the run.
async fn send_loop(
    mut connection: Connection,
    endpoint: Endpoint,
    authorization: HeaderValue,
    prefix: String,
    window: Window,
) -> Samples {
    fn record_error(samples: &mut Samples, kind: String, detail: String) {
        *samples.errors.entry(kind).or_default() += 1;
        samples.first_error.get_or_insert(detail);
    }
    let mut samples = Samples::default();
    for n in 0u64.. {
        if Instant::now() >= window.until {
            break;
        }
        let body = message_send(n, &format!("{prefix}-{n}"), &format!("bench {n}"));
        let sent = Instant::now();
        let result = connection.post_json(body).await;
        let done = Instant::now();
        let counted = done >= window.from && done <= window.until;
        match result {
            Ok(reply) if reply.status.is_success() && has_result(&reply.body) => {
                if counted {
                    samples.record_ok(done - sent);
                }
            }
            Ok(reply) => {
                if counted {
                    let detail = format!("HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body));
                    record_error(&mut samples, format!("HTTP {}", reply.status.as_u16()), detail);
                }
            }
            Err(error) => {
                if counted {
                    record_error(&mut samples, "transport".to_owned(), format!("{error:#}"));
                }
                match Connection::open(&endpoint, Some(authorization.clone())).await {
                    Ok(reopened) => connection = reopened,
                    Err(error) => {
                        record_error(&mut samples, "connect".to_owned(), format!("{error:#}"));
                        break;
                    }
                }
            }
        }
    }
    samples
}

fn errors_text(m: &Measured) -> String {
    let errors: u64 = m.errors.values().sum();
    match &m.first_error {
        Some(first) => format!("{errors} errors {:?}, first: {first}", m.errors),
        None => "0 errors".to_owned(),
    }
}

fn describe(m: &Measured) -> String {
    format!(
        "round {} c={} {}: {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, \
         {} ok, {} (CPU: {})",
        m.round,
        m.concurrency,
        m.target,
        m.throughput(),
        m.p(0.5),
        m.p(0.9),
        m.p(0.99),
        m.p(0.999),
        m.p(1.0),
        m.ok(),
        errors_text(m),
        m.usage.describe()
    )
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn measurement_json(m: &Measured) -> serde_json::Value {
    json!({
        "part": "throughput",
        "round": m.round,
        "target": m.target,
        "concurrency": m.concurrency,
        "duration_secs": m.duration.as_secs(),
        "ok": m.ok(),
        "errors": m.errors.values().sum::<u64>(),
        "errors_by_kind": m.errors,
        "first_error": m.first_error,
        "throughput_per_sec": m.throughput().round(),
        "p50_ms": round3(m.p(0.5)),
        "p90_ms": round3(m.p(0.9)),
        "p99_ms": round3(m.p(0.99)),
        "p999_ms": round3(m.p(0.999)),
        "max_ms": round3(m.p(1.0)),
        "cpu_cores": m.usage.json(),
    })
}

/// One target at one concurrency over all rounds.
struct Pooled<'a> {
    rounds: Vec<&'a Measured>,
    latencies_us: Vec<u32>,
}

impl<'a> Pooled<'a> {
    fn new(measured: &'a [Measured], target: &str, concurrency: usize) -> Self {
        let mut rounds: Vec<&Measured> =
            measured.iter().filter(|m| m.target == target && m.concurrency == concurrency).collect();
        rounds.sort_by_key(|m| m.round);
        let mut latencies_us: Vec<u32> = rounds.iter().flat_map(|m| m.latencies_us.iter().copied()).collect();
        latencies_us.sort_unstable();
        Self { rounds, latencies_us }
    }

    fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    fn errors(&self) -> u64 {
        self.rounds.iter().map(|m| m.errors.values().sum::<u64>()).sum()
    }

    /// Mean throughput over the rounds.
    fn throughput(&self) -> f64 {
        let seconds: f64 = self.rounds.iter().map(|m| m.duration.as_secs_f64()).sum();
        self.ok() as f64 / seconds.max(1e-9)
    }

    fn p(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }

    /// CPU microseconds per answered request, per watched process set and
    /// for the client.
    fn cpu_us_per_request(&self, names: &[String]) -> Vec<f64> {
        names
            .iter()
            .map(|name| {
                let cpu_seconds: f64 = self
                    .rounds
                    .iter()
                    .map(|m| {
                        let cores = match name.as_str() {
                            "client" => m.usage.client,
                            _ => m.usage.watched.iter().find(|(n, _)| n == name).map_or(0.0, |(_, c)| *c),
                        };
                        cores * m.usage.seconds
                    })
                    .sum();
                cpu_seconds * 1e6 / self.ok().max(1) as f64
            })
            .collect()
    }
}

/// `a–b` of per-round figures, or one figure when they agree to the shown precision.
fn spread(values: &[f64], format: impl Fn(f64) -> String) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (low, high) = (format(min), format(max));
    if low == high { low } else { format!("{low} – {high}") }
}

fn summarize(
    measured: &[Measured],
    targets: &[&str],
    concurrency: &[usize],
    watched: &[Watched],
    mut results_file: Option<&mut fs::File>,
) -> anyhow::Result<()> {
    let mut cpu_names: Vec<String> = watched.iter().map(|w| w.name.clone()).collect();
    cpu_names.push("client".to_owned());
    println!();
    println!(
        "== summary: pooled over rounds; \"vs {0}\" and \"added p50\" compare with {0} in the same round (range over rounds)",
        targets[0]
    );
    println!(
        "| in flight | target | req/s | per round | vs {} | p50 ms | p90 ms | p99 ms | added p50 ms | errors | CPU µs/request ({}) |",
        targets[0],
        cpu_names.join(" / ")
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for &c in concurrency {
        let baseline = Pooled::new(measured, targets[0], c);
        for &target in targets {
            let pooled = Pooled::new(measured, target, c);
            let per_round: Vec<f64> = pooled.rounds.iter().map(|m| m.throughput()).collect();
            // Round by round against the baseline of the same round.
            let pairs: Vec<(&Measured, &Measured)> = pooled
                .rounds
                .iter()
                .filter_map(|m| baseline.rounds.iter().find(|b| b.round == m.round).map(|b| (*m, *b)))
                .collect();
            let ratios: Vec<f64> = pairs.iter().map(|(m, b)| m.throughput() / b.throughput().max(1e-9)).collect();
            let added: Vec<f64> = pairs.iter().map(|(m, b)| m.p(0.5) - b.p(0.5)).collect();
            let ratio = pooled.throughput() / baseline.throughput().max(1e-9);
            let added_p50 = pooled.p(0.5) - baseline.p(0.5);
            let cpu = pooled.cpu_us_per_request(&cpu_names);
            println!(
                "| {c} | {target} | {:.0} | {} | {:.2}× ({}) | {:.3} | {:.3} | {:.3} | {:+.3} ({}) | {} | {} |",
                pooled.throughput(),
                spread(&per_round, |v| format!("{v:.0}")),
                ratio,
                spread(&ratios, |v| format!("{v:.2}")),
                pooled.p(0.5),
                pooled.p(0.9),
                pooled.p(0.99),
                added_p50,
                spread(&added, |v| format!("{v:+.3}")),
                pooled.errors(),
                cpu.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(" / "),
            );
            if let Some(file) = results_file.as_mut() {
                let line = json!({
                    "part": "throughput-summary",
                    "target": target,
                    "concurrency": c,
                    "rounds": pooled.rounds.len(),
                    "ok": pooled.ok(),
                    "errors": pooled.errors(),
                    "throughput_per_sec": pooled.throughput().round(),
                    "throughput_per_round": per_round.iter().map(|v| v.round()).collect::<Vec<_>>(),
                    "ratio_vs_baseline": round3(ratio),
                    "ratio_vs_baseline_per_round": ratios.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
                    "p50_ms": round3(pooled.p(0.5)),
                    "p90_ms": round3(pooled.p(0.9)),
                    "p99_ms": round3(pooled.p(0.99)),
                    "added_p50_ms": round3(added_p50),
                    "added_p50_ms_per_round": added.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
                    "cpu_us_per_request": cpu_names.iter().zip(&cpu).map(|(n, v)| (n.clone(), json!(v.round())))
                        .collect::<serde_json::Map<_, _>>(),
                });
                writeln!(file, "{line}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(round: usize, target: &str, ok: u32, p50_us: u32) -> Measured {
        Measured {
            round,
            target: target.to_owned(),
            concurrency: 1,
            duration: Duration::from_secs(1),
            latencies_us: vec![p50_us; ok as usize],
            errors: BTreeMap::new(),
            first_error: None,
            usage: Usage { seconds: 1.0, watched: vec![("gateway".to_owned(), 0.5)], client: 0.25, rest: 0.0 },
        }
    }

    #[test]
    fn pooling_adds_rounds_up_and_charges_cpu_per_request() {
        let all = [measured(1, "gateway", 100, 200), measured(2, "gateway", 300, 400), measured(1, "direct", 10, 1)];
        let pooled = Pooled::new(&all, "gateway", 1);
        assert_eq!(pooled.ok(), 400);
        assert_eq!(pooled.throughput(), 200.0);
        assert_eq!(pooled.p(0.5), 0.4);
        // 0.5 core for 2 s over 400 requests.
        let cpu = pooled.cpu_us_per_request(&["gateway".to_owned(), "client".to_owned(), "nginx".to_owned()]);
        assert_eq!(cpu, vec![2500.0, 1250.0, 0.0]);
    }

    #[test]
    fn spreads_collapse_when_rounds_agree() {
        assert_eq!(spread(&[0.81, 0.79], |v| format!("{v:.2}")), "0.79 – 0.81");
        assert_eq!(spread(&[0.801, 0.799], |v| format!("{v:.2}")), "0.80");
    }
}
