//! The sled Raft log store, the gRPC Raft transport, and the two together with the state machine
//! store in a real (127.0.0.1) two-/three-node openraft cluster.
//!
//! Every wait is bounded; every server binds 127.0.0.1:0 and is shut down by the test.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{AnyError, BasicNode, EntryPayload, Membership, RaftLogReader, StorageIOError, Vote};
use panoptes_coordinator::raft::log_store::{open_db, LogStore, LOG_TREE, META_TREE};
use panoptes_coordinator::raft::network::Network;
use panoptes_coordinator::raft::service;
use panoptes_coordinator::raft::types::{Entry, LogId, NodeId, Raft, StorageError, TypeConfig};
use panoptes_coordinator::state::command::{Request, Response};
use panoptes_coordinator::store::{StateMachineStore, StateReader};
use panoptes_coordinator::pictures::store::PictureStore;
use panoptes_coordinator::pictures::PictureHome;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// helpers

fn ent(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry { log_id: log_id(term, 1, index), payload }
}

fn register(name: &str) -> Request {
    Request::RegisterWorker {
        name: name.to_string(),
        addr: "127.0.0.1:1".to_string(),
        capacity: 1,
        models: vec!["yolo".to_string()],
        now_ms: 1,
    }
}

/// Index 1: membership; then blank and normal entries; term 1 up to index 5, term 2 after.
fn sample_entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| {
            let term = if i <= 5 { 1 } else { 2 };
            let payload = if i == 1 {
                EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2])], None))
            } else if i % 2 == 0 {
                EntryPayload::Normal(register(&format!("w{i}")))
            } else {
                EntryPayload::Blank
            };
            ent(term, i, payload)
        })
        .collect()
}

/// Entries have no `PartialEq`; compare their Debug form (ids and payloads).
fn show(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| format!("{e:?}")).collect()
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

async fn read<R: RaftLogReader<TypeConfig>, RB>(r: &mut R, range: RB) -> Vec<Entry>
where
    RB: std::ops::RangeBounds<u64> + Clone + Debug + Send,
{
    r.try_get_log_entries(range).await.expect("read log entries")
}

/// Everything a log store reports, for before/after-reopen comparisons.
async fn dump(ls: &mut LogStore) -> (String, Vec<String>, Option<Vote<NodeId>>, Option<LogId>) {
    let state = ls.get_log_state().await.unwrap();
    let state = format!("{:?} {:?}", state.last_purged_log_id, state.last_log_id);
    let entries = show(&read(ls, ..).await);
    (state, entries, ls.read_vote().await.unwrap(), ls.read_committed().await.unwrap())
}

/// Open the db at `path` (with the retry) and a log store on it.
fn reopen(path: &Path) -> (sled::Db, LogStore) {
    let db = open_db(path).expect("reopen sled db");
    let ls = LogStore::open(&db).expect("open log store");
    (db, ls)
}

// ---------------------------------------------------------------------------------------------
// log store

