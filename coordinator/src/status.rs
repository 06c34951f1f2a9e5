//! The one place where a command's outcome becomes a gRPC status: what a
//! caller (the CLI, a worker, the web server) can do about a refusal is
//! decided by its kind, the same for every call.
use tonic::Status;

use crate::state::command::Response;
use crate::state::outcome::{Rejection, RejectionKind};

/// A command the state machine refused: not found (the job, shard or worker
/// named does not exist), failed precondition (the lease moved on, or the
/// job or shard finished: stop), unavailable (busy now: retry), invalid
/// argument (it can never apply as given).
pub fn rejected(r: Rejection) -> Status {
    match r.kind {
        RejectionKind::Unknown => Status::not_found(r.message),
        RejectionKind::Stale | RejectionKind::Done => Status::failed_precondition(r.message),
        RejectionKind::Busy => Status::unavailable(format!("{}; retry", r.message)),
        RejectionKind::Invalid => Status::invalid_argument(r.message),
    }
}

/// An outcome the command cannot have: a bug, said as one.
pub fn unexpected(other: &Response) -> Status {
    Status::internal(format!("unexpected outcome {other:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_kind_decides_the_code() {
        let code = |r: Rejection| rejected(r).code();
        assert_eq!(code(Rejection::unknown("no job 7")), tonic::Code::NotFound);
        assert_eq!(code(Rejection::stale("lease moved")), tonic::Code::FailedPrecondition);
        assert_eq!(code(Rejection::done("finished")), tonic::Code::FailedPrecondition);
        assert_eq!(code(Rejection::invalid("frames outside the shard")), tonic::Code::InvalidArgument);
        let busy = rejected(Rejection::busy("slot taken"));
        assert_eq!((busy.code(), busy.message()), (tonic::Code::Unavailable, "slot taken; retry"));
    }
}
