//! Decode speed on a 720p H.264 clip (ignored by default: run with
//! `cargo test -p panoptes-media --test bench -- --ignored --nocapture`).

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;
use panoptes_media::{probe, Converter, Decoder};

fn cli_seconds(args: &[&str]) -> f64 {
    let t = Instant::now();
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success());
    t.elapsed().as_secs_f64()
}

#[test]
#[ignore]
fn bench_decode_720p_h264() {
    let dir = workdir();
    let n = 300;
    let clip = clip(
        dir.path(),
        "hd.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25",
            "-vf",
            "noise=alls=12:allf=t",
            "-frames:v",
            "300",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let s = path_str(&clip);
    let t = Instant::now();
    let info = probe(s).unwrap();
    let probe_s = t.elapsed().as_secs_f64();
    assert_eq!(info.frames, n);

    let decode = |threads: &str, target: Option<u32>| {
        // SAFETY (edition 2021: safe fn): this test is the only thread reading the environment now.
        std::env::set_var("PANOPTES_DECODE_THREADS", threads);
        let t = Instant::now();
        let mut dec = Decoder::open(s, None, info.pts0).unwrap();
        let mut conv = target.map(Converter::new);
        let mut count = 0;
        while let Some(f) = dec.next_frame().unwrap() {
            if let Some(c) = conv.as_mut() {
                std::hint::black_box(c.convert(&f.frame).unwrap());
            }
            count += 1;
        }
        assert_eq!(count, n);
        std::env::remove_var("PANOPTES_DECODE_THREADS");
        t.elapsed().as_secs_f64()
    };
    let decode1_s = decode("1", None);
    let decode_s = decode("0", None);
    let rgb_s = decode("0", Some(720));
    let rgb360_s = decode("0", Some(360));
    let cli1 = cli_seconds(&["-threads", "1", "-i", s, "-f", "null", "-"]);
    let cli = cli_seconds(&["-i", s, "-f", "null", "-"]);
    let fps = |secs: f64| n as f64 / secs;
    println!(
        "720p H.264, {n} frames, {} cores available",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!("probe (demux + first frame): {:.3} s", probe_s);
    println!(
        "Decoder, 1 thread:             {:.0} frames/s",
        fps(decode1_s)
    );
    println!(
        "Decoder (frame threads auto): {:.0} frames/s",
        fps(decode_s)
    );
    println!("Decoder + RGB24 1280x720:     {:.0} frames/s", fps(rgb_s));
    println!(
        "Decoder + RGB24 640x360:      {:.0} frames/s",
        fps(rgb360_s)
    );
    println!(
        "ffmpeg CLI -threads 1 decode:  {:.0} frames/s (incl. process start)",
        fps(cli1)
    );
    println!(
        "ffmpeg CLI auto threads:       {:.0} frames/s (incl. process start)",
        fps(cli)
    );
}
