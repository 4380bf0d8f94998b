//! The Neptune Manager: the control plane of the paper's "Neptune Manager".
//!
//! Users design Virtual Infrastructures and request them; administrators
//! accept or reject them; the lifecycle state machine guards every change.
//! State lives behind the [`neptune_store::Store`] port (SQLite by default,
//! PostgreSQL at scale). The HTTP JSON API is under `/api/v1`, documented by
//! the OpenAPI document that [`openapi()`] builds from the code.

pub mod agents;
pub mod app;
pub mod auth;
pub mod changes;
pub mod error;
pub mod guests;
pub mod heartbeats;
mod http;
pub mod jobs;
mod openapi;
pub mod plan;
pub mod reconcile;
pub mod seed;
pub mod ssh_keys;
pub mod switching;
/// The HTTP server under the API (the crate `neptune-http`).
pub mod server {
    pub use neptune_http::*;
}
pub mod images;
pub mod throttle;
pub mod up;
pub mod views;
pub mod wiring;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use neptune_store::{Quota, Role, Store, UserRecord};
use uuid::Uuid;

pub use openapi::openapi;
pub use views::Views;

/// How a Manager runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store: `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// The image repository: template images live under it.
    pub image_dir: PathBuf,
    /// The first administrator's password; generated (and shown once) when absent.
    pub admin_password: Option<String>,
    /// How long a login session lasts.
    pub session_ttl_ms: i64,
    /// This Manager's name among those sharing the store; keep it stable
    /// across restarts so a restarted Manager resumes its own jobs at once.
    pub instance: String,
    /// The private pools of the Service Switching domain: every VI's links
    /// are numbered from them, unique across all datacenters.
    pub private_pools: Vec<neptune_ipam::ipnet::Ipv4Net>,
    /// How often the store is compared with what the Agents run (see
    /// [`reconcile`]); none: only on demand (`POST /api/v1/reconcile`).
    pub reconcile_every: Option<std::time::Duration>,
    /// How long a host's Agent may stay silent before the host is marked
    /// unreachable (nothing new is placed on it): a few of its heartbeats.
    pub host_silence: std::time::Duration,
    /// How often every registered Edge Service Switch's table is compared
    /// with the store and repaired (see [`switching::repair`]); none: never.
    pub switch_repair_every: Option<std::time::Duration>,
    /// How long a job step waits for a host whose Agent (or a switch) does
    /// not answer before it fails (and its job rolls back).
    pub host_wait: std::time::Duration,
    /// The template of a node whose design names none (the catalogue's
    /// designs name none).
    pub default_template: String,
    /// How long a deploy or resume waits for each guest to say it is ready
    /// before it fails (and its job rolls back).
    pub ready_wait: std::time::Duration,
    /// The longest a running job's progress waits in memory before it is
    /// written (see [`jobs::PROGRESS_EVERY`]); zero writes it after every
    /// batch.
    pub progress_every: std::time::Duration,
    /// The largest image `POST /api/v1/templates/import` takes, in bytes.
    pub max_image_bytes: u64,
    /// Bounds of the API's connections; the number of connections is
    /// lowered further to fit the process's file limit (see [`server`]).
    pub http: server::Limits,
}

impl Config {
    pub fn new(database_url: impl Into<String>, image_dir: impl Into<PathBuf>) -> Self {
        Config {
            database_url: database_url.into(),
            image_dir: image_dir.into(),
            admin_password: None,
            session_ttl_ms: 12 * 3600 * 1000,
            instance: format!("manager-{}", Uuid::new_v4()),
            private_pools: vec![neptune_ipam::ipnet::Ipv4Net::new(
                std::net::Ipv4Addr::new(10, 0, 0, 0),
                8,
            )
            .expect("10.0.0.0/8 is a prefix")],
            reconcile_every: Some(std::time::Duration::from_secs(60)),
            switch_repair_every: Some(DEFAULT_SWITCH_REPAIR),
            host_silence: DEFAULT_HOST_SILENCE,
            http: server::Limits::default(),
            host_wait: jobs::HOST_WAIT,
            ready_wait: jobs::READY_WAIT,
            progress_every: jobs::PROGRESS_EVERY,
            default_template: DEFAULT_TEMPLATE.to_owned(),
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
        }
    }
}

/// The default of [`Config::host_silence`]: 15 s, three of an Agent's
/// default heartbeats.
pub const DEFAULT_HOST_SILENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// The default of [`Config::switch_repair_every`]: 30 s.
pub const DEFAULT_SWITCH_REPAIR: std::time::Duration = std::time::Duration::from_secs(30);

/// The default of [`Config::max_image_bytes`]: 32 GiB.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 32 << 30;

/// The default of [`Config::default_template`].
pub const DEFAULT_TEMPLATE: &str = "debian-12";

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub jobs: jobs::Jobs,
    /// Accepts and resumes plan and commit one at a time per datacenter in
    /// this Manager (see `app::placement::Placing`); Managers sharing a
    /// database are kept apart by its constraints.
    pub planning: Arc<app::placement::Planning>,
    /// Parsed designs and step names, reused across reads.
    pub views: Arc<Views>,
    /// Design bodies read at once (see `http::guard`).
    pub(crate) design_slots: Arc<tokio::sync::Semaphore>,
    /// Failed logins, for brute-force protection.
    pub(crate) logins: Arc<throttle::LoginThrottle>,
    /// Password hashes computed at once (see `auth::off_thread`).
    pub(crate) hashing: Arc<tokio::sync::Semaphore>,
    /// Images uploaded at once (see `app::templates::import`).
    pub(crate) uploads: Arc<tokio::sync::Semaphore>,
    /// Agents' repeated registrations, written in batches.
    pub(crate) heartbeats: Arc<heartbeats::Heartbeats>,
}

