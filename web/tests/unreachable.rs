//! With no coordinator reachable, every API route answers 503 with a JSON
//! message (a real server, pointed at a port where nothing listens).
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the web server");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), s.read_to_end(&mut raw)).await.expect("an answer within 60 s").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn no_coordinator_reachable_is_503() {
    // A port that was free a moment ago: connections are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let web = panoptes_web::serve("127.0.0.1:0".parse().unwrap(), vec![dead.to_string()], Vec::new()).await.unwrap();
    for path in ["/api/models", "/api/videos", "/api/jobs/job-1"] {
        let (status, body) = get(web, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert!(v["error"].as_str().unwrap().contains("no coordinator reachable"), "{v}");
    }
    // The page itself needs no coordinator.
    assert_eq!(get(web, "/").await.0, 200);
}
