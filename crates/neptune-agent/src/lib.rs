//! The Neptune Agent: one per physical host. It serves the Agent API
//! ([`api`]) over the host's [`Hypervisor`], and registers the host with
//! the Manager, repeating the registration as its heartbeat.
//!
//! The Manager reaches hosts only through Agents, over HTTP, even when
//! `neptune up` runs the Manager and several Agents in one process: every
//! Agent is an instance ([`start`] returns its bound address), nothing is
//! global.
//!
//! ```text
//!   Manager ── AgentClient / AgentHypervisor ──HTTP──► Agent ──► Hypervisor (sim | libvirt)
//!      ▲                                                 │
//!      └──────── POST /api/v1/hosts (register, heartbeat)┘
//! ```

pub mod client;
pub mod daemon;
mod migrations;
mod register;
mod server;

/// The Agent API's types and codes, in a crate of their own so the
/// Manager and the OpenAPI document need no server.
pub use neptune_agent_api as api;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use neptune_hypervisor::Hypervisor;
use neptune_types::Secret;
use tokio::task::JoinHandle;

pub use neptune_hypervisor::Capacity;

pub use client::{AgentClient, AgentHypervisor, AgentPool, ClientError};
pub use register::ManagerLink;

/// Everything an Agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The host's name (unique in the Service Switching domain).
    pub name: String,
    /// The datacenter the host belongs to (must exist in the Manager).
    pub datacenter: String,
    /// Address of the Agent API; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The URL the Manager should use to reach this Agent; by default
    /// `http://<bound address>`.
    pub advertise_url: Option<String>,
    /// The token every API call (but `/healthz`) must carry.
    pub token: Secret,
    /// The Manager to register with; none for a standalone Agent.
    pub manager: Option<ManagerLink>,
    pub hypervisor: Arc<dyn Hypervisor>,
    /// Mbit/s of the host's uplink to its datacenter's switch, registered
    /// with the Manager for placement; 0: not known (unlimited).
    pub uplink_mbps: u64,
}

/// Why an Agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the Agent API server failed")]
    Serve(#[source] std::io::Error),
    #[error("the Agent task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot open the simulated hypervisor")]
    Sim(#[source] neptune_hypervisor::sim::SimError),
    #[error("cannot make the libvirt hypervisor's disk directory")]
    Libvirt(#[source] std::io::Error),
}

/// A running Agent.
#[derive(Debug)]
pub struct RunningAgent {
    addr: SocketAddr,
    url: String,
    task: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    /// The address the Agent API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL the Agent registers (where the Manager reaches it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits until the Agent stops (after its shutdown future completes
    /// and in-flight requests finish).
    pub async fn wait(self) -> Result<(), AgentError> {
        self.task.await.map_err(AgentError::Task)?
    }
}

/// A host name as the Manager accepts it: 1 to 64 letters, digits, `-`,
/// `_` or `.`.
fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Refuses a configuration the Manager would refuse.
fn check(config: &AgentConfig) -> Result<(), AgentError> {
    if !valid_host_name(&config.name) {
        return Err(AgentError::Config(format!(
            "{:?} is not a host name (1 to 64 letters, digits, '-', '_' or '.')",
            config.name
        )));
    }
    if config.datacenter.is_empty() {
        return Err(AgentError::Config("the datacenter name is empty".into()));
    }
    if config.token.is_empty() {
        return Err(AgentError::Config("the agent token is empty".into()));
    }
    Ok(())
}

/// An Agent's API and, when it has a Manager, its heartbeat task, for the
/// Agent reached at `url`.
fn agent(
    config: &AgentConfig,
    url: &str,
    shared: Option<register::Shared>,
) -> (axum::Router, Option<JoinHandle<()>>) {
    let capacity = config.hypervisor.capacity();
    let app = server::router(server::ServerState {
        hypervisor: config.hypervisor.clone(),
        name: config.name.clone(),
        datacenter: config.datacenter.clone(),
        token: Arc::new(config.token.clone()),
        migrations: Arc::default(),
    });
    let heartbeat = config.manager.clone().map(|link| {
        let body = api::RegisterHost {
            datacenter: config.datacenter.clone(),
            name: config.name.clone(),
            agent_url: url.to_owned(),
            cpus: capacity.cpus,
            ram_mib: capacity.ram_mib,
            disk_mib: capacity.disk_mib,
            vm_slots: capacity.vm_slots,
            uplink_mbps: config.uplink_mbps,
        };
        tokio::spawn(register::heartbeat_loop(link, body, shared))
    });
    (app, heartbeat)
}

async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), AgentError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: listen,
        source,
    })?;
    Ok((listener, addr))
}

