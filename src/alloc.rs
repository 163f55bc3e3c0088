//! Allocator tuning.
//!
//! Owns one decision: how glibc's `malloc` behaves in keysync. By default
//! glibc keeps up to eight arenas per core, and after a large buffer is
//! freed it raises its mmap threshold, so later large buffers come from the
//! heap and stay resident once freed. keysync's large buffers (a
//! multi-megabyte input, 5,000-validator beacon answers decoded on every
//! core) would then pile up. Measured, with the settings below:
//! - the daemon at 100,000 validators: steady RSS 152 → 88 MiB, no change in
//!   latency;
//! - a one-shot `diff` of 1,000,000 keys: peak RSS ~1,000 → ~680 MiB, no
//!   change in time (at 100,000 keys: ~10 % slower, ~105 → 66 MiB).
//!
//! An operator's own `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` wins.
//! Elsewhere (musl, other systems) this does nothing.

/// Two arenas, and buffers over 256 KiB always mapped (so returned when freed).
pub fn tune() {
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

/// Hands the free memory inside the heap back to the system. A pass that
/// rebuilt the whole set (the start, a reconnect) frees millions of small
/// tree nodes and lookup buffers at once; glibc keeps them resident unless
/// asked. Measured: steady RSS at 1,000,000 validators 467 → 427 MiB after
/// the first pass, and at 100,000 about 1 MiB less over quiet epochs. A call
/// took 0.1 ms at 1,000,000 (`bench/memory.rs`).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free pages; any thread may call it.
        unsafe { libc::malloc_trim(0) };
    }
}
