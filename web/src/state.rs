//! The server's state ([`Web`]), the caller's credentials ([`Caller`]),
//! and `rpc!`, which calls the cluster with them.
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::http::header;
use panoptes_client::{Authorization, Client};

use crate::relay;

/// The server's state: the coordinators to call.
#[derive(Clone)]
pub struct Web {
    pub(crate) client: Client,
    /// Makes each submission's idempotency key unique within this process.
    pub(crate) seq: Arc<AtomicU64>,
    /// Browser streams being relayed to their live job's RTMP URL, by job id.
    pub(crate) relays: relay::Relays,
    /// Host names answered besides IP addresses and localhost (`guard` in `routes.rs`).
    pub(crate) hosts: Arc<Vec<String>>,
}

/// The browser's credentials for one HTTP request: its `Authorization`
/// header, passed through unchanged to every gRPC call made for that request
/// (the coordinator checks it). Never stored beyond the request, never logged.
#[derive(Clone, Default)]
pub struct Caller(Authorization);

impl Caller {
    /// The caller's `authorization`, for the gRPC calls made for it.
    pub(crate) fn auth(&self) -> Authorization {
        self.0.clone()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        // A header that cannot be gRPC metadata is dropped: the call is then
        // refused as unauthenticated, which is the right answer for it.
        let v = parts.headers.get(header::AUTHORIZATION).and_then(|h| tonic::metadata::MetadataValue::try_from(h.as_bytes()).ok());
        Ok(Caller(Authorization::from_header(v)))
    }
}

/// One call of the cluster's API ([`Client`]), made with the HTTP
/// caller's credentials, its error as an [`ApiError`](crate::ApiError).
macro_rules! rpc {
    ($web:expr, $caller:expr, $method:ident, $req:expr) => {{
        $web.client.with_auth($caller.auth()).$method($req).await.map_err(ApiError::from)
    }};
}
pub(crate) use rpc;
