//! `cargo xtask bench`: what authentication costs a service, per request, against an
//! unauthenticated baseline and the raw signature-verification limit.
//!
//! 1. builds todo-api (`--release`; debug binaries with `--smoke`);
//! 2. runs the criterion micro-benchmarks of auth-core (`full`, `signature`,
//!    `signature_distinct`, `cache_hit`, `cache_miss` per algorithm) and reads their estimates
//!    from `target/criterion/` (skipped with `--smoke`);
//! 3. per algorithm, starts todo-api on a free 127.0.0.1 port with a static key source (the
//!    fixture public key, or the HS256 secret) and a temporary data directory, then drives load
//!    with the built-in driver: keep-alive HTTP/1.1 connections on one thread ([`poll_loop`]),
//!    closed loop;
//!    every run has a warm-up, then a measured window of fixed length. Runs: `GET /health`
//!    (baseline), `GET /whoami` with one repeated token, `GET /whoami` with a distinct token per
//!    request (more distinct tokens than the server's cache holds, cycled, so every request
//!    misses), `GET /todos` with one repeated token; then each `/whoami` mode again,
//!    interleaved with `/health` on the same connections ([`drive_paired`]): the difference the
//!    targets are judged on;
//! 4. reports requests/s, p50/p99 latency, **server CPU µs per request** (the server process's
//!    CPU clock, read at the ends of each of the window's [`SLICES`], divided by the responses in
//!    the slice; the median slice), the server's idle and
//!    peak RSS (`VmRSS`, `VmHWM`), its cache hits and misses (`/metrics`), and authenticated
//!    minus baseline CPU per request against the targets; writes `target/bench/bench.{md,json}`.
//!
//! When `taskset` exists and the process may run on two CPUs or more, the server runs on the
//! second of the CPUs it may use (core 1 on most machines) with one Tokio worker and the driver on
//! the first, and the micro-benchmarks run on the server's CPU before any server starts; otherwise
//! everything floats (the report says which).
//! Load never leaves 127.0.0.1.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use jsonwebtoken::Header;
use serde_json::{Value, json};

use crate::token::{Alg, signing_key};

mod instructions;

const ISSUER: &str = "http://127.0.0.1:4000";
const AUDIENCE: &str = "todo-api";

#[derive(Args, Clone)]
pub struct Bench {
    /// A few seconds on debug binaries, to prove the command works; asserts nothing about speed.
    #[arg(long)]
    pub smoke: bool,
    /// Seconds measured per run, after the warm-up.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Seconds of warm-up per run (same connections, not measured).
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// Rounds of every run; each figure is the round with the median server CPU per request.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Algorithms to run (repeatable); default all four.
    #[arg(long = "alg", value_enum)]
    pub algs: Vec<Alg>,
    /// The server's `auth.cache.max_entries` (`0`: cache off).
    #[arg(long, default_value_t = 10_000)]
    pub cache_entries: usize,
    /// Skip the criterion micro-benchmarks (no signature limit in the report).
    #[arg(long)]
    pub no_micro: bool,
    /// Skip `cargo build` (use the binaries already in target/).
    #[arg(long)]
    pub no_build: bool,
    /// The load driver polls without ever pausing. By default it naps for a few µs whenever a
    /// pass over its connections finds no response, so its core rests while the server works:
    /// where the two cores are SMT siblings, a busy driver slows the server it measures.
    #[arg(long)]
    pub spin: bool,
    /// Count instructions per request under callgrind instead of timing load (needs valgrind):
    /// the same count on a quiet or a busy machine. See `bench/instructions.rs`.
    #[arg(long)]
    pub instructions: bool,
    /// With `--instructions`: requests per phase.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
}

impl Bench {
    /// The settings of `--smoke`: debug binaries, tiny runs, no micro-benchmarks.
    pub fn smoke() -> Self {
        Self {
            smoke: true,
            duration: 0.5,
            warmup: 0.2,
            rounds: 1,
            connections: 4,
            algs: Vec::new(),
            cache_entries: 100,
            no_micro: true,
            no_build: false,
            spin: false,
            instructions: false,
            requests: 20,
        }
    }
}

impl Bench {
    /// The algorithms asked for; all four by default.
    fn algs(&self) -> Vec<Alg> {
        if self.algs.is_empty() {
            vec![Alg::RS256, Alg::ES256, Alg::EdDSA, Alg::HS256]
        } else {
            self.algs.clone()
        }
    }
}

/// Pre-built request bytes, cycled by the load threads.
type Requests = Arc<Vec<Vec<u8>>>;

/// One measured window.
#[derive(Debug, Clone)]
pub struct Run {
    pub alg: &'static str,
    pub route: &'static str,
    pub mode: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The median over the window's slices of the server's CPU per response ([`SLICES`]).
    pub cpu_us_per_request: f64,
    /// The server's CPU over the whole window per response.
    pub cpu_us_per_request_window: f64,
    /// The load driver's own CPU use over the window, in % of one core. Where the driver's
    /// core shares execution units with the server's (SMT siblings), a busy driver slows the
    /// server it measures.
    pub driver_busy_percent: f64,
    pub cache_hits: Option<f64>,
    pub cache_misses: Option<f64>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The server's CPU use over the window, in % of one core: about 100 when the driver keeps
    /// it saturated.
    fn busy_percent(&self) -> f64 {
        self.cpu_us_per_request_window * self.rps() / 1e4
    }
}

/// One server (one key source) and its runs.
#[derive(Debug, Clone)]
pub struct Server {
    pub alg: &'static str,
    pub idle_rss_kib: u64,
    pub peak_rss_kib: u64,
    pub end_rss_kib: u64,
    pub load_seconds: f64,
    pub runs: Vec<Run>,
    /// Per run: server CPU µs per request minus the baseline's (median of per-round differences
    /// of the separate windows).
    pub extra_us: Vec<f64>,
    /// Per run: minus the baseline's, interleaved with it ([`drive_paired`]; median over rounds of
    /// each round's median pair). For the `/whoami` runs, which the targets judge; else `None`.
    pub paired_us: Vec<Option<f64>>,
    /// Per round: the signature limits measured right after that round's distinct-token window,
    /// with that round's distinct minus baseline (empty for HS256, `--no-micro` and `--smoke`).
    pub round_limits: Vec<RoundLimit>,
}

/// One round's distinct-token cost and the limits criterion measured next to it.
#[derive(Debug, Clone, Copy)]
pub struct RoundLimit {
    /// `/whoami` distinct minus `/health`, server CPU µs per request, in this round: its
    /// interleaved run's median pair ([`drive_paired`]).
    pub extra_us: f64,
    /// The same from this round's two separate windows, seconds apart (reported, not judged).
    pub windows_us: f64,
    /// criterion's median of `signature/<alg>`, µs.
    pub signature_us: f64,
    /// criterion's median of `signature_distinct/<alg>`, µs.
    pub signature_distinct_us: f64,
}

impl RoundLimit {
    /// Each round's ratio to its own limit (`distinct`: to the distinct-signature limit).
    fn ratios(rounds: &[RoundLimit], distinct: bool) -> Vec<f64> {
        rounds
            .iter()
            .map(|r| {
                r.extra_us
                    / if distinct {
                        r.signature_distinct_us
                    } else {
                        r.signature_us
                    }
            })
            .collect()
    }

    /// The median over rounds of each round's ratio to its own limit. `None` without rounds.
    pub fn median_ratio(rounds: &[RoundLimit], distinct: bool) -> Option<f64> {
        if rounds.is_empty() {
            return None;
        }
        Some(median(&mut Self::ratios(rounds, distinct)))
    }

    /// The verdict of the per-round ratios against `target`: "met" only when every round
    /// meets it; a median that meets it with a round over it is "met by the median only" and
    /// unsettled (the host's noise as much as the code's), and a median over it is "NOT met".
    /// The rounds follow, to three decimals (at two, 1.1502 read as 1.15 and as over the line).
    pub fn verdict(rounds: &[RoundLimit], distinct: bool, target: f64) -> Option<String> {
        let ratios = Self::ratios(rounds, distinct);
        let lo = ratios.iter().copied().reduce(f64::min)?;
        let hi = ratios.iter().copied().reduce(f64::max)?;
        let median = Self::median_ratio(rounds, distinct)?;
        let over = ratios.iter().filter(|&&r| r > target).count();
        let listed = ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = if hi <= target {
            format!("met in every round ({listed})")
        } else if median <= target {
            format!(
                "met by the median only: {over} of {} rounds over {target} ({listed}): unsettled",
                ratios.len()
            )
        } else {
            format!("NOT met ({listed})")
        };
        if lo < 1.0 {
            out.push_str(", a round below its signature alone: the host's noise");
        }
        Some(out)
    }
}

