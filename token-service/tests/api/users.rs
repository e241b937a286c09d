use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_guesses, spawn_with, until};

#[tokio::test]
async fn admin_routes_are_for_admins() {
    let t = spawn_app().await;
    let admin = t.token("admin", &[]).await;
    let alice = t.token("alice", &[("audience", "token-service")]).await;
    let alice_default = t.token("alice", &[]).await;

    let res = t.get_auth("/users", &admin).await;
    assert_eq!(res.status(), 200);
    let users: Value = res.json().await.unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "bob"]);
    assert!(
        !users.to_string().contains("argon2"),
        "no hash is ever returned"
    );

    let res = t.get_auth("/users", &alice).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "insufficient_scope"
    );
    let res = t.get_auth("/users", &alice_default).await;
    assert_eq!(res.status(), 401, "a token for other audiences is refused");
    assert_eq!(t.app.get("/users").await.status(), 401);

    let res = t
        .create_user(
            &alice,
            &json!({"username": "carol", "password": "carol-password-1"}),
        )
        .await;
    assert_eq!(res.status(), 403);

    // An admin's token narrowed at sign-in to another API's scope manages no accounts; one
    // that kept `users:admin` does. Their own profile stays theirs either way.
    let narrowed = t
        .token(
            "admin",
            &[("scope", "todos:read"), ("audience", "token-service")],
        )
        .await;
    auth_core::service::testing::assert_needs_scope(
        t.get_auth("/users", &narrowed).await,
        "users:admin",
    )
    .await;
    let res = t
        .create_user(
            &narrowed,
            &json!({"username": "carol", "password": "carol-password-1"}),
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(t.get_auth("/users/me", &narrowed).await.status(), 200);
    let kept = t
        .token(
            "admin",
            &[
                ("scope", "users:admin todos:read"),
                ("audience", "token-service"),
            ],
        )
        .await;
    assert_eq!(t.get_auth("/users", &kept).await.status(), 200);
}

#[tokio::test]
async fn admin_creates_users_with_validation_and_conflicts() {
    let t = spawn_app().await;
    let admin = t.token("admin", &[]).await;
    let post = async |body: Value| t.create_user(&admin, &body).await;
    let res =
        post(json!({"username": "carol", "password": "carol-password-1", "roles": ["user"]})).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let carol: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/users/{}", carol["id"].as_str().unwrap())
    );
    let res = t.get_auth(&location, &admin).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), carol);
    let alice = t.token("alice", &[("audience", "token-service")]).await;
    assert_eq!(t.get_auth(&location, &alice).await.status(), 403);
    assert_eq!(t.get_auth("/users/no-such-id", &admin).await.status(), 404);
    assert_eq!(carol["roles"], json!(["user"]));
    assert!(carol.get("password_hash").is_none());
    let token = t
        .form(&[("username", "carol"), ("password", "carol-password-1")])
        .await;
    assert_eq!(token.status(), 200);

    let res = post(json!({"username": "carol", "password": "carol-password-2"})).await;
    assert_eq!(res.status(), 409);

    for (body, field) in [
        (json!({"username": "dave", "password": "short"}), "password"),
        (
            json!({"username": "dave-long-name", "password": "dave-long-name"}),
            "password",
        ),
        (
            json!({"username": "bad name", "password": "a-long-password"}),
            "username",
        ),
        (
            json!({"username": "dave", "password": "a-long-password", "roles": ["root"]}),
            "roles",
        ),
        (json!({"password": "a-long-password"}), "username"),
        // A grant the services would never match, or would match otherwise than it reads.
        (
            json!({"username": "dave", "password": "a-long-password", "access": ["/todos/../*"]}),
            "access",
        ),
        (
            json!({"username": "dave", "password": "a-long-password", "access": ["/todos/"]}),
            "access",
        ),
        (
            json!({"username": "dave", "password": "a-long-password", "access": ["todos"]}),
            "access",
        ),
    ] {
        let res = post(body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let msg: Value = res.json().await.unwrap();
        assert!(
            msg["message"].as_str().unwrap().contains(field),
            "{body}: {msg}"
        );
    }
}

