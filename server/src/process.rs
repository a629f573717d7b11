//! A process as Linux's `/proc/<pid>` describes it: the one place that reads and parses it.
//! The server reads itself ([`Process::current`], `/proc/self`) for the memory trim
//! ([`crate::memory`]) and the `process_*` lines of `/metrics`; the load generator
//! (`bench/`) reads the server it started ([`Process::of`]) and itself, and the store bench
//! the store's writer thread ([`Process::thread_cpu`]).
//!
//! Where there is no `/proc` (not Linux) or the process is gone, every reader returns `None`
//! and `/metrics` has no `process_*` lines.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Clock ticks per second in `/proc/<pid>/stat` times: `USER_HZ`, 100 on every Linux
/// architecture (the kernel converts its internal `HZ` to it for user space).
const USER_HZ: u64 = 100;

/// One process's directory under `/proc`. Each reader reads it anew: a value is as of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    dir: PathBuf,
}

impl Process {
    /// This process (`/proc/self`).
    pub fn current() -> Self {
        Self::at("/proc/self")
    }

    /// Another process by its id (`/proc/<pid>`); readable when it runs as the same user (or
    /// this one is root).
    pub fn of(pid: u32) -> Self {
        Self::at(format!("/proc/{pid}"))
    }

    fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn read(&self, file: &str) -> Option<String> {
        read(&self.dir.join(file))
    }

    fn status(&self) -> Option<Status> {
        Status::parse(&self.read("status")?)
    }

    fn stat(&self) -> Option<Stat> {
        Stat::parse(&self.read("stat")?)
    }

    /// User plus system CPU time, all threads, so far (`stat`, in 10 ms ticks).
    pub fn cpu(&self) -> Option<Duration> {
        Some(self.stat()?.cpu)
    }

    /// The system (kernel) part of [`Process::cpu`] (`stat` field 15): time in system calls,
    /// and, on a kernel without IRQ time accounting (`CONFIG_IRQ_TIME_ACCOUNTING`), the
    /// interrupts and softirqs that ran while this process was on the CPU. Kernel threads'
    /// work on its behalf (a block device's completions) is not in it.
    pub fn system_cpu(&self) -> Option<Duration> {
        Some(self.stat()?.system)
    }

    /// Resident bytes now (`status`'s `VmRSS`).
    pub fn resident(&self) -> Option<u64> {
        Some(self.status()?.resident)
    }

    /// What the memory trim watches, from `status` and `stat`.
    pub fn usage(&self) -> Option<Usage> {
        Some(Usage {
            resident: self.status()?.resident,
            cpu: self.stat()?.cpu,
        })
    }

    /// Everything `/metrics` reports (a scrape): a few small files and one directory listing.
    pub fn stats(&self) -> Option<Stats> {
        let status = self.status()?;
        let stat = self.stat()?;
        let open_fds = std::fs::read_dir(self.dir.join("fd"))
            .ok()
            .map(|entries| entries.count() as u64);
        let max_fds = self
            .read("limits")
            .and_then(|limits| max_open_files(&limits));
        Some(Stats {
            cpu: stat.cpu,
            resident_bytes: status.resident,
            virtual_bytes: status.virtual_size,
            threads: status.threads,
            open_fds,
            max_fds,
            start_time: start_time(stat.start_ticks),
        })
    }

    /// CPU time used so far by the threads named `name` (`task/<tid>/comm`, as
    /// `std::thread::Builder::name` sets it, cut to 15 bytes), added up; zero when none is
    /// (or there is no `/proc`). A thread that has ended no longer counts.
    pub fn thread_cpu(&self, name: &str) -> Duration {
        let Ok(tasks) = std::fs::read_dir(self.dir.join("task")) else {
            return Duration::ZERO;
        };
        tasks
            .flatten()
            .map(|task| Self::at(task.path()))
            .filter(|task| {
                task.read("comm")
                    .is_some_and(|comm| comm.trim_end() == name)
            })
            .filter_map(|task| task.cpu())
            .sum()
    }
}

/// What the memory trim watches, read every second: resident bytes and CPU time used so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub resident: u64,
    pub cpu: Duration,
}

impl Usage {
    /// This process's, now.
    pub fn now() -> Option<Self> {
        Process::current().usage()
    }
}

