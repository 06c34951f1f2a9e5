//! probe() and frame-accurate seeking, on clips with B-frames.

mod common;

use common::*;
use panoptes_media::{decode_rgb, probe, Decoder, ProbeInfo};

fn check_seeks(source: &str, info: &ProbeInfo, target_height: u32, expect_exact_seek: bool) {
    let full = full_decode(source, info.pts0, target_height);
    assert_eq!(
        full.len() as u64,
        info.frames,
        "full decode count == probe count"
    );
    for (i, f) in full.iter().enumerate() {
        assert_eq!(f.index, i as u64);
    }
    // pts strictly increasing: presentation order
    assert!(
        full.windows(2).all(|w| w[0].pts < w[1].pts),
        "pts ascending"
    );
    assert_eq!(full[0].pts, info.pts0);
    assert_eq!(full[0].timestamp, 0.0);
    // every keyframe of the probe is at its index in the full decode
    for &(k, pts) in &info.keyframes {
        assert_eq!(full[k as usize].pts, pts, "keyframe {k} pts");
    }
    for &(k, pts) in &info.keyframes {
        let limit = 13; // more than a GOP: crosses into the next one
        let got = decode_from(source, Some((k, pts)), info.pts0, target_height, limit);
        let want: Vec<_> = full
            .iter()
            .skip(k as usize)
            .take(limit as usize)
            .cloned()
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "frames after seeking to keyframe {k}"
        );
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.index, g.pts), (w.index, w.pts), "seek to {k}: index/pts");
            assert_eq!(
                g.timestamp, w.timestamp,
                "seek to {k}: timestamp of {}",
                g.index
            );
            assert!(
                g.rgb == w.rgb,
                "seek to {k}: RGB of frame {} differs from the full decode",
                g.index
            );
        }
        if expect_exact_seek {
            let dec = Decoder::open(source, Some((k, pts)), info.pts0).unwrap();
            let mut dec = dec;
            dec.next_frame().unwrap();
            assert!(
                !dec.seek_fell_back(),
                "seek to keyframe {k} had to fall back to decoding from frame 0"
            );
        }
    }
    // Seek to a keyframe in the middle and decode to the end.
    let &(k, pts) = &info.keyframes[info.keyframes.len() / 2];
    let rest = decode_from(source, Some((k, pts)), info.pts0, target_height, u64::MAX);
    assert_eq!(rest.len() as u64, info.frames - k);
    assert_eq!(rest.last().unwrap().index, info.frames - 1);
}

#[test]
fn probe_h264_bframes() {
    let dir = workdir();
    let clip = h264_bframes_mp4(dir.path());
    let info = probe(path_str(&clip)).unwrap();
    assert_eq!(info.frames, 100);
    assert_eq!((info.width, info.height), (320, 240));
    assert_eq!(info.codec, "h264");
    assert_eq!(info.fps, 25.0);
    assert_eq!(info.pts0, 0);
    let (num, den) = info.time_base;
    assert!(num > 0 && den > 0);
    // -g 10, closed GOPs: a keyframe every 10 frames; pts = n frames.
    let per_frame = den as i64 / (25 * num as i64);
    let expected: Vec<(u64, i64)> = (0..10)
        .map(|i| (i * 10, (i * 10) as i64 * per_frame))
        .collect();
    assert_eq!(info.keyframes, expected);
    // The probe is serialisable (it crosses the wire)
    assert_eq!(info.keyframe_before(0), Some((0, 0)));
    assert_eq!(info.keyframe_before(37), Some((30, 30 * per_frame)));
    assert!((info.timestamp_of(50 * per_frame) - 2.0).abs() < 1e-12);
}

#[test]
fn seek_matches_full_decode_h264_mp4() {
    let dir = workdir();
    let clip = h264_bframes_mp4(dir.path());
    let s = path_str(&clip);
    let info = probe(s).unwrap();
    check_seeks(s, &info, 720, true);
}

/// The same stream in Matroska (ms time base; the index is by pts).
#[test]
fn seek_matches_full_decode_h264_mkv() {
    let dir = workdir();
    let src = h264_bframes_mp4(dir.path());
    let mkv = clip(
        dir.path(),
        "bframes.mkv",
        &["-i", path_str(&src), "-c", "copy"],
    );
    let s = path_str(&mkv);
    let info = probe(s).unwrap();
    assert_eq!(info.frames, 100);
    assert_eq!(info.time_base, (1, 1000));
    assert_eq!(info.keyframes.len(), 10);
    assert_eq!(info.keyframes[3], (30, 1200));
    check_seeks(s, &info, 720, true);
}

/// MPEG-TS: no index; seeking is a binary search on (decode) timestamps.
#[test]
fn seek_matches_full_decode_h264_ts() {
    let dir = workdir();
    let src = h264_bframes_mp4(dir.path());
    let ts = clip(
        dir.path(),
        "bframes.ts",
        &["-i", path_str(&src), "-c", "copy"],
    );
    let s = path_str(&ts);
    let info = probe(s).unwrap();
    assert_eq!(info.frames, 100);
    assert_eq!(info.time_base, (1, 90000));
    assert_eq!(info.keyframes.len(), 10);
    check_seeks(s, &info, 720, true);
}