#[tokio::test]
async fn me_and_password_change() {
    let t = spawn_app().await;
    let token = t.token("alice", &[("audience", "token-service")]).await;
    let me: Value = t.get_auth("/users/me", &token).await.json().await.unwrap();
    assert_eq!(me["username"], "alice");

    let res = t
        .change_password(&token, "wrong-password!", "a-new-password-1")
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("old_password"));
    let res = t
        .change_password(&token, "alice-dev-password", "short")
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("new_password"));
    let res = t
        .change_password(&token, "alice-dev-password", "a-new-password-1")
        .await;
    assert_eq!(res.status(), 204);

    let old = t
        .form(&[("username", "alice"), ("password", "alice-dev-password")])
        .await;
    assert_eq!(old.status(), 401);
    let new = t
        .form(&[("username", "alice"), ("password", "a-new-password-1")])
        .await;
    assert_eq!(new.status(), 200);
    // The token issued before the change stays valid until its exp (documented).
    assert_eq!(t.get_auth("/users/me", &token).await.status(), 200);
}

/// Guessing the current password through the password change is throttled like sign-ins.
#[tokio::test]
async fn password_change_guesses_are_throttled() {
    let t = spawn_app().await;
    let token = t.token("alice", &[("audience", "token-service")]).await;
    let put = async |old: &'static str| t.change_password(&token, old, "a-new-password-1").await;
    for _ in 0..5 {
        assert_eq!(put("a-wrong-guess!!").await.status(), 400);
    }
    let res = put("alice-dev-password").await;
    assert_eq!(
        res.status(),
        429,
        "even the right password waits out the lockout"
    );
    assert!(res.headers().contains_key("retry-after"));
    t.clock.advance(301);
    assert_eq!(put("alice-dev-password").await.status(), 204);
}