/// Everything one `cargo xtask bench` measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub smoke: bool,
    /// The CPUs of the load driver and of the server, when pinned.
    pub pinned: Option<Cpus>,
    /// criterion's estimates: (group, alg) → median and mean, ns.
    pub micro: Vec<Micro>,
    pub servers: Vec<Server>,
}

pub fn run(args: Bench) -> anyhow::Result<()> {
    let args = if args.smoke {
        Bench {
            no_build: args.no_build,
            algs: args.algs,
            instructions: args.instructions,
            requests: args.requests,
            ..Bench::smoke()
        }
    } else {
        args
    };
    if args.instructions {
        return instructions::run(&args);
    }
    let report = bench(&args)?;
    let (md, json) = render(&report, &args);
    write_report(if args.smoke { "smoke" } else { "bench" }, &md, &json)?;
    served_every_run(&report)
}

/// Prints a report and writes it as `target/bench/<name>.md` and `.json`.
fn write_report(name: &str, md: &str, json: &Value) -> anyhow::Result<()> {
    let dir = crate::root().join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(format!("{name}.md")), md)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(json)?,
    )?;
    println!("{md}");
    println!("xtask: wrote target/bench/{name}.md and target/bench/{name}.json");
    Ok(())
}

/// Every run served requests, all of them 200 OK.
fn served_every_run(report: &Report) -> anyhow::Result<()> {
    for run in report.servers.iter().flat_map(|s| &s.runs) {
        if run.requests == 0 || run.errors > 0 {
            bail!(
                "{} {} {}: {} requests, {} errors",
                run.alg,
                run.route,
                run.mode,
                run.requests,
                run.errors
            );
        }
    }
    Ok(())
}

fn bench(args: &Bench) -> anyhow::Result<Report> {
    let root = crate::root();
    let bin = todo_api_binary(&root, args)?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = if !args.smoke && which("taskset") {
        Cpus::allowed()
    } else {
        None
    };
    let micro = if args.no_micro {
        Vec::new()
    } else {
        // The limits are measured on the core the server will run on, the other core idle.
        if let Some(cpus) = &pinned {
            pin_driver(&cpus.server.to_string())?;
        }
        micro_benchmarks(&root)?
    };
    if let Some(cpus) = &pinned {
        pin_driver(&cpus.driver.to_string())?;
    }
    // The driver's naps last a few µs, not the 50 µs of default timer slack: set for the
    // process's main thread, where `cargo xtask bench` runs this, and inherited by the threads it
    // starts from now on (the driver's). Best effort, Linux only.
    let _ = std::fs::write("/proc/self/timerslack_ns", "1000");
    println!(
        "xtask: bench on {cores} cores; {}",
        if let Some(cpus) = &pinned {
            format!(
                "server on CPU {} (one Tokio worker), load driver on CPU {}",
                cpus.server, cpus.driver
            )
        } else if args.smoke {
            "smoke: not pinned".to_owned()
        } else {
            "not pinned (no taskset, or fewer than two CPUs allowed): server and driver share the cores"
                .to_owned()
        }
    );

    let mut servers = Vec::new();
    for alg in args.algs() {
        servers.push(bench_server(&root, &bin, alg, args, pinned.as_ref())?);
    }
    Ok(Report {
        smoke: args.smoke,
        pinned,
        micro,
        servers,
    })
}

/// todo-api's binary: release (debug with `--smoke`), built first unless `--no-build`.
fn todo_api_binary(root: &Path, args: &Bench) -> anyhow::Result<PathBuf> {
    if !args.no_build {
        let mut build = crate::cargo();
        build.current_dir(root).args(["build", "-p", "todo-api"]);
        if !args.smoke {
            build.arg("--release");
        }
        anyhow::ensure!(
            build.status().context("running cargo build")?.success(),
            "cargo build -p todo-api failed"
        );
    }
    let profile = if args.smoke { "debug" } else { "release" };
    let bin = crate::target_dir(root).join(profile).join("todo-api");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing (run without --no-build)",
        bin.display()
    );
    Ok(bin)
}

/// Where the bench pins its processes: the first two CPUs this process may run on, as its
/// affinity mask allows (a container or `taskset` may allow CPUs other than 0 and 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpus {
    /// The load driver's CPU.
    pub driver: usize,
    /// The server's CPU (and the micro-benchmarks').
    pub server: usize,
    /// Every CPU allowed, as a `taskset` list (token minting uses them all).
    pub all: String,
}

impl Cpus {
    /// From `Cpus_allowed_list` in `/proc/self/status`; `None` with fewer than two CPUs or
    /// where it cannot be read.
    fn allowed() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
            .trim();
        Self::from_list(list)
    }

    /// From a CPU list as the kernel writes it (`0-3,8,10-11`).
    fn from_list(list: &str) -> Option<Self> {
        let mut cpus = list.split(',').flat_map(|range| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            // Nothing from a range that does not read.
            first
                .trim()
                .parse::<usize>()
                .ok()
                .zip(last.trim().parse::<usize>().ok())
                .into_iter()
                .flat_map(|(first, last)| first..=last)
        });
        let driver = cpus.next()?;
        let server = cpus.next()?;
        Some(Self {
            driver,
            server,
            all: list.to_owned(),
        })
    }
}

/// Pins the driver (this process and every thread it has and starts from now on) to `cpus`, a
/// `taskset` list.
fn pin_driver(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-pc", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("taskset could not pin the load driver to {cpus}");
    }
    Ok(())
}

/// Whether `cargo xtask bench --instructions` can run here: valgrind with callgrind_control.
pub(crate) fn callgrind_available() -> bool {
    which("valgrind") && which("callgrind_control")
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// One criterion micro-benchmark's estimates, ns per iteration.
#[derive(Debug, Clone)]
pub struct Micro {
    pub group: String,
    pub alg: String,
    /// The median of criterion's samples: the figure the report uses, the limit included.
    pub median_ns: f64,
    /// Their mean, for the JSON.
    pub mean_ns: f64,
}

/// `cargo bench -p auth-core --bench verify` with short windows, then criterion's median and
/// mean estimates (ns) from `target/criterion/<group>/<alg>/new/estimates.json`.
///
/// The median is the figure used. Host interference on this kind of machine comes in episodes
/// (a few hundred ms at +20–35 %, seen with a 30 ms-batch time series of RS256 verification) that
/// only ever add time; the mean carries whatever part of them fell in the window, so a limit
/// measured through one comes out higher and the ratio against it lower. The median of
/// criterion's 100 samples ignores episodes shorter than half the window: a lower, steadier
/// limit, so a stricter target than the mean's.
fn micro_benchmarks(root: &Path) -> anyhow::Result<Vec<Micro>> {
    println!("xtask: criterion micro-benchmarks (auth-core, verify)");
    criterion(
        root,
        // Every group but the `signature_cold` diagnostic.
        "^(full|signature|signature_distinct|cache_hit|cache_miss|request)/",
        "1",
        "2",
    )?;
    read_estimates(
        root,
        &[
            "full",
            "signature",
            "signature_distinct",
            "cache_hit",
            "cache_miss",
        ],
        &["RS256", "ES256", "EdDSA", "HS256"],
    )
}

/// `signature/<alg>` and `signature_distinct/<alg>` again, shorter: measured inside each round
/// so that a limit and the server figure it divides were taken within seconds of each other.
/// This host's speed drifts over minutes (criterion's figures of one run came out 6 % above
/// another's while the servers' agreed within 3 %), and a limit from the start of the run
/// divided figures taken minutes later.
fn round_limits(root: &Path, alg: &str) -> anyhow::Result<(f64, f64)> {
    criterion(
        root,
        &format!("^signature(_distinct)?/{alg}$"),
        "0.5",
        "1.5",
    )?;
    let m = read_estimates(root, &["signature", "signature_distinct"], &[alg])?;
    Ok((m[0].median_ns / 1000.0, m[1].median_ns / 1000.0))
}

/// `cargo bench -p auth-core --bench verify -- <filter>` with the given windows (s), its
/// output quiet but for errors.
fn criterion(root: &Path, filter: &str, warm_up: &str, measure: &str) -> anyhow::Result<()> {
    let status = crate::cargo()
        .current_dir(root)
        .args([
            "bench",
            "-p",
            "auth-core",
            "--bench",
            "verify",
            "--",
            filter,
            "--warm-up-time",
            warm_up,
            "--measurement-time",
            measure,
        ])
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench -p auth-core failed");
    }
    Ok(())
}

