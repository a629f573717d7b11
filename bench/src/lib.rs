//! What Tether's benchmark tools share: users over the real protocol (Tether's own client, the
//! same sans-IO session the browser runs), a sender that offers a steady rate, a node started
//! with limits wide enough for one machine's load, and the `/proc` readings (through the
//! server's one reader of it, `server::process`).

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use client::core::CoreConfig;
use client::native::{now_wall_ms, ClientHandle, NativeClient};
use client::session::{Input, SessionEvent};
use protocol::HandshakeAuth;
use server::process::Process;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, Barrier};

/// Microseconds since the tool started: what a message carries as its content, so that its
/// arrival gives its latency.
pub fn micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Resident KiB of a process now; 0 once it is gone.
pub fn rss_kib(process: &Process) -> u64 {
    process.resident().unwrap_or(0) >> 10
}

/// CPU time (user + system) a process has used so far; zero once it is gone.
pub fn cpu(process: &Process) -> Duration {
    process.cpu().unwrap_or_default()
}

/// The system (kernel) part of [`cpu`]; zero once the process is gone.
pub fn system_cpu(process: &Process) -> Duration {
    process.system_cpu().unwrap_or_default()
}

/// The `p` quantile of sorted microseconds, in milliseconds.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// Waits (at most 60 s) until the given processes and this one are nearly idle, so that a
/// measurement does not take in the tail of what came before (the connect storm's `user
/// connected` fan-out keeps clients busy well after every session has arrived).
pub async fn until_quiet(servers: &[&Process]) -> Duration {
    let started = Instant::now();
    let sample = || servers.iter().map(|p| cpu(p)).sum::<Duration>() + cpu(&Process::current());
    let mut before = sample();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sample();
        // Under 20 ms (2 ticks at 100 Hz) of CPU in 250 ms: every side has caught up.
        if now.saturating_sub(before) < Duration::from_millis(20) {
            break;
        }
        before = now;
    }
    started.elapsed()
}

/// The flags that lift a node's per-user and per-address limits for a load from one machine
/// (every simulated user signs up from this one address, at once, and sends far more than a
/// person would).
pub const LOAD_FLAGS: &[&str] = &[
    "--log",
    "warn",
    "--messages-per-sec",
    "1000000",
    "--message-burst",
    "1000000",
    "--max-sockets-per-user",
    "1000",
    "--max-payload-bytes",
    "1000000",
    "--signups-per-ip-per-min",
    "10000000",
    "--signup-burst-per-ip",
    "10000000",
    "--signups-per-sec",
    "10000000",
    "--signup-burst",
    "10000000",
];

/// A node this tool started (killed when dropped).
pub struct Server {
    pub child: tokio::process::Child,
    pub port: u16,
}

