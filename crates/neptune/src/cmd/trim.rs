//! Giving freed memory back to the kernel in the long-running daemons.
//!
//! Rust's allocations go to jemalloc (see `main.rs`), which returns what
//! stays unused by itself; the C libraries linked in (SQLite, with its
//! page caches and prepared statements, and libvirt) allocate from glibc.
//! glibc keeps what a program frees in its heaps for reuse and returns
//! only their tops: after a burst a daemon's resident memory would stay
//! at its peak although the memory is free. A thread watches the free
//! memory the heaps hold and asks glibc to release it (`malloc_trim`,
//! which `madvise`s free pages anywhere in the heaps, not only at their
//! tops) when it passes a slack: [`BUSY_SLACK`] while the memory in use
//! grows, so that a burst does not hand back pages it is about to fault
//! in again, and [`QUIET_SLACK`] once it stops growing.
//!
//! Heaps are also fewer: glibc makes up to eight per core, one for each
//! thread that allocates while the others' are busy, and memory freed in
//! one is not reused by another. With the SQLite connections' threads
//! beside tokio's (measured when Rust's allocations were glibc's too), a
//! Manager that had accepted and terminated 1 200 VIs held 76 MiB against
//! 26 MiB idle; with as many heaps as cores (at least two), 43 MiB.

use std::time::Duration;

/// Free bytes the heaps may hold while the memory in use grows.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const BUSY_SLACK: usize = 16 << 20;

/// Free bytes the heaps may hold once the memory in use stops growing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const QUIET_SLACK: usize = 1 << 20;

/// Growth of the memory in use, over one look, that counts as busy: an
/// idle Manager's heartbeats move it by less.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const GROWTH: usize = 1 << 20;

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
        .spawn(|| {
            let mut in_use = 0;
            loop {
                std::thread::sleep(EVERY);
                in_use = trim_if_slack(in_use);
            }
        });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(
    unsafe_code,
    reason = "mallinfo2 and malloc_trim read and release glibc's free lists"
)]
fn trim_if_slack(in_use_before: usize) -> usize {
    // SAFETY: both take no pointers and only read or release free memory
    // under glibc's own arena locks; what the program holds is untouched.
    unsafe {
        let info = libc::mallinfo2();
        let slack = if info.uordblks > in_use_before.saturating_add(GROWTH) {
            BUSY_SLACK
        } else {
            QUIET_SLACK
        };
        if info.fordblks > slack {
            libc::malloc_trim(0);
        }
        info.uordblks
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_if_slack(in_use_before: usize) -> usize {
    in_use_before
}

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
