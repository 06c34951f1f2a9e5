//! Tests of the decoder's seek paths.

use super::*;

fn clip(dir: &std::path::Path) -> String {
    let path = dir.join("c.mp4");
    let st = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
        ])
        .args([
            "-frames:v",
            "50",
            "-c:v",
            "libx264",
            "-g",
            "10",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    path.to_str().unwrap().to_string()
}

fn frames(dec: &mut Decoder) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(f) = dec.next_frame().unwrap() {
        out.push((f.index, f.pts, f.frame.data(0).to_vec()));
    }
    out
}

/// The slow paths give the same frames as a direct seek: seeking again
/// further back (as for MPEG-TS), and decoding from the start.
#[test]
fn seek_retry_and_fallback_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = clip(dir.path());
    let info = probe(&s).unwrap();
    let kf = info.keyframes[3];
    assert_eq!(kf.0, 30);
    let mut direct = Decoder::open(&s, Some(kf), info.pts0).unwrap();
    let want = frames(&mut direct);
    assert!(!direct.seek_fell_back());
    assert_eq!(want.len(), 20);
    assert_eq!(want[0].0, 30);

    for attempt in 1..=4 {
        let mut dec = Decoder::open(&s, None, info.pts0).unwrap();
        dec.seek_to(kf.0, kf.1, attempt).unwrap();
        assert_eq!(frames(&mut dec), want, "seek attempt {attempt}");
        assert!(!dec.seek_fell_back());
    }
    let mut dec = Decoder::open(&s, None, info.pts0).unwrap();
    dec.seek_to(kf.0, kf.1, 5).unwrap(); // beyond the last attempt: decode from the start
    assert!(dec.seek_fell_back());
    assert_eq!(frames(&mut dec), want);
}
