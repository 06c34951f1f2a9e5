//! Who may call what: bearer tokens for users and admins, the cluster secret
//! for workers and coordinators, and a per-client token-bucket rate limit.
//!
//! This module holds the decisions (pure, unit-tested). `Auth::check` takes
//! the gRPC method path and the request metadata and answers with the caller
//! or the `Status` to refuse with.
//!
//! Decisions (see docs/SECURITY.md):
//! - `panoptes.v1.Panoptes`: `user` token for submit/read/live/cancel,
//!   `admin` token for Prune, ClusterStatus, DrainWorker, AddMember,
//!   RemoveMember. An admin token works everywhere a user token does.
//! - `panoptes.worker.v1.WorkerApi` and `panoptes.raft.v1.RaftService`: the
//!   cluster secret in `x-panoptes-cluster-secret`. Tokens do not work
//!   there and the secret does not work as a token.
//! - gRPC health and reflection stay open: they reveal nothing beyond the
//!   service names (which are public in the .proto files) and load
//!   balancers probe health without credentials.
//!
//! Tokens and secrets are never logged: only the token's NAME from the
//! tokens file appears in logs.

use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// The metadata header that carries the cluster secret (shared with the senders).
pub use panoptes_proto::credentials::SECRET_HEADER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

/// What a method needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    User,
    Admin,
    ClusterSecret,
}

/// Who made a call that was let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Token { role: Role, name: String },
    Cluster,
}

impl Caller {
    /// The owner a job submitted by this caller records: the token's name,
    /// or "" on a cluster without tokens.
    pub fn owner(&self) -> &str {
        match self {
            Caller::Token { name, .. } => name,
            Caller::Anonymous | Caller::Cluster => "",
        }
    }

    /// Whether this caller may see the secrets of a job owned by `owner`
    /// (its source URL as given, a live job's push URL with its stream key):
    /// admins, the owner, and anyone on a cluster without tokens (one user).
    pub fn sees_secrets_of(&self, owner: &str) -> bool {
        match self {
            Caller::Token { role: Role::Admin, .. } => true,
            Caller::Token { name, .. } => name == owner,
            Caller::Anonymous | Caller::Cluster => true,
        }
    }

    /// Who called, as the gate left it in the request (see [`GateService`]);
    /// a server without a gate lets everyone through as `Anonymous`.
    pub fn of<T>(req: &tonic::Request<T>) -> Caller {
        req.extensions().get::<Caller>().cloned().unwrap_or(Caller::Anonymous)
    }
}

/// The access a gRPC method path (`/package.Service/Method`) requires.
pub fn required(path: &str) -> Access {
    let path = path.trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    match service {
        "panoptes.raft.v1.RaftService" | "panoptes.worker.v1.WorkerApi" => Access::ClusterSecret,
        "panoptes.v1.Panoptes" => match method {
            "Prune" | "ClusterStatus" | "DrainWorker" | "AddMember" | "RemoveMember" => Access::Admin,
            _ => Access::User,
        },
        s if s.starts_with("grpc.health.") || s.starts_with("grpc.reflection.") => Access::Open,
        // Unknown services: the strictest class; tonic answers UNIMPLEMENTED
        // after the check anyway.
        _ => Access::Admin,
    }
}

struct Entry {
    role: Role,
    name: String,
    hash: [u8; 32],
}

/// The parsed tokens file.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl Tokens {
    /// Parses `ROLE NAME SHA256-HEX` lines; blank lines and `#` comments
    /// are skipped.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [role, name, hex] = parts[..] else {
                return Err(format!("tokens file line {}: expected `ROLE NAME SHA256-HEX` (make one with `panoptes token`)", i + 1));
            };
            let role = match role {
                "user" => Role::User,
                "admin" => Role::Admin,
                other => return Err(format!("tokens file line {}: role '{other}' is unknown: use user or admin", i + 1)),
            };
            let hash = parse_hex32(hex)
                .ok_or_else(|| format!("tokens file line {}: the hash must be 64 hex digits (the SHA-256 of the token)", i + 1))?;
            entries.push(Entry { role, name: name.to_string(), hash });
        }
        Ok(Tokens { entries })
    }

    pub fn load(path: &std::path::Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        Tokens::parse(&text)
    }

    /// The role and name of a presented token. Every entry is compared, in
    /// constant time, so timing does not tell which entry nearly matched.
    pub fn lookup(&self, token: &str) -> Option<(Role, &str)> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if ct_eq(&presented, &e.hash) && found.is_none() {
                found = Some((e.role, e.name.as_str()));
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

// Names only: hashes stay out of debug output (and so out of logs).
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| (e.role, &e.name))).finish()
    }
}

