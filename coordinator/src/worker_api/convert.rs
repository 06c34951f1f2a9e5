//! Worker messages ↔ the state's types: a leased shard as an assignment, a
//! report's frames and pictures and its stage times as the state records
//! them.
use panoptes_common::ids::JobId;
use panoptes_proto::worker as pb;

use crate::state::command::{FrameImage, FrameOutputs, ModelOutput};
use crate::state::model::{Job, Shard, StageTimes};

/// The assignment of shard `s` of `j`, leased with `epoch` at `now_ms`:
/// what the worker reads (a file part from its seek point, a push to
/// listen for, a pull source to open) and how. `None` for a file job not
/// probed yet.
pub(super) fn assignment(j: &Job, s: &Shard, epoch: u64, now_ms: u64) -> Option<pb::ShardAssignment> {
    use pb::shard_assignment::Kind;
    let (source, kind) = if j.is_live() {
        let c = &j.counters;
        let resume_timestamp = if c.last_timestamp_at_ms > 0 {
            // At least 1 ms on: this leader's clock may be behind the one that committed it.
            c.last_timestamp + now_ms.saturating_sub(c.last_timestamp_at_ms).max(1) as f64 / 1000.0
        } else {
            0.0
        };
        let live = pb::LiveShard { resume_timestamp };
        match &j.live {
            // A push names its ingest URL; a pull source is opened as given.
            Some(l) => (l.url.clone(), Kind::Push(live)),
            None => (j.spec.source.clone(), Kind::Pull(live)),
        }
    } else {
        let plan = j.plan.as_ref()?;
        let seek = plan.seek_point(s.cursor).map(|(frame, pts)| pb::KeyframeSeek { frame, pts });
        (j.spec.source.clone(), Kind::File(pb::FileShard { seek, pts0: plan.pts0, fps: plan.fps }))
    };
    Some(pb::ShardAssignment {
        job_id: JobId(j.id).to_string(),
        shard: s.index,
        epoch,
        source,
        models: j.spec.models.clone(),
        frame_step: j.spec.frame_step,
        start_frame: s.start,
        end_frame: s.end,
        resume_frame: s.cursor,
        target_height: j.spec.target_height,
        frames_height: j.spec.frames_height,
        frames_quality: j.spec.frames_quality,
        frames_every_ms: j.spec.frames_every_ms,
        kind: Some(kind),
    })
}

/// A report's stage times as the state keeps them.
pub(super) fn stage_times(t: pb::StageTimes) -> StageTimes {
    StageTimes {
        decode_s: t.decode_s,
        resize_s: t.resize_s,
        inference_s: t.inference_s.into_iter().collect(),
        frames_decoded: t.frames_decoded,
        frames_dropped: t.frames_dropped,
        latency_ms: t.latency_ms.into_iter().collect(),
        reconnects: t.reconnects,
        gap_ms: t.gap_ms,
    }
}

/// A report's frames as the state records them (pictures not yet placed),
/// and the pictures they carry, as (frame, lease epoch, picture).
pub(super) fn frames_and_pictures(frames: Vec<pb::FrameReport>, epoch: u64) -> (Vec<FrameOutputs>, Vec<(u64, u64, FrameImage)>) {
    let mut out = Vec::with_capacity(frames.len());
    let mut images = Vec::new();
    for f in frames {
        if !f.jpeg.is_empty() {
            images.push((f.frame, epoch, FrameImage { jpeg: f.jpeg, width: f.width, height: f.height }));
        }
        out.push(FrameOutputs {
            frame: f.frame,
            timestamp: f.timestamp,
            outputs: f.outputs.into_iter().map(|o| ModelOutput { model: o.model, results_json: o.results_json, error: o.error }).collect(),
            image: None,
        });
    }
    (out, images)
}
