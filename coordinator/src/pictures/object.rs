//! Stored pictures in an S3-compatible object store (`[object_store]` in the
//! config), for clusters that outgrow the coordinators' disks.
//!
//! One object a picture: `<prefix>/<job>/<frame, 20 digits>-<epoch>.jpg`
//! (the JPEG; its size, CRC-32 and the analysed frame's size are in the
//! [`PictureRef`] Raft carries). The leader puts a report's pictures here
//! before it proposes the report, so an acknowledged frame's picture is as
//! durable as the object store makes it; no coordinator keeps a copy, and
//! none fetches one from a peer. Zero-padded frame numbers list in frame
//! order, so retention lists a job's objects from its first and stops at the
//! cut.
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};
use panoptes_common::config::ObjectStoreSection;

use crate::state::command::{FrameImage, PictureRef};

/// Puts of one report in flight at once.
const PUT_PARALLEL: usize = 16;

pub struct ObjectPictures {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// `s3://bucket/prefix`, for messages.
    url: String,
}

impl ObjectPictures {
    /// The store `cfg` names (its `url` is `s3://BUCKET[/PREFIX]`). Keys come
    /// from `credentials_file` (two lines: access key id, secret key) or, when
    /// it is unset, from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    pub fn open(cfg: &ObjectStoreSection) -> Result<ObjectPictures, String> {
        let (bucket, prefix) = cfg.bucket_and_prefix()?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(cfg.region.as_str())
            .with_allow_http(cfg.allow_http)
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(10), ..Default::default() })
            .with_client_options(ClientOptions::new().with_timeout(Duration::from_secs(30)).with_connect_timeout(Duration::from_secs(5)).with_allow_http(cfg.allow_http));
        if let Some(endpoint) = &cfg.endpoint {
            b = b.with_endpoint(endpoint);
        }
        if let Some(file) = &cfg.credentials_file {
            let text = std::fs::read_to_string(file).map_err(|e| format!("object_store.credentials_file {}: {e}", file.display()))?;
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let (Some(id), Some(secret)) = (lines.next(), lines.next()) else {
                return Err(format!(
                    "object_store.credentials_file {} must hold two lines: the access key id, then the secret key",
                    file.display()
                ));
            };
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let url = cfg.url.clone().unwrap_or_default();
        let store = b.build().map_err(|e| format!("the object store {url} cannot be used: {e}"))?;
        Ok(ObjectPictures { store: Arc::new(store), prefix: Path::from(prefix), url })
    }

    fn job_prefix(&self, job: u64) -> Path {
        self.prefix.child(job.to_string())
    }

    fn path(&self, job: u64, frame: u64, epoch: u64) -> Path {
        self.job_prefix(job).child(format!("{frame:020}-{epoch}.jpg"))
    }

    /// The frame an object of a job names (its name is `<frame>-<epoch>.jpg`).
    fn frame_of(p: &Path) -> Option<u64> {
        p.filename()?.split('-').next()?.parse().ok()
    }

    /// Put these pictures of `job`; their references once every put is done.
    pub async fn put(&self, job: u64, pictures: &[(u64, u64, FrameImage)]) -> Result<Vec<PictureRef>, String> {
        let mut puts = Vec::with_capacity(pictures.len());
        for (frame, epoch, img) in pictures {
            let (store, url, path) = (self.store.clone(), self.url.clone(), self.path(job, *frame, *epoch));
            let payload = PutPayload::from(img.jpeg.clone());
            let r = PictureRef { epoch: *epoch, len: img.jpeg.len() as u32, crc: crc32fast::hash(&img.jpeg), width: img.width, height: img.height };
            puts.push(async move { store.put(&path, payload).await.map(|_| r).map_err(|e| format!("putting {path} in {url}: {e}")) });
        }
        futures::stream::iter(puts).buffered(PUT_PARALLEL).try_collect().await
    }

    /// The picture `r` names: None when the object is missing or differs
    /// from its reference.
    pub async fn get(&self, job: u64, frame: u64, r: &PictureRef) -> Result<Option<FrameImage>, String> {
        let path = self.path(job, frame, r.epoch);
        let bytes = match self.store.get(&path).await {
            Ok(g) => g.bytes().await.map_err(|e| format!("reading {path} from {}: {e}", self.url))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(format!("reading {path} from {}: {e}", self.url)),
        };
        if bytes.len() != r.len as usize || crc32fast::hash(&bytes) != r.crc {
            tracing::warn!(job, frame, "a picture in the object store differs from its reference");
            return Ok(None);
        }
        Ok(Some(FrameImage { jpeg: bytes.to_vec(), width: r.width, height: r.height }))
    }

    /// Delete the objects of `job` below frame `before` (all: `u64::MAX`); how many.
    pub async fn delete_below(&self, job: u64, before: u64) -> Result<u64, String> {
        let prefix = self.job_prefix(job);
        let doomed: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            // Listed in key order, so in frame order: stop at the cut.
            .try_take_while(|p| futures::future::ready(Ok(Self::frame_of(p).is_none_or(|f| f < before))))
            .try_collect()
            .await
            .map_err(|e| format!("listing {prefix} in {}: {e}", self.url))?;
        let locations = futures::stream::iter(doomed.into_iter().map(Ok)).boxed();
        let deleted: Vec<Path> = self.store.delete_stream(locations).try_collect().await.map_err(|e| format!("deleting in {}: {e}", self.url))?;
        Ok(deleted.len() as u64)
    }

    /// The job ids that have objects.
    pub async fn jobs(&self) -> Result<Vec<u64>, String> {
        let l = self.store.list_with_delimiter(Some(&self.prefix)).await.map_err(|e| format!("listing {}: {e}", self.url))?;
        Ok(l.common_prefixes.iter().filter_map(|p| p.filename()?.parse().ok()).collect())
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}
