//! Processes under measurement: waiting for workers, their CPU time and memory from /proc.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::*;

/// Wait (at most 120 s: workers load their models first) until `n` workers are registered and active.
pub(crate) fn wait_for_workers(bin: &Path, addr: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new(bin).args(["cluster", "status", "--json", "--coordinator", addr]).output()?;
        let active = serde_json::from_slice::<Value>(&out.stdout)
            .map(|v| v["workers"].as_array().map_or(0, |w| w.iter().filter(|w| w["state"] == "active").count()))
            .unwrap_or(0);
        if active >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {active} of {n} workers registered within 120 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// CPU time (user + system) of a process so far, in clock ticks.
pub(crate) fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`, nearly always 100).
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

/// (VmRSS, VmHWM) of a process in KiB.
pub(crate) fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| s.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok());
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

// ---------------------------------------------------------------- coordinator
