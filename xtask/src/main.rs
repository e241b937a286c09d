//! `cargo xtask …`: the developer loop of this workspace.
//!
//! - `dev-token`: mint a token with the fixtures dev keys that local stacks trust;
//! - `dev [--fresh]`: build and run token-service, todo-api and tasks-api together;
//! - `test`: every test suite of the workspace, with a summary line per suite;
//! - `bench [--smoke]`: what authentication costs todo-api per request (see [`bench`]).
//! - `fuzz --minutes N`: the property-based fuzz tests, longer;
//! - `soak --seconds N`: mixed load on the whole stack;
//! - `bench`: the performance measurements.
//!
//! Its own dependencies stay few: no HTTP client (readiness is polled over a plain TCP socket),
//! no async runtime.

mod bench;
mod dev;
mod fuzz;
mod soak;
mod test;
mod token;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks of the auth workspace",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print a token signed with the fixtures dev key that local stacks trust.
    DevToken(Box<token::DevToken>),
    /// Build and run the whole local stack (token-service, todo-api, tasks-api).
    Dev(dev::Dev),
    /// Run every test suite of the workspace (unit, integration, doc, lints).
    Test(test::Test),
    /// Measure authentication's cost: criterion micro-benchmarks and load on todo-api (127.0.0.1).
    Bench(bench::Bench),
    /// Run the property-based fuzz tests for a while, with many more cases.
    Fuzz(fuzz::Fuzz),
    /// Mixed authenticated load on the whole stack for N seconds: errors, p99, RSS.
    Soak(soak::Soak),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DevToken(args) => token::run(*args),
        Command::Dev(args) => dev::run(args),
        Command::Test(args) => test::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Soak(args) => soak::run(args),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

/// Where cargo puts what it builds, as cargo itself says (`cargo metadata`): it honours
/// `CARGO_TARGET_DIR`, `CARGO_BUILD_TARGET_DIR` and `build.target-dir` in any cargo config, so
/// xtask runs the binaries its builds made, never stale ones from `target/`. Asked once.
fn target_dir(root: &std::path::Path) -> std::path::PathBuf {
    static ASKED: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let asked = ASKED.get_or_init(|| {
        let out = cargo()
            .current_dir(root)
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .ok()
            .filter(|out| out.status.success())?;
        let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        metadata["target_directory"]
            .as_str()
            .map(std::path::PathBuf::from)
    });
    asked.clone().unwrap_or_else(|| env_target_dir(root))
}

/// `CARGO_TARGET_DIR` when set, else `target/` under the workspace: where `cargo metadata`
/// could not answer.
fn env_target_dir(root: &std::path::Path) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
}

/// A cargo command, without the package variables `cargo run` gave xtask (`CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, …): build scripts (ring's) watch them, and would rebuild when they
/// differ from a plain `cargo build`'s environment.
fn cargo() -> std::process::Command {
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&name)
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// `cargo build` of the three service binaries (debug) in `root`.
fn build_services(root: &std::path::Path, release: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut build = cargo();
    build.current_dir(root).args([
        "build",
        "-p",
        "token-service",
        "-p",
        "todo-api",
        "-p",
        "tasks-api",
    ]);
    if release {
        build.arg("--release");
    }
    let status = build.status().context("running cargo build")?;
    anyhow::ensure!(status.success(), "building the services failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The binaries xtask runs are looked for where cargo built this very test: whatever
    /// target directory the environment or a cargo config chose (`target/` was assumed).
    #[test]
    fn the_target_dir_is_cargos() {
        let dir = super::target_dir(&super::root());
        let exe = std::env::current_exe().unwrap();
        assert!(
            exe.starts_with(&dir),
            "{} is not under {}",
            exe.display(),
            dir.display()
        );
    }
}
