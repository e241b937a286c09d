use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use auth_core::clock::{Clock, ManualClock, SystemClock};
use auth_core::service::config::{CorsSettings, local_cors_origins};
use auth_core::service::testing::{self, Spawned};
use base64::Engine as _;
use serde_json::Value;
use token_service::passwords::{Argon2id, Hasher};
use token_service::settings::Settings;
use token_service::startup::{Deps, State};

/// A password hasher that counts its calls, and whose verifications can be held at a gate.
#[derive(Debug)]
pub struct CountingHasher {
    inner: Argon2id,
    pub verifies: AtomicUsize,
    pub gate: Gate,
}

impl Hasher for CountingHasher {
    fn hash(&self, password: &[u8]) -> anyhow::Result<String> {
        self.inner.hash(password)
    }
    fn verify(&self, password: &[u8], phc: &str) -> bool {
        self.gate.pass();
        self.verifies.fetch_add(1, Ordering::SeqCst);
        self.inner.verify(password, phc)
    }
    fn outdated(&self, phc: &str) -> bool {
        self.inner.outdated(phc)
    }
}

/// Holds verifications (on the blocking pool) while closed.
#[derive(Debug, Default)]
pub struct Gate {
    closed: Mutex<bool>,
    changed: Condvar,
    held: AtomicUsize,
}

impl Gate {
    pub fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }
    pub fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.changed.notify_all();
    }
    /// Verifications waiting at the gate now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
    fn pass(&self) {
        self.held.fetch_add(1, Ordering::SeqCst);
        let closed = self.closed.lock().unwrap();
        drop(self.changed.wait_while(closed, |c| *c).unwrap());
        self.held.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct TestApp {
    pub app: Spawned,
    pub state: State,
    pub clock: Arc<ManualClock>,
    pub hasher: Arc<CountingHasher>,
    pub _dir: tempfile::TempDir,
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR")))
}

/// The local environment's settings, on port 0 with the database in `dir`.
pub fn local_settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::default();
    s.server.port = 0;
    s.database.data_dir = dir.to_path_buf();
    s.cors = CorsSettings {
        allowed_origins: local_cors_origins(),
    };
    s.token.issuer = Some("http://127.0.0.1:4000".into());
    s.token.audiences = vec!["todo-api".into(), "tasks-api".into()];
    s.signing.key_files = [
        "keys/ec-private.pem",
        "keys/ed25519-private.pem",
        "keys/rsa-private.pem",
        "keys/rsa-cert.pem",
    ]
    .map(fixture)
    .to_vec();
    s.users.fixtures_file = Some(fixture("users.toml"));
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = local_settings(dir.path());
    tweak(&mut settings);
    spawn_settings(settings, dir).await
}

pub async fn spawn_settings(settings: Settings, dir: tempfile::TempDir) -> TestApp {
    let settings = settings.finish().expect("settings");
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let hasher = Arc::new(CountingHasher {
        inner: Argon2id::new(&settings.users).unwrap(),
        verifies: AtomicUsize::new(0),
        gate: Gate::default(),
    });
    let built = token_service::startup::build_with(
        settings,
        Deps {
            clock: clock.clone(),
            hasher: Some(hasher.clone()),
        },
    )
    .await
    .expect("build");
    TestApp {
        state: built.state,
        app: testing::spawn(built.app),
        clock,
        hasher,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.address)
    }

    pub async fn form(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        let body = serde_urlencoded_pairs(fields);
        self.app
            .client
            .post(self.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn json(&self, body: Value) -> reqwest::Response {
        self.app
            .client
            .post(self.url("/token"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Signs in and returns the access token (panics unless 200).
    pub async fn token(&self, user: &str, extra: &[(&str, &str)]) -> String {
        let password = format!("{user}-dev-password");
        let mut fields = vec![("username", user), ("password", password.as_str())];
        fields.extend_from_slice(extra);
        let res = self.form(&fields).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        res.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.app
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST /users` with `body`, as the holder of `token`.
    pub async fn create_user(&self, token: &str, body: &Value) -> reqwest::Response {
        self.app
            .client
            .post(self.url("/users"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `PUT /users/me/password` from `old` to `new`, as the holder of `token`.
    pub async fn change_password(&self, token: &str, old: &str, new: &str) -> reqwest::Response {
        self.app
            .client
            .put(self.url("/users/me/password"))
            .bearer_auth(token)
            .json(&serde_json::json!({"old_password": old, "new_password": new}))
            .send()
            .await
            .unwrap()
    }

    pub async fn jwks(&self) -> Value {
        self.app
            .get("/.well-known/jwks.json")
            .await
            .json()
            .await
            .unwrap()
    }

    pub fn kids(jwks: &Value) -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn serde_urlencoded_pairs(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).unwrap()
}

/// The (header, claims) of a compact JWS, unverified.
pub fn decode(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts.next().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    (part(), part())
}

/// `n` sign-ins with a wrong password, as `{prefix}-00`, `{prefix}-01`, …, each in its own task:
/// their status and `Retry-After`.
pub fn spawn_guesses(
    t: &Arc<TestApp>,
    prefix: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(u16, Option<String>)>> {
    (0..n)
        .map(|i| {
            let t = t.clone();
            let name = format!("{prefix}-{i:02}");
            tokio::spawn(async move {
                let res = t
                    .form(&[("username", &name), ("password", "a-guessed-password")])
                    .await;
                let retry = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (res.status().as_u16(), retry)
            })
        })
        .collect()
}

/// Yields until `done` holds, for at most 10 s (a state other tasks reach, never a time to
/// wait out); whether it did.
pub async fn until(mut done: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .is_ok()
}
