//! `cargo xtask soak --seconds N`: the three services under mixed authenticated reads and
//! writes for N seconds, on 127.0.0.1 only, bounded in time. Reports errors (must be 0), p99
//! latency, and each service's RSS after warm-up and at the end (flat within 20 % on runs of 30 s
//! or more). A short soak runs in `cargo xtask test`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::bench::{connect, free_port, proc_status, read_response};

#[derive(Args)]
pub struct Soak {
    /// How long the load runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Concurrent keep-alive connections driving load.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Use the binaries in target/debug (target/release) as they are (no build first).
    #[arg(long)]
    pub no_build: bool,
    /// Build and run release binaries (the memory figures of the README are from these).
    #[arg(long)]
    pub release: bool,
}

/// One running service.
struct Proc {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    /// Its stderr: quoted when it stops early (the directory goes with the soak).
    log: PathBuf,
}

impl Proc {
    /// An error naming the service and quoting the end of its log when it has exited.
    fn alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited ({status}); {}", self.name, self.log_tail()),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("the end of its log:\n{tail}")
    }

    /// A `kB` line of its `/proc/<pid>/status`, once it is known to be running.
    fn status_kib(&mut self, key: &str) -> anyhow::Result<u64> {
        self.alive()?;
        proc_status(self.child.id(), key)
    }
}

/// Tells the load threads to stop however the soak ends (an error included): they would
/// otherwise go on hammering a dead port.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a soak measured.
pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: f64,
    /// Each service's memory.
    pub rss: Vec<Rss>,
}

/// One service's resident memory over a soak, in KiB.
pub struct Rss {
    pub service: &'static str,
    /// `VmRSS` once ready, before any load.
    pub idle: u64,
    /// `VmRSS` after the warm-up.
    pub after_warmup: u64,
    /// `VmRSS` at the end of the load.
    pub end: u64,
    /// `VmHWM` at the end: the most it ever held.
    pub peak: u64,
}