/// The lowercase hex SHA-256 of a token: the third field of a tokens line.
pub fn token_hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equality whose time does not depend on where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The access rules of one coordinator. With neither tokens nor secret
/// configured every call is let through (the plain development mode).
pub struct Auth {
    tokens: Option<Tokens>,
    /// SHA-256 of the cluster secret (compared hashed, in constant time).
    secret: Option<[u8; 32]>,
}

impl Auth {
    pub fn new(tokens: Option<Tokens>, secret: Option<&str>) -> Auth {
        Auth { tokens, secret: secret.map(|s| Sha256::digest(s.trim().as_bytes()).into()) }
    }

    /// Reads the files named in `[security]`; an unset one leaves that part off.
    pub fn from_files(tokens_file: Option<&std::path::Path>, cluster_secret_file: Option<&std::path::Path>) -> Result<Auth, String> {
        let tokens = tokens_file.map(Tokens::load).transpose()?;
        let secret = match cluster_secret_file {
            None => None,
            Some(f) => {
                let s = std::fs::read_to_string(f).map_err(|e| format!("cannot read cluster secret file {}: {e}", f.display()))?;
                if s.trim().is_empty() {
                    return Err(format!("cluster secret file {} is empty: write a long random string into it", f.display()));
                }
                Some(s)
            }
        };
        Ok(Auth::new(tokens, secret.as_deref()))
    }

    /// Whether a call to `path` with `metadata` may go on.
    pub fn check(&self, path: &str, metadata: &MetadataMap) -> Result<Caller, Status> {
        match required(path) {
            Access::Open => Ok(Caller::Anonymous),
            Access::ClusterSecret => {
                let Some(want) = &self.secret else { return Ok(Caller::Cluster) };
                let got = metadata.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
                match got {
                    Some(s) if ct_eq(&Sha256::digest(s.trim().as_bytes()), want) => Ok(Caller::Cluster),
                    Some(_) => Err(Status::new(Code::Unauthenticated, "the cluster secret is wrong: use the one in security.cluster_secret_file")),
                    None => Err(Status::new(
                        Code::Unauthenticated,
                        "this service is cluster-internal: present the cluster secret (security.cluster_secret_file)",
                    )),
                }
            }
            need @ (Access::User | Access::Admin) => self.check_token(metadata, need),
        }
    }

    /// The bearer token in `metadata`, checked for `need` (User or Admin).
    /// Without a tokens file every caller passes.
    pub fn check_token(&self, metadata: &MetadataMap, need: Access) -> Result<Caller, Status> {
        let Some(tokens) = &self.tokens else { return Ok(Caller::Anonymous) };
        let bearer = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(token) = bearer else {
            return Err(Status::new(
                Code::Unauthenticated,
                "no token: pass `authorization: Bearer TOKEN` (CLI: --token or PANOPTES_TOKEN)",
            ));
        };
        let Some((role, name)) = tokens.lookup(token) else {
            return Err(Status::new(Code::Unauthenticated, "unknown token: ask an admin for one (`panoptes token`)"));
        };
        if need == Access::Admin && role != Role::Admin {
            return Err(Status::new(Code::PermissionDenied, format!("token '{name}' has role user; this call needs an admin token")));
        }
        Ok(Caller::Token { role, name: name.to_string() })
    }
}

