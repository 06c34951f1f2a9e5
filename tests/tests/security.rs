//! Bearer tokens on real processes (docs/SECURITY.md): a coordinator with a
//! tokens file made by `panoptes token`; every user and admin command is
//! refused without a token, a user token cannot run admin commands, an admin
//! token runs everything, and no token appears in any log.
use std::process::{Command, Output};
use std::time::Duration;

use panoptes_proto::api::{self as pb, panoptes_client::PanoptesClient};
use panoptes_tests::{bin, client_command, make_token, http_get, http_get_with, http_request, make_video, wait_for, web_addr, Cluster};

/// The CLI against `c` with exactly `token` (or none).
fn run(c: &Cluster, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = client_command();
    cmd.args(args).args(["--coordinator", &c.addr]).env_remove("PANOPTES_TOKEN");
    if let Some(t) = token {
        cmd.env("PANOPTES_TOKEN", t);
    }
    cmd.output().expect("run panoptes")
}

/// One coordinator with a tokens file holding a user token (alice) and an
/// admin token (root), plus `extra` `[security]` lines; the CLI helpers pass
/// the admin token. Returns the cluster and the two tokens.
fn tokens_cluster(extra: &str) -> (Cluster, String, String) {
    let (user, user_line) = make_token("user", "alice");
    let (admin, admin_line) = make_token("admin", "root");
    let c = Cluster::start_secure(&[], &admin, |dir| {
        let file = dir.join("tokens");
        // A comment line too: the file format allows them.
        std::fs::write(&file, format!("# made by panoptes token\n{user_line}\n{admin_line}\n")).unwrap();
        let secret = dir.join("cluster.secret");
        std::fs::write(&secret, "tokens-cluster-secret\n").unwrap();
        format!("\n[security]\ntokens_file = \"{}\"\ncluster_secret_file = \"{}\"\n{extra}", file.display(), secret.display())
    });
    (c, user, admin)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tokens_guard_every_call() {
    let (c, user, admin) = tokens_cluster("");

    let user_cmds: &[&[&str]] = &[&["status", "job-1"], &["cancel", "job-1"], &["metrics", "job-1"], &["videos"], &["models"]];
    let admin_cmds: &[&[&str]] = &[&["cluster", "status"], &["worker", "drain", "w9"], &["prune", "--older-than", "1h"]];

    for args in user_cmds.iter().chain(admin_cmds) {
        let o = run(&c, None, args);
        assert!(!o.status.success() && stderr(&o).contains("Unauthenticated"), "{args:?} without a token: {}", stderr(&o));
        let o = run(&c, Some("not-a-token"), args);
        assert!(!o.status.success() && stderr(&o).contains("Unauthenticated"), "{args:?} with a wrong token: {}", stderr(&o));
    }
    for args in admin_cmds {
        let o = run(&c, Some(&user), args);
        assert!(!o.status.success() && stderr(&o).contains("PermissionDenied"), "{args:?} with a user token: {}", stderr(&o));
    }
    // A user token passes the gate: what remains is the call's own answer.
    for args in [&["videos"][..], &["models"]] {
        let o = run(&c, Some(&user), args);
        assert!(o.status.success(), "{args:?} with a user token: {}", stderr(&o));
    }
    let o = run(&c, Some(&admin), &["cluster", "status", "--json"]);
    assert!(o.status.success(), "cluster status with the admin token: {}", stderr(&o));

    let logs = c.logs();
    for secret in [&user, &admin] {
        assert!(!logs.contains(secret.as_str()), "a token is in a log");
    }
}

/// With a cluster secret on every coordinator and worker: three coordinators
/// elect a leader (Raft RPCs and forwarded writes carry the secret), a worker
/// with the secret completes a job, a worker with a wrong secret is refused
/// and says so in its log, and the web API passes the browser's token on.
#[test]
fn the_cluster_secret_and_tokens_work_end_to_end() {
    let (user, user_line) = make_token("user", "alice");
    let (admin, admin_line) = make_token("admin", "root");
    let secret = "correct-horse-battery-staple-7f3a9c";
    let mut c = Cluster::start_secure_replicated(3, &["w1"], &admin, |dir| {
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("{user_line}\n{admin_line}\n")).unwrap();
        let secret_file = dir.join("secret");
        // Surrounding whitespace is trimmed by every reader.
        std::fs::write(&secret_file, format!("  {secret}\n")).unwrap();
        // A worker config with a wrong secret, for later.
        let wrong = dir.join("wrong-secret");
        std::fs::write(&wrong, "not-the-cluster-secret\n").unwrap();
        let wrong_cfg =
            panoptes_tests::test_config(&format!("\n[security]\ntokens_file = \"{}\"\ncluster_secret_file = \"{}\"\n", tokens.display(), wrong.display()));
        std::fs::write(dir.join("wrong.toml"), wrong_cfg).unwrap();
        format!("\n[security]\ntokens_file = \"{}\"\ncluster_secret_file = \"{}\"\n", tokens.display(), secret_file.display())
    });

    // A job submitted with a user token completes on the worker with the secret.
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 40, "160x120", 10);
    let out = run(&c, Some(&user), &["submit", video.to_str().unwrap(), "--models", "colors", "--wait", "--json"]);
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("submit: {}\n{}", stderr(&out), c.logs()));
    assert_eq!(status["state"], "completed", "{status}\n{}", c.logs());

    // Asked at each member in turn (followers forward to the leader and
    // probe the others with the caller's token): three healthy members.
    for addr in c.coordinator_addrs.clone() {
        wait_for(&format!("cluster status at {addr} to show 3 healthy members"), Duration::from_secs(60), || {
            let o = client_command()
                .args(["cluster", "status", "--json", "--coordinator", &addr])
                .env("PANOPTES_TOKEN", &admin)
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            let m = v["members"].as_array()?;
            (m.len() == 3 && m.iter().all(|m| m["healthy"] == true)).then_some(())
        });
    }

    // A worker with the wrong secret cannot register, and its log says why.
    let wrong_cfg = c.dir.path().join("wrong.toml").display().to_string();
    c.start_worker_with_config("w-wrong", &wrong_cfg);
    let w = c.workers.last().unwrap();
    wait_for("the wrong-secret worker to log its refusal", Duration::from_secs(60), || {
        w.log_text().contains("refused this worker's cluster secret").then_some(())
    });
    assert!(!w.log_text().contains("registered"), "a worker with a wrong secret registered:\n{}", w.log_text());

    // The web API: 401 without a token, 200 with one (passed through to gRPC).
    let web = web_addr(&c);
    let (code, body) = http_get(&web, "/api/models");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let bearer = format!("Bearer {user}");
    let (code, body) = http_get_with(&web, "/api/models", &[("authorization", &bearer)]);
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get_with(&web, "/api/models", &[("authorization", "Bearer not-a-token")]);
    assert_eq!(code, 401, "{body}");

    let logs = c.logs();
    for s in [secret, user.as_str(), admin.as_str()] {
        assert!(!logs.contains(s), "a token or the secret is in a log");
    }
}