#[tokio::test]
async fn log_store_append_read_truncate_purge_vote_committed_and_reopen() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db");

    let before = {
        let (db, mut ls) = reopen(&path);

        // Pristine.
        let st = ls.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));
        assert_eq!(ls.read_vote().await.unwrap(), None);
        assert_eq!(ls.read_committed().await.unwrap(), None);
        assert!(read(&mut ls, ..).await.is_empty());

        // A reader taken before the append shares the trees: it sees entries as soon as
        // append returns.
        let mut early_reader = ls.get_log_reader().await;
        let all = sample_entries(1, 10);
        ls.blocking_append(all.clone()).await.unwrap();
        assert_eq!(show(&read(&mut early_reader, ..).await), show(&all));

        // Ranges of every bound kind.
        let mut r = ls.get_log_reader().await;
        assert_eq!(indexes(&read(&mut r, 1..11).await), (1..=10).collect::<Vec<_>>());
        assert_eq!(indexes(&read(&mut r, 3..=5).await), vec![3, 4, 5]);
        assert_eq!(indexes(&read(&mut r, 8..).await), vec![8, 9, 10]);
        assert_eq!(indexes(&read(&mut r, ..3).await), vec![1, 2]);
        assert_eq!(indexes(&read(&mut r, ..=u64::MAX).await), (1..=10).collect::<Vec<_>>());
        assert_eq!(indexes(&read(&mut r, (Bound::Excluded(2), Bound::Included(4))).await), vec![3, 4]);
        assert!(read(&mut r, 0..1).await.is_empty());
        assert!(read(&mut r, 11..20).await.is_empty());
        assert!(read(&mut r, 5..5).await.is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 7..3;
        assert!(read(&mut r, backwards).await.is_empty());
        assert!(read(&mut r, (Bound::Excluded(u64::MAX), Bound::Unbounded)).await.is_empty());
        assert_eq!(show(&read(&mut r, 4..=4).await), show(&all[3..4]));

        let st = ls.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, Some(log_id(2, 1, 10))));

        // Truncate since 8 (inclusive), then the new leader's entries 8..=9 in term 3.
        ls.truncate(log_id(2, 1, 8)).await.unwrap();
        assert_eq!(indexes(&read(&mut r, ..).await), (1..=7).collect::<Vec<_>>());
        assert_eq!(ls.get_log_state().await.unwrap().last_log_id, Some(log_id(2, 1, 7)));
        let replacement = vec![ent(3, 8, EntryPayload::Normal(register("late"))), ent(3, 9, EntryPayload::Blank)];
        ls.blocking_append(replacement.clone()).await.unwrap();
        assert_eq!(show(&read(&mut r, 8..).await), show(&replacement));

        // Purge up to 3 (inclusive).
        ls.purge(log_id(1, 1, 3)).await.unwrap();
        assert!(read(&mut r, ..4).await.is_empty());
        assert_eq!(indexes(&read(&mut r, ..).await), (4..=9).collect::<Vec<_>>());
        let st = ls.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (Some(log_id(1, 1, 3)), Some(log_id(3, 1, 9))));

        // Vote and committed.
        ls.save_vote(&Vote::new(3, 2)).await.unwrap();
        assert_eq!(ls.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        ls.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
        assert_eq!(ls.read_vote().await.unwrap(), Some(Vote::new_committed(3, 2)));
        ls.save_committed(Some(log_id(3, 1, 8))).await.unwrap();
        assert_eq!(ls.read_committed().await.unwrap(), Some(log_id(3, 1, 8)));

        // Only our own trees were created (plus sled's default tree).
        let mut names: Vec<Vec<u8>> = db.tree_names().into_iter().map(|n| n.to_vec()).collect();
        names.sort();
        let mut want = vec![b"__sled__default".to_vec(), LOG_TREE.as_bytes().to_vec(), META_TREE.as_bytes().to_vec()];
        want.sort();
        assert_eq!(names, want);

        dump(&mut ls).await
    }; // db and log store dropped here

    // Everything survives a reopen of the same path.
    let after = {
        let (_db, mut ls) = reopen(&path);
        let after = dump(&mut ls).await;

        // Purge everything that is left: the log is empty, last_log_id falls back to the purge
        // point.
        ls.purge(log_id(3, 1, 9)).await.unwrap();
        assert!(read(&mut ls, ..).await.is_empty());
        let st = ls.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (Some(log_id(3, 1, 9)), Some(log_id(3, 1, 9))));
        after
    };
    assert_eq!(before, after);

    let (_db, mut ls) = reopen(&path);
    let st = ls.get_log_state().await.unwrap();
    assert_eq!((st.last_purged_log_id, st.last_log_id), (Some(log_id(3, 1, 9)), Some(log_id(3, 1, 9))));
    // Appending after a full purge continues at the next index.
    ls.blocking_append(vec![ent(4, 10, EntryPayload::Blank)]).await.unwrap();
    let st = ls.get_log_state().await.unwrap();
    assert_eq!((st.last_purged_log_id, st.last_log_id), (Some(log_id(3, 1, 9)), Some(log_id(4, 1, 10))));
    assert_eq!(ls.read_vote().await.unwrap(), Some(Vote::new_committed(3, 2)));
}

