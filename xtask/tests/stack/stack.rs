//! Starting, calling and stopping the three services as processes.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The APIs' unknown-kid cooldown in this suite.
pub const COOLDOWN_SECONDS: u64 = 2;

/// Polls `check` every 50 ms until it yields a value, failing after `deadline`.
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `kid` in a token's header.
pub fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap_or_default())
        .unwrap_or_default();
    header["kid"].as_str().unwrap_or_default().to_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `target/debug`, where the service binaries are (this test runs from `target/debug/deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target/debug")
}

struct Service {
    name: &'static str,
    prefix: &'static str,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// Logs of earlier runs of this service (token-service restarts).
    old_logs: Vec<String>,
}

pub struct Stack {
    dir: tempfile::TempDir,
    services: Vec<Service>,
    client: reqwest::Client,
    statuses: Mutex<Vec<u16>>,
}

impl Stack {
    pub async fn start() -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let services = [
            ("token-service", "TOKEN_SERVICE"),
            ("todo-api", "TODO_API"),
            ("tasks-api", "TASKS_API"),
        ]
        .into_iter()
        .map(|(name, prefix)| Service {
            name,
            prefix,
            port: free_port(),
            child: None,
            log: dir.path().join(format!("{name}.log")),
            old_logs: Vec::new(),
        })
        .collect();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut stack = Stack {
            dir,
            services,
            client,
            statuses: Mutex::new(Vec::new()),
        };
        for s in &stack.services {
            let exe = bin_dir().join(s.name);
            assert!(
                exe.exists(),
                "{} is not built: run `cargo build -p {}` (cargo xtask test does)",
                exe.display(),
                s.name
            );
        }
        // The first signing key, made by the rotate command on an empty keys directory.
        stack.rotate_keys();
        stack.start_token_service().await;
        for i in 1..3 {
            stack.spawn(i);
        }
        for name in ["todo", "tasks"] {
            poll("the APIs become ready", Duration::from_secs(30), || async {
                (stack.ready(name).await == 200).then_some(())
            })
            .await;
        }
        stack
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.services[0].port)
    }

    fn env(&self, i: usize) -> Vec<(String, String)> {
        let s = &self.services[i];
        let var = |k: &str, v: String| (format!("{}__{k}", s.prefix), v);
        let mut env = vec![
            var("SERVER__PORT", s.port.to_string()),
            var(
                "DATABASE__DATA_DIR",
                self.dir.path().join("data").display().to_string(),
            ),
            var("LOG__FORMAT", "json".into()),
            var("LOG__LEVEL", "trace".into()),
        ];
        if i == 0 {
            env.extend([
                var("TOKEN__ISSUER", self.issuer()),
                var("SIGNING__KEY_FILES", "[]".into()),
                var(
                    "SIGNING__KEYS_DIR",
                    self.dir.path().join("keys").display().to_string(),
                ),
                var("SIGNING__PROPAGATION_DELAY_SECONDS", "2".into()),
                var("SIGNING__JWKS_MAX_AGE_SECONDS", "1".into()),
                var("SIGNING__RESCAN_SECONDS", "1".into()),
            ]);
        } else {
            env.extend([
                var("AUTH__ISSUER", self.issuer()),
                var(
                    "AUTH__JWKS_URL",
                    format!("{}/.well-known/jwks.json", self.issuer()),
                ),
                var(
                    "AUTH__JWKS__UNKNOWN_KID_COOLDOWN_SECONDS",
                    COOLDOWN_SECONDS.to_string(),
                ),
            ]);
        }
        env
    }

    fn command(&self, i: usize) -> Command {
        let mut cmd = Command::new(bin_dir().join(self.services[i].name));
        cmd.current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .envs(self.env(i));
        cmd
    }

    fn spawn(&mut self, i: usize) {
        let log = std::fs::File::create(&self.services[i].log).expect("log file");
        let child = self
            .command(i)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a service");
        self.services[i].child = Some(child);
    }

    pub async fn start_token_service(&mut self) {
        if self.services[0].log.exists() {
            let old = std::fs::read_to_string(&self.services[0].log).unwrap_or_default();
            self.services[0].old_logs.push(old);
        }
        self.spawn(0);
        poll(
            "token-service becomes ready",
            Duration::from_secs(30),
            || async { (self.ready("token").await == 200).then_some(()) },
        )
        .await;
    }

    /// `token-service keys rotate` with the same configuration as the running service.
    pub fn rotate_keys(&self) {
        let out = self
            .command(0)
            .args(["keys", "rotate"])
            .output()
            .expect("run keys rotate");
        assert!(
            out.status.success(),
            "keys rotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn index(name: &str) -> usize {
        match name {
            "token" => 0,
            "todo" => 1,
            "tasks" => 2,
            other => panic!("no service {other}"),
        }
    }

    fn url(&self, name: &str, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}{path}",
            self.services[Self::index(name)].port
        )
    }

    pub async fn ready(&self, name: &str) -> u16 {
        match self.client.get(self.url(name, "/ready")).send().await {
            Ok(res) => res.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Signs in with the password grant; `extra` form fields (`audience`, `scope`).
    pub async fn sign_in(&self, username: &str, password: &str, extra: &[(&str, &str)]) -> String {
        let mut form = vec![
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ];
        form.extend_from_slice(extra);
        let res = self
            .client
            .post(self.url("token", "/token"))
            .form(&form)
            .send()
            .await
            .expect("POST /token");
        let status = res.status();
        let body: Value = res.json().await.expect("token response");
        assert_eq!(status, 200, "sign-in of {username}: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Calls an API; records the status.
    pub async fn call(
        &self,
        name: &str,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().expect("method"), self.url(name, path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        self.statuses.lock().unwrap().push(status);
        let text = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn status(&self, name: &str, path: &str, token: &str) -> u16 {
        self.call(name, "GET", path, token, None).await.0
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.statuses.lock().unwrap().clone()
    }

    /// Key-set fetches service `name` has completed (its `auth_jwks_fetches_total`, every
    /// outcome), from its own `/metrics`: its fetches alone, not another service's or a
    /// scheduled refresh's at token-service.
    pub async fn jwks_fetches(&self, name: &str) -> u64 {
        let text = self
            .client
            .get(self.url(name, "/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("auth_jwks_fetches_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub fn pids(&self) -> Vec<u32> {
        self.services
            .iter()
            .map(|s| s.child.as_ref().map_or(0, Child::id))
            .collect()
    }

    /// SIGTERM, then wait.
    pub fn stop(&mut self, name: &str) {
        let s = &mut self.services[Self::index(name)];
        if let Some(mut child) = s.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = child.wait();
        }
    }

    pub fn stop_all_and_read_logs(&mut self) -> String {
        for name in ["token", "todo", "tasks"] {
            self.stop(name);
        }
        let mut all = String::new();
        for s in &self.services {
            for old in &s.old_logs {
                all.push_str(old);
            }
            all.push_str(&std::fs::read_to_string(&s.log).unwrap_or_default());
        }
        all
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for s in &mut self.services {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