/// A burst of calls with one user token runs into RESOURCE_EXHAUSTED when
/// `rate_limit_per_s` is small (the bucket refills far slower than the burst).
#[test]
fn a_burst_of_calls_hits_the_rate_limit() {
    let (c, user, _admin) = tokens_cluster("rate_limit_per_s = 1\nrate_limit_burst = 3\n");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let codes: Vec<tonic::Code> = rt.block_on(async {
        let ch = panoptes_tests::grpc_endpoint(&c.addr).connect().await.expect("connect");
        let mut client = PanoptesClient::new(ch);
        let mut codes = Vec::new();
        // 30 calls at once-ish: far more than a burst of 3 plus 1/s can carry.
        for _ in 0..30 {
            let mut req = tonic::Request::new(pb::ListModelsRequest {});
            req.metadata_mut().insert("authorization", format!("Bearer {user}").parse().unwrap());
            let code = match client.list_models(req).await {
                Ok(_) => tonic::Code::Ok,
                Err(s) => s.code(),
            };
            codes.push(code);
            if code == tonic::Code::ResourceExhausted {
                break;
            }
        }
        codes
    });
    assert_eq!(codes.first(), Some(&tonic::Code::Ok), "{codes:?}");
    assert_eq!(codes.last(), Some(&tonic::Code::ResourceExhausted), "{codes:?}\n{}", c.logs());
}

