use std::time::Duration;

use auth_core::clock::{Clock, SystemClock};
use token_service::keys;

use crate::helpers::{TestApp, decode, local_settings, spawn_settings};

/// The local settings with only `signing.keys_dir` (under `dir`) as the key source.
fn keys_dir_settings(dir: &std::path::Path) -> token_service::settings::Settings {
    let mut settings = local_settings(dir);
    settings.signing.key_files.clear();
    settings.signing.keys_dir = Some(dir.join("keys"));
    settings.finish().unwrap()
}

async fn spawn_with_keys_dir() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let settings = keys_dir_settings(dir.path());
    // The first key: nothing signs yet, so it is active at once.
    let first = keys::rotate(&settings, SystemClock.now()).unwrap();
    assert!(first.retiring.is_empty());
    spawn_settings(settings, dir).await
}

#[tokio::test]
async fn rotation_phases_published_then_signing_then_retired() {
    let t = spawn_with_keys_dir().await;
    let old = t.state.keys.signer().unwrap().kid.clone();
    assert_eq!(TestApp::kids(&t.jwks().await), [old.as_str()]);
    let old_token = t.token("admin", &[]).await;
    assert_eq!(decode(&old_token).0["kid"], old.as_str());

    // Rotate: the new key is published, not yet signing.
    let rotated = keys::rotate(&t.state.settings, t.clock.now()).unwrap();
    assert_eq!(rotated.activate_at, t.clock.now() + 600);
    assert_eq!(
        rotated.retiring,
        [(old.clone(), t.clock.now() + 600 + 900 + 300)]
    );
    t.state.keys.reload();
    assert_eq!(
        keys::prune(&t.state.settings, t.clock.now()).unwrap(),
        [],
        "nothing is retired yet"
    );
    let mut kids = TestApp::kids(&t.jwks().await);
    kids.sort();
    let mut both = vec![old.clone(), rotated.kid.clone()];
    both.sort();
    assert_eq!(kids, both, "published before signing");
    assert_eq!(decode(&t.token("alice", &[]).await).0["kid"], old.as_str());

    // After the propagation delay the new key signs; the old one is still published.
    t.clock.advance(600);
    let new_token = t.token("admin", &[]).await;
    assert_eq!(decode(&new_token).0["kid"], rotated.kid.as_str());
    assert_eq!(TestApp::kids(&t.jwks().await).len(), 2);
    let res = t.get_auth("/users/me", &old_token).await;
    assert_eq!(
        res.status(),
        200,
        "old tokens still verify: {}",
        res.text().await.unwrap()
    );

    // Once every old token expired (plus the verifiers' cache TTL) the old key is retired.
    t.clock.advance(900 + 300 - 1);
    assert_eq!(TestApp::kids(&t.jwks().await).len(), 2);
    t.clock.advance(1);
    assert_eq!(TestApp::kids(&t.jwks().await), [rotated.kid.as_str()]);
    let fresh = t.token("admin", &[]).await;
    assert_eq!(decode(&fresh).0["kid"], rotated.kid.as_str());
    assert_eq!(t.get_auth("/users/me", &fresh).await.status(), 200);
    assert_eq!(
        t.get_auth("/users/me", &new_token).await.status(),
        401,
        "expired by now"
    );

    let listing = keys::list(&t.state.settings, t.clock.now()).join("\n");
    assert!(
        listing.contains(&format!("{old}\tES256\tretired")),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("{}\tES256\tsigning", rotated.kid)),
        "{listing}"
    );

    // `keys prune` deletes the retired key's files, and only those.
    let ring = t.state.keys.ring();
    let old_path = ring
        .keys()
        .iter()
        .find(|k| k.kid == old)
        .and_then(|k| k.path.clone())
        .expect("the old key's file");
    assert!(old_path.exists() && keys::meta_path(&old_path).exists());
    let pruned = keys::prune(&t.state.settings, t.clock.now()).unwrap();
    assert_eq!(
        pruned,
        [keys::Pruned {
            kid: old.clone(),
            path: old_path.clone(),
            retired_at: t.clock.now(),
        }]
    );
    assert!(!old_path.exists() && !keys::meta_path(&old_path).exists());
    assert!(rotated.path.exists() && keys::meta_path(&rotated.path).exists());
    assert_eq!(keys::prune(&t.state.settings, t.clock.now()).unwrap(), []);
    let listing = keys::list(&t.state.settings, t.clock.now()).join("\n");
    assert!(!listing.contains(&old), "{listing}");
    t.state.keys.reload();
    assert_eq!(TestApp::kids(&t.jwks().await), [rotated.kid.as_str()]);
    assert_eq!(t.get_auth("/users/me", &fresh).await.status(), 200);
}