#[tokio::test]
async fn appended_entries_are_readable_as_soon_as_append_completes() {
    let dir = TempDir::new().unwrap();
    let (_db, mut ls) = reopen(&dir.path().join("db"));
    let mut reader = ls.get_log_reader().await;
    for i in 1..=20u64 {
        ls.blocking_append(vec![ent(1, i, EntryPayload::Normal(register(&format!("w{i}"))))]).await.unwrap();
        // Readable at once, through a separate reader, and the log state agrees.
        assert_eq!(indexes(&read(&mut reader, i..=i).await), vec![i]);
        assert_eq!(ls.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 1, i)));
    }
    // (Durability, i.e. flushed before the callback, is checked by `log_survives_a_process_crash`.)
}

const CRASH_CHILD_ENV: &str = "PANOPTES_RAFT_LOG_CRASH_CHILD_DIR";
const CRASH_STAGE_ENV: &str = "PANOPTES_RAFT_LOG_CRASH_STAGE";

/// Runs only as the child of `log_survives_a_process_crash`: performs ONE write operation and
/// exits at once, without dropping anything (so no destructor flush) and with sled's periodic
/// flush disabled, so the operation's effect is on disk only if the log store flushed it itself.
#[tokio::test]
async fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_CHILD_ENV) else { return };
    let stage = std::env::var(CRASH_STAGE_ENV).unwrap();
    let db = sled::Config::new().path(PathBuf::from(dir)).flush_every_ms(None).open().unwrap();
    let mut ls = LogStore::open(&db).unwrap();
    match stage.as_str() {
        "append" => ls.blocking_append(sample_entries(1, 10)).await.unwrap(),
        "truncate" => ls.truncate(log_id(2, 1, 8)).await.unwrap(),
        "reappend" => ls.blocking_append(crash_replacement()).await.unwrap(),
        "purge" => ls.purge(log_id(1, 1, 3)).await.unwrap(),
        "vote" => ls.save_vote(&Vote::new_committed(7, 2)).await.unwrap(),
        other => panic!("unknown stage {other}"),
    }
    std::process::exit(0);
}

fn crash_replacement() -> Vec<Entry> {
    vec![ent(3, 8, EntryPayload::Normal(register("late"))), ent(3, 9, EntryPayload::Blank)]
}

#[test]
fn log_survives_a_process_crash() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let crash_after = |stage: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, &path)
            .env(CRASH_STAGE_ENV, stage)
            .output()
            .unwrap();
        assert!(out.status.success(), "child {stage} failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    // (last purged, last log id, entries, vote) after reopening.
    let check = |purged: Option<LogId>, last: Option<LogId>, entries: Vec<Entry>, vote: Option<Vote<NodeId>>| {
        rt.block_on(async {
            let (_db, mut ls) = reopen(&path);
            assert_eq!(show(&read(&mut ls, ..).await), show(&entries));
            let st = ls.get_log_state().await.unwrap();
            assert_eq!((st.last_purged_log_id, st.last_log_id), (purged, last));
            assert_eq!(ls.read_vote().await.unwrap(), vote);
        })
    };

    crash_after("append");
    check(None, Some(log_id(2, 1, 10)), sample_entries(1, 10), None);

    crash_after("truncate");
    check(None, Some(log_id(2, 1, 7)), sample_entries(1, 7), None);

    crash_after("reappend");
    let mut want = sample_entries(1, 7);
    want.extend(crash_replacement());
    check(None, Some(log_id(3, 1, 9)), want.clone(), None);

    crash_after("purge");
    want.drain(..3);
    check(Some(log_id(1, 1, 3)), Some(log_id(3, 1, 9)), want.clone(), None);

    crash_after("vote");
    check(Some(log_id(1, 1, 3)), Some(log_id(3, 1, 9)), want, Some(Vote::new_committed(7, 2)));
}

#[test]
fn open_db_retries_while_locked_and_reports_other_errors() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db");

    // Reopen right after drop, many times: the retry hides sled's lock race.
    for _ in 0..20 {
        let db = open_db(&path).unwrap();
        db.insert(b"k", b"v").unwrap();
        drop(db);
    }

    // Held by someone else for a moment: open_db waits for it.
    let held = open_db(&path).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let db = open_db(&path).expect("open after the holder lets go");
    releaser.join().unwrap();

    // Held for good: a clear error after the bounded retries.
    let err = open_db(&path).expect_err("the path is locked by `db`");
    assert!(err.to_string().contains("still locked"), "{err}");
    drop(db);

    // Not a lock problem: reported at once.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = open_db(&file).expect_err("a plain file is not a sled directory");
    assert!(!err.to_string().contains("still locked"), "{err}");
}