/// Every gRPC connection is TLS with client certificates (the harness turns
/// it on for every test cluster): a client without TLS, without a client
/// certificate, with a certificate from another CA, or trusting another CA
/// is refused with an error that says what to fix; so is a worker whose
/// certificate another CA signed. The right client still works throughout.
#[test]
fn tls_refuses_plain_text_and_wrong_certificates() {
    let Some(tls) = panoptes_tests::test_tls() else {
        panic!("this test needs the harness's TLS: unset PANOPTES_TEST_TLS=0");
    };
    let mut c = Cluster::start(&["w1"]);
    let other_dir = tempfile::tempdir().unwrap();
    let other = panoptes_tests::Tls::make(other_dir.path(), &[]);

    // The configured client works.
    let ok = c.cli(&["models", "--json"]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    let attempt = |env: &[(&str, String)]| {
        let mut cmd = Command::new(bin());
        cmd.args(["models", "--json", "--coordinator", &c.addr]).env_remove("PANOPTES_TLS_CA").env_remove("PANOPTES_TLS_CERT").env_remove("PANOPTES_TLS_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("run panoptes");
        assert_eq!(o.status.code(), Some(2), "{env:?} was not refused: {}", String::from_utf8_lossy(&o.stdout));
        stderr(&o)
    };
    // Plain text: the hint names the option to use.
    let e = attempt(&[]);
    assert!(e.contains("--tls-ca"), "{e}");
    // TLS, but no client certificate.
    let e = attempt(&[("PANOPTES_TLS_CA", tls.path("ca.pem"))]);
    // (The server's alert, CertificateRequired, is not always read before the
    // connection closes; the hint is always there.)
    assert!(e.contains("--tls-cert"), "{e}");
    // A client certificate the cluster's CA did not sign.
    let e = attempt(&[("PANOPTES_TLS_CA", tls.path("ca.pem")), ("PANOPTES_TLS_CERT", other.path("client.pem")), ("PANOPTES_TLS_KEY", other.path("client.key"))]);
    assert!(e.contains("--tls-cert"), "{e}");
    // The client trusts another CA: the server's certificate is refused.
    let e = attempt(&[("PANOPTES_TLS_CA", other.path("ca.pem")), ("PANOPTES_TLS_CERT", other.path("client.pem")), ("PANOPTES_TLS_KEY", other.path("client.key"))]);
    assert!(e.contains("invalid peer certificate"), "{e}");
    // The metrics endpoint saw no request from any of them: nothing was
    // accepted. And a worker with the other CA's certificates cannot register.
    let bad_cfg = c.dir.path().join("other-ca.toml");
    std::fs::write(&bad_cfg, panoptes_tests::with_security(panoptes_tests::TEST_CONFIG, &other.node_lines())).unwrap();
    c.start_worker_with_config("w-other-ca", &bad_cfg.display().to_string());
    let w = c.workers.last().unwrap();
    wait_for("the other-CA worker to log a certificate error", Duration::from_secs(60), || {
        let t = w.log_text();
        t.contains("invalid peer certificate").then_some(())
    });
    let status = c.cli_json(&["cluster", "status", "--json"]);
    let names: Vec<&str> = status["workers"].as_array().unwrap().iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names, ["w1"], "{status}");

    // The cluster still works for the right client: a job completes on w1.
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 20, "160x120", 10);
    let s = c.cli_json(&["submit", video.to_str().unwrap(), "--models", "colors", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
}

/// A member never has the leader commit a command for it: the Raft service
/// carries none. A follower sends a user's write on to the leader as the
/// same public call, with the caller's token, and the leader's gate checks
/// it again: the cluster secret (which every worker holds) opens no user
/// call even marked as forwarded, a call needs the same role at the leader,
/// and a job records the owner of the caller's token.
#[test]
fn a_follower_sends_writes_on_with_the_callers_token_and_the_leader_checks_it() {
    let (user, user_line) = make_token("user", "alice");
    let (bob, bob_line) = make_token("user", "bob");
    let (admin, admin_line) = make_token("admin", "root");
    let secret = "forward-test-secret-5e1d";
    let c = Cluster::start_secure_replicated(3, &["w1"], &admin, |dir| {
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("{user_line}\n{bob_line}\n{admin_line}\n")).unwrap();
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        format!("\n[security]\ntokens_file = \"{}\"\ncluster_secret_file = \"{}\"\n", tokens.display(), secret_file.display())
    });
    let leader_id = c.leader();
    let leader = c.coordinator_addrs[leader_id as usize - 1].clone();
    let follower = c.coordinator_addrs.iter().find(|a| **a != leader).unwrap().clone();
    let follower_id = c.coordinator_addrs.iter().position(|a| *a == follower).unwrap() as u64 + 1;

    // The cluster secret, with the mark a follower puts on a call it sends
    // on, is no token: the leader refuses an admin's call made with it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let e = rt.block_on(async {
        let ch = panoptes_tests::grpc_endpoint(&leader).connect().await.expect("connect to the leader");
        let mut client = PanoptesClient::new(ch);
        let mut rq = tonic::Request::new(pb::PruneRequest { older_than_ms: 0 });
        rq.metadata_mut().insert("x-panoptes-cluster-secret", secret.parse().unwrap());
        rq.metadata_mut().insert("x-panoptes-forwarded", "1".parse().unwrap());
        client.prune(rq).await.unwrap_err()
    });
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    let at = |token: Option<&str>, args: &[&str]| {
        let mut cmd = client_command();
        cmd.args(args).args(["--coordinator", &follower]).env_remove("PANOPTES_TOKEN");
        if let Some(t) = token {
            cmd.env("PANOPTES_TOKEN", t);
        }
        cmd.output().expect("run panoptes")
    };
    // A user's prune through a follower: refused for its role (an admin's
    // call) at the follower; the leader checks it again (above).
    let out = at(Some(&user), &["prune", "--older-than", "1s", "--json"]);
    assert!(!out.status.success() && stderr(&out).contains("admin"), "a user's prune via a follower: {}", stderr(&out));

    // Alice's live endpoint, asked at a follower, is created at the leader
    // for alice: she sees its stream key there, bob does not.
    c.wait_workers(1);
    let live = wait_for("a live endpoint via a follower", Duration::from_secs(30), || {
        let o = at(Some(&user), &["live", "--models", "colors", "--json"]);
        o.status.success().then_some(o)
    });
    let live: serde_json::Value = serde_json::from_slice(&live.stdout).unwrap_or_else(|_| panic!("live via a follower: {}\n{}", stderr(&live), c.logs()));
    let (live_job, url) = (live["job_id"].as_str().unwrap().to_string(), live["rtmp_url"].as_str().unwrap().to_string());
    let key = url.rsplit('/').next().unwrap().to_string();
    let shown = |token: &str| -> serde_json::Value {
        let mut cmd = client_command();
        cmd.args(["status", &live_job, "--json", "--coordinator", &leader]).env_remove("PANOPTES_TOKEN").env("PANOPTES_TOKEN", token);
        let o = cmd.output().expect("run panoptes");
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("status at the leader: {}", stderr(&o)))
    };
    assert_eq!(shown(&user)["push_url"], url.as_str(), "the owner, alice, sees her stream's key");
    assert!(!shown(&bob).to_string().contains(&key), "bob was shown alice's stream key: the job does not record alice as its owner");
    assert!(at(Some(&user), &["cancel", &live_job]).status.success(), "alice cancels her live job via a follower");

    // Through a follower: submit (user), cancel (user) and prune (admin) go on.
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 40, "160x120", 10);
    // Not `--wait` here: the follower's own status read may not have applied
    // the new job yet ("no job job-1"; follower reads lag, docs/ARCHITECTURE.md).
    let out = at(Some(&user), &["submit", video.to_str().unwrap(), "--models", "colors", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("submit via a follower: {}\n{}", stderr(&out), c.logs()));
    let job = s["job_id"].as_str().expect("a job id").to_string();
    let s: serde_json::Value = wait_for("the job to finish, read at the leader", Duration::from_secs(120), || {
        let o = c.cli_at(&leader, &["status", &job, "--json"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).ok().filter(|s| matches!(s["state"].as_str(), Some("completed" | "failed" | "cancelled")))
    });
    assert_eq!(s["state"], "completed", "{s}");
    let out = at(Some(&admin), &["prune", "--older-than", "1s", "--json"]);
    assert!(out.status.success(), "prune via a follower: {}", stderr(&out));
    let log = c.coordinator_log(follower_id);
    for what in ["submission", "prune", "live endpoint request", "cancellation"] {
        assert!(log.contains(&format!("forwarding a {what} to the leader")), "the follower's log does not show a {what} sent on:\n{log}");
    }
}

/// The gRPC port holds at most `security.max_connections` connections: one
/// more is closed at once. A client that never finishes its TLS handshake
/// is closed after 10 s (with the harness's TLS, the default). Then calls
/// are served again.
#[test]
fn grpc_closes_excess_and_silent_connections() {
    use std::io::Read;
    let c = Cluster::start_configured(1, &[], "\n[security]\nmax_connections = 8\n");
    let addr = c.coordinator_addrs[0].clone();
    let closed_within = |s: &mut std::net::TcpStream, limit: Duration| -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut buf = [0u8; 256];
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
        }
    };
    let mut silent: Vec<std::net::TcpStream> = (0..8).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(5)), "a connection past max_connections was kept open");
    if panoptes_tests::tls_on() {
        for (i, s) in silent.iter_mut().enumerate() {
            assert!(closed_within(s, Duration::from_secs(30)), "silent connection {i} (no TLS handshake) was never closed");
        }
    }
    drop(silent);
    wait_for("calls to be served again", Duration::from_secs(30), || run(&c, None, &["models", "--json"]).status.success().then_some(()));
}

