//! Tests of the source policy: refused and allowed addresses, address
//! forms that hide an internal one, files confined to `file_dirs`, and
//! pinned URLs.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::url::{inet_aton, url_host, url_parts, with_host};
use super::SourcePolicy;

#[test]
fn a_pinned_url_keeps_everything_but_the_host_name() {
    let v4: IpAddr = "203.0.113.7".parse().unwrap();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let at = |url: &str, ip: IpAddr| with_host(&url_parts(url).unwrap(), ip);
    assert_eq!(at("http://cdn.example.com/a.mp4?x=1", v4), "http://203.0.113.7/a.mp4?x=1");
    assert_eq!(at("https://u:p@cdn.example.com:8443/a@b", v4), "https://u:p@203.0.113.7:8443/a@b");
    assert_eq!(at("rtsp://cam.example.com:554", v6), "rtsp://[2001:db8::1]:554");
    assert_eq!(at("http://[::1]:80/x", v4), "http://203.0.113.7:80/x");
    let url = "https://u:p@CDN.example.com.:8443/a";
    assert_eq!(url_parts(url).unwrap().host_port, "CDN.example.com.:8443");
    assert_eq!(url_host(url).as_deref(), Some("cdn.example.com"));
}

fn strict() -> SourcePolicy {
    SourcePolicy::new(&["/".into()], &[]).unwrap()
}

fn refusal(p: &SourcePolicy, s: &str) -> String {
    match p.check(s) {
        Err(e) => e.to_string(),
        Ok(()) => panic!("{s} was allowed"),
    }
}

