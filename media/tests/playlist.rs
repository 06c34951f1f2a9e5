//! HLS playlists and DASH manifests under the source policy: a playlist on
//! an allowed server may not lead FFmpeg to segments on an address the
//! policy refuses.
//!
//! Its own test binary: the policy is installed process-wide. Two servers
//! on this machine's loopback interface: 127.0.0.1 (allowed by
//! `allow_networks`) and 127.0.0.2 (in 127.0.0.0/8 too, so nothing leaves
//! the machine; not in `allow_networks`, so refused). The policy decides by
//! address, so a refused server needs an address of its own.

mod common;

use common::*;
use panoptes_media::{policy, probe, ErrorKind};

/// A 2-second HLS stream (1-second segments) in `dir`; the playlist
/// `name` lists its segments at `base` (e.g. `http://127.0.0.2:PORT/`).
fn hls(dir: &std::path::Path, name: &str, base: &str) {
    if !dir.join("seg0.ts").exists() {
        let seg = dir.join("seg%d.ts");
        let list = dir.join("made.m3u8");
        ffmpeg(&[
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "2",
            "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p",
            "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", "-hls_playlist_type", "vod",
            "-hls_segment_filename", seg.to_str().unwrap(), list.to_str().unwrap(),
        ]);
    }
    let made = std::fs::read_to_string(dir.join("made.m3u8")).unwrap();
    let listed: String = made
        .lines()
        .map(|l| if l.ends_with(".ts") && !l.starts_with('#') { format!("{base}{l}\n") } else { format!("{l}\n") })
        .collect();
    assert!(listed.contains(&format!("{base}seg0.ts")), "{listed}");
    std::fs::write(dir.join(name), listed).unwrap();
}

#[test]
fn a_playlist_may_not_lead_to_segments_the_policy_refuses() {
    policy::install(policy::SourcePolicy::new(&[], &["127.0.0.1/32".into()]).unwrap());
    let dir = workdir();
    let segments_elsewhere = HttpServer::serve_dir("127.0.0.2", dir.path().to_path_buf());
    let here = HttpServer::serve_dir("127.0.0.1", dir.path().to_path_buf());
    hls(dir.path(), "allowed.m3u8", &here.url(""));
    hls(dir.path(), "elsewhere.m3u8", &segments_elsewhere.url(""));

    // Segments on the allowed server: the playlist is read as a video, so
    // what follows is not a test of a playlist FFmpeg cannot read anyway.
    let info = probe(&here.url("allowed.m3u8")).expect("an HLS playlist whose segments are allowed");
    assert_eq!(info.frames, 20, "{info:?}");

    // Segments on 127.0.0.2: refused before any connection to it.
    let before = segments_elsewhere.requests.load(std::sync::atomic::Ordering::SeqCst);
    let e = probe(&here.url("elsewhere.m3u8")).expect_err("a playlist led FFmpeg to a refused address");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("127.0.0.2") && msg.contains("seg0.ts") && msg.contains("sources.allow_networks"), "{msg}");
    assert_eq!(
        segments_elsewhere.requests.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "FFmpeg connected to the refused segment server"
    );

    // The source itself is checked the same way.
    let e = probe(&segments_elsewhere.url("allowed.m3u8")).expect_err("a source on a refused address");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn a_segment_may_not_redirect_to_an_address_the_policy_refuses() {
    policy::install(policy::SourcePolicy::new(&[], &["127.0.0.1/32".into()]).unwrap());
    let dir = workdir();
    let refused = HttpServer::serve_dir("127.0.0.2", dir.path().to_path_buf());
    let here = HttpServer::serve_dir("127.0.0.1", dir.path().to_path_buf());
    hls(dir.path(), "made-here.m3u8", &here.url(""));
    // The playlist on the allowed server names segments on the allowed
    // server, each of which redirects to the same segment on 127.0.0.2.
    let made = std::fs::read_to_string(dir.path().join("made.m3u8")).unwrap();
    let mut listed = String::new();
    for l in made.lines() {
        if l.ends_with(".ts") && !l.starts_with('#') {
            std::fs::write(dir.path().join(format!("moved-{l}")), format!("REDIRECT {}", refused.url(l))).unwrap();
            listed.push_str(&here.url(&format!("moved-{l}")));
        } else {
            listed.push_str(l);
        }
        listed.push('\n');
    }
    std::fs::write(dir.path().join("moved.m3u8"), listed).unwrap();

    // HLS skips a segment it cannot open; with every segment refused there
    // is nothing to read.
    let read = probe(&here.url("moved.m3u8"));
    assert!(read.as_ref().map_or(true, |i| i.frames == 0), "frames read through refused redirects: {read:?}");
    assert!(here.requests.load(std::sync::atomic::Ordering::SeqCst) >= 2, "the segments were never asked for");
    assert_eq!(
        refused.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a segment's redirect led FFmpeg to the refused server"
    );
}

/// A 2-second DASH stream in `dir/dash/`; the manifest `name` (in `dir`)
/// takes its segments from `base` (a `<BaseURL>`).
fn dash(dir: &std::path::Path, name: &str, base: &str) {
    let out = dir.join("dash");
    if !out.join("made.mpd").exists() {
        std::fs::create_dir_all(&out).unwrap();
        ffmpeg(&[
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "2",
            "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p",
            "-f", "dash", "-seg_duration", "1", "-use_template", "1", "-use_timeline", "0",
            out.join("made.mpd").to_str().unwrap(),
        ]);
    }
    let made = std::fs::read_to_string(out.join("made.mpd")).unwrap();
    let at = made.find("<Period").expect("a Period in the manifest");
    let manifest = format!("{}<BaseURL>{base}</BaseURL>\n\t{}", &made[..at], &made[at..]);
    std::fs::write(dir.join(name), manifest).unwrap();
}

#[test]
fn a_dash_manifest_may_not_lead_to_segments_the_policy_refuses() {
    policy::install(policy::SourcePolicy::new(&[], &["127.0.0.1/32".into()]).unwrap());
    let dir = workdir();
    let segments_elsewhere = HttpServer::serve_dir("127.0.0.2", dir.path().join("dash"));
    let here = HttpServer::serve_dir("127.0.0.1", dir.path().to_path_buf());
    dash(dir.path(), "elsewhere.mpd", &segments_elsewhere.url(""));

    // FFmpeg's DASH reader opens segments with avio_open2, not through the
    // input's io_open, so the check there never sees them: a DASH manifest
    // is not read from the network at all. With the demuxer allowed, this
    // test fails: FFmpeg fetched the segments from 127.0.0.2.
    let before = segments_elsewhere.requests.load(std::sync::atomic::Ordering::SeqCst);
    let e = probe(&here.url("elsewhere.mpd")).expect_err("a manifest led FFmpeg to a refused address");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("DASH manifest"), "{e}");
    assert_eq!(segments_elsewhere.requests.load(std::sync::atomic::Ordering::SeqCst), before, "FFmpeg connected to the refused segment server");
}