/// A new store is compressed; a store an earlier build made uncompressed
/// opens as it was made (sled refuses a setting other than the one a store
/// was created with) and keeps its data.
#[test]
fn a_new_store_is_compressed_and_an_uncompressed_one_still_opens() {
    let dir = TempDir::new().unwrap();
    let conf = |p: &Path| String::from_utf8_lossy(&std::fs::read(p.join("conf")).unwrap()).to_string();

    let fresh = dir.path().join("fresh");
    let db = open_db(&fresh).unwrap();
    db.insert(b"k", b"v").unwrap();
    db.flush().unwrap();
    drop(db);
    assert!(conf(&fresh).contains("use_compression: true"), "{}", conf(&fresh));
    assert_eq!(open_db(&fresh).unwrap().get(b"k").unwrap().as_deref(), Some(&b"v"[..]));

    // `coordinator.compress_store = false`: a new store that is not.
    let plain = dir.path().join("plain");
    drop(panoptes_coordinator::raft::log_store::open_db_with_cache(&plain, 8 << 20, false).unwrap());
    assert!(conf(&plain).contains("use_compression: false"), "{}", conf(&plain));

    let old = dir.path().join("old");
    let db = sled::Config::new().path(&old).use_compression(false).open().unwrap();
    db.insert(b"k", b"old").unwrap();
    db.flush().unwrap();
    drop(db);
    let db = open_db(&old).expect("an uncompressed store opens");
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
    drop(db);
    assert!(conf(&old).contains("use_compression: false"), "{}", conf(&old));
}

// ---------------------------------------------------------------------------------------------
// openraft's storage conformance suite, log store + the lead's state machine store

struct SledStoreBuilder;

