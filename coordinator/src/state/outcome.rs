//! What applying a command gives back besides the new state: a typed
//! rejection when it does not apply ([`Rejection`], whose kind is also the
//! metric label), and the lease events it caused ([`LeaseEvent`]), which the
//! store logs as fields (the chaos checker reads them: `tests/src/chaos.rs`).
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a command did not apply (nothing changed).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RejectionKind {
    /// The job, shard or worker named does not exist.
    Unknown,
    /// The lease named is no longer the shard's (it expired, moved or was
    /// handed back): its holder stops.
    Stale,
    /// The job or shard has already finished.
    Done,
    /// Not now: the resource is taken or held elsewhere; the same command
    /// may apply later.
    Busy,
    /// The command can never apply as given (frames outside the shard,
    /// results missing, a cut that leaves no work).
    Invalid,
}

impl RejectionKind {
    pub const ALL: [RejectionKind; 5] =
        [RejectionKind::Unknown, RejectionKind::Stale, RejectionKind::Done, RejectionKind::Busy, RejectionKind::Invalid];

    /// The metric label (`reason` of the refused-reports counter).
    pub fn label(self) -> &'static str {
        match self {
            RejectionKind::Unknown => "unknown",
            RejectionKind::Stale => "stale",
            RejectionKind::Done => "done",
            RejectionKind::Busy => "busy",
            RejectionKind::Invalid => "invalid",
        }
    }
}

/// A command that did not apply: its kind, and the message for the caller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

impl Rejection {
    pub fn new(kind: RejectionKind, message: impl Into<String>) -> Self {
        Rejection { kind, message: message.into() }
    }
    pub fn unknown(m: impl Into<String>) -> Self {
        Self::new(RejectionKind::Unknown, m)
    }
    pub fn stale(m: impl Into<String>) -> Self {
        Self::new(RejectionKind::Stale, m)
    }
    pub fn done(m: impl Into<String>) -> Self {
        Self::new(RejectionKind::Done, m)
    }
    pub fn busy(m: impl Into<String>) -> Self {
        Self::new(RejectionKind::Busy, m)
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(RejectionKind::Invalid, m)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a lease ended (other than by a split, which shortens it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// Its holder stopped renewing it.
    Expired,
    /// Handed back by a drain (`panoptes cluster drain --hand-back`).
    Drain,
    /// Handed back by a worker that is stopping.
    Leave,
    /// Its shard is done.
    Completed,
    /// Its holder reported an error: the shard waits for another attempt.
    Failed,
    /// Its job finished (cancelled, failed or completed) while it was held.
    JobEnded,
}

impl ReleaseReason {
    pub fn label(self) -> &'static str {
        match self {
            ReleaseReason::Expired => "expired",
            ReleaseReason::Drain => "drain",
            ReleaseReason::Leave => "leave",
            ReleaseReason::Completed => "completed",
            ReleaseReason::Failed => "failed",
            ReleaseReason::JobEnded => "job_ended",
        }
    }
}

/// A change to who holds which frames, as applied (every member applies the
/// same events in the same order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// `worker` holds frames `[from, to)` of the shard under `epoch`.
    Granted { job: u64, shard: u32, epoch: u64, worker: String, from: u64, to: u64 },
    /// The lease `epoch` ended.
    Released { job: u64, shard: u32, epoch: u64, reason: ReleaseReason },
    /// The lease `epoch` of `shard` now ends at `at`; its frames `[at, to)`
    /// are the new shard `new_shard`, leased to `worker` under `new_epoch`.
    Split { job: u64, shard: u32, epoch: u64, at: u64, new_shard: u32, new_epoch: u64, worker: String, to: u64 },
}

impl LeaseEvent {
    /// One log line with the event's fields (`lease=grant|release|split`
    /// first, then `key=value`; read by `tests/src/chaos.rs`).
    pub fn log(&self) {
        match self {
            LeaseEvent::Granted { job, shard, epoch, worker, from, to } => {
                tracing::info!(lease = %"grant", job, shard, epoch, worker = %worker, from, to, "lease granted")
            }
            LeaseEvent::Released { job, shard, epoch, reason } => {
                tracing::info!(lease = %"release", job, shard, epoch, reason = %reason.label(), "lease ended")
            }
            LeaseEvent::Split { job, shard, epoch, at, new_shard, new_epoch, worker, to } => {
                tracing::info!(lease = %"split", job, shard, epoch, at, new_shard, new_epoch, worker = %worker, from = at, to, "lease split")
            }
        }
    }
}
