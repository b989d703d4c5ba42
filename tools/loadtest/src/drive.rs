//! Drives Heartbeat RPCs from many tasks over a few HTTP/2 connections and
//! measures what comes back inside the measured window.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use agentmesh_proto::registry::v1::{self as pb, registry_service_client::RegistryServiceClient};
use anyhow::{Context, ensure};
use tokio::time::sleep_until;
use tonic::{
    Request,
    transport::{Channel, Endpoint},
};

use crate::{
    HeartbeatArgs,
    fleet::{self, Agent},
    report::{self, RunShape, Samples},
};

/// When a run starts, when measuring starts, when it ends, and at what pace
/// each task sends.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
    /// Open loop: the interval between one task's scheduled sends.
    period: Option<Duration>,
}

pub async fn run(args: HeartbeatArgs) -> anyhow::Result<()> {
    ensure!(args.concurrency > 0, "--concurrency must be positive");
    ensure!(args.tasks_per_connection > 0, "--tasks-per-connection must be positive");
    ensure!(args.workspaces > 0, "--workspaces must be positive");
    ensure!(args.duration_secs > 0, "--duration-secs must be positive");
    ensure!(args.rate != Some(0), "--rate must be positive");

    let endpoint = Endpoint::from_shared(args.target.clone()).context("invalid --target")?;
    let setup_channel = endpoint.connect().await.with_context(|| format!("cannot connect to {}", args.target))?;
    let agents = Arc::new(fleet::prepare(&args, setup_channel).await?);
    if args.setup_only {
        return Ok(());
    }

    let connections = args.concurrency.div_ceil(args.tasks_per_connection);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        // Each connect() opens its own HTTP/2 connection.
        channels.push(endpoint.connect().await?);
    }

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let duration = Duration::from_secs(args.duration_secs);
    let schedule = Schedule {
        start,
        measure_from,
        measure_until: measure_from + duration,
        period: args.rate.map(|rate| Duration::from_secs_f64(args.concurrency as f64 / rate as f64)),
    };
    eprintln!(
        "driving {} tasks over {connections} connections: {} s warm-up, {} s measured",
        args.concurrency, args.warmup_secs, args.duration_secs
    );
    let workers: Vec<_> = (0..args.concurrency)
        .map(|task| {
            let client = RegistryServiceClient::new(channels[task / args.tasks_per_connection].clone());
            let mine = assigned(task, args.concurrency, agents.len());
            tokio::spawn(heartbeat_loop(client, agents.clone(), mine, task, args.concurrency, schedule))
        })
        .collect();

    sleep_until(schedule.measure_from.into()).await;
    let cpu_before = report::process_cpu_time();
    sleep_until(schedule.measure_until.into()).await;
    let cpu_after = report::process_cpu_time();

    let mut samples = Samples::default();
    for worker in workers {
        samples.merge(worker.await?);
    }
    let client_cores = cpu_before.zip(cpu_after).map(|(b, a)| (a - b).as_secs_f64() / duration.as_secs_f64());
    let shape = RunShape {
        label: &args.label,
        workspaces: args.workspaces,
        concurrency: args.concurrency,
        connections,
        duration,
        rate: args.rate,
        client_cores,
    };
    report::print(&shape, samples);
    Ok(())
}

/// The agents task `task` of `tasks` heartbeats for, in turn: every
/// `tasks`-th one, so no two tasks send for the same workspace while there
/// are at least as many workspaces as tasks.
fn assigned(task: usize, tasks: usize, agents: usize) -> Vec<usize> {
    if agents <= task {
        return vec![task % agents];
    }
    (task..agents).step_by(tasks).collect()
}

async fn heartbeat_loop(
    mut client: RegistryServiceClient<Channel>,
    agents: Arc<Vec<Agent>>,
    mine: Vec<usize>,
    task: usize,
    tasks: usize,
    schedule: Schedule,
) -> Samples {
    let mut samples = Samples::default();
    // Spread the tasks' first sends over one period so they do not arrive in bursts.
    let mut next_send = schedule.period.map(|p| schedule.start + p.mul_f64(task as f64 / tasks as f64));
    for sent in 0u64.. {
        let origin = match (&mut next_send, schedule.period) {
            (Some(next), Some(period)) => {
                let scheduled = *next;
                *next += period;
                if Instant::now() < scheduled {
                    sleep_until(scheduled.into()).await;
                    // On time: the timer's own lateness is the client's, not the server's.
                    Instant::now()
                } else {
                    // Late because earlier calls were slow: count from when
                    // this one should have gone out (no coordinated omission).
                    scheduled
                }
            }
            _ => Instant::now(),
        };
        if origin >= schedule.measure_until {
            break;
        }
        if Instant::now() >= schedule.measure_until {
            // Behind schedule at the end: what was due and never sent counts
            // against the rate achieved, not as latency.
            if let Some(period) = schedule.period {
                let due = schedule.measure_until.saturating_duration_since(origin.max(schedule.measure_from));
                samples.unsent += (due.as_secs_f64() / period.as_secs_f64()).ceil() as u64;
            }
            break;
        }
        let agent = &agents[mine[sent as usize % mine.len()]];
        let mut request = Request::new(pb::HeartbeatRequest {
            workspace_id: agent.workspace_id.clone(),
            error_rate: 0.0,
            active_tasks: (sent % 3) as u32,
            current_task: if sent % 3 == 0 { String::new() } else { "answering a2a message".to_owned() },
            uptime_seconds: schedule.start.elapsed().as_secs() + 60,
            ..Default::default()
        });
        if let Some(authorization) = &agent.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        let result = client.heartbeat(request).await;
        let done = Instant::now();
        if done < schedule.measure_from || done > schedule.measure_until {
            continue;
        }
        match result {
            Ok(_) => samples.record_ok(done - origin),
            Err(status) => samples.record_error(&status),
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_share_out_the_workspaces() {
        assert_eq!(assigned(0, 4, 10), vec![0, 4, 8]);
        assert_eq!(assigned(3, 4, 10), vec![3, 7]);
        assert_eq!(assigned(5, 8, 3), vec![2]);
    }
}
