//! How fast the gateway drains a backlog. Each round first sends the
//! messages straight to the agent, one after the other on one connection:
//! the agent's own limit for a workspace that takes one message at a time.
//! Then it switches the agent busy, queues as many messages through the
//! gateway (each answered at once with a queued task), switches the agent
//! back, reports room with one heartbeat, and times the agent receiving
//! them all, delivered by the gateway in order, one at a time.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::{HeaderValue, Method};
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

use super::{
    cpu::{self, Usage, Watched},
    has_result,
    http::{Connection, Endpoint, bearer},
    mesh::{Control, Workspace, read_token},
    message_send, open_results, run_tag,
};
use crate::{GatewayDrainArgs, report::quantile_ms};

/// The echo agent's counters (`GET /admin/stats`).
#[derive(Debug, Clone, Copy)]
struct AgentStats {
    received: u64,
    duplicates: u64,
}

/// The echo agent's admin endpoints, on a connection of their own.
struct AgentAdmin {
    connection: Connection,
}

impl AgentAdmin {
    async fn connect(agent: &Endpoint) -> anyhow::Result<Self> {
        Ok(Self { connection: Connection::open(agent, None).await? })
    }

    async fn call(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Bytes> {
        let reply = self.connection.exchange(method, path, body).await?;
        ensure!(reply.status.is_success(), "{path}: HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body));
        Ok(reply.body)
    }

    async fn set_busy(&mut self, busy: bool) -> anyhow::Result<()> {
        self.call(Method::POST, "/admin/busy", Bytes::from(json!({ "busy": busy }).to_string())).await?;
        Ok(())
    }

    async fn stats(&mut self) -> anyhow::Result<AgentStats> {
        let body = self.call(Method::GET, "/admin/stats", Bytes::new()).await?;
        let stats: Value = serde_json::from_slice(&body).context("/admin/stats is not JSON")?;
        match (stats["received"].as_u64(), stats["duplicates"].as_u64()) {
            (Some(received), Some(duplicates)) => Ok(AgentStats { received, duplicates }),
            _ => bail!("/admin/stats is not the echo agent's counters: {stats}"),
        }
    }

    /// The texts of every message the agent took in, in arrival order.
    async fn received(&mut self) -> anyhow::Result<Vec<String>> {
        let body = self.call(Method::GET, "/admin/received", Bytes::new()).await?;
        serde_json::from_slice(&body).context("/admin/received is not a list of texts")
    }
}

/// The messages sent straight to the agent, one at a time.
struct Direct {
    elapsed: Duration,
    latencies_us: Vec<u32>,
    usage: Usage,
}

/// The backlog being queued through the gateway.
struct Fill {
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// Median reply time of the first and of the last tenth of the
    /// messages, by the order they were sent: whether queueing slows down
    /// as the queue grows.
    first_tenth_p50_ms: f64,
    last_tenth_p50_ms: f64,
    max_depth: u64,
    queued: u64,
    in_flight: u64,
}

/// The backlog being delivered.
struct Drained {
    /// From switching the agent back until it had received every message.
    elapsed: Duration,
    /// From switching the agent back until its first message.
    first_delivery: Duration,
    /// The round trip of the heartbeat that reports room.
    heartbeat: Duration,
    /// From switching the agent back until the gateway reported nothing queued or in flight.
    queue_empty: Duration,
    usage: Usage,
}

struct Round {
    round: usize,
    direct: Direct,
    fill: Fill,
    drained: Drained,
}

pub async fn run(args: GatewayDrainArgs) -> anyhow::Result<()> {
    ensure!(args.messages > 0, "--messages must be positive");
    ensure!(args.rounds > 0, "--rounds must be positive");
    ensure!(args.fill_concurrency > 0, "--fill-concurrency must be positive");
    ensure!(args.poll_ms > 0, "--poll-ms must be positive");
    let mesh = &args.mesh;
    let operator_token = read_token(&mesh.token_file)?;
    let tag = run_tag();
    let workspace = Workspace::online(
        &mesh.registry,
        &operator_token,
        &format!("bench-drain-{tag}"),
        &mesh.agent,
        args.max_concurrent_tasks,
    )
    .await?;
    let _online = workspace.keep_online(Duration::from_secs(mesh.heartbeat_secs.max(1)));
    let control = Control::connect(&args.gateway_grpc, &operator_token).await?;
    let agent = Endpoint::parse(&mesh.agent)?;
    let gateway = Endpoint::parse(&format!("{}/a2a/{}", mesh.gateway.trim_end_matches('/'), workspace.id))?;
    let authorization = bearer(&operator_token)?;
    let mut admin = AgentAdmin::connect(&agent).await?;
    let empty = control.queue_stats(&workspace.id).await?;
    ensure!(empty.queued == 0 && empty.in_flight == 0, "the new workspace already has a queue: {empty:?}");
    eprintln!("workspace {} online (max_concurrent_tasks {})", workspace.id, args.max_concurrent_tasks);

    let mut results_file = mesh.results_file.as_deref().map(open_results).transpose()?;
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        let prefix = format!("{tag}-r{round}");
        let direct = send_direct(&agent, args.messages, &prefix, &mesh.processes).await?;
        println!(
            "round {round} direct: {} messages one at a time in {:.3} s ({:.0}/s), p50 {:.3} ms, p99 {:.3} ms (CPU: {})",
            args.messages,
            direct.elapsed.as_secs_f64(),
            args.messages as f64 / direct.elapsed.as_secs_f64(),
            quantile_ms(&direct.latencies_us, 0.5),
            quantile_ms(&direct.latencies_us, 0.99),
            direct.usage.describe()
        );

        admin.set_busy(true).await?;
        let before = admin.stats().await?;
        let texts: Arc<Vec<String>> = Arc::new((0..args.messages).map(|i| format!("queued {prefix} {i}")).collect());
        let fill =
            fill(&gateway, &authorization, &texts, &prefix, args.fill_concurrency, &control, &workspace.id).await?;
        println!(
            "round {round} fill: {} messages queued through the gateway in {:.3} s ({:.0}/s), queued reply p50 {:.3} ms \
             (first tenth {:.3}, last tenth {:.3}), p99 {:.3} ms, deepest {}; GetQueueStats: {} queued, {} in flight",
            args.messages,
            fill.elapsed.as_secs_f64(),
            args.messages as f64 / fill.elapsed.as_secs_f64(),
            quantile_ms(&fill.latencies_us, 0.5),
            fill.first_tenth_p50_ms,
            fill.last_tenth_p50_ms,
            quantile_ms(&fill.latencies_us, 0.99),
            fill.max_depth,
            fill.queued,
            fill.in_flight,
        );

        let drained =
            drain(&mut admin, &workspace, &control, before, args.messages as u64, &args, &mesh.processes).await?;
        check_delivery(&mut admin, before, &texts, args.fill_concurrency == 1).await?;
        println!(
            "round {round} drain: {} messages delivered in {:.3} s ({:.0}/s), {:.2}× the direct time; first delivery \
             after {:.1} ms (room heartbeat {:.1} ms), queue empty per the gateway after {:.3} s; 0 duplicates \
             (CPU: {})",
            args.messages,
            drained.elapsed.as_secs_f64(),
            args.messages as f64 / drained.elapsed.as_secs_f64(),
            drained.elapsed.as_secs_f64() / direct.elapsed.as_secs_f64(),
            drained.first_delivery.as_secs_f64() * 1e3,
            drained.heartbeat.as_secs_f64() * 1e3,
            drained.queue_empty.as_secs_f64(),
            drained.usage.describe()
        );
        let result = Round { round, direct, fill, drained };
        if let Some(file) = &mut results_file {
            writeln!(file, "{}", round_json(&result, args.messages))?;
        }
        rounds.push(result);
    }
    summarize(&rounds, args.messages, &mesh.processes);
    Ok(())
}

async fn send_direct(agent: &Endpoint, messages: usize, prefix: &str, watched: &[Watched]) -> anyhow::Result<Direct> {
    // As the gateway's deliveries, without a credential.
    let mut connection = Connection::open(agent, None).await?;
    let mut latencies_us = Vec::with_capacity(messages);
    let before = cpu::snapshot(watched);
    let start = Instant::now();
    for i in 0..messages {
        let body = message_send(i as u64, &format!("{prefix}-d{i}"), &format!("direct {prefix} {i}"));
        let sent = Instant::now();
        let reply = connection.post_json(body).await?;
        latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        ensure!(
            reply.status.is_success() && has_result(&reply.body),
            "direct message {i}: HTTP {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    let elapsed = start.elapsed();
    let usage = cpu::usage(watched, &before, &cpu::snapshot(watched));
    latencies_us.sort_unstable();
    Ok(Direct { elapsed, latencies_us, usage })
}

/// Queues every text through the gateway while the agent is busy; each
/// reply must be a task the gateway queued, not an error or a duplicate.
async fn fill(
    gateway: &Endpoint,
    authorization: &HeaderValue,
    texts: &Arc<Vec<String>>,
    prefix: &str,
    concurrency: usize,
    control: &Control,
    workspace_id: &str,
) -> anyhow::Result<Fill> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut connection = Connection::open(gateway, Some(authorization.clone())).await?;
        let (next, texts, prefix) = (next.clone(), texts.clone(), prefix.to_owned());
        workers.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let mut max_depth = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(text) = texts.get(i) else { break };
                let sent = Instant::now();
                let reply = connection.post_json(message_send(i as u64, &format!("{prefix}-q{i}"), text)).await?;
                latencies_us.push((i, u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)));
                ensure!(
                    reply.status.is_success(),
                    "message {i}: HTTP {}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                );
                let depth = queued_depth(&reply.body).with_context(|| format!("message {i} was not queued"))?;
                max_depth = max_depth.max(depth);
            }
            Ok::<_, anyhow::Error>((latencies_us, max_depth))
        }));
    }
    let mut by_index = vec![0u32; texts.len()];
    let mut max_depth = 0;
    for worker in workers {
        let (latencies, depth) = worker.await??;
        for (i, latency) in latencies {
            by_index[i] = latency;
        }
        max_depth = max_depth.max(depth);
    }
    let elapsed = start.elapsed();
    let tenth = (texts.len() / 10).max(1);
    let tenth_p50 = |slice: &[u32]| {
        let mut sorted = slice.to_vec();
        sorted.sort_unstable();
        quantile_ms(&sorted, 0.5)
    };
    let first_tenth_p50_ms = tenth_p50(&by_index[..tenth]);
    let last_tenth_p50_ms = tenth_p50(&by_index[texts.len() - tenth..]);
    let mut latencies_us = by_index;
    latencies_us.sort_unstable();
    let stats = control.queue_stats(workspace_id).await?;
    ensure!(
        stats.queued + stats.in_flight == texts.len() as u64,
        "the gateway holds {} queued and {} in-flight items, {} sent",
        stats.queued,
        stats.in_flight,
        texts.len()
    );
    Ok(Fill {
        elapsed,
        latencies_us,
        first_tenth_p50_ms,
        last_tenth_p50_ms,
        max_depth,
        queued: stats.queued,
        in_flight: stats.in_flight,
    })
}

