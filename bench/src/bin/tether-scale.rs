//! tether-scale: the measurements behind docs/SCALING.md. Tether nodes on one Redis Cluster
//! (started by `scripts/scale.sh`, which also pins: the nodes and Redis on one CPU, this tool on
//! the other), users over the real protocol (Tether's own client), and a capacity model fitted
//! on a small calibration run, then checked against a larger simulation.
//!
//! 1. Calibration, three nodes: the senders on node A, their recipients on node B, and idle
//!    users on node C (twice as many as A and B hold, and at least as many as a node of the
//!    simulation). An idle window, a message from every pair (not measured: the pairs are
//!    contacts from then on, as in a messenger in use), then steps at two offered rates. Per
//!    node, CPU/s against the messages sent per second is a line: C's slope is what a node pays
//!    for a message it does not deliver (every node receives every broadcast), A's minus C's
//!    the sending, B's minus C's the delivering; the idle window gives the per-node and
//!    per-user costs and RSS (a line over the three nodes' users).
//!    Redis (every primary's `INFO`): commands, bytes in and out, CPU and memory per message;
//!    a second idle window once C's users left gives Redis's cost per connected user (the
//!    refresh of each connected session once a minute: every window lasts a whole number of
//!    minutes). One more step at the higher rate with node C stopped: what one more
//!    subscribing node costs Redis per message (its egress), and Redis's memory per message
//!    once a user's keys are past Redis's compact encoding.
//! 2. Simulation: `--users` users spread evenly over the nodes (each sender's recipient on
//!    another node), at `--rate`: the model's prediction of each figure beside the measured
//!    one, and the error.
//!
//! Writes the figures as JSON (`--out`) and prints the table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::session::Input;
use server::process::Process;
use tether_bench::{arrived, connect_users, cpu, percentile, rss_kib, send_at_rate, until_quiet};
use tether_bench::{Flags, Server, Stats, User};

struct Args {
    server_bin: PathBuf,
    server_args: Vec<String>,
    redis_url: String,
    users: usize,
    nodes: usize,
    rate: u64,
    calibration_users: usize,
    secs: u64,
    idle_secs: u64,
    out: Option<PathBuf>,
}

