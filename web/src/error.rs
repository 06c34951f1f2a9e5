//! [`ApiError`]: the JSON error answer, and how gRPC errors map to HTTP
//! statuses; JSON responses.
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tonic::Code;

/// An error answer: `{"error": message}` with its status code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let status = match s.code() {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            // No or an unknown token / a user token on an admin call / over the rate limit.
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unknown if transport_failure(&s) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match s.code() {
            // The coordinators could not be reached at all (a transport error)…
            Code::Unavailable | Code::Unknown if transport_failure(&s) => {
                format!("no coordinator reachable, retry in a moment (is one running?): {}", s.message())
            }
            // …or one answered that it cannot serve this now (no leader, no free worker…): its message says why.
            Code::Unavailable => s.message().to_string(),
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::Unimplemented => s.message().to_string(),
            Code::Unauthenticated => format!("{} (send `Authorization: Bearer TOKEN`; see docs/SECURITY.md)", s.message()),
            Code::PermissionDenied | Code::ResourceExhausted => s.message().to_string(),
            c => format!("{c:?}: {}", s.message()),
        };
        Self::new(status, message)
    }
}

/// A failure to reach a coordinator, not an answer from one.
fn transport_failure(s: &tonic::Status) -> bool {
    let m = s.message().to_ascii_lowercase();
    m.contains("transport") || m.contains("connect") || m.contains("connection")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }))
    }
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub(crate) type ApiResult = Result<Response, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::FailedPrecondition, 409),
            (Code::Unimplemented, 501),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::Internal, 500),
        ];
        for (code, http) in cases {
            assert_eq!(ApiError::from(tonic::Status::new(code, "x")).status.as_u16(), http, "{code:?}");
        }
    }
}
