//! tether-load: drives N users against a Tether server over the real protocol (Tether's own
//! client, the same sans-IO session the browser runs) and reports connect-storm time, server
//! RSS per idle connection, message throughput with end-to-end latency at stepped offered
//! rates, and the time a reconnect storm takes after a server restart.
//!
//! It starts the server binary itself (a fresh temporary data directory, the embedded store),
//! so it can read the server's RSS and restart it. Load and server share this machine.
//!
//!     cargo build --release -p server --bin tether
//!     cargo run --release -p tether-bench --bin tether-load -- --users 1000
//!
//! (`bash scripts/bench.sh` does both.) CPU time and RSS come from `/proc`, through the
//! server's one reader of it (`server::process`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use server::process::Process;
use tether_bench::{
    arrived, connect_users, cpu, micros, percentile, rss_kib, send_at_rate, system_cpu,
    until_quiet, Flags, Server, Stats,
};

struct Args {
    server_bin: PathBuf,
    server_args: Vec<String>,
    users: usize,
    rates: Vec<u64>,
    step_secs: u64,
    out: Option<PathBuf>,
    /// Count the server's fsync and fdatasync calls in each step (perf's syscall tracepoints).
    count_fsyncs: bool,
    /// Skip the reconnect storm (the Node reference cannot finish it: it forgets every session).
    reconnect: bool,
}

const USAGE: &str = "usage: tether-load [--users N] [--rates R1,R2,...] [--step-secs S] \
[--out FILE.md] [--server-bin PATH] [--server-arg ARG]... [--count-fsyncs] [--no-reconnect]

  --users N         users to connect (default 1000, at least 2)
  --rates R1,R2     offered messages/s per throughput step (default 2000,5000,10000,20000,30000)
  --step-secs S     seconds per throughput step (default 5)
  --out FILE        also write the results table (Markdown) to FILE
  --server-bin PATH the server binary to start (default target/release/tether)
  --server-arg ARG  one extra server flag (repeatable); they come before the flags tether-load
                    adds, so `--server-bin taskset --server-arg -c --server-arg 0 --server-arg
                    target/release/tether` pins the server to CPU 0 (taskset execs: same pid)
  --count-fsyncs    count the server's fsync + fdatasync calls (all threads, and the store
                    writer's) over each step's S seconds (`timeout -s INT S perf stat
                    --per-thread -e syscalls:sys_enter_fsync,... -p PID`; needs perf and the
                    tracepoints, else the column says n/a)
  --no-reconnect    skip the reconnect storm";

fn parse_args() -> Args {
    let mut args = Args {
        server_bin: PathBuf::from("target/release/tether"),
        server_args: Vec::new(),
        users: 1000,
        rates: vec![2_000, 5_000, 10_000, 20_000, 30_000],
        step_secs: 5,
        out: None,
        count_fsyncs: false,
        reconnect: true,
    };
    let mut flags = Flags::new("tether-load", USAGE, &["--count-fsyncs", "--no-reconnect"]);
    while let Some((flag, value)) = flags.next_flag() {
        let number = |v: &str| flags.number(&flag, v);
        match flag.as_str() {
            "--count-fsyncs" => args.count_fsyncs = true,
            "--no-reconnect" => args.reconnect = false,
            "--server-bin" => args.server_bin = value.into(),
            "--users" => args.users = number(&value) as usize,
            "--rates" => args.rates = value.split(',').map(number).collect(),
            "--step-secs" => args.step_secs = number(&value),
            "--out" => args.out = Some(value.into()),
            "--server-arg" => args.server_args.push(value),
            other => flags.fail(&format!("unknown flag {other}")),
        }
    }
    if args.users < 2 {
        flags.fail("--users must be at least 2");
    }
    args
}

/// The embedded store's writer thread (its name in the server).
const WRITER_THREAD: &str = "sqlite-writer";

/// How long the server has been idle when its RSS per idle connection is read.
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(2);

async fn start_server(args: &Args, data_dir: &std::path::Path, port: u16) -> Server {
    Server::start(&args.server_bin, &args.server_args, data_dir, port).await
}

