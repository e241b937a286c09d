//! The cross-service suite: token-service, todo-api and tasks-api as real processes on free
//! ports, wired as in production (the APIs verify against token-service's JWKS). Real processes
//! cannot share an injected clock, so durations are configured short and every wait polls with a
//! deadline.
//!
//! The binaries come from this workspace's `target/debug` (`cargo xtask test` builds them first).

mod dev;
mod stack;

use std::time::{Duration, Instant};

use serde_json::json;
use stack::{Stack, poll};

const PASSWORDS: [(&str, &str); 3] = [
    ("alice", "alice-dev-password"),
    ("bob", "bob-dev-password"),
    ("admin", "admin-dev-password"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_end_to_end() {
    let mut stack = Stack::start().await;
    let mut tokens: Vec<String> = Vec::new();

    // Sign in as alice; her token works on both APIs.
    let alice = stack.sign_in("alice", "alice-dev-password", &[]).await;
    tokens.push(alice.clone());
    assert_eq!(
        stack.call("todo", "GET", "/todos", &alice, None).await.0,
        200
    );
    assert_eq!(
        stack
            .call(
                "todo",
                "POST",
                "/todos",
                &alice,
                Some(json!({"title": "x"}))
            )
            .await
            .0,
        403,
        "alice is no editor"
    );
    let (status, task) = stack
        .call(
            "tasks",
            "POST",
            "/tasks",
            &alice,
            Some(json!({"title": "alice's task"})),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let alice_sub = task["owner"].as_str().unwrap().to_owned();

    // bob cannot see alice's tasks; the admin can.
    let bob = stack.sign_in("bob", "bob-dev-password", &[]).await;
    let admin = stack.sign_in("admin", "admin-dev-password", &[]).await;
    tokens.extend([bob.clone(), admin.clone()]);
    let (status, list) = stack.call("tasks", "GET", "/tasks", &bob, None).await;
    assert_eq!(
        (status, list["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{list}"
    );
    let path = format!("/tasks/{}", task["id"]);
    assert_eq!(stack.call("tasks", "GET", &path, &bob, None).await.0, 404);
    let (status, list) = stack
        .call(
            "tasks",
            "GET",
            &format!("/tasks?owner={alice_sub}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["title"], "alice's task");

    // A token for audience todo-api only is refused by tasks-api.
    let todo_only = stack
        .sign_in("alice", "alice-dev-password", &[("audience", "todo-api")])
        .await;
    tokens.push(todo_only.clone());
    assert_eq!(
        stack
            .call("todo", "GET", "/whoami", &todo_only, None)
            .await
            .0,
        200
    );
    let (status, err) = stack
        .call("tasks", "GET", "/whoami", &todo_only, None)
        .await;
    assert_eq!(
        (status, err["message"].as_str()),
        (401, Some("token audience not accepted"))
    );

    // A flood of random kids against todo-api: at most one JWKS fetch per cooldown. First, an
    // unknown kid once the cooldown has passed does trigger one refresh.
    let forge = |label: &str| {
        testkit::mint(&testkit::keys::ec())
            .kid(&format!("random-kid-{label}-{}", std::process::id()))
            .claim("iss", stack.issuer())
            .claim("aud", "todo-api")
            .valid_from(testkit::now(), 600)
            .sign()
    };
    let before = stack.jwks_fetches("todo").await;
    // The start of the probe attempt that caused the refresh: no later than the refresh, so
    // the cooldown it starts is counted from here (an earlier attempt may have waited out an
    // older cooldown).
    let attempt_started = std::sync::Mutex::new(Instant::now());
    poll(
        "an unknown kid triggers a JWKS refresh",
        Duration::from_secs(10),
        || async {
            let started = Instant::now();
            assert_eq!(stack.status("todo", "/whoami", &forge("probe")).await, 401);
            let refreshed = stack.jwks_fetches("todo").await > before;
            if refreshed {
                *attempt_started.lock().unwrap() = started;
            }
            refreshed.then_some(())
        },
    )
    .await;
    let probe_started = *attempt_started.lock().unwrap();
    let before = stack.jwks_fetches("todo").await;
    let started = Instant::now();
    let forged: Vec<String> = (0..200).map(|i| forge(&i.to_string())).collect();
    let flood = forged.iter().map(|t| stack.status("todo", "/whoami", t));
    for status in futures_util::future::join_all(flood).await {
        assert_eq!(status, 401);
    }
    let elapsed = started.elapsed();
    // A request that triggers a refresh waits for it, so every fetch has been served (and
    // logged) once all the answers are in.
    let fetched = stack.jwks_fetches("todo").await - before;
    eprintln!("flood: 200 random kids in {elapsed:?} caused {fetched} JWKS fetch(es)");
    // The probe's refresh started a cooldown: a fetch may follow each whole cooldown since then
    // (counted from before the refresh, so never too few), and none within the first.
    let allowed = (probe_started.elapsed().as_secs_f64() / stack::COOLDOWN_SECONDS as f64) as u64;
    assert!(
        fetched <= allowed,
        "{fetched} JWKS fetches for a {elapsed:?} flood (cooldown {}s)",
        stack::COOLDOWN_SECONDS
    );

    // Rotation with the rotate command: tokens signed before and after both verify, no restart.
    let pids = stack.pids();
    let old = stack.sign_in("alice", "alice-dev-password", &[]).await;
    let old_kid = stack::kid(&old);
    stack.rotate_keys();
    let new = poll(
        "a token signed by the new key",
        Duration::from_secs(30),
        || async {
            let t = stack.sign_in("alice", "alice-dev-password", &[]).await;
            (stack::kid(&t) != old_kid).then_some(t)
        },
    )
    .await;
    tokens.extend([old.clone(), new.clone()]);
    for token in [&old, &new] {
        poll(
            "both keys verify on todo-api and tasks-api",
            Duration::from_secs(20),
            || async {
                let a = stack.status("todo", "/whoami", token).await;
                let b = stack.status("tasks", "/whoami", token).await;
                (a == 200 && b == 200).then_some(())
            },
        )
        .await;
    }
    assert_eq!(stack.pids(), pids, "no service restarted");

    // token-service stops: the APIs keep verifying with cached keys and stay ready.
    stack.stop("token");
    for token in [&old, &new] {
        assert_eq!(stack.status("todo", "/whoami", token).await, 200);
        assert_eq!(stack.status("tasks", "/whoami", token).await, 200);
    }
    assert_eq!(stack.ready("todo").await, 200);
    assert_eq!(stack.ready("tasks").await, 200);

    // token-service comes back: no API restart, new sign-ins work.
    stack.start_token_service().await;
    let again = stack.sign_in("bob", "bob-dev-password", &[]).await;
    tokens.push(again.clone());
    poll(
        "a token from the restarted token-service verifies",
        Duration::from_secs(20),
        || async { (stack.status("tasks", "/tasks", &again).await == 200).then_some(()) },
    )
    .await;
    assert_eq!(
        &stack.pids()[1..],
        &pids[1..],
        "the APIs were not restarted"
    );

    // Nothing the APIs answered was a 5xx, and no log holds a token or a password.
    let statuses = stack.statuses();
    assert!(
        statuses.iter().all(|s| *s < 500),
        "a 5xx was served: {statuses:?}"
    );
    let logs = stack.stop_all_and_read_logs();
    assert!(
        logs.contains("\"path\":\"/whoami\""),
        "the logs were captured"
    );
    for token in &tokens {
        for part in token.split('.') {
            assert!(!logs.contains(part), "a token part is in the logs");
        }
    }
    for (_, password) in PASSWORDS {
        assert!(!logs.contains(password), "a password is in the logs");
    }
}

/// A stop signal drains through `/ready`: with `server.shutdown_delay_seconds` set, the service
/// goes on accepting, `/ready` answers 503 `shutting down` (a load balancer takes it out of
/// rotation) and a new connection is still served. A second Ctrl-C (SIGINT) ends it at once,
/// without waiting out the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_drains_through_ready_and_a_second_ctrl_c_exits() {
    /// Killed if the test ends early, so no service outlives it.
    struct Service(std::process::Child);
    impl Drop for Service {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = stack::free_port();
    let log = dir.path().join("todo-api.log");
    let mut service = Service(
        std::process::Command::new(stack::bin_dir().join("todo-api"))
            .env("TODO_API__SERVER__PORT", port.to_string())
            .env("TODO_API__DATABASE__DATA_DIR", dir.path())
            .env("TODO_API__AUTH__ENABLED", "false")
            .env("TODO_API__SERVER__SHUTDOWN_DELAY_SECONDS", "60")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start todo-api"),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // No kept-alive connections: each request shows whether the listener still accepts.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let get = |path: &'static str| {
        let req = client.get(format!("http://127.0.0.1:{port}{path}"));
        async move {
            let res = req.send().await.ok()?;
            let status = res.status().as_u16();
            Some((status, res.text().await.unwrap_or_default()))
        }
    };
    let send = |child: &std::process::Child, signal| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
            signal,
        )
        .expect("signal sent");
    };
    let started = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(get("/ready").await, Some((200, _))) {
            break;
        }
        if let Some(status) = service.0.try_wait().expect("wait") {
            panic!(
                "todo-api exited ({status}) before it was ready:\n{}",
                log_text()
            );
        }
        assert!(
            Instant::now() < started,
            "todo-api not ready in 30 s:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&service.0, nix::sys::signal::Signal::SIGTERM);
    let body = poll(
        "/ready answers 503 while the service still serves",
        Duration::from_secs(10),
        || async {
            match get("/ready").await {
                Some((503, body)) => Some(body),
                _ => None,
            }
        },
    )
    .await;
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(
        get("/health").await.map(|(s, _)| s),
        Some(200),
        "a new connection is served during the delay"
    );
    assert!(
        service.0.try_wait().expect("wait").is_none(),
        "it waits out the delay"
    );
    send(&service.0, nix::sys::signal::Signal::SIGINT);
    let until = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = service.0.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > until {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exited = exited.unwrap_or_else(|| {
        panic!(
            "a second stop signal (Ctrl-C) did not end the process:\n{}",
            log_text()
        )
    });
    assert_eq!(exited.code(), Some(130), "{exited:?}:\n{}", log_text());
}