/// criterion's median and mean estimates (ns) from
/// `target/criterion/<group>/<alg>/new/estimates.json`, groups outer, algorithms inner.
fn read_estimates(root: &Path, groups: &[&str], algs: &[&str]) -> anyhow::Result<Vec<Micro>> {
    let mut out = Vec::new();
    for &group in groups {
        for &alg in algs {
            let path = crate::target_dir(root)
                .join("criterion")
                .join(group)
                .join(alg)
                .join("new/estimates.json");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let v: Value = serde_json::from_str(&text)?;
            let estimate = |name: &str| {
                v[name]["point_estimate"]
                    .as_f64()
                    .with_context(|| format!("no {name} estimate in {}", path.display()))
            };
            out.push(Micro {
                group: group.to_owned(),
                alg: alg.to_owned(),
                median_ns: estimate("median")?,
                mean_ns: estimate("mean")?,
            });
        }
    }
    Ok(out)
}

fn alg_name(alg: Alg) -> &'static str {
    match alg {
        Alg::RS256 => "RS256",
        Alg::ES256 => "ES256",
        Alg::EdDSA => "EdDSA",
        Alg::HS256 => "HS256",
    }
}

fn bench_server(
    root: &Path,
    bin: &Path,
    alg: Alg,
    args: &Bench,
    // The CPUs, when the driver and the server are pinned.
    pinned: Option<&Cpus>,
) -> anyhow::Result<Server> {
    let name = alg_name(alg);
    // Never reused within the run: the cache admits a token the second time it verifies, so a
    // cycled pool would get cache help. Sized from a rate no server core here reaches; the
    // hits column of the report shows any reuse.
    // Per round: the distinct window, and the distinct side of its interleaved run.
    let paired_seconds = args.warmup + args.duration + (SETTLE * SLICES).as_secs_f64();
    let seconds = (args.warmup + args.duration + paired_seconds) * args.rounds.max(1) as f64;
    // The smoke's debug server is slower on one core but not pinned to one (ES256 served
    // 11 000 distinct tokens a second on two): the same ceiling, so its pool never runs out.
    let ceiling = rate_ceiling(alg);
    let distinct = ((ceiling * seconds) as usize).max(100);
    println!("xtask: {name}: minting {distinct} distinct tokens");
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // Minting runs before any server starts, on every core; the driver is pinned again after.
    if let Some(cpus) = pinned {
        pin_driver(&cpus.all)?;
    }
    let repeated = mint_tokens(alg, now, 1, "repeated")?;
    let distinct = mint_tokens(alg, now, distinct, "distinct")?;
    if let Some(cpus) = pinned {
        pin_driver(&cpus.driver.to_string())?;
    }

    let data_dir = std::env::temp_dir().join(format!("xtask-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    let log_path = data_dir.join("todo-api.log");
    let port = free_port()?;
    let mut cmd = if let Some(cpus) = pinned {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(cpus.server.to_string()).arg(bin);
        c.env("TOKIO_WORKER_THREADS", "1");
        c
    } else {
        Command::new(bin)
    };
    server_env(&mut cmd, root, alg, port, &data_dir, args.cache_entries);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?);
    let child = cmd.spawn().context("starting todo-api")?;
    let mut server = Guard {
        child,
        data_dir: data_dir.clone(),
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready(&mut server.child, addr, &log_path, Duration::from_secs(30))?;
    let pid = server.child.id();
    let idle_rss_kib = proc_status(pid, "VmRSS:")?;

    let health = Arc::new(vec![request("/health", None)]);
    let whoami_one = Arc::new(vec![request("/whoami", Some(&repeated[0]))]);
    let whoami_many = Arc::new(
        distinct
            .iter()
            .map(|t| request("/whoami", Some(t)))
            .collect::<Vec<_>>(),
    );
    let todos_one = Arc::new(vec![request("/todos", Some(&repeated[0]))]);
    let plan: [(&'static str, &'static str, Requests); 4] = [
        ("/health", "baseline", health),
        ("/whoami", "repeated", whoami_one),
        ("/whoami", "distinct", whoami_many),
        ("/todos", "repeated", todos_one),
    ];
    // HS256's target is absolute; smoke runs skip criterion.
    let measure_limits = !args.no_micro && !args.smoke && !matches!(alg, Alg::HS256);
    let mut round_limits_of = Vec::new();
    let started = Instant::now();
    let mut rounds: Vec<Vec<Run>> = vec![Vec::new(); plan.len()];
    // Per plan entry, per round: the median of its interleaved run's differences with /health
    // (the authenticated /whoami runs only).
    let mut paired: Vec<Vec<f64>> = vec![Vec::new(); plan.len()];
    let cursors: Vec<Arc<AtomicUsize>> = plan.iter().map(|_| Arc::default()).collect();
    for round in 1..=args.rounds.max(1) {
        for (i, (route, mode, requests)) in plan.iter().enumerate() {
            let (route, mode) = (*route, *mode);
            let before = cache_counters(addr);
            let measured = drive(addr, requests.clone(), cursors[i].clone(), args, pid)?;
            let after = cache_counters(addr);
            let delta = |f: fn(&(f64, f64)) -> f64| match (&before, &after) {
                (Some(b), Some(a)) => Some(f(a) - f(b)),
                _ => None,
            };
            let run = Run {
                alg: name,
                route,
                mode,
                requests: measured.requests,
                errors: measured.errors,
                seconds: measured.seconds,
                p50_us: measured.p50_us,
                p99_us: measured.p99_us,
                cpu_us_per_request: measured.cpu_us_per_request,
                cpu_us_per_request_window: measured.cpu_us_per_request_window,
                driver_busy_percent: measured.driver_busy_percent,
                cache_hits: delta(|c| c.0),
                cache_misses: delta(|c| c.1),
            };
            println!(
                "xtask: {name} round {round} {route} {mode}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, {:.2} µs CPU/req ({:.0} % busy; driver {:.0} % busy), {} errors",
                run.rps(),
                run.p50_us,
                run.p99_us,
                run.cpu_us_per_request,
                run.busy_percent(),
                run.driver_busy_percent,
                run.errors
            );
            rounds[i].push(run);
            // After the distinct-token window, both /whoami modes interleaved with /health
            // (`drive_paired`): the differences the targets are judged on.
            if mode == "distinct" {
                for j in [1, 2] {
                    let before = cache_counters(addr);
                    let mut diffs = drive_paired(
                        addr,
                        (plan[0].2.clone(), cursors[0].clone()),
                        (plan[j].2.clone(), cursors[j].clone()),
                        args,
                        pid,
                    )?;
                    if let (2, Some(before), Some(after)) = (j, before, cache_counters(addr))
                        && after.0 > before.0
                    {
                        bail!(
                            "{name}: {} cache hits in the interleaved distinct-token run: tokens were reused (raise `rate_ceiling`)",
                            after.0 - before.0
                        );
                    }
                    let (lo, hi) = (
                        diffs.iter().copied().fold(f64::INFINITY, f64::min),
                        diffs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    );
                    let extra = median(&mut diffs);
                    println!(
                        "xtask: {name} round {round} {} {} interleaved with /health: {extra:+.2} µs CPU/req (pairs {lo:+.2} to {hi:+.2})",
                        plan[j].0, plan[j].1
                    );
                    paired[j].push(extra);
                }
            }
            // Right after the distinct-token window, its limits, on the server's core (the
            // server idles meanwhile).
            if mode == "distinct" && measure_limits {
                if let Some(cpus) = pinned {
                    pin_driver(&cpus.server.to_string())?;
                }
                let (signature_us, signature_distinct_us) = round_limits(root, name)?;
                if let Some(cpus) = pinned {
                    pin_driver(&cpus.driver.to_string())?;
                }
                let windows_us = rounds[i][round - 1].cpu_us_per_request
                    - rounds[0][round - 1].cpu_us_per_request;
                let extra_us = paired[i][round - 1];
                println!(
                    "xtask: {name} round {round} limits: signature {signature_us:.2} µs, distinct signatures {signature_distinct_us:.2} µs; distinct minus /health {extra_us:+.2} µs interleaved = {:.2} × / {:.2} × (separate windows {windows_us:+.2} µs = {:.2} ×)",
                    extra_us / signature_us,
                    extra_us / signature_distinct_us,
                    windows_us / signature_us,
                );
                round_limits_of.push(RoundLimit {
                    extra_us,
                    windows_us,
                    signature_us,
                    signature_distinct_us,
                });
            }
        }
    }
    // Per mode, the round with the median CPU per request: robust to a burst of other work on
    // a shared machine. Errors of every round count.
    // Authenticated minus baseline: the median over rounds of each round's difference (a burst of
    // other work on the machine then shifts both sides of a difference alike).
    let extra_us: Vec<f64> = rounds
        .iter()
        .map(|rs| {
            let mut diffs: Vec<f64> = rs
                .iter()
                .zip(&rounds[0])
                .map(|(r, base)| r.cpu_us_per_request - base.cpu_us_per_request)
                .collect();
            diffs.sort_by(f64::total_cmp);
            diffs[diffs.len() / 2]
        })
        .collect();
    let paired_us = paired
        .iter_mut()
        .map(|per_round| (!per_round.is_empty()).then(|| median(per_round)))
        .collect();
    let runs = rounds
        .into_iter()
        .map(|mut rs| {
            let errors = rs.iter().map(|r| r.errors).sum();
            // A distinct-token window with a cache hit in any round voids the figure, not only
            // in the median round.
            let distinct_hits: f64 = rs
                .iter()
                .filter(|r| r.mode == "distinct")
                .filter_map(|r| r.cache_hits)
                .sum();
            rs.sort_by(|a, b| a.cpu_us_per_request.total_cmp(&b.cpu_us_per_request));
            let mut median = rs.swap_remove(rs.len() / 2);
            median.errors = errors;
            if distinct_hits > 0.0 {
                median.cache_hits = Some(distinct_hits);
            }
            median
        })
        .collect();
    // The cursors only grow (a request is `cursor % len`): past its pool's end, the distinct
    // set sent some token twice, and the cache may have admitted it.
    let sent = cursors[2].load(Ordering::Relaxed);
    if sent > plan[2].2.len() {
        bail!(
            "{name}: {sent} distinct-token requests from a pool of {}: tokens were reused (raise `rate_ceiling`)",
            plan[2].2.len()
        );
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let peak_rss_kib = proc_status(pid, "VmHWM:")?;
    let end_rss_kib = proc_status(pid, "VmRSS:")?;
    drop(server);
    Ok(Server {
        alg: name,
        idle_rss_kib,
        peak_rss_kib,
        end_rss_kib,
        load_seconds,
        runs,
        extra_us,
        paired_us,
        round_limits: round_limits_of,
    })
}

/// todo-api's configuration for a bench: 127.0.0.1:`port`, the fixture key of `alg` as a static
/// key source (the HS256 secret for HS256), `cache_entries` in its verified-token cache, its data
/// in `data_dir`, warnings only in its log.
fn server_env(
    cmd: &mut Command,
    root: &Path,
    alg: Alg,
    port: u16,
    data_dir: &Path,
    cache_entries: usize,
) {
    let keys = root.join("fixtures/keys");
    cmd.current_dir(root)
        .env("TODO_API__SERVER__HOST", "127.0.0.1")
        .env("TODO_API__SERVER__PORT", port.to_string())
        .env("TODO_API__AUTH__ISSUER", ISSUER)
        .env("TODO_API__AUTH__AUDIENCE", AUDIENCE)
        // The local environment's default key source is token-service's JWKS: empty is unset.
        .env("TODO_API__AUTH__JWKS_URL", "")
        .env(
            "TODO_API__AUTH__CACHE__MAX_ENTRIES",
            cache_entries.to_string(),
        )
        .env("TODO_API__DATABASE__DATA_DIR", data_dir)
        .env("TODO_API__LOG__LEVEL", "warn")
        .env_remove("RUST_LOG");
    match alg {
        Alg::HS256 => cmd
            .env("TODO_API__AUTH__SECRET_FILE", keys.join("hs256-secret.txt"))
            .env("TODO_API__AUTH__ALGORITHMS", r#"["HS256"]"#),
        _ => {
            let pem = match alg {
                Alg::RS256 => "rsa-public.pem",
                Alg::ES256 => "ec-public.pem",
                _ => "ed25519-public.pem",
            };
            cmd.env("TODO_API__AUTH__PUBLIC_KEY", keys.join(pem))
        }
    };
}

/// Stops the server and removes its data directory, whatever happens.
struct Guard {
    child: Child,
    data_dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    log: &Path,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let health = request("/health", None);
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("todo-api exited ({status}) before serving:\n{log}");
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            // Accepted is not answering (under valgrind, far from it): the read is bounded too.
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut buf = Vec::new();
            if stream.write_all(&health).is_ok()
                && read_response(&mut stream, &mut buf).is_ok_and(|s| s == 200)
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "todo-api did not answer /health on {addr} within {} s",
                within.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests per second of distinct `/whoami` tokens one release server core here never reaches
/// (the fastest host yet, a Zen 5: about 50 000 RS256, 22 000 ES256, 31 000 EdDSA, 124 000
/// HS256). The pool is sized from it for the whole run, and a run that sends more distinct
/// requests than the pool holds fails rather than reuse a token.
fn rate_ceiling(alg: Alg) -> f64 {
    match alg {
        Alg::RS256 => 65_000.0,
        Alg::ES256 => 29_000.0,
        Alg::EdDSA => 40_000.0,
        Alg::HS256 => 160_000.0,
    }
}

/// `count` tokens for todo-api, each with its own `jti`. Signed with aws-lc-rs and a key
/// parsed once (jsonwebtoken re-parses, and for RSA re-validates, the key on every call), so
/// hundreds of thousands of RS256 tokens take seconds, not minutes.
fn mint_tokens(alg: Alg, now: u64, count: usize, tag: &str) -> anyhow::Result<Vec<String>> {
    let (_, algorithm, kid) = signing_key(alg)?;
    let signer = Signer::new(alg)?;
    let mut header = Header::new(algorithm);
    header.kid = kid;
    header.typ = Some("at+jwt".into());
    let b64 = |bytes: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let header = b64(&serde_json::to_vec(&header)?);
    let mint = |i: usize| -> anyhow::Result<String> {
        // The claims token-service issues (RFC 9068 with this project's `username` and `roles`).
        let claims = json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "bench-user",
            "client_id": "bench",
            "username": "bench-user",
            "roles": ["user"],
            "scope": "todos:read todos:write tasks:read tasks:write",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": format!("bench-{tag}-{now}-{i}"),
        });
        let signing_input = format!("{header}.{}", b64(&serde_json::to_vec(&claims)?));
        let signature = signer.sign(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", b64(&signature)))
    };
    // RSA signing is slow: use every core.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                let mint = &mint;
                s.spawn(move || {
                    (start..(start + chunk).min(count))
                        .map(mint)
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(count);
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("minting panicked"))??,
            );
        }
        Ok(out)
    })
}

/// A fixture signing key, parsed once.
enum Signer {
    Rsa(aws_lc_rs::signature::RsaKeyPair),
    Ec(aws_lc_rs::signature::EcdsaKeyPair),
    Ed(aws_lc_rs::signature::Ed25519KeyPair),
    Hmac(Box<aws_lc_rs::hmac::Key>),
}

impl Signer {
    fn new(alg: Alg) -> anyhow::Result<Self> {
        use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
        let der = |name: &str| -> anyhow::Result<Vec<u8>> {
            let path = crate::root().join("fixtures/keys").join(name);
            let text =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok(pem::parse(text)?.into_contents())
        };
        let rejected = |e: aws_lc_rs::error::KeyRejected| anyhow::anyhow!("fixture key: {e}");
        Ok(match alg {
            Alg::RS256 => {
                Self::Rsa(RsaKeyPair::from_pkcs8(&der("rsa-private.pem")?).map_err(rejected)?)
            }
            Alg::ES256 => Self::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der("ec-private.pem")?,
                )
                .map_err(rejected)?,
            ),
            Alg::EdDSA => Self::Ed(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der("ed25519-private.pem")?)
                    .map_err(rejected)?,
            ),
            Alg::HS256 => {
                let path = crate::root().join("fixtures/keys/hs256-secret.txt");
                let secret = std::fs::read(&path)?;
                Self::Hmac(Box::new(aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    secret.trim_ascii(),
                )))
            }
        })
    }

    fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        use aws_lc_rs::rand::SystemRandom;
        let failed = |_| anyhow::anyhow!("signing failed");
        Ok(match self {
            Self::Rsa(key) => {
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut out,
                )
                .map_err(failed)?;
                out
            }
            Self::Ec(key) => key
                .sign(&SystemRandom::new(), message)
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Self::Ed(key) => key.sign(message).as_ref().to_vec(),
            Self::Hmac(key) => aws_lc_rs::hmac::sign(key, message).as_ref().to_vec(),
        })
    }
}