/// Parallel sign-ins cannot all pass the throttle before any failure is counted.
#[tokio::test]
async fn parallel_guesses_are_bounded_by_the_throttle() {
    let t = spawn_app().await;
    let guesses = (0..20).map(|i| {
        let password = format!("wrong-password-{i:02}");
        let t = &t;
        async move {
            t.form(&[("username", "bob"), ("password", &password)])
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let tried = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(
        tried, 5,
        "exactly max_failures guesses reach the hasher: {statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 15);
}

/// A burst of guesses from one address at many names learns at most `max_failures` outcomes,
/// and puts at most `throttle.max_in_flight_per_address` (16) names at risk:
/// - 4 of the 20 are refused at once (429, `Retry-After: 1`) and count against no name;
/// - the 16 in flight each count against their name before any finishes; 5 failures are
///   answered (401), the 11 that finish after the address locked are 429 like the rest.
///
/// (Before, the address counted only failures that had finished, and every guess of the burst
/// was answered; later, every guess of the burst counted against its name.)
#[tokio::test]
async fn a_burst_from_one_address_learns_at_most_max_failures_outcomes() {
    let t = Arc::new(spawn_app().await);
    t.hasher.gate.close();
    let guesses = spawn_guesses(&t, "sprayed", 20);
    // 16 are past the check (each counts against its name at once) and held at the gate
    // before any finishes; the other 4 were answered at once.
    let settled = until(|| {
        t.state.throttle.len().0 >= 16 && guesses.iter().filter(|g| g.is_finished()).count() >= 4
    })
    .await;
    let names_counted = t.state.throttle.len().0;
    t.hasher.gate.open();
    assert!(
        settled,
        "the burst never settled at 16 in flight and 4 refused"
    );
    assert_eq!(names_counted, 16, "refused guesses count against no name");
    let mut answers = Vec::new();
    for g in guesses {
        answers.push(g.await.unwrap());
    }
    let count = |status: u16, retry: Option<&str>| {
        answers
            .iter()
            .filter(|(s, r)| *s == status && r.as_deref() == retry)
            .count()
    };
    assert_eq!(count(401, None), 5, "{answers:?}");
    assert_eq!(count(429, Some("1")), 4, "busy: {answers:?}");
    assert_eq!(count(429, Some("300")), 11, "overtaken: {answers:?}");
    assert_eq!(t.hasher.verifies.load(Ordering::SeqCst), 16);
}

/// Past `users.max_queued_hashes` requests waiting for a password check, the next is shed at
/// once: 503 `temporarily_unavailable` with `Retry-After: 1`, before any password is checked,
/// and counted against no name, so an honest user shed more than `throttle.max_failures` times
/// signs in as soon as the queue drains. A password change in a full queue is 503 too, not
/// "old_password: incorrect".
#[tokio::test]
async fn sign_ins_past_the_hash_queue_are_shed_and_count_against_no_one() {
    let t = Arc::new(spawn_with(|s| s.users.max_queued_hashes = 2).await);
    let alice = t.token("alice", &[("audience", "token-service")]).await;
    // The recorder is the process's: only this test sheds, so its difference is this test's.
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    let before = t.app.get("/metrics").await.text().await.unwrap();
    t.hasher.gate.close();
    let held = spawn_guesses(&t, "queued", 3);
    // One at the gate (hashing), two waiting for a turn.
    if !until(|| t.state.passwords.waiting() >= 2).await {
        t.hasher.gate.open();
        panic!("the queue never held two waiting sign-ins");
    }
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut shed = Vec::new();
        for _ in 0..7 {
            let res = t
                .form(&[("username", "alice"), ("password", "alice-dev-password")])
                .await;
            let retry = res.headers().get("retry-after").cloned();
            let body: Value = res.json().await.unwrap();
            shed.push((retry, body));
        }
        let mut changes = Vec::new();
        for _ in 0..6 {
            let change = t
                .change_password(&alice, "alice-dev-password", "a-new-password-1")
                .await;
            changes.push(change.status().as_u16());
        }
        (shed, changes)
    })
    .await;
    let waiting = t.state.passwords.waiting();
    let during = t.app.get("/metrics").await.text().await.unwrap();
    t.hasher.gate.open();
    let (shed, changes) = answered.expect("requests past the queue waited for a turn");
    for (retry, body) in &shed {
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        assert_eq!(retry.as_ref().unwrap(), "1");
    }
    assert_eq!(
        changes, [503; 6],
        "a full queue is not a wrong old password"
    );
    assert_eq!(waiting, 2, "shed requests never joined the queue");
    assert_eq!(
        metric(&during, "password_checks_shed_total")
            - metric(&before, "password_checks_shed_total"),
        13.0,
        "{during}"
    );
    assert!(
        metric(&during, "password_checks_waiting") >= 2.0,
        "{during}"
    );
    for h in held {
        assert_eq!(h.await.unwrap().0, 401);
    }
    // Seven shed sign-ins and six shed changes (each past `throttle.max_failures`): alice is not
    // locked out, and her password is unchanged.
    t.token("alice", &[]).await;
    assert_eq!(
        t.hasher.verifies.load(Ordering::SeqCst),
        5,
        "no password was checked for a shed request"
    );
}

/// alice's change from her fixture password to `new`, running on its own: its status.
fn spawn_change(
    t: &Arc<crate::helpers::TestApp>,
    token: &str,
    new: &'static str,
) -> tokio::task::JoinHandle<u16> {
    let (t, token) = (t.clone(), token.to_owned());
    tokio::spawn(async move {
        t.change_password(&token, "alice-dev-password", new)
            .await
            .status()
            .as_u16()
    })
}

/// A password change checks the old password and hashes the new one in one turn: a queue that
/// fills while the old password is checked cannot refuse the change after the check.
///
/// (Before, the turn ended with the check and was handed to the request waiting in the full
/// queue, and the change's hash was refused: 503 after a right old password.)
#[tokio::test]
async fn a_password_change_whose_old_password_was_checked_is_never_shed() {
    use std::future::Future;
    use std::task::{Context, Waker};
    let t = Arc::new(spawn_with(|s| s.users.max_queued_hashes = 1).await);
    let alice = t.token("alice", &[("audience", "token-service")]).await;
    t.hasher.gate.close();
    let change = spawn_change(&t, &alice, "a-new-password-1");
    let checking = until(|| t.hasher.gate.held() > 0).await;
    // The queue's one place taken while the old password is being checked.
    let mut cx = Context::from_waker(Waker::noop());
    let mut queued = Box::pin(t.state.passwords.permit());
    let queued_waits = queued.as_mut().poll(&mut cx).is_pending();
    t.hasher.gate.open();
    assert!(checking, "the change never reached the check");
    assert!(queued_waits);
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), change)
        .await
        .expect("the change finished")
        .unwrap();
    drop(queued);
    assert_eq!(status, 204);
    let res = t
        .form(&[("username", "alice"), ("password", "a-new-password-1")])
        .await;
    assert_eq!(res.status(), 200, "the new password holds");
}

