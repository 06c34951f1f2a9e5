//! Human-readable output.
use std::time::Duration;

use panoptes_proto::api as pb;
use serde_json::Value;

/// What the progress bar of `submit --wait` shows for a status: a bar of
/// frames when the job knows its length, a spinner with its state when not
/// (probing, or a live stream).
#[derive(Debug, PartialEq)]
pub struct Progress {
    pub length: Option<u64>,
    pub position: u64,
    pub message: String,
}

pub fn progress(s: &pb::JobStatus) -> Progress {
    let state = match pb::JobState::try_from(s.state).unwrap_or(pb::JobState::Unspecified) {
        pb::JobState::Queued => "queued (probing the source)",
        pb::JobState::Running => "running",
        _ => "finishing",
    };
    if s.frames_total == 0 {
        return Progress { length: None, position: s.frames_done, message: format!("{state}, {} frames", s.frames_done) };
    }
    Progress { length: Some(s.frames_total), position: s.frames_done.min(s.frames_total), message: format!("shards {}/{}", s.shards_done, s.shards_total) }
}

pub fn status_text(s: &pb::JobStatus, state: &str) -> String {
    let mut out = format!(
        "job:     {}\nname:    {}\nsource:  {}\nmodels:  {}\nstep:    {}\nstate:   {}\nframes:  {} of {} analysed\nshards:  {} of {} done\n",
        s.job_id,
        s.name,
        s.source,
        s.models.join(","),
        s.frame_step,
        state,
        s.frames_done,
        s.frames_total,
        s.shards_done,
        s.shards_total
    );
    let every = panoptes_common::format_interval_ms(s.pictures_every_ms);
    out.push_str(&match (s.pictures, s.pictures_every_ms) {
        (false, _) => "pictures: none\n".to_string(),
        (true, 0) => "pictures: every analysed frame\n".to_string(),
        (true, _) => format!("pictures: one per {every} of stream time\n"),
    });
    if s.keep_s > 0 {
        out.push_str(&format!("keep:    the newest {} (kept from frame {})\n", age(Duration::from_secs(s.keep_s)), s.retained_from_frame));
    }
    if !s.push_url.is_empty() && state == "running" {
        out.push_str(&format!("push to: {}\n", s.push_url));
    }
    if !s.error.is_empty() {
        out.push_str(&format!("error:   {}\n", s.error));
    }
    out
}

/// One line per (frame, model) with the findings summarised.
pub fn result_line(frame: u64, ts: f64, model: &str, results: &Value) -> String {
    if let Some(e) = results.get("error").and_then(|e| e.as_str()) {
        return format!("frame {frame:>6}  {ts:>8.3}s  {model:<8} ERROR {e}");
    }
    let items = results.as_array().cloned().unwrap_or_default();
    let summary: Vec<String> = items
        .iter()
        .map(|r| match model {
            "objects" => format!("{} {:.2}", r["label"].as_str().unwrap_or("?"), r["score"].as_f64().unwrap_or(0.0)),
            "colors" => format!("{} {:.0}%", r["color"].as_str().unwrap_or("?"), r["fraction"].as_f64().unwrap_or(0.0) * 100.0),
            "joy" => format!(
                "face {} {} {}",
                r["emotion"].as_str().unwrap_or("?"),
                r["gender"].as_str().unwrap_or("?"),
                if r["joy"].as_bool().unwrap_or(false) { "(joy)" } else { "" }
            ),
            _ => r.to_string(),
        })
        .collect();
    let body = if summary.is_empty() { "-".to_string() } else { summary.join(", ") };
    format!("frame {frame:>6}  {ts:>8.3}s  {model:<8} {body}")
}

pub fn metrics_text(m: &pb::JobMetrics, inference: &std::collections::BTreeMap<String, f64>) -> String {
    let per = |t: f64| if m.frames_extracted > 0 { format!("{:>8.1} ms/frame", t * 1000.0 / m.frames_extracted as f64) } else { String::new() };
    let mut out = format!("job:              {}\nframes analysed:  {}\n", m.job_id, m.frames_extracted);
    out.push_str(&format!("decode (ingest):  {:>8.2} s {}\n", m.ingest_time_s, per(m.ingest_time_s)));
    out.push_str(&format!("resize:           {:>8.2} s {}\n", m.resize_time_s, per(m.resize_time_s)));
    for (k, v) in inference {
        out.push_str(&format!("inference {:<7} {:>8.2} s {}\n", format!("{k}:"), v, per(*v)));
    }
    out.push_str(&format!(
        "wall time:        {:>8.2} s\nthroughput:       {:>8.2} frames/s\nqueue wait:       {:>8.2} s\navg message:      {:>8.0} bytes\nerrors:           {:>8}\n",
        m.wall_time_s, m.frames_per_s, m.queue_wait_s, m.avg_message_bytes, m.errors
    ));
    if m.latency_samples > 0 || m.frames_dropped > 0 {
        out.push_str(&format!(
            "live latency:     p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms ({} frames)\nframes dropped:   {:>8}\n",
            m.latency_p50_ms, m.latency_p95_ms, m.latency_p99_ms, m.latency_samples, m.frames_dropped
        ));
    }
    if m.reconnects > 0 {
        out.push_str(&format!("source reopened:  {:>8} times, {:.1} s without frames\n", m.reconnects, m.gap_ms as f64 / 1000.0));
    }
    out
}