/// The queue depth of a reply that is a task the gateway queued
/// (`result.status.state` "submitted", `result.metadata.agentmesh.queued`).
fn queued_depth(body: &[u8]) -> anyhow::Result<u64> {
    let reply: Value = serde_json::from_slice(body).context("the reply is not JSON")?;
    let result = &reply["result"];
    let state = result["status"]["state"].as_str().unwrap_or_default();
    let queued = &result["metadata"]["agentmesh"]["queued"];
    if state != "submitted" || !queued.is_object() {
        bail!("not a queued task: {reply}");
    }
    if queued["duplicate"].as_bool() == Some(true) {
        bail!("queued as a duplicate: {reply}");
    }
    // uint64 travels as a string in proto3 JSON.
    let depth = match &queued["depth"] {
        Value::String(s) => s.parse().ok(),
        other => other.as_u64(),
    };
    depth.with_context(|| format!("no queue depth in {reply}"))
}

/// Lets the agent take messages again, reports room, and waits until the
/// agent has received `messages` more and the gateway holds none.
async fn drain(
    admin: &mut AgentAdmin,
    workspace: &Workspace,
    control: &Control,
    before: AgentStats,
    messages: u64,
    args: &GatewayDrainArgs,
    watched: &[Watched],
) -> anyhow::Result<Drained> {
    let cpu_before = cpu::snapshot(watched);
    let start = Instant::now();
    admin.set_busy(false).await?;
    let heartbeat_sent = Instant::now();
    workspace.heartbeat(0).await?;
    let heartbeat = heartbeat_sent.elapsed();
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let mut poll = tokio::time::interval(Duration::from_millis(args.poll_ms));
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut first_delivery = None;
    // Nothing announces "the agent has them all": the agent's counter is
    // read every poll interval, which bounds the error of the figures.
    let elapsed = loop {
        poll.tick().await;
        let stats = admin.stats().await?;
        let now = Instant::now();
        if first_delivery.is_none() && stats.received > before.received {
            first_delivery = Some(now - start);
        }
        if stats.received - before.received >= messages {
            break now - start;
        }
        if now > deadline {
            let queue = control.queue_stats(&workspace.id).await?;
            bail!(
                "after {} s the agent has received {} of {messages} (gateway: {} queued, {} in flight, {} dead letters)",
                args.timeout_secs,
                stats.received - before.received,
                queue.queued,
                queue.in_flight,
                queue.dead_letters
            );
        }
    };
    let usage = cpu::usage(watched, &cpu_before, &cpu::snapshot(watched));
    let queue_empty = loop {
        let queue = control.queue_stats(&workspace.id).await?;
        if queue.queued == 0 && queue.in_flight == 0 {
            ensure!(queue.dead_letters == 0, "{} messages became dead letters", queue.dead_letters);
            break start.elapsed();
        }
        ensure!(Instant::now() < deadline, "the gateway still holds {queue:?}");
        poll.tick().await;
    };
    Ok(Drained { elapsed, first_delivery: first_delivery.unwrap_or(elapsed), heartbeat, queue_empty, usage })
}

