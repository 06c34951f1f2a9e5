//! DNS rebinding: the address the source policy checks is the address
//! FFmpeg connects to. A name that resolves to an allowed address when it
//! is checked and to a refused one a moment later must not lead the
//! connection to the refused one.
//!
//! The test needs a resolver it controls, so it runs itself again in new
//! network and mount namespaces (`unshare`, as root: the suite's chaos run
//! needs the same), where `/etc/resolv.conf` names a DNS server on
//! 127.0.0.1:53 that this test serves. Inside, everything is on the
//! namespace's own loopback: nothing leaves it. Two HTTP servers on one
//! port: 127.0.0.1 (allowed by `allow_networks`) and 127.0.0.2 (refused).
//! The name `rebind.test` resolves to 127.0.0.1 for the first two lookups,
//! which are the policy's two checks of an open (when the source is opened,
//! and right before FFmpeg connects), and to 127.0.0.2 for every later one:
//! a connection made by resolving the name again reaches 127.0.0.2.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use panoptes_media::{policy, probe};

const INNER: &str = "PANOPTES_REBIND_INNER";
const DONE: &str = "rebinding-inner-run-complete";
/// Lookups answered with the allowed address before the answer changes.
const HONEST_ANSWERS: usize = 2;

#[test]
fn a_name_that_changes_its_address_after_the_check_is_not_followed() {
    if std::env::var_os(INNER).is_some() {
        inner();
        return;
    }
    let dir = workdir();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n").unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--net", "--mount", "sh", "-c"])
        .arg(r#"ip link set lo up && mount --bind "$0" /etc/resolv.conf && exec "$1" --exact a_name_that_changes_its_address_after_the_check_is_not_followed --nocapture --test-threads 1"#)
        .arg(&resolv)
        .arg(&exe)
        .env(INNER, "1")
        .output()
        .expect("run unshare (util-linux)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains(DONE),
        "the test in its own namespaces failed or did not run (it needs root for `unshare --net --mount`, and `ip` from iproute2):\n{stdout}\n{stderr}"
    );
}

/// The part that runs inside the namespaces.
fn inner() {
    let lookups = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let dns = {
        let sock = UdpSocket::bind("127.0.0.1:53").expect("bind the test's DNS server on 127.0.0.1:53");
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let (lookups, stop) = (lookups.clone(), stop.clone());
        std::thread::spawn(move || serve_dns(sock, &lookups, &stop))
    };
    let dir = workdir();
    clip(dir.path(), "clip.mp4", &["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p"]);
    let allowed = HttpServer::serve_dir("127.0.0.1", dir.path().to_path_buf());
    let refused = HttpServer::serve_dir_on("127.0.0.2", allowed.port, dir.path().to_path_buf());
    policy::install(policy::SourcePolicy::new(&[], &["127.0.0.1/32".into()]).unwrap());

    let url = format!("http://rebind.test:{}/clip.mp4", allowed.port);
    let read = probe(&url);
    stop.store(true, Ordering::SeqCst);
    dns.join().unwrap();
    let asked = lookups.load(Ordering::SeqCst);
    assert!(asked >= 1, "the name was never looked up in the test's DNS server: the test proves nothing");
    assert_eq!(refused.requests.load(Ordering::SeqCst), 0, "FFmpeg resolved the name again and connected to the refused address ({asked} lookups)");
    let info = read.unwrap_or_else(|e| panic!("the source on the allowed address was not read ({asked} lookups): {e}"));
    assert_eq!(info.frames, 20, "{info:?}");
    // The name still goes where HTTP sends it: virtual hosts and CDNs
    // serve by it.
    let hosts = allowed.hosts.lock().unwrap().clone();
    let expected = format!("rebind.test:{}", allowed.port);
    assert!(!hosts.is_empty() && hosts.iter().all(|h| *h == expected), "Host headers {hosts:?}, expected {expected}");
    println!("{DONE}");
}

/// Answer A queries for any name: 127.0.0.1 for the first
/// [`HONEST_ANSWERS`], 127.0.0.2 after; every other query with no record.
fn serve_dns(sock: UdpSocket, lookups: &AtomicUsize, stop: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let q = &buf[..n];
        if n < 12 {
            continue;
        }
        // The question: labels up to a zero byte, then type and class.
        let mut i = 12;
        while i < n && q[i] != 0 {
            i += 1 + q[i] as usize;
        }
        if i + 5 > n {
            continue;
        }
        let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
        let question = &q[12..i + 5];
        let ip = (qtype == 1).then(|| {
            let k = lookups.fetch_add(1, Ordering::SeqCst);
            if k < HONEST_ANSWERS { [127, 0, 0, 1] } else { [127, 0, 0, 2] }
        });
        let mut r = Vec::with_capacity(64);
        r.extend_from_slice(&q[..2]); // id
        r.extend_from_slice(&[0x81 | (q[2] & 0x01), 0x80]); // response, recursion desired as asked, available
        r.extend_from_slice(&[0, 1, 0, ip.is_some() as u8, 0, 0, 0, 0]);
        r.extend_from_slice(question);
        if let Some(ip) = ip {
            // The name by pointer to the question, type A, class IN, TTL 0.
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
            r.extend_from_slice(&ip);
        }
        let _ = sock.send_to(&r, from);
    }
}
