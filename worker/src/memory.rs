//! Allocator settings for a long-running worker.
//!
//! Each frame allocates and frees buffers of 1–3 MB (decoded pictures,
//! resized copies, model input and output tensors) from several threads.
//! With glibc's defaults (up to 8 malloc arenas per core) every thread that
//! meets contention gets an arena of its own, and the freed space inside
//! each is kept, not returned: measured with `cargo xtask soak` (25 fps
//! push, `objects`, 10 minutes), a worker's RSS rose from 191 MiB to a
//! plateau near 490 MiB, nearly all of it in 64 MiB arena heaps. Two arenas
//! halve that at the same frame rate; a fixed mmap threshold (every large
//! buffer its own mapping) kept RSS near 130 MiB but cost a third of the
//! frame rate in page faults, so it is not used. Figures: docs/BENCHMARKS.md
//! ("Memory over a long live push").

/// At most this many malloc arenas (glibc's default is 8 per core).
pub const ARENA_MAX: i32 = 2;

/// Apply the setting (glibc only; elsewhere nothing). Call once, early.
/// `MALLOC_ARENA_MAX` in the environment wins; `PANOPTES_MALLOC_TUNING=0`
/// leaves glibc's defaults.
pub fn tune_allocator() {
    if std::env::var("PANOPTES_MALLOC_TUNING").as_deref() == Ok("0") || std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator parameter; it may be called at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}