/// The agent took in exactly the queued texts, each once, in the order they
/// were queued when one connection queued them.
async fn check_delivery(
    admin: &mut AgentAdmin,
    before: AgentStats,
    texts: &[String],
    in_order: bool,
) -> anyhow::Result<()> {
    let after = admin.stats().await?;
    ensure!(
        after.received - before.received == texts.len() as u64,
        "the agent received {} messages, {} were queued",
        after.received - before.received,
        texts.len()
    );
    ensure!(after.duplicates == before.duplicates, "{} duplicate deliveries", after.duplicates - before.duplicates);
    let received = admin.received().await?;
    let delivered = &received[received.len().saturating_sub(texts.len())..];
    if in_order {
        if let Some(i) = delivered.iter().zip(texts).position(|(got, sent)| got != sent) {
            bail!("delivery {i} was {:?}, {:?} was queued in that place", delivered[i], texts[i]);
        }
    } else {
        let mut got = delivered.to_vec();
        let mut sent = texts.to_vec();
        got.sort_unstable();
        sent.sort_unstable();
        ensure!(got == sent, "the agent received other messages than were queued");
    }
    Ok(())
}

fn cores_of(usage: &Usage, name: &str) -> f64 {
    usage.watched.iter().find(|(n, _)| n == name).map_or(0.0, |(_, c)| *c)
}

