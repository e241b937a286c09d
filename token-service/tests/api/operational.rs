use auth_core::service::testing::{self, expect_config_error};

use crate::helpers::{fixture, spawn_app};

#[tokio::test]
async fn answers_the_operational_routes_with_default_settings() {
    let t = spawn_app().await;
    testing::assert_operational_routes(&t.app).await;
}

#[tokio::test]
async fn ready_is_503_without_the_database() {
    let t = spawn_app().await;
    testing::assert_ready_fails_without_the_database(&t.app).await;
}

#[test]
fn production_refuses_unsafe_config_with_one_line() {
    testing::assert_production_refusals(
        env!("CARGO_BIN_EXE_token-service").as_ref(),
        token_service::INFO.env_prefix,
        "token.issuer",
    );
}

fn base() -> Vec<(&'static str, String)> {
    vec![
        ("TOKEN_SERVICE__ENVIRONMENT", "production".into()),
        (
            "TOKEN_SERVICE__TOKEN__ISSUER",
            "https://id.example.com".into(),
        ),
        (
            "TOKEN_SERVICE__TOKEN__AUDIENCES",
            "todo-api,tasks-api".into(),
        ),
    ]
}

fn refuse(extra: &[(&'static str, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base();
    env.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    expect_config_error(
        env!("CARGO_BIN_EXE_token-service").as_ref(),
        dir.path(),
        &env,
    )
}

/// A blank signing secret (an environment variable set empty) is unset: production then asks
/// for a signing key, where it failed reading a secret file named "".
#[test]
fn a_blank_signing_secret_is_unset() {
    for var in [
        "TOKEN_SERVICE__SIGNING__SECRET",
        "TOKEN_SERVICE__SIGNING__SECRET_FILE",
    ] {
        let e = refuse(&[(var, String::new())]);
        assert!(
            e.starts_with("config error: signing.keys_dir: a signing key is required"),
            "{var}: {e}"
        );
    }
}

#[test]
fn production_refuses_a_proxy_range_that_trusts_every_peer() {
    for all in [
        "0.0.0.0/0",
        "::/0",
        "0.0.0.0/1,128.0.0.0/1",
        "::ffff:0:0/96",
    ] {
        let e = refuse(&[("TOKEN_SERVICE__THROTTLE__TRUSTED_PROXIES", all.into())]);
        assert!(
            e.starts_with("config error: throttle.trusted_proxies:") && e.contains("every peer"),
            "{all}: {e}"
        );
    }
}

/// Sign-in throttling cannot be loosened past a bound in production; the issuer is named by
/// the key the operator set.
#[test]
fn production_refuses_loose_throttling_and_names_the_issuer_key_set() {
    let e = refuse(&[("TOKEN_SERVICE__THROTTLE__MAX_FAILURES", "101".into())]);
    assert!(
        e.starts_with("config error: throttle.max_failures: at most 100 in production"),
        "{e}"
    );
    for (key, var, refused, allowed) in [
        (
            "throttle.window_seconds",
            "TOKEN_SERVICE__THROTTLE__WINDOW_SECONDS",
            "59",
            "60",
        ),
        (
            "throttle.max_entries",
            "TOKEN_SERVICE__THROTTLE__MAX_ENTRIES",
            "999",
            "1000",
        ),
    ] {
        let e = refuse(&[(var, refused.into())]);
        assert!(
            e.starts_with(&format!(
                "config error: {key}: at least {allowed} in production"
            )),
            "{e}"
        );
        let e = refuse(&[(var, allowed.into())]);
        assert!(!e.contains(key), "{allowed} is allowed: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let only_auth = [
        ("TOKEN_SERVICE__ENVIRONMENT", "production"),
        ("TOKEN_SERVICE__AUTH__ISSUER", "http://id.example.com"),
    ];
    let e = expect_config_error(
        env!("CARGO_BIN_EXE_token-service").as_ref(),
        dir.path(),
        &only_auth,
    );
    assert!(
        e.starts_with("config error: auth.issuer: must be https://"),
        "{e}"
    );
}

#[test]
fn proxy_entries_are_compared_as_peers_are() {
    let settings = |entries: &[&str]| token_service::settings::ThrottleSettings {
        trusted_proxies: entries.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    };
    // IPv4-mapped entries are the IPv4 ranges they map, as a peer `::ffff:a.b.c.d` is compared.
    assert_eq!(
        settings(&[
            "::ffff:10.0.0.9",
            "::ffff:10.0.0.0/104",
            "fd00::/8",
            "10.0.0.9"
        ])
        .proxies(),
        ["10.0.0.9/32", "10.0.0.0/8", "fd00::/8", "10.0.0.9/32"]
            .map(|n| n.parse::<ipnet::IpNet>().unwrap())
    );
}

#[cfg(unix)]
fn private_copy(from: &std::path::Path, dir: &std::path::Path, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join("innocent.pem");
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    dir.display().to_string()
}

#[cfg(unix)]
#[test]
fn production_refuses_missing_fixture_and_loose_signing_keys() {
    let e = refuse(&[]);
    assert!(
        e.starts_with("config error: signing.keys_dir: a signing key is required"),
        "{e}"
    );

    let keys = tempfile::tempdir().unwrap();
    let dir = private_copy(&fixture("keys/rsa-private.pem"), keys.path(), 0o600);
    let e = refuse(&[("TOKEN_SERVICE__SIGNING__KEYS_DIR", dir)]);
    assert!(
        e.starts_with("config error: signing.keys_dir:") && e.contains("dev-only"),
        "{e}"
    );

    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("k.pem");
    std::fs::write(
        &path,
        token_service::keys::generate(auth_core::Alg::ES256).unwrap(),
    )
    .unwrap();
    let dir = private_copy(&path, keys.path(), 0o640);
    let e = refuse(&[("TOKEN_SERVICE__SIGNING__KEYS_DIR", dir)]);
    assert!(e.contains("readable by group or others"), "{e}");

    let secret = std::fs::read_to_string(fixture("keys/hs256-secret.txt")).unwrap();
    let e = refuse(&[
        ("TOKEN_SERVICE__SIGNING__SECRET", secret.trim().to_owned()),
        ("TOKEN_SERVICE__SIGNING__ALGORITHM", "HS256".into()),
    ]);
    assert!(
        e.starts_with("config error: signing.secret:") && e.contains("dev-only"),
        "{e}"
    );

    // A secret file others may read is named by the key that was set (it was reported as
    // `auth.secret_file`, which token-service fills in from it).
    let secrets = tempfile::tempdir().unwrap();
    let path = secrets.path().join("hs256.txt");
    std::fs::write(&path, "x".repeat(48)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let e = refuse(&[
        (
            "TOKEN_SERVICE__SIGNING__SECRET_FILE",
            path.display().to_string(),
        ),
        ("TOKEN_SERVICE__SIGNING__ALGORITHM", "HS256".into()),
    ]);
    assert!(e.starts_with("config error: signing.secret_file:"), "{e}");

    for (key, value) in [
        ("TOKEN_SERVICE__USERS__ARGON2_ITERATIONS", "1"),
        ("TOKEN_SERVICE__USERS__ARGON2_MEMORY_KIB", "8192"),
    ] {
        let e = refuse(&[(key, value.into())]);
        let named = key
            .trim_start_matches("TOKEN_SERVICE__")
            .to_lowercase()
            .replacen("__", ".", 1);
        assert!(
            e.starts_with(&format!("config error: {named}: below OWASP")),
            "{key}: {e}"
        );
    }

    let e = refuse(&[(
        "TOKEN_SERVICE__USERS__FIXTURES_FILE",
        fixture("users.toml").display().to_string(),
    )]);
    assert!(e.starts_with("config error: users.fixtures_file:"), "{e}");

    let e = refuse(&[(
        "TOKEN_SERVICE__TOKEN__ISSUER",
        "http://id.example.com".into(),
    )]);
    assert!(
        e.starts_with("config error: token.issuer: must be https://"),
        "{e}"
    );
}

/// A configured role is added to the default `user` and `admin` (before, one `editor` entry
/// replaced the whole map: `user` became an unknown role and admins lost `users:admin`).
#[test]
fn a_configured_role_adds_to_the_default_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token-service.toml");
    std::fs::write(
        &path,
        "[token.role_scopes]\neditor = [\"todos:read\", \"todos:write\"]\nuser = [\"todos:read\"]\n",
    )
    .unwrap();
    let s = token_service::settings::Settings::load_with(Some(&path), false).unwrap();
    let roles: Vec<&str> = s.token.role_scopes.keys().map(String::as_str).collect();
    assert_eq!(roles, ["admin", "editor", "user"]);
    assert!(s.token.role_scopes["admin"].contains(&"users:admin".to_owned()));
    assert_eq!(
        s.token.role_scopes["user"],
        ["todos:read"],
        "a default role can be replaced"
    );
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let e = expect_config_error(
        env!("CARGO_BIN_EXE_token-service").as_ref(),
        dir.path(),
        &[(
            "TOKEN_SERVICE__TOKEN__ROLE_ACCESS",
            r#"{user = ["/todos/%2e%2e/*"]}"#,
        )],
    );
    assert!(
        e.starts_with("config error: token.role_access: role \"user\""),
        "{e}"
    );
    // A secret pasted into the file key by mistake (the local environment) is not printed back.
    let e = expect_config_error(
        env!("CARGO_BIN_EXE_token-service").as_ref(),
        dir.path(),
        &[
            (
                "TOKEN_SERVICE__SIGNING__SECRET_FILE",
                "Leak-Me-0123456789abcdef0123456789",
            ),
            ("TOKEN_SERVICE__SIGNING__ALGORITHM", "HS256"),
        ],
    );
    assert!(
        e.starts_with("config error: signing.secret_file: cannot read the file it names"),
        "{e}"
    );
    assert!(!e.contains("Leak-Me"), "{e}");
    let e = expect_config_error(
        env!("CARGO_BIN_EXE_token-service").as_ref(),
        dir.path(),
        &[("TOKEN_SERVICE__SIGNING__PROPAGATION_DELAY_SECONDS", "10")],
    );
    assert!(
        e.starts_with("config error: signing.propagation_delay_seconds:"),
        "{e}"
    );
    // A lifetime that would overflow `exp`, and a replaced key retired before its tokens expire.
    for (key, value, named) in [
        (
            "TOKEN_SERVICE__TOKEN__LIFETIME_SECONDS",
            "18446744073709551615",
            "token.lifetime_seconds",
        ),
        (
            "TOKEN_SERVICE__TOKEN__LIFETIME_SECONDS",
            "2592001",
            "token.lifetime_seconds",
        ),
        (
            "TOKEN_SERVICE__SIGNING__RETIRE_AFTER_SECONDS",
            "0",
            "signing.retire_after_seconds",
        ),
        // 900 + 300 is the least.
        (
            "TOKEN_SERVICE__SIGNING__RETIRE_AFTER_SECONDS",
            "1199",
            "signing.retire_after_seconds",
        ),
        (
            "TOKEN_SERVICE__THROTTLE__WINDOW_SECONDS",
            "18446744073709551615",
            "throttle.window_seconds",
        ),
        // "Never": it wrapped the old keys' retirement into the past.
        (
            "TOKEN_SERVICE__SIGNING__RETIRE_AFTER_SECONDS",
            "18446744073709551615",
            "signing.retire_after_seconds",
        ),
        // The watcher's `Instant + period` panicked, and SIGHUP went unheard.
        (
            "TOKEN_SERVICE__SIGNING__RESCAN_SECONDS",
            "18446744073709551615",
            "signing.rescan_seconds",
        ),
        // A rotation seen only at an hourly rescan would sign before verifiers cache the key.
        (
            "TOKEN_SERVICE__SIGNING__RESCAN_SECONDS",
            "3600",
            "signing.propagation_delay_seconds",
        ),
        // The argon2 error names the parameter that is wrong.
        (
            "TOKEN_SERVICE__USERS__ARGON2_PARALLELISM",
            "0",
            "users.argon2_parallelism",
        ),
        (
            "TOKEN_SERVICE__USERS__ARGON2_ITERATIONS",
            "0",
            "users.argon2_iterations",
        ),
        // warp's CORS layer panicked on an origin with a path.
        (
            "TOKEN_SERVICE__CORS__ALLOWED_ORIGINS",
            "[https://app.example.com/]",
            "cors.allowed_origins",
        ),
        // One underscore: ignored before, so the service started in the local environment.
        (
            "TOKEN_SERVICE_ENVIRONMENT",
            "production",
            "TOKEN_SERVICE_ENVIRONMENT",
        ),
    ] {
        let e = expect_config_error(
            env!("CARGO_BIN_EXE_token-service").as_ref(),
            dir.path(),
            &[(key, value)],
        );
        assert!(
            e.starts_with(&format!("config error: {named}:")),
            "{key}={value}: {e}"
        );
    }
    let e = expect_config_error(
        env!("CARGO_BIN_EXE_token-service").as_ref(),
        dir.path(),
        &[("TOKEN_SERVICE__THROTTLE__NO_SUCH", "1")],
    );
    assert!(e.contains("no_such"), "{e}");
    // A range with host bits set is refused, as is anything that is no address.
    for bad in ["10.1.2.3/8", "10.0.0.0/33", "proxy.internal"] {
        let e = expect_config_error(
            env!("CARGO_BIN_EXE_token-service").as_ref(),
            dir.path(),
            &[("TOKEN_SERVICE__THROTTLE__TRUSTED_PROXIES", bad)],
        );
        assert!(
            e.starts_with("config error: throttle.trusted_proxies:"),
            "{bad}: {e}"
        );
    }
}
