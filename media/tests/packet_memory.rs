//! Demuxing does not keep the packets it has read. `av_read_frame` writes
//! into the packet it is given without releasing what that packet held, so
//! reading into the same packet again kept every packet's data: probing a
//! 271 MB clip took a coordinator from 60 to 345 MiB for good, and a
//! worker kept the compressed bytes of every file it decoded (decoding the
//! 98 MB clip below kept 106 MiB). Measured on this
//! test process's own RSS (its own binary: no other test runs beside it),
//! with a clip large enough (~100 MB of raw video) that the leak cannot
//! hide in the noise.
mod common;

use common::{ffmpeg, workdir};
use panoptes_media::{probe, Decoder};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap()
}

#[test]
fn probing_and_decoding_a_large_file_do_not_keep_its_packets() {
    let dir = workdir();
    let clip = dir.path().join("raw.mkv");
    // 300 frames of 640x360 yuv420p rawvideo: 345,600 bytes a packet, ~104 MB.
    ffmpeg(&["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-frames:v", "300", "-c:v", "rawvideo", "-pix_fmt", "yuv420p", clip.to_str().unwrap()]);
    let size = std::fs::metadata(&clip).unwrap().len();
    assert!(size > 100_000_000, "the clip is {size} bytes");
    let src = clip.to_str().unwrap();

    // Warm up (libav's static tables, the first allocations), then measure.
    probe(src).expect("probe");
    let before = rss_kib();
    let info = probe(src).expect("probe");
    assert_eq!(info.frames, 300);
    let after_probe = rss_kib();

    let mut dec = Decoder::open(src, None, 0).expect("open");
    let mut n = 0;
    while dec.next_frame().expect("decode").is_some() {
        n += 1;
    }
    drop(dec);
    assert_eq!(n, 300);
    let after_decode = rss_kib();

    let grew = |kib: u64| kib.saturating_sub(before) / 1024;
    assert!(grew(after_probe) < 30, "a probe of a {} MB file kept {} MiB", size >> 20, grew(after_probe));
    assert!(grew(after_decode) < 30, "decoding a {} MB file kept {} MiB", size >> 20, grew(after_decode));
}
