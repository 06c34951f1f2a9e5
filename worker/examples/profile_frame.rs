//! Runs one analysis on the fixture's 640×480 astronaut still N times, for
//! profilers (callgrind counts instructions, perf samples):
//! `valgrind --tool=callgrind target/debug/examples/profile_frame models objects 1`.
//! The analysis is loaded and run once before the measured loop, so with
//! `--toggle-collect=profile_frame::measured` only the per-frame work counts.
use panoptes_worker::analysis;

#[inline(never)]
fn measured(a: &dyn analysis::Analysis, frame: &panoptes_media::RgbFrame, n: usize) {
    for _ in 0..n {
        std::hint::black_box(a.analyze(frame).expect("analysis failed"));
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "models".into()));
    let name = args.next().unwrap_or_else(|| "objects".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let frames = panoptes_media::decode_rgb(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/stills.mkv"), 1, 0, 1, 720)?;
    let frame = &frames[0].2;
    let a = analysis::load(&name, &dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    a.analyze(frame)?; // warm-up: plans P-Net pyramid levels, first allocations
    measured(a.as_ref(), frame, n);
    Ok(())
}
