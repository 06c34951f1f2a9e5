//! `panoptes-client`: the user API of a Panoptes cluster, as every program
//! of this project calls it (the `panoptes` CLI, the web server).
//!
//! - [`Client`]: any coordinator of the cluster, failing over to the next
//!   one (`panoptes_proto::failover`), with the caller's credentials
//!   ([`Authorization`]) on every call, one typed method per RPC.
//! - [`views`]: the JSON objects `panoptes … --json` prints and the web API
//!   answers, one shape each.
//! - [`explain`]: a failed call as a message that says what to do next.
use panoptes_proto::api::panoptes_client::PanoptesClient;
use panoptes_proto::failover::Coordinators;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

pub use panoptes_proto::api as pb;

pub mod views;

/// The largest message a client takes (an annotated frame, a page of results).
const MAX_DECODING: usize = 256 << 20;
/// The largest message a client sends (a submitted request).
const MAX_ENCODING: usize = 64 << 20;

/// The `authorization` a call carries: `Bearer TOKEN` (a user's or an
/// admin's token, `panoptes token`), or nothing (a cluster without tokens).
/// Never printed.
#[derive(Clone, Default)]
pub struct Authorization(Option<MetadataValue<Ascii>>);

impl Authorization {
    /// `Bearer TOKEN`. Refuses a token that cannot be a header value.
    pub fn bearer(token: &str) -> Result<Self, String> {
        let v = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| "the token has characters a header cannot carry: use the one `panoptes token` printed".to_string())?;
        Ok(Authorization(Some(v)))
    }

    /// An `authorization` header passed on as it came (the web server
    /// passes a browser's on to the coordinator, which checks it).
    pub fn from_header(v: Option<MetadataValue<Ascii>>) -> Self {
        Authorization(v)
    }

    /// Add it to a gRPC request.
    pub fn apply<T>(&self, req: &mut Request<T>) {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Authorization(set)" } else { "Authorization(none)" })
    }
}

/// A cluster's user API. Cheap to clone; nothing connects until a call.
#[derive(Clone)]
pub struct Client {
    coords: Coordinators,
    auth: Authorization,
    /// Tries per coordinator a call gets (see [`Client::tries`]).
    per_coordinator: usize,
}