const USAGE: &str = "usage: tether-scale --redis-url URL [--server-bin PATH] [--server-arg ARG]... \
[--users N] [--nodes N] [--rate R] [--calibration-users N] [--secs S] [--idle-secs S] [--out FILE.json]

  --redis-url URL         one node of the Redis Cluster the nodes run on
  --server-bin PATH       the server binary (default target/release/tether); with --server-arg
                          before Tether's own flags, `--server-bin taskset --server-arg -c
                          --server-arg 0 --server-arg target/release/tether` pins the nodes
  --users N               users of the simulation (default 10000)
  --nodes N               nodes of the simulation (default 3)
  --rate R                offered messages/s of the simulation, all users together (default 900)
  --calibration-users N   users of the calibration (default 1000)
  --secs S                seconds per step (default 60: a node refreshes its connected
                          sessions once a minute, so each window holds one refresh per node)
  --idle-secs S           seconds of each idle window (default 60, for the same reason)
  --out FILE              also write every figure as JSON";

fn parse_args() -> Args {
    let mut args = Args {
        server_bin: PathBuf::from("target/release/tether"),
        server_args: Vec::new(),
        redis_url: String::new(),
        users: 10_000,
        nodes: 3,
        rate: 900,
        calibration_users: 1000,
        secs: 60,
        idle_secs: 60,
        out: None,
    };
    let mut flags = Flags::new("tether-scale", USAGE, &[]);
    while let Some((flag, value)) = flags.next_flag() {
        let number = |v: &str| flags.number(&flag, v);
        match flag.as_str() {
            "--server-bin" => args.server_bin = value.into(),
            "--server-arg" => args.server_args.push(value),
            "--redis-url" => args.redis_url = value,
            "--users" => args.users = number(&value) as usize,
            "--nodes" => args.nodes = number(&value) as usize,
            "--rate" => args.rate = number(&value),
            "--calibration-users" => args.calibration_users = number(&value) as usize,
            "--secs" => args.secs = number(&value),
            "--idle-secs" => args.idle_secs = number(&value),
            "--out" => args.out = Some(value.into()),
            other => flags.fail(&format!("unknown flag {other}")),
        }
    }
    if args.redis_url.is_empty() {
        flags.fail("--redis-url is required");
    }
    if args.users < 2 * args.nodes || args.calibration_users < 2 || args.nodes < 2 {
        flags.fail("at least 2 nodes, 2 users per node and 2 calibration users");
    }
    if args.rate == 0 || args.secs == 0 || args.idle_secs == 0 {
        flags.fail("--rate, --secs and --idle-secs must be positive");
    }
    if args.rate < args.nodes as u64 {
        flags.fail("--rate must be at least --nodes (the low step offers rate / nodes)");
    }
    if !args.secs.is_multiple_of(60) || !args.idle_secs.is_multiple_of(60) {
        eprintln!(
            "tether-scale: windows that are not whole minutes hold one refresh of connected \
             sessions per node or none: Redis's cost per user comes out wrong"
        );
    }
    args
}

/// One primary's counters (`INFO`), as of one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Shard {
    /// Commands run (every command's `calls`, less what this tool's own `INFO` calls add).
    calls: f64,
    bytes_in: f64,
    bytes_out: f64,
    /// User plus system CPU seconds.
    cpu: f64,
    memory: f64,
}

/// The Redis Cluster's primaries, read with `INFO`.
struct Redis {
    primaries: Vec<(String, redis::aio::MultiplexedConnection)>,
}

impl Redis {
    async fn discover(url: &str) -> Redis {
        let client = redis::Client::open(url).expect("a Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("the Redis Cluster answers");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .expect("CLUSTER NODES (is it a cluster?)");
        let mut primaries = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 3 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let addr = fields[1].split('@').next().unwrap_or("").to_owned();
            let client = redis::Client::open(format!("redis://{addr}/")).expect("an address");
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("a primary answers");
            primaries.push((addr, conn));
        }
        primaries.sort_by(|a, b| a.0.cmp(&b.0));
        Redis { primaries }
    }

    /// Redis's `zset-max-listpack-entries` (`CONFIG GET` on the first primary; 128, Redis's
    /// default, where it is refused).
    async fn compact_max(&mut self) -> f64 {
        let (_, conn) = &mut self.primaries[0];
        let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("zset-max-listpack-entries")
            .query_async(conn)
            .await;
        match reply.ok().and_then(|r| r.get(1)?.parse().ok()) {
            Some(max) => max,
            None => {
                eprintln!("tether-scale: CONFIG GET refused; taking Redis's default, 128 entries");
                128.0
            }
        }
    }

    /// Each primary's figures, and the calls of each command summed over the primaries.
    async fn sample(&mut self) -> (Vec<Shard>, BTreeMap<String, f64>) {
        let mut shards = Vec::new();
        let mut commands = BTreeMap::new();
        for (_, conn) in &mut self.primaries {
            let info: String = redis::cmd("INFO")
                .arg("everything")
                .query_async(conn)
                .await
                .expect("INFO");
            shards.push(parse_info(&info));
            for (name, calls) in parse_commands(&info) {
                *commands.entry(name).or_insert(0.0) += calls;
            }
        }
        (shards, commands)
    }
}

/// The figures of one `INFO everything`.
fn parse_info(info: &str) -> Shard {
    let mut shard = Shard::default();
    for line in info.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let number = |v: &str| v.parse::<f64>().unwrap_or(0.0);
        match key {
            "total_net_input_bytes" => shard.bytes_in = number(value),
            "total_net_output_bytes" => shard.bytes_out = number(value),
            "used_cpu_sys" | "used_cpu_user" => shard.cpu += number(value),
            "used_memory" => shard.memory = number(value),
            // cmdstat_<name>:calls=N,usec=…; this tool's INFO is not the workload's.
            _ if key.starts_with("cmdstat_") && key != "cmdstat_info" => {
                let calls = value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .unwrap_or("0");
                shard.calls += number(calls);
            }
            _ => {}
        }
    }
    shard
}

/// Calls per command (`cmdstat_<name>:calls=N,…`), this tool's `INFO` left out.
fn parse_commands(info: &str) -> BTreeMap<String, f64> {
    info.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            let name = key.strip_prefix("cmdstat_")?;
            let calls = value.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            (name != "info").then(|| (name.to_owned(), calls.parse().unwrap_or(0.0)))
        })
        .collect()
}

/// What every node and every primary used over one window, per second (node RSS: at its end;
/// Redis memory: what it grew by).
#[derive(Debug, Clone, Default)]
struct Window {
    secs: f64,
    /// Messages sent, and delivered, per second of the window (what the figures are per).
    sent: f64,
    delivered: f64,
    node_cpu: Vec<f64>,
    node_rss: Vec<f64>,
    redis: Shard,
    /// Calls per second of each Redis command.
    commands: BTreeMap<String, f64>,
    p50_ms: f64,
    p99_ms: f64,
}

struct Reading {
    at: Instant,
    nodes: Vec<Duration>,
    shards: Vec<Shard>,
    commands: BTreeMap<String, f64>,
}

async fn read(nodes: &[Process], redis: &mut Redis) -> Reading {
    let (shards, commands) = redis.sample().await;
    Reading {
        at: Instant::now(),
        nodes: nodes.iter().map(cpu).collect(),
        shards,
        commands,
    }
}

fn window(
    before: &Reading,
    after: &Reading,
    nodes: &[Process],
    sent: u64,
    delivered: u64,
) -> Window {
    let secs = after.at.duration_since(before.at).as_secs_f64();
    let mut redis = Shard::default();
    for (b, a) in before.shards.iter().zip(&after.shards) {
        // Each window's own reading adds one INFO per primary: not counted (cmdstat_info).
        redis.calls += a.calls - b.calls;
        redis.bytes_in += a.bytes_in - b.bytes_in;
        redis.bytes_out += a.bytes_out - b.bytes_out;
        redis.cpu += a.cpu - b.cpu;
        redis.memory += a.memory - b.memory;
    }
    Window {
        secs,
        sent: sent as f64 / secs,
        delivered: delivered as f64 / secs,
        node_cpu: before
            .nodes
            .iter()
            .zip(&after.nodes)
            .map(|(b, a)| a.saturating_sub(*b).as_secs_f64() / secs)
            .collect(),
        node_rss: nodes.iter().map(|p| rss_kib(p) as f64 * 1024.0).collect(),
        redis: Shard {
            calls: redis.calls / secs,
            bytes_in: redis.bytes_in / secs,
            bytes_out: redis.bytes_out / secs,
            cpu: redis.cpu / secs,
            memory: redis.memory,
        },
        commands: after
            .commands
            .iter()
            .map(|(name, calls)| {
                let before = before.commands.get(name).copied().unwrap_or(0.0);
                (name.clone(), (calls - before) / secs)
            })
            .filter(|(_, per_s)| *per_s > 0.0)
            .collect(),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
    }
}

/// Nodes on the cluster under a key prefix of their own (each phase starts clean).
async fn start_nodes(args: &Args, count: usize, phase: &str) -> (Vec<Server>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("scale-{phase}-{}", std::process::id());
    let mut nodes = Vec::new();
    for i in 0..count {
        let data = dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&data).expect("a data directory");
        let mut flags = args.server_args.clone();
        flags.extend(
            [
                "--redis-url",
                &args.redis_url,
                "--redis-prefix",
                &prefix,
                // Presence to contacts only in every run (the calibration is smaller than the
                // default 1,000-user "everyone" roster; the simulation is larger).
                "--roster-full-max",
                "100",
                // Sign-ups come 200 at a time; more connections may wait for their first request
                // than the default allows for one address.
                "--max-pending-connections",
                "100000",
            ]
            .map(str::to_owned),
        );
        nodes.push(Server::start(&args.server_bin, &flags, &data, 0).await);
    }
    (nodes, dir)
}

/// Sends from each pair at `rate` for the step; the window with its latencies.
async fn step(
    args: &Args,
    pairs: &[(&User, &str)],
    rate: u64,
    stats: &Stats,
    processes: &[Process],
    redis: &mut Redis,
) -> Window {
    until_quiet(&processes.iter().collect::<Vec<_>>()).await;
    stats.latencies_us.lock().unwrap().clear();
    let received_before = stats.received.load(Ordering::Relaxed);
    let before = read(processes, redis).await;
    let sent = send_at_rate(pairs, rate, Duration::from_secs(args.secs)).await;
    let received = arrived(stats, received_before, sent, Duration::from_secs(10)).await;
    let after = read(processes, redis).await;
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let mut figures = window(&before, &after, processes, sent, received);
    figures.p50_ms = percentile(&lat, 0.5);
    figures.p99_ms = percentile(&lat, 0.99);
    if received < sent {
        eprintln!("tether-scale: step at {rate}/s: {sent} sent, {received} delivered in time");
    }
    figures
}

/// Users signing up at the same time: users arrive over time, and what is measured is them
/// connected, not a storm (`tether-load` measures storms).
const SIGN_UPS_AT_ONCE: usize = 200;

/// One message or two from every pair, not measured: the first message between two users
/// makes them contacts (peers, conversation keys, presence to each other), which a messenger
/// in use has done long before; the steps measure conversations that exist.
async fn warm_up(pairs: &[(&User, &str)], rate: u64, stats: &Stats) -> u64 {
    let before = stats.received.load(Ordering::Relaxed);
    let secs = (pairs.len() as u64).div_ceil(rate).max(1);
    let sent = send_at_rate(pairs, rate, Duration::from_secs(secs)).await;
    arrived(stats, before, sent, Duration::from_secs(30)).await;
    sent
}

async fn idle(args: &Args, processes: &[Process], redis: &mut Redis) -> Window {
    until_quiet(&processes.iter().collect::<Vec<_>>()).await;
    let before = read(processes, redis).await;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let after = read(processes, redis).await;
    window(&before, &after, processes, 0, 0)
}

fn disconnect(users: &[User]) {
    for user in users {
        user.handle.cast(|s, now| s.step(Input::Disconnect, now));
    }
}

/// The calibration's measurements: idle, two rates, idle again once C's users left, and the
/// higher rate without node C.
struct Calibration {
    /// Users on nodes A, B and C.
    users: [f64; 3],
    /// Messages per pair at the start of the low step, the high step and the step without C.
    per_pair: [f64; 3],
    idle: Window,
    steps: [Window; 2],
    /// Idle, three nodes, C's users gone: with `idle`, what Redis pays per connected user.
    idle_without_c_users: Window,
    without_c: Window,
}

async fn calibrate(args: &Args, redis: &mut Redis) -> Calibration {
    let (mut nodes, _dir) = start_nodes(args, 3, "calibration").await;
    let processes: Vec<Process> = nodes.iter().map(Server::process).collect();
    let stats = Arc::new(Stats::default());
    let half = args.calibration_users / 2;
    let senders = connect_users(&[nodes[0].url()], "a", half, SIGN_UPS_AT_ONCE, &stats).await;
    let recipients = connect_users(&[nodes[1].url()], "b", half, SIGN_UPS_AT_ONCE, &stats).await;
    // Idle users on C, twice as many as on A and B together and at least as many as a node of
    // the simulation holds: memory and idle CPU against users are lines through three sizes
    // (what the first message of theirs would cost is not used), and a node's memory per user
    // falls as it fills, so the line must reach the simulation's size, not be carried past it.
    let idle_users = (2 * args.calibration_users).max(args.users.div_ceil(args.nodes));
    let bystanders =
        connect_users(&[nodes[2].url()], "c", idle_users, SIGN_UPS_AT_ONCE, &stats).await;
    let pairs: Vec<_> = senders
        .iter()
        .zip(&recipients)
        .map(|(s, r)| (s, r.id.as_str()))
        .collect();
    let idle_window = idle(args, &processes, redis).await;
    let warm = warm_up(&pairs, args.rate, &stats).await;
    // The simulation's per-node sending and delivering (rate / nodes) and its forwarding
    // (rate) both within the fitted range.
    let rates = [args.rate / args.nodes as u64, args.rate];
    let mut steps = Vec::new();
    for rate in rates {
        steps.push(step(args, &pairs, rate, &stats, &processes, redis).await);
    }
    // Node C gone: the cluster has one subscriber fewer. Its users leave first, and the step
    // waits until the others have swept it (a dead node is swept after its TTL and a third,
    // and once more later), so the step measures one subscriber fewer and nothing else.
    disconnect(&bystanders);
    let idle_without_c_users = idle(args, &processes, redis).await;
    let c = nodes.remove(2);
    drop(c);
    let survivors = &processes[..2];
    tokio::time::sleep(Duration::from_secs(35)).await;
    let without_c = step(args, &pairs, rates[1], &stats, survivors, redis).await;
    disconnect(&senders);
    disconnect(&recipients);
    // Messages per pair (a pair's conversation and each user's keys hold as many) at the
    // start of each step.
    let per_pair = |windows: &[&Window]| {
        (warm as f64 + windows.iter().map(|w| w.sent * w.secs).sum::<f64>()) / half as f64
    };
    Calibration {
        per_pair: [
            per_pair(&[]),
            per_pair(&[&steps[0]]),
            per_pair(&[&steps[0], &steps[1]]),
        ],
        users: [half as f64, half as f64, idle_users as f64],
        idle: idle_window,
        steps: [steps[0].clone(), steps[1].clone()],
        idle_without_c_users,
        without_c,
    }
}

/// Least squares line through `points`: (intercept, slope).
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    let slope = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    (my - slope * mx, slope)
}

/// CPU (cores) against messages per second, through no CPU at no messages and the two rates
/// measured. A node's or Redis's CPU per message falls as the rate rises (each wake-up, each
/// round trip, each event-loop turn serves more messages: 355 µs per message sent at 292/s on
/// the sending node in the run behind docs/SCALING.md, 209 µs per further message to 892/s),
/// so one line through
/// the three points is wrong near both ends; the model reads the segments instead. Beyond the
/// higher rate the last segment's slope goes on, on the safe side (the cost per message falls
/// further there).
#[derive(Debug, Clone, Copy)]
struct Curve {
    low: (f64, f64),
    high: (f64, f64),
}

impl Curve {
    /// Through `low` and `high` (messages/s, cores), each CPU figure at least 0. The rates
    /// are two steps' messages per second: a step that sent nothing, or steps out of order,
    /// are a broken run, not a model.
    fn through(low: (f64, f64), high: (f64, f64)) -> Curve {
        assert!(
            low.0 > 0.0 && high.0 > low.0,
            "the calibration's steps sent {:.0} and {:.0} messages/s: two rising rates are needed",
            low.0,
            high.0
        );
        Curve {
            low: (low.0, low.1.max(0.0)),
            high: (high.0, high.1.max(low.1).max(0.0)),
        }
    }

    /// Cores at `rate` messages/s.
    fn at(&self, rate: f64) -> f64 {
        let ((x1, y1), (x2, y2)) = (self.low, self.high);
        if rate <= x1 {
            y1 * rate / x1
        } else {
            y1 + (rate - x1) * (y2 - y1) / (x2 - x1)
        }
    }

    /// CPU seconds per message at `rate` (0 at no messages).
    fn per_message(&self, rate: f64) -> f64 {
        if rate > 0.0 {
            self.at(rate) / rate
        } else {
            0.0
        }
    }

    /// CPU seconds per message beyond the lower rate measured.
    fn further(&self) -> f64 {
        (self.at(self.high.0) - self.at(self.low.0)) / (self.high.0 - self.low.0)
    }
}

/// The capacity model's coefficients (per second figures; CPU in cores).
#[derive(Debug, Clone, Copy)]
struct Model {
    /// A node with no users, idle: CPU (cores) and RSS (bytes).
    node_cpu: f64,
    node_rss: f64,
    /// Per connected user, idle.
    user_cpu: f64,
    user_rss: f64,
    /// CPU (cores) against messages per second: sending them (the sender's node), delivering
    /// them (the recipient's), and receiving their broadcasts without a socket for them
    /// (every node).
    send_cpu: Curve,
    deliver_cpu: Curve,
    forward_cpu: Curve,
    /// Redis per message, all shards: commands, bytes in, bytes out, and what one more
    /// subscribing node adds to bytes out and CPU; its CPU against messages per second.
    redis_calls: f64,
    redis_in: f64,
    redis_out: f64,
    redis_cpu: Curve,
    redis_out_per_node: f64,
    redis_cpu_per_node: f64,
    /// Redis idle, per node: commands, bytes in and out, CPU (heartbeats, presence).
    redis_idle_calls: f64,
    redis_idle_in: f64,
    redis_idle_out: f64,
    redis_idle_cpu: f64,
    /// Redis per connected user, idle (the refresh of each connected session once a minute).
    redis_user: Shard,
    /// Redis memory per stored message, bytes: while a user's and a conversation's sorted sets
    /// hold at most `compact_max` messages (the low step's), and once they hold more (the
    /// step without C: the high step before it converted them).
    redis_memory_per_message: f64,
    redis_memory_per_message_long: f64,
    /// Redis's `zset-max-listpack-entries`: a sorted set of more entries than this is
    /// converted from the compact encoding (a listpack) to a skip list and a hash table.
    compact_max: f64,
}

/// What the model says one node (or Redis, all shards) uses.
#[derive(Debug, Clone, Copy)]
struct Load {
    users: f64,
    sent: f64,
    delivered: f64,
    total_rate: f64,
    nodes: f64,
}

impl Model {
    fn fit(c: &Calibration, compact_max: f64) -> Model {
        // Against the messages sent per second of each window (the step's own count over the
        // same seconds as the figures), not the rate offered.
        let rates = [c.steps[0].sent, c.steps[1].sent];
        // Each node's CPU in a step less its own idle CPU (its users' pings and refreshes).
        let busy = |step: usize, node: usize| c.steps[step].node_cpu[node] - c.idle.node_cpu[node];
        let curve =
            |part: &dyn Fn(usize) -> f64| Curve::through((rates[0], part(0)), (rates[1], part(1)));
        // C only receives the broadcasts; A also sends, B also delivers.
        let forward_cpu = curve(&|k| busy(k, 2));
        let send_cpu = curve(&|k| busy(k, 0) - busy(k, 2));
        let deliver_cpu = curve(&|k| busy(k, 1) - busy(k, 2));
        let per_user = |of: fn(&Window) -> &Vec<f64>| {
            fit(&[
                (c.users[0], of(&c.idle)[0]),
                (c.users[1], of(&c.idle)[1]),
                (c.users[2], of(&c.idle)[2]),
            ])
        };
        let (idle_cpu, idle_rss) = (per_user(|w| &w.node_cpu), per_user(|w| &w.node_rss));
        let redis_line = |f: fn(&Shard) -> f64| {
            fit(&[
                (0.0, f(&c.idle.redis)),
                (rates[0], f(&c.steps[0].redis)),
                (rates[1], f(&c.steps[1].redis)),
            ])
        };
        let calls = redis_line(|s| s.calls);
        let bytes_in = redis_line(|s| s.bytes_in);
        let bytes_out = redis_line(|s| s.bytes_out);
        let redis_cpu = curve(&|k| c.steps[k].redis.cpu - c.idle.redis.cpu);
        let (top, without) = (&c.steps[1], &c.without_c);
        let stored = |w: &Window| w.delivered * w.secs;
        // C's users leaving is what differs between the two idle windows (the messages stored
        // between them add keys, not work per second).
        let redis_per_user = |f: fn(&Shard) -> f64| {
            ((f(&c.idle.redis) - f(&c.idle_without_c_users.redis)) / c.users[2]).max(0.0)
        };
        let redis_user = Shard {
            calls: redis_per_user(|s| s.calls),
            bytes_in: redis_per_user(|s| s.bytes_in),
            bytes_out: redis_per_user(|s| s.bytes_out),
            cpu: redis_per_user(|s| s.cpu),
            memory: 0.0,
        };
        let all_users: f64 = c.users.iter().sum();
        // A line's value at no messages, less what the users cost: three nodes' idle.
        let per_node = |at_zero: f64, f: fn(&Shard) -> f64| {
            ((at_zero - all_users * f(&redis_user)) / 3.0).max(0.0)
        };
        let idle_out = per_node(bytes_out.0, |s| s.bytes_out);
        // CPU is not a line against messages (see `Curve`): the idle window's own figure.
        let idle_redis_cpu = per_node(c.idle.redis.cpu, |s| s.cpu);
        let ab_users = c.users[0] + c.users[1];
        // A step's figure per message sent, less its nodes' and users' idle share.
        let per_message = |w: &Window, nodes: f64, users: f64, idle: f64, f: fn(&Shard) -> f64| {
            (f(&w.redis) - nodes * idle - users * f(&redis_user)) / w.sent
        };
        Model {
            node_cpu: idle_cpu.0.max(0.0),
            node_rss: idle_rss.0.max(0.0),
            user_cpu: idle_cpu.1.max(0.0),
            user_rss: idle_rss.1.max(0.0),
            send_cpu,
            deliver_cpu,
            forward_cpu,
            redis_calls: calls.1,
            redis_in: bytes_in.1,
            redis_out: bytes_out.1,
            redis_cpu,
            // Per message with three subscribing nodes, less per message with two, each step's
            // idle share (nodes, users) taken off first.
            redis_out_per_node: (per_message(top, 3.0, all_users, idle_out, |s| s.bytes_out)
                - per_message(without, 2.0, ab_users, idle_out, |s| s.bytes_out))
            .max(0.0),
            redis_cpu_per_node: (per_message(top, 3.0, all_users, idle_redis_cpu, |s| s.cpu)
                - per_message(without, 2.0, ab_users, idle_redis_cpu, |s| s.cpu))
            .max(0.0),
            redis_idle_calls: per_node(calls.0, |s| s.calls),
            redis_idle_in: per_node(bytes_in.0, |s| s.bytes_in),
            redis_idle_out: idle_out,
            redis_idle_cpu: idle_redis_cpu,
            redis_user,
            redis_memory_per_message: c.steps[0].redis.memory / stored(&c.steps[0]),
            redis_memory_per_message_long: c.without_c.redis.memory / stored(&c.without_c),
            compact_max,
        }
    }

    /// Redis memory per stored message when each pair of users has exchanged `per_pair`.
    fn memory_per_message(&self, per_pair: f64) -> f64 {
        if per_pair <= self.compact_max {
            self.redis_memory_per_message
        } else {
            self.redis_memory_per_message_long
        }
    }

    /// One node's CPU (cores) and RSS (bytes).
    fn node(&self, load: Load) -> (f64, f64) {
        (
            self.node_cpu
                + load.users * self.user_cpu
                + self.send_cpu.at(load.sent)
                + self.deliver_cpu.at(load.delivered)
                + self.forward_cpu.at(load.total_rate),
            self.node_rss + load.users * self.user_rss,
        )
    }

    /// Redis, all shards: commands/s, bytes in/s, bytes out/s, CPU (cores). The calibration
    /// had three subscribing nodes: bytes out and CPU move by the per-node figures from there.
    fn redis(&self, load: Load) -> Shard {
        let extra = load.nodes - 3.0;
        let (n, u, user) = (load.nodes, load.users, &self.redis_user);
        Shard {
            calls: n * self.redis_idle_calls + u * user.calls + load.total_rate * self.redis_calls,
            bytes_in: n * self.redis_idle_in + u * user.bytes_in + load.total_rate * self.redis_in,
            bytes_out: n * self.redis_idle_out
                + u * user.bytes_out
                + load.total_rate * (self.redis_out + extra * self.redis_out_per_node),
            cpu: n * self.redis_idle_cpu
                + u * user.cpu
                + self.redis_cpu.at(load.total_rate)
                + load.total_rate * extra * self.redis_cpu_per_node,
            memory: 0.0,
        }
    }
}

/// What the model says `users` connected users need, each sending `per_user` messages/s:
/// nodes of one core like this machine's kept `BUSY` busy at most, their memory, and Redis.
#[derive(Debug, Clone, Copy)]
struct Capacity {
    users: f64,
    rate: f64,
    /// `None`: no number of nodes is enough (every node receives every message: forwarding
    /// `rate` alone passes the budget).
    nodes: Option<f64>,
    node_memory: f64,
    redis_cpu: f64,
    shards: f64,
    redis_in: f64,
    redis_out: f64,
    /// The egress of the one shard that carries every broadcast (to every node).
    broadcast_shard_out: f64,
    /// Redis memory that a day of messages adds.
    redis_memory_per_day: f64,
}

/// How busy a node's or a shard's core is allowed to be in the capacity table.
const BUSY: f64 = 0.7;

/// The most nodes the capacity table tries.
const MAX_NODES: u32 = 100_000;

impl Model {
    fn capacity(&self, users: f64, per_user: f64) -> Capacity {
        let rate = users * per_user;
        // The fewest nodes each at most BUSY: every node receives every message whatever their
        // number, and the rest divides.
        let busy = |n: f64| {
            self.node(Load {
                users: users / n,
                sent: rate / n,
                delivered: rate / n,
                total_rate: rate,
                nodes: n,
            })
            .0
        };
        let nodes = (self.node_cpu + self.forward_cpu.at(rate) < BUSY)
            .then(|| (1..=MAX_NODES).map(f64::from).find(|&n| busy(n) <= BUSY))
            .flatten();
        let n = nodes.unwrap_or(f64::NAN);
        let redis = self.redis(Load {
            users,
            sent: rate,
            delivered: rate,
            total_rate: rate,
            nodes: n,
        });
        Capacity {
            users,
            rate,
            nodes,
            node_memory: self.node_rss + users / n * self.user_rss,
            redis_cpu: redis.cpu,
            // (No shard count without a node count: NaN, not 1.)
            shards: if redis.cpu.is_finite() {
                (redis.cpu / BUSY).ceil().max(1.0)
            } else {
                f64::NAN
            },
            redis_in: redis.bytes_in,
            redis_out: redis.bytes_out,
            broadcast_shard_out: rate * n * self.redis_out_per_node,
            // A day of messages: every user's keys past the compact encoding (a lower bound: a
            // user's client-id hash stays compact up to `hash-max-listpack-entries`, 512).
            redis_memory_per_day: rate * 86_400.0 * self.redis_memory_per_message_long,
        }
    }
}

/// The simulation's step, its users per node, and the messages its warm-up sent.
async fn simulate(args: &Args, redis: &mut Redis) -> (Window, Vec<usize>, u64) {
    let (nodes, _dir) = start_nodes(args, args.nodes, "simulation").await;
    let processes: Vec<Process> = nodes.iter().map(Server::process).collect();
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let users = tokio::time::timeout(
        Duration::from_secs(600),
        connect_users(&urls, "u", args.users, SIGN_UPS_AT_ONCE, &stats),
    )
    .await
    // A panic, not an exit: the nodes are dropped (killed) on the way out.
    .unwrap_or_else(|_| panic!("{} users not all connected within 600 s", args.users));
    eprintln!(
        "tether-scale: {} users connected in {:.1} s",
        args.users,
        started.elapsed().as_secs_f64()
    );
    let half = users.len() / 2;
    // User i is on node i % nodes, its recipient half + i on another (unless half is a
    // multiple of the nodes: then one further).
    let shift = usize::from(half % args.nodes == 0);
    let pairs: Vec<_> = (0..half)
        .map(|i| {
            let to = half + (i + shift) % (users.len() - half);
            (&users[i], users[to].id.as_str())
        })
        .collect();
    let mut per_node = vec![0; args.nodes];
    for i in 0..users.len() {
        per_node[i % args.nodes] += 1;
    }
    let idle_window = idle(args, &processes, redis).await;
    let warm = warm_up(&pairs, args.rate, &stats).await;
    let mut figures = step(args, &pairs, args.rate, &stats, &processes, redis).await;
    // RSS as in the calibration: after the idle window, before sending.
    figures.node_rss = idle_window.node_rss;
    disconnect(&users);
    (figures, per_node, warm)
}

fn error(predicted: f64, measured: f64) -> f64 {
    (predicted - measured) / measured * 100.0
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    tether_bench::micros();
    let mut redis = Redis::discover(&args.redis_url).await;
    println!(
        "tether-scale: {} Redis primaries, calibration {} users on 3 nodes, simulation {} users on {} nodes at {} msg/s, {} s steps",
        redis.primaries.len(),
        args.calibration_users,
        args.users,
        args.nodes,
        args.rate,
        args.secs
    );
    let calibration = calibrate(&args, &mut redis).await;
    let compact_max = redis.compact_max().await;
    let model = Model::fit(&calibration, compact_max);
    println!("model: {model:#?}");
    let (r1, r2) = (model.send_cpu.low.0, model.send_cpu.high.0);
    println!("\n| CPU per message (µs) | at {r1:.0} msg/s | at {r2:.0} msg/s | each message from {r1:.0} to {r2:.0}/s |");
    println!("| --- | --- | --- | --- |");
    for (name, curve) in [
        ("`cs`: sending (the sender's node)", &model.send_cpu),
        (
            "`cd`: delivering (the recipient's node)",
            &model.deliver_cpu,
        ),
        (
            "`cf`: receiving the broadcast (every node)",
            &model.forward_cpu,
        ),
        ("Redis, all shards", &model.redis_cpu),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            curve.per_message(r1) * 1e6,
            curve.per_message(r2) * 1e6,
            curve.further() * 1e6
        );
    }
    let [_, after_low, without_c] = calibration.per_pair;
    println!(
        "messages per pair: {after_low:.0} after the low step, {without_c:.0} at the step without C (compact up to {compact_max})"
    );
    if after_low > compact_max || without_c <= compact_max {
        eprintln!(
            "tether-scale: the memory figures are not what they say: the low step must end with \
             at most {compact_max} messages per pair and the step without C start with more \
             (--rate, --secs and --calibration-users move them)"
        );
    }
    let (sim, per_node, warm) = simulate(&args, &mut redis).await;

    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    // The simulation's own sent messages per second of its window, as the model was fitted.
    let per_node_rate = sim.sent / args.nodes as f64;
    for (k, users) in per_node.iter().enumerate() {
        let load = Load {
            users: *users as f64,
            sent: per_node_rate,
            delivered: per_node_rate,
            total_rate: sim.sent,
            nodes: args.nodes as f64,
        };
        let (cpu, rss) = model.node(load);
        rows.push((format!("node {k} CPU (cores)"), cpu, sim.node_cpu[k]));
        rows.push((
            format!("node {k} RSS (MB)"),
            rss / 1e6,
            sim.node_rss[k] / 1e6,
        ));
    }
    let predicted = model.redis(Load {
        users: args.users as f64,
        sent: sim.sent,
        delivered: sim.sent,
        total_rate: sim.sent,
        nodes: args.nodes as f64,
    });
    rows.push(("Redis commands/s".into(), predicted.calls, sim.redis.calls));
    rows.push((
        "Redis bytes in/s (kB)".into(),
        predicted.bytes_in / 1e3,
        sim.redis.bytes_in / 1e3,
    ));
    rows.push((
        "Redis bytes out/s (kB)".into(),
        predicted.bytes_out / 1e3,
        sim.redis.bytes_out / 1e3,
    ));
    rows.push(("Redis CPU (cores)".into(), predicted.cpu, sim.redis.cpu));
    // The warm-up's messages and the step's, per pair: which encoding their keys are in.
    let per_pair = (warm as f64 + sim.sent * sim.secs) / (args.users / 2) as f64;
    rows.push((
        "Redis memory growth over the step (MB)".into(),
        sim.delivered * sim.secs * model.memory_per_message(per_pair) / 1e6,
        sim.redis.memory / 1e6,
    ));

    println!(
        "\nsimulation: {} users, {} nodes, offered {} msg/s, delivered {:.0} msg/s, p50 {:.1} ms, p99 {:.1} ms, {:.0} messages per pair ({})\n",
        args.users,
        args.nodes,
        args.rate,
        sim.delivered,
        sim.p50_ms,
        sim.p99_ms,
        per_pair,
        if per_pair <= model.compact_max {
            "compact keys"
        } else {
            "keys past the compact encoding"
        }
    );
    println!("| figure | predicted | measured | error |");
    println!("| --- | --- | --- | --- |");
    let mut worst: f64 = 0.0;
    for (name, p, m) in &rows {
        let e = error(*p, *m);
        worst = worst.max(e.abs());
        println!("| {name} | {p:.3} | {m:.3} | {e:+.1} % |");
    }
    println!("\nlargest error: {worst:.1} %");

    // Redis commands per delivered message, calibration (higher rate) and simulation.
    println!("\n| Redis command | calls per message: calibration | simulation |");
    println!("| --- | --- | --- |");
    let high = &calibration.steps[1];
    let mut names: Vec<&String> = high.commands.keys().chain(sim.commands.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let per = |w: &Window| w.commands.get(name).copied().unwrap_or(0.0) / w.delivered.max(1.0);
        let (c, m) = (per(high), per(&sim));
        if c >= 0.01 || m >= 0.01 {
            println!("| {name} | {c:.2} | {m:.2} |");
        }
    }

    // What the model says of larger deployments, each user sending one message a minute.
    let per_user = 1.0 / 60.0;
    println!(
        "\ncapacity (the model above; each connected user sends one message a minute; nodes of one \
         core like this machine's and Redis shards each at most {:.0} % busy):\n",
        BUSY * 100.0
    );
    println!(
        "| users | msg/s | nodes | RSS per node | Redis CPU (cores) | shards | Redis in / out | \
         broadcast shard out | Redis memory per day of messages |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut capacities = Vec::new();
    for users in [100_000.0, 1_000_000.0, 10_000_000.0] {
        let c = model.capacity(users, per_user);
        capacities.push(c);
        match c.nodes {
            Some(nodes) => println!(
                "| {:.0} | {:.0} | {nodes:.0} | {:.0} MB | {:.1} | {:.0} | {:.1} / {:.1} MB/s | {:.1} MB/s | {:.1} GB |",
                c.users,
                c.rate,
                c.node_memory / 1e6,
                c.redis_cpu,
                c.shards,
                c.redis_in / 1e6,
                c.redis_out / 1e6,
                c.broadcast_shard_out / 1e6,
                c.redis_memory_per_day / 1e9,
            ),
            None if model.node_cpu + model.forward_cpu.at(c.rate) < BUSY => println!(
                "| {:.0} | {:.0} | more than {MAX_NODES} | | | | | | {:.1} GB |",
                c.users,
                c.rate,
                c.redis_memory_per_day / 1e9,
            ),
            None => println!(
                "| {:.0} | {:.0} | none is enough: every node receives all {:.0} msg/s ({:.2} cores each) | | | | | | {:.1} GB |",
                c.users,
                c.rate,
                c.rate,
                model.forward_cpu.at(c.rate),
                c.redis_memory_per_day / 1e9,
            ),
        }
    }

    if let Some(out) = &args.out {
        let mut json = BTreeMap::new();
        let w = |w: &Window| {
            serde_json::json!({
                "secs": w.secs, "delivered_per_s": w.delivered, "node_cpu": w.node_cpu,
                "node_rss": w.node_rss, "redis_calls_per_s": w.redis.calls,
                "redis_bytes_in_per_s": w.redis.bytes_in, "redis_bytes_out_per_s": w.redis.bytes_out,
                "redis_cpu": w.redis.cpu, "redis_memory_delta": w.redis.memory,
                "p50_ms": w.p50_ms, "p99_ms": w.p99_ms, "redis_commands_per_s": w.commands,
            })
        };
        json.insert("calibration_idle", w(&calibration.idle));
        json.insert("calibration_low", w(&calibration.steps[0]));
        json.insert("calibration_high", w(&calibration.steps[1]));
        json.insert(
            "calibration_idle_without_c_users",
            w(&calibration.idle_without_c_users),
        );
        json.insert("calibration_without_c", w(&calibration.without_c));
        json.insert("simulation", w(&sim));
        json.insert("model", serde_json::json!(format!("{model:?}")));
        json.insert(
            "comparison",
            serde_json::json!(rows
                .iter()
                .map(|(n, p, m)| serde_json::json!({"figure": n, "predicted": p, "measured": m, "error_pct": error(*p, *m)}))
                .collect::<Vec<_>>()),
        );
        json.insert("largest_error_pct", serde_json::json!(worst));
        json.insert(
            "capacity",
            serde_json::json!(capacities
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()),
        );
        std::fs::write(out, serde_json::to_string_pretty(&json).expect("JSON"))
            .expect("write the figures");
        println!("figures written to {}", out.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_through_points_is_found() {
        let (a, b) = fit(&[(0.0, 1.0), (10.0, 21.0), (20.0, 41.0)]);
        assert!((a - 1.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9, "{a} {b}");
    }

    #[test]
    fn info_is_read_without_its_own_calls() {
        let info = "# Stats\r\ntotal_net_input_bytes:100\r\ntotal_net_output_bytes:250\r\n\
                    # CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.25\r\n# Memory\r\nused_memory:4096\r\n\
                    # Commandstats\r\ncmdstat_evalsha:calls=10,usec=5,usec_per_call=0.5\r\n\
                    cmdstat_info:calls=7,usec=1\r\ncmdstat_spublish:calls=3,usec=1\r\n";
        let shard = parse_info(info);
        assert_eq!(shard.calls, 13.0);
        assert_eq!((shard.bytes_in, shard.bytes_out), (100.0, 250.0));
        assert_eq!(shard.cpu, 3.75);
        assert_eq!(shard.memory, 4096.0);
    }

    /// A curve that is a line: `per_message` CPU seconds per message at any rate.
    fn line(per_message: f64) -> Curve {
        Curve::through(
            (1000.0, 1000.0 * per_message),
            (2000.0, 2000.0 * per_message),
        )
    }

    #[test]
    fn a_curve_is_read_off_its_segments_and_goes_on_with_the_last_slope() {
        // 400 µs per message up to 300/s, 250 µs per further message.
        let curve = Curve::through((300.0, 0.12), (900.0, 0.27));
        assert!((curve.at(150.0) - 0.06).abs() < 1e-12);
        assert!((curve.at(600.0) - 0.195).abs() < 1e-12);
        assert!((curve.at(1500.0) - 0.42).abs() < 1e-12);
        assert!((curve.per_message(300.0) - 400e-6).abs() < 1e-12);
        assert!((curve.further() - 250e-6).abs() < 1e-12);
        assert_eq!(curve.at(0.0), 0.0);
    }

    fn model() -> Model {
        Model {
            node_cpu: 0.01,
            node_rss: 10e6,
            user_cpu: 1e-6,
            user_rss: 20e3,
            send_cpu: line(100e-6),
            deliver_cpu: line(50e-6),
            forward_cpu: line(10e-6),
            redis_calls: 12.0,
            redis_in: 1000.0,
            redis_out: 500.0,
            redis_cpu: line(50e-6),
            redis_out_per_node: 100.0,
            redis_cpu_per_node: 2e-6,
            redis_idle_calls: 5.0,
            redis_idle_in: 200.0,
            redis_idle_out: 100.0,
            redis_idle_cpu: 0.001,
            redis_user: Shard {
                calls: 0.1,
                bytes_in: 3.0,
                bytes_out: 1.0,
                cpu: 1e-6,
                memory: 0.0,
            },
            redis_memory_per_message: 640.0,
            redis_memory_per_message_long: 1240.0,
            compact_max: 128.0,
        }
    }

    #[test]
    fn capacity_takes_the_nodes_the_work_needs_until_forwarding_alone_fills_a_node() {
        // 60,000 users at one a minute: 1,000 msg/s; a node has 0.7 - 0.01 - 0.01 cores for
        // 0.06 (users) + 0.15 (messages): one node.
        let c = model().capacity(60_000.0, 1.0 / 60.0);
        assert_eq!(c.nodes, Some(1.0));
        assert!((c.node_memory - (10e6 + 60_000.0 * 20e3)).abs() < 1.0);
        // 6M users: 100,000 msg/s, each node forwarding all of it: 1 core of 0.7.
        let c = model().capacity(6_000_000.0, 1.0 / 60.0);
        assert_eq!(c.nodes, None);
        assert!((c.redis_memory_per_day - 100_000.0 * 86_400.0 * 1240.0).abs() < 1.0);
    }

    #[test]
    fn the_model_adds_each_part_of_a_nodes_load() {
        let model = model();
        let load = Load {
            users: 1000.0,
            sent: 100.0,
            delivered: 100.0,
            total_rate: 300.0,
            nodes: 4.0,
        };
        let (cpu, rss) = model.node(load);
        assert!(
            (cpu - (0.01 + 0.001 + 0.01 + 0.005 + 0.003)).abs() < 1e-12,
            "{cpu}"
        );
        assert!((rss - 30e6).abs() < 1e-3, "{rss}");
        let redis = model.redis(load);
        assert_eq!(redis.calls, 4.0 * 5.0 + 1000.0 * 0.1 + 300.0 * 12.0);
        assert_eq!(
            redis.bytes_out,
            4.0 * 100.0 + 1000.0 * 1.0 + 300.0 * (500.0 + 100.0)
        );
    }
}
