//! Every coordinator's copies of the stored pictures ([`Pictures`]): the
//! leader sends a report's pictures to the voters before it proposes the
//! report, a member fetches a picture it lacks from its peers, and a
//! background pass repairs what is missing and deletes what belongs to no
//! job. How pictures are kept on one node (or in an object store) is
//! `pictures/`; this module is the part that talks to the other members.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use panoptes_proto::credentials::ClusterSecret;
use panoptes_proto::raft::raft_service_client::RaftServiceClient;
use panoptes_proto::raft::RaftPayload;
use tonic::transport::Channel;
use tonic::Status;

use crate::pictures::object::ObjectPictures;
use crate::pictures::store::PictureStore;
use crate::pictures::{GetPictures, PictureHome, PutPictures, FETCH_BATCH};
use crate::raft::network::MAX_MESSAGE_SIZE;
use crate::raft::types::{NodeId, Raft};
use crate::state::command::{FrameImage, PictureRef};
use crate::store::StateReader;

/// How long the leader waits for a majority to hold a report's pictures.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);
/// The background repair: how often, and how many references it checks a pass.
const REPAIR_EVERY: Duration = Duration::from_secs(5);
const REPAIR_CHECKS: usize = 20_000;

pub struct Pictures {
    id: NodeId,
    pub store: Arc<PictureStore>,
    /// Pictures in an object store instead of on the coordinators.
    pub object: Option<Arc<ObjectPictures>>,
    raft: Raft,
    secret: ClusterSecret,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Pictures {
    pub fn new(id: NodeId, home: &PictureHome, store: Arc<PictureStore>, raft: Raft, secret: ClusterSecret) -> Pictures {
        let object = match home {
            PictureHome::Object(o) => Some(o.clone()),
            PictureHome::Local(_) => None,
        };
        Pictures { id, store, object, raft, secret, channels: Mutex::default() }
    }

    /// The other members: (id, address, voter?).
    fn peers(&self) -> Vec<(NodeId, String, bool)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: Vec<NodeId> = m.membership().voter_ids().collect();
        m.membership().nodes().filter(|(id, _)| **id != self.id).map(|(id, n)| (*id, n.addr.clone(), voters.contains(id))).collect()
    }

