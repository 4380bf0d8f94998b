//! Gives back what a burst of work took: the connections it opened.
//!
//! Every SQLite connection keeps its own page cache (up to 2 MiB by
//! default) and prepared statements, in the C heap. A burst of requests
//! opens up to the pool's maximum, and the pool hands out its idle
//! connections in turn, so a trickle of work afterwards (heartbeats every
//! second) keeps them all open and their caches full: a Manager that had
//! accepted and terminated a thousand VIs kept 6 more connections and
//! about 12 MiB more than before them. Once a pool grown beyond [`KEEP`]
//! has had every connection idle at every look for [`QUIET_AFTER`], its
//! connections are closed; the trickle opens one or two again, and a new
//! burst more (a connection opens in about a millisecond).

use std::time::Duration;

use sqlx::SqlitePool;

/// Connections a quiet pool may have without being closed: the trickle of
/// work an idle Manager does (heartbeats, leases) is served by one or two.
const KEEP: u32 = 2;

/// How long every connection of a pool grown beyond [`KEEP`] must have
/// been idle, looked at every [`LOOK_EVERY`], before they are closed.
const QUIET_AFTER: Duration = Duration::from_secs(3);

/// How often the pool is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The task that closes the connections of a pool a burst grew, once it
/// is quiet; it stops when this is dropped.
#[derive(Debug)]
pub(super) struct Shedding(tokio::task::AbortHandle);

impl Shedding {
    /// Starts looking after `pool`.
    pub(super) fn start(pool: SqlitePool) -> Shedding {
        Shedding(tokio::spawn(shed(pool, KEEP, QUIET_AFTER, LOOK_EVERY)).abort_handle())
    }
}

impl Drop for Shedding {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn shed(pool: SqlitePool, keep: u32, quiet_after: Duration, every: Duration) {
    let mut looks = tokio::time::interval(every);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let needed = quiet_after.as_millis().div_ceil(every.as_millis().max(1));
    let mut quiet = 0u128;
    loop {
        looks.tick().await;
        if pool.is_closed() {
            return;
        }
        let size = pool.size();
        // A connection in use: not quiet. Nothing beyond `keep`: nothing to do.
        if size <= keep || pool.num_idle() < size as usize {
            quiet = 0;
            continue;
        }
        quiet += 1;
        if quiet < needed {
            continue;
        }
        quiet = 0;
        // Every one goes, not only those beyond `keep`: those kept would
        // keep the burst's statements and pages. The trickle opens anew
        // the one or two it needs, which then hold only its own.
        for _ in 0..size {
            // Taken meanwhile: the pool is busy again.
            let Some(conn) = pool.try_acquire() else {
                break;
            };
            // Closing frees its page cache and statements.
            let _ = conn.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sqlx::sqlite::SqlitePoolOptions;

    async fn pool(dir: &tempfile::TempDir) -> SqlitePool {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("q.db").display());
        SqlitePoolOptions::new()
            .max_connections(6)
            .connect(&url)
            .await
            .unwrap()
    }

    /// Opens `n` connections at once, and gives them back.
    async fn burst(pool: &SqlitePool, n: usize) {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(pool.acquire().await.unwrap());
        }
        assert_eq!(pool.size() as usize, n);
    }

    /// Sheds connections beyond 2 after 100 ms quiet, looking every 20 ms.
    fn shed_quickly(pool: &SqlitePool) -> tokio::task::JoinHandle<()> {
        tokio::spawn(shed(
            pool.clone(),
            2,
            Duration::from_millis(100),
            Duration::from_millis(20),
        ))
    }

    /// Waits (at most 5 s) until the pool has no connection open.
    async fn all_closed(pool: &SqlitePool) {
        let started = std::time::Instant::now();
        while pool.size() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "still {}",
                pool.size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_quiet_pool_grown_by_a_burst_closes_its_connections() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        burst(&pool, 6).await;
        let task = shed_quickly(&pool);
        all_closed(&pool).await;
        // The pool still serves, and a trickle within `keep` is left alone.
        let mut one = pool.acquire().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *one).await.unwrap();
        drop(one);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pool.size(), 1);
        task.abort();
    }

    #[tokio::test]
    async fn a_busy_pool_keeps_its_connections() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        burst(&pool, 5).await;
        // One connection stays in use throughout: the pool is not quiet.
        let held = pool.acquire().await.unwrap();
        let size = pool.size();
        let task = shed_quickly(&pool);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pool.size(), size);
        drop(held);
        all_closed(&pool).await;
        task.abort();
    }

    #[tokio::test]
    async fn shedding_stops_with_its_guard() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        let guard = Shedding::start(pool.clone());
        let handle = guard.0.clone();
        drop(guard);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(handle.is_finished());
    }
}
