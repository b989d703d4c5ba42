//! Latency percentiles and the two report lines (human and JSON).

use std::{collections::BTreeMap, time::Duration};

/// What one worker saw inside the measured window.
#[derive(Default)]
pub struct Samples {
    /// Latencies of successful calls, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Failed calls by gRPC code.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Open loop: sends scheduled inside the window that never went out
    /// because the server fell behind.
    pub unsent: u64,
}

impl Samples {
    pub fn record_ok(&mut self, latency: Duration) {
        self.latencies_us.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn record_error(&mut self, status: &tonic::Status) {
        *self.errors.entry(format!("{:?}", status.code())).or_default() += 1;
        self.first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
    }

    pub fn merge(&mut self, other: Samples) {
        self.unsent += other.unsent;
        self.latencies_us.extend(other.latencies_us);
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// How the run was shaped.
pub struct RunShape<'a> {
    pub label: &'a str,
    pub workspaces: usize,
    pub concurrency: usize,
    pub connections: usize,
    pub duration: Duration,
    pub rate: Option<u64>,
    /// Client CPU used during the measured window, in cores.
    pub client_cores: Option<f64>,
}

/// The value at quantile `q` (nearest rank) of sorted microseconds, in ms.
pub fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

/// Prints one human line and one JSON line on stdout.
pub fn print(shape: &RunShape<'_>, mut samples: Samples) {
    samples.latencies_us.sort_unstable();
    let sorted = &samples.latencies_us;
    let ok = sorted.len() as u64;
    let errors: u64 = samples.errors.values().sum();
    let throughput = ok as f64 / shape.duration.as_secs_f64();
    let [p50, p90, p99, p999, max] = [0.5, 0.9, 0.99, 0.999, 1.0].map(|q| quantile_ms(sorted, q));
    let mode = match shape.rate {
        Some(rate) => format!("open loop at {rate}/s, {} scheduled but never sent", samples.unsent),
        None => "closed loop".to_owned(),
    };
    let cpu = shape.client_cores.map(|c| format!(", client CPU {:.2} cores", c)).unwrap_or_default();
    println!(
        "{label}: {throughput:.0} heartbeats/s, p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, \
         p99.9 {p999:.2} ms, max {max:.2} ms, {ok} ok, {errors} errors ({mode}, concurrency {c} over {conns} \
         connections, {n} workspaces, {d} s{cpu})",
        label = if shape.label.is_empty() { "heartbeats" } else { shape.label },
        c = shape.concurrency,
        conns = shape.connections,
        n = shape.workspaces,
        d = shape.duration.as_secs(),
    );
    if let Some(first) = &samples.first_error {
        println!("errors by code: {:?}; first: {first}", samples.errors);
    }
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let json = serde_json::json!({
        "label": shape.label,
        "mode": if shape.rate.is_some() { "open" } else { "closed" },
        "target_rate": shape.rate,
        "workspaces": shape.workspaces,
        "concurrency": shape.concurrency,
        "connections": shape.connections,
        "duration_secs": shape.duration.as_secs(),
        "ok": ok,
        "errors": errors,
        "errors_by_code": samples.errors,
        "unsent": samples.unsent,
        "throughput_per_sec": throughput.round(),
        "p50_ms": round(p50),
        "p90_ms": round(p90),
        "p99_ms": round(p99),
        "p999_ms": round(p999),
        "max_ms": round(max),
        "client_cpu_cores": shape.client_cores.map(|c| (c * 100.0).round() / 100.0),
    });
    println!("{json}");
}

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every
/// mainstream configuration.
const TICKS_PER_SECOND: u64 = 100;

/// CPU time this process has used so far (user + system), from
/// /proc/self/stat; None where that is unavailable.
pub fn process_cpu_time() -> Option<Duration> {
    cpu_time_from_stat("/proc/self/stat")
}

/// CPU time process `pid` has used so far, all its threads together; None
/// when it is gone or /proc is unavailable.
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    cpu_time_from_stat(&format!("/proc/{pid}/stat"))
}

fn cpu_time_from_stat(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND))
}

/// CPU time all cores of the machine have spent busy so far (user, nice,
/// system, irq, softirq, steal), from /proc/stat.
pub fn machine_busy_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    // Columns: user nice system idle iowait irq softirq steal …
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| fields.get(i).copied().unwrap_or(0)).sum::<u64>();
    Some(Duration::from_millis(busy * 1000 / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(quantile_ms(&sorted, 0.5), 50.0);
        assert_eq!(quantile_ms(&sorted, 0.99), 99.0);
        assert_eq!(quantile_ms(&sorted, 1.0), 100.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
        assert_eq!(quantile_ms(&[7000], 0.0), 7.0);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(process_cpu_time().is_some());
        assert!(cpu_time_of(std::process::id()).is_some());
        assert!(machine_busy_time().is_some());
        assert!(cpu_time_of(u32::MAX).is_none());
    }
}