/// Counts the fsync and fdatasync calls process `pid` makes in the next `secs` seconds, all its
/// threads and the store writer's, with perf's syscall tracepoints (no tracing of the process:
/// the kernel counts). `None` when perf is missing or cannot count (no tracepoints, no
/// permission).
async fn count_fsyncs(pid: u32, secs: u64) -> Option<(u64, u64)> {
    // perf stat -p prints its counts when interrupted; given a command to time instead, it
    // counts that command, not the process.
    let output = tokio::process::Command::new("timeout")
        .args([
            "-s",
            "INT",
            &secs.to_string(),
            "perf",
            "stat",
            "--per-thread",
            "-x,",
        ])
        .arg("-e")
        .arg("syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync")
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stderr);
    let (mut total, mut writer, mut counted) = (0, 0, false);
    // CSV lines: thread-tid,count,unit,event,... ("<not counted>" for a thread that did not run).
    for line in text.lines() {
        let mut fields = line.split(',');
        let (Some(thread), Some(count), Some(_), Some(event)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !event.starts_with("syscalls:sys_enter_f") {
            continue;
        }
        counted = true;
        let n = count.parse::<u64>().unwrap_or(0);
        total += n;
        // The kernel keeps 15 bytes of a thread's name: "sqlite-writer" whole.
        if thread.rsplit_once('-').map(|(name, _)| name) == Some(WRITER_THREAD) {
            writer += n;
        }
    }
    counted.then_some((total, writer))
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    micros();
    let mut report = String::new();
    let mut line = |text: String| {
        println!("{text}");
        report.push_str(&text);
        report.push('\n');
    };

    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(&args, data_dir.path(), 0).await;
    let port = server.port;
    let server_proc = server.process();
    let own = Process::current();
    let origin = server.url();
    let rss_before = rss_kib(&server_proc);

    // 1. Connect storm.
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let (server_cpu_before, own_cpu_before) = (cpu(&server_proc), cpu(&own));
    let users = connect_users(&[origin], "u", args.users, usize::MAX, &stats).await;
    let storm = started.elapsed();
    let storm_cpu = (
        cpu(&server_proc)
            .saturating_sub(server_cpu_before)
            .as_secs_f64(),
        cpu(&own).saturating_sub(own_cpu_before).as_secs_f64(),
    );

    // 2. RSS per idle connection: once both sides are quiet, 2 s more of idling (the method
    // BENCHMARKS.md states; the server hands what the storm freed back to the system in its
    // first quiet second).
    let settled = until_quiet(&[&server_proc]).await + storm;
    tokio::time::sleep(IDLE_BEFORE_RSS).await;
    let rss_after = rss_kib(&server_proc);
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / args.users as f64;

    line(format!(
        "# tether-load: {} users, server and load on one machine\n",
        args.users
    ));
    line("| measure | result |".into());
    line("| --- | --- |".into());
    line(format!(
        "| connect storm ({} users, all sessions + rosters received) | {:.2} s |",
        args.users,
        storm.as_secs_f64()
    ));
    line(format!(
        "| CPU used during the storm: server / load generator | {:.2} s / {:.2} s |",
        storm_cpu.0, storm_cpu.1
    ));
    line(format!(
        "| until the `user connected` fan-out has settled (server and clients idle) | {:.2} s |",
        settled.as_secs_f64()
    ));
    line(format!(
        "| server RSS before / after connecting | {} KiB / {} KiB |",
        rss_before, rss_after
    ));
    line(format!(
        "| server RSS per idle connection | {:.1} KB |",
        per_conn / 1000.0
    ));

    // 3. Throughput and latency at stepped offered rates: the first half send to the second.
    let half = users.len() / 2;
    line(String::new());
    line(
        "| offered msg/s | delivered msg/s | p50 ms | p99 ms | max ms \
         | CPU µs per delivered message: server (its store writer) / load generator \
         | server fsyncs/s (its store writer) \
         | kernel CPU µs per delivered message: server / load generator |"
            .into(),
    );
    line("| --- | --- | --- | --- | --- | --- | --- | --- |".into());
    for &rate in &args.rates {
        until_quiet(&[&server_proc]).await;
        stats.latencies_us.lock().unwrap().clear();
        let received_before = stats.received.load(Ordering::Relaxed);
        let step_start = Instant::now();
        let server_cpu = cpu(&server_proc);
        let writer_cpu = server_proc.thread_cpu(WRITER_THREAD);
        let own_cpu = cpu(&own);
        let (server_kernel, own_kernel) = (system_cpu(&server_proc), system_cpu(&own));
        let fsyncs = args.count_fsyncs.then(|| {
            let pid = server.child.id().expect("server pid");
            tokio::spawn(count_fsyncs(pid, args.step_secs))
        });
        let pairs: Vec<_> = users[..half]
            .iter()
            .zip(&users[half..])
            .map(|(sender, recipient)| (sender, recipient.id.as_str()))
            .collect();
        let sent = send_at_rate(&pairs, rate, Duration::from_secs(args.step_secs)).await;
        // Let what is in flight arrive (bounded wait).
        let received = arrived(&stats, received_before, sent, Duration::from_secs(10)).await;
        let elapsed = step_start.elapsed().as_secs_f64();
        let mut lat = std::mem::take(&mut *stats.latencies_us.lock().unwrap());
        lat.sort_unstable();
        // CPU µs per delivered message, over the step and its grace period (in 10 ms ticks).
        let per_message = |used: Duration| used.as_micros() as f64 / received.max(1) as f64;
        let fsyncs = match fsyncs {
            None => "—".to_string(),
            Some(count) => match count.await.ok().flatten() {
                Some((total, writer)) => {
                    let per_sec = |n: u64| n as f64 / args.step_secs.max(1) as f64;
                    format!("{:.0} ({:.0})", per_sec(total), per_sec(writer))
                }
                None => "n/a".to_string(),
            },
        };
        line(format!(
            "| {rate} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} ({:.0}) / {:.0} | {fsyncs} | {:.0} / {:.0} |",
            received as f64 / elapsed.max(args.step_secs as f64),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            per_message(cpu(&server_proc).saturating_sub(server_cpu)),
            per_message(
                server_proc
                    .thread_cpu(WRITER_THREAD)
                    .saturating_sub(writer_cpu)
            ),
            per_message(cpu(&own).saturating_sub(own_cpu)),
            per_message(system_cpu(&server_proc).saturating_sub(server_kernel)),
            per_message(system_cpu(&own).saturating_sub(own_kernel)),
        ));
        if received < sent {
            line(format!("|  (step {rate}: {sent} sent, {received} received within the grace period) | | | | | | | |"));
        }
    }

    // 4. Reconnect storm: kill -9 the server, start it on the same port and data directory,
    //    and time until every user is back and its restore_state is answered.
    //    Outboxes left over from an overloaded step drain first, so the storm is reconnects only.
    if !args.reconnect {
        write_report(args.out.as_deref(), &report);
        return;
    }
    until_quiet(&[&server_proc]).await;
    let mut server = server;
    let _ = server.child.kill().await;
    stats.restored.lock().unwrap().clear();
    let restart = Instant::now();
    let own_cpu_before = cpu(&own);
    let server = start_server(&args, data_dir.path(), port).await;
    let listening = restart.elapsed();
    let new_server_proc = server.process();
    let back = || stats.restored.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut marks = [(0.5, None), (0.9, None), (0.99, None)];
    while back() < users.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now_back = back();
        for (share, at) in marks.iter_mut() {
            if at.is_none() && now_back as f64 >= *share * users.len() as f64 {
                *at = Some(restart.elapsed());
            }
        }
    }
    let back = back();
    let reconnect_cpu = (
        cpu(&new_server_proc).as_secs_f64(),
        cpu(&own).saturating_sub(own_cpu_before).as_secs_f64(),
    );
    let marks: Vec<String> = marks
        .iter()
        .filter_map(|(share, at)| {
            at.map(|t| format!("{:.0} % in {:.2} s", share * 100.0, t.as_secs_f64()))
        })
        .collect();
    line(String::new());
    line(format!(
        "reconnect storm: {back}/{} users resumed and restored in {:.2} s after the restart (includes the clients' backoff: 1 s ±50 % first retry; {})",
        users.len(),
        restart.elapsed().as_secs_f64(),
        marks.join(", ")
    ));
    line(format!(
        "(the restarted server was listening {:.2} s after the kill; CPU used until all were back: server {:.2} s, load generator {:.2} s)",
        listening.as_secs_f64(),
        reconnect_cpu.0,
        reconnect_cpu.1
    ));
    drop(server);
    write_report(args.out.as_deref(), &report);
}

fn write_report(out: Option<&std::path::Path>, report: &str) {
    if let Some(out) = out {
        std::fs::write(out, report).expect("write results");
        println!("\nresults written to {}", out.display());
    }
}