/// A per-client rate limit: `per_s` calls a second sustained, `burst` at
/// once (governor's GCRA, which is a token bucket refilled continuously),
/// keyed by client. Idle clients are forgotten once there are many.
pub struct RateLimiter<C: governor::clock::Clock = governor::clock::DefaultClock> {
    limiter: Option<Keyed<C>>,
    clock: C,
}

type Keyed<C> = governor::RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    C,
    governor::middleware::NoOpMiddleware<<C as governor::clock::Clock>::Instant>,
>;

impl RateLimiter {
    /// `per_s == 0` turns the limit off.
    pub fn new(per_s: u32, burst: u32) -> RateLimiter {
        RateLimiter::with_clock(per_s, burst, governor::clock::DefaultClock::default())
    }
}

impl<C: governor::clock::Clock + Clone> RateLimiter<C> {
    fn with_clock(per_s: u32, burst: u32, clock: C) -> Self {
        let limiter = std::num::NonZeroU32::new(per_s).map(|per_s| {
            let burst = std::num::NonZeroU32::new(burst.max(1)).expect("at least 1");
            governor::RateLimiter::new(governor::Quota::per_second(per_s).allow_burst(burst), Default::default(), clock.clone())
        });
        RateLimiter { limiter, clock }
    }

    /// Takes one call from `client`'s allowance, or answers
    /// RESOURCE_EXHAUSTED saying when to retry.
    pub fn take(&self, client: &str) -> Result<(), Status> {
        let Some(l) = &self.limiter else { return Ok(()) };
        // Keep memory bounded: forget idle clients (their allowance is whole).
        if l.len() > 10_000 {
            l.retain_recent();
        }
        l.check_key(&client.to_string()).map_err(|not_until| {
            let wait_ms = not_until.wait_time_from(self.clock.now()).as_millis().max(1);
            Status::new(Code::ResourceExhausted, format!("rate limit reached: retry in {wait_ms} ms"))
        })
    }
}

/// What every served call passes through: the access check, then the rate
/// limit (cluster-internal calls are exempt from the limit).
pub struct Gate {
    pub auth: Auth,
    pub limiter: RateLimiter,
}

impl Gate {
    /// The caller, if it may make this call now.
    fn admit(&self, path: &str, metadata: &MetadataMap, peer: Option<std::net::SocketAddr>) -> Result<Caller, Status> {
        let caller = self.auth.check(path, metadata).inspect_err(|s| {
            // The refusal reason only: never the presented token or secret.
            tracing::debug!(path, peer = ?peer, code = ?s.code(), "call refused");
        })?;
        let client = match &caller {
            Caller::Cluster => return Ok(caller),
            Caller::Token { name, .. } => format!("token:{name}"),
            Caller::Anonymous => peer.map(|p| format!("ip:{}", p.ip())).unwrap_or_else(|| "anonymous".into()),
        };
        self.limiter.take(&client)?;
        Ok(caller)
    }
}