/// Serves `app` on `listener` until `shutdown`, then stops the heartbeats.
fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    heartbeats: Vec<JoinHandle<()>>,
    what: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), AgentError>> {
    tokio::spawn(async move {
        // Bounded as the Manager's API is: header, idle and body timeouts,
        // connections below the file limit (see neptune-http).
        let served = neptune_http::serve(
            listener,
            app,
            neptune_http::Limits::for_this_process(),
            shutdown,
        )
        .await;
        for h in heartbeats {
            h.abort();
        }
        tracing::info!(agents = %what, "agent stopped");
        served.map_err(AgentError::Serve)
    })
}

/// Binds the Agent API and starts serving it (and registering with the
/// Manager, if configured) in a task; returns once the listener is bound.
/// The Agent stops when `shutdown` completes.
pub async fn start(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningAgent, AgentError> {
    check(&config)?;
    let (listener, addr) = bind(config.listen).await?;
    let url = config
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let (app, heartbeat) = agent(&config, &url, None);
    tracing::info!(host = %config.name, datacenter = %config.datacenter, %addr, "agent listening");
    let task = serve(
        listener,
        app,
        heartbeat.into_iter().collect(),
        config.name.clone(),
        shutdown,
    );
    Ok(RunningAgent { addr, url, task })
}

/// Several Agents in one process, served on one listener at `listen`, each
/// under `/hosts/<name>` (its URL `http://ADDR/hosts/<name>`), their
/// heartbeats sharing one HTTP client with at most 8 registrations in
/// flight: many simulated hosts (`neptune up`, benchmarks) cost one socket
/// and a few pooled connections, not files each. Each configuration's `listen` and `advertise_url` are ignored.
#[derive(Debug)]
pub struct RunningFarm {
    /// The URL of each Agent, in the order of the configurations.
    pub urls: Vec<String>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl RunningFarm {
    /// Waits until the Agents stop.
    pub async fn wait(self) -> Result<(), AgentError> {
        self.task.await.map_err(AgentError::Task)?
    }
}

/// Starts the Agents of `configs` on one listener (see [`RunningFarm`]).
pub async fn start_farm(
    configs: Vec<AgentConfig>,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningFarm, AgentError> {
    let mut names = std::collections::HashSet::new();
    for config in &configs {
        check(config)?;
        if !names.insert(config.name.as_str()) {
            return Err(AgentError::Config(format!(
                "host {:?} is named twice",
                config.name
            )));
        }
    }
    let (listener, addr) = bind(listen).await?;
    let shared = match configs.iter().find_map(|c| c.manager.as_ref()) {
        Some(link) => Some(register::Shared {
            http: register::heartbeat_client(link).map_err(AgentError::Config)?,
            in_flight: Arc::new(tokio::sync::Semaphore::new(register::SHARED_IN_FLIGHT)),
        }),
        None => None,
    };
    let mut app = axum::Router::new();
    let mut urls = Vec::new();
    let mut heartbeats = Vec::new();
    for config in &configs {
        let prefix = format!("/hosts/{}", config.name);
        let url = format!("http://{addr}{prefix}");
        let (one, heartbeat) = agent(config, &url, shared.clone());
        app = app.nest(&prefix, one);
        heartbeats.extend(heartbeat);
        urls.push(url);
    }
    tracing::info!(agents = configs.len(), %addr, "agents listening");
    let task = serve(
        listener,
        app,
        heartbeats,
        format!("{} agents", configs.len()),
        shutdown,
    );
    Ok(RunningFarm { urls, task })
}

/// [`start`], then wait until the Agent stops.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    start(config, shutdown).await?.wait().await
}
