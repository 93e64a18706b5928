//! What the figures were measured on (CPU model, cores, memory, kernel) and what a process used (CPU time,
//! resident memory), both read from `/proc`. This module reads files only; it starts and stops nothing.

use std::fs;

use serde::Serialize;

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// The CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Cores this process may run on.
    pub cores: usize,
    /// Total memory in bytes, from `/proc/meminfo`.
    pub memory_bytes: u64,
    /// The kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine's description; a field that cannot be read says `unknown` (or zero).
    pub fn detect() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                (name.trim() == "model name").then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = status_kib(&meminfo, "MemTotal").unwrap_or(0) * 1024;
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        Machine { cpu_model, cores, memory_bytes, kernel }
    }

    /// One line for the printed report.
    pub fn describe(&self) -> String {
        format!(
            "{} | {} cores | {:.1} GiB | Linux {}",
            self.cpu_model,
            self.cores,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.kernel
        )
    }
}

/// What a process has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcessUsage {
    /// User plus system CPU time, in seconds (resolution: one clock tick, usually 10 ms).
    pub cpu_seconds: f64,
    /// Resident memory now, in bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// The most resident memory so far, in bytes (`VmHWM`).
    pub peak_rss_bytes: u64,
}

/// Reads the usage of process `pid` from `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if the
/// process is gone or the files do not parse.
pub fn process_usage(pid: u32) -> Option<ProcessUsage> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ticks = cpu_ticks(&stat)?;
    Some(ProcessUsage {
        cpu_seconds: ticks as f64 / clock_ticks_per_second(),
        rss_bytes: status_kib(&status, "VmRSS")? * 1024,
        peak_rss_bytes: status_kib(&status, "VmHWM")? * 1024,
    })
}

/// The CPU time of this process itself.
pub fn own_usage() -> Option<ProcessUsage> {
    process_usage(std::process::id())
}

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status` or `/proc/meminfo`, in KiB.
fn status_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key != name {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "1234 (we ird) name)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_lines_parse() {
        let status = "Name:\tbroker\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let usage = own_usage().expect("own /proc entry");
        assert!(usage.rss_bytes > 0);
        assert!(usage.peak_rss_bytes >= usage.rss_bytes);
        let machine = Machine::detect();
        assert!(machine.cores >= 1);
        assert!(machine.memory_bytes > 0);
    }
}
