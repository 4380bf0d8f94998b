//! Registration and heartbeat: the Agent posts its host to the Manager's
//! `POST /api/v1/hosts`, which upserts by host name, and repeats it every
//! [`ManagerLink::heartbeat`]. While the Manager is down or refuses, the
//! Agent keeps trying with exponential backoff (up to
//! [`ManagerLink::max_backoff`]), logging the first failure, every tenth
//! one after it, and the recovery.

use std::time::Duration;

use neptune_types::Secret;

use crate::api::RegisterHost;

/// Where and how the Agent reports to its Manager.
#[derive(Debug, Clone)]
pub struct ManagerLink {
    /// The Manager's base URL (`http://host:port`).
    pub url: String,
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
        ManagerLink {
            url: url.into(),
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
    body: &RegisterHost,
) -> Result<(), RegisterError> {
    let url = format!("{}/api/v1/hosts", link.url.trim_end_matches('/'));
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

/// Registers `body` with the Manager forever (until the task is dropped).
pub(crate) async fn heartbeat_loop(link: ManagerLink, body: RegisterHost) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(link.timeout)
        // Below the Manager's 10 s idle timeout (neptune-http).
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot build an HTTP client: not registering with the Manager");
            return;
        }
    };
    let first_retry = link.heartbeat.min(Duration::from_secs(1));
    let mut failures: u64 = 0;
    let mut registered = false;
    let mut backoff = first_retry;
    loop {
        match register_once(&http, &link, &body).await {
            Ok(()) => {
                if !registered {
                    tracing::info!(manager = %link.url, host = %body.name, "registered with the Manager");
                } else if failures > 0 {
                    tracing::info!(manager = %link.url, host = %body.name, failures, "registered with the Manager again");
                } else {
                    tracing::debug!(manager = %link.url, host = %body.name, "heartbeat");
                }
                registered = true;
                failures = 0;
                backoff = first_retry;
                tokio::time::sleep(link.heartbeat).await;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 10 == 0 {
                    tracing::warn!(
                        manager = %link.url,
                        host = %body.name,
                        failures,
                        retry_in_ms = backoff.as_millis() as u64,
                        error = %chain(&e),
                        "cannot register with the Manager"
                    );
                } else {
                    tracing::debug!(error = %chain(&e), failures, "cannot register with the Manager");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(link.max_backoff.max(first_retry));
            }
        }
    }
}