fn request(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}\r\n").into_bytes()
}

struct Measured {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    /// The median over the window's [`SLICES`] of the server's CPU per response.
    cpu_us_per_request: f64,
    /// The server's CPU over the whole window per response in it (the mean of the slices,
    /// weighted by their responses).
    cpu_us_per_request_window: f64,
    driver_busy_percent: f64,
}

/// Slices of a measured window. Its CPU per request is the median of theirs: the host this
/// runs on (a VM) slows a core now and then for a few hundred ms, by 20–35 % (seen in a 30 ms
/// time series of RS256 verifications), and such an episode only ever adds CPU per request; the
/// median of 10 slices ignores episodes that cover fewer than half of them. The micro-benchmark
/// limits are criterion's medians likewise ([`micro_benchmarks`]), so both sides of a ratio are
/// read the same way.
const SLICES: u32 = 10;

/// Closed-loop load: `connections` keep-alive connections, cycling through `requests` from
/// `next` on (it carries over between rounds, so a distinct token is not reused while the
/// server's cache may still hold it); warm-up, then a measured window with the server's CPU time
/// and the responses counted at the start and end of each of its [`SLICES`].
///
/// One thread drives every connection and never blocks: its sockets are non-blocking and it
/// polls them in turn, so a response written by the server never has to wake a sleeping reader.
/// With one blocked thread per connection, every response cost the server a cross-core wake-up
/// whose price depends on how idle the driver's core is, i.e. on the route's own speed: a slow
/// route then looked slower still, per request, than its own work (see
/// `docs/performance-rounds.md`, "At the reference run").
fn drive(
    addr: SocketAddr,
    requests: Requests,
    next: Arc<AtomicUsize>,
    args: &Bench,
    pid: u32,
) -> anyhow::Result<Measured> {
    let driver = Driver::start(addr, args, vec![(requests, next)], 0, false);
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let server = ProcessClock::of(pid)?;
    // This process's CPU: the driver thread's, the main thread only sleeps meanwhile.
    let own = ProcessClock::of(std::process::id())?;
    let own_before = own.ns()?;
    let started = Instant::now();
    let cpu_before = server.ns()?;
    driver.recording.store(true, Ordering::SeqCst);
    let mut slices = Vec::with_capacity(SLICES as usize);
    let (mut cpu, mut responses) = (cpu_before, 0);
    for slice in 1..=SLICES {
        let end = started + Duration::from_secs_f64(args.duration) * slice / SLICES;
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let (cpu_now, responses_now) = (server.ns()?, driver.done.load(Ordering::SeqCst));
        slices.push(cpu_us_per_response(
            cpu_now - cpu,
            responses_now - responses,
        ));
        (cpu, responses) = (cpu_now, responses_now);
    }
    driver.recording.store(false, Ordering::SeqCst);
    let cpu_after = cpu;
    let own_after = own.ns()?;
    let seconds = started.elapsed().as_secs_f64();
    let (mut latencies, errors) = driver.finish()?;
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[i])
    };
    let requests = latencies.len() as u64;
    let cpu_us = (cpu_after - cpu_before) as f64 / 1e3;
    let driver_busy_percent = (own_after - own_before) as f64 / 1e7 / seconds;
    Ok(Measured {
        requests,
        errors,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_us_per_request: median(&mut slices),
        cpu_us_per_request_window: if requests == 0 {
            0.0
        } else {
            cpu_us / requests as f64
        },
        driver_busy_percent,
    })
}

