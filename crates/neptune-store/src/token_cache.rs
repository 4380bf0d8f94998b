//! Tokens already verified, kept so that a request does not read its
//! token from the database each time.
//!
//! Every request is authenticated, and at a domain's size most of them
//! are Agents' heartbeats: 30 000 hosts are a thousand token reads a
//! second, the most frequent statement the Manager ran. A token once found
//! is kept here, with its user, until:
//!
//! - this store writes a token or a user (a logout, a revocation, a
//!   disabled user, a new password or quota): everything kept is forgotten
//!   at once;
//! - another Manager sharing the database does: every change to the
//!   `tokens` and `users` tables advances the `auth_epoch` row (triggers,
//!   in the same transaction), which is read at most every
//!   [`CHECK_EVERY`]; a new epoch forgets everything kept. Deleting a
//!   token that has expired (the sweep every few seconds) changes
//!   nothing kept, and advances nothing;
//! - the token expires (its `expires_at`, checked at each use);
//! - it has been kept for [`MAX_AGE`].
//!
//! A token that is not found is not kept: a flood of wrong tokens reads
//! the database each time, as before, and fills nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::records::{TokenRecord, UserRecord};
use crate::Result;

/// How often the epoch is read: how long another Manager may still
/// accept a token revoked (or a user disabled) through this one's peer.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The longest a verified token is kept without being read again.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(300);

/// The most tokens kept; past it, everything kept is forgotten.
pub(crate) const MAX_ENTRIES: usize = 100_000;

type Verified = (TokenRecord, UserRecord);

#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Token hash -> what it proved, and when it was read.
    entries: HashMap<String, (Verified, Instant)>,
    /// The epoch the entries were read under, once read.
    epoch: Option<i64>,
    /// When the epoch was last read (or is being read).
    checked: Option<Instant>,
    /// Advanced whenever entries are forgotten: a read that began before
    /// is not kept, as it may predate the change.
    generation: u64,
}

impl Inner {
    fn get(&self, hash: &str, now_ms: i64) -> Option<Verified> {
        let ((token, user), at) = self.entries.get(hash)?;
        let live = token.expires_at.is_none_or(|e| e > now_ms);
        (live && at.elapsed() < MAX_AGE).then(|| (token.clone(), user.clone()))
    }

    fn forget(&mut self) {
        self.entries.clear();
        self.generation += 1;
    }
}

impl TokenCache {
    /// The token of `hash` and its user, from what is kept if it may be,
    /// else by `read` (and then kept). `epoch` reads the store's epoch.
    pub(crate) async fn verify<E, R>(
        &self,
        hash: &str,
        now_ms: i64,
        epoch: impl FnOnce() -> E,
        read: impl FnOnce() -> R,
    ) -> Result<Verified>
    where
        E: Future<Output = Result<i64>>,
        R: Future<Output = Result<Verified>>,
    {
        let (due, mut generation) = {
            let mut inner = self.lock();
            let due = inner.checked.is_none_or(|t| t.elapsed() >= CHECK_EVERY);
            if due {
                // Only this request reads the epoch; the others meanwhile
                // use what is kept, at most one read's time staler.
                inner.checked = Some(Instant::now());
            } else if let Some(hit) = inner.get(hash, now_ms) {
                return Ok(hit);
            }
            (due, inner.generation)
        };
        if due {
            let epoch = match epoch().await {
                Ok(e) => e,
                Err(e) => {
                    self.lock().checked = None;
                    return Err(e);
                }
            };
            let mut inner = self.lock();
            if inner.epoch != Some(epoch) {
                inner.forget();
                inner.epoch = Some(epoch);
            }
            if let Some(hit) = inner.get(hash, now_ms) {
                return Ok(hit);
            }
            generation = inner.generation;
        }
        let verified = read().await?;
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.entries.len() >= MAX_ENTRIES {
                inner.forget();
            } else {
                inner
                    .entries
                    .insert(hash.to_owned(), (verified.clone(), Instant::now()));
            }
        }
        Ok(verified)
    }

    /// This store wrote a token or a user: nothing kept may be used again.
    pub(crate) fn forget(&self) {
        self.lock().forget();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map holds no invariant a panic could break halfway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Quota, Role, TokenKind, TokenScope};
    use crate::StoreError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn verified(expires_at: Option<i64>) -> Verified {
        let user = UserRecord {
            id: uuid::Uuid::new_v4().into(),
            name: "u".into(),
            password_hash: String::new(),
            role: Role::User,
            quota: Quota::default(),
            disabled_at: None,
            created_at: 0,
        };
        let token = TokenRecord {
            id: uuid::Uuid::new_v4().into(),
            hash: "h".into(),
            user_id: user.id,
            kind: TokenKind::Api,
            scope: TokenScope::User,
            name: String::new(),
            created_at: 0,
            expires_at,
        };
        (token, user)
    }

    /// Verifies `hash` against an epoch of `epoch`, counting reads.
    async fn check(
        cache: &TokenCache,
        hash: &str,
        now: i64,
        epoch: i64,
        reads: &AtomicUsize,
        found: Option<Verified>,
    ) -> Result<Verified> {
        cache
            .verify(
                hash,
                now,
                || async move { Ok(epoch) },
                || async {
                    reads.fetch_add(1, Ordering::SeqCst);
                    found.ok_or(StoreError::NotFound { what: "token" })
                },
            )
            .await
    }

    #[tokio::test]
    async fn a_verified_token_is_read_once_until_something_changes() {
        let cache = TokenCache::default();
        let reads = AtomicUsize::new(0);
        let v = verified(None);
        for _ in 0..3 {
            check(&cache, "h", 0, 7, &reads, Some(v.clone()))
                .await
                .unwrap();
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // A local write forgets it.
        cache.forget();
        check(&cache, "h", 0, 7, &reads, Some(v.clone()))
            .await
            .unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Another Manager's write: a new epoch, seen at the next check.
        cache.lock().checked = None;
        let gone = check(&cache, "h", 0, 8, &reads, None).await;
        assert!(matches!(gone, Err(StoreError::NotFound { .. })));
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_expired_or_unknown_token_is_never_served_from_memory() {
        let cache = TokenCache::default();
        let reads = AtomicUsize::new(0);
        check(&cache, "h", 0, 1, &reads, Some(verified(Some(100))))
            .await
            .unwrap();
        check(&cache, "h", 99, 1, &reads, Some(verified(Some(100))))
            .await
            .unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Past its expiry the store is asked (and says no).
        assert!(check(&cache, "h", 100, 1, &reads, None).await.is_err());
        assert!(check(&cache, "x", 0, 1, &reads, None).await.is_err());
        assert!(check(&cache, "x", 0, 1, &reads, None).await.is_err());
        assert_eq!(reads.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_read_that_began_before_a_change_is_not_kept() {
        let cache = TokenCache::default();
        let v = verified(None);
        cache
            .verify(
                "h",
                0,
                || async { Ok(1) },
                || async {
                    // The token is revoked while it is being read.
                    cache.forget();
                    Ok(v.clone())
                },
            )
            .await
            .unwrap();
        assert!(cache.lock().entries.is_empty());
    }
}