fn round_json(r: &Round, messages: usize) -> Value {
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({
        "part": "drain",
        "round": r.round,
        "messages": messages,
        "direct_secs": round3(r.direct.elapsed.as_secs_f64()),
        "direct_per_sec": (messages as f64 / r.direct.elapsed.as_secs_f64()).round(),
        "direct_p50_ms": round3(quantile_ms(&r.direct.latencies_us, 0.5)),
        "direct_p99_ms": round3(quantile_ms(&r.direct.latencies_us, 0.99)),
        "direct_cpu_cores": r.direct.usage.json(),
        "fill_secs": round3(r.fill.elapsed.as_secs_f64()),
        "fill_p50_ms": round3(quantile_ms(&r.fill.latencies_us, 0.5)),
        "fill_p99_ms": round3(quantile_ms(&r.fill.latencies_us, 0.99)),
        "fill_first_tenth_p50_ms": round3(r.fill.first_tenth_p50_ms),
        "fill_last_tenth_p50_ms": round3(r.fill.last_tenth_p50_ms),
        "fill_max_depth": r.fill.max_depth,
        "queued_before_drain": r.fill.queued,
        "in_flight_before_drain": r.fill.in_flight,
        "drain_secs": round3(r.drained.elapsed.as_secs_f64()),
        "drain_per_sec": (messages as f64 / r.drained.elapsed.as_secs_f64()).round(),
        "drain_vs_direct": round3(r.drained.elapsed.as_secs_f64() / r.direct.elapsed.as_secs_f64()),
        "first_delivery_ms": round3(r.drained.first_delivery.as_secs_f64() * 1e3),
        "room_heartbeat_ms": round3(r.drained.heartbeat.as_secs_f64() * 1e3),
        "queue_empty_secs": round3(r.drained.queue_empty.as_secs_f64()),
        "drain_cpu_cores": r.drained.usage.json(),
        "duplicates": 0,
    })
}

