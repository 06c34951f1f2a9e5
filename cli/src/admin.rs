//! The cluster's administration from the CLI: `cluster status`, adding and
//! removing coordinators, draining a worker, and the credentials (`token`,
//! `certs`) a cluster with security on needs.
use super::*;

#[derive(Args)]
pub(crate) struct DrainArgs {
    /// The worker's name, as in `cluster status`.
    name: String,
    /// Return its current leases now: their shards resume on other workers
    /// from the last committed frame.
    #[arg(long, conflicts_with = "undo")]
    hand_back: bool,
    /// Undrain: the worker takes new shards again.
    #[arg(long)]
    undo: bool,
    /// Print {"worker","draining","leases_returned"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Args)]
pub(crate) struct AddMemberArgs {
    /// The new coordinator's id (unique in the cluster).
    id: u64,
    /// The address it serves on (its --listen), HOST:PORT.
    addr: String,
    /// Seconds to wait for it to catch up with the log before giving up.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
    /// Print {"voters","learners","leader","log_index"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Args)]
pub(crate) struct RemoveMemberArgs {
    /// The coordinator's id.
    id: u64,
    /// Print {"voters","learners","leader","log_index"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

/// `cluster status --json`: exactly the documented keys (plus jobs.cancelled).
fn cluster_json(r: &pb::ClusterStatusResponse) -> Value {
    let jobs = r.jobs.unwrap_or_default();
    json!({
        "leader": r.leader,
        "term": r.term,
        "members": r.members.iter().map(|m| json!({
            "id": m.id, "addr": m.addr, "role": m.role, "last_log_index": m.last_log_index, "healthy": m.healthy,
            "behind": m.behind, "snapshot_sent_bytes": m.snapshot_sent_bytes, "snapshot_bytes": m.snapshot_bytes,
        })).collect::<Vec<_>>(),
        "workers": r.workers.iter().map(|w| json!({
            "name": w.name, "addr": w.addr, "state": w.state, "capacity": w.capacity,
            "active_shards": w.active_shards, "last_heartbeat_ms": w.last_heartbeat_ms, "ingest": w.ingest,
        })).collect::<Vec<_>>(),
        "jobs": {"queued": jobs.queued, "running": jobs.running, "completed": jobs.completed, "failed": jobs.failed, "cancelled": jobs.cancelled},
    })
}

pub(crate) async fn cluster_status(a: ListArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = client.cluster_status(pb::ClusterStatusRequest { no_forward: false, self_only: false }).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", cluster_json(&r));
    } else {
        print!("{}", render::cluster_text(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn membership_json(r: &pb::MembershipResponse) -> Value {
    json!({"voters": r.voters, "learners": r.learners, "leader": r.leader, "log_index": r.log_index})
}

fn ids(v: &[u64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

pub(crate) async fn add_member(a: AddMemberArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let req = pb::AddMemberRequest { id: a.id, addr: a.addr.trim().to_string(), timeout_ms: a.timeout.max(1) * 1000 };
    let deadline = Duration::from_secs(a.timeout.max(1) + 60);
    // Each coordinator is tried once: the change itself is not retried blindly.
    let r = client.tries(1).add_member(req.clone(), deadline).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", membership_json(&r));
    } else {
        println!("coordinator {} ({}) is a voting member; voters: {}; learners: {}", a.id, req.addr, ids(&r.voters), ids(&r.learners));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn remove_member(a: RemoveMemberArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let id = a.id;
    let r = client
        .tries(1)
        .remove_member(pb::RemoveMemberRequest { id }, Duration::from_secs(90))
        .await
        .map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", membership_json(&r));
    } else {
        let was_leader = if r.leader == id { " (it was the leader; the others elect a new one)" } else { "" };
        println!("coordinator {id} removed{was_leader}; voters: {}; learners: {}. Stop its process now.", ids(&r.voters), ids(&r.learners));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn drain(a: DrainArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let req = pb::DrainWorkerRequest { name: a.name.clone(), hand_back: a.hand_back, undo: a.undo };
    let r = client.drain_worker(req).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", json!({"worker": a.name, "draining": r.draining, "leases_returned": r.leases_returned}));
    } else if !r.draining {
        println!("{} takes new shards again", a.name);
    } else if a.hand_back && r.leases_returned == 0 {
        println!("{} is draining: it takes no new shards; it held no lease", a.name);
    } else if a.hand_back {
        println!(
            "{} is draining: it takes no new shards; {} lease{} handed back (those shards resume on other workers)",
            a.name,
            r.leases_returned,
            if r.leases_returned == 1 { "" } else { "s" }
        );
    } else {
        println!("{} is draining: it takes no new shards and finishes the ones it holds", a.name);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// `user` (submit, read, live, cancel) or `admin` (everything).
    #[arg(long, value_parser = ["user", "admin"])]
    role: String,
    /// Who the token is for (appears in logs instead of the token).
    #[arg(long)]
    name: String,
}

pub(crate) fn token(a: TokenArgs) -> Result<ExitCode> {
    use std::io::Read;
    if a.name.is_empty() || a.name.contains(char::is_whitespace) {
        return Err(anyhow!("--name must be one word without spaces"));
    }
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut raw)).context("cannot read /dev/urandom for a random token")?;
    let t: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    println!("token: {t}");
    println!("{} {} {}", a.role, a.name, panoptes_coordinator::auth::token_hash_hex(&t));
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub(crate) struct CertsArgs {
    /// Directory to write ca.pem, ca.key, node.pem, node.key, client.pem and
    /// client.key into (created if missing).
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Host names and IP addresses the node certificate is valid for, besides
    /// localhost, 127.0.0.1 and ::1 (every address clients use to reach a
    /// coordinator must be named), comma-separated.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// Years the certificates stay valid.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=50))]
    years: i32,
    /// Overwrite files that already exist in --out.
    #[arg(long)]
    force: bool,
    /// Print the written paths as JSON.
    #[arg(long)]
    json: bool,
}

/// A development CA (self-signed) and two certificates it signs. The keys are
/// ECDSA P-256, written with mode 0600.
pub(crate) fn certs(a: CertsArgs) -> Result<ExitCode> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyPair, KeyUsagePurpose as Ku};
    let names = ["ca.pem", "ca.key", "node.pem", "node.key", "client.pem", "client.key"];
    if !a.force {
        if let Some(n) = names.iter().find(|n| a.out.join(n).exists()) {
            return Err(anyhow!("{} already exists: pass --force to replace the certificates in {} (nodes and clients using the old CA will then be refused)", a.out.join(n).display(), a.out.display()));
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let year = 1970 + (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() / 31_556_952) as i32;
    let validity = |p: &mut CertificateParams, cn: &str| {
        p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + a.years, 1, 1);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, "Panoptes development");
    };
    let err = |e: rcgen::Error| anyhow!("cannot make the certificates: {e}");

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::new()).map_err(err)?;
    // A name of its own: two CAs made by this command are told apart by
    // TLS stacks that pick the issuer by name (OpenSSL, in curl).
    let made = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    validity(&mut ca, &format!("Panoptes development CA {:x}{:08x}", made.as_secs(), made.subsec_nanos()));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in a.hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        if !hosts.iter().any(|x| x == h) {
            hosts.push(h.to_string());
        }
    }
    let node_key = KeyPair::generate().map_err(err)?;
    let mut node = CertificateParams::new(hosts.clone()).map_err(|e| anyhow!("bad --hosts entry: {e}"))?;
    validity(&mut node, "panoptes-node");
    node.key_usages = vec![Ku::DigitalSignature];
    node.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
    let node_cert = node.signed_by(&node_key, &issuer).map_err(err)?;

    let client_key = KeyPair::generate().map_err(err)?;
    let mut client = CertificateParams::new(Vec::new()).map_err(err)?;
    validity(&mut client, "panoptes-client");
    client.key_usages = vec![Ku::DigitalSignature];
    client.extended_key_usages = vec![Eku::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer).map_err(err)?;

    let files = [
        ("ca.pem", ca_cert.pem(), false),
        ("ca.key", ca_key.serialize_pem(), true),
        ("node.pem", node_cert.pem(), false),
        ("node.key", node_key.serialize_pem(), true),
        ("client.pem", client_cert.pem(), false),
        ("client.key", client_key.serialize_pem(), true),
    ];
    for (name, text, secret) in &files {
        let p = a.out.join(name);
        write_file(&p, text.as_bytes(), *secret).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let dir = std::fs::canonicalize(&a.out).unwrap_or(a.out.clone());
    let at = |n: &str| dir.join(n).display().to_string();
    if a.json {
        let v = json!({"ca": at("ca.pem"), "ca_key": at("ca.key"), "node_cert": at("node.pem"), "node_key": at("node.key"),
            "client_cert": at("client.pem"), "client_key": at("client.key"), "hosts": hosts});
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("wrote a development CA and certificates to {} (node certificate valid for {})", dir.display(), hosts.join(", "));
    println!("\nIn every node's cluster.toml (coordinators and workers):\n");
    println!("[security]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n# require_client_cert = true   # then the CLI needs --tls-cert/--tls-key too", at("node.pem"), at("node.key"), at("ca.pem"));
    println!("\nFor the CLI:\n\n  export PANOPTES_TLS_CA={}\n  export PANOPTES_TLS_CERT={} PANOPTES_TLS_KEY={}", at("ca.pem"), at("client.pem"), at("client.key"));
    println!("\nKeep ca.key private: it signs certificates the cluster trusts.");
    Ok(ExitCode::SUCCESS)
}

/// Write a file; a secret one (a private key) is readable by its owner only.
fn write_file(p: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if secret {
        o.mode(0o600);
    }
    o.open(p)?.write_all(bytes)
}