fn io_err(e: std::io::Error) -> StorageError {
    StorageIOError::write(AnyError::new(&e)).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().map_err(io_err)?;
        let db = open_db(&dir.path().join("db")).map_err(io_err)?;
        let ls = LogStore::open(&db)?;
        let pics = Arc::new(PictureStore::open(dir.path().join("pictures"), &db).map_err(io_err)?);
        let sm = StateMachineStore::open(&db, dir.path().join("snapshots"), PictureHome::Local(pics))?;
        Ok((dir, ls, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledStoreBuilder).unwrap();
}

// ---------------------------------------------------------------------------------------------
// gRPC transport and a real cluster

const WAIT: Duration = Duration::from_secs(30);

struct TestNode {
    id: NodeId,
    addr: String,
    raft: Raft,
    reader: StateReader,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(id: NodeId) -> TestNode {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir.path().join("db")).unwrap();
        let ls = LogStore::open(&db).unwrap();
        let pics = Arc::new(PictureStore::open(dir.path().join("pictures"), &db).unwrap());
        let sm = StateMachineStore::open(&db, dir.path().join("snapshots"), PictureHome::Local(pics.clone())).unwrap();
        let reader = sm.reader();
        let config = openraft::Config {
            cluster_name: "test".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            // Small chunks so a snapshot crosses the wire in several install_snapshot RPCs.
            snapshot_max_chunk_size: 64,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let raft = Raft::new(id, Arc::new(config), Network::new(id), ls, sm).await.unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service::server(raft.clone(), pics))
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        TestNode { id, addr, raft, reader, stop: Some(stop), server, _dir: dir }
    }

    fn node(&self) -> BasicNode {
        BasicNode::new(self.addr.clone())
    }

    fn has_worker(&self, name: &str) -> bool {
        self.reader.read(|a| a.state.workers.contains_key(name))
    }

    async fn stop(mut self) {
        let _ = self.raft.shutdown().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_grpc_elects_replicates_and_ships_snapshots() {
    let n1 = TestNode::start(1).await;
    let n2 = TestNode::start(2).await;
    n1.raft.initialize(BTreeMap::from([(1, n1.node()), (2, n2.node())])).await.unwrap();

    // Both agree on a leader.
    let m = n1.raft.wait(Some(WAIT)).metrics(|m| m.current_leader.is_some(), "n1 sees a leader").await.unwrap();
    let leader_id = m.current_leader.unwrap();
    n2.raft.wait(Some(WAIT)).current_leader(leader_id, "n2 agrees on the leader").await.unwrap();
    let (leader, follower) = if leader_id == 1 { (&n1, &n2) } else { (&n2, &n1) };

    // A write through the leader commits and is applied on both nodes.
    let resp = leader.raft.client_write(register("w-a")).await.unwrap();
    assert_eq!(resp.data, Response::Ok);
    for n in [&n1, &n2] {
        n.raft.wait(Some(WAIT)).applied_index_at_least(Some(resp.log_id.index), "applied").await.unwrap();
        assert!(n.has_worker("w-a"), "node {} lacks the write", n.id);
    }

    // A write to the follower is refused with a pointer to the leader.
    let err = follower.raft.client_write(register("w-b")).await.unwrap_err();
    let fwd = err.forward_to_leader().expect("ForwardToLeader");
    assert_eq!(fwd.leader_id, Some(leader_id));

    // Snapshot on the leader and purge its log, then add a learner: it can only catch up by
    // receiving the snapshot over gRPC (in several chunks).
    leader.raft.trigger().snapshot().await.unwrap();
    let idx = resp.log_id.index;
    leader
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.map(|s| s.index) >= Some(idx) && m.purged.map(|p| p.index) >= Some(idx),
            "snapshot+purge",
        )
        .await
        .unwrap();

    let n3 = TestNode::start(3).await;
    leader.raft.add_learner(3, n3.node(), true).await.unwrap();
    let m3 = n3.raft.wait(Some(WAIT)).applied_index_at_least(Some(idx), "learner caught up").await.unwrap();
    assert!(m3.snapshot.map(|s| s.index) >= Some(idx), "learner did not install a snapshot: {m3:?}");
    assert!(n3.has_worker("w-a"));

    // And normal replication to the learner continues afterwards.
    let resp = leader.raft.client_write(register("w-c")).await.unwrap();
    for n in [&n1, &n2, &n3] {
        n.raft.wait(Some(WAIT)).applied_index_at_least(Some(resp.log_id.index), "applied w-c").await.unwrap();
        assert!(n.has_worker("w-c"), "node {} lacks w-c", n.id);
    }

    n3.stop().await;
    n2.stop().await;
    n1.stop().await;
}

#[tokio::test]
async fn transport_reports_unreachable_peers_and_remote_raft_errors() {
    let opt = RPCOption::new(Duration::from_secs(2));
    let vote = VoteRequest::new(Vote::new(1, 9), None);
    let mut net = Network::new(9);

    // Nobody listens on the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut conn = net.new_client(1, &BasicNode::new(format!("127.0.0.1:{port}"))).await;
    let err =
        tokio::time::timeout(Duration::from_secs(20), conn.vote(vote.clone(), opt.clone())).await.unwrap().unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // A malformed address is reported unreachable too (no panic, no connect attempt).
    let mut conn = net.new_client(2, &BasicNode::new("not a host:port")).await;
    let err = conn.vote(vote.clone(), opt.clone()).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // A live server whose Raft has stopped: the Raft error comes back as a RemoteError.
    let n = TestNode::start(1).await;
    n.raft.shutdown().await.unwrap();
    let mut conn = net.new_client(1, &n.node()).await;
    let err =
        tokio::time::timeout(Duration::from_secs(20), conn.vote(vote.clone(), opt.clone())).await.unwrap().unwrap_err();
    match &err {
        RPCError::RemoteError(remote) => {
            assert_eq!(remote.target, 1);
            assert!(matches!(remote.source, RaftError::Fatal(_)), "{err:?}");
        }
        other => panic!("expected RemoteError, got {other:?}"),
    }
    n.stop().await;

    // A peer that accepts connections but never answers: our per-RPC deadline fires.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let mut conn = net.new_client(4, &BasicNode::new(silent_addr)).await;
    let short = RPCOption::new(Duration::from_millis(500));
    let err = tokio::time::timeout(Duration::from_secs(20), conn.vote(vote, short)).await.unwrap().unwrap_err();
    assert!(matches!(err, RPCError::Timeout(_)), "{err:?}");
    hold.abort();
}
