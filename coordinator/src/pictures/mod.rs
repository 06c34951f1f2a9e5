//! Stored pictures, off the consensus path.
//!
//! A worker's report carries the pictures of its frames to the leader. The
//! leader keeps them in its own [`PictureStore`] and sends them to every
//! other voter (`RaftService/PutPictures`); once a majority of the voters
//! (itself included) hold them durably, it proposes the report with a small
//! [`PictureRef`] per picture instead of the bytes. So an acknowledged
//! frame's picture survives the loss of any minority of coordinators (and of
//! the worker, which is answered only after the commit), while the Raft log,
//! the state machine and its snapshots carry ~24 bytes per picture.
//!
//! A member that lacks a picture it has a reference for (it was down, it
//! joined later, it installed a snapshot, a disk lost a segment) fetches it
//! from its peers (`RaftService/GetPictures`): at once when it is asked for
//! it, and in the background (`Pictures::repair_loop` in `picture_copies.rs`), which also deletes
//! the pictures of jobs that no longer exist.
//!
//! With `[object_store]` configured, pictures go to an S3-compatible object
//! store instead ([`object::ObjectPictures`]): the leader puts them there
//! before it proposes the report, every member reads them from there, and
//! nothing is sent between coordinators.
pub mod object;
pub mod store;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::command::{FrameImage, PictureRef};
use object::ObjectPictures;
use store::PictureStore;

/// Where the pictures are, as applying a deletion or a trim sees it: this
/// node's own copies, or the object store's (deleted in the background; a
/// failure leaves objects that the next trim, or the repair sweep of deleted
/// jobs, deletes).
#[derive(Clone)]
pub enum PictureHome {
    Local(Arc<PictureStore>),
    Object(Arc<ObjectPictures>),
}

impl PictureHome {
    pub fn delete_job(&self, job: u64) {
        match self {
            PictureHome::Local(store) => Self::warn_on(job, store.delete_job(job)),
            PictureHome::Object(o) => Self::delete_objects(o, job, u64::MAX),
        }
    }

    pub fn trim(&self, job: u64, before: u64) {
        match self {
            PictureHome::Local(store) => Self::warn_on(job, store.trim(job, before)),
            PictureHome::Object(o) => Self::delete_objects(o, job, before),
        }
    }

    fn warn_on(job: u64, r: std::io::Result<u64>) {
        if let Err(e) = r {
            tracing::warn!(job_id = job, error = %e, "deleting pictures failed; repair collects them later");
        }
    }

    /// In the background: an apply does not wait on the network.
    fn delete_objects(o: &Arc<ObjectPictures>, job: u64, before: u64) {
        let o = o.clone();
        tokio::spawn(async move {
            match o.delete_below(job, before).await {
                Ok(n) => tracing::debug!(job_id = job, objects = n, "pictures deleted from the object store"),
                Err(e) => tracing::warn!(job_id = job, error = %e, "deleting pictures from the object store failed; the next trim or sweep tries again"),
            }
        });
    }
}

/// One GetPictures call asks for (and is answered) at most this many.
pub(crate) const FETCH_BATCH: usize = 32;

/// `PutPictures`: keep these (frame, lease epoch, picture) of `job`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PutPictures {
    pub job: u64,
    pub pictures: Vec<(u64, u64, FrameImage)>,
}

/// `GetPictures`: the pictures of `job` these references name, those held.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetPictures {
    pub job: u64,
    pub wanted: Vec<(u64, PictureRef)>,
}

/// Answer a peer's `PutPictures`.
pub fn serve_put(store: &PictureStore, msg: PutPictures) -> Result<(), String> {
    let refs: Vec<(u64, u64, &FrameImage)> = msg.pictures.iter().map(|(f, e, i)| (*f, *e, i)).collect();
    store.put(msg.job, &refs, true).map(|_| ()).map_err(|e| format!("cannot store pictures: {e}"))
}

/// Answer a peer's `GetPictures`: the wanted pictures this node holds.
pub fn serve_get(store: &PictureStore, msg: GetPictures) -> Result<Vec<(u64, u64, FrameImage)>, String> {
    let mut out = Vec::new();
    for (frame, r) in msg.wanted.iter().take(FETCH_BATCH * 4) {
        if let Ok(Some(img)) = store.get(msg.job, *frame, r) {
            out.push((*frame, r.epoch, img));
        }
    }
    Ok(out)
}