impl Server {
    /// Starts `bin` with `args` first (a wrapper's own, `taskset -c 0 tether`, say), then
    /// `--listen 127.0.0.1:<port>` (0: any), `--data-dir` and [`LOAD_FLAGS`]; returns once it
    /// prints its address.
    pub async fn start(bin: &Path, args: &[String], data_dir: &Path, port: u16) -> Server {
        let mut child = tokio::process::Command::new(bin)
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(LOAD_FLAGS)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (build it: cargo leptos build --release)",
                    bin.display()
                )
            });
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let port = loop {
            let line = lines
                .next_line()
                .await
                .expect("the server's output")
                .expect("server printed its address");
            if let Some(addr) = line.strip_prefix("listening on http://") {
                break addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("a port");
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn process(&self) -> Process {
        Process::of(self.child.id().expect("the server runs"))
    }
}

/// Shared counters the users' event handlers report into.
#[derive(Default)]
pub struct Stats {
    pub received: AtomicU64,
    /// Users whose `restore_state` was answered since the set was last cleared (a user may
    /// restore more than once; each counts once).
    pub restored: Mutex<std::collections::HashSet<String>>,
    pub latencies_us: Mutex<Vec<u64>>,
}

pub struct User {
    pub handle: ClientHandle,
    pub id: String,
}

/// Signs up `name` on the node at `origin`; once the session arrived, later reconnects resume
/// it.
pub async fn connect_user(origin: String, name: String, stats: Arc<Stats>) -> User {
    let stored = Arc::new(Mutex::new(HandshakeAuth::sign_up(name.clone())));
    let auth = {
        let stored = stored.clone();
        move || stored.lock().unwrap().clone()
    };
    let config = CoreConfig {
        connect_timeout_ms: 30_000,
        ..Default::default()
    };
    // Events are handled in the client's own task as they happen: a channel and a task per
    // user to read it cost a wake-up per delivered message.
    let (session_tx, session_rx) = tokio::sync::oneshot::channel();
    let mut session_tx = Some(session_tx);
    let handle =
        NativeClient::spawn_with_handler(&origin, config, auth, move |event| match event {
            SessionEvent::Session(info) => {
                if let Some(tx) = session_tx.take() {
                    let _ = tx.send(info);
                }
            }
            SessionEvent::Arrived(message) => {
                if let Ok(sent_at) = message.content.parse::<u64>() {
                    let latency = micros().saturating_sub(sent_at);
                    stats.latencies_us.lock().unwrap().push(latency);
                }
                stats.received.fetch_add(1, Ordering::Relaxed);
            }
            SessionEvent::Restored => {
                stats.restored.lock().unwrap().insert(name.clone());
            }
            _ => {}
        });
    let info = session_rx.await.expect("client task is running");
    *stored.lock().unwrap() = HandshakeAuth::resume(info.session_id);
    User {
        handle,
        id: info.user_id,
    }
}

/// Connects `count` users named `<prefix><i>`, user `i` to `origins[i % origins.len()]`, at most
/// `at_once` signing up at the same time (`usize::MAX`: all at once, a storm); in order.
pub async fn connect_users(
    origins: &[String],
    prefix: &str,
    count: usize,
    at_once: usize,
    stats: &Arc<Stats>,
) -> Vec<User> {
    let permits = Arc::new(tokio::sync::Semaphore::new(
        at_once.min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let joins: Vec<_> = (0..count)
        .map(|i| {
            let (origin, name) = (origins[i % origins.len()].clone(), format!("{prefix}{i}"));
            let (permits, stats) = (permits.clone(), stats.clone());
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("never closed");
                connect_user(origin, name, stats).await
            })
        })
        .collect();
    let mut users = Vec::with_capacity(count);
    for join in joins {
        users.push(join.await.expect("user connects"));
    }
    users
}

/// Each `(sender, recipient's userID)` pair sends at `rate / pairs` messages per second for
/// `step`, the senders' start times spread over one interval (so the offered load is even
/// instead of every sender firing at the same instant); the messages queued. Every sender stops
/// at the step's end: a sender whose interval is longer than the step sends once or not at all
/// (the offered rate holds over all of them), and the step lasts `step`, not until each
/// sender's next tick (which, before, stretched a 5 s step at 200 msg/s over 250 senders to
/// 6.25 s, and a 2 s step over 5,000 senders at 100 msg/s to 50 s).
pub async fn send_at_rate(pairs: &[(&User, &str)], rate: u64, step: Duration) -> u64 {
    let count = pairs.len();
    let per_sender = rate as f64 / count as f64;
    let interval = Duration::from_secs_f64(1.0 / per_sender.max(0.001));
    let barrier = Arc::new(Barrier::new(count));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u64>();
    for (i, (sender, to)) in pairs.iter().enumerate() {
        let handle = sender.handle.clone();
        let to = to.to_string();
        let barrier = barrier.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let phase = interval.mul_f64(i as f64 / count as f64);
            let sent = ticks(phase, interval, step, || {
                let to = to.clone();
                // Queued without waiting for the client's task: the latency is taken from
                // here, so its queueing counts.
                let sent_at = micros();
                let queued = handle.cast(move |s, now| {
                    let content = sent_at.to_string();
                    let wall_ms = now_wall_ms();
                    s.step(
                        Input::Send {
                            to: &to,
                            content: &content,
                            wall_ms,
                        },
                        now,
                    );
                });
                u64::from(queued)
            })
            .await;
            let _ = done.send(sent);
        });
    }
    drop(done_tx);
    let mut sent = 0;
    while let Some(n) = done_rx.recv().await {
        sent += n;
    }
    sent
}

