//! `cargo xtask dev`: token-service, todo-api and tasks-api together, wired as in production
//! (the APIs verify against token-service's JWKS), on the default ports, with SQLite files under
//! a data directory and the fixture users.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

#[derive(Args)]
pub struct Dev {
    /// Start from empty databases: delete the stack's SQLite files (`<service>.db`, its `-wal`
    /// and `-shm`) in the data directory first, and nothing else there.
    #[arg(long)]
    fresh: bool,
    /// Where the SQLite files live.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Skip `cargo build` (use the debug binaries already in target/).
    #[arg(long)]
    no_build: bool,
}

/// name, environment prefix, port.
const SERVICES: [(&str, &str, u16); 3] = [
    ("token-service", "TOKEN_SERVICE", 4000),
    ("todo-api", "TODO_API", 3000),
    ("tasks-api", "TASKS_API", 3001),
];

/// Asks the kernel for a SIGINT when whatever started this process goes away without stopping
/// it (an interrupted `cargo xtask test` whose stack test had put it in a process group of its
/// own, out of the terminal's Ctrl-C), so the stack stops as on Ctrl-C instead of outliving
/// it. Linux only (`PR_SET_PDEATHSIG`); elsewhere the stack is stopped by hand. The signal
/// follows the thread that spawned this process, as the kernel defines it.
fn stop_with_parent() {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::signal::Signal;
        let parent = nix::unistd::getppid();
        if nix::sys::prctl::set_pdeathsig(Signal::SIGINT).is_ok()
            && nix::unistd::getppid() != parent
        {
            // The parent went between the two reads: the signal will not come.
            let _ = nix::sys::signal::raise(Signal::SIGINT);
        }
    }
}

/// The ports the stack listens on, token-service's first.
pub(crate) fn ports() -> impl Iterator<Item = u16> {
    SERVICES.iter().map(|s| s.2)
}

struct Running {
    name: &'static str,
    child: Child,
}

