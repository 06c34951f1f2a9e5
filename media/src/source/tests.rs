//! Tests of source names and of opening sources.

use super::*;
use super::name::ffmpeg_protocol_prefix;

thread_local! {
    /// Run by [`Source::open_until`] on this thread once the local file
    /// is checked and opened, right before FFmpeg opens it.
    pub(super) static AFTER_CHECK: std::cell::Cell<Option<Box<dyn FnOnce()>>> = const { std::cell::Cell::new(None) };
}

/// A path swapped for a symlink to another file after it was checked
/// and before FFmpeg opens it changes nothing: FFmpeg reads the file
/// that was checked (through the handle), not what the path names now.
/// (Opening the path again, as FFmpeg did before, read the other file.)
#[test]
fn a_path_swapped_after_the_check_is_not_what_ffmpeg_reads() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, size: &str| {
        let path = dir.path().join(name);
        let st = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=10"), "-frames:v", "5", "-c:v", "mpeg4"])
            .arg(&path)
            .status()
            .expect("run ffmpeg");
        assert!(st.success());
        path
    };
    let checked = make("clip.mp4", "64x48");
    let other = make("other.mp4", "32x24");
    let (path, target) = (checked.clone(), other.clone());
    AFTER_CHECK.with(|hook| {
        hook.set(Some(Box::new(move || {
            std::fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink(&target, &path).unwrap();
        })))
    });
    let info = crate::probe(checked.to_str().unwrap()).unwrap();
    assert!(std::fs::symlink_metadata(&checked).unwrap().file_type().is_symlink(), "the hook did not run");
    assert_eq!((info.width, info.height), (64, 48), "FFmpeg read the file swapped in");
    // The path itself now leads to the other file.
    assert_eq!(crate::probe(checked.to_str().unwrap()).unwrap().width, 32);
}

#[test]
fn normalise() {
    assert_eq!(normalize_source("file:///a/b.mp4").unwrap(), "/a/b.mp4");
    assert_eq!(
        normalize_source("file://localhost/a/b%20c.mp4").unwrap(),
        "/a/b c.mp4"
    );
    assert_eq!(normalize_source("rel/x.mp4").unwrap(), "rel/x.mp4");
    assert_eq!(normalize_source("/abs/x.mp4").unwrap(), "/abs/x.mp4");
    assert_eq!(
        normalize_source("http://h/x.mp4").unwrap(),
        "http://h/x.mp4"
    );
    assert_eq!(
        normalize_source("HTTPS://h/x.mp4").unwrap(),
        "HTTPS://h/x.mp4"
    );
    assert_eq!(
        normalize_source("rtmp://h/app/key").unwrap(),
        "rtmp://h/app/key"
    );
    assert_eq!(normalize_source("rtsp://h/s").unwrap(), "rtsp://h/s");
    let e = normalize_source("gopher://x").unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
    assert!(e.to_string().contains("'gopher://'"), "{e}");
    assert!(normalize_source("file://otherhost/x").is_err());
    assert!(normalize_source("").is_err());
    assert_eq!(
        normalize_source("rtmps://h/app/key").unwrap(),
        "rtmps://h/app/key"
    );
    assert_eq!(
        normalize_source("v4l2:///dev/video0").unwrap(),
        "v4l2:///dev/video0"
    );
    assert_eq!(device_source("v4l2://w1/dev/video0"), Some((Some("w1".into()), "/dev/video0".into())));
    assert_eq!(device_source("v4l2:///dev/video2"), Some((None, "/dev/video2".into())));
    assert_eq!(device_source("rtsp://h/s"), None);
    assert!(check_device_path("v4l2://w/dev/video0", "/dev/video0").is_ok());
    for bad in ["/etc/passwd", "/dev/../etc/passwd", "", "dev/video0"] {
        assert!(check_device_path("v4l2://w", bad).is_err(), "{bad}");
    }
    // A local path always reaches FFmpeg as `file:`, whatever its name.
    assert_eq!(Source::new("a:b.mp4").unwrap().url, "file:a:b.mp4");
    assert_eq!(Source::new("/x.mp4").unwrap().url, "file:/x.mp4");
    assert_eq!(
        Source::new("concat:/a|/b").unwrap().url,
        "file:concat:/a|/b"
    );
    assert!(!Source::new("/x").unwrap().network);
    assert!(Source::new("http://h/x").unwrap().network);
    assert_eq!(
        Source::new("http://h/x").unwrap().protocols,
        Some(HTTP_PROTOCOLS)
    );
    assert_eq!(
        Source::new("x.mp4").unwrap().protocols,
        Some(FILE_PROTOCOLS)
    );
}

