//! Giving freed memory back to the kernel in the long-running daemons.
//!
//! glibc keeps what a program frees in its heaps (one per thread that
//! allocated, with tokio's worker threads) for reuse, and returns only the
//! tops of them: after a burst (a thousand VIs accepted and terminated) a
//! Manager's resident memory stays at its peak although the memory is
//! free. A thread watches the free memory the heaps hold and, when it
//! passes [`SLACK`], asks glibc to release it (`malloc_trim`, which
//! `madvise`s free pages anywhere in the heaps, not only at their tops).
//!
//! Heaps are also fewer: glibc makes up to eight per core, one for each
//! thread that allocates while the others' are busy, and memory freed in
//! one is not reused by another. With the SQLite connections' threads
//! beside tokio's, a Manager that had accepted and terminated 1 200 VIs
//! held 76 MiB against 26 MiB idle; with as many heaps as cores (at least
//! two), 43 MiB.

use std::time::Duration;

/// Free bytes the heaps may hold before they are trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const SLACK: usize = 16 << 20;

/// How often the free memory is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// Starts the watching thread (none off glibc).
pub(crate) fn start() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    limit_heaps();
    let _ = std::thread::Builder::new()
        .name("neptune-trim".to_owned())
        .spawn(|| loop {
            std::thread::sleep(EVERY);
            trim_if_slack();
        });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(
    unsafe_code,
    reason = "mallinfo2 and malloc_trim read and release glibc's free lists"
)]
fn trim_if_slack() {
    // SAFETY: both take no pointers and only read or release free memory
    // under glibc's own arena locks; what the program holds is untouched.
    unsafe {
        if libc::mallinfo2().fordblks > SLACK {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_if_slack() {}

/// As many heaps as cores, at least two.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "mallopt sets a parameter of glibc's allocator")]
fn limit_heaps() {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let heaps = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: sets a parameter of the allocator, before the runtime's and
    // the store's threads start; takes no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, heaps);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_heaps() {}