    fn client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, Status> {
        let mut chans = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let ch = match chans.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = panoptes_proto::tls::endpoint(addr)
                    .map_err(|e| Status::internal(format!("bad member address {addr}: {e}")))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect_lazy();
                chans.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(RaftServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE_SIZE).max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    fn request(&self, data: Vec<u8>, timeout: Duration) -> tonic::Request<RaftPayload> {
        let mut rq = tonic::Request::new(RaftPayload { data });
        rq.set_timeout(timeout);
        self.secret.apply(&mut rq);
        rq
    }

    /// Keep a report's pictures here and on a majority of the voters; the
    /// references to propose. UNAVAILABLE (the worker retries) when no
    /// majority holds them in time.
    pub async fn replicate(&self, job: u64, pictures: Vec<(u64, u64, FrameImage)>) -> Result<Vec<PictureRef>, Status> {
        if pictures.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(o) = &self.object {
            return o.put(job, &pictures).await.map_err(|e| Status::unavailable(format!("{e}; the report is retried")));
        }
        let msg = PutPictures { job, pictures };
        let data = bincode::serialize(&msg).map_err(|e| Status::internal(format!("cannot encode pictures: {e}")))?;
        let peers: Vec<(NodeId, String)> = self.peers().into_iter().filter(|p| p.2).map(|(id, a, _)| (id, a)).collect();
        let need = (peers.len() + 1) / 2; // a majority of peers + 1, less this node
        let (tx, mut rx) = tokio::sync::mpsc::channel(peers.len().max(1));
        for (id, addr) in peers.clone() {
            // Sent to every voter; the leader waits for a majority only, the rest land in the background.
            let (client, rq, tx) = (self.client(&addr), self.request(data.clone(), PUT_TIMEOUT), tx.clone());
            tokio::spawn(async move {
                let ok = match client {
                    Ok(mut c) => match c.put_pictures(rq).await {
                        Ok(r) => match bincode::deserialize::<Result<(), String>>(&r.into_inner().data) {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(e),
                            Err(e) => Err(e.to_string()),
                        },
                        Err(s) => Err(s.message().to_string()),
                    },
                    Err(s) => Err(s.message().to_string()),
                };
                if let Err(e) = &ok {
                    tracing::debug!(peer = id, %addr, error = %e, "a member did not take pictures");
                }
                let _ = tx.send(ok.is_ok()).await;
            });
        }
        drop(tx);
        let store = self.store.clone();
        let local = tokio::task::spawn_blocking(move || {
            let refs: Vec<(u64, u64, &FrameImage)> = msg.pictures.iter().map(|(f, e, i)| (*f, *e, i)).collect();
            // The index is made durable by the Raft append of the report.
            store.put(msg.job, &refs, false)
        });
        let refs = local
            .await
            .map_err(|e| Status::internal(format!("storing pictures failed: {e}")))?
            .map_err(|e| Status::unavailable(format!("this coordinator cannot store pictures ({e}); the report is retried")))?;
        let (mut acks, mut answered) = (0, 0);
        let deadline = tokio::time::Instant::now() + PUT_TIMEOUT;
        while acks < need {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(ok)) => {
                    answered += 1;
                    acks += ok as usize;
                }
                Ok(None) | Err(_) => break,
            }
        }
        if acks < need {
            return Err(Status::unavailable(format!(
                "pictures reached {} of the {} coordinators needed ({answered} of {} peers answered); the report is retried",
                acks + 1,
                need + 1,
                peers.len()
            )));
        }
        Ok(refs)
    }

    /// A frame's stored picture: the object store's, or this node's copy,
    /// else one fetched from a peer. The error says why there is none.
    pub async fn picture(&self, reader: &StateReader, job: u64, frame: u64) -> Result<FrameImage, String> {
        let Some(r) = reader.picture_ref(job, frame) else { return Err(format!("frame {frame} has no stored picture")) };
        if let Some(o) = &self.object {
            return o.get(job, frame, &r).await?.ok_or_else(|| format!("the picture of frame {frame} is missing from {} (or differs from what was stored)", o.url()));
        }
        if let Some(img) = self.get_local(job, frame, &r).await {
            return Ok(img);
        }
        self.fetch(job, vec![(frame, r.clone())]).await;
        self.get_local(job, frame, &r)
            .await
            .ok_or_else(|| format!("the picture of frame {frame} is not on this coordinator and no peer answered for it; try again, or ask another coordinator"))
    }

    async fn get_local(&self, job: u64, frame: u64, r: &PictureRef) -> Option<FrameImage> {
        let (store, r) = (self.store.clone(), r.clone());
        tokio::task::spawn_blocking(move || store.get(job, frame, &r)).await.ok()?.ok()?
    }

    /// Fetch these pictures of `job` from the peers that hold them and keep
    /// them here; how many were fetched.
    pub async fn fetch(&self, job: u64, mut wanted: Vec<(u64, PictureRef)>) -> usize {
        let mut got = 0;
        for (id, addr, _) in self.peers() {
            if wanted.is_empty() {
                break;
            }
            let Ok(data) = bincode::serialize(&GetPictures { job, wanted: wanted.clone() }) else { return got };
            let Ok(mut client) = self.client(&addr) else { continue };
            let reply = match client.get_pictures(self.request(data, Duration::from_secs(10))).await {
                Ok(r) => r.into_inner().data,
                Err(s) => {
                    tracing::debug!(peer = id, error = %s.message(), "fetching pictures failed");
                    continue;
                }
            };
            let Ok(Ok(found)) = bincode::deserialize::<Result<Vec<(u64, u64, FrameImage)>, String>>(&reply) else { continue };
            // Keep only intact copies of what was asked for.
            let fits: Vec<(u64, u64, FrameImage)> = found
                .into_iter()
                .filter(|(f, e, img)| wanted.iter().any(|(wf, r)| wf == f && r.epoch == *e && r.crc == crc32fast::hash(&img.jpeg)))
                .collect();
            if fits.is_empty() {
                continue;
            }
            let store = self.store.clone();
            let n = fits.len();
            let kept: Vec<(u64, u64)> = fits.iter().map(|(f, e, _)| (*f, *e)).collect();
            let put = tokio::task::spawn_blocking(move || {
                let refs: Vec<(u64, u64, &FrameImage)> = fits.iter().map(|(f, e, i)| (*f, *e, i)).collect();
                store.put(job, &refs, true)
            })
            .await;
            if matches!(put, Ok(Ok(_))) {
                got += n;
                wanted.retain(|(f, r)| !kept.contains(&(*f, r.epoch)));
            }
        }
        got
    }

    /// Forever: fetch the pictures this node has references for but no copy
    /// of, and delete the pictures of jobs that were deleted. A pass checks
    /// a bounded number of references and goes on where the last stopped.
    pub async fn repair_loop(self: Arc<Self>, reader: StateReader) {
        let mut after: Option<(u64, u64)> = None;
        loop {
            tokio::time::sleep(REPAIR_EVERY).await;
            after = self.repair_pass(&reader, after).await;
        }
    }

    /// One pass; where the next one starts.
    pub async fn repair_pass(&self, reader: &StateReader, after: Option<(u64, u64)>) -> Option<(u64, u64)> {
        if let Some(o) = &self.object {
            // Nothing to copy between members; the objects of deleted jobs go.
            match o.jobs().await {
                Ok(jobs) => {
                    for job in deleted_jobs(reader, jobs) {
                        match o.delete_below(job, u64::MAX).await {
                            Ok(n) => tracing::info!(job_id = job, objects = n, "pictures of a deleted job removed from the object store"),
                            Err(e) => tracing::warn!(job_id = job, error = %e, "removing a deleted job's pictures from the object store failed"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the object store"),
            }
            return None;
        }
        let refs = reader.picture_refs(after, REPAIR_CHECKS);
        let next = if refs.len() < REPAIR_CHECKS { None } else { refs.last().map(|(j, f, _)| (*j, *f)) };
        let mut missing: HashMap<u64, Vec<(u64, PictureRef)>> = HashMap::new();
        for (job, frame, r) in refs {
            if !self.store.has(job, frame, r.epoch) {
                missing.entry(job).or_default().push((frame, r));
            }
        }
        for (job, wanted) in missing {
            let total = wanted.len();
            let mut fetched = 0;
            for chunk in wanted.chunks(FETCH_BATCH) {
                fetched += self.fetch(job, chunk.to_vec()).await;
            }
            tracing::info!(job_id = job, missing = total, fetched, "pictures repaired from peers");
        }
        if next.is_none() {
            // A whole sweep: the pictures of jobs deleted.
            for job in deleted_jobs(reader, self.store.jobs()) {
                let store = self.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.delete_job(job)).await;
                tracing::info!(job_id = job, "pictures of a deleted job removed");
            }
        }
        next
    }
}

/// Of the jobs that have pictures (`held`), those deleted: an id below
/// `next_job` that no longer exists (a lagging member never deletes a job it
/// has not seen created).
fn deleted_jobs(reader: &StateReader, held: Vec<u64>) -> Vec<u64> {
    reader.read(|a| held.into_iter().filter(|j| *j < a.state.next_job && !a.state.jobs.contains_key(j)).collect())
}