/// Calls `send` at `phase` from now and every `interval` after, until `step` from now: a tick
/// due at or after the end is neither taken nor waited for. Ticks missed (a busy runtime) are
/// taken at once. Returns what the calls returned, added up.
async fn ticks(
    phase: Duration,
    interval: Duration,
    step: Duration,
    mut send: impl FnMut() -> u64,
) -> u64 {
    let begin = tokio::time::Instant::now();
    let end = begin + step;
    let mut ticker = tokio::time::interval_at(begin + phase, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while let Ok(due) = tokio::time::timeout_at(end, ticker.tick()).await {
        if due >= end {
            break;
        }
        sent += send();
    }
    sent
}

/// Waits (at most `grace`) until `sent` messages arrived since the count was `before`; the
/// count that arrived.
pub async fn arrived(stats: &Stats, before: u64, sent: u64, grace: Duration) -> u64 {
    let deadline = Instant::now() + grace;
    while stats.received.load(Ordering::Relaxed) - before < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stats.received.load(Ordering::Relaxed) - before
}

/// A benchmark tool's command line: `--name value` flags and `--switch`es, read in order.
/// `--help` prints the usage; a missing value, a value that is not a number where one is
/// wanted, or an unknown flag ends the tool with its usage (exit status 2).
pub struct Flags {
    tool: &'static str,
    usage: &'static str,
    switches: &'static [&'static str],
    args: std::iter::Skip<std::env::Args>,
}

impl Flags {
    /// The process's arguments, for `tool` (named in errors), whose flags in `switches` take
    /// no value.
    pub fn new(tool: &'static str, usage: &'static str, switches: &'static [&'static str]) -> Self {
        Flags {
            tool,
            usage,
            switches,
            args: std::env::args().skip(1),
        }
    }

    /// The next flag and its value (empty for a switch); `None` after the last.
    pub fn next_flag(&mut self) -> Option<(String, String)> {
        let flag = self.args.next()?;
        if flag == "--help" || flag == "-h" {
            println!("{}", self.usage);
            std::process::exit(0);
        }
        if self.switches.contains(&flag.as_str()) {
            return Some((flag, String::new()));
        }
        match self.args.next() {
            Some(value) => Some((flag, value)),
            None => self.fail(&format!("{flag} needs a value")),
        }
    }

    /// `value` of `flag` as a number.
    pub fn number(&self, flag: &str, value: &str) -> u64 {
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("{flag}: `{value}` is not a number")))
    }

    /// Ends the tool: `problem`, then the usage.
    pub fn fail(&self, problem: &str) -> ! {
        eprintln!("{}: {problem}\n\n{}", self.tool, self.usage);
        std::process::exit(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many ticks, and when the sender stopped, in seconds after it began (paused time).
    async fn run(phase: f64, interval: f64, step: f64) -> (u64, f64) {
        let begin = tokio::time::Instant::now();
        let secs = Duration::from_secs_f64;
        let sent = ticks(secs(phase), secs(interval), secs(step), || 1).await;
        (sent, begin.elapsed().as_secs_f64())
    }

    /// A step lasts what it was asked to, whatever the senders' intervals: before, a sender
    /// waited for its first tick at or after the end (this test failed: 5 s became 6.25 s, and
    /// 2 s became 50 s).
    #[tokio::test(start_paused = true)]
    async fn a_step_ends_at_its_end_and_sends_only_the_ticks_within_it() {
        // 200 msg/s over 250 senders: one every 1.25 s, this one 0.3 s in.
        let (sent, took) = run(0.3, 1.25, 5.0).await;
        assert_eq!(sent, 4, "at 0.3, 1.55, 2.8 and 4.05 s");
        assert!((took - 5.0).abs() < 0.01, "{took} s");
        // 100 msg/s over 5,000 senders: one every 50 s; this one's first is past a 2 s step.
        let (sent, took) = run(10.0, 50.0, 2.0).await;
        assert_eq!(sent, 0);
        assert!((took - 2.0).abs() < 0.01, "{took} s");
        // One whose first falls within it sends once.
        let (sent, took) = run(1.0, 50.0, 2.0).await;
        assert_eq!(sent, 1);
        assert!((took - 2.0).abs() < 0.01, "{took} s");
        // A tick due exactly at the end is not taken.
        let (sent, _) = run(0.0, 1.0, 3.0).await;
        assert_eq!(sent, 3, "at 0, 1 and 2 s");
    }
}
