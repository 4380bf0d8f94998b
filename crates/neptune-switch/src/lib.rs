//! The Edge Service Switch (ESS) of Neptune's Service Switching (paper,
//! Section 3): it keeps migrated Virtual Infrastructures reachable at their
//! Home Addresses.
//!
//! The home switch holds the Mobility Binding Table (Home Address -> Care-of
//! Address of the foreign switch) and tunnels incoming packets there; the
//! foreign switch decapsulates and delivers them to its visitors; the VM
//! answers correspondents directly, with its Home Address as source.
//!
//! Layers: [`state`] is the pure table (generations, validation); [`auth`]
//! the HMAC request authentication; [`dataplane`] the `DataPlane` port with
//! simulated, kernel and userspace adapters; [`api`] the HTTP control API;
//! [`run`] ties them together. See `docs/service-switching.md`.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod dataplane;
pub mod netlink;
pub mod nftables;
pub mod offload;
pub mod packet;
pub mod prefix;
pub mod state;

pub use config::SwitchConfig;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

/// Runs a switch until SIGINT or SIGTERM: loads the key, the replay mark and
/// the persisted table, starts the data plane, re-applies the table, then
/// serves the API.
pub async fn run(config: SwitchConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the control API to {}", config.listen))?;
    serve(config, listener, shutdown_signal()).await
}

/// [`run`] on a listener already bound (its address should be
/// `config.listen`), until `shutdown` resolves: a switch inside another
/// program (`neptune up` runs one per datacenter).
pub async fn serve(
    config: SwitchConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.check()?;
    warn_if_key_readable_by_others(&config.key_file);
    let key = auth::SwitchKey::from_file(&config.key_file)?;
    if let Some(dir) = config
        .state_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
    }
    let mark = auth::ReplayMark::load(&config.replay_mark_file())?;
    let started = auth::unix_now();
    if mark.get() > started {
        tracing::warn!(
            seconds = mark.get() - started,
            "the clock is behind the newest timestamp accepted before this start; requests are refused until it passes"
        );
    }
    let verifier = auth::Verifier::durable(key, config.max_clock_skew_secs, mark, started);
    let table = state::SwitchTable::load(&config.state_file)?;
    let plane = dataplane::build(&config).context("starting the data plane")?;
    if let Err(e) = plane.apply(&table, &table.addresses()) {
        // A visitor port may not exist yet; the reconcile loop retries.
        tracing::warn!(error = %anyhow::Error::from(e), "re-applying the persisted table");
    }
    tracing::info!(
        name = %config.name,
        data_plane = plane.kind(),
        bindings = table.bindings.len(),
        visitors = table.visitors.len(),
        "table re-applied"
    );
    let app = Arc::new(api::App::new(config.clone(), verifier, table, plane));
    tracing::info!(listen = %config.listen, "control API serving");

    let reconciler = {
        let app = app.clone();
        let every = Duration::from_secs(config.reconcile_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                app.reconcile();
            }
        })
    };
    // Bounded as every Neptune API is (see neptune-http).
    neptune_http::serve(
        listener,
        api::router(app),
        neptune_http::Limits::for_this_process(),
        shutdown,
    )
    .await
    .context("serving the control API")?;
    reconciler.abort();
    tracing::info!("stopped");
    Ok(())
}

fn warn_if_key_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(key_file = %path.display(), "the key file is readable by group or others; chmod 600 it");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Runs [`run`] on a single-threaded runtime (the data plane has its own threads).
pub fn run_blocking(config: SwitchConfig) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(config))
}