pub fn run(args: Dev) -> anyhow::Result<()> {
    stop_with_parent();
    let root = crate::root();
    let data_dir = if args.data_dir.is_absolute() {
        args.data_dir.clone()
    } else {
        root.join(&args.data_dir)
    };
    // Before building: a port another program holds would only show, minutes later, as a
    // service that exited.
    if let Some((name, _, port)) = SERVICES
        .iter()
        .find(|(_, _, port)| TcpStream::connect(("127.0.0.1", *port)).is_ok())
    {
        bail!(
            "port {port} ({name}) is in use: stop what listens there (a `cargo xtask dev` already running?) and try again"
        );
    }
    if args.fresh {
        delete_databases(&data_dir)?;
    }
    if !args.no_build {
        crate::build_services(&root, false)?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }

    // token-service first: the APIs load its JWKS as they start.
    let mut running = Vec::new();
    for (i, (name, prefix, _)) in SERVICES.iter().enumerate() {
        match start(&root, name, prefix, &data_dir) {
            Ok(r) => running.push(r),
            Err(e) => {
                shutdown(&mut running);
                return Err(e);
            }
        }
        if i == 0 {
            wait_ready(&mut running, &stop, &SERVICES[..1])?;
        }
        // Ctrl-C while starting: start nothing more.
        if stop.load(Ordering::SeqCst) {
            say("xtask: stopping the stack");
            shutdown(&mut running);
            return Ok(());
        }
    }
    wait_ready(&mut running, &stop, &SERVICES)?;
    if stop.load(Ordering::SeqCst) {
        say("xtask: stopping the stack");
        shutdown(&mut running);
        return Ok(());
    }
    print_welcome();

    loop {
        if stop.load(Ordering::SeqCst) {
            say("xtask: stopping the stack");
            shutdown(&mut running);
            return Ok(());
        }
        match check_children(&mut running) {
            Some(Exited::Interrupted) => stop.store(true, Ordering::SeqCst),
            Some(Exited::Failed(msg)) => {
                shutdown(&mut running);
                bail!("{msg}");
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Waits until every service of `services` answers `/ready` with 200 (60 s at most), watching
/// for a child that dies and for Ctrl-C.
fn wait_ready(
    running: &mut [Running],
    stop: &AtomicBool,
    services: &[(&str, &str, u16)],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending: Vec<_> = services.iter().collect();
    while !pending.is_empty() {
        // Ctrl-C first: a terminal's Ctrl-C reaches the services too, and a service that
        // stopped for it did not fail.
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match check_children(running) {
            Some(Exited::Interrupted) => {
                stop.store(true, Ordering::SeqCst);
                return Ok(());
            }
            Some(Exited::Failed(msg)) => {
                shutdown(running);
                bail!("{msg}");
            }
            None => {}
        }
        if Instant::now() > deadline {
            shutdown(running);
            let names: Vec<_> = pending.iter().map(|s| s.0).collect();
            bail!("not every service became ready within 60 s (still waiting for {names:?})");
        }
        pending.retain(|(_, _, port)| !is_ready(*port));
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn start(
    root: &Path,
    name: &'static str,
    prefix: &str,
    data_dir: &Path,
) -> anyhow::Result<Running> {
    let exe = crate::target_dir(root).join("debug").join(name);
    let mut child = Command::new(&exe)
        .current_dir(root)
        .env(format!("{prefix}__DATABASE__DATA_DIR"), data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    if let Some(out) = child.stdout.take() {
        prefix_lines(name, out);
    }
    if let Some(err) = child.stderr.take() {
        prefix_lines(name, err);
    }
    Ok(Running { name, child })
}

/// What `--fresh` does: deletes each service's SQLite file and its `-wal` and `-shm` in
/// `data_dir`, and nothing else; `--data-dir .` or `--data-dir /tmp` must not take anything
/// else with it (it removed the whole directory).
fn delete_databases(data_dir: &Path) -> anyhow::Result<()> {
    for (name, _, _) in SERVICES {
        for ext in ["db", "db-wal", "db-shm"] {
            let file = data_dir.join(format!("{name}.{ext}"));
            match std::fs::remove_file(&file) {
                Ok(()) => println!("xtask: deleted {}", file.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {}", file.display())),
            }
        }
    }
    Ok(())
}

/// A line on stdout that never panics: when the terminal has hung up (SIGHUP, a lost ssh
/// session), `println!` would, and the stop path would never reach [`shutdown`], leaving the
/// services running.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Echoes a child's output, each line prefixed with its service's name.
fn prefix_lines(name: &'static str, stream: impl Read + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            // Not `println!`: a terminal that hung up would panic this thread, and the
            // service would block on a full pipe.
            say(&format!("{name:>13} | {line}"));
        }
    });
}

/// A child that exited on its own, as a message.
fn check_children(running: &mut [Running]) -> Option<Exited> {
    running.iter_mut().find_map(|r| match r.child.try_wait() {
        Ok(Some(status)) if interrupted(status) => Some(Exited::Interrupted),
        Ok(Some(status)) => Some(Exited::Failed(format!(
            "{} exited ({status}); stopping the others",
            r.name
        ))),
        _ => None,
    })
}

/// How a child of the stack ended.
enum Exited {
    /// By a Ctrl-C: the terminal's reaches the services too, and one that gets it before it
    /// handles signals dies of it (or a second one forces its exit, status 130). The stack is
    /// stopping, whether or not xtask's own handler has run yet: not a failure.
    Interrupted,
    /// Anything else: the message says which service and how.
    Failed(String),
}

/// Whether `status` is a Ctrl-C's doing: killed by SIGINT, or exit status 130.
fn interrupted(status: std::process::ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(nix::sys::signal::Signal::SIGINT as i32) {
            return true;
        }
    }
    status.code() == Some(130)
}

/// SIGTERM to each child (a graceful stop), then wait for them: at most `STOP_GRACE`, then
/// SIGKILL. Signals are sent by a system call, not by a `kill` program a slim image may lack.
fn shutdown(running: &mut [Running]) {
    for r in running.iter_mut() {
        if matches!(r.child.try_wait(), Ok(None)) {
            terminate(&r.child);
        }
    }
    let until = Instant::now() + STOP_GRACE;
    for r in running.iter_mut() {
        while matches!(r.child.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(r.child.try_wait(), Ok(None)) {
            let _ = writeln!(
                std::io::stderr(),
                "xtask: {} did not stop within {STOP_GRACE:?}; killed",
                r.name
            );
            let _ = r.child.kill();
        }
        let _ = r.child.wait();
    }
}

/// How long the services get to stop after SIGTERM: their own shutdown grace (30 s) and a
/// little more.
const STOP_GRACE: Duration = Duration::from_secs(35);

/// SIGTERM to `child`, if it still runs.
fn terminate(child: &std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// `GET /ready` over a plain socket: true on a 200.
fn is_ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

fn print_welcome() {
    // Through `writeln!`, not `println!`: a closed stdout (`| head`, a hung-up terminal) must
    // not panic past the stop path.
    let _ = writeln!(
        std::io::stdout(),
        r#"
xtask: the stack is ready
  token-service  http://127.0.0.1:4000   (JWKS: /.well-known/jwks.json)
  todo-api       http://127.0.0.1:3000
  tasks-api      http://127.0.0.1:3001

Fixture users (dev only):
  alice / alice-dev-password   (user)
  bob   / bob-dev-password     (user)
  admin / admin-dev-password   (admin)

Try it:
  TOKEN=$(curl -s -d username=alice -d password=alice-dev-password http://127.0.0.1:4000/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/whoami
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3001/tasks
  eval "$(cargo xtask dev-token --sub alice --role editor --export)"   # a dev token without signing in

Ctrl-C stops all three.
"#
    );
}

#[cfg(test)]
mod tests {
    use super::delete_databases;

    /// A service the terminal's Ctrl-C killed before it handled signals, or whose second
    /// Ctrl-C forced its exit, is the stack stopping, not a service failing.
    #[cfg(unix)]
    #[test]
    fn a_child_ended_by_ctrl_c_is_not_a_failure() {
        use std::os::unix::process::ExitStatusExt;
        use std::process::ExitStatus;
        // Wait statuses: killed by signal N is N; exit code C is C << 8.
        assert!(super::interrupted(ExitStatus::from_raw(2)));
        assert!(super::interrupted(ExitStatus::from_raw(130 << 8)));
        assert!(!super::interrupted(ExitStatus::from_raw(15)));
        assert!(!super::interrupted(ExitStatus::from_raw(9)));
        assert!(!super::interrupted(ExitStatus::from_raw(1 << 8)));
        assert!(!super::interrupted(ExitStatus::from_raw(0)));
    }

    #[test]
    fn fresh_deletes_the_stack_databases_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        for name in [
            "todo-api.db",
            "todo-api.db-wal",
            "tasks-api.db-shm",
            "token-service.db",
        ] {
            std::fs::write(path(name), b"x").unwrap();
        }
        std::fs::write(path("notes.txt"), b"mine").unwrap();
        std::fs::create_dir(path("keys")).unwrap();
        delete_databases(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["keys", "notes.txt"]);
        // A directory without them is left as it is.
        delete_databases(dir.path()).unwrap();
    }
}