fn summarize(rounds: &[Round], messages: usize, watched: &[Watched]) {
    let n = messages as f64;
    println!();
    println!("== summary: {messages} messages per round; CPU µs per message while draining");
    let names: Vec<&str> = watched.iter().map(|w| w.name.as_str()).collect();
    println!(
        "| round | direct, one at a time | drain through the gateway | drain / direct | first delivery | \
         queue empty | queueing {messages} | CPU µs/message ({}) |",
        names.iter().copied().chain(["client"]).collect::<Vec<_>>().join(" / ")
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rounds {
        let direct = r.direct.elapsed.as_secs_f64();
        let drain = r.drained.elapsed.as_secs_f64();
        let usage = &r.drained.usage;
        let cpu: Vec<String> = names
            .iter()
            .map(|name| cores_of(usage, name))
            .chain([usage.client])
            .map(|cores| format!("{:.0}", cores * usage.seconds * 1e6 / n))
            .collect();
        println!(
            "| {} | {:.3} s ({:.0}/s) | {:.3} s ({:.0}/s) | {:.2}× | {:.0} ms | {:.3} s | {:.3} s ({:.0}/s) | {} |",
            r.round,
            direct,
            n / direct,
            drain,
            n / drain,
            drain / direct,
            r.drained.first_delivery.as_secs_f64() * 1e3,
            r.drained.queue_empty.as_secs_f64(),
            r.fill.elapsed.as_secs_f64(),
            n / r.fill.elapsed.as_secs_f64(),
            cpu.join(" / ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_replies_yield_their_depth_and_anything_else_is_refused() {
        let queued = |depth: Value, duplicate: bool| {
            json!({"jsonrpc": "2.0", "id": 1, "result": {"kind": "task", "id": "q", "status": {"state": "submitted"},
                "metadata": {"agentmesh": {"queued": {"depth": depth, "duplicate": duplicate}}}}})
            .to_string()
        };
        assert_eq!(queued_depth(queued(json!("42"), false).as_bytes()).unwrap(), 42);
        assert_eq!(queued_depth(queued(json!(7), false).as_bytes()).unwrap(), 7);
        assert!(queued_depth(queued(json!("1"), true).as_bytes()).is_err());
        let replied = json!({"jsonrpc": "2.0", "id": 1, "result": {"kind": "message", "parts": []}}).to_string();
        assert!(queued_depth(replied.as_bytes()).is_err());
        assert!(queued_depth(b"busy").is_err());
    }
}
