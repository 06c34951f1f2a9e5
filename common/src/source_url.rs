//! Source URLs as plain text, for every crate (the replicated state and the
//! CLI included, which do not link FFmpeg): how one is shown to others, and
//! which worker a capture device belongs to.

/// `source` as it may be logged or shown to other users: the user
/// information (`user:password@`) and the query string of a URL (signed
/// URLs carry their credentials there) are replaced by `***`, and so is the
/// stream key of an RTMP push URL (`rtmp://HOST:PORT/live/KEY`: whoever has
/// it may publish into the job). Local paths are returned as they are.
pub fn redact(source: &str) -> String {
    let Some((scheme, rest)) = source.split_once("://") else { return source.to_string() };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rfind('@') {
        Some(i) => format!("***@{}", &authority[i + 1..]),
        None => authority.to_string(),
    };
    let mut tail = match tail.find('?') {
        Some(i) => format!("{}?***", &tail[..i]),
        None => tail.to_string(),
    };
    if scheme.eq_ignore_ascii_case("rtmp") || scheme.eq_ignore_ascii_case("rtmps") {
        if let Some(i) = tail.find("/live/") {
            let key_end = tail[i + 6..].find(['?', '#']).map_or(tail.len(), |j| i + 6 + j);
            if key_end > i + 6 {
                tail.replace_range(i + 6..key_end, "***");
            }
        }
    }
    format!("{scheme}://{authority}{tail}")
}

/// A capture device source, `v4l2://WORKER/dev/videoN`: the worker it is
/// attached to (`None` when the URL names none, `v4l2:///dev/video0`) and the
/// device path. `None` for any other source.
pub fn device_source(source: &str) -> Option<(Option<String>, String)> {
    if !source.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("v4l2://")) {
        return None;
    }
    let rest = &source["v4l2://".len()..];
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    Some(((!host.is_empty()).then(|| host.to_string()), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials_and_queries() {
        use super::redact;
        assert_eq!(redact("http://user:pw@example.com/a.mp4?sig=abc"), "http://***@example.com/a.mp4?***");
        assert_eq!(redact("rtsp://cam.local:554/stream"), "rtsp://cam.local:554/stream");
        assert_eq!(redact("https://h?token=x"), "https://h?***");
        assert_eq!(redact("/videos/a@b.mp4"), "/videos/a@b.mp4");
        // A push URL's stream key; a lobby URL has none.
        assert_eq!(redact("rtmp://10.0.0.2:7500/live/3f9c2a"), "rtmp://10.0.0.2:7500/live/***");
        assert_eq!(redact("rtmp://10.0.0.2:7502/live/"), "rtmp://10.0.0.2:7502/live/");
        assert_eq!(redact("rtsp://admin:pw@cam/live/x"), "rtsp://***@cam/live/x");
    }

    #[test]
    fn a_device_names_its_worker() {
        assert_eq!(device_source("v4l2://w1/dev/video0"), Some((Some("w1".into()), "/dev/video0".into())));
        assert_eq!(device_source("V4L2:///dev/video0"), Some((None, "/dev/video0".into())));
        assert_eq!(device_source("rtsp://h/s"), None);
    }
}
