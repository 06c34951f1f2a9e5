//! Converter: the spec's frame conversion, checked against the ffmpeg CLI
//! (same libswscale, same flags), and the lossless stills fixture.

mod common;

use std::path::Path;

use common::*;
use panoptes_media::{decode_rgb, output_size, probe, Converter, Decoder};

/// All frames of `source` as the CLI converts them: swscale bilinear to rgb24,
/// scaled to `w`x`h`.
fn cli_rgb(source: &Path, w: u32, h: u32) -> Vec<u8> {
    let vf = format!("scale={w}:{h}:flags=bilinear");
    ffmpeg_stdout(&[
        "-sws_flags",
        "bilinear",
        "-i",
        path_str(source),
        "-vf",
        &vf,
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ])
}

fn our_rgb(source: &Path, target_height: u32) -> (Vec<u8>, u32, u32, usize) {
    let frames = decode_rgb(path_str(source), 1, 0, u64::MAX, target_height).unwrap();
    let (w, h) = (frames[0].2.width, frames[0].2.height);
    let mut all = Vec::new();
    for (_, _, f) in &frames {
        assert_eq!((f.width, f.height), (w, h));
        assert_eq!(f.data.len(), (w * h * 3) as usize);
        all.extend_from_slice(&f.data);
    }
    (all, w, h, frames.len())
}

fn assert_same_bytes(ours: &[u8], cli: &[u8], what: &str) {
    assert_eq!(ours.len(), cli.len(), "{what}: byte count");
    if let Some(i) = ours.iter().zip(cli).position(|(a, b)| a != b) {
        let diffs = ours.iter().zip(cli).filter(|(a, b)| a != b).count();
        panic!(
            "{what}: {diffs} bytes differ from the CLI, first at byte {i}: ours {} cli {}",
            ours[i], cli[i]
        );
    }
}

#[test]
fn scaling_rule() {
    assert_eq!(output_size(1280, 720, 360), (640, 360));
    assert_eq!(output_size(320, 240, 720), (320, 240));
    assert_eq!(output_size(720, 1280, 720), (405, 720)); // 405.0
    assert_eq!(output_size(1280, 720, 481), (855, 481)); // 855.11
    assert_eq!(output_size(1366, 768, 720), (1281, 720)); // 1280.625 -> 1281
}

#[test]
fn unscaled_yuv420p_matches_cli() {
    let dir = workdir();
    let clip = h264_bframes_mp4(dir.path());
    let (ours, w, h, n) = our_rgb(&clip, 720);
    assert_eq!((w, h, n), (320, 240, 100));
    assert_same_bytes(
        &ours,
        &cli_rgb(&clip, 320, 240),
        "320x240 yuv420p, target 720",
    );
}

#[test]
fn downscaled_yuv420p_matches_cli() {
    let dir = workdir();
    let clip = clip(
        dir.path(),
        "hd.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25",
            "-frames:v",
            "8",
            "-c:v",
            "libx264",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let (ours, w, h, n) = our_rgb(&clip, 360);
    assert_eq!((w, h, n), (640, 360, 8));
    assert_same_bytes(&ours, &cli_rgb(&clip, 640, 360), "1280x720 -> 640x360");
    // An odd size: 1280x720 to height 481 -> 855x481.
    let (ours, w, h, _) = our_rgb(&clip, 481);
    assert_eq!((w, h), (855, 481));
    assert_same_bytes(&ours, &cli_rgb(&clip, 855, 481), "1280x720 -> 855x481");
}

/// The lossless fixture: FFV1 bgr0, 4 stills at 2 fps.
#[test]
fn stills_fixture() {
    let stills = &Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/stills.mkv");
    assert!(stills.is_file(), "{} is missing: the fixtures are part of the repository", stills.display());
    let s = path_str(stills);
    let info = probe(s).unwrap();
    assert_eq!(info.frames, 4);
    assert_eq!((info.width, info.height), (640, 480));
    assert_eq!(info.codec, "ffv1");
    let frames = decode_rgb(s, 1, 0, u64::MAX, 720).unwrap();
    let idx: Vec<u64> = frames.iter().map(|f| f.0).collect();
    let ts: Vec<f64> = frames.iter().map(|f| f.1).collect();
    assert_eq!(idx, vec![0, 1, 2, 3]);
    assert_eq!(ts, vec![0.0, 0.5, 1.0, 1.5]);
    let mut ours = Vec::new();
    for (_, _, f) in &frames {
        assert_eq!((f.width, f.height), (640, 480));
        ours.extend_from_slice(&f.data);
    }
    assert_same_bytes(&ours, &cli_rgb(stills, 640, 480), "stills.mkv");
    // Frame 3 alone, through a seek or a skip.
    let one = decode_rgb(s, 1, 3, 4, 720).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, 3);
    assert_eq!(one[0].1, 1.5);
    assert!(one[0].2 == frames[3].2);
}

/// One Converter fed frames of different sizes and pixel formats rebuilds
/// its swscale context and gives the same output as fresh Converters.
#[test]
fn converter_follows_input_changes() {
    let dir = workdir();
    let a = h264_bframes_mp4(dir.path());
    let b = clip(
        dir.path(),
        "rgb.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=800x600:rate=10",
            "-frames:v",
            "3",
            "-c:v",
            "ffv1",
            "-pix_fmt",
            "bgr0",
        ],
    );
    let mut da = Decoder::open(path_str(&a), None, 0).unwrap();
    let mut db = Decoder::open(path_str(&b), None, 0).unwrap();
    let mut shared = Converter::new(480);
    for _ in 0..3 {
        for dec in [&mut da, &mut db] {
            let f = dec.next_frame().unwrap().unwrap();
            let got = shared.convert(&f.frame).unwrap();
            let want = Converter::new(480).convert(&f.frame).unwrap();
            assert!(got == want);
            let (w, h) = output_size(f.frame.width(), f.frame.height(), 480);
            assert_eq!((got.width, got.height), (w, h));
        }
    }
}

/// A Converter can move to another thread.
#[test]
fn converter_is_send() {
    let c = Converter::new(720);
    std::thread::spawn(move || drop(c)).join().unwrap();
}
