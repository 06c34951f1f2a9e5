//! What a coordinator's data directory holds: per tree, and in the state
//! tree per key prefix (`r/` results, `k/` their marks, `f/` picture
//! references, …), the keys and their bytes; and the size on disk (sled
//! keeps old copies of rewritten pages until it cleans their segments). `cargo run -p panoptes-coordinator --example store_census
//! -- DATA_DIR` (the coordinator stopped).
use std::collections::BTreeMap;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: store_census DATA_DIR");
    let db = panoptes_coordinator::raft::log_store::open_db(&std::path::Path::new(&dir).join("raft.sled")).expect("open raft.sled");
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (k, v) in tree.iter().flatten() {
            let prefix = match k.get(..2) {
                Some(p) if p[1] == b'/' => String::from_utf8_lossy(p).to_string(),
                _ => String::from_utf8_lossy(&k[..k.len().min(8)]).to_string(),
            };
            let e = by.entry(prefix).or_default();
            e.0 += 1;
            e.1 += (k.len() + v.len()) as u64;
        }
        println!("tree {}", String::from_utf8_lossy(&name));
        for (p, (n, b)) in by {
            println!("  {p:<12} {n:>10} keys {:>12} bytes", b);
        }
    }
    println!("size on disk: {} bytes", db.size_on_disk().unwrap_or(0));
}
