//! Allocator settings for a long-running server.
//!
//! The `orrery` binary allocates with mimalloc (its `#[global_allocator]`): with glibc's
//! malloc, `malloc`/`free`/`malloc_consolidate` and the arena locks were 20-30% of the CPU
//! time of a Stellar RPC backfill (the statements' values, decoded pages) and of uncached
//! GraphQL queries (with in-memory statement journals, the backfill went from 23,100 to
//! 36,200 events/s; BENCHMARKS.md). What still calls glibc's malloc is C code (SQLite's
//! page cache and statements), tuned here:
//!
//! With glibc's defaults, a backfill's large short-lived buffers (decoded log pages, SQL
//! statements of a few MB) raise the dynamic mmap threshold and then land in per-thread heap
//! arenas, where fragmentation keeps them resident: peak RSS grew with the length of the
//! backlog (measured: 185 MB after 100k logs, 197 MB after 400k). Fixing the mmap and trim
//! thresholds at 128 KiB (large buffers are mapped and returned on free) and capping the
//! arenas at two keeps the peak flat (154 MB and 142 MB in the same benchmark; BENCHMARKS.md).
//! Those figures were measured when glibc served every allocation; the EVM backfill's peak
//! RSS has not been measured again with mimalloc (the RPC backfill's has: BENCHMARKS.md).

/// Applies the settings; a no-op outside Linux with glibc.
pub fn tune_for_server() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: libc::c_int = -1;
        const M_MMAP_THRESHOLD: libc::c_int = -3;
        const M_ARENA_MAX: libc::c_int = -8;
        const THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only changes allocator tunables; it is called once at start, before
        // the runtime's threads exist, with documented parameter numbers and valid values.
        unsafe {
            libc::mallopt(M_MMAP_THRESHOLD, THRESHOLD);
            libc::mallopt(M_TRIM_THRESHOLD, THRESHOLD);
            libc::mallopt(M_ARENA_MAX, 2);
        }
    }
}
