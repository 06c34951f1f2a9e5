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
