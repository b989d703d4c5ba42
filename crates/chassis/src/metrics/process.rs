//! The process metrics every Prometheus client library exports (CPU,
//! memory, file descriptors, threads, start time), read from /proc by the
//! `procfs` crate when Prometheus scrapes.

use procfs::process::{LimitValue, Process};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Not on Linux, or /proc unreadable (a locked-down sandbox): the
        // process metrics are left out rather than failing the scrape.
        let Ok(process) = Process::myself() else { return Ok(()) };
        let Ok(stat) = process.stat() else { return Ok(()) };
        let ticks = procfs::ticks_per_second() as f64;
        let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            (stat.rss * procfs::page_size()) as f64,
        )?;
        gauge("process_virtual_memory_bytes", "Virtual memory size in bytes", stat.vsize as f64)?;
        gauge("process_threads", "Number of OS threads in the process", stat.num_threads as f64)?;
        if let Ok(boot) = procfs::boot_time_secs() {
            let started = boot as f64 + stat.starttime as f64 / ticks;
            gauge("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds", started)?;
        }
        if let Ok(open) = process.fd_count() {
            gauge("process_open_fds", "Number of open file descriptors", open as f64)?;
        }
        if let Ok(limits) = process.limits()
            && let LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            gauge("process_max_fds", "Maximum number of open file descriptors", max as f64)?;
        }
        Ok(())
    }
}