/// A tower layer putting a `Gate` in front of every service of a tonic
/// server; `None` lets every call through (plain mode).
#[derive(Clone)]
pub struct GateLayer(pub Option<std::sync::Arc<Gate>>);

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = GateService<S>;
    fn layer(&self, inner: S) -> GateService<S> {
        GateService { inner, gate: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Option<std::sync::Arc<Gate>>,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for GateService<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>, Response = tonic::codegen::http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Admitted calls go on with their [`Caller`] in the request's
    /// extensions, where handlers find it ([`Caller::of`]).
    fn call(&mut self, mut req: tonic::codegen::http::Request<B>) -> Self::Future {
        let Some(gate) = &self.gate else { return Box::pin(self.inner.call(req)) };
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let ext = req.extensions();
        let peer = ext
            .get::<TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .or_else(|| ext.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr()));
        let metadata = MetadataMap::from_headers(req.headers().clone());
        match gate.admit(req.uri().path(), &metadata, peer) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn md(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    fn auth() -> Auth {
        let text = format!("# comment\nuser alice {}\nadmin root {}\n", token_hash_hex("u-tok"), token_hash_hex("a-tok"));
        Auth::new(Some(Tokens::parse(&text).unwrap()), Some("s3cret\n"))
    }

    #[test]
    fn methods_are_classified() {
        assert_eq!(required("/panoptes.v1.Panoptes/Submit"), Access::User);
        assert_eq!(required("/panoptes.v1.Panoptes/Cancel"), Access::User);
        assert_eq!(required("/panoptes.v1.Panoptes/DrainWorker"), Access::Admin);
        assert_eq!(required("/panoptes.worker.v1.WorkerApi/Register"), Access::ClusterSecret);
        assert_eq!(required("/panoptes.raft.v1.RaftService/Vote"), Access::ClusterSecret);
        assert_eq!(required("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(required("/other.Svc/X"), Access::Admin);
    }

    #[test]
    fn tokens_and_roles() {
        let a = auth();
        let submit = "/panoptes.v1.Panoptes/Submit";
        let drain = "/panoptes.v1.Panoptes/DrainWorker";
        assert_eq!(a.check(submit, &md(&[])).unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(a.check(submit, &md(&[("authorization", "Bearer nope")])).unwrap_err().code(), Code::Unauthenticated);
        assert!(a.check(submit, &md(&[("authorization", "Bearer u-tok")])).is_ok());
        assert_eq!(a.check(drain, &md(&[("authorization", "Bearer u-tok")])).unwrap_err().code(), Code::PermissionDenied);
        assert!(a.check(drain, &md(&[("authorization", "Bearer a-tok")])).is_ok());
        // The secret is not a token, and a token is not the secret.
        assert_eq!(a.check(submit, &md(&[("authorization", "Bearer s3cret")])).unwrap_err().code(), Code::Unauthenticated);
        let reg = "/panoptes.worker.v1.WorkerApi/Register";
        assert_eq!(a.check(reg, &md(&[("authorization", "Bearer a-tok")])).unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(a.check(reg, &md(&[(SECRET_HEADER, "a-tok")])).unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(a.check(reg, &md(&[(SECRET_HEADER, "s3cret")])).unwrap(), Caller::Cluster);
        // Refusals never echo what was presented.
        let e = a.check(submit, &md(&[("authorization", "Bearer nope")])).unwrap_err();
        assert!(!e.message().contains("nope"));
    }

    #[test]
    fn plain_mode_lets_everything_through() {
        let a = Auth::new(None, None);
        assert!(a.check("/panoptes.v1.Panoptes/RemoveMember", &md(&[])).is_ok());
        assert!(a.check("/panoptes.raft.v1.RaftService/Vote", &md(&[])).is_ok());
    }

    #[test]
    fn bad_tokens_files_say_what_is_wrong() {
        assert!(Tokens::parse("root abc\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse(&format!("boss x {}\n", token_hash_hex("t"))).unwrap_err().contains("role"));
        assert!(Tokens::parse("user x 12zz\n").unwrap_err().contains("64 hex"));
    }

    #[test]
    fn bucket_refills_and_says_when_to_retry() {
        let clock = governor::clock::FakeRelativeClock::default();
        let r = RateLimiter::with_clock(10, 2, clock.clone());
        assert!(r.take("c").is_ok());
        assert!(r.take("c").is_ok());
        let e = r.take("c").unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.message().contains("retry in 100 ms"), "{}", e.message());
        assert!(r.take("other").is_ok(), "allowances are per client");
        clock.advance(Duration::from_millis(100));
        assert!(r.take("c").is_ok());
        assert!(r.take("c").is_err(), "one call a tenth of a second, sustained");
        assert!(RateLimiter::new(0, 0).take("c").is_ok());
    }
}

/// The caller's `authorization` metadata, carried onto the calls a member
/// makes on its behalf (forwarding to the leader, probing the other
/// members), so that they pass the same token check the caller passed here
/// (`CallerAuth::apply`: the client crate's, as the CLI and web send it).
pub type CallerAuth = panoptes_client::Authorization;

pub(crate) fn caller_auth(m: &tonic::metadata::MetadataMap) -> CallerAuth {
    CallerAuth::from_header(m.get("authorization").cloned())
}
