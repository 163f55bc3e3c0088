//! The metrics every Prometheus exporter ships about itself: the standard
//! `process_*` family (read from `/proc/self` at each scrape) and
//! `keysync_build_info`.
//!
//! Owns reading `/proc/self/stat`, `/proc/self/statm` and `/proc/self/fd`
//! (and `/proc/stat`'s boot time, for the start time; where it is hidden,
//! the time the collector was made stands in).
//! A value that cannot be read (another OS, a `/proc` hidden by the
//! sandbox) is left out of the scrape, never reported as 0.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// What one scrape reads of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub resident_memory_bytes: Option<f64>,
    pub virtual_memory_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub cpu_seconds: Option<f64>,
}

/// Clock ticks per second: 100 on every Linux keysync targets (`USER_HZ`
/// is fixed by the kernel ABI, whatever `CONFIG_HZ` is).
const TICKS: f64 = 100.0;

/// Reads the process's sample now.
pub fn sample() -> Sample {
    let page = page_size();
    let statm = std::fs::read_to_string("/proc/self/statm").ok();
    let mut fields = statm.as_deref().unwrap_or("").split_whitespace();
    let pages = |f: Option<&str>| f.and_then(|v| v.parse::<f64>().ok()).map(|p| p * page);
    let virtual_memory_bytes = pages(fields.next());
    let resident_memory_bytes = pages(fields.next());
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let (start_time_seconds, cpu_seconds) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .map_or((None, None), |s| stat_times(&s));
    Sample {
        resident_memory_bytes,
        virtual_memory_bytes,
        open_fds,
        start_time_seconds,
        cpu_seconds,
    }
}

/// (start time since the epoch, CPU seconds) from `/proc/self/stat`.
fn stat_times(stat: &str) -> (Option<f64>, Option<f64>) {
    // The command name (field 2) may hold spaces and parentheses: the
    // fields that follow start after its last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (None, None);
    };
    // rest[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu = num(14).zip(num(15)).map(|(u, s)| (u + s) / TICKS);
    let start = num(22).zip(boot_time()).map(|(t, boot)| boot + t / TICKS);
    (start, cpu)
}

/// The boot time, seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn page_size() -> f64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: sysconf reads a constant of the running system.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            return n as f64;
        }
    }
    4096.0
}

/// The `process_*` metrics, read at each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    /// When the collector was made (at start): the start time where
    /// `/proc/stat` is hidden (systemd's `ProcSubset=pid`).
    made: f64,
}

impl ProcessCollector {
    pub fn new() -> Self {
        let made = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        ProcessCollector { made }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut s = sample();
        s.start_time_seconds = s.start_time_seconds.or(Some(self.made));
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                s.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)?;
            }
        }
        if let Some(v) = s.cpu_seconds {
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(v).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // Field 2 with spaces and a ')' inside; utime 250, stime 50 ticks.
        let mut fields = vec!["S".to_string()];
        fields.extend((4..=22).map(|i| match i {
            14 => "250".to_string(),
            15 => "50".to_string(),
            22 => "1000".to_string(),
            _ => "0".to_string(),
        }));
        let stat = format!("42 (key sync) x) {}", fields.join(" "));
        let (start, cpu) = stat_times(&stat);
        assert_eq!(cpu, Some(3.0));
        if let Some(boot) = boot_time() {
            assert_eq!(start, Some(boot + 10.0));
        }
    }

    #[test]
    fn this_process_reads_itself() {
        let s = sample();
        if std::path::Path::new("/proc/self/statm").exists() {
            assert!(s.resident_memory_bytes.is_some_and(|v| v > 0.0));
            assert!(s.open_fds.is_some_and(|v| v >= 3.0));
            assert!(s.cpu_seconds.is_some());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            assert!(s
                .start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0 * 365.0));
        }
    }
}
