//! Brute-force protection of logins: failed attempts are counted per
//! account and source, per source and per account, each in a sliding
//! window; past a limit, logins are refused with `429 Too Many Requests`
//! and `Retry-After` before any password is checked.
//!
//! The pair limit stops one client guessing one account; the source limit
//! stops one client guessing many; the account limit stops many clients
//! guessing one, high enough that one attacker cannot lock its owner out
//! (their own source stays under the pair and source limits). A success
//! clears the pair's count. Memory is bounded: at most [`MAX_KEYS`] keys,
//! expired ones dropped first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Failures allowed per account and source within the window.
pub const PER_ACCOUNT_AND_SOURCE: usize = 5;
/// Failures allowed per source (all accounts) within the window.
pub const PER_SOURCE: usize = 30;
/// Failures allowed per account (all sources) within the window.
pub const PER_ACCOUNT: usize = 100;
/// Keys kept at most.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(String, Option<IpAddr>),
    Source(Option<IpAddr>),
    Account(String),
}

/// Failed logins by key, each with the times of its recent failures.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginThrottle {
    fn keys(account: &str, source: Option<IpAddr>) -> [(Key, usize); 3] {
        [
            (
                Key::Pair(account.to_owned(), source),
                PER_ACCOUNT_AND_SOURCE,
            ),
            (Key::Source(source), PER_SOURCE),
            (Key::Account(account.to_owned()), PER_ACCOUNT),
        ]
    }

    /// `Err(wait)` when a login for `account` from `source` must wait.
    pub fn check(
        &self,
        account: &str,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let Ok(mut failures) = self.failures.lock() else {
            return Ok(());
        };
        let mut wait = Duration::ZERO;
        for (key, limit) in Self::keys(account, source) {
            if let Some(times) = failures.get_mut(&key) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    times.pop_front();
                }
                if times.len() >= limit {
                    // Free again when the failure that filled the limit leaves the window.
                    let oldest = times[times.len() - limit];
                    wait = wait.max(WINDOW.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.max(Duration::from_secs(1)))
        }
    }

    /// Counts a failed login.
    pub fn failed(&self, account: &str, source: Option<IpAddr>, now: Instant) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() + 3 > MAX_KEYS {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
        }
        if failures.len() + 3 > MAX_KEYS {
            // Still full of recent failures: forget the pairs, keep the
            // source and account counts that matter most under attack.
            failures.retain(|k, _| !matches!(k, Key::Pair(..)));
        }
        for (key, limit) in Self::keys(account, source) {
            let times = failures.entry(key).or_default();
            times.push_back(now);
            // Older failures than the limit's worth never decide anything.
            while times.len() > limit {
                times.pop_front();
            }
        }
    }

    /// Clears the pair's count after a successful login.
    pub fn succeeded(&self, account: &str, source: Option<IpAddr>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&Key::Pair(account.to_owned(), source));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn a_pair_is_limited_then_freed_by_time() {
        let t = LoginThrottle::default();
        let start = Instant::now();
        for i in 0..PER_ACCOUNT_AND_SOURCE {
            assert!(t.check("alice", ip(1), start).is_ok(), "attempt {i}");
            t.failed("alice", ip(1), start + Duration::from_secs(i as u64));
        }
        let wait = t
            .check("alice", ip(1), start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, WINDOW - Duration::from_secs(10));
        // Another source, or another account, is not held back.
        assert!(t.check("alice", ip(2), start).is_ok());
        assert!(t.check("bob", ip(1), start).is_ok());
        // Once the first failure leaves the window, one more try is allowed.
        assert!(t.check("alice", ip(1), start + WINDOW).is_ok());
    }

    #[test]
    fn a_source_guessing_many_accounts_is_limited() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..PER_SOURCE {
            let account = format!("user{i}");
            assert!(t.check(&account, ip(1), now).is_ok());
            t.failed(&account, ip(1), now);
        }
        assert!(t.check("someone-else", ip(1), now).is_err());
        assert!(t.check("someone-else", ip(2), now).is_ok());
    }

    #[test]
    fn success_clears_the_pair() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..PER_ACCOUNT_AND_SOURCE - 1 {
            t.failed("alice", ip(1), now);
        }
        t.succeeded("alice", ip(1));
        for _ in 0..PER_ACCOUNT_AND_SOURCE - 1 {
            t.failed("alice", ip(1), now);
        }
        assert!(t.check("alice", ip(1), now).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_KEYS / 2) {
            t.failed(&format!("u{i}"), ip((i % 200) as u8), now);
        }
        assert!(t.failures.lock().unwrap().len() <= MAX_KEYS);
    }
}
