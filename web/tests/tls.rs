//! HTTPS set-up errors: a missing or empty certificate file, or a missing
//! key, is an error naming the file and its `[security]` key, not a panic.
use panoptes_web::{serve_tls, WebTls};

async fn error(cert: &str, key: &str) -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let tls = WebTls { cert: cert.into(), key: key.into() };
    serve_tls("127.0.0.1:0".parse().unwrap(), vec![dead.to_string()], &tls, Vec::new()).await.expect_err("bad TLS files must be refused").to_string()
}

#[tokio::test]
async fn bad_certificate_or_key_files_are_named() {
    let dir = std::env::temp_dir().join(format!("panoptes-web-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem").display().to_string();
    let e = error(&missing, &missing).await;
    assert!(e.contains(&missing) && e.contains("security.tls_cert"), "{e}");

    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let e = error(&empty, &missing).await;
    assert!(e.contains(&empty) && e.contains("security.tls_cert"), "{e}");

    // A certificate block that is not a valid certificate, and no key file.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let junk = junk.display().to_string();
    let e = error(&junk, &missing).await;
    assert!(e.contains(&missing) && e.contains("security.tls_key"), "{e}");
    // With a "key" that is not one.
    let e = error(&junk, &junk).await;
    assert!(e.contains("security.tls_key") || e.contains("security.tls_cert"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