/// The load driver's thread ([`poll_loop`]) and what the measuring thread shares with it.
struct Driver {
    thread: std::thread::JoinHandle<io::Result<(Vec<u32>, u64)>>,
    stop: Arc<AtomicBool>,
    /// Whether responses are counted (and their latencies kept).
    recording: Arc<AtomicBool>,
    /// Responses counted so far.
    done: Arc<AtomicU64>,
    /// Which of the request sets the next request comes from.
    phase: Arc<AtomicUsize>,
}

impl Driver {
    /// Starts `args.connections` connections sending from `sets[phase]`.
    fn start(
        addr: SocketAddr,
        args: &Bench,
        sets: Vec<(Requests, Arc<AtomicUsize>)>,
        phase: usize,
        recording: bool,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let recording = Arc::new(AtomicBool::new(recording));
        let done = Arc::new(AtomicU64::new(0));
        let phase = Arc::new(AtomicUsize::new(phase));
        let connections = args.connections.max(1);
        let nap = (!args.spin).then_some(NAP);
        let thread = {
            let (stop, recording, done, phase) =
                (stop.clone(), recording.clone(), done.clone(), phase.clone());
            std::thread::spawn(move || {
                let shared = Shared {
                    sets: &sets,
                    phase: &phase,
                    stop: &stop,
                    recording: &recording,
                    done: &done,
                };
                poll_loop(addr, connections, shared, nap)
            })
        };
        Self {
            thread,
            stop,
            recording,
            done,
            phase,
        }
    }

    /// Stops the driver: the latencies (µs) and non-200 responses it recorded.
    fn finish(self) -> anyhow::Result<(Vec<u32>, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
            .context("load connection")
    }
}

/// How long [`drive_paired`] lets the requests of the set it left drain before it counts.
const SETTLE: Duration = Duration::from_millis(50);

/// `other` minus `baseline` in server CPU µs per request, measured in interleaved slices: the
/// same connections alternate between the two request sets, [`SLICES`] pairs of slices of
/// `duration / SLICES` each (in ABBA order, so a steady drift cancels), each slice counted after
/// [`SETTLE`]. Returns each pair's difference.
///
/// Why: on the shared hosts this runs on, the cost of the same request steps between levels for
/// seconds at a time (`/health` at about 7.6 or 9.5 µs), and a difference of two windows
/// seconds apart may straddle a step. Adjacent slices usually see the same level; the median of
/// the pairs' differences ignores those that straddle one.
fn drive_paired(
    addr: SocketAddr,
    baseline: (Requests, Arc<AtomicUsize>),
    other: (Requests, Arc<AtomicUsize>),
    args: &Bench,
    pid: u32,
) -> anyhow::Result<Vec<f64>> {
    let driver = Driver::start(addr, args, vec![baseline, other], 1, true);
    let server = ProcessClock::of(pid)?;
    // Warm-up: both sets, the other first (the baseline has just run on its own).
    std::thread::sleep(Duration::from_secs_f64(args.warmup / 2.0));
    driver.phase.store(0, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs_f64(args.warmup / 2.0));
    let slice = Duration::from_secs_f64(args.duration) / SLICES;
    let measure = |side: usize| -> anyhow::Result<f64> {
        driver.phase.store(side, Ordering::SeqCst);
        std::thread::sleep(SETTLE);
        let (cpu, responses) = (server.ns()?, driver.done.load(Ordering::SeqCst));
        std::thread::sleep(slice);
        let (cpu_now, responses_now) = (server.ns()?, driver.done.load(Ordering::SeqCst));
        Ok(cpu_us_per_response(
            cpu_now - cpu,
            responses_now - responses,
        ))
    };
    let mut diffs = Vec::with_capacity(SLICES as usize);
    for pair in 0..SLICES {
        let (first, second) = if pair % 2 == 0 { (0, 1) } else { (1, 0) };
        let a = measure(first)?;
        let b = measure(second)?;
        let (base, other) = if first == 0 { (a, b) } else { (b, a) };
        diffs.push(other - base);
    }
    let (_, errors) = driver.finish()?;
    if errors > 0 {
        bail!("{errors} non-200 responses in an interleaved run");
    }
    Ok(diffs)
}

/// A slice's server CPU per response, in µs, from its CPU ns and responses. A slice without a
/// response (a stall) costs without limit, rather than dropping out.
fn cpu_us_per_response(cpu_ns: u64, responses: u64) -> f64 {
    if responses > 0 {
        cpu_ns as f64 / 1e3 / responses as f64
    } else {
        f64::INFINITY
    }
}

/// The median of `values` (0 for none).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The CPU-time clock of a process (all its threads, user and kernel): the kernel's own
/// accounting of it, in ns, where `/proc/<pid>/stat` rounds it to 10 ms ticks.
struct ProcessClock(nix::time::ClockId);

impl ProcessClock {
    /// Linux only (nix has no `clock_getcpuclockid` on macOS): elsewhere the bench says so,
    /// and the rest of xtask (`dev`, `test`, `dev-token`) still builds.
    #[cfg(target_os = "linux")]
    fn of(pid: u32) -> anyhow::Result<Self> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        Ok(Self(
            nix::time::clock_getcpuclockid(pid).context("the server's CPU clock")?,
        ))
    }

    #[cfg(not(target_os = "linux"))]
    fn of(_pid: u32) -> anyhow::Result<Self> {
        bail!("cargo xtask bench reads a process's CPU clock and /proc: it runs on Linux only")
    }

    fn ns(&self) -> anyhow::Result<u64> {
        let t = nix::time::clock_gettime(self.0).context("reading the server's CPU clock")?;
        Ok(u64::try_from(t.tv_sec())? * 1_000_000_000 + u64::try_from(t.tv_nsec())?)
    }
}

/// Request sets a driver sends from, each with its cursor: the index of its next request,
/// modulo their number (a cursor carries over between runs, so a distinct token is never sent
/// twice).
type Sets = [(Requests, Arc<AtomicUsize>)];

