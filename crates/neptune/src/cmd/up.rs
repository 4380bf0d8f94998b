//! `neptune up` and `neptune manager`: the Manager as a daemon, alone or
//! with datacenters of simulated (or libvirt) hosts.

#![allow(clippy::print_stdout)] // printing the URL and credentials is the point

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use neptune_manager::up::{self, UpHypervisor, UpOptions};

use super::agent::{HypervisorFlag, LibvirtArgs};
use neptune_manager::{Config, Manager};
use neptune_types::Secret;

/// Start a whole Neptune on this machine: a Manager on SQLite and two
/// datacenters whose hosts are real Agents over simulated hypervisors (or
/// this machine's libvirt).
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Where the database, images and secrets live.
    #[arg(long, default_value = "neptune-data")]
    data_dir: PathBuf,
    /// Address of the Manager's API (127.0.0.1 only by default).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Hosts per datacenter.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Datacenters to simulate.
    #[arg(long, value_delimiter = ',', default_value = "napoli,roma")]
    datacenters: Vec<String>,
    /// What runs the hosts' VMs: simulated, or real QEMU guests through
    /// this machine's libvirt (the hosts share its CPUs and memory).
    #[arg(long, value_enum, default_value = "sim")]
    hypervisor: HypervisorFlag,
    #[command(flatten)]
    libvirt: LibvirtArgs,
}

/// Run the Manager daemon (hosts come through their Agents).
#[derive(Debug, clap::Args)]
pub(crate) struct ManagerArgs {
    /// The store: sqlite://PATH or postgres://USER@HOST/DB (a password in a
    /// URL is read from NEPTUNE_DATABASE_URL instead, to stay out of ps).
    #[arg(long, env = "NEPTUNE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The template image repository.
    #[arg(long)]
    image_dir: PathBuf,
    /// File holding the token the Agents accept.
    #[arg(long)]
    agent_token_file: PathBuf,
    /// File holding the first administrator's password (generated and
    /// printed once when absent).
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
    /// This Manager's name among Managers sharing the database (default:
    /// HOSTNAME:PORT); stable across restarts so its jobs resume at once.
    #[arg(long)]
    instance: Option<String>,
    /// Seconds between comparisons of the store with what the Agents run
    /// (0: only on demand, POST /api/v1/reconcile).
    #[arg(long, default_value_t = 60)]
    reconcile_secs: u64,
    /// Seconds an Agent may stay silent before its host is marked
    /// unreachable (give Agents a --heartbeat-secs of a third of it).
    #[arg(long, default_value_t = 15)]
    host_silence_secs: u64,
    /// Seconds between comparisons of every registered Edge Service
    /// Switch's table with the store, which repair what drifted (0: never).
    #[arg(long, default_value_t = 30)]
    switch_repair_secs: u64,
    /// The largest image a user may upload (`neptune template import`), in
    /// bytes.
    #[arg(long, default_value_t = neptune_manager::DEFAULT_MAX_IMAGE_BYTES)]
    max_image_bytes: u64,
    /// The longest a running deploy's or terminate's progress waits in
    /// memory before it is written, in milliseconds (0: after every batch
    /// of steps; other jobs always write after every batch).
    #[arg(long, default_value_t = neptune_manager::jobs::PROGRESS_EVERY_MS)]
    job_progress_ms: u64,
}

pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// SIGINT (Ctrl-C) or SIGTERM, an init system's stop: the Manager stops
/// taking connections, lets open requests finish and exits; its jobs
/// resume at the next start. (SIGTERM's default would end it mid-request.)
async fn stop_signal() {
    neptune_agent::daemon::shutdown_signal().await;
}

pub(crate) fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    super::private_files(args.hypervisor == HypervisorFlag::Libvirt);
    runtime()?.block_on(async {
        let mut opts = UpOptions::new(&args.data_dir);
        opts.listen = args.listen;
        opts.hosts_per_datacenter = args.hosts;
        opts.datacenters = args.datacenters;
        if args.hypervisor == HypervisorFlag::Libvirt {
            opts.hypervisor = UpHypervisor::Libvirt {
                uri: args.libvirt.libvirt_uri,
                kvm: args.libvirt.kvm.into(),
            };
        }
        let (running, server) = up::start(opts, stop_signal()).await?;
        println!("Neptune is up at {}", running.url);
        println!(
            "  console:     {}/  (the web console; log in as below)",
            running.url
        );
        println!(
            "  API:         {}/api/v1  (OpenAPI: {}/api/v1/openapi.json)",
            running.url, running.url
        );
        // The password is shown once, when it is made; it stays in a file
        // only its owner reads.
        if running.admin_password_created {
            println!(
                "  admin:       {} / {}  (shown once; kept in {})",
                running.admin_name,
                running.admin_password.expose(),
                args.data_dir.join("admin.password").display()
            );
        } else {
            println!(
                "  admin:       {}  (password in {})",
                running.admin_name,
                args.data_dir.join("admin.password").display()
            );
        }
        println!("  hosts:       {}", running.hosts.join(", "));
        println!("  switches:    {}", running.switches.join(", "));
        println!("  data:        {}", args.data_dir.display());
        println!(
            "  try:         neptune login --url {} --user admin",
            running.url
        );
        println!("Ctrl-C stops it.");
        server.await.context("the Manager task failed")??;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn manager(args: ManagerArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    super::private_files(false);
    let read = |p: &PathBuf| -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_owned())
    };
    let agent_token = Secret::new(read(&args.agent_token_file)?);
    let mut config = Config::new(args.database_url, args.image_dir);
    config.instance = args.instance.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        format!("{host}:{}", args.listen.port())
    });
    if let Some(p) = &args.admin_password_file {
        config.admin_password = Some(read(p)?);
    }
    config.reconcile_every =
        (args.reconcile_secs > 0).then(|| std::time::Duration::from_secs(args.reconcile_secs));
    config.host_silence = std::time::Duration::from_secs(args.host_silence_secs.max(1));
    config.switch_repair_every = (args.switch_repair_secs > 0)
        .then(|| std::time::Duration::from_secs(args.switch_repair_secs));
    config.max_image_bytes = args.max_image_bytes;
    config.progress_every = std::time::Duration::from_millis(args.job_progress_ms);
    runtime()?.block_on(async {
        let hosts = Arc::new(neptune_manager::agents::AgentDirectory::new(agent_token)?);
        let manager = Manager::open(config, hosts).await?;
        match (&manager.created_admin, &args.admin_password_file) {
            // The operator has the password already: never echo it.
            (Some((name, _)), Some(file)) => println!(
                "created the first administrator: {name} (password from {})",
                file.display()
            ),
            (Some((name, password)), None) => {
                println!("created the first administrator: {name} / {password} (shown once)")
            }
            (None, _) => {}
        }
        let (listener, addr) = Manager::bind(args.listen).await?;
        println!("Neptune Manager listening on http://{addr}");
        println!("  console:     http://{addr}/");
        let resumed = manager.resume_jobs().await?;
        if resumed > 0 {
            println!("resumed {resumed} unfinished jobs");
        }
        manager.serve(listener, stop_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
