//! `cargo xtask dev` itself: the README's first command, run as a developer runs it. The stack
//! comes up on its default ports with the local defaults' wiring (the APIs verify against
//! token-service's JWKS on 127.0.0.1:4000), serves a signed-in user, and stops, children and
//! all, on Ctrl-C, and when what started it goes away (Linux).
//!
//! The default ports are fixed, so the test cannot run while something holds them (a developer's
//! own `cargo xtask dev`): it then says so and checks nothing, as the PostgreSQL tests do without
//! a database, and `cargo xtask test` prints the same up front.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// token-service, todo-api, tasks-api: the ports the README gives.
const PORTS: [u16; 3] = [4000, 3000, 3001];

/// The `xtask dev` process; Ctrl-C'd (SIGINT) if the test ends early, so the stack it started
/// does not outlive a failed test.
struct Dev {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn start(data_dir: &std::path::Path) -> Dev {
        Self::start_with(data_dir, false)
    }

    /// `own_group`: in a process group of its own, as a terminal runs it, so that
    /// [`Dev::interrupt_group`] reaches xtask and the services it started, as Ctrl-C does.
    fn start_with(data_dir: &std::path::Path, own_group: bool) -> Dev {
        // An empty PATH: the stack needs no program beyond its own binaries (before, xtask
        // stopped it with a `kill` program that slim images lack, and hung when it was absent).
        let no_programs = data_dir.join("empty-path");
        std::fs::create_dir_all(&no_programs).expect("an empty PATH directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        if own_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let mut child = command
            .args(["dev", "--no-build", "--data-dir"])
            .arg(data_dir)
            .env("PATH", &no_programs)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting xtask dev");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads output until a line equal to `wanted`, failing (with the output so far) after
    /// `deadline` or when the output ends.
    fn wait_for(&mut self, wanted: &str, deadline: Duration) {
        self.read_until(
            &format!("{wanted:?}"),
            |line| line.trim() == wanted,
            deadline,
        );
    }

    /// Reads output until a line that starts with `prefix` (after any padding).
    fn wait_for_start_of(&mut self, prefix: &str, deadline: Duration) {
        let what = format!("starting {prefix:?}");
        self.read_until(
            &what,
            |line| line.trim_start().starts_with(prefix),
            deadline,
        );
    }

    /// Reads output until a line `found` accepts (`what` it is, for the failure).
    fn read_until(&mut self, what: &str, found: impl Fn(&str) -> bool, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = found(&line);
                    self.seen.push(line);
                    if done {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no line {what} from xtask dev ({e}); its output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGINT to xtask's whole process group, as a terminal's Ctrl-C sends it.
    fn interrupt_group(&self) -> bool {
        self.sigint(nix::sys::signal::killpg)
    }

    /// SIGINT, as Ctrl-C sends it (by a system call: no `kill` program needed). Never panics:
    /// `Drop` calls it too.
    fn interrupt(&self) -> bool {
        self.sigint(nix::sys::signal::kill)
    }

    /// SIGINT by `send` (`kill` or `killpg`) to xtask's pid; whether it was sent.
    fn sigint(
        &self,
        send: fn(nix::unistd::Pid, nix::sys::signal::Signal) -> nix::Result<()>,
    ) -> bool {
        i32::try_from(self.child.id()).is_ok_and(|pid| {
            send(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            )
            .is_ok()
        })
    }

    /// Waits for xtask to exit, at most `deadline`.
    fn exit_status(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "xtask dev still running {deadline:?} after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if !self.interrupt() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

fn answers(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn xtask_dev_runs_the_stack_on_its_default_ports_and_stops_on_ctrl_c() {
    let taken: Vec<u16> = PORTS.into_iter().filter(|&p| answers(p)).collect();
    if !taken.is_empty() {
        testkit::report_skip(
            "xtask_dev_runs_the_stack_on_its_default_ports_and_stops_on_ctrl_c",
            &format!("ports {taken:?} are in use (a running `cargo xtask dev`?)"),
        );
        return;
    }
    // Ctrl-C while the stack starts, to the whole group as a terminal sends it: the services
    // that stop for it did not fail, nothing more is started, and xtask exits 0 (before, it
    // reported "token-service exited" and exited 1, or went on to start the others).
    let early = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start_with(early.path(), true);
    dev.wait_for_start_of("token-service |", Duration::from_secs(120));
    assert!(dev.interrupt_group(), "SIGINT sent");
    let status = dev.exit_status(Duration::from_secs(60));
    assert!(status.success(), "xtask dev exited with {status}");
    for port in PORTS {
        assert!(!answers(port), "port {port} still answers after Ctrl-C");
    }
    drop(dev);

    // What started xtask dev goes away without stopping it (an interrupted `cargo xtask test`
    // whose xtask dev sat in a process group of its own, out of the terminal's Ctrl-C): the
    // kernel's parent-death signal stops the stack as Ctrl-C does. Its parent here is the
    // thread that spawned it, which ends (the kernel counts the thread, not the process).
    #[cfg(target_os = "linux")]
    {
        let orphan = tempfile::tempdir().expect("tempdir");
        let path = orphan.path().to_owned();
        let mut dev = std::thread::spawn(move || {
            let mut dev = Dev::start_with(&path, true);
            dev.wait_for_start_of("token-service |", Duration::from_secs(120));
            dev
        })
        .join()
        .expect("the thread that started xtask dev");
        let status = dev.exit_status(Duration::from_secs(60));
        assert!(status.success(), "xtask dev exited with {status}");
        for port in PORTS {
            assert!(
                !answers(port),
                "port {port} still answers after its parent went"
            );
        }
    }

    let data = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(data.path());
    dev.wait_for("xtask: the stack is ready", Duration::from_secs(120));

    // The README's walk-through: sign in, then both APIs with the token.
    let client = reqwest::Client::new();
    let res = client
        .post("http://127.0.0.1:4000/token")
        .form(&[("username", "alice"), ("password", "alice-dev-password")])
        .send()
        .await
        .expect("POST /token");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("token JSON");
    let token = body["access_token"].as_str().expect("access_token");
    let get = |url: &'static str| client.get(url).bearer_auth(token).send();
    let res = get("http://127.0.0.1:3000/whoami").await.expect("whoami");
    assert_eq!(res.status(), 200);
    let whoami: Value = res.json().await.expect("whoami JSON");
    assert_eq!(whoami["username"], "alice", "{whoami}");
    assert_eq!(whoami["iss"], "http://127.0.0.1:4000", "{whoami}");
    let res = get("http://127.0.0.1:3001/tasks").await.expect("tasks");
    assert_eq!(res.status(), 200);
    // And without a token, 401.
    let res = client
        .get("http://127.0.0.1:3000/whoami")
        .send()
        .await
        .expect("whoami");
    assert_eq!(res.status(), 401);

    // Ctrl-C: xtask stops the three services and exits cleanly.
    assert!(dev.interrupt(), "SIGINT sent");
    dev.wait_for("xtask: stopping the stack", Duration::from_secs(10));
    let status = dev.exit_status(Duration::from_secs(30));
    assert!(status.success(), "xtask dev exited with {status}");
    let left: Vec<u16> = PORTS.into_iter().filter(|&p| answers(p)).collect();
    assert!(left.is_empty(), "still answering after Ctrl-C: {left:?}");
    // Each service's SQLite file went where --data-dir said.
    for service in ["token-service", "todo-api", "tasks-api"] {
        let file = data.path().join(format!("{service}.db"));
        assert!(file.is_file(), "{} missing", file.display());
    }
}