#[test]
fn internal_addresses_are_refused() {
    let p = strict();
    for (url, kind) in [
        ("http://127.0.0.1/clip.mp4", "loopback"),
        ("http://127.8.9.10:8080/x", "loopback"),
        ("https://[::1]:443/x", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://172.31.255.255/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://100.64.0.1/", "shared (carrier-grade NAT)"),
        ("http://100.127.255.255/", "shared (carrier-grade NAT)"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://[fd00::1]/", "private (unique local)"),
        ("http://[fc00::1]/", "private (unique local)"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://0.1.2.3/", "unspecified"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[64:ff9b::10.0.0.1]/", "private"),
        ("rtsp://192.168.0.10:554/stream", "private"),
        ("rtmp://127.0.0.1/app/key", "loopback"),
        ("rtmps://10.1.2.3/app/key", "private"),
        ("HTTP://127.0.0.1/", "loopback"),
    ] {
        let e = refusal(&p, url);
        assert!(e.contains(&format!("is a {kind} address")), "{url}: {e}");
        assert!(e.contains("add the address to sources.allow_networks"), "{e}");
        assert!(e.starts_with(&format!("'{url}': refused:")), "{e}");
    }
}

#[test]
fn address_tricks_are_seen_through() {
    let p = strict();
    for url in [
        "http://2130706433/",         // 127.0.0.1 as one decimal number
        "http://0x7f.1/",             // hex, short form
        "http://0x7f000001/",         // hex, one number
        "http://0177.0.0.1/",         // octal
        "http://017700000001/",       // octal, one number
        "http://127.1/",              // short form
        "http://127.0.0.1./",         // trailing dot
        "http://a@127.0.0.1/",        // user info
        "http://a:b@evil.example@127.0.0.1:80/", // the last '@' ends the user info
        "http://127.0.0.1:80@/",      // no host after user info: still refused below
        "http://127.0.0.1#@example.com/",
        "http://127.0.0.1?@example.com/",
        "http://localhost/clip.mp4",  // a name resolving to loopback
        "http://LOCALHOST./clip.mp4",
    ] {
        assert!(p.check(url).is_err(), "{url} was allowed");
    }
    assert!(refusal(&p, "http://2130706433/").contains("the host '2130706433' (that is 127.0.0.1) is a loopback address"));
    assert_eq!(inet_aton("2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(inet_aton("0x7f.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(inet_aton("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(inet_aton("192.168.257"), Some(Ipv4Addr::new(192, 168, 1, 1)));
    assert_eq!(inet_aton("256.1.1.1"), None);
    assert_eq!(inet_aton("1.2.3.4.5"), None);
    assert_eq!(inet_aton("09.1.1.1"), None); // 9 is no octal digit
    assert_eq!(inet_aton("example.com"), None);
    assert_eq!(url_host("http://a@b@Host.Example.:8/x"), Some("host.example".into()));
    assert_eq!(url_host("http:///x"), None);
    assert!(refusal(&p, "http:///x").contains("the URL names no host"));
}

#[test]
fn public_addresses_and_allowed_networks_pass() {
    let p = strict();
    for url in ["http://93.184.216.34/clip.mp4", "https://[2606:2800:220:1::1]/x", "http://8.8.8.8:8080/", "rtsp://1.1.1.1/s"] {
        assert!(p.check(url).is_ok(), "{url}");
    }
    // v4l2 devices are not network sources.
    assert!(p.check("v4l2:///dev/video0").is_ok());
    let p = SourcePolicy::new(&["/".into()], &["127.0.0.1".into(), "::1".into(), "10.1.0.0/16".into()]).unwrap();
    for url in ["http://127.0.0.1:9/x", "http://[::1]:9/x", "http://[::ffff:127.0.0.1]/", "http://10.1.200.3/", "http://2130706433/"] {
        assert!(p.check(url).is_ok(), "{url}");
    }
    for url in ["http://127.0.0.2/", "http://10.2.0.1/", "http://169.254.169.254/"] {
        assert!(p.check(url).is_err(), "{url}");
    }
    let all = SourcePolicy::new(&[], &["0.0.0.0/0".into(), "::/0".into()]).unwrap();
    assert!(all.check("http://169.254.169.254/").is_ok());
    assert!(all.check("http://[fe80::1]/").is_ok());
    let e = SourcePolicy::new(&[], &["10.0.0.0/33".into()]).unwrap_err();
    assert!(e.contains("the prefix length must be 0 to 32"), "{e}");
    let e = SourcePolicy::new(&[], &["intranet".into()]).unwrap_err();
    assert!(e.starts_with("sources.allow_networks: 'intranet' is not an IP address or CIDR"), "{e}");
}

#[test]
fn files_are_confined_to_their_directories() {
    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("videos");
    std::fs::create_dir(&allowed).unwrap();
    let inside = allowed.join("clip.mp4");
    let outside = root.path().join("outside.mp4");
    std::fs::write(&inside, b"x").unwrap();
    std::fs::write(&outside, b"x").unwrap();
    std::fs::create_dir(allowed.join("sub")).unwrap();
    std::fs::write(allowed.join("sub/deep.mp4"), b"x").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("link.mp4")).unwrap();
    std::os::unix::fs::symlink(&inside, allowed.join("ok-link.mp4")).unwrap();
    // A sibling whose name starts like the allowed directory.
    let sibling = root.path().join("videos2");
    std::fs::create_dir(&sibling).unwrap();
    std::fs::write(sibling.join("x.mp4"), b"x").unwrap();

    let p = SourcePolicy::new(&[allowed.display().to_string()], &[]).unwrap();
    let ok = |path: &Path| p.check(&path.display().to_string());
    assert!(ok(&inside).is_ok());
    assert!(ok(&allowed.join("sub/deep.mp4")).is_ok());
    assert!(ok(&allowed.join("sub/../clip.mp4")).is_ok());
    assert!(ok(&allowed.join("ok-link.mp4")).is_ok());
    // Missing: left to the open, which says "not found".
    assert!(ok(&allowed.join("missing.mp4")).is_ok());
    for bad in [outside.clone(), allowed.join("../outside.mp4"), allowed.join("link.mp4"), sibling.join("x.mp4")] {
        let e = ok(&bad).unwrap_err().to_string();
        assert!(e.contains("outside the directories local sources may be read from"), "{e}");
        assert!(e.contains("add its directory to sources.file_dirs"), "{e}");
        assert!(e.starts_with(&format!("'{}'", bad.display())), "{e}");
    }
    let e = ok(&allowed.join("link.mp4")).unwrap_err().to_string();
    assert!(e.contains(&format!("(it resolves to {})", outside.canonicalize().unwrap().display())), "{e}");

    let none = SourcePolicy::new(&[], &[]).unwrap();
    let e = none.check(&inside.display().to_string()).unwrap_err().to_string();
    assert!(e.contains("local files are not allowed on this cluster (sources.file_dirs is empty)"), "{e}");
    // The default, ["/"], allows any file.
    assert!(strict().check(&outside.display().to_string()).is_ok());
}
