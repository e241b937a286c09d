//! `cargo xtask bench --instructions`: what a request costs todo-api in instructions, counted
//! by callgrind. Unlike CPU time, the count is the same on a quiet and a busy machine, so two
//! builds can be compared in one run each, however noisy the host.
//!
//! Per algorithm: todo-api (one Tokio worker) runs under `valgrind --tool=callgrind`; one
//! keep-alive connection sends a warm-up of every kind of request, then the counters are zeroed
//! and three phases of `--requests` requests each run in turn, `GET /health`, `GET /whoami` with
//! one repeated token (a cache hit), `GET /whoami` with a distinct token per request (a full
//! verification) and `GET /health` again, each closed by a callgrind dump whose total is divided
//! by its requests (the last must repeat the first, or the run fails).
//! valgrind emulates a CPU without AVX-512, so aws-lc takes its AVX2 paths here: the signature's
//! count is not the one the bench's CPU time sees; everything around it is.

use super::*;

/// One algorithm's instructions per request: `/health`, `/whoami` repeated, `/whoami` distinct;
/// and of the distinct phase's, the signature step's own (`verify_signature` with everything it
/// calls: aws-lc's work), when the profile names it.
#[derive(Debug, Clone)]
pub struct Counted {
    pub alg: &'static str,
    pub per_request: [f64; 3],
    pub signature: Option<f64>,
}

pub fn run(args: &Bench) -> anyhow::Result<()> {
    if !callgrind_available() {
        bail!(
            "--instructions needs valgrind and callgrind_control (Debian: apt-get install valgrind)"
        );
    }
    let counted = count(args)?;
    let (md, json) = render(&counted, args);
    let name = if args.smoke {
        "instructions-smoke"
    } else {
        "instructions"
    };
    write_report(name, &md, &json)
}

fn count(args: &Bench) -> anyhow::Result<Vec<Counted>> {
    let root = crate::root();
    let bin = todo_api_binary(&root, args)?;
    args.algs()
        .into_iter()
        .map(|alg| count_alg(&root, &bin, alg, args))
        .collect()
}

