//! `cargo xtask chaos`: the chaos suite's long run (tests/tests/chaos.rs
//! `chaos_long`) for one or several seeds, stopping at the first failure.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::root;

/// Run `chaos_long` for `seed` (or `seeds` seeds from 1), `faults` faults each.
pub fn run(seeds: u64, seed: Option<u64>, faults: usize) -> Result<()> {
    // The workspace's feature set, as `cargo test --workspace` builds it: with
    // `-p` alone cargo unifies features over fewer crates and rebuilds
    // tonic, rustls and the binary (minutes), then again for the suite.
    crate::bench::cargo_build(crate::bench::WORKSPACE_BUILD).context("fix the build, then rerun")?;
    let list: Vec<u64> = match seed {
        Some(s) => vec![s],
        None => (1..=seeds).collect(),
    };
    let mut rows: Vec<String> = Vec::new();
    for s in &list {
        println!("=== chaos seed {s} ({faults} faults)");
        let out = Command::new("cargo")
            .args(["test", "--workspace", "-p", "panoptes-tests", "--test", "chaos", "--", "--ignored", "--nocapture", "--exact", "chaos_long"])
            .env("PANOPTES_CHAOS_SEED", s.to_string())
            .env("PANOPTES_CHAOS_FAULTS", faults.to_string())
            .current_dir(root())
            .output()
            .context("run cargo test")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        let summary = stdout.lines().find(|l| l.starts_with("CHAOS-SUMMARY")).map(|l| l.trim_start_matches("CHAOS-SUMMARY ").to_string());
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            print_table(&rows);
            bail!(
                "chaos seed {s} FAILED ({}); replay: cargo xtask chaos --seed {s} --faults {faults}",
                summary.unwrap_or_else(|| "no summary: the harness stopped early".into())
            );
        }
        rows.push(summary.unwrap_or_else(|| format!("seed={s} (no summary line)")));
    }
    print_table(&rows);
    println!("{} seed(s) passed", rows.len());
    Ok(())
}

fn print_table(rows: &[String]) {
    println!("\nchaos summary");
    for r in rows {
        println!("  {r}");
    }
}
