//! The chaos suite (issue 7): real processes, a seeded schedule of faults,
//! then the invariant checker of `panoptes_tests::chaos`. The seed comes from
//! env `PANOPTES_CHAOS_SEED` (else a fixed default), the number of faults from
//! `PANOPTES_CHAOS_FAULTS`; every run prints the command that replays it.
//! `cargo xtask chaos --seeds N` runs the long one for N seeds.
use panoptes_tests::chaos::{run, Options};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")))
}

fn check(opts: Options) {
    let out = run(&opts);
    assert!(
        out.violations.is_empty(),
        "chaos seed {} broke {} invariant(s) (see VIOLATION lines above); replay: PANOPTES_CHAOS_SEED={} PANOPTES_CHAOS_FAULTS={} cargo test -p panoptes-tests --test chaos -- --ignored --nocapture {}",
        out.seed,
        out.violations.len(),
        out.seed,
        opts.faults,
        opts.test
    );
}

/// The short version in the normal test run: 2 jobs, 3 faults.
#[test]
fn chaos_short() {
    check(Options { seed: env_u64("PANOPTES_CHAOS_SEED").unwrap_or(20261121), faults: env_u64("PANOPTES_CHAOS_FAULTS").unwrap_or(3) as usize, jobs: 2, test: "chaos_short", long: false });
}

/// The long version: 3 jobs and 8 faults by default (`cargo xtask chaos`),
/// and a job of 12,000 frames that runs through all of them.
#[test]
#[ignore = "long (minutes): run by `cargo xtask chaos`"]
fn chaos_long() {
    let seed = env_u64("PANOPTES_CHAOS_SEED").unwrap_or(1);
    check(Options { seed, faults: env_u64("PANOPTES_CHAOS_FAULTS").unwrap_or(8) as usize, jobs: 3, test: "chaos_long", long: true });
}
