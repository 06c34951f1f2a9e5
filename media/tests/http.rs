//! Sources over HTTP, served by a tiny in-test file server with Range support.

mod common;

use common::*;
use panoptes_media::{decode_rgb, probe, Decoder, ErrorKind};

#[test]
fn probe_and_decode_over_http() {
    let dir = workdir();
    let clip = h264_bframes_mp4(dir.path());
    let local = path_str(&clip);
    let server = HttpServer::serve(clip.clone(), "clip.mp4");
    let url = server.url("clip.mp4");

    let info = probe(&url).unwrap();
    assert_eq!(
        info,
        probe(local).unwrap(),
        "same probe over HTTP as from the file"
    );

    // A range in the middle: seeks (Range requests) to keyframe 30.
    let remote = decode_rgb(&url, 2, 33, 47, 720).unwrap();
    let want = decode_rgb(local, 2, 33, 47, 720).unwrap();
    assert_eq!(remote.len(), 7);
    assert_eq!(
        remote.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![34, 36, 38, 40, 42, 44, 46]
    );
    for (r, w) in remote.iter().zip(&want) {
        assert_eq!((r.0, r.1), (w.0, w.1));
        assert!(r.2 == w.2, "frame {} differs over HTTP", r.0);
    }
    assert!(server.requests.load(std::sync::atomic::Ordering::SeqCst) >= 2);

    // The seek really is a seek (Range request), not a restart from frame 0.
    let mut dec = Decoder::open(&url, Some(info.keyframes[5]), info.pts0).unwrap();
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!(f.index, 50);
    assert!(!dec.seek_fell_back());
}

#[test]
fn http_404() {
    let dir = workdir();
    let clip = h264_bframes_mp4(dir.path());
    let server = HttpServer::serve(clip, "clip.mp4");
    let url = server.url("nope.mp4");
    let e = probe(&url).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        format!("cannot open '{url}': Server returned 404 Not Found")
    );
}

/// A server that sends its headers, then a byte a second: every byte comes
/// well within the read timeout, so only the probe's deadline stops it
/// (before, nothing did: the probe ran for as long as the server went on).
#[test]
fn a_trickling_server_is_stopped_at_the_probe_deadline() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/slow.mp4", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else { return };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.read(&mut [0u8; 4096]);
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 100000000\r\n\r\n");
        for _ in 0..60 {
            if s.write_all(b"\0").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    let u = url.clone();
    std::thread::spawn(move || {
        let _ = tx.send(panoptes_media::probe_within(&u, &[], Duration::from_secs(2)));
    });
    // Bounded by the server's minute of trickling: an answer after it would
    // be the server giving up, not the deadline.
    let e = rx.recv_timeout(Duration::from_secs(50)).expect("the probe went on past its deadline").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    // The deadline's own error (not a read timeout, nor the server's end).
    assert!(e.to_string().starts_with(&format!("'{url}': the source sent too little data in 2 s: ")), "{e}");
    assert!(t0.elapsed() >= Duration::from_secs(2), "the probe gave up before its deadline");
}

/// A server that sends the first half of an MPEG-TS clip at once, then a
/// byte a second. A decoder with a stall limit returns the frames of the
/// first half, then fails saying no frame came within the limit (before,
/// decoding a file shard had no deadline: only HTTP's read timeout, which
/// a byte a second never meets). A local clip decodes whole under the same
/// limit.
#[test]
fn a_decode_whose_source_stalls_stops_at_the_stall_limit() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let dir = workdir();
    let ts = clip(dir.path(), "clip.ts", &["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-frames:v", "100", "-c:v", "libx264", "-g", "10", "-f", "mpegts"]);
    let mut whole = Decoder::open_with_stall_limit(path_str(&ts), None, 0, Duration::from_secs(2)).unwrap();
    let mut n = 0;
    while whole.next_frame().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 100, "a source that keeps up decodes whole under the limit");

    let data = std::fs::read(&ts).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stalls.ts", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else { return };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.read(&mut [0u8; 4096]);
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: {}\r\n\r\n", data.len());
        let half = data.len() / 2;
        if s.write_all(&data[..half]).is_err() {
            return;
        }
        for b in &data[half..half + 60] {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let u = url.clone();
    std::thread::spawn(move || {
        let r = (|| {
            let mut dec = Decoder::open_with_stall_limit(&u, None, 0, Duration::from_secs(3))?;
            let mut frames = 0;
            loop {
                match dec.next_frame() {
                    Ok(Some(_)) => frames += 1,
                    Ok(None) => return Ok((frames, None)),
                    Err(e) => return Ok((frames, Some(e))),
                }
            }
        })();
        let _ = tx.send(r);
    });
    // Bounded by the server's minute of trickling: an answer after it would
    // be the server giving up, not the limit.
    let r: Result<(u32, Option<panoptes_media::MediaError>), panoptes_media::MediaError> =
        rx.recv_timeout(Duration::from_secs(50)).expect("the decode went on past its stall limit");
    let (frames, err) = r.unwrap();
    assert!(frames > 0 && frames < 100, "{frames} frames before the stall");
    let e = err.expect("the stalled decode ended without an error");
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert!(e.to_string().contains("no frame came from the source in 3 s"), "{e}");
}
