//! `cargo xtask test`: builds every test target once, runs each suite, prints a summary line per
//! suite and a closing `N passed, M failed` line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct Test {
    /// Skip the lint suite (`cargo fmt --check`, `cargo clippy -D warnings`).
    #[arg(long)]
    no_lint: bool,
}

pub(crate) struct Suite {
    pub name: String,
    /// Tests that ran and passed, the skipped ones not included.
    pub passed: u64,
    pub failed: u64,
    /// The `SKIPPED: <test>: <why>` lines tests wrote (they pass in libtest's count).
    pub skipped: Vec<String>,
    pub ok: bool,
}

impl Suite {
    /// A suite that was not run (`why`): one skipped check.
    fn not_run(name: &str, why: &str) -> Suite {
        Suite {
            name: name.to_owned(),
            passed: 0,
            failed: 0,
            skipped: vec![format!("{name}: {why}")],
            ok: true,
        }
    }
}

/// The closing line's counts over every suite.
#[derive(Debug, PartialEq)]
struct Tally {
    passed: u64,
    /// Failed tests; a suite that failed without counting any (it did not compile, or its
    /// process died) counts as one, so the line never reads "0 failed" on a failed run.
    failed: u64,
    skipped: Vec<String>,
}

impl Tally {
    fn of(suites: &[Suite]) -> Tally {
        let mut tally = Tally {
            passed: 0,
            failed: 0,
            skipped: Vec::new(),
        };
        for s in suites {
            tally.passed += s.passed;
            tally.failed += if s.ok { s.failed } else { s.failed.max(1) };
            tally.skipped.extend(s.skipped.iter().cloned());
        }
        tally
    }
}

/// One test executable as cargo reports it.
pub(crate) struct Target {
    pub package: String,
    pub name: String,
    pub kind: String,
    pub exe: PathBuf,
    pub dir: PathBuf,
}