fn count_alg(root: &Path, bin: &Path, alg: Alg, args: &Bench) -> anyhow::Result<Counted> {
    let name = alg_name(alg);
    let requests = args.requests.max(1);
    let warmup = (requests / 5).max(10);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let repeated = mint_tokens(alg, now, 1, "repeated")?;
    let distinct = mint_tokens(alg, now, warmup + requests, "distinct")?;

    let data_dir =
        std::env::temp_dir().join(format!("xtask-instructions-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    let log_path = data_dir.join("todo-api.log");
    let out = data_dir.join("callgrind.out");
    let port = free_port()?;
    // vgdb's pipes (how callgrind_control reaches the process) in the data directory, which the
    // guard removes: killed, valgrind would leave them in /tmp.
    let vgdb_prefix = format!("--vgdb-prefix={}", data_dir.join("vgdb").display());
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--dump-instr=no")
        .arg(&vgdb_prefix)
        .arg(bin)
        .env("TOKIO_WORKER_THREADS", "1");
    server_env(&mut cmd, root, alg, port, &data_dir, args.cache_entries);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?);
    println!("xtask: {name}: todo-api under callgrind, {requests} requests per phase");
    let mut server = Guard {
        child: cmd.spawn().context("starting valgrind")?,
        data_dir: data_dir.clone(),
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // valgrind starts a program some tens of times slower than it runs natively.
    wait_ready(&mut server.child, addr, &log_path, Duration::from_secs(300))?;
    let control = Control {
        pid: server.child.id(),
        vgdb_prefix,
        out,
        alg: name,
    };

    let health = request("/health", None);
    let whoami = request("/whoami", Some(&repeated[0]));
    let (warm, measured) = distinct.split_at(warmup);
    let mut conn = Connection::open(addr)?;
    for _ in 0..warmup {
        conn.get(&health)?;
        conn.get(&whoami)?;
    }
    for token in warm {
        conn.get(&request("/whoami", Some(token)))?;
    }
    // Built before the counting starts, so the phases count the server alone.
    let distinct: Vec<Vec<u8>> = measured
        .iter()
        .map(|t| request("/whoami", Some(t)))
        .collect();
    // `/health` once more at the end: it must count what it counted first, or the dumps do not
    // hold one phase each.
    let phases: [(&str, Vec<&[u8]>); 4] = [
        ("baseline", vec![&health[..]; requests]),
        ("repeated", vec![&whoami[..]; requests]),
        ("distinct", distinct.iter().map(Vec::as_slice).collect()),
        ("baseline-again", vec![&health[..]; requests]),
    ];
    // A dump zeroes the counters: this one closes startup and the warm-up.
    control.dump(1, "warmup")?;
    let kept = profiles_dir(root, args);
    std::fs::create_dir_all(&kept)?;
    let mut per_request = [0.0; 4];
    let mut signature = None;
    for (i, (mode, phase)) in phases.iter().enumerate() {
        for request in phase {
            conn.get(request)?;
        }
        per_request[i] = control.dump(i + 2, mode)? as f64 / requests as f64;
        // Kept for `callgrind_annotate`: the data directory goes with the server.
        let profile = kept.join(format!("{name}-{mode}.out"));
        std::fs::copy(format!("{}.{}", control.out.display(), i + 2), &profile)
            .with_context(|| format!("keeping {}", profile.display()))?;
        if *mode == "distinct" {
            signature = signature_instructions(&profile)?.map(|n| n as f64 / requests as f64);
        }
    }
    drop(server);
    let [health, repeated, distinct, again] = per_request;
    anyhow::ensure!(
        (again - health).abs() <= health * 0.05,
        "{name}: /health counted {health:.0} instructions per request first and {again:.0} last: \
         the dumps do not hold one phase each"
    );
    Ok(Counted {
        alg: name,
        per_request: [health, repeated, distinct],
        signature,
    })
}

/// The function whose inclusive count is the signature step: the one requests and the
/// criterion limit (`signature/<alg>`) both go through.
const SIGNATURE_STEP: &str = "auth_core::verify::verify_signature";

/// The signature step's instructions in a phase's profile, read with `callgrind_annotate`
/// (inclusive counts); `None` when the profile does not name the function (inlined away).
fn signature_instructions(profile: &Path) -> anyhow::Result<Option<u64>> {
    let out = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(profile)
        .stderr(Stdio::null())
        .output()
        .context("running callgrind_annotate")?;
    anyhow::ensure!(
        out.status.success(),
        "callgrind_annotate failed on {}",
        profile.display()
    );
    Ok(inclusive_count(
        &String::from_utf8_lossy(&out.stdout),
        SIGNATURE_STEP,
    ))
}

/// The count on `callgrind_annotate`'s line for `function` (`<count> (<pct>)  <file>:<function>
/// [<object>]`); a recursive instance (`function'2`) is not the function.
fn inclusive_count(annotated: &str, function: &str) -> Option<u64> {
    annotated.lines().find_map(|line| {
        let (count, rest) = line.trim_start().split_once(' ')?;
        let name = rest.split_once(':')?.1;
        let name = name.split_once(" [").map_or(name, |(name, _)| name);
        (name.trim_end() == function)
            .then(|| count.replace(',', "").parse().ok())
            .flatten()
    })
}

/// Where each phase's callgrind profile is kept: `target/bench/callgrind/<alg>-<phase>.out`
/// (`callgrind-smoke/` for debug binaries), read with
/// `callgrind_annotate --inclusive=yes <file>`.
fn profiles_dir(root: &Path, args: &Bench) -> PathBuf {
    root.join("target/bench").join(if args.smoke {
        "callgrind-smoke"
    } else {
        "callgrind"
    })
}

/// What reaches callgrind in the running server, through `callgrind_control`.
struct Control {
    pid: u32,
    vgdb_prefix: String,
    /// `--callgrind-out-file`: dump `n` is `<out>.<n>`.
    out: PathBuf,
    alg: &'static str,
}

impl Control {
    /// Dumps the counters as dump `n` (which zeroes them) and returns its total. The dump file is
    /// the check: `callgrind_control` exits 0 even when it reached no process.
    fn dump(&self, n: usize, hint: &str) -> anyhow::Result<u64> {
        let alg = self.alg;
        let mut child = Command::new("callgrind_control")
            .arg(&self.vgdb_prefix)
            .arg(format!("--dump={hint}"))
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running callgrind_control")?;
        // vgdb can wait on a process blocked in a system call where ptrace is not allowed.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{alg}: callgrind_control --dump={hint} did not return within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let path = format!("{}.{n}", self.out.display());
        let dump = std::fs::read_to_string(&path)
            .with_context(|| format!("{alg}: callgrind wrote no dump {path} ({hint})"))?;
        anyhow::ensure!(
            dump.contains(&format!("Trigger: dump {hint}\n")),
            "{alg}: callgrind's dump {n} is not the {hint} phase's"
        );
        total_instructions(&dump).with_context(|| format!("{alg}: no total in the {hint} dump"))
    }
}

/// One keep-alive connection, one request at a time, every answer a 200.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = connect(addr)?;
        // Under valgrind a first answer can take longer than the load driver's timeout.
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    fn get(&mut self, request: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(request)?;
        let status = read_response(&mut self.stream, &mut self.buf)?;
        anyhow::ensure!(status == 200, "todo-api answered {status}");
        Ok(())
    }
}

/// The total of a callgrind dump: its `summary:` line (or `totals:`, which some versions write
/// instead), the first event's count.
fn total_instructions(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn render(counted: &[Counted], args: &Bench) -> (String, Value) {
    let mut md = String::from("## cargo xtask bench --instructions\n\n");
    md.push_str(&format!(
        "Instructions per request (callgrind, {} binary, one Tokio worker, one keep-alive connection, {} requests per phase after a warm-up; valgrind's CPU has no AVX-512, so the signature's own count is aws-lc's AVX2 path).\n\n",
        if args.smoke { "debug" } else { "release" },
        args.requests.max(1),
    ));
    md.push_str("| alg | /health | /whoami repeated | /whoami distinct | repeated − /health | distinct − /health | signature step | distinct − /health − signature step |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut rows = Vec::new();
    for c in counted {
        let [health, repeated, distinct] = c.per_request;
        let (signature, beyond) = match c.signature {
            Some(sig) => {
                let beyond = distinct - health - sig;
                (
                    format!("{sig:.0}"),
                    format!("{beyond:+.0} ({:.1} %)", beyond / sig * 100.0),
                )
            }
            None => ("not in the profile".to_owned(), "-".to_owned()),
        };
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:+.0} | {:+.0} | {signature} | {beyond} |\n",
            c.alg,
            health,
            repeated,
            distinct,
            repeated - health,
            distinct - health
        ));
        rows.push(json!({
            "alg": c.alg,
            "health": health,
            "whoami_repeated": repeated,
            "whoami_distinct": distinct,
            "signature_step": c.signature,
        }));
    }
    md.push_str(&format!(
        "\nThe signature step is `{SIGNATURE_STEP}` with all it calls, in the distinct phase (the step the criterion limit times); what a distinct token costs beyond it and `/health` is the work of this workspace, hyper and warp, in instructions. Time is another matter: the timed bench's ratio also holds what the rest of the request does to the signature's caches and branch predictors.\n"
    ));
    let json = json!({
        "smoke": args.smoke,
        "requests_per_phase": args.requests.max(1),
        "instructions_per_request": rows,
    });
    (md, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_dumps_total() {
        let dump = "# callgrind format\nversion: 1\ndesc: Trigger: dump baseline\n\npositions: line\nevents: Ir\nsummary: 16117754\n\nob=(4) /usr/lib/libm.so.6\n31 3000\n";
        assert_eq!(total_instructions(dump), Some(16_117_754));
        assert_eq!(total_instructions("events: Ir\ntotals: 42 7\n"), Some(42));
        assert_eq!(total_instructions("events: Ir\n31 3000\n"), None);
    }

    #[test]
    fn reads_a_functions_inclusive_count() {
        let annotated = "\
915,998,236 (286.3%)  ???:<futures_util::IntoFuture<Fut> as Future>::poll'2 [/t/todo-api]
  3,000 ( 1.0%)  ???:auth_core::verify::verify_signature'2 [/t/todo-api]
289,424,000 (90.46%)  ???:auth_core::verify::verify_signature [/t/todo-api]
 12,000 ( 0.1%)  auth-core/src/verify.rs:auth_core::verify::verify_signature_other [/t/x]
";
        assert_eq!(
            inclusive_count(annotated, SIGNATURE_STEP),
            Some(289_424_000)
        );
        let with_file =
            "  7,001 (2.0%)  auth-core/src/verify.rs:auth_core::verify::verify_signature [/t/x]\n";
        assert_eq!(inclusive_count(with_file, SIGNATURE_STEP), Some(7_001));
        assert_eq!(
            inclusive_count("1 (1%) ???:main [/t/x]\n", SIGNATURE_STEP),
            None
        );
    }

    /// The whole mode on debug binaries, a few requests per phase: every phase is counted (the
    /// closing `/health` phase repeats the first, or `count` fails), and a full verification
    /// costs more than a cache hit, which costs more than `/health`. Needs valgrind: without it
    /// the test checks nothing, and `cargo xtask test` says so up front.
    #[test]
    fn counts_every_phase_under_callgrind() {
        if !callgrind_available() {
            testkit::report_skip(
                "counts_every_phase_under_callgrind",
                "valgrind is not installed (apt-get install valgrind)",
            );
            return;
        }
        let args = Bench {
            algs: vec![Alg::HS256],
            requests: 20,
            ..crate::bench::tests::smoke_args()
        };
        let kept = profiles_dir(&crate::root(), &args).join("HS256-distinct.out");
        let _ = std::fs::remove_file(&kept);
        let counted = count(&args).unwrap();
        let profile = std::fs::read_to_string(&kept).unwrap();
        assert!(
            profile.contains("Trigger: dump distinct\n"),
            "{profile:.200}"
        );
        let [health, repeated, distinct] = counted[0].per_request;
        assert!(health > 1_000.0, "{health}");
        assert!(repeated > health, "{repeated} vs {health}");
        assert!(distinct > repeated, "{distinct} vs {repeated}");
        // The HMAC is part of what a distinct token adds over a repeated one, not all of it.
        let signature = counted[0]
            .signature
            .expect("verify_signature in the profile");
        assert!(
            signature > 0.0 && signature < distinct - repeated,
            "{signature} vs {distinct} − {repeated}"
        );
    }
}
