//! Slow, silent and many clients against a real web server (the page needs
//! no coordinator): connections that never finish a request's head are
//! closed after the header timeout, one past the connection limit is closed
//! at once, and a client arriving afterwards is answered.
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read until the server closes the connection (EOF or reset); how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

async fn get_page(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.expect("an answer within 30 s").unwrap();
    String::from_utf8_lossy(&raw).lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn silent_and_excess_connections_are_closed_and_others_served() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let limits = panoptes_web::Limits { max_connections: 8, header_read_timeout: Duration::from_secs(2) };
    let web = panoptes_web::serve_limited("127.0.0.1:0".parse().unwrap(), vec![dead.to_string()], Vec::new(), limits).await.unwrap();

    // Eight clients take every slot and never finish their request's head.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(web).await.unwrap();
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {web}\r\n").as_bytes()).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A ninth is closed at once: no slot.
    let mut excess = TcpStream::connect(web).await.unwrap();
    assert!(closed_within(&mut excess, Duration::from_secs(5)).await.is_some(), "a connection past the limit was kept open");
    // The silent ones are closed once the header timeout passes.
    for (i, s) in stalled.iter_mut().enumerate() {
        assert!(closed_within(s, Duration::from_secs(20)).await.is_some(), "stalled connection {i} was never closed");
    }
    // Then a client is served.
    assert!(get_page(web).await.contains("200"), "the page after the slow clients left");
}