/// A rotation, rolled back by deleting the new key's files: the old key still signs, with the
/// retirement the rotation gave it. Returns its kid and that time.
fn rolled_back_rotation(t: &TestApp) -> (String, u64) {
    let old = t.state.keys.signer().unwrap().kid.clone();
    let rotated = keys::rotate(&t.state.settings, t.clock.now()).unwrap();
    let retire_at = rotated.retiring[0].1;
    std::fs::remove_file(keys::meta_path(&rotated.path)).unwrap();
    std::fs::remove_file(&rotated.path).unwrap();
    t.state.keys.reload();
    (old, retire_at)
}

/// A key file `keys rotate` cannot read (here the signer's sidecar, edited with a typo) may be
/// the key the running service signs with (a rescan keeps what it had): the rotation is
/// refused, naming the file. Before, the new key was taken for the first one and signed at
/// once, before any relying party had it.
#[tokio::test]
async fn a_rotation_with_an_unreadable_key_file_is_refused() {
    let t = spawn_with_keys_dir().await;
    let old = t.state.keys.signer().unwrap().kid.clone();
    let dir = t.state.settings.signing.keys_dir.clone().unwrap();
    let sidecar = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "toml"))
        .unwrap();
    std::fs::write(&sidecar, "activate_at = \"soon\"\n").unwrap();
    t.state.keys.reload();
    assert_eq!(
        t.state.keys.signer().unwrap().kid,
        old,
        "the service keeps it"
    );
    let e = keys::rotate(&t.state.settings, t.clock.now())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&sidecar.display().to_string()), "{e}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "nothing was written"
    );
    t.state.keys.reload();
    assert_eq!(decode(&t.token("alice", &[]).await).0["kid"], old.as_str());
}

/// A `signing.key_files` entry naming no file holds no key a service could have kept: it does
/// not block a rotation (a file that exists and cannot be read does, above).
#[test]
fn a_missing_key_file_does_not_block_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = keys_dir_settings(dir.path());
    settings.signing.key_files.push(dir.path().join("gone.pem"));
    let first = keys::rotate(&settings, SystemClock.now()).unwrap();
    assert!(first.path.exists());
}

/// A rotation rolled back (the new key's files deleted), then another rotation shortly before
/// the old key's retirement, which would come before the new key could sign: refused, naming
/// the key and both times (before, it went through, and from the old key's retirement until
/// the new key activated nothing signed: `POST /token` 503 and `/ready` failing everywhere).
#[tokio::test]
async fn a_rotation_that_would_leave_no_signer_is_refused() {
    let t = spawn_with_keys_dir().await;
    let (old, retire_at) = rolled_back_rotation(&t);
    t.clock.set(retire_at - 300);
    let e = keys::rotate(&t.state.settings, t.clock.now())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&old) && e.contains(&keys::format_time(retire_at)) && e.contains("retire_at"),
        "{e}"
    );
    assert_eq!(t.state.keys.ring().keys().len(), 1, "nothing was written");
    t.state.keys.reload();
    assert_eq!(t.state.keys.ring().keys().len(), 1, "nothing was written");
    // Far enough from the retirement the rotation goes through.
    t.clock.set(retire_at - 600);
    assert!(keys::rotate(&t.state.settings, t.clock.now()).is_ok());
}

#[cfg(unix)]
/// A rotation rolled back (the new key's files deleted) leaves the old key signing with a
/// retirement time: its tokens expire by then, never after the key has left the set.
#[tokio::test]
async fn a_token_never_outlives_its_signing_key() {
    let t = spawn_with_keys_dir().await;
    let (old, retire_at) = rolled_back_rotation(&t);
    // 100 s before the old key retires: the token lives 100 s, not 900.
    t.clock.set(retire_at - 100);
    let res = t
        .form(&[("username", "alice"), ("password", "alice-dev-password")])
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 100, "{body}");
    let (header, claims) = decode(body["access_token"].as_str().unwrap());
    assert_eq!(header["kid"], old.as_str());
    assert_eq!(claims["exp"], retire_at);
    // Far from retirement the lifetime is the configured one.
    let t = spawn_with_keys_dir().await;
    let (_, claims) = decode(&t.token("alice", &[]).await);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );
}

