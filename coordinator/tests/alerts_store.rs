//! A job's recorded alerts live under keys of their own (`a/<job><seq>`),
//! written once each, not in the job's record, which is rewritten at every
//! change of the job and would otherwise grow with them: they survive a
//! restart from the sled file and a snapshot's install, and a pruned job
//! takes them with it. So do its track events (`v/<job><seq>`) and the
//! marks of its detections (`k/<job><frame><model>`).
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};
use panoptes_common::rules::{Fired, Rule, RuleState};
use panoptes_coordinator::pictures::store::PictureStore;
use panoptes_coordinator::pictures::PictureHome;
use panoptes_coordinator::raft::log_store::open_db;
use panoptes_coordinator::raft::types::{Entry, LogId};
use panoptes_common::tracking::{Mark, TrackChange, TrackEvent};
use panoptes_coordinator::state::command::{Request, Tracked};
use panoptes_coordinator::state::model::{Alerts, Job, JobSpec};
use panoptes_coordinator::store::StateMachineStore;

fn open(dir: &std::path::Path) -> (sled::Db, StateMachineStore) {
    let db = open_db(&dir.join("raft.sled")).unwrap();
    let pictures = PictureStore::open(dir.join("pictures"), &db).unwrap();
    let sm = StateMachineStore::open(&db, dir.join("snapshots"), PictureHome::Local(std::sync::Arc::new(pictures))).unwrap();
    (db, sm)
}

fn entry(index: u64, req: Request) -> Entry {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(req) }
}

fn fired(frame: u64) -> Fired {
    Fired { rule: "someone".into(), frame, time_ms: frame * 40, since_ms: frame * 40, detail: format!("1 person in frame {frame}") }
}

fn alerts(sm: &StateMachineStore) -> Alerts {
    sm.reader().read(|a| a.state.jobs[&1].alerts.clone())
}

#[tokio::test]
async fn alerts_are_kept_under_their_own_keys_through_restart_snapshot_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut sm) = open(dir.path());
    let spec = JobSpec {
        name: "door".into(),
        source: "/door.mp4".into(),
        models: vec!["objects".into()],
        frame_step: 1,
        target_height: 720,
        request_id: None,
        max_attempts: 1,
        frames_height: 0,
        frames_quality: 0,
        frames_every_ms: 0,
        keep_s: 0,
        keep_what: Default::default(),
        owner: String::new(),
        rules: vec![Rule::parse("someone: count(person) >= 1").unwrap()],
        zones: Vec::new(),
        tracks: false,
    };
    let st = vec![RuleState::default()];
    sm.apply(vec![
        entry(1, Request::Submit { spec, now_ms: 1 }),
        entry(2, Request::Analytics { job: 1, from: 0, upto: 10, states: st.clone(), fired: vec![fired(1), fired(7)], tracked: Default::default() }),
    ])
    .await
    .unwrap();
    // With tracking: a detection's mark beside its frame's results, and two track events.
    let ev = |change, frame| TrackEvent { change, model: "objects".into(), track: 1, label: "person".into(), zone: None, frame, time: frame as f64 / 25.0 };
    let tracked = Tracked {
        tracker: Default::default(),
        marks: vec![(12, 0, vec![Mark { track: 1, zones: vec!["door".into()] }])],
        events: vec![ev(TrackChange::Start, 12), ev(TrackChange::End, 19)],
    };
    sm.apply(vec![entry(3, Request::Analytics { job: 1, from: 10, upto: 20, states: st.clone(), fired: vec![fired(15)], tracked })]).await.unwrap();
    let want = alerts(&sm);
    assert_eq!(want.fired, vec![fired(1), fired(7), fired(15)]);
    assert_eq!(want.upto, 20);

    // Not in the job's record.
    let tree = db.open_tree("sm").unwrap();
    let (_, record) = tree.scan_prefix(b"j/").next().unwrap().unwrap();
    let job: Job = bincode::deserialize(&record).unwrap();
    assert!(job.alerts.fired.is_empty() && job.alerts.upto == 20, "{:?}", job.alerts);
    assert_eq!(tree.scan_prefix(b"a/").count(), 3);
    assert_eq!((tree.scan_prefix(b"v/").count(), tree.scan_prefix(b"k/").count()), (2, 1), "track events and marks under their keys");
    assert_eq!(sm.reader().read(|a| a.state.jobs[&1].track_events.recorded), 2);

    // A restart reads them back.
    drop((sm, tree, db));
    let (db, mut sm) = open(dir.path());
    assert_eq!(alerts(&sm), want, "after a restart");

    // A snapshot installed elsewhere holds them.
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let (_db2, mut sm2) = open(other.path());
    sm2.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(alerts(&sm2), want, "after a snapshot install");
    assert_eq!(sm2.reader().track_event(1, 2).map(|e| (e.change, e.frame)), Some((TrackChange::End, 19)), "a track event after a snapshot install");

    // A pruned job takes them with it.
    sm.apply(vec![entry(4, Request::Cancel { job: 1, now_ms: 2 }), entry(5, Request::Prune { finished_before_ms: u64::MAX })]).await.unwrap();
    let tree = db.open_tree("sm").unwrap();
    assert_eq!(tree.scan_prefix(b"a/").count(), 0, "a pruned job's alerts were left behind");
    assert_eq!((tree.scan_prefix(b"v/").count(), tree.scan_prefix(b"k/").count()), (0, 0), "a pruned job's track events or marks were left behind");
}
