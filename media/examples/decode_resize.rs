//! Decode + resize throughput of the worker's own media path
//! (`panoptes_media::Decoder` then `Converter`, exactly what the worker's
//! decoder and resizer actors run) over a whole clip, on the calling thread.
//! Prints one JSON line: `{"frames", "seconds", "frames_per_s", "width", "height"}`;
//! the time runs from opening the decoder to the last converted frame.
//!
//! Used by `cargo xtask bench`; run alone with
//! `PANOPTES_DECODE_THREADS=1 cargo run -p panoptes-media --example decode_resize -- CLIP [TARGET_HEIGHT]`
//! (`PANOPTES_DECODE_THREADS=1`: FFmpeg decodes on this thread only, like `ffmpeg -threads 1`).
use std::time::Instant;

use panoptes_media::{Converter, Decoder};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(clip) = args.next() else {
        eprintln!("usage: decode_resize CLIP [TARGET_HEIGHT (default 720)]");
        std::process::exit(2);
    };
    let target: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(720);
    panoptes_media::init();
    // The probe (a demux pass, on the coordinator in the cluster) is not timed.
    let info = panoptes_media::probe(&clip).unwrap_or_else(|e| fail(&clip, e));
    let t = Instant::now();
    let mut dec = Decoder::open(&clip, None, info.pts0).unwrap_or_else(|e| fail(&clip, e));
    let mut conv = Converter::new(target);
    let (mut frames, mut size) = (0u64, (0, 0));
    while let Some(f) = dec.next_frame().unwrap_or_else(|e| fail(&clip, e)) {
        let rgb = conv.convert(&f.frame).unwrap_or_else(|e| fail(&clip, e));
        size = (rgb.width, rgb.height);
        std::hint::black_box(&rgb.data);
        frames += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        r#"{{"frames":{frames},"seconds":{secs:.4},"frames_per_s":{:.2},"width":{},"height":{}}}"#,
        frames as f64 / secs,
        size.0,
        size.1
    );
}

fn fail(clip: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("decode_resize: {clip}: {e}");
    std::process::exit(1);
}