#[tokio::test]
async fn a_live_service_picks_up_new_keys_on_sighup() {
    let t = spawn_with_keys_dir().await;
    let mut generation = t.state.keys.subscribe();
    generation.borrow_and_update();
    let rotated = keys::rotate(&t.state.settings, t.clock.now()).unwrap();
    assert!(
        !TestApp::kids(&t.jwks().await).contains(&rotated.kid),
        "not before a rescan"
    );
    // A system call, not a `kill` program: slim images have none.
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::timeout(Duration::from_secs(10), generation.changed())
        .await
        .expect("reloaded after SIGHUP")
        .unwrap();
    assert!(TestApp::kids(&t.jwks().await).contains(&rotated.kid));
}

/// The periodic rescan (`signing.rescan_seconds`) picks up a new key file. Tokio's clock is
/// paused: it jumps to the next timer when every task waits, so the test waits on the store's
/// reload signal, never on wall time.
#[tokio::test(start_paused = true)]
async fn the_periodic_rescan_picks_up_new_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = local_settings(dir.path());
    settings.signing.key_files.clear();
    settings.signing.keys_dir = Some(dir.path().join("keys"));
    settings.signing.rescan_seconds = 60;
    let settings = settings.finish().unwrap();
    keys::rotate(&settings, SystemClock.now()).unwrap();
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(SystemClock);
    let store = keys::KeyStore::open(&settings.signing, false, clock).unwrap();
    store.spawn_watcher();
    let mut generation = store.subscribe();
    generation.borrow_and_update();
    let rotated = keys::rotate(&settings, SystemClock.now()).unwrap();
    let published = |store: &keys::KeyStore| {
        store.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == rotated.kid.as_str())
    };
    assert!(!published(&store), "not before a rescan");
    let started = tokio::time::Instant::now();
    // Another test of this binary may send the process a SIGHUP, which reloads every store in
    // it: such a reload comes before the period and is passed over.
    let rescanned = async {
        while started.elapsed() < Duration::from_secs(60) {
            generation.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), rescanned)
        .await
        .expect("no rescan within two periods");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(60),
        "one rescan period (virtual time)"
    );
    assert!(published(&store), "the rescan published the new key");
}

#[test]
fn rotate_needs_a_keys_dir_and_writes_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let settings = local_settings(dir.path()).finish().unwrap();
    let e = keys::rotate(&settings, 0).unwrap_err().to_string();
    assert!(e.contains("signing.keys_dir"), "{e}");

    let mut settings = local_settings(dir.path());
    settings.signing.keys_dir = Some(dir.path().join("k"));
    settings.signing.algorithm = auth_core::Alg::EdDSA;
    let settings = settings.finish().unwrap();
    let r = keys::rotate(&settings, 1_000).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&r.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let meta = std::fs::read_to_string(keys::meta_path(&r.path)).unwrap();
    assert!(
        meta.contains("activate_at = \"1970-01-01T00:26:40Z\""),
        "{meta}"
    );
}