/// A live job's push URL carries its stream key: whoever has it may publish
/// into the job. With tokens on, `status` shows it whole to the job's owner
/// and to admins only (others see `***` in its place), and the web page
/// relays a browser's stream only for them. Before, every user saw the key
/// and could publish into any live job through the web page.
#[test]
fn a_live_jobs_push_url_and_stream_belong_to_its_owner_and_admins() {
    let (alice, alice_line) = make_token("user", "alice");
    let (bob, bob_line) = make_token("user", "bob");
    let (admin, admin_line) = make_token("admin", "root");
    let c = Cluster::start_secure(&["w1"], &admin, |dir| {
        let file = dir.join("tokens");
        std::fs::write(&file, format!("{alice_line}\n{bob_line}\n{admin_line}\n")).unwrap();
        let secret = dir.join("cluster.secret");
        std::fs::write(&secret, "live-owner-cluster-secret\n").unwrap();
        format!("\n[security]\ntokens_file = \"{}\"\ncluster_secret_file = \"{}\"\n", file.display(), secret.display())
    });
    c.wait_workers(1);
    let json = |o: Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("not JSON: {}\n{}", stderr(&o), String::from_utf8_lossy(&o.stdout)))
    };
    let live = json(run(&c, Some(&alice), &["live", "--models", "colors", "--json"]));
    let (job, url) = (live["job_id"].as_str().unwrap().to_string(), live["rtmp_url"].as_str().unwrap().to_string());
    let key = url.rsplit('/').next().unwrap().to_string();
    assert!(key.len() >= 16, "{url}");

    for (who, token) in [("alice (the owner)", &alice), ("root (an admin)", &admin)] {
        let s = json(run(&c, Some(token), &["status", &job, "--json"]));
        assert_eq!(s["push_url"], url.as_str(), "{who}: {s}");
        assert_eq!(s["source"], url.as_str(), "{who}: {s}");
    }
    let s = json(run(&c, Some(&bob), &["status", &job, "--json"]));
    let shown = s.to_string();
    assert!(!shown.contains(&key), "bob (another user) was shown the stream key: {s}");
    assert!(s["push_url"].as_str().unwrap().ends_with("/live/***"), "{s}");

    // The web page's relay: bob may neither publish nor end the stream.
    let web = web_addr(&c);
    let as_bob = format!("Bearer {bob}");
    let (code, body) = http_request(&web, "POST", &format!("/api/live/{job}/media"), &[("authorization", &as_bob)], Some(b"webm bytes"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("only the owner of live job"), "{body}");
    let (code, body) = http_request(&web, "DELETE", &format!("/api/live/{job}/media"), &[("authorization", &as_bob)], None);
    assert_eq!(code, 403, "{body}");
    // Alice gets past the check (what follows is the relay's own answer).
    let as_alice = format!("Bearer {alice}");
    let (code, body) = http_request(&web, "DELETE", &format!("/api/live/{job}/media"), &[("authorization", &as_alice)], None);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no browser stream is being relayed"), "{body}");

    let logs = c.logs();
    assert!(!logs.contains(&key), "the stream key is in a log");
}
