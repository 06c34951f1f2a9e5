//! Bad inputs give clear errors that name the source and the problem.

mod common;

use std::path::Path;

use common::*;
use panoptes_media::{decode_rgb, normalize_source, probe, Decoder, ErrorKind, MediaError};

/// probe, Decoder::open and decode_rgb all fail on `source`, the same way.
fn fails(source: &str) -> MediaError {
    let e = probe(source).expect_err("probe should fail");
    let e2 = decode_rgb(source, 1, 0, u64::MAX, 720).expect_err("decode_rgb should fail");
    assert_eq!(e.to_string(), e2.to_string());
    e
}

fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect()
}

#[test]
fn missing_file() {
    let dir = workdir();
    let p = dir.path().join("clip.mp4");
    let s = path_str(&p);
    let e = fails(s);
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        format!("cannot open '{s}': No such file or directory")
    );
    let e = Decoder::open(s, None, 0).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // file:// URLs are reported by their path
    let e = probe(&format!("file://{s}")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot open '{s}': No such file or directory")
    );
}

#[test]
fn empty_file() {
    let dir = workdir();
    let p = dir.path().join("empty.mp4");
    std::fs::write(&p, b"").unwrap();
    let e = fails(path_str(&p));
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(
        e.to_string(),
        format!(
            "'{}': corrupt or unsupported data (empty file, 0 bytes)",
            p.display()
        )
    );
}

#[test]
fn random_bytes() {
    let dir = workdir();
    for name in ["random.mp4", "random", "random.txt"] {
        let p = dir.path().join(name);
        std::fs::write(&p, pseudo_random(200_000, 7)).unwrap();
        let e = fails(path_str(&p));
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(
            e.to_string(),
            format!(
                "'{}': corrupt or unsupported data (Invalid data found when processing input)",
                p.display()
            )
        );
    }
}

/// By extension FFmpeg reads any `.bin` file as "bintext" text art, a
/// pseudo-video: refused as not a video.
#[test]
fn random_bytes_named_bin() {
    let dir = workdir();
    let p = dir.path().join("x.bin");
    std::fs::write(&p, pseudo_random(200_000, 7)).unwrap();
    let e = fails(path_str(&p));
    assert_eq!(e.kind(), ErrorKind::NotAVideo);
    assert_eq!(
        e.to_string(),
        format!(
            "'{}' is not a video: no video stream (FFmpeg reads the data as 'bintext' text art)",
            p.display()
        )
    );
}

fn truncate_copy(src: &Path, dst: &Path, fraction: f64) {
    let data = std::fs::read(src).unwrap();
    std::fs::write(dst, &data[..(data.len() as f64 * fraction) as usize]).unwrap();
}

/// The CLI writes the moov atom at the end: the first 30% has no index.
#[test]
fn truncated_mp4() {
    let dir = workdir();
    let full = h264_bframes_mp4(dir.path());
    let p = dir.path().join("truncated.mp4");
    truncate_copy(&full, &p, 0.3);
    let e = fails(path_str(&p));
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(
        e.to_string(),
        format!(
            "'{}': corrupt or unsupported data (Invalid data found when processing input)",
            p.display()
        )
    );
}

/// With `-movflags faststart` the index is complete but the data is cut
/// short: the demux pass of probe hits the missing data.
#[test]
fn truncated_faststart_mp4() {
    let dir = workdir();
    let src = h264_bframes_mp4(dir.path());
    let fast = clip(
        dir.path(),
        "fast.mp4",
        &["-i", path_str(&src), "-c", "copy", "-movflags", "faststart"],
    );
    assert_eq!(probe(path_str(&fast)).unwrap().frames, 100);
    let p = dir.path().join("truncated-fast.mp4");
    truncate_copy(&fast, &p, 0.3);
    let e = fails(path_str(&p));
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let msg = e.to_string();
    let head = format!(
        "'{}': corrupt or unsupported data (truncated: the container lists 100 video frames but only ",
        p.display()
    );
    assert!(
        msg.starts_with(&head) && msg.ends_with(" could be read)"),
        "{msg}"
    );
}

