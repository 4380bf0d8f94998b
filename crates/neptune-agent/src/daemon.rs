//! The `neptune agent` daemon: options as the command line gives them,
//! tokens read from files (never from the command line, where `ps` would
//! show them), a runtime, and the Agent until SIGINT or SIGTERM.

pub use neptune_hypervisor::libvirt::{MigrationEndpoint, DEFAULT_MIGRATION_MAX_DOWNTIME_MS};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use neptune_hypervisor::libvirt::{LibvirtConfig, LibvirtHypervisor};
use neptune_hypervisor::sim::{SimConfig, SimHypervisor, ALL_OPS};
use neptune_hypervisor::{Capacity, Hypervisor, Op};
use neptune_types::Secret;

use crate::{AgentConfig, AgentError, ManagerLink};

/// Log levels, for command lines (`error` to `trace`).
pub use tracing::Level as LogLevel;

/// Which hypervisor adapter drives the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorKind {
    /// The simulated adapter: VMs in memory, disks as small files under
    /// the data directory.
    Sim,
    /// libvirt: QEMU/KVM domains, qcow2 disks under the data directory,
    /// one libvirt network per virtual link.
    Libvirt,
}

/// `OP=MILLIS` (or `all=MILLIS`): the time a simulated operation takes,
/// `OP` one of `prepare_disk`, `remove_disk`, `define`, `start`, `save`,
/// `restore`, `destroy`, `export_disk`, `migrate`, `incoming`, `join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDelay {
    pub ops: Vec<Op>,
    pub delay: Duration,
}

impl std::str::FromStr for SimDelay {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!("{text:?} is not OP=MILLIS (OP: all, prepare_disk, remove_disk, define, start, save, restore, destroy, export_disk, migrate, incoming, join)")
        };
        let (op, millis) = text.split_once('=').ok_or_else(usage)?;
        let millis: u64 = millis.trim().parse().map_err(|_| usage())?;
        let op = op.trim();
        let ops = if op == "all" {
            ALL_OPS.to_vec()
        } else {
            vec![
                serde_json::from_value::<Op>(serde_json::Value::String(op.to_owned()))
                    .map_err(|_| usage())?,
            ]
        };
        Ok(SimDelay {
            ops,
            delay: Duration::from_millis(millis),
        })
    }
}

/// What `neptune agent` is told.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub listen: SocketAddr,
    pub name: String,
    pub datacenter: String,
    pub advertise_url: Option<String>,
    /// The Managers to register with, any one of them (none: standalone).
    pub manager_urls: Vec<String>,
    pub manager_token_file: Option<PathBuf>,
    pub token_file: PathBuf,
    pub hypervisor: HypervisorKind,
    /// libvirt connection URI (the libvirt adapter).
    pub libvirt_uri: String,
    /// Whether libvirt guests run on KVM (`None`: when `/dev/kvm` exists).
    pub kvm: Option<bool>,
    /// The host's bridge on the datacenter's public network, for entry
    /// points (libvirt; `None`: an isolated public network).
    pub public_bridge: Option<String>,
    /// How other hosts' Agents move VMs here live (libvirt only).
    pub migration: MigrationEndpoint,
    /// The longest a VM moving live from here may pause for the
    /// switch-over (libvirt only; `None`: QEMU's own, 300 ms; see
    /// [`DEFAULT_MIGRATION_MAX_DOWNTIME_MS`]).
    pub migration_max_downtime: Option<Duration>,
    pub data_dir: PathBuf,
    pub capacity: Capacity,
    /// Mbit/s of the host's uplink (0: not known).
    pub uplink_mbps: u64,
    pub heartbeat: Duration,
    /// Times of simulated operations (later entries win).
    pub sim_delays: Vec<SimDelay>,
    pub log_level: LogLevel,
}

