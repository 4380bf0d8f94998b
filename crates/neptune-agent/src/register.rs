//! Registration and heartbeat: the Agent posts its host to the Manager's
//! `POST /api/v1/hosts`, which upserts by host name, and repeats it every
//! [`ManagerLink::heartbeat`]. Several Managers may share a database: the
//! Agent knows them all ([`ManagerLink::urls`]) and reports to the one that
//! answered last; when it does not, the Agent tries the others at once,
//! so a dead Manager does not make the others see its hosts go silent.
//! While every Manager is down or refuses, the Agent keeps trying with
//! exponential backoff (up to [`ManagerLink::max_backoff`]), logging the
//! first failure, every tenth one after it, and the recovery.

use std::time::Duration;

use neptune_types::Secret;

use crate::api::RegisterHost;

/// Where and how the Agent reports to its Manager.
#[derive(Debug, Clone)]
pub struct ManagerLink {
    /// The base URLs (`http://host:port`) of the Managers sharing the
    /// domain's database; the Agent reports to one of them at a time.
    pub urls: Vec<String>,
    /// A Manager API token of an administrator (hosts are admin business).
    pub token: Secret,
    /// Time between two heartbeats.
    pub heartbeat: Duration,
    /// Longest wait between two attempts while the Manager fails.
    pub max_backoff: Duration,
    /// Time one registration request may take.
    pub timeout: Duration,
}

impl ManagerLink {
    /// Heartbeat every 5 s, backoff up to 30 s, 10 s per request.
    pub fn new(url: impl Into<String>, token: Secret) -> Self {
        Self::to_any(vec![url.into()], token)
    }

    /// A link to whichever of the Managers at `urls` answers (in that order
    /// at first).
    pub fn to_any(urls: Vec<String>, token: Secret) -> Self {
        ManagerLink {
            urls,
            token,
            heartbeat: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why one registration failed (for the log).
#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("the Manager is unreachable")]
    Unreachable(#[source] reqwest::Error),
    #[error("the Manager refused the registration ({status}): {body}")]
    Refused {
        status: reqwest::StatusCode,
        body: String,
    },
}

/// Posts the registration once.
async fn register_once(
    http: &reqwest::Client,
    link: &ManagerLink,
    manager: &str,
    body: &RegisterHost,
) -> Result<(), RegisterError> {
    let url = format!("{}/api/v1/hosts", manager.trim_end_matches('/'));
    let resp = http
        .post(url)
        .timeout(link.timeout)
        .bearer_auth(link.token.expose())
        .json(body)
        .send()
        .await
        .map_err(|e| RegisterError::Unreachable(e.without_url()))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(RegisterError::Refused {
        status,
        body: text.chars().take(300).collect(),
    })
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The HTTP client heartbeats are sent with.
pub(crate) fn heartbeat_client(link: &ManagerLink) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(link.timeout)
        // Below the Manager's 10 s idle timeout (neptune-http).
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| chain(&e))
}

/// What the Agents of one process share to report: one HTTP client (and
/// so its connections), and a bound on their registrations in flight, so
/// that thousands starting together open a few connections, not one each.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) http: reqwest::Client,
    pub(crate) in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Registrations of one process's Agents in flight at once.
pub(crate) const SHARED_IN_FLIGHT: usize = 8;

/// Registers `body` with the Manager forever (until the task is dropped),
/// alone or sharing with the other Agents of the process.
/// The wait until the next heartbeat: a random part of `period` after a
/// first registration, else `period` give or take a tenth (so that Agents
/// do not fall into step again). Never longer than 1.1 periods: a
/// Manager's host silence is three.
fn next_wait(period: Duration, first: bool) -> Duration {
    if first {
        period.mul_f64(fastrand::f64())
    } else {
        period.mul_f64(0.9 + 0.2 * fastrand::f64())
    }
}

pub(crate) async fn heartbeat_loop(link: ManagerLink, body: RegisterHost, shared: Option<Shared>) {
    let in_flight = shared.as_ref().map(|s| s.in_flight.clone());
    let http = match shared.map_or_else(|| heartbeat_client(&link), |s| Ok(s.http)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build an HTTP client: not registering with the Manager");
            return;
        }
    };
    if link.urls.is_empty() {
        tracing::error!("no Manager URL: not registering");
        return;
    }
    let first_retry = link.heartbeat.min(Duration::from_secs(1));
    let mut failures: u64 = 0;
    let mut registered = false;
    let mut backoff = first_retry;
    // The Manager reported to last: tried first.
    let mut current = 0;
    loop {
        let mut result = Err(None);
        let permit = match &in_flight {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        for k in 0..link.urls.len() {
            let at = (current + k) % link.urls.len();
            match register_once(&http, &link, &link.urls[at], &body).await {
                Ok(()) => {
                    if at != current {
                        tracing::info!(manager = %link.urls[at], host = %body.name, "reporting to another Manager");
                    }
                    current = at;
                    result = Ok(());
                    break;
                }
                Err(e) => result = Err(Some(e)),
            }
        }
        // Held for the registration only, never across the wait.
        drop(permit);
        let manager = &link.urls[current];
        match result {
            Ok(()) => {
                if !registered {
                    tracing::info!(manager = %manager, host = %body.name, "registered with the Manager");
                } else if failures > 0 {
                    tracing::info!(manager = %manager, host = %body.name, failures, "registered with the Manager again");
                } else {
                    tracing::debug!(manager = %manager, host = %body.name, "heartbeat");
                }
                // After a first registration, or one after failures, a
                // random part of the period: Agents that start together (a
                // datacenter powered on) or that lost the same Manager
                // spread out instead of heartbeating at the same instant
                // ever after.
                let wait = next_wait(link.heartbeat, !registered || failures > 0);
                registered = true;
                failures = 0;
                backoff = first_retry;
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                failures += 1;
                let error = e.map(|e| chain(&e)).unwrap_or_default();
                if failures == 1 || failures % 10 == 0 {
                    tracing::warn!(
                        managers = link.urls.len(),
                        host = %body.name,
                        failures,
                        retry_in_ms = backoff.as_millis() as u64,
                        error = %error,
                        "cannot register with any Manager"
                    );
                } else {
                    tracing::debug!(error = %error, failures, "cannot register with any Manager");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(link.max_backoff.max(first_retry));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first wait falls anywhere in the period, the next ones within a
    /// tenth of it: Agents started together spread over the period.
    #[test]
    fn heartbeats_spread_over_the_period() {
        let period = Duration::from_secs(10);
        let firsts: Vec<Duration> = (0..1000).map(|_| next_wait(period, true)).collect();
        assert!(firsts.iter().all(|w| *w <= period));
        // Each tenth of the period gets some of 1 000 first waits.
        for tenth in 0..10 {
            let (lo, hi) = (period / 10 * tenth, period / 10 * (tenth + 1));
            assert!(
                firsts.iter().any(|w| *w >= lo && *w < hi),
                "no first wait in [{lo:?}, {hi:?})"
            );
        }
        let nexts: Vec<Duration> = (0..1000).map(|_| next_wait(period, false)).collect();
        assert!(nexts
            .iter()
            .all(|w| *w >= period * 9 / 10 && *w <= period * 11 / 10));
        assert!(nexts.iter().any(|w| *w < period) && nexts.iter().any(|w| *w > period));
    }
}
