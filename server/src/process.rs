//! The process as Linux's `/proc/self` describes it: the one place that reads and parses it,
//! for the memory trim ([`crate::memory`]) and for the `process_*` lines of `/metrics`.
//!
//! Where there is no `/proc` (not Linux), every reader returns `None` and `/metrics` has no
//! `process_*` lines.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

/// Clock ticks per second in `/proc/<pid>/stat` times: `USER_HZ`, 100 on every Linux
/// architecture (the kernel converts its internal `HZ` to it for user space).
const USER_HZ: u64 = 100;

/// What the memory trim watches, read every second: resident bytes and CPU time used so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub resident: u64,
    pub cpu: Duration,
}

impl Usage {
    /// From `/proc/self/status` and `/proc/self/stat`.
    pub fn now() -> Option<Self> {
        let status = Status::parse(&read("/proc/self/status")?)?;
        let stat = Stat::parse(&read("/proc/self/stat")?)?;
        Some(Self {
            resident: status.resident,
            cpu: stat.cpu,
        })
    }
}

/// Everything `/metrics` reports about the process, under Prometheus' standard names.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub cpu: Duration,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    /// Entries of `/proc/self/fd`, the descriptor that lists them included (as Prometheus'
    /// own clients count).
    pub open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE`; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time: Option<f64>,
}

impl Stats {
    /// Reads `/proc/self` now (a scrape): a few small files and one directory listing.
    pub fn now() -> Option<Self> {
        let status = Status::parse(&read("/proc/self/status")?)?;
        let stat = Stat::parse(&read("/proc/self/stat")?)?;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        let max_fds = read("/proc/self/limits").and_then(|limits| max_open_files(&limits));
        Some(Self {
            cpu: stat.cpu,
            resident_bytes: status.resident,
            virtual_bytes: status.virtual_size,
            threads: status.threads,
            open_fds,
            max_fds,
            start_time: start_time(stat.start_ticks),
        })
    }

    /// The Prometheus text exposition of these values, appended to `out`.
    pub fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                // Writing to a String cannot fail.
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                );
            }
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            Some(self.cpu.as_secs_f64()),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            Some(self.resident_bytes as f64),
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            Some(self.virtual_bytes as f64),
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|n| n as f64),
        );
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|n| n as f64),
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time,
        );
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            Some(self.threads as f64),
        );
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The lines of `/proc/<pid>/status` used here (sizes there are in KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    resident: u64,
    virtual_size: u64,
    threads: u64,
}

impl Status {
    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Self {
            resident: field("VmRSS")? << 10,
            virtual_size: field("VmSize")? << 10,
            threads: field("Threads")?,
        })
    }
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// User plus system time (fields 14 and 15).
    cpu: Duration,
    /// When the process started, in ticks after boot (field 22).
    start_ticks: u64,
}

impl Stat {
    /// The command name (field 2) may hold spaces and parentheses, so fields are counted from
    /// the last `)`: the state (field 3) comes first after it.
    fn parse(stat: &str) -> Option<Self> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
        let ticks = field(14)? + field(15)?;
        Some(Self {
            cpu: Duration::from_millis(ticks * 1000 / USER_HZ),
            start_ticks: field(22)?,
        })
    }
}

/// The soft limit on open files from `/proc/<pid>/limits`; `None` when unlimited.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Boot time in seconds since the epoch, from `/proc/stat`'s `btime` line.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The process's start in seconds since the epoch (boot time plus the start's ticks after
/// boot); read once, as neither changes.
fn start_time(start_ticks: u64) -> Option<f64> {
    static BOOT: OnceLock<Option<u64>> = OnceLock::new();
    let boot = (*BOOT.get_or_init(|| boot_time(&read("/proc/stat")?)))?;
    Some(boot as f64 + start_ticks as f64 / USER_HZ as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                        250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";

    #[test]
    fn stat_fields_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = Stat::parse(STAT).expect("parses");
        assert_eq!(stat.cpu, Duration::from_millis(3250));
        assert_eq!(stat.start_ticks, 12345);
        assert_eq!(Stat::parse("garbage"), None);
        assert_eq!(Stat::parse("1 (x) S 1 2"), None, "too few fields");
    }

    #[test]
    fn status_sizes_are_kib_and_every_line_is_needed() {
        let status = "Name:\tserver\nVmPeak:\t  9000 kB\nVmSize:\t  8000 kB\n\
                      VmRSSx:\t1 kB\nVmRSS:\t  2048 kB\nThreads:\t7\n";
        assert_eq!(
            Status::parse(status),
            Some(Status {
                resident: 2048 << 10,
                virtual_size: 8000 << 10,
                threads: 7,
            })
        );
        assert_eq!(Status::parse("VmRSS:\t2048 kB\n"), None);
    }

    #[test]
    fn the_open_files_limit_and_the_boot_time_are_found() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited = "Max open files            unlimited            unlimited            files";
        assert_eq!(max_open_files(unlimited), None);
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn rendering_uses_the_standard_names_and_skips_what_is_unknown() {
        let stats = Stats {
            cpu: Duration::from_millis(1500),
            resident_bytes: 4 << 20,
            virtual_bytes: 64 << 20,
            threads: 5,
            open_fds: Some(12),
            max_fds: None,
            start_time: Some(1_700_000_000.5),
        };
        let mut out = String::new();
        stats.render(&mut out);
        for line in [
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 1.5\n",
            "process_resident_memory_bytes 4194304\n",
            "process_virtual_memory_bytes 67108864\n",
            "process_open_fds 12\n",
            "process_start_time_seconds 1700000000.5\n",
            "process_threads 5\n",
        ] {
            assert!(out.contains(line), "{line:?} in {out}");
        }
        assert!(!out.contains("process_max_fds"), "{out}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_itself() {
        let stats = Stats::now().expect("/proc/self");
        assert!(stats.resident_bytes > 1 << 20, "{stats:?}");
        assert!(stats.virtual_bytes >= stats.resident_bytes, "{stats:?}");
        assert!(stats.threads >= 1, "{stats:?}");
        assert!(stats.open_fds.is_some_and(|n| n >= 3), "{stats:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = stats.start_time.expect("a start time");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{started}"
        );
        let usage = Usage::now().expect("/proc/self");
        assert!(usage.resident > 1 << 20);
    }
}