#[test]
fn prune_deletes_a_file_only_when_every_copy_of_every_key_in_it_is_retired() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let settings_with = |key_files: Vec<std::path::PathBuf>| {
        let mut s = local_settings(dir.path());
        s.signing.key_files = key_files;
        s.signing.keys_dir = Some(keys_dir.clone());
        s.finish().unwrap()
    };
    let settings = settings_with(Vec::new());
    // Three rotations: k1 and k2 get retirement times, k3 signs.
    let k1 = keys::rotate(&settings, 1_000).unwrap();
    let k2 = keys::rotate(&settings, 2_000).unwrap();
    let k3 = keys::rotate(&settings, 3_000).unwrap();
    let later = 1_000_000;
    let text = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();

    // A copy named in signing.key_files, or the same file named there, keeps the key.
    let ops = dir.path().join("ops");
    std::fs::create_dir_all(&ops).unwrap();
    std::fs::write(ops.join("k1.pem"), text(&k1.path)).unwrap();
    let kept = settings_with(vec![ops.join("k1.pem"), k2.path.clone()]);
    assert_eq!(keys::prune(&kept, later).unwrap(), []);
    assert!(k1.path.exists() && k2.path.exists());

    // A file of two retired keys (k1 + k2, retired by its sidecar) goes once, naming both, with
    // their own files.
    let both = keys_dir.join("both.pem");
    std::fs::write(&both, text(&k1.path) + &text(&k2.path)).unwrap();
    std::fs::copy(keys::meta_path(&k1.path), keys::meta_path(&both)).unwrap();
    let sorted = |pruned: Vec<keys::Pruned>| {
        let mut v: Vec<(String, std::path::PathBuf)> =
            pruned.into_iter().map(|p| (p.kid, p.path)).collect();
        v.sort();
        v
    };
    let mut expected = vec![
        (k1.kid.clone(), k1.path.clone()),
        (k2.kid.clone(), k2.path.clone()),
        (k1.kid.clone(), both.clone()),
        (k2.kid.clone(), both.clone()),
    ];
    expected.sort();
    assert_eq!(sorted(keys::prune(&settings, later).unwrap()), expected);
    assert!(!both.exists() && !keys::meta_path(&both).exists());
    assert!(!k1.path.exists() && !k2.path.exists() && k3.path.exists());

    // A file with a retired and a live key (k3 + k4) stays, and so does the live key's own file;
    // the retired key's own file goes.
    let k4 = keys::rotate(&settings, 4_000).unwrap();
    let mixed = keys_dir.join("mixed.pem");
    std::fs::write(&mixed, text(&k3.path) + &text(&k4.path)).unwrap();
    std::fs::copy(keys::meta_path(&k3.path), keys::meta_path(&mixed)).unwrap();
    assert_eq!(
        sorted(keys::prune(&settings, later).unwrap()),
        [(k3.kid.clone(), k3.path.clone())]
    );
    assert!(mixed.exists() && k4.path.exists() && !k3.path.exists());

    // Without a readable directory there is nothing to judge: an error, not "nothing to delete".
    let mut s = local_settings(dir.path());
    s.signing.key_files.clear();
    s.signing.keys_dir = Some(dir.path().join("no-such-dir"));
    let e = keys::prune(&s.finish().unwrap(), later).unwrap_err();
    assert!(format!("{e:#}").contains("signing.keys_dir"), "{e:#}");
}

/// An operator edits a key's sidecar. An unquoted TOML datetime (idiomatic TOML) is read like
/// the quoted RFC 3339 text `keys rotate` writes: a retirement written that way takes effect.
/// A sidecar that cannot be read at all (a typo, an extra line) no longer resets the key to
/// "always active, never retired": a running service keeps the phases it had.
#[tokio::test]
async fn an_edited_sidecar_is_read_as_toml_and_a_broken_one_changes_nothing() {
    let t = spawn_with_keys_dir().await;
    let first = t.state.keys.signer().unwrap().kid.clone();
    let rotated = keys::rotate(&t.state.settings, t.clock.now()).unwrap();
    t.state.keys.reload();
    let sidecar = |kid: &str| {
        let ring = t.state.keys.ring();
        let key = ring.keys().iter().find(|k| k.kid == kid).unwrap();
        keys::meta_path(key.path.as_ref().unwrap())
    };
    let meta = |kid: &str| {
        t.state
            .keys
            .ring()
            .keys()
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.meta)
    };
    let second = rotated.kid.clone();
    let second_meta = meta(&second).unwrap();
    assert!(second_meta.activate_at > 0);

    // A broken sidecar: the key keeps its phases (before: activate_at 0, never retired).
    std::fs::write(sidecar(&second), "activate_at = \"soon\"\nnote = \"x\"\n").unwrap();
    t.state.keys.reload();
    assert_eq!(meta(&second), Some(second_meta));

    // An unquoted datetime in the past retires the first key at once.
    std::fs::write(
        sidecar(&first),
        "activate_at = 1970-01-01T00:00:00Z\nretire_at = 2000-01-01T00:00:00Z\n",
    )
    .unwrap();
    t.state.keys.reload();
    assert_eq!(meta(&first).unwrap().retire_at, Some(946_684_800));
    assert!(!TestApp::kids(&t.jwks().await).contains(&first));
}

/// At startup there are no previous phases to keep: a key whose sidecar cannot be read is left
/// out (and reported), not published for ever.
#[test]
fn a_key_with_a_broken_sidecar_is_left_out_of_a_fresh_scan() {
    let dir = tempfile::tempdir().unwrap();
    let settings = keys_dir_settings(dir.path());
    let first = keys::rotate(&settings, SystemClock.now()).unwrap();
    let second = keys::rotate(&settings, SystemClock.now()).unwrap();
    std::fs::write(keys::meta_path(&second.path), "activate_at = [1]\n").unwrap();
    let (ring, problems) = keys::scan(&settings.signing, false);
    let kids: Vec<&str> = ring.keys().iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [first.kid.as_str()]);
    assert_eq!(problems.len(), 1);
    let p = problems[0].to_string();
    assert!(
        p.starts_with("config error: signing.keys_dir:") && p.contains("left out"),
        "{p}"
    );
}