#[test]
fn ffmpeg_protocols_and_other_schemes_are_refused() {
    for (s, proto) in [
        ("concat:/a.mp4|/b.mp4", "concat"),
        ("subfile,,start,0,end,100,,:/etc/passwd", "subfile"),
        ("pipe:0", "pipe"),
        ("data:video/mp4;base64,AAAA", "data"),
        ("javascript:alert(1)", "javascript"),
        ("crypto:/x.mp4", "crypto"),
        ("async:http://h/x.mp4", "async"),
        ("CONCAT:x", "concat"),
        ("file:/etc/passwd", "file"),
    ] {
        let e = normalize_source(s).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{s}");
        assert!(
            e.to_string()
                .contains(&format!("'{proto}:' is a URL scheme or FFmpeg protocol")),
            "{e}"
        );
    }
    for s in ["ftp://h/x.mp4", "gopher://h/x", "sftp://h/x", "tcp://h:1"] {
        assert!(
            normalize_source(s)
                .unwrap_err()
                .to_string()
                .contains("is not supported"),
            "{s}"
        );
    }
    // Plain names with a ':' further on are fine; so are these forms of the same file.
    for s in [
        "./cam:1.mp4",
        "/data/cam:1.mp4",
        "clips/cam:1.mp4",
        "clip.mp4",
        "a b.mp4",
    ] {
        assert_eq!(normalize_source(s).unwrap(), s);
    }
    assert_eq!(ffmpeg_protocol_prefix("x,y.mp4"), None);
}

/// A web page served as the video: the error says what the server sent.
#[test]
fn an_http_page_is_named_by_its_content_type() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/page.html", listener.local_addr().unwrap());
    // Answers a bounded number of requests (the probe, then the explanation).
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html><body>not a video</body></html>\n".repeat(50);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    let e = crate::probe(&url).unwrap_err();
    server.join().unwrap();
    assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
    assert!(
        e.to_string()
            .ends_with("; the server sent Content-Type 'text/html', not a video)"),
        "{e}"
    );
}

/// RTSP's demuxer ignores rw_timeout: the same value goes as its `timeout`.
#[test]
fn rtsp_gets_the_read_timeout_as_its_own_timeout() {
    let extra = [("rw_timeout", "3000000"), ("probesize", "500000")];
    let opts = |url: &str, extra: &[(&str, &str)]| {
        let mut d = ffmpeg::Dictionary::new();
        Source::new(url).unwrap().set_extra(&mut d, extra);
        d.get("timeout").map(str::to_string)
    };
    assert_eq!(opts("rtsp://127.0.0.1:1/cam", &extra).as_deref(), Some("3000000"));
    assert_eq!(opts("rtmp://127.0.0.1:1/live/cam", &extra), None, "RTMP's timeout is its listen timeout");
    assert_eq!(opts("rtsp://127.0.0.1:1/cam", &[("rw_timeout", "1"), ("timeout", "7")]).as_deref(), Some("7"), "an explicit timeout wins");
}

#[test]
fn an_unknown_host_is_named() {
    let e = crate::probe("http://no-such-host.invalid/clip.mp4").unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Network);
    assert!(e.to_string().starts_with("'http://no-such-host.invalid/clip.mp4': host name 'no-such-host.invalid' not found ("), "{e}");
}