/// A raw H.264 elementary stream: no container timestamps, no index.
#[test]
fn raw_h264_elementary_stream() {
    let dir = workdir();
    let src = h264_bframes_mp4(dir.path());
    let raw = clip(
        dir.path(),
        "bframes.h264",
        &[
            "-i",
            path_str(&src),
            "-c",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
        ],
    );
    let s = path_str(&raw);
    let info = probe(s).unwrap();
    assert_eq!(info.frames, 100);
    assert_eq!(
        info.keyframes,
        vec![(0, info.pts0)],
        "no seek points without timestamps"
    );
    check_seeks(s, &info, 720, false);
    // Timestamps are the decoder's: 25 fps.
    let got = decode_rgb(s, 10, 20, 41, 720).unwrap();
    let ts: Vec<f64> = got
        .iter()
        .map(|g| (g.1 * 1000.0).round() / 1000.0)
        .collect();
    assert_eq!(ts, vec![0.8, 1.2, 1.6]);
}

/// Open GOPs (x264 open-gop, irregular GOPs from scene cuts): leading
/// B-frames that follow a keyframe in decode order but precede it in
/// presentation order must be dropped after a seek.
#[test]
fn seek_matches_full_decode_open_gop() {
    let dir = workdir();
    let clip = clip(
        dir.path(),
        "opengop.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-frames:v",
            "120",
            "-c:v",
            "libx264",
            "-g",
            "12",
            "-bf",
            "3",
            "-x264-params",
            "open-gop=1",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let s = path_str(&clip);
    let info = probe(s).unwrap();
    assert_eq!(info.frames, 120);
    assert!(info.keyframes.len() >= 5, "{:?}", info.keyframes);
    check_seeks(s, &info, 720, true);
}

/// MPEG-4 part 2 with B-frames (the fallback encoder when libx264 is missing).
#[test]
fn seek_matches_full_decode_mpeg4_bframes() {
    let dir = workdir();
    let clip = clip(
        dir.path(),
        "mpeg4.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=176x144:rate=25",
            "-frames:v",
            "60",
            "-c:v",
            "mpeg4",
            "-g",
            "12",
            "-bf",
            "2",
            "-q:v",
            "5",
        ],
    );
    let s = path_str(&clip);
    let info = probe(s).unwrap();
    assert_eq!(info.frames, 60);
    assert_eq!(info.codec, "mpeg4");
    // GOP 12; the encoder may also make the last frame an I-frame.
    let kf: Vec<u64> = info.keyframes.iter().map(|k| k.0).collect();
    assert_eq!(kf[..5], [0, 12, 24, 36, 48], "{kf:?}");
    check_seeks(s, &info, 720, true);
}

/// A stream-copied cut that starts between keyframes: the MP4 edit list
/// makes the demuxer emit packets before the cut marked "discard". They are
/// not frames of the video, neither in probe nor in decoding.
#[test]
fn edit_list_cut_discards_leading_frames() {
    let dir = workdir();
    let src = h264_bframes_mp4(dir.path());
    // 1.32 s = frame 33; the demuxer starts at keyframe 30 (marked discard)
    // and frames 30..32 are decoded but not shown: 67 frames, as the CLI counts.
    let cut = clip(
        dir.path(),
        "cut.mp4",
        &["-ss", "1.32", "-i", path_str(&src), "-c", "copy"],
    );
    let s = path_str(&cut);
    let info = probe(s).unwrap();
    assert_eq!(info.frames, 67);
    assert_eq!(info.pts0, 0);
    // The discarded keyframe is not a seek point; the next one (old frame 40) is frame 7.
    assert_eq!(info.keyframes[0].0, 7, "{:?}", info.keyframes);
    assert_eq!(info.keyframe_before(3), None);
    let full = full_decode(s, info.pts0, 720);
    assert_eq!(full.len() as u64, info.frames);
    // Frame 0 of the cut is frame 33 of the source.
    let sinfo = probe(path_str(&src)).unwrap();
    let sfull = decode_from(path_str(&src), Some(sinfo.keyframes[3]), sinfo.pts0, 720, 4);
    assert_eq!(sfull[3].index, 33);
    assert!(
        full[0].rgb == sfull[3].rgb,
        "first frame of the cut is source frame 33"
    );
    check_seeks(s, &info, 720, true);
}

#[test]
fn decode_rgb_step_and_range() {
    let dir = workdir();
    let clip = h264_bframes_mp4(dir.path());
    let s = path_str(&clip);
    let info = probe(s).unwrap();
    let full = full_decode(s, info.pts0, 720);
    let got = decode_rgb(s, 3, 25, 47, 720).unwrap();
    let idx: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(idx, vec![27, 30, 33, 36, 39, 42, 45]);
    for (n, ts, rgb) in &got {
        let f = &full[*n as usize];
        assert_eq!(*ts, f.timestamp);
        assert!(*rgb == f.rgb, "frame {n}");
    }
    assert!((got[0].1 - 27.0 / 25.0).abs() < 1e-12);
    let all = decode_rgb(s, 1, 0, u64::MAX, 120).unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!((all[0].2.width, all[0].2.height), (160, 120));
    assert!(decode_rgb(s, 1, 100, u64::MAX, 720).unwrap().is_empty());
    assert!(decode_rgb(s, 0, 0, 10, 720).is_err());
}

/// A Decoder (and everything it holds) can move to another thread.
#[test]
fn decoder_is_send() {
    let dir = workdir();
    let clip = h264_bframes_mp4(dir.path());
    let s = path_str(&clip).to_string();
    let info = probe(&s).unwrap();
    let dec = Decoder::open(&s, Some(info.keyframes[2]), info.pts0).unwrap();
    let n = std::thread::spawn(move || {
        let mut dec = dec;
        let mut n = 0;
        while let Some(f) = dec.next_frame().unwrap() {
            assert_eq!(f.index, 20 + n);
            n += 1;
        }
        n
    })
    .join()
    .unwrap();
    assert_eq!(n, 80);
}