/// A certificate chain beside a signing key (a leaf and a P-384 intermediate, common for ECDSA
/// CAs): the certificate of a key that signs nothing here is not a problem (before, it was one,
/// and production refused to start).
#[test]
fn a_certificate_of_a_key_that_signs_nothing_is_no_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = local_settings(dir.path());
    settings.signing.key_files = vec![
        crate::helpers::fixture("keys/ec-private.pem"),
        crate::helpers::fixture("keys/p384-ca-cert.pem"),
    ];
    let settings = settings.finish().unwrap();
    let (ring, problems) = keys::scan(&settings.signing, false);
    assert_eq!(ring.keys().len(), 1);
    assert!(
        problems.is_empty(),
        "{:?}",
        problems.iter().map(|p| p.to_string()).collect::<Vec<_>>()
    );
}

/// A keys directory that exists but cannot be listed at a rescan keeps the keys read from it,
/// even when `signing.key_files` still gives a key (before, the ring became that key alone: the
/// signer left the JWKS and signing fell back to it). Only a directory that is gone takes its
/// keys out. (Replaced by a file, it fails to list for any user, root included.)
#[tokio::test]
async fn a_keys_dir_that_cannot_be_listed_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = local_settings(dir.path());
    settings.signing.keys_dir = Some(dir.path().join("keys"));
    assert!(!settings.signing.key_files.is_empty());
    let settings = settings.finish().unwrap();
    let in_dir = keys::rotate(&settings, SystemClock.now()).unwrap().kid;
    let t = spawn_settings(settings, dir).await;
    let keys_dir = t.state.settings.signing.keys_dir.clone().unwrap();
    let kids = || async {
        let mut kids = TestApp::kids(&t.jwks().await);
        kids.sort();
        kids
    };
    let before = kids().await;
    assert!(before.len() > 1 && before.contains(&in_dir), "{before:?}");
    let signer = t.state.keys.signer().unwrap().kid.clone();

    let aside = keys_dir.with_extension("aside");
    std::fs::rename(&keys_dir, &aside).unwrap();
    std::fs::write(&keys_dir, "not a directory").unwrap();
    t.state.keys.reload();
    assert_eq!(kids().await, before);
    assert_eq!(t.state.keys.signer().unwrap().kid, signer);

    // Gone: its keys go too.
    std::fs::remove_file(&keys_dir).unwrap();
    t.state.keys.reload();
    let without: Vec<String> = before.iter().filter(|k| **k != in_dir).cloned().collect();
    assert_eq!(kids().await, without);
    std::fs::rename(&aside, &keys_dir).unwrap();
    t.state.keys.reload();
    assert_eq!(kids().await, before);
}

/// A key file that exists but cannot be used at a rescan (half written by a copy, say) keeps the
/// key a running service had from it; only deleting the file takes the key out (before, the
/// signer vanished and every token it had signed stopped verifying).
#[tokio::test]
async fn a_key_file_that_fails_to_read_keeps_its_key_until_it_reads() {
    let t = spawn_with_keys_dir().await;
    // Two keys, so a scan that loses one still finds a key (a scan that finds none keeps the
    // whole ring anyway).
    let rotated = keys::rotate(&t.state.settings, t.clock.now()).unwrap();
    t.state.keys.reload();
    let signer = t.state.keys.signer().unwrap();
    assert_ne!(signer.kid, rotated.kid);
    let path = signer.path.clone().unwrap();
    let pem = std::fs::read(&path).unwrap();
    std::fs::write(&path, &pem[..pem.len() / 2]).unwrap();
    t.state.keys.reload();
    assert_eq!(
        t.state.keys.signer().map(|k| k.kid.clone()),
        Some(signer.kid.clone())
    );
    assert_eq!(t.state.keys.signer().unwrap().meta, signer.meta);
    assert_eq!(TestApp::kids(&t.jwks().await).len(), 2);
    // Whole again: read as usual. Deleted: gone.
    std::fs::write(&path, &pem).unwrap();
    t.state.keys.reload();
    assert_eq!(t.state.keys.ring().keys().len(), 2);
    std::fs::remove_file(&path).unwrap();
    t.state.keys.reload();
    assert_eq!(t.state.keys.ring().keys().len(), 1);
    assert!(
        t.state
            .keys
            .ring()
            .keys()
            .iter()
            .all(|k| k.kid != signer.kid)
    );
}
