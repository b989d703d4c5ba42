//! CPU used by the processes under test, the client and the rest of the
//! machine over a measured window: with everything on two shared cores, a
//! throughput figure means little without knowing who used them.

use std::{str::FromStr, time::Instant};

use anyhow::{Context, ensure};
use serde_json::{Map, Value, json};

use crate::report::{cpu_time_of, machine_busy_time, process_cpu_time};

/// A named set of processes, e.g. nginx's workers.
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pids: Vec<u32>,
}

impl FromStr for Watched {
    type Err = anyhow::Error;

    /// `name=pid[,pid…]`.
    fn from_str(raw: &str) -> anyhow::Result<Self> {
        let (name, pids) = raw.split_once('=').context("expected name=pid[,pid...]")?;
        let pids = pids
            .split(',')
            .map(|pid| pid.trim().parse::<u32>().with_context(|| format!("{pid:?} is not a process id")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(!name.is_empty() && !pids.is_empty(), "expected name=pid[,pid...]");
        Ok(Self { name: name.to_owned(), pids })
    }
}

/// CPU counters at one moment.
pub struct Snapshot {
    at: Instant,
    /// Seconds of CPU per watched set, in the order given.
    watched: Vec<f64>,
    client: f64,
    machine: f64,
}

pub fn snapshot(watched: &[Watched]) -> Snapshot {
    let seconds = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    Snapshot {
        at: Instant::now(),
        watched: watched.iter().map(|w| w.pids.iter().map(|&pid| seconds(cpu_time_of(pid))).sum()).collect(),
        client: seconds(process_cpu_time()),
        machine: seconds(machine_busy_time()),
    }
}

/// Average cores used between two snapshots.
#[derive(Clone, Debug)]
pub struct Usage {
    pub seconds: f64,
    /// Per watched set, in the order given.
    pub watched: Vec<(String, f64)>,
    pub client: f64,
    /// Everything else: the kernel's own work, other jobs.
    pub rest: f64,
}

pub fn usage(watched: &[Watched], before: &Snapshot, after: &Snapshot) -> Usage {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let per_set: Vec<f64> = before.watched.iter().zip(&after.watched).map(|(b, a)| a - b).collect();
    let client = after.client - before.client;
    let rest = (after.machine - before.machine) - client - per_set.iter().sum::<f64>();
    Usage {
        seconds,
        watched: watched.iter().zip(per_set).map(|(w, cpu)| (w.name.clone(), cpu / seconds)).collect(),
        client: client / seconds,
        rest: (rest / seconds).max(0.0),
    }
}

impl Usage {
    /// `gateway 0.81, agent 0.40, client 0.55, rest 0.02 cores`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.watched.iter().map(|(name, cores)| format!("{name} {cores:.2}")).collect();
        parts.push(format!("client {:.2}", self.client));
        parts.push(format!("rest {:.2}", self.rest));
        format!("{} cores", parts.join(", "))
    }

    pub fn json(&self) -> Value {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let mut cores = Map::new();
        for (name, used) in &self.watched {
            cores.insert(name.clone(), json!(round(*used)));
        }
        cores.insert("client".to_owned(), json!(round(self.client)));
        cores.insert("rest".to_owned(), json!(round(self.rest)));
        Value::Object(cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_sets_parse_from_name_and_pids() {
        let w: Watched = "nginx=10,11".parse().unwrap();
        assert_eq!((w.name.as_str(), w.pids.as_slice()), ("nginx", [10, 11].as_slice()));
        assert!("nginx".parse::<Watched>().is_err());
        assert!("nginx=".parse::<Watched>().is_err());
        assert!("=12".parse::<Watched>().is_err());
        assert!("nginx=x".parse::<Watched>().is_err());
    }

    #[test]
    fn usage_counts_this_process_as_the_client() {
        let me = Watched { name: "me".to_owned(), pids: vec![std::process::id()] };
        let before = snapshot(std::slice::from_ref(&me));
        // Spin until 200 ms of CPU are used, however busy the machine is.
        let start = process_cpu_time().unwrap();
        let mut x = 0u64;
        while process_cpu_time().unwrap() - start < std::time::Duration::from_millis(200) {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        let after = snapshot(std::slice::from_ref(&me));
        let used = usage(&[me], &before, &after);
        assert!(x > 0);
        let cpu_seconds = used.watched[0].1 * used.seconds;
        assert!(cpu_seconds >= 0.19, "{used:?}");
        assert!((used.watched[0].1 - used.client).abs() * used.seconds < 0.05, "{used:?}");
    }
}