pub fn run(args: Test) -> anyhow::Result<()> {
    let root = crate::root();
    if std::env::var_os("TEST_DATABASE_URL").is_some() {
        println!("xtask: TEST_DATABASE_URL is set: the PostgreSQL tests run too");
    } else {
        println!(
            "xtask: TEST_DATABASE_URL is not set: the PostgreSQL tests are SKIPPED (each says so, and the summary lists them)"
        );
    }
    if !crate::bench::callgrind_available() {
        println!(
            "xtask: valgrind is not installed: the `bench --instructions` test is SKIPPED (apt-get install valgrind runs it)"
        );
    }
    let taken: Vec<u16> = crate::dev::ports()
        .filter(|&port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        .collect();
    if !taken.is_empty() {
        println!(
            "xtask: ports {taken:?} are in use (a running `cargo xtask dev`?): the `xtask dev` test is SKIPPED (it says so)"
        );
    }
    let mut suites = Vec::new();
    for target in build_tests(&root)? {
        let name = format!("{} ({} {})", target.package, target.kind, target.name);
        let mut cmd = Command::new(&target.exe);
        cmd.current_dir(&target.dir);
        suites.push(run_suite(&name, cmd)?);
    }
    let mut doc = cargo(&root);
    doc.args(["test", "--workspace", "--doc"]);
    suites.push(run_suite("doc tests", doc)?);
    if !args.no_lint {
        let mut fmt = cargo(&root);
        fmt.args(["fmt", "--all", "--", "--check"]);
        suites.push(run_check("lint: cargo fmt --check", fmt)?);
        let mut clippy = cargo(&root);
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        suites.push(run_check("lint: cargo clippy -D warnings", clippy)?);
    } else {
        // Not run is skipped, and listed as such, not silently absent from the tally.
        suites.push(Suite::not_run(
            "lint (cargo fmt --check, cargo clippy)",
            "--no-lint",
        ));
    }

    println!("\n== summary");
    for s in &suites {
        let verdict = if s.ok { "ok" } else { "FAILED" };
        println!(
            "{verdict:>6}  {:<60} {} passed, {} failed, {} skipped",
            s.name,
            s.passed,
            s.failed,
            s.skipped.len()
        );
    }
    let tally = Tally::of(&suites);
    for line in &tally.skipped {
        println!("SKIPPED {line}");
    }
    let broken = suites.iter().filter(|s| !s.ok).count();
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed,
        tally.failed,
        tally.skipped.len()
    );
    if broken > 0 {
        bail!("{broken} suite(s) failed");
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut cmd = crate::cargo();
    cmd.current_dir(root);
    cmd
}

/// `cargo test --workspace --no-run`, reading the executables from cargo's JSON messages.
pub(crate) fn build_tests(root: &Path) -> anyhow::Result<Vec<Target>> {
    let mut cmd = cargo(root);
    cmd.args([
        "test",
        "--workspace",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("running cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut targets = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || !msg["profile"]["test"].as_bool().unwrap_or(false)
        {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let manifest = PathBuf::from(msg["manifest_path"].as_str().unwrap_or_default());
        let package = manifest
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        targets.push(Target {
            package: if package == "testkit" {
                "fixtures/testkit".into()
            } else {
                package
            },
            name: msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            kind: msg["target"]["kind"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            exe: PathBuf::from(exe),
            dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
        });
    }
    if !child.wait()?.success() {
        bail!("building the tests failed");
    }
    targets.sort_by(|a, b| (&a.package, &a.kind, &a.name).cmp(&(&b.package, &b.kind, &b.name)));
    Ok(targets)
}

/// Runs a libtest binary (or `cargo test --doc`), echoing its output and adding up its
/// `test result:` lines.
/// Set for the test binaries `cargo xtask test` runs: the debug binaries are the test build's.
pub(crate) const BINARIES_BUILT: &str = "XTASK_TEST_BINARIES_BUILT";

pub(crate) fn run_suite(name: &str, mut cmd: Command) -> anyhow::Result<Suite> {
    println!("\n== {name}");
    // The workspace's binaries were built with the tests (`build_tests`): a test that would
    // build one again (the bench smoke test) uses them instead.
    cmd.env(BINARIES_BUILT, "1").stdout(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("running {name}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (mut passed, mut failed, mut skipped) = (0, 0, Vec::new());
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
        if let Some(skip) = skip_notice(&line) {
            skipped.push(skip.to_owned());
        }
    }
    let ok = child.wait()?.success() && failed == 0;
    Ok(Suite {
        name: name.to_owned(),
        passed: passed.saturating_sub(skipped.len() as u64),
        failed,
        skipped,
        ok,
    })
}

/// Runs a check that is not a test runner: one pass or one failure.
fn run_check(name: &str, mut cmd: Command) -> anyhow::Result<Suite> {
    println!("\n== {name}");
    let ok = cmd
        .status()
        .with_context(|| format!("running {name}"))?
        .success();
    Ok(Suite {
        name: name.to_owned(),
        passed: u64::from(ok),
        failed: u64::from(!ok),
        skipped: Vec::new(),
        ok,
    })
}

/// `<test>: <why>` of a `SKIPPED: <test>: <why>` line a test wrote past libtest's capture
/// (`testkit::report_skip`, `auth_core::service::storage::report_skip`). The line may share its
/// start with libtest's own `test … ... ` when tests run one at a time.
fn skip_notice(line: &str) -> Option<&str> {
    line.split_once("SKIPPED: ").map(|(_, rest)| rest)
}

/// The number before `what` in `ok. 3 passed; 0 failed; …`.
fn count(line: &str, what: &str) -> u64 {
    line.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(what.trim_start())
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{Suite, Tally, count, skip_notice};

    #[test]
    fn the_tally_counts_a_crashed_suite_and_lists_checks_not_run() {
        let ran = Suite {
            name: "a".into(),
            passed: 3,
            failed: 0,
            skipped: vec!["x: no database".into()],
            ok: true,
        };
        // A test binary that died (or doc tests that did not compile): nothing counted.
        let crashed = Suite {
            name: "b".into(),
            passed: 0,
            failed: 0,
            skipped: Vec::new(),
            ok: false,
        };
        let lint = Suite::not_run("lint", "--no-lint");
        assert_eq!(
            Tally::of(&[ran, crashed, lint]),
            Tally {
                passed: 3,
                failed: 1,
                skipped: vec!["x: no database".into(), "lint: --no-lint".into()],
            }
        );
    }

    #[test]
    fn finds_skip_notices() {
        assert_eq!(
            skip_notice("SKIPPED: todo-api crud: TEST_DATABASE_URL is not set"),
            Some("todo-api crud: TEST_DATABASE_URL is not set")
        );
        assert_eq!(
            skip_notice("test storage::tests::pg ... SKIPPED: pg: not set"),
            Some("pg: not set")
        );
        assert_eq!(skip_notice("test a_skipped_token_is_refused ... ok"), None);
    }

    #[test]
    fn counts_libtest_result_lines() {
        let line =
            "ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count(line, " passed"), 12);
        assert_eq!(count(line, " failed"), 0);
        let line =
            "FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count(line, " passed"), 3);
        assert_eq!(count(line, " failed"), 2);
    }
}