/// Reads a token from `path`: the file's content without surrounding
/// whitespace, which must not be empty.
pub fn read_token(path: &Path) -> Result<Secret, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AgentError::Config(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(AgentError::Config(format!(
            "the token file {} is empty",
            path.display()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AgentError::Config(format!(
            "the token in {} is not printable ASCII without spaces",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the token file is readable by other users (chmod 600 it)");
            }
        }
    }
    Ok(Secret::new(token))
}

impl DaemonOptions {
    /// The Agent these options describe (opening the hypervisor).
    pub fn into_config(self) -> Result<AgentConfig, AgentError> {
        let token = read_token(&self.token_file)?;
        let manager = match (self.manager_urls.is_empty(), self.manager_token_file) {
            (false, Some(file)) => {
                let mut link = ManagerLink::to_any(self.manager_urls, read_token(&file)?);
                link.heartbeat = self.heartbeat;
                Some(link)
            }
            (true, None) => None,
            (false, None) => {
                return Err(AgentError::Config(
                    "--manager needs --manager-token-file".into(),
                ))
            }
            (true, Some(_)) => {
                return Err(AgentError::Config(
                    "--manager-token-file needs --manager".into(),
                ))
            }
        };
        let hypervisor: Arc<dyn Hypervisor> = match self.hypervisor {
            HypervisorKind::Sim => {
                let mut sim = SimConfig::new(self.data_dir, self.capacity);
                for d in &self.sim_delays {
                    for op in &d.ops {
                        sim.delays.insert(*op, d.delay);
                    }
                }
                Arc::new(SimHypervisor::new(sim).map_err(AgentError::Sim)?)
            }
            HypervisorKind::Libvirt => {
                let hv = LibvirtHypervisor::new(LibvirtConfig {
                    uri: self.libvirt_uri,
                    data_dir: self.data_dir,
                    capacity: self.capacity,
                    kvm: self.kvm,
                    public_bridge: self.public_bridge,
                    migration: self.migration,
                    migration_max_downtime: self.migration_max_downtime,
                })
                .map_err(AgentError::Libvirt)?;
                if let Some(dir) = hv.closed_directory() {
                    tracing::warn!(
                        directory = %dir.display(),
                        "libvirt's QEMU user cannot enter this directory, so no VM will start: chmod o+x it or choose another --data-dir"
                    );
                }
                Arc::new(hv)
            }
        };
        Ok(AgentConfig {
            name: self.name,
            datacenter: self.datacenter,
            listen: self.listen,
            advertise_url: self.advertise_url,
            token,
            manager,
            hypervisor,
            uplink_mbps: self.uplink_mbps,
        })
    }
}

/// Runs the Agent described by `options` until SIGINT or SIGTERM.
pub fn run_blocking(options: DaemonOptions) -> Result<(), AgentError> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(options.log_level)
        .try_init();
    let config = options.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(crate::run(config, shutdown_signal()))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C still ends the process.
            std::future::pending::<()>().await;
        }
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn options(dir: &Path) -> DaemonOptions {
        DaemonOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            name: "h1".into(),
            datacenter: "napoli".into(),
            advertise_url: None,
            manager_urls: Vec::new(),
            manager_token_file: None,
            token_file: dir.join("agent.token"),
            hypervisor: HypervisorKind::Sim,
            libvirt_uri: String::new(),
            kvm: None,
            public_bridge: None,
            migration: MigrationEndpoint::default(),
            migration_max_downtime: None,
            data_dir: dir.join("data"),
            capacity: Capacity {
                cpus: 4,
                ram_mib: 4096,
                disk_mib: 10_000,
                vm_slots: 4,
            },
            uplink_mbps: 1000,
            heartbeat: Duration::from_secs(5),
            sim_delays: vec!["all=5".parse().unwrap(), "start=20".parse().unwrap()],
            log_level: LogLevel::INFO,
        }
    }

    #[test]
    fn tokens_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "  s3cret-token\n").unwrap();
        assert_eq!(read_token(&file).unwrap().expose(), "s3cret-token");
        for bad in ["", " \n", "two words", "line\nline"] {
            std::fs::write(&file, bad).unwrap();
            let err = read_token(&file).unwrap_err().to_string();
            // The refusal never quotes the would-be token.
            assert!(bad.trim().is_empty() || !err.contains(bad.trim()), "{err}");
        }
        assert!(read_token(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn options_become_a_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.token"), "a-token").unwrap();
        std::fs::write(dir.path().join("manager.token"), "m-token").unwrap();

        let config = options(dir.path()).into_config().unwrap();
        assert!(config.manager.is_none());
        assert_eq!(config.token.expose(), "a-token");
        assert_eq!(config.hypervisor.capacity().vm_slots, 4);
        assert!(dir.path().join("data/disks").is_dir());

        let mut o = options(dir.path());
        o.manager_urls = vec!["http://127.0.0.1:9".into()];
        o.manager_token_file = Some(dir.path().join("manager.token"));
        o.heartbeat = Duration::from_secs(2);
        let link = o.into_config().unwrap().manager.unwrap();
        assert_eq!(link.token.expose(), "m-token");
        assert_eq!(link.heartbeat, Duration::from_secs(2));

        let mut o = options(dir.path());
        o.manager_urls = vec!["http://127.0.0.1:9".into()];
        assert!(matches!(o.into_config(), Err(AgentError::Config(_))));
    }

    #[test]
    fn sim_delays_parse() {
        let d: SimDelay = "define=250".parse().unwrap();
        assert_eq!(d.ops, vec![Op::Define]);
        assert_eq!(d.delay, Duration::from_millis(250));
        assert_eq!(
            "all=1".parse::<SimDelay>().unwrap().ops.len(),
            ALL_OPS.len()
        );
        assert_eq!(
            "prepare_disk = 3".parse::<SimDelay>().unwrap().ops,
            vec![Op::PrepareDisk]
        );
        for bad in ["define", "boot=1", "define=-1", "define=x", "=5"] {
            assert!(bad.parse::<SimDelay>().is_err(), "{bad}");
        }
    }
}