/// What the measuring thread and the driver thread ([`Driver`]) share.
#[derive(Clone, Copy)]
struct Shared<'a> {
    /// The request sets.
    sets: &'a Sets,
    /// Which set the next request comes from.
    phase: &'a AtomicUsize,
    stop: &'a AtomicBool,
    /// Whether responses are counted now (the measured window).
    recording: &'a AtomicBool,
    /// Responses counted so far.
    done: &'a AtomicU64,
}

/// One keep-alive connection of [`poll_loop`]: the request in flight and what has been read.
struct Conn {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    sent_at: Instant,
}

/// How long the driver naps after a pass that found no response: well below what 16 requests
/// in flight keep the server busy for (16 × 6 µs at the cheapest route), so the server never
/// waits for the driver (each run's "server busy %" shows it), and long enough that a pass
/// usually finds several responses, so the driver's core rests most of the time it is not
/// sending. A timed nap, not a blocking wait on the sockets, so the server's reply never has to
/// wake the driver (that wake-up would be charged to the server).
const NAP: Duration = Duration::from_micros(40);

/// The driver's loop: each connection has one request in flight; a connection whose response
/// is complete gets the next request at once. Each pass asks the kernel once which connections
/// have something to read (`epoll_wait` with a zero timeout, through mio: it never blocks) and reads only those; a
/// pass that finds nothing naps for `nap`. Returns the latencies (µs) and non-200 responses of
/// the recorded window.
fn poll_loop(
    addr: SocketAddr,
    connections: usize,
    shared: Shared<'_>,
    nap: Option<Duration>,
) -> io::Result<(Vec<u32>, u64)> {
    let Shared {
        sets,
        phase,
        stop,
        recording,
        done,
    } = shared;
    use mio::{Events, Interest, Poll, Token};

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(connections);
    let send = |conn: &mut Conn| -> io::Result<()> {
        let (requests, next) = &sets[phase.load(Ordering::Relaxed)];
        let i = next.fetch_add(1, Ordering::Relaxed) % requests.len();
        conn.sent_at = Instant::now();
        write_all_nonblocking(&mut conn.stream, &requests[i])
    };
    let open = |poll: &Poll, token: usize| -> io::Result<Conn> {
        let stream = connect(addr)?;
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(token), Interest::READABLE)?;
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(4096),
            sent_at: Instant::now(),
        };
        send(&mut conn)?;
        Ok(conn)
    };
    let mut conns = (0..connections)
        .map(|i| open(&poll, i))
        .collect::<io::Result<Vec<_>>>()?;
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut errors = 0;
    let mut chunk = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::ZERO))?;
        if events.is_empty() {
            if let Some(nap) = nap {
                std::thread::sleep(nap);
            }
            continue;
        }
        for event in &events {
            let i = event.token().0;
            // Nothing complete yet: the rest comes with a later event.
            let Some(status) = read_ready(&mut conns[i], &mut chunk) else {
                continue;
            };
            let conn = &mut conns[i];
            let micros = conn.sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32;
            if recording.load(Ordering::Relaxed) {
                latencies.push(micros);
                done.fetch_add(1, Ordering::Relaxed);
                if status != Some(200) {
                    errors += 1;
                }
            }
            match status {
                // A response, and the connection stays open: the next request.
                Some(_) if !event.is_read_closed() => send(conn)?,
                // The server closed the connection, perhaps with its response in the same
                // edge (or answered garbage): count it, reconnect.
                _ => {
                    poll.registry().deregister(&mut conn.stream)?;
                    *conn = open(&poll, i)?;
                }
            }
        }
    }
    // Every connection still has one request in flight: its answer is awaited (not counted), so
    // the server has done this run's work before the next run's counters are read. Dropped
    // unanswered, a repeated token's requests could land as cache hits in the next run's count.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut waiting = vec![true; conns.len()];
    while waiting.contains(&true) && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for event in &events {
            let i = event.token().0;
            if waiting[i] && read_ready(&mut conns[i], &mut chunk).is_some() {
                waiting[i] = false;
            }
        }
    }
    Ok((latencies, errors))
}

