//! The coordinator under simulated workers (`load.rs`).


use super::*;

pub(super) fn coordinator(plan: &Plan) -> Vec<Row> {
    let section = "Coordinator";
    let (batch, seconds) = (8, plan.coord_seconds);
    let video = match load::make_clip(&root().join("target/panoptes-bench"), 100_000) {
        Ok(v) => v,
        Err(e) => return vec![Row::not_measured(section, "committed rows/s", &e)],
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return vec![Row::not_measured(section, "committed rows/s", &e.into())],
    };
    let mut rows = Vec::new();
    let mut single: Vec<(usize, f64)> = Vec::new();
    for c in [1usize, 3] {
        for &w in &plan.coord_workers {
            println!("==> coordinator: {c} coordinator(s), {w} simulated workers, {batch} frames per report, {seconds} s");
            let label = format!("{c} coordinator{}, {w} simulated workers", if c > 1 { "s" } else { "" });
            let r = rt.block_on(load::run(&load::LoadOptions { coordinators: c, workers: w, batch, seconds, video: video.clone() }));
            rows.push(match r {
                Ok(r) => {
                    println!("    {:.0} rows/s, commit p50 {:.1} ms, p99 {:.1} ms, {} refused", r.rows_per_s, r.p50_ms, r.p99_ms, r.refused);
                    let row = Row::new(section, label, format!("{:.0} rows/s; commit p50 {:.1} ms, p99 {:.1} ms", r.rows_per_s, r.p50_ms, r.p99_ms));
                    if c == 1 {
                        single.push((w, r.rows_per_s));
                        row
                    } else {
                        match single.iter().find(|(sw, _)| *sw == w) {
                            Some(&(_, base)) => row.baseline(format!("{base:.0} rows/s (1 coordinator)"), r.rows_per_s / base),
                            None => row,
                        }
                    }
                }
                Err(e) => Row::not_measured(section, label, &e),
            });
        }
    }
    rows
}

// ---------------------------------------------------------------- output