pub fn videos_table(v: &[pb::VideoSummary], state: fn(i32) -> &'static str) -> String {
    let mut out = format!("{:<10} {:<10} {:>7}  {:<24} {}\n", "ID", "STATE", "FRAMES", "FINISHED", "NAME");
    for x in v {
        out.push_str(&format!("{:<10} {:<10} {:>7}  {:<24} {}\n", x.job_id, state(x.state), x.frames, fmt_ms(x.finished_at_ms), x.name));
    }
    if v.is_empty() {
        out.push_str("(no finished videos yet)\n");
    }
    out
}

fn fmt_ms(ms: u64) -> String {
    // UTC, seconds resolution, without a date library.
    let secs = ms / 1000;
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}Z")
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `cluster status` as a table.
pub fn cluster_text(r: &pb::ClusterStatusResponse) -> String {
    let leader = if r.leader == 0 { "none (election in progress)".to_string() } else { r.leader.to_string() };
    let mut out = format!("leader: {leader}  term: {}", r.term);
    if r.answered_by != r.leader {
        out.push_str(&format!("  (answered by coordinator {}: the leader could not be reached)", r.answered_by));
    }
    out.push_str("\n\nMEMBERS\n");
    out.push_str(&format!("  {:<4} {:<22} {:<10} {:>10} {:>8}  {}\n", "ID", "ADDR", "ROLE", "LAST LOG", "BEHIND", "HEALTH"));
    for m in &r.members {
        let health = if m.healthy { "healthy" } else { "UNHEALTHY" };
        let behind = if r.answered_by == r.leader && m.id != r.leader { m.behind.to_string() } else { "-".into() };
        out.push_str(&format!("  {:<4} {:<22} {:<10} {:>10} {behind:>8}  {health}\n", m.id, m.addr, m.role, m.last_log_index));
    }
    for m in r.members.iter().filter(|m| m.snapshot_bytes > 0) {
        let pct = m.snapshot_sent_bytes as f64 * 100.0 / m.snapshot_bytes as f64;
        out.push_str(&if m.snapshot_sent_bytes >= m.snapshot_bytes {
            format!("  coordinator {} is installing a snapshot of {}\n", m.id, bytes(m.snapshot_bytes))
        } else {
            format!("  coordinator {} is catching up by a snapshot: {} of {} sent ({pct:.0}%)\n", m.id, bytes(m.snapshot_sent_bytes), bytes(m.snapshot_bytes))
        });
    }
    out.push_str("\nWORKERS\n");
    if r.workers.is_empty() {
        out.push_str("  (none registered)\n");
    } else {
        out.push_str(&format!("  {:<12} {:<22} {:<9} {:>7}  {}\n", "NAME", "ADDR", "STATE", "SHARDS", "LAST HEARTBEAT"));
    }
    let lobbies: Vec<String> = r.workers.iter().filter(|w| !w.ingest.is_empty()).map(|w| format!("  {:<12} {}KEY\n", w.name, w.ingest)).collect();
    for w in &r.workers {
        let hb = match w.last_heartbeat_ms {
            Some(ms) => format!("{:.1}s ago", ms as f64 / 1000.0),
            None => "not since this leader took over".to_string(),
        };
        let shards = format!("{}/{}", w.active_shards, w.capacity);
        out.push_str(&format!("  {:<12} {:<22} {:<9} {:>7}  {hb}\n", w.name, w.addr, w.state, shards));
    }
    if !lobbies.is_empty() {
        // Where a publisher resumes a live stream whose worker was lost.
        out.push_str("\nINGEST LOBBIES (push a live stream's key here to resume it on that worker)\n");
        out.push_str(&lobbies.concat());
    }
    let j = r.jobs.unwrap_or_default();
    out.push_str(&format!(
        "\nJOBS  queued {}  running {}  completed {}  failed {}  cancelled {}\n",
        j.queued, j.running, j.completed, j.failed, j.cancelled
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_render_in_utc() {
        assert_eq!(fmt_ms(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_ms(1_795_000_000_000), "2026-11-18 11:06:40Z");
    }

    #[test]
    fn cluster_table_names_roles_states_and_a_stale_answer() {
        let r = pb::ClusterStatusResponse {
            leader: 1,
            term: 3,
            answered_by: 2,
            members: vec![pb::MemberStatus { id: 1, addr: "127.0.0.1:7400".into(), role: "leader".into(), last_log_index: 42, healthy: true, ..Default::default() }],
            workers: vec![
                pb::WorkerStatus { name: "w1".into(), state: "draining".into(), capacity: 2, active_shards: 1, last_heartbeat_ms: Some(1500), ..Default::default() },
                pb::WorkerStatus { name: "w2".into(), state: "active".into(), capacity: 1, ingest: "rtmp://10.0.0.2:7502/live/".into(), ..Default::default() },
            ],
            jobs: Some(pb::JobCounts { completed: 4, ..Default::default() }),
        };
        let t = cluster_text(&r);
        assert!(t.contains("answered by coordinator 2"), "{t}");
        assert!(t.contains("leader") && t.contains("healthy") && t.contains("draining") && t.contains("1/2") && t.contains("1.5s ago"), "{t}");
        assert!(t.contains("completed 4"), "{t}");
        // Only workers with live ingest have a lobby line.
        assert!(t.contains("INGEST LOBBIES") && t.contains("  w2           rtmp://10.0.0.2:7502/live/KEY\n"), "{t}");
        assert!(!t.lines().any(|l| l.contains("w1") && l.contains("rtmp://")), "{t}");
    }

    #[test]
    fn cluster_table_shows_how_far_behind_a_member_is_and_its_snapshot() {
        let member = |id, behind, sent, size| pb::MemberStatus {
            id,
            addr: format!("127.0.0.1:740{id}"),
            role: if id == 1 { "leader" } else { "follower" }.into(),
            healthy: id != 3,
            behind,
            snapshot_sent_bytes: sent,
            snapshot_bytes: size,
            ..Default::default()
        };
        let mut r = pb::ClusterStatusResponse {
            leader: 1,
            answered_by: 1,
            members: vec![member(1, 0, 0, 0), member(2, 12, 3 << 20, 12 << 20), member(3, 4000, 8 << 20, 8 << 20)],
            ..Default::default()
        };
        let t = cluster_text(&r);
        let line = |id: &str| t.lines().find(|l| l.trim_start().starts_with(id)).unwrap_or_default().to_string();
        assert!(line("2 ").contains(" 12  healthy"), "{t}");
        assert!(line("3 ").contains(" 4000  UNHEALTHY"), "{t}");
        assert!(t.contains("coordinator 2 is catching up by a snapshot: 3.0 MiB of 12.0 MiB sent (25%)"), "{t}");
        assert!(t.contains("coordinator 3 is installing a snapshot of 8.0 MiB"), "{t}");
        // Answered by a follower: it does not know who is behind.
        r.answered_by = 2;
        assert!(cluster_text(&r).lines().filter(|l| l.contains("127.0.0.1:740")).all(|l| l.contains(" -  ")), "{}", cluster_text(&r));
    }

    #[test]
    fn progress_is_a_bar_of_frames_or_a_state() {
        let mut s = pb::JobStatus { job_id: "job-1".into(), state: pb::JobState::Running as i32, frames_total: 100, frames_done: 50, shards_done: 1, shards_total: 4, ..Default::default() };
        assert_eq!(progress(&s), Progress { length: Some(100), position: 50, message: "shards 1/4".into() });
        // Never past the end, whatever the counts say.
        s.frames_done = 130;
        assert_eq!(progress(&s).position, 100);
        s.frames_total = 0;
        s.state = pb::JobState::Queued as i32;
        assert_eq!(progress(&s), Progress { length: None, position: 130, message: "queued (probing the source), 130 frames".into() });
    }
}

/// A duration as the largest whole unit: 7d, 12h, 30m, 45s.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// Bytes in binary units: 512 B, 1.5 KiB, 3.2 MiB.
pub fn bytes(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 || unit == "GiB" {
            return if unit == "B" { format!("{n} B") } else { format!("{v:.1} {unit}") };
        }
        v /= 1024.0;
    }
    unreachable!()
}
