//! The web page and the HTTP/JSON API of a coordinator.
//!
//! Every coordinator serves them on its own port (its gRPC port + 20000, or
//! a free one), over HTTPS with the coordinator's `security.tls_cert` and
//! `tls_key` when set (unless `security.web_plain_http`). The server is a gRPC client of the coordinators, its own
//! first and then the others (`panoptes_client::Client`), so
//! every route means exactly what the gRPC call it wraps means: same
//! validation, same forwarding to the leader. gRPC errors become JSON
//! `{"error": message}` with a status code ([`ApiError`]).
//!
//! The page (`/`) is one HTML file, one script and one stylesheet, embedded
//! in the binary: no build step. The API is described by `/api/openapi.json`
//! (hand-written, `assets/openapi.json`).
mod analytics;
mod api;
mod body;
mod error;
mod live;
mod relay;
mod routes;
mod server;
mod state;

pub use error::ApiError;
pub use panoptes_common::http::Limits;
pub use routes::router;
pub use server::{derived_http_addr, serve, serve_limited, serve_tls, start, WebTls};
pub use state::{Caller, Web};