/// Reads what a connection has ready. Readiness is edge-triggered: it reads until the response
/// is complete or the socket has nothing more (a closed-loop server sends nothing past the
/// response). `None`: nothing complete yet; `Some(Some(status))`: a response; `Some(None)`:
/// the connection closed or answered garbage.
fn read_ready(conn: &mut Conn, chunk: &mut [u8]) -> Option<Option<u16>> {
    loop {
        match conn.stream.read(chunk) {
            Ok(0) => return Some(None),
            Ok(n) => {
                conn.buf.extend_from_slice(&chunk[..n]);
                match parse_response(&conn.buf) {
                    Ok(Some((status, end))) => {
                        conn.buf.drain(..end);
                        return Some(Some(status));
                    }
                    Ok(None) => {}
                    Err(_) => return Some(None),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(None),
        }
    }
}

/// `write_all` on a non-blocking socket (a request fits the socket buffer; spin if it does not).
fn write_all_nonblocking(stream: &mut impl Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body) and returns its status. `buf`
/// carries bytes read past the response over to the next call.
pub(crate) fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<u16> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((status, end)) = parse_response(buf)? {
            buf.drain(..end);
            return Ok(status);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status and length of the complete HTTP/1.1 response at the start of `buf`
/// (Content-Length or chunked body), or `None` while it is incomplete.
fn parse_response(buf: &[u8]) -> io::Result<Option<(u16, usize)>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed response");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut length = None;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().map_err(|_| bad())?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let end = if let Some(length) = length {
        head_end + length
    } else if chunked {
        match buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
            Some(pos) => head_end + pos + 5,
            None => return Ok(None),
        }
    } else {
        head_end
    };
    Ok((buf.len() >= end).then_some((status, end)))
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB.
pub(crate) fn proc_status(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// `auth_cache_hits_total` and `auth_cache_misses_total` from the server's `/metrics`.
fn cache_counters(addr: SocketAddr) -> Option<(f64, f64)> {
    let mut stream = connect(addr).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Some((
        value("auth_cache_hits_total"),
        value("auth_cache_misses_total"),
    ))
}

/// The markdown table and the JSON of a report.
fn render(report: &Report, args: &Bench) -> (String, Value) {
    let limit = |group: &str, alg: &str| -> Option<f64> {
        report
            .micro
            .iter()
            .find(|m| m.group == group && m.alg == alg)
            .map(|m| m.median_ns / 1000.0)
    };
    let mut md = String::new();
    md.push_str(&format!(
        "## cargo xtask bench{}\n\n{} s measured per run after {} s warm-up, {} round(s) (figures \
         of the round with the median server CPU per request), {} connections, server cache {} \
         entries, {}, {}. Server CPU per request: the median of the window's {SLICES} slices \
         (the server's CPU clock, ns); busy %: over the whole window. Minus /health, \
         interleaved: /whoami and /health alternating on the same connections in {SLICES} pairs \
         of slices per round, the median pair, the median round; the targets are judged on it.\n\n",
        if report.smoke { " --smoke" } else { "" },
        args.duration,
        args.warmup,
        args.rounds,
        args.connections,
        args.cache_entries,
        match &report.pinned {
            Some(cpus) => format!(
                "server pinned to CPU {} with one Tokio worker, load driver on CPU {}",
                cpus.server, cpus.driver
            ),
            None => "server and load driver not pinned".to_owned(),
        },
        if args.spin {
            "the driver polls without pausing (--spin)"
        } else {
            "the driver naps while no response is ready"
        }
    ));
    md.push_str(
        "| alg | route | tokens | req/s | p50 µs | p99 µs | server CPU µs/req | server busy % | driver busy % | minus /health (separate windows, median of per-round differences) | minus /health, interleaved | cache hits/misses | errors |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut servers_json = Vec::new();
    let mut verdicts = Vec::new();
    for server in &report.servers {
        let mut runs_json = Vec::new();
        for ((r, &extra), &paired) in server
            .runs
            .iter()
            .zip(&server.extra_us)
            .zip(&server.paired_us)
        {
            let cache = match (r.cache_hits, r.cache_misses) {
                (Some(h), Some(m)) if r.mode != "baseline" => format!("{h:.0}/{m:.0}"),
                _ => "-".into(),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} |\n",
                r.alg,
                r.route,
                r.mode,
                r.rps(),
                r.p50_us,
                r.p99_us,
                r.cpu_us_per_request,
                r.busy_percent(),
                r.driver_busy_percent,
                if r.mode == "baseline" {
                    "-".to_owned()
                } else {
                    format!("{extra:+.2}")
                },
                paired.map_or_else(|| "-".to_owned(), |p| format!("{p:+.2}")),
                cache,
                r.errors
            ));
            runs_json.push(json!({
                "route": r.route,
                "tokens": r.mode,
                "requests": r.requests,
                "errors": r.errors,
                "seconds": r.seconds,
                "requests_per_second": r.rps(),
                "p50_us": r.p50_us,
                "p99_us": r.p99_us,
                "server_cpu_us_per_request": r.cpu_us_per_request,
                "server_cpu_us_per_request_window": r.cpu_us_per_request_window,
                "server_busy_percent": r.busy_percent(),
                "driver_busy_percent": r.driver_busy_percent,
                "server_cpu_us_minus_baseline": extra,
                "server_cpu_us_minus_baseline_interleaved": paired,
                "cache_hits": r.cache_hits,
                "cache_misses": r.cache_misses,
            }));
        }
        // The interleaved difference: the one the targets are judged on.
        let extra_of = |route: &str, mode: &str| {
            server
                .runs
                .iter()
                .zip(&server.paired_us)
                .find(|(r, _)| r.route == route && r.mode == mode)
                .and_then(|(_, &paired)| paired)
        };
        if let Some(extra) = extra_of("/whoami", "repeated") {
            verdicts.push(format!(
                "- {} repeated token (cache on): /whoami costs {extra:+.2} µs over /health, interleaved (target ≤ 1.5): {}",
                server.alg,
                if extra <= 1.5 { "met" } else { "NOT met" }
            ));
        }
        let distinct_hits = server
            .runs
            .iter()
            .find(|r| r.route == "/whoami" && r.mode == "distinct")
            .and_then(|r| r.cache_hits)
            .unwrap_or(0.0);
        if distinct_hits > 0.0 {
            verdicts.push(format!(
                "- {} distinct tokens: {distinct_hits} cache hits, tokens were reused (raise `rate_ceiling`): no valid figure",
                server.alg
            ));
        } else if let Some(extra) = extra_of("/whoami", "distinct") {
            if server.alg == "HS256" {
                verdicts.push(format!(
                    "- HS256 distinct tokens: /whoami costs {extra:+.2} µs over /health, interleaved (target ≤ 2): {}",
                    if extra <= 2.0 { "met" } else { "NOT met" }
                ));
            } else if let (Some(one), Some(many)) = (
                RoundLimit::median_ratio(&server.round_limits, false),
                RoundLimit::median_ratio(&server.round_limits, true),
            ) {
                // Each round against the limits criterion measured right after it: the median
                // of the per-round ratios.
                let limits = |f: fn(&RoundLimit) -> f64| {
                    server
                        .round_limits
                        .iter()
                        .map(|r| format!("{:.2}", f(r)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let verdict = |distinct| {
                    RoundLimit::verdict(&server.round_limits, distinct, 1.15).unwrap_or_default()
                };
                // Judged against the distinct-signature limit: a distinct token carries a
                // signature of its own, and verifying distinct signatures is the least that
                // costs (for ES256 measurably more than one signature over and over, whose
                // table entries stay in cache; for RS256 and EdDSA the two limits agree).
                verdicts.push(format!(
                    "- {} distinct tokens: /whoami costs {many:.3} × the distinct-signature limit measured next to each round (median of per-round ratios; limits {} µs) (target ≤ 1.15): {}",
                    server.alg,
                    limits(|r| r.signature_distinct_us),
                    verdict(true)
                ));
                verdicts.push(format!(
                    "  (not the verdict: {one:.3} × the one-signature limit measured next to each round, limits {} µs: {})",
                    limits(|r| r.signature_us),
                    verdict(false)
                ));
                let start = |name| limit(name, server.alg).map(|sig| extra / sig);
                if let (Some(one), Some(many)) = (start("signature"), start("signature_distinct")) {
                    verdicts.push(format!(
                        "  (not the verdict: against the limits of the run's start, {many:.3} × the distinct-signature one, {one:.3} × the one-signature one)"
                    ));
                }
            } else if let Some(sig) = limit("signature", server.alg) {
                // Against both limits: one signature verified over and over (`signature`), and
                // distinct signatures in turn (`signature_distinct`), which is what a distinct
                // token costs at the least.
                let ratio = extra / sig;
                match limit("signature_distinct", server.alg) {
                    Some(distinct_sig) => {
                        let judged = extra / distinct_sig;
                        verdicts.push(format!(
                            "- {} distinct tokens: /whoami costs {extra:+.2} µs over /health = {judged:.3} × the distinct-signature limit {distinct_sig:.2} µs (target ≤ 1.15): {}",
                            server.alg,
                            if judged <= 1.15 { "met" } else { "NOT met" }
                        ));
                        verdicts.push(format!(
                            "  (not the verdict: {ratio:.3} × the one-signature limit {sig:.2} µs)"
                        ));
                    }
                    None => verdicts.push(format!(
                        "- {} distinct tokens: /whoami costs {extra:+.2} µs over /health = {ratio:.3} × the one-signature limit {sig:.2} µs (target ≤ 1.15; no distinct-signature limit measured): {}",
                        server.alg,
                        if ratio <= 1.15 { "met" } else { "NOT met" }
                    )),
                }
            } else {
                verdicts.push(format!(
                    "- {} distinct tokens: /whoami costs {extra:+.2} µs over /health (no signature limit measured in this run)",
                    server.alg
                ));
            }
        }
        servers_json.push(json!({
            "alg": server.alg,
            "idle_rss_kib": server.idle_rss_kib,
            "peak_rss_kib": server.peak_rss_kib,
            "end_rss_kib": server.end_rss_kib,
            "load_seconds": server.load_seconds,
            "runs": runs_json,
            "round_limits": server.round_limits.iter().map(|r| json!({
                "distinct_minus_baseline_us": r.extra_us,
                "distinct_minus_baseline_separate_windows_us": r.windows_us,
                "signature_us": r.signature_us,
                "signature_distinct_us": r.signature_distinct_us,
            })).collect::<Vec<_>>(),
        }));
    }
    md.push_str("\n| server (key) | idle RSS MiB | peak RSS MiB (VmHWM) | after s of load |\n|---|---:|---:|---:|\n");
    for s in &report.servers {
        md.push_str(&format!(
            "| todo-api ({}) | {:.1} | {:.1} | {:.0} |\n",
            s.alg,
            s.idle_rss_kib as f64 / 1024.0,
            s.peak_rss_kib as f64 / 1024.0,
            s.load_seconds
        ));
    }
    if !report.micro.is_empty() {
        md.push_str(&match &report.pinned {
            Some(cpus) => format!(
                "\nauth-core micro-benchmarks (criterion median, same run, on the server's CPU {} with CPU {} idle), µs per token:\n\n",
                cpus.server, cpus.driver
            ),
            None => "\nauth-core micro-benchmarks (criterion median, same run), µs per token:\n\n"
                .to_owned(),
        });
        md.push_str("| alg | signature (limit, one signature) | signature, distinct ones (limit) | full `Auth::verify`, cache off | cache miss (full + cache work) | cache hit |\n|---|---:|---:|---:|---:|---:|\n");
        for alg in ["RS256", "ES256", "EdDSA", "HS256"] {
            let cell = |g| limit(g, alg).map_or("-".into(), |v| format!("{v:.2}"));
            md.push_str(&format!(
                "| {alg} | {} | {} | {} | {} | {} |\n",
                cell("signature"),
                cell("signature_distinct"),
                cell("full"),
                cell("cache_miss"),
                cell("cache_hit")
            ));
        }
    }
    if report.smoke {
        md.push_str(
            "\nSmoke run on debug binaries: proves the command works; the figures mean nothing.\n",
        );
    } else if !verdicts.is_empty() {
        md.push_str("\nTargets (server CPU per request, this run):\n\n");
        md.push_str(&verdicts.join("\n"));
        md.push('\n');
    }
    let micro_json: Vec<Value> = report
        .micro
        .iter()
        .map(|m| {
            json!({"group": m.group, "alg": m.alg, "median_ns": m.median_ns, "mean_ns": m.mean_ns})
        })
        .collect();
    let json = json!({
        "smoke": report.smoke,
        "pinned": report.pinned.is_some(),
        "cpus": report.pinned.as_ref().map(|c| json!({"server": c.server, "driver": c.driver})),
        "duration_seconds": args.duration,
        "warmup_seconds": args.warmup,
        "rounds": args.rounds,
        "connections": args.connections,
        "driver_spins": args.spin,
        "cache_entries": args.cache_entries,
        "micro": micro_json,
        "servers": servers_json,
        "targets": verdicts,
    });
    (md, json)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn pins_to_the_first_two_allowed_cpus() {
        let cpus = |list| Cpus::from_list(list).map(|c| (c.driver, c.server, c.all));
        assert_eq!(cpus("0-1"), Some((0, 1, "0-1".to_owned())));
        assert_eq!(cpus("2,5-7"), Some((2, 5, "2,5-7".to_owned())));
        assert_eq!(cpus("4-7"), Some((4, 5, "4-7".to_owned())));
        assert_eq!(cpus("3"), None);
        assert_eq!(cpus(""), None);
        assert_eq!(cpus("x,6,9"), Some((6, 9, "x,6,9".to_owned())));
    }

    #[test]
    fn requests_are_plain_http11() {
        assert_eq!(
            request("/whoami", Some("a.b.c")),
            b"GET /whoami HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer a.b.c\r\n\r\n"
        );
        assert_eq!(
            request("/health", None),
            b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
        );
    }

    #[test]
    fn reads_content_length_and_chunked_responses() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel")
                .unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"lo").unwrap();
            s.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
            )
            .unwrap();
        });
        let mut stream = connect(addr).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut stream, &mut buf).unwrap(), 200);
        // The whole body was consumed; anything left over starts the next response.
        assert!(
            buf.is_empty() || buf.starts_with(b"HTTP/1.1 401"),
            "{buf:?}"
        );
        assert_eq!(read_response(&mut stream, &mut buf).unwrap(), 401);
        assert!(buf.is_empty());
        server.join().unwrap();
    }

    #[test]
    fn reads_own_memory() {
        assert!(proc_status(std::process::id(), "VmHWM:").unwrap() > 0);
    }

    // `/proc/<pid>/stat`'s CPU ticks: an independent reading to hold the CPU clock to.
    /// utime + stime of a process (all its threads, live or exited), in clock ticks.
    fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> anyhow::Result<u64> {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("field {n} of /proc/{pid}/stat"))
        };
        Ok(field(14)? + field(15)?)
    }

    /// `USER_HZ` (`getconf CLK_TCK`), 100 on Linux unless told otherwise.
    fn clock_ticks_per_second() -> u64 {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    }

    #[test]
    fn a_process_clock_agrees_with_proc_stat_in_ns() {
        let pid = std::process::id();
        let clock = ProcessClock::of(pid).unwrap();
        let tick_ns = 1e9 / clock_ticks_per_second() as f64;
        let (ns_before, ticks_before) = (clock.ns().unwrap(), cpu_ticks(pid).unwrap());
        // Work (no sleeping) until /proc/<pid>/stat has counted 5 more ticks.
        let mut x = 0u64;
        while cpu_ticks(pid).unwrap() < ticks_before + 5 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let ns = (clock.ns().unwrap() - ns_before) as f64;
        // Each tick count is rounded to a tick at both ends: 5 ticks ± 2.
        assert!(
            (3.0 * tick_ns..=7.0 * tick_ns).contains(&ns),
            "{ns} ns against 5 ticks of {tick_ns} ns"
        );
    }

    #[test]
    fn each_round_is_divided_by_its_own_limit() {
        let r = |extra_us, signature_us, signature_distinct_us| RoundLimit {
            extra_us,
            windows_us: extra_us,
            signature_us,
            signature_distinct_us,
        };
        // Round 2's server and limit both ran slow: its ratio is as good as the others'.
        let rounds = [
            r(12.0, 10.0, 12.0),
            r(13.2, 12.0, 12.0),
            r(11.0, 10.0, 11.0),
        ];
        assert_eq!(RoundLimit::median_ratio(&rounds, false), Some(1.1));
        assert_eq!(RoundLimit::median_ratio(&rounds, true), Some(1.0));
        assert_eq!(RoundLimit::median_ratio(&[], false), None);
    }

    #[test]
    fn met_means_every_round_and_a_median_alone_is_unsettled() {
        let r = |extra_us, signature_us| RoundLimit {
            extra_us,
            windows_us: extra_us,
            signature_us,
            signature_distinct_us: signature_us,
        };
        let steady = [r(11.0, 10.0), r(11.2, 10.0), r(11.4, 10.0)];
        assert_eq!(
            RoundLimit::verdict(&steady, false, 1.15).unwrap(),
            "met in every round (1.100, 1.120, 1.140)"
        );
        // 1.1502 is over the line, though two decimals print it as 1.15.
        let median_only = [r(11.06, 10.0), r(11.25, 10.0), r(11.502, 10.0)];
        assert_eq!(
            RoundLimit::verdict(&median_only, true, 1.15).unwrap(),
            "met by the median only: 1 of 3 rounds over 1.15 (1.106, 1.125, 1.150): unsettled"
        );
        let missed = [r(11.4, 10.0), r(12.6, 10.0), r(12.6, 10.0)];
        assert_eq!(
            RoundLimit::verdict(&missed, true, 1.15).unwrap(),
            "NOT met (1.140, 1.260, 1.260)"
        );
        let impossible = [r(8.7, 10.0), r(11.0, 10.0), r(13.1, 10.0)];
        assert_eq!(
            RoundLimit::verdict(&impossible, false, 1.15).unwrap(),
            "met by the median only: 1 of 3 rounds over 1.15 (0.870, 1.100, 1.310): unsettled, a round below its signature alone: the host's noise"
        );
        assert_eq!(RoundLimit::verdict(&[], false, 1.15), None);
    }

    #[test]
    fn a_slice_costs_cpu_per_response_and_a_stall_costs_without_limit() {
        assert_eq!(cpu_us_per_response(25_000, 10), 2.5);
        assert_eq!(cpu_us_per_response(25_000, 0), f64::INFINITY);
    }

    #[test]
    fn median_of_slices() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0]), 3.0);
        // One slow slice (a host episode) does not move it; the mean would be 14.
        assert_eq!(median(&mut [10.0, 30.0, 10.0, 10.0, 10.0]), 10.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        // A stalled slice (no response) counts as the dearest, not as nothing.
        assert_eq!(median(&mut [10.0, f64::INFINITY, 12.0]), 12.0);
        assert_eq!(
            median(&mut [f64::INFINITY, f64::INFINITY, 12.0]),
            f64::INFINITY
        );
    }

    /// [`Bench::smoke`], without its `cargo build` under `cargo xtask test`: the test build
    /// made the debug binary, and another build with the plain build's features would compile
    /// again and replace it while other tests run it. Run otherwise (`cargo test -p xtask`), it
    /// builds, so it never measures a stale binary.
    pub(crate) fn smoke_args() -> Bench {
        Bench {
            no_build: std::env::var_os(crate::test::BINARIES_BUILT).is_some(),
            ..Bench::smoke()
        }
    }

    /// `cargo xtask bench --smoke`: every route and token mode briefly on debug binaries; fails
    /// when a response is not 200 or nothing was served.
    fn smoke() -> anyhow::Result<Report> {
        let report = bench(&smoke_args())?;
        served_every_run(&report)?;
        Ok(report)
    }

    /// `cargo xtask bench --smoke` end to end: builds todo-api (debug), serves every route and
    /// token mode for every algorithm; asserts only that every response was 200 OK.
    #[test]
    fn smoke_serves_every_route_and_token_mode() {
        let report = smoke().unwrap();
        assert_eq!(report.servers.len(), 4);
        for server in &report.servers {
            assert_eq!(server.runs.len(), 4);
            let distinct = &server.runs[2];
            assert_eq!((distinct.route, distinct.mode), ("/whoami", "distinct"));
            // Every distinct token is new to the server: not one hit.
            let (hits, misses) = (distinct.cache_hits.unwrap(), distinct.cache_misses.unwrap());
            assert!(misses > 0.0 && hits == 0.0, "{hits} hits, {misses} misses");
            // Both /whoami runs, and only they, have an interleaved difference with /health.
            let paired: Vec<bool> = server
                .paired_us
                .iter()
                .map(|p| p.is_some_and(f64::is_finite))
                .collect();
            assert_eq!(paired, [false, true, true, false], "{:?}", server.paired_us);
        }
    }

    #[test]
    fn distinct_tokens_differ_and_parse() {
        let tokens = mint_tokens(Alg::HS256, 1_750_000_000, 50, "t").unwrap();
        let mut unique = tokens.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 50);
        // Each is signed by the fixture secret over its own claims, valid at the bench's clock.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let secret = testkit::keys::hs_secret_bytes();
        for token in &tokens {
            let (input, signature) = token.rsplit_once('.').unwrap();
            assert_eq!(
                b64.decode(signature).unwrap(),
                testkit::hmac_sha256(&secret, input.as_bytes())
            );
            let (_, claims) = input.split_once('.').unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&b64.decode(claims).unwrap()).unwrap();
            assert_eq!(claims["aud"], AUDIENCE);
            assert!(claims["exp"].as_u64().unwrap() > 1_750_000_000);
        }
    }
}