/// A Manager ready to serve.
#[derive(Debug)]
pub struct Manager {
    state: AppState,
    /// Set when this start created the first administrator.
    pub created_admin: Option<(String, String)>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Manager {
    /// Opens the store (migrating it) and makes sure an administrator exists.
    pub async fn open(
        config: Config,
        hosts: Arc<dyn jobs::HostDirectory>,
    ) -> anyhow::Result<Manager> {
        let store = neptune_store::connect(&config.database_url)
            .await
            .with_context(|| {
                format!("opening the store at {}", redact_url(&config.database_url))
            })?;
        Manager::with_store(store, config, hosts).await
    }

    pub async fn with_store(
        store: Arc<dyn Store>,
        config: Config,
        hosts: Arc<dyn jobs::HostDirectory>,
    ) -> anyhow::Result<Manager> {
        let mut created_admin = None;
        if store.count_admins().await? == 0 {
            let password = match &config.admin_password {
                Some(p) => p.clone(),
                None => auth::generate_password()?,
            };
            let admin = UserRecord {
                id: Uuid::new_v4().into(),
                name: "admin".to_owned(),
                password_hash: auth::hash_password(&password)?,
                role: Role::Admin,
                quota: Quota::default(),
                created_at: now_ms(),
                disabled_at: None,
            };
            match store.create_user(&admin).await {
                Ok(()) => created_admin = Some((admin.name, password)),
                // Another Manager sharing the database won the race.
                Err(neptune_store::StoreError::Duplicate { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let jobs = jobs::Jobs::new(store.clone(), hosts, config.instance.clone())
            .with_host_wait(config.host_wait)
            .with_ready_wait(config.ready_wait)
            .with_progress_every(config.progress_every);
        Ok(Manager {
            state: AppState {
                store,
                config: Arc::new(config),
                jobs,
                planning: Arc::default(),
                views: Arc::default(),
                design_slots: http::guard::design_slots(),
                logins: Arc::default(),
                hashing: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
                uploads: Arc::new(tokio::sync::Semaphore::new(app::templates::UPLOADS)),
                heartbeats: Arc::default(),
            },
            created_admin,
        })
    }

    /// Resumes the jobs a previous run left unfinished (each finishes or
    /// rolls back), then, in the background, keeps taking over jobs of
    /// Managers that died, marks hosts whose Agent fell silent unreachable,
    /// reconciles the store with what the Agents run, and repairs the
    /// switches' tables.
    pub async fn resume_jobs(&self) -> anyhow::Result<usize> {
        let resumed = self.state.jobs.resume_unfinished().await?;
        tokio::spawn(
            self.state
                .jobs
                .clone()
                .supervise(std::time::Duration::from_secs(2)),
        );
        tokio::spawn(mark_unreachable(self.state.clone()));
        let (beats, store) = (self.state.heartbeats.clone(), self.state.store.clone());
        tokio::spawn(async move { beats.flush_forever(store).await });
        if let Some(every) = self.state.config.reconcile_every {
            tokio::spawn(reconcile::run(self.state.clone(), every));
        }
        if let Some(every) = self.state.config.switch_repair_every {
            tokio::spawn(switching::supervise(self.state.store.clone(), every));
        }
        Ok(resumed)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves the API on `listener` until `shutdown` resolves, within the
    /// configured limits and the process's file limit.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let configured = self.state.config.http;
        let limits = server::Limits {
            max_connections: configured
                .max_connections
                .min(server::Limits::for_this_process().max_connections),
            ..configured
        };
        tracing::info!(max_connections = limits.max_connections, "serving the API");
        server::serve(listener, self.router(), limits, shutdown)
            .await
            .context("serving the API")
    }

    /// Binds `addr` and returns the listener and the address actually bound (port 0 picks one).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    }
}

/// Hosts whose Agent has not been heard from for three heartbeats (15 s)
/// are unreachable; placement skips them until they report again. Expired
/// tokens and a stale copy of the domain's addresses go at the same pace.
async fn mark_unreachable(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let silence = i64::try_from(state.config.host_silence.as_millis()).unwrap_or(i64::MAX);
        if let Err(err) = state.store.mark_unreachable(now_ms() - silence).await {
            tracing::warn!(error = %err, "marking unreachable hosts");
        }
        if let Err(err) = state.store.delete_expired_tokens(now_ms()).await {
            tracing::warn!(error = %err, "deleting expired tokens");
        }
        state.planning.forget_stale_addresses();
    }
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://neptune:hunter2@db:5432/n"),
            "postgres://neptune:***@db:5432/n"
        );
        assert_eq!(
            super::redact_url("sqlite:///var/lib/neptune/n.db"),
            "sqlite:///var/lib/neptune/n.db"
        );
    }
}
