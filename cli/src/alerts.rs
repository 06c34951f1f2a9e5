//! `panoptes alerts [JOB] [--follow] [--json]`: the alerts jobs' rules
//! recorded (issue 18, part 4). The leader decides and records each alert
//! once (`coordinator/src/leader/analytics.rs`); this reads them.
use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use panoptes_client::{pb, views};

use super::{connect, explain, ClientOpts};

#[derive(Args)]
pub struct AlertsArgs {
    /// Only this job's alerts (e.g. job-3); by default every job's.
    job: Option<String>,
    /// Keep printing alerts as they are recorded: until JOB ends, or, for
    /// every job, until interrupted.
    #[arg(long)]
    follow: bool,
    /// One JSON object per alert: {"id","job_id","seq","rule","frame","time","since","detail"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

/// How often `--follow` asks for new alerts.
const POLL: Duration = Duration::from_millis(500);

pub async fn alerts(a: AlertsArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let job_id = a.job.clone().unwrap_or_default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = std::io::stdout().lock();
    loop {
        // Whether the job had ended, its rules evaluated over all of it,
        // before this read: then nothing more comes.
        let ended = match &a.job {
            Some(j) if a.follow => {
                let s = client.status(pb::JobRef { job_id: j.clone() }).await.map_err(|s| explain(s, &client))?;
                views::is_finished(&s) && s.alerts_up_to_date
            }
            _ => !a.follow,
        };
        let got = client.alerts(pb::AlertsRequest { job_id: job_id.clone() }).await.map_err(|s| explain(s, &client))?;
        for al in &got.alerts {
            if !seen.insert(al.id.clone()) {
                continue;
            }
            if a.json {
                writeln!(out, "{}", views::alert_json(al))?;
            } else {
                writeln!(out, "{:<12} {:<8} {:<16} frame {:>7} at {:>9.2} s  {}", al.id, al.job_id, al.rule, al.frame, al.time, al.detail)?;
            }
        }
        out.flush()?;
        if ended {
            if seen.is_empty() && !a.json && !a.follow {
                let whose = a.job.as_deref().map(|j| format!("{j} has")).unwrap_or_else(|| "no job has".into());
                writeln!(out, "no alerts: {whose} recorded none (rules are given with submit --rule or live --rule)")?;
            }
            if got.dropped > 0 {
                eprintln!("note: {} more alert(s) were recorded past the per-job limit and are counted only", got.dropped);
            }
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(POLL).await;
    }
}
