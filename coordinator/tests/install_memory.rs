//! A member that installs a large snapshot keeps its memory bounded (issue
//! 16). sled's memory grows with the size of a batch and is not given back:
//! before session 9 a received snapshot was written in 8 MiB batches, and a
//! coordinator joining a cluster that held a 3-hour camera (500,000 records,
//! a 49 MiB snapshot) peaked at 2.1 GiB. This test installs a snapshot of
//! 500,000 result rows through the state machine's own install path, on a
//! real sled file, and bounds what the process gains. It runs alone in its
//! own process (one test in this file), so the figure is this install's.
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, LogId, StoredMembership};
use panoptes_coordinator::pictures::store::PictureStore;
use panoptes_coordinator::pictures::PictureHome;
use panoptes_coordinator::raft::log_store::open_db;
use panoptes_coordinator::raft::types::SnapshotMeta;
use panoptes_coordinator::store::snapfile;
use panoptes_coordinator::store::{result_key, StateMachineStore};

fn rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib / 1024
}

const ROWS: u64 = 500_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_a_snapshot_of_500000_rows_keeps_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir.path().join("raft.sled")).unwrap();
    let pictures = PictureStore::open(dir.path().join("pictures"), &db).unwrap();
    let mut sm = StateMachineStore::open(&db, dir.path().join("snapshots"), PictureHome::Local(std::sync::Arc::new(pictures))).unwrap();

    // The snapshot as a member receives it: written record by record into
    // the file the state machine gave for it.
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), ROWS)),
        last_membership: StoredMembership::default(),
        snapshot_id: "install-memory".into(),
    };
    let file = sm.begin_receiving_snapshot().await.unwrap().into_std().await;
    let mut w = snapfile::Writer::new(file, &meta).unwrap();
    let row = bincode::serialize(&(12.5f64, r#"{"palette":[[12,34,56],[78,90,12],[34,56,78]],"share":[0.5,0.3,0.2]}"#)).unwrap();
    for frame in 0..ROWS {
        w.record(&result_key(1, frame, 0), &row).unwrap();
    }
    let (file, n) = w.finish().unwrap();
    assert_eq!(n, ROWS);
    let bytes = file.metadata().unwrap().len();

    let before = rss_mib();
    sm.install_snapshot(&meta, Box::new(tokio::fs::File::from_std(file))).await.expect("install the snapshot");
    let after = rss_mib();
    println!("installed {ROWS} rows ({:.1} MiB of snapshot): RSS {before} -> {after} MiB", bytes as f64 / 1048576.0);

    // What was installed is there: the last row reads back.
    let tree = db.open_tree(b"sm.1").unwrap();
    assert_eq!(tree.get(result_key(1, ROWS - 1, 0)).unwrap().as_deref(), Some(row.as_slice()), "the installed tree lacks the last row");
    // 8 MiB batches: +1.5 GiB; 64 KiB batches: about +100 MiB.
    assert!(after.saturating_sub(before) < 400, "installing {ROWS} rows took the process from {before} to {after} MiB");
}