/// Two changes checked against the same old password: the first to land holds, the second is
/// a 409 (it used to land over the first: both answered 204, and the first change, perhaps the
/// user's own after a leak, was silently undone).
#[tokio::test]
async fn a_password_change_never_undoes_one_that_landed_meanwhile() {
    let t = Arc::new(spawn_with(|s| s.users.max_concurrent_hashes = 2).await);
    let alice = t.token("alice", &[("audience", "token-service")]).await;
    t.hasher.gate.close();
    let (first, second) = (
        spawn_change(&t, &alice, "a-new-password-1"),
        spawn_change(&t, &alice, "a-new-password-2"),
    );
    // Both have read the old hash and wait at the check of the old password.
    let both_checking = until(|| t.hasher.gate.held() == 2).await;
    t.hasher.gate.open();
    assert!(
        both_checking,
        "the two changes never reached the check together"
    );
    let mut statuses = [first.await.unwrap(), second.await.unwrap()];
    statuses.sort_unstable();
    assert_eq!(statuses, [204, 409]);
    let signed_in = [
        t.form(&[("username", "alice"), ("password", "a-new-password-1")])
            .await
            .status(),
        t.form(&[("username", "alice"), ("password", "a-new-password-2")])
            .await
            .status(),
    ];
    assert_eq!(
        signed_in.iter().filter(|s| s.as_u16() == 200).count(),
        1,
        "exactly the change that answered 204 holds: {signed_in:?}"
    );
}

/// A sign-in's rehash of the same password (after a change of argon2 parameters) landing while
/// a change checks the old password is not another change: the change goes on over it (it was a
/// 409, though nobody had changed the password).
#[tokio::test]
async fn a_password_change_goes_on_over_a_rehash_of_the_same_password() {
    use token_service::passwords::{Argon2id, Hasher};
    let t = Arc::new(spawn_app().await);
    let alice = t.token("alice", &[("audience", "token-service")]).await;
    let before = t.state.users.by_username("alice").await.unwrap().unwrap();
    t.hasher.gate.close();
    let change = spawn_change(&t, &alice, "a-new-password-1");
    let checking = until(|| t.hasher.gate.held() == 1).await;
    // What a sign-in's rehash writes: the same password, hashed again.
    let rehashed = Argon2id::new(&t.state.settings.users)
        .unwrap()
        .hash(b"alice-dev-password")
        .unwrap();
    assert!(
        t.state
            .users
            .upgrade_password_hash(&before.id, &before.password_hash, &rehashed)
            .await
            .unwrap()
    );
    t.hasher.gate.open();
    assert!(checking, "the change never reached the check");
    assert_eq!(change.await.unwrap(), 204);
    let res = t
        .form(&[("username", "alice"), ("password", "a-new-password-1")])
        .await;
    assert_eq!(res.status(), 200, "the new password holds");
}

/// A disabled account's live token does nothing at token-service: a leaked admin token cannot
/// outlast the disable by creating an admin of its own.
#[tokio::test]
async fn a_disabled_accounts_live_token_is_refused() {
    let t = spawn_app().await;
    let admin = t.token("admin", &[]).await;
    let alice = t.token("alice", &[("audience", "token-service")]).await;
    let res = t
        .create_user(
            &admin,
            &json!({"username": "admin2", "password": "admin2-password-1", "roles": ["admin"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let admin2 = t
        .form(&[("username", "admin2"), ("password", "admin2-password-1")])
        .await;
    let admin2 = admin2.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let users: Value = t.get_auth("/users", &admin2).await.json().await.unwrap();
    let id_of = |name: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for name in ["admin", "alice"] {
        let res = t
            .app
            .client
            .delete(t.url(&format!("/users/{}", id_of(name))))
            .bearer_auth(&admin2)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{name}");
    }
    let create = t
        .create_user(
            &admin,
            &json!({"username": "mallory", "password": "mallory-password-1", "roles": ["admin"]}),
        )
        .await;
    let change = t
        .change_password(&alice, "alice-dev-password", "a-new-password-1")
        .await;
    let list = t.get_auth("/users", &admin).await;
    let me = t.get_auth("/users/me", &alice).await;
    for res in [create, change, list, me] {
        assert_eq!(res.status(), 401);
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["message"], "the account is disabled or no longer exists",
            "{body}"
        );
    }
    // The admin that is still active still acts.
    assert_eq!(t.get_auth("/users", &admin2).await.status(), 200);
}

/// `token-service users add` holds a name to the API's rule: `" alice"` made an account that
/// could never sign in (`/token` trims the name).
#[tokio::test]
async fn users_add_refuses_a_name_the_api_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::helpers::local_settings(dir.path()).finish().unwrap();
    for name in [" alice", "bob ", "a\tb", ""] {
        let e = token_service::cli::add_user(&settings, name, "a-long-password-1".into(), false)
            .await
            .expect_err(name);
        assert!(e.to_string().starts_with("users add: username:"), "{e}");
    }
    let created =
        token_service::cli::add_user(&settings, "dora", "a-long-password-1".into(), false)
            .await
            .unwrap();
    assert_eq!(created.username, "dora");
}
