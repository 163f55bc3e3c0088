//! Allocator tuning for the long-running daemon.
//!
//! Owns one decision: how glibc's `malloc` should behave in `keysync watch`.
//! By default glibc keeps up to eight arenas per core, and after a large
//! buffer is freed it raises its mmap threshold so the next ones come from
//! the heap and stay resident once freed. A daemon that re-reads a
//! multi-megabyte input or decodes a 100,000-validator answer now and then
//! would keep every such buffer's pages: measured at 100,000 validators,
//! steady-state RSS went from 152 MiB to 88 MiB with the settings below, at
//! no cost in latency (BENCHMARKS.md). An operator's own `MALLOC_ARENA_MAX`
//! or `MALLOC_MMAP_THRESHOLD_` wins. Elsewhere (musl, other systems) this
//! does nothing.

/// Two arenas, and buffers over 256 KiB always mapped (so returned when freed).
pub fn tune_for_daemon() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets allocator parameters; called before
            // the runtime's threads start.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
        }
    }
}