/// The container is fine but the video data is garbage: probe fails when
/// decoding the first frame, not later.
#[test]
fn garbage_video_data() {
    let dir = workdir();
    let src = h264_bframes_mp4(dir.path());
    let mut data = std::fs::read(&src).unwrap();
    // mdat follows ftyp (and a free atom) at the start; the moov atom is at the end.
    let mdat = data.windows(4).position(|w| w == b"mdat").unwrap() + 4;
    let moov = data.windows(4).rposition(|w| w == b"moov").unwrap() - 4;
    let junk = pseudo_random(moov - mdat, 3);
    data[mdat..moov].copy_from_slice(&junk);
    let p = dir.path().join("garbage.mp4");
    std::fs::write(&p, &data).unwrap();
    let e = probe(path_str(&p)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("'{}': corrupt or unsupported data (", p.display())),
        "{msg}"
    );
    assert!(
        msg.contains("first video frame") || msg.contains("no video frame could be decoded"),
        "{msg}"
    );
    eprintln!("{msg}");
}

#[test]
fn audio_only() {
    let dir = workdir();
    let p = clip(
        dir.path(),
        "sine.wav",
        &["-f", "lavfi", "-i", "sine=frequency=440:duration=1"],
    );
    let e = fails(path_str(&p));
    assert_eq!(e.kind(), ErrorKind::NotAVideo);
    assert_eq!(
        e.to_string(),
        format!(
            "'{}' is not a video: no video stream (streams: audio)",
            p.display()
        )
    );
}

/// FFmpeg opens a single PNG (image2 / png_pipe demuxer) as a video stream
/// of one frame. That is what it is, so we accept it: a 1-frame video.
#[test]
fn png_is_a_one_frame_video() {
    let dir = workdir();
    let p = clip(
        dir.path(),
        "still.png",
        &["-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1"],
    );
    let info = probe(path_str(&p)).unwrap();
    assert_eq!(info.frames, 1);
    assert_eq!((info.width, info.height), (64, 48));
    assert_eq!(info.codec, "png");
    let frames = decode_rgb(path_str(&p), 1, 0, u64::MAX, 720).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].0, frames[0].1), (0, 0.0));
}

#[test]
fn directory() {
    let dir = workdir();
    let s = path_str(dir.path());
    let e = fails(s);
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(
        e.to_string(),
        format!("'{s}': is a directory, not a regular file; give the path of a video file")
    );
}

#[test]
fn unsupported_scheme() {
    let e = fails("gopher://x");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(
        e.to_string().starts_with(
            "unsupported source 'gopher://x': URL scheme 'gopher://' is not supported"
        ),
        "{e}"
    );
    let e = normalize_source("ftp://host/x.mp4").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(normalize_source("file:///a/b.mp4").unwrap(), "/a/b.mp4");
    assert_eq!(fails("").kind(), ErrorKind::InvalidArgument);
}

#[test]
fn http_connection_refused() {
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/clip.mp4");
    let e = fails(&url);
    assert_eq!(e.kind(), ErrorKind::Network);
    assert!(e.is_transient());
    assert_eq!(e.to_string(), format!("'{url}': connection refused"));
}

/// A local name containing ':' is a file, not an FFmpeg protocol.
#[test]
fn colon_in_local_name() {
    let dir = workdir();
    let src = h264_bframes_mp4(dir.path());
    let p = dir.path().join("cam:1.mp4");
    std::fs::copy(&src, &p).unwrap();
    // relative name starting with "cam:" (FFmpeg would read that as protocol "cam")
    let info = probe(path_str(&p)).unwrap();
    assert_eq!(info.frames, 100);
    let e = probe("concat:a.mp4|b.mp4").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// `fails`, but bounded: a FIFO's open blocked (waiting for a writer) until
/// something wrote to it, so the call must answer within 10 s.
fn fails_quickly(source: &str) -> MediaError {
    let (tx, rx) = std::sync::mpsc::channel();
    let s = source.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(fails(&s));
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap_or_else(|_| panic!("opening {source} did not return within 10 s"))
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = workdir();
    let fifo = dir.path().join("video.mp4");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(st.success());
    let e = fails_quickly(fifo.to_str().unwrap());
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("is a FIFO (named pipe), not a regular file"), "{e}");
    // Through a symlink too: what is checked is what was opened.
    let link = dir.path().join("link.mp4");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let e = fails_quickly(link.to_str().unwrap());
    assert!(e.to_string().contains("is a FIFO (named pipe), not a regular file"), "{e}");
}

#[test]
fn a_device_is_refused() {
    for dev in ["/dev/zero", "/dev/null"] {
        let e = fails_quickly(dev);
        assert!(e.to_string().contains(&format!("'{dev}'")) && e.to_string().contains("is a character device, not a regular file"), "{e}");
    }
}