/// Everything `/metrics` reports about the process, under Prometheus' standard names.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub cpu: Duration,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    /// Entries of `/proc/<pid>/fd`, the descriptor that lists them included (as Prometheus'
    /// own clients count).
    pub open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE`; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time: Option<f64>,
}

impl Stats {
    /// This process's, now.
    pub fn now() -> Option<Self> {
        Process::current().stats()
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

fn read(path: &Path) -> Option<String> {
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
    /// System time alone (field 15).
    system: Duration,
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
        let ticks = |n: u64| Duration::from_millis(n * 1000 / USER_HZ);
        let system = field(15)?;
        Some(Self {
            cpu: ticks(field(14)? + system),
            system: ticks(system),
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
    let boot = (*BOOT.get_or_init(|| boot_time(&read(Path::new("/proc/stat"))?)))?;
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

    /// A `/proc/<pid>` laid out in a temporary directory: two threads named `writer`, one
    /// `main`, and a task whose `stat` is unreadable.
    #[test]
    fn a_process_directory_is_read_for_any_pid_and_threads_are_picked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let stat = |utime: u64, stime: u64| {
            format!("7 (x) S 1 7 7 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 3 0 500 1 1")
        };
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("stat", &stat(300, 100));
        write(
            "status",
            "VmSize:\t 4096 kB\nVmRSS:\t 1024 kB\nThreads:\t3\n",
        );
        write("fd/0", "");
        write("fd/1", "");
        write("task/7/comm", "main\n");
        write("task/7/stat", &stat(100, 0));
        write("task/8/comm", "writer\n");
        write("task/8/stat", &stat(150, 50));
        write("task/9/comm", "writer\n");
        write("task/9/stat", &stat(0, 100));
        write("task/10/comm", "writer\n");
        write("task/10/stat", "gone");

        let process = Process::at(dir.path());
        assert_eq!(process.cpu(), Some(Duration::from_secs(4)));
        assert_eq!(process.system_cpu(), Some(Duration::from_secs(1)));
        assert_eq!(process.resident(), Some(1 << 20));
        assert_eq!(
            process.usage(),
            Some(Usage {
                resident: 1 << 20,
                cpu: Duration::from_secs(4)
            })
        );
        let stats = process.stats().expect("stats");
        assert_eq!(
            (
                stats.virtual_bytes,
                stats.threads,
                stats.open_fds,
                stats.max_fds
            ),
            (4 << 20, 3, Some(2), None)
        );
        assert_eq!(process.thread_cpu("writer"), Duration::from_secs(3));
        assert_eq!(process.thread_cpu("main"), Duration::from_secs(1));
        assert_eq!(
            process.thread_cpu("writ"),
            Duration::ZERO,
            "whole names only"
        );

        let gone = Process::at(dir.path().join("missing"));
        assert_eq!((gone.cpu(), gone.usage()), (None, None));
        assert_eq!(gone.thread_cpu("writer"), Duration::ZERO);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn another_process_by_pid_and_a_named_thread_of_this_one() {
        let by_pid = Process::of(std::process::id())
            .stats()
            .expect("this process by its id");
        let own = Process::current().stats().expect("/proc/self");
        assert_eq!(by_pid.start_time, own.start_time);
        assert!(by_pid.threads >= 1 && by_pid.resident_bytes > 1 << 20);

        // A thread that spins until its own `/proc/thread-self` shows 50 ms of CPU time is
        // found by its name with at least that much; no other thread has the name.
        assert_eq!(
            Process::current().thread_cpu("proc-test-burn"),
            Duration::ZERO
        );
        let (done, wait) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("proc-test-burn".into())
            .spawn(move || {
                let own = Process::at("/proc/thread-self");
                let started = std::time::Instant::now();
                while own.cpu().unwrap_or_default() < Duration::from_millis(50)
                    && started.elapsed() < Duration::from_secs(10)
                {
                    std::hint::black_box(0u64.wrapping_add(1));
                }
                let _ = done.send(own.cpu());
                // Alive until read: an ended thread's task is gone.
                let _ = finished.recv();
            })
            .unwrap();
        let own = wait.recv().unwrap().expect("/proc/thread-self");
        let burned = Process::current().thread_cpu("proc-test-burn");
        let _ = finish.send(());
        thread.join().unwrap();
        assert!(own >= Duration::from_millis(50), "{own:?}");
        assert!(burned >= own, "{burned:?} < {own:?}");
        assert!(Process::current().cpu().unwrap() >= burned);
        assert_eq!(Process::of(u32::MAX).cpu(), None, "no such process");
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