pub fn run(args: Soak) -> anyhow::Result<()> {
    let root = crate::root();
    if !args.no_build {
        crate::build_services(&root, args.release)?;
    }
    let profile = if args.release { "release" } else { "debug" };
    let outcome = soak(
        &crate::target_dir(&root).join(profile),
        args.seconds,
        args.connections,
    )?;
    println!(
        "\nxtask soak: {} s ({profile} binaries), {} requests, {} errors, p99 {:.1} ms",
        args.seconds, outcome.requests, outcome.errors, outcome.p99_ms
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut growth_ok = true;
    for r in &outcome.rss {
        let growth = (r.end as f64 - r.after_warmup as f64) / r.after_warmup.max(1) as f64 * 100.0;
        println!(
            "  {:<13} RSS {:.1} MiB idle, {:.1} MiB after warm-up, {:.1} MiB at the end ({growth:+.1} %), peak {:.1} MiB",
            r.service,
            mib(r.idle),
            mib(r.after_warmup),
            mib(r.end),
            mib(r.peak)
        );
        growth_ok &= growth <= 20.0;
    }
    let report = json!({
        "seconds": args.seconds, "profile": profile, "requests": outcome.requests, "errors": outcome.errors, "p99_ms": outcome.p99_ms,
        "rss_kib": outcome.rss.iter().map(|r| json!({"service": r.service, "idle": r.idle, "after_warmup": r.after_warmup, "end": r.end, "peak": r.peak})).collect::<Vec<_>>(),
    });
    let dir = root.join("target/soak");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("soak.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    if outcome.errors > 0 {
        bail!("{} request(s) failed", outcome.errors);
    }
    if args.seconds >= 30 && !growth_ok {
        bail!("RSS grew by more than 20 % during the soak");
    }
    Ok(())
}

/// Starts the stack from `bin_dir`, drives load for `seconds`, stops it.
pub fn soak(bin_dir: &Path, seconds: u64, connections: usize) -> anyhow::Result<Outcome> {
    // A directory of its own per soak, not per process: the soak tests run in one process, in
    // parallel, and shared one, truncating each other's logs and deleting each other's data.
    static SOAKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SOAKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("xtask-soak-{}-{n}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir)?;
    let token_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let issuer = format!("http://{token_addr}");
    let common = |prefix: &str, port: u16| {
        vec![
            (format!("{prefix}__SERVER__PORT"), port.to_string()),
            (
                format!("{prefix}__DATABASE__DATA_DIR"),
                dir.join("data").display().to_string(),
            ),
            (format!("{prefix}__LOG__LEVEL"), "warn".to_owned()),
        ]
    };
    let mut token_env = common("TOKEN_SERVICE", token_addr.port());
    token_env.push(("TOKEN_SERVICE__TOKEN__ISSUER".into(), issuer.clone()));
    // Soak traffic signs in thousands of times: keep throttling for failures only (none here).
    let token = start(bin_dir, &dir, "token-service", token_addr, token_env)?;
    let mut procs = vec![token];
    for (name, prefix) in [("todo-api", "TODO_API"), ("tasks-api", "TASKS_API")] {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut env = common(prefix, addr.port());
        env.push((format!("{prefix}__AUTH__ISSUER"), issuer.clone()));
        env.push((
            format!("{prefix}__AUTH__JWKS_URL"),
            format!("{issuer}/.well-known/jwks.json"),
        ));
        procs.push(start(bin_dir, &dir, name, addr, env)?);
    }
    for p in &mut procs {
        wait_ready(p)?;
    }
    let rss_idle: Vec<u64> = procs
        .iter_mut()
        .map(|p| p.status_kib("VmRSS:"))
        .collect::<anyhow::Result<_>>()?;
    let (token_addr, todo, tasks) = (procs[0].addr, procs[1].addr, procs[2].addr);
    let admin = sign_in(token_addr, "admin", "admin-dev-password")?;
    let alice = sign_in(token_addr, "alice", "alice-dev-password")?;
    let bob = sign_in(token_addr, "bob", "bob-dev-password")?;

    // The mix, cycled by every connection: reads and writes on both APIs, and a sign-in now and then.
    let post = |path: &str, token: &str, body: Value| {
        let body = body.to_string();
        format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
    };
    let get = |path: &str, token: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\r\n")
            .into_bytes()
    };
    // Sign-ins spread over the three users: token-service bounds one account's sign-ins in
    // flight at once (`throttle.max_failures`), a defence against parallel password guessing.
    let sign_in_reqs: Arc<Vec<Vec<u8>>> = Arc::new(
        ["alice", "bob", "admin"]
            .iter()
            .map(|user| {
                let form = format!("grant_type=password&username={user}&password={user}-dev-password");
                format!("POST /token HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}", form.len()).into_bytes()
            })
            .collect(),
    );
    let mix: Arc<Vec<(SocketAddr, Vec<u8>)>> = Arc::new(vec![
        (todo, get("/todos?limit=20", &alice)),
        (todo, post("/todos", &admin, json!({"title": "soak"}))),
        (todo, get("/whoami", &bob)),
        (tasks, get("/tasks?limit=20", &alice)),
        (
            tasks,
            post(
                "/tasks",
                &alice,
                json!({"title": "soak", "description": "mixed load"}),
            ),
        ),
        (tasks, get("/tasks", &bob)),
        (tasks, post("/tasks", &bob, json!({"title": "bob's"}))),
        (tasks, get("/whoami", &alice)),
    ]);
    let sign_in_every = 50;

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let errors = Arc::new(AtomicU64::new(0));
    let recording = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..connections.max(1))
        .map(|w| {
            let (stop, errors, recording, mix, sign_in_reqs) = (
                stop.clone(),
                errors.clone(),
                recording.clone(),
                mix.clone(),
                sign_in_reqs.clone(),
            );
            std::thread::spawn(move || -> Vec<u32> {
                let mut streams: Vec<Option<(TcpStream, Vec<u8>)>> = vec![None, None, None];
                let addrs = [token_addr, todo, tasks];
                let mut latencies = Vec::new();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let (addr, req) = if i % sign_in_every == 0 {
                        (token_addr, &sign_in_reqs[w % sign_in_reqs.len()])
                    } else {
                        let (a, r) = &mix[i % mix.len()];
                        (*a, r)
                    };
                    i += 1;
                    let slot = addrs.iter().position(|a| *a == addr).unwrap_or(0);
                    let started = Instant::now();
                    let status = (|| -> std::io::Result<u16> {
                        if streams[slot].is_none() {
                            streams[slot] = Some((connect(addr)?, Vec::new()));
                        }
                        let (stream, buf) = streams[slot]
                            .as_mut()
                            .ok_or(std::io::ErrorKind::NotConnected)?;
                        stream.write_all(req)?;
                        read_response(stream, buf)
                    })()
                    .unwrap_or_else(|_| {
                        streams[slot] = None;
                        0
                    });
                    if !matches!(status, 200 | 201) {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("xtask soak: status {status} from {addr}");
                    }
                    if recording.load(Ordering::Relaxed) {
                        latencies
                            .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                }
                latencies
            })
        })
        .collect();
    let warmup = Duration::from_secs((seconds / 10).clamp(1, 10));
    std::thread::sleep(warmup);
    let rss_start: Vec<u64> = procs
        .iter_mut()
        .map(|p| p.status_kib("VmRSS:"))
        .collect::<anyhow::Result<_>>()?;
    recording.store(true, Ordering::SeqCst);
    std::thread::sleep(
        Duration::from_secs(seconds)
            .saturating_sub(warmup)
            .max(Duration::from_secs(1)),
    );
    let rss_end: Vec<u64> = procs
        .iter_mut()
        .map(|p| p.status_kib("VmRSS:"))
        .collect::<anyhow::Result<_>>()?;
    let rss_peak: Vec<u64> = procs
        .iter_mut()
        .map(|p| p.status_kib("VmHWM:"))
        .collect::<anyhow::Result<_>>()?;
    stop.store(true, Ordering::SeqCst);
    let mut latencies: Vec<u32> = Vec::new();
    for w in workers {
        latencies.extend(
            w.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?,
        );
    }
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    Ok(Outcome {
        requests: latencies.len() as u64,
        errors: errors.load(Ordering::SeqCst),
        p99_ms: f64::from(p99) / 1000.0,
        rss: procs
            .iter()
            .enumerate()
            .map(|(i, p)| Rss {
                service: p.name,
                idle: rss_idle[i],
                after_warmup: rss_start[i],
                end: rss_end[i],
                peak: rss_peak[i],
            })
            .collect(),
    })
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(
    bin_dir: &Path,
    dir: &Path,
    name: &'static str,
    addr: SocketAddr,
    env: Vec<(String, String)>,
) -> anyhow::Result<Proc> {
    let exe = bin_dir.join(name);
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(&exe)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .envs(env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {} (is it built?)", exe.display()))?;
    Ok(Proc {
        name,
        addr,
        child,
        log: log_path,
    })
}

fn wait_ready(p: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        p.alive()?;
        if let Ok(mut s) = connect(p.addr) {
            let mut buf = Vec::new();
            if s.write_all(b"GET /ready HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                .is_ok()
                && read_response(&mut s, &mut buf).is_ok_and(|s| s == 200)
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} did not become ready in 30 s; {}", p.name, p.log_tail())
}

/// `POST /token` with the password grant; the access token.
fn sign_in(addr: SocketAddr, username: &str, password: &str) -> anyhow::Result<String> {
    let form = format!("grant_type=password&username={username}&password={password}");
    let mut s = connect(addr)?;
    s.write_all(format!("POST /token HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}", form.len()).as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let v: Value =
        serde_json::from_str(body).with_context(|| format!("sign-in of {username}: {out}"))?;
    v["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("sign-in of {username}: {body}"))
}

#[cfg(test)]
mod tests {
    /// The short soak `cargo xtask test` runs: a few seconds of mixed load on the debug binaries
    /// built by the test step, no failed request.
    #[test]
    fn short_soak_serves_every_request() {
        let bin_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let outcome = super::soak(&bin_dir, 3, 4).expect("soak");
        assert!(outcome.requests > 100, "only {} requests", outcome.requests);
        assert_eq!(outcome.errors, 0);
        assert_eq!(outcome.rss.len(), 3);
    }

    /// A service that stops early is named, with the end of its log, at once: it was a 30 s
    /// wait and "did not become ready", the log deleted with the soak's directory.
    #[cfg(unix)]
    #[test]
    fn a_service_that_exits_is_named_with_its_log() {
        use std::os::unix::fs::PermissionsExt as _;
        let bin_dir = tempfile::tempdir().unwrap();
        for (name, script) in [
            (
                "token-service",
                "#!/bin/sh\necho 'config error: token.issuer: boom' >&2\nexit 2\n",
            ),
            // The other two start and wait (killed when the soak gives up).
            ("todo-api", "#!/bin/sh\nexec sleep 60\n"),
            ("tasks-api", "#!/bin/sh\nexec sleep 60\n"),
        ] {
            let exe = bin_dir.path().join(name);
            std::fs::write(&exe, script).unwrap();
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let error = super::soak(bin_dir.path(), 3, 1)
            .err()
            .expect("the soak failed");
        let message = format!("{error:#}");
        assert!(message.contains("token-service exited"), "{message}");
        assert!(
            message.contains("config error: token.issuer: boom"),
            "{message}"
        );
    }
}