/// One unary (or server-streaming) RPC as a method of [`Client`].
macro_rules! rpc {
    ($(#[$doc:meta])* $name:ident => $method:ident($req:ty) -> $resp:ty) => {
        $(#[$doc])*
        pub async fn $name(&self, req: $req) -> Result<$resp, Status> {
            self.call(req, |mut c, r| async move { c.$method(r).await }).await
        }
    };
}

impl Client {
    /// `addrs`: `HOST:PORT` (or `http(s)://HOST:PORT`) of any coordinators
    /// of the cluster.
    pub fn new(addrs: &[String]) -> Result<Self, String> {
        Ok(Self::over(Coordinators::new(addrs)?))
    }

    /// A client over coordinators already set up.
    pub fn over(coords: Coordinators) -> Self {
        Client { coords, auth: Authorization::default(), per_coordinator: 2 }
    }

    /// The same client, its calls made with `auth`.
    pub fn with_auth(&self, auth: Authorization) -> Self {
        Client { auth, ..self.clone() }
    }

    /// The same client, each call tried up to `per_coordinator` times per
    /// coordinator (2 unless set): more for a submit that must get through
    /// an election, 1 for a membership change that must not be repeated
    /// blindly.
    pub fn tries(&self, per_coordinator: usize) -> Self {
        Client { per_coordinator: per_coordinator.max(1), ..self.clone() }
    }

    /// The coordinators' addresses, as given.
    pub fn addrs(&self) -> &[String] {
        self.coords.addrs()
    }

    /// How many tries a call gets: [`Client::tries`] round the
    /// coordinators (more while an election is under way:
    /// `panoptes_proto::failover`).
    fn attempts(&self) -> usize {
        self.coords.addrs().len() * self.per_coordinator
    }

    /// Make one call on a coordinator, with this client's credentials,
    /// failing over to the next coordinator when one is down or not leading.
    pub async fn call<Q, T, F, Fut>(&self, req: Q, mut f: F) -> Result<T, Status>
    where
        Q: Clone,
        F: FnMut(PanoptesClient<Channel>, Request<Q>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        self.coords
            .call(self.attempts(), |ch| {
                let mut r = Request::new(req.clone());
                self.auth.apply(&mut r);
                let c = PanoptesClient::new(ch).max_decoding_message_size(MAX_DECODING).max_encoding_message_size(MAX_ENCODING);
                f(c, r)
            })
            .await
    }

    rpc!(
        /// Submit a video (or a pull source) for analysis.
        submit => submit(pb::SubmitRequest) -> pb::SubmitResponse
    );
    rpc!(
        /// A job's state and progress.
        status => get_status(pb::JobRef) -> pb::JobStatus
    );
    rpc!(
        /// One page of a job's results.
        results => get_results(pb::ResultsRequest) -> pb::ResultsResponse
    );
    rpc!(
        /// A job's results as a stream (`follow`: until the job ends).
        stream_results => stream_results(pb::ResultsRequest) -> Streaming<pb::FrameResult>
    );
    rpc!(
        /// Every model's results on one frame.
        frame_results => get_frame_results(pb::FrameRef) -> pb::ResultsResponse
    );
    rpc!(
        /// A stored frame with its results drawn on it.
        annotated_frame => get_annotated_frame(pb::FrameRef) -> pb::AnnotatedFrame
    );
    rpc!(
        /// The alerts a job's rules recorded (job_id empty: every job's).
        alerts => list_alerts(pb::AlertsRequest) -> pb::AlertsResponse
    );
    rpc!(
        /// Add a zone to a running job.
        add_zone => add_zone(pb::AddZoneRequest) -> pb::JobStatus
    );
    rpc!(
        /// A job's timings and counters.
        metrics => get_metrics(pb::JobRef) -> pb::JobMetrics
    );
    rpc!(
        /// Finished jobs, newest first.
        videos => list_videos(pb::ListVideosRequest) -> pb::ListVideosResponse
    );
    rpc!(
        /// Cancel a job.
        cancel => cancel(pb::JobRef) -> pb::JobStatus
    );
    rpc!(
        /// A live RTMP push endpoint (a job that runs while it is pushed to).
        create_live => create_live_endpoint(pb::LiveRequest) -> pb::LiveEndpoint
    );
    rpc!(
        /// Delete finished jobs older than a cut-off, with their results.
        prune => prune(pb::PruneRequest) -> pb::PruneResponse
    );
    rpc!(
        /// The cluster's model registry.
        models => list_models(pb::ListModelsRequest) -> pb::ListModelsResponse
    );
    rpc!(
        /// Coordinators, workers and jobs as the cluster sees them.
        cluster_status => cluster_status(pb::ClusterStatusRequest) -> pb::ClusterStatusResponse
    );
    rpc!(
        /// Stop (or resume) giving a worker new shards.
        drain_worker => drain_worker(pb::DrainWorkerRequest) -> pb::DrainWorkerResponse
    );

    /// Add a coordinator to the cluster, waiting up to `timeout` for the
    /// change to commit.
    pub async fn add_member(&self, req: pb::AddMemberRequest, timeout: std::time::Duration) -> Result<pb::MembershipResponse, Status> {
        self.call(req, |mut c, mut r| {
            r.set_timeout(timeout);
            async move { c.add_member(r).await }
        })
        .await
    }

    /// Remove a coordinator from the cluster, waiting up to `timeout`.
    pub async fn remove_member(&self, req: pb::RemoveMemberRequest, timeout: std::time::Duration) -> Result<pb::MembershipResponse, Status> {
        self.call(req, |mut c, mut r| {
            r.set_timeout(timeout);
            async move { c.remove_member(r).await }
        })
        .await
    }
}

/// A failed call as a message that says what went wrong and what to do:
/// nothing reachable (is a coordinator running? TLS on one side only?), no
/// leader yet (retry), or the coordinator's own message for a refused call.
pub fn explain(s: &Status, addrs: &[String]) -> String {
    use panoptes_proto::failover::with_causes;
    use tonic::Code;
    match s.code() {
        // A coordinator answered, but no leader could take the call.
        Code::Unavailable if s.message().contains("leader") => format!("{} (retry in a moment)", s.message()),
        Code::Unavailable => format!(
            "no coordinator reachable at {} ({}). Is one running? Start one with `panoptes coordinator --id 1`, or point --coordinator at it; {}.",
            addrs.join(","),
            with_causes(s),
            panoptes_proto::tls::hint()
        ),
        // A plain-text client talking to a TLS server (or the reverse) sees garbage frames.
        Code::Internal | Code::Unknown | Code::Cancelled if s.message().contains("h2 protocol error") || s.message().contains("transport error") => {
            format!("cannot talk to the coordinator at {} ({}); {}.", addrs.join(","), with_causes(s), panoptes_proto::tls::hint())
        }
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => s.message().to_string(),
        _ => format!("{:?}: {}", s.code(), with_causes(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_becomes_a_bearer_header_and_is_never_printed() {
        let mut r = Request::new(());
        Authorization::bearer(" t0ken\n").unwrap().apply(&mut r);
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer t0ken");
        assert!(Authorization::bearer("bad\u{7f}token").is_err());
        assert_eq!(format!("{:?}", Authorization::bearer("secret").unwrap()), "Authorization(set)");
        let mut r = Request::new(());
        Authorization::default().apply(&mut r);
        assert!(r.metadata().get("authorization").is_none());
    }

    #[tokio::test]
    async fn nothing_listening_is_explained_with_what_to_do() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addrs = vec![format!("127.0.0.1:{port}")];
        let c = Client::new(&addrs).unwrap();
        let e = c.status(pb::JobRef { job_id: "job-1".into() }).await.unwrap_err();
        let m = explain(&e, c.addrs());
        assert!(m.contains("no coordinator reachable") && m.contains(&addrs[0]) && m.contains("panoptes coordinator"), "{m}");
    }
}
