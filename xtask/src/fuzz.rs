//! `cargo xtask fuzz --minutes N`: the property-based fuzz tests (every test named `fuzz_…`,
//! in auth-core and the services) with many more cases than the test suite runs, round after
//! round with fresh random seeds, until the time is up.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;

#[derive(Args)]
pub struct Fuzz {
    /// How long to fuzz.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Cases per property per round.
    #[arg(long, default_value_t = 2000)]
    cases: u32,
}

pub fn run(args: Fuzz) -> anyhow::Result<()> {
    let root = crate::root();
    let targets = crate::test::build_tests(&root)?;
    let deadline = Instant::now() + Duration::from_secs(args.minutes * 60);
    let (mut rounds, mut passed) = (0u64, 0u64);
    // At least one round, even for `--minutes 0` (it reported "no failure" having run none).
    while rounds == 0 || Instant::now() < deadline {
        rounds += 1;
        for t in &targets {
            let mut cmd = Command::new(&t.exe);
            cmd.current_dir(&t.dir)
                .env("PROPTEST_CASES", args.cases.to_string())
                .arg("fuzz_");
            let name = format!("round {rounds}: {} ({} {})", t.package, t.kind, t.name);
            let suite = crate::test::run_suite(&name, cmd)?;
            if !suite.ok {
                bail!("{name} found a failing case (proptest printed the minimal input above)");
            }
            passed += suite.passed;
            if !next_target(rounds, Instant::now(), deadline) {
                break;
            }
        }
    }
    println!(
        "xtask fuzz: {rounds} round(s), {passed} property runs of {} cases each, no failure",
        args.cases
    );
    Ok(())
}

/// Whether to go on to the next target within round `round`: the first round always runs
/// every target (a deadline that passed mid-round left the last ones unrun, and the report
/// said "no failure" for them); later rounds stop at the deadline.
fn next_target(round: u64, now: Instant, deadline: Instant) -> bool {
    round == 1 || now < deadline
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn the_first_round_runs_every_target_whatever_the_deadline() {
        let now = Instant::now();
        let passed = now - Duration::from_secs(1);
        assert!(super::next_target(1, now, passed));
        assert!(!super::next_target(2, now, passed));
        assert!(super::next_target(2, now, now + Duration::from_secs(1)));
    }
}
