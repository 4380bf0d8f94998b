//! `neptune up`: a whole Neptune on one machine, in one process — a Manager
//! on SQLite in a data directory, and datacenters whose hosts are real
//! Agents (HTTP on 127.0.0.1, all on one listener, each at its own path)
//! over simulated hypervisors. The same pieces
//! as a real deployment; only the hypervisor is simulated. With
//! [`UpHypervisor::Libvirt`] the hosts run real QEMU guests through this
//! machine's libvirt daemon, which they share (each keeps to its own VMs;
//! a virtual link is one bridge joining its VMs on every host).
//!
//! The data directory keeps the database, the template images, the
//! simulated hosts' disks, and three secrets (mode 0600): the first
//! administrator's password, the Agents' token and the Agents' Manager
//! token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use neptune_agent::{AgentConfig, ManagerLink};
use neptune_hypervisor::libvirt::{LibvirtConfig, LibvirtHypervisor};
use neptune_hypervisor::sim::{SimConfig, SimHypervisor};
use neptune_hypervisor::{Capacity, Hypervisor};
use neptune_store::{DatacenterRecord, StoreError, TokenKind, TokenRecord, TokenScope};
use neptune_types::Secret;
use uuid::Uuid;

use crate::agents::AgentDirectory;
use crate::{auth, now_ms, Config, Manager};

/// What `neptune up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub datacenters: Vec<String>,
    pub hosts_per_datacenter: usize,
    /// Capacity of every simulated host (libvirt hosts offer a share of
    /// this machine: see [`UpHypervisor::Libvirt`]).
    pub host_capacity: Capacity,
    /// Mbit/s of every host's uplink (0: not known).
    pub uplink_mbps: u64,
    pub hypervisor: UpHypervisor,
}

/// What runs the VMs of `neptune up`'s hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpHypervisor {
    /// The simulated adapter: no guest runs.
    Sim,
    /// Real QEMU guests through the libvirt daemon at `uri`. The hosts
    /// share this machine: each offers its CPUs and an equal share of three
    /// quarters of its available memory (placement must not promise RAM
    /// the machine does not have).
    Libvirt {
        uri: String,
        /// Whether guests run on KVM (`None`: when `/dev/kvm` exists).
        kvm: Option<bool>,
    },
}

impl UpOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        UpOptions {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            datacenters: vec!["napoli".to_owned(), "roma".to_owned()],
            hosts_per_datacenter: 3,
            host_capacity: Capacity {
                cpus: 16,
                ram_mib: 64 * 1024,
                disk_mib: 1024 * 1024,
                vm_slots: 16,
            },
            // A 10 Gbit/s host port, as in a typical datacenter rack.
            uplink_mbps: 10_000,
            hypervisor: UpHypervisor::Sim,
        }
    }

    /// What each host offers: the configured capacity for simulated
    /// hosts, a share of this machine for libvirt ones.
    fn capacity_per_host(&self) -> Capacity {
        let mut capacity = self.host_capacity;
        if let UpHypervisor::Libvirt { .. } = self.hypervisor {
            let hosts = (self.datacenters.len() * self.hosts_per_datacenter).max(1) as u64;
            capacity.cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            if let Some(mib) = available_ram_mib() {
                capacity.ram_mib = (mib * 3 / 4 / hosts).max(1);
            }
        }
        capacity
    }
}

/// `MemAvailable` of /proc/meminfo, in MiB.
fn available_ram_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// The template of designs that name none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DefaultTemplate {
    /// An empty disk: simulated hosts boot nothing.
    Blank,
    /// The tiny test template, built from Debian's packages once.
    Tiny,
}

impl DefaultTemplate {
    fn name(self) -> &'static str {
        match self {
            DefaultTemplate::Blank => "blank",
            DefaultTemplate::Tiny => crate::guests::TINY_TEMPLATE,
        }
    }

    /// Makes its image in the repository `images` (once) and says how to
    /// register it.
    async fn make(self, images: &Path) -> anyhow::Result<neptune_api::CreateTemplate> {
        let (image, os_name, ram_mib, disk_mib, software) = match self {
            DefaultTemplate::Blank => {
                let image = images.join("blank.qcow2");
                if !image.exists() {
                    let status = tokio::process::Command::new("qemu-img")
                        .args(["create", "-q", "-f", "qcow2"])
                        .arg(&image)
                        .arg("2G")
                        .status()
                        .await
                        .context("running qemu-img (install qemu-utils)")?;
                    anyhow::ensure!(
                        status.success(),
                        "qemu-img could not create {}",
                        image.display()
                    );
                }
                (
                    "blank.qcow2".to_owned(),
                    "none: an empty disk (simulated hosts boot nothing)".to_owned(),
                    512,
                    4096,
                    Vec::new(),
                )
            }
            DefaultTemplate::Tiny => {
                let built = crate::guests::build_tiny(&images.join("neptune-tiny"))
                    .await
                    .context("building the default template of real guests")?;
                let image = built
                    .image
                    .strip_prefix(images)
                    .unwrap_or(&built.image)
                    .to_string_lossy()
                    .into_owned();
                let os = format!("{} {}", built.manifest.os, built.manifest.version);
                let software = built.manifest.software();
                (image, os, 128, 256, software)
            }
        };
        Ok(neptune_api::CreateTemplate {
            name: self.name().to_owned(),
            image,
            os_name,
            vcpus: Some(1),
            ram_mib: Some(ram_mib),
            disk_mib: Some(disk_mib),
            software,
            visibility: None,
        })
    }
}

/// A running `neptune up`.
#[derive(Debug)]
pub struct Up {
    /// The Manager's base URL.
    pub url: String,
    pub admin_name: String,
    /// The first administrator's password (kept in the data directory).
    pub admin_password: Secret,
    /// Whether this start created it (it is shown only then).
    pub admin_password_created: bool,
    pub hosts: Vec<String>,
    /// Each datacenter's Edge Service Switch: `name (care-of ADDRESS)`.
    pub switches: Vec<String>,
}

/// The name of the tokens `up` gives its Agents, before the host's name.
const AGENT_TOKEN_PREFIX: &str = "neptune up agent ";

/// Reads a secret file, or creates it (0600) with `make()`.
fn secret_file(
    path: &Path,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<Secret> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim().to_owned();
        if !text.is_empty() {
            return Ok(Secret::new(text));
        }
    }
    let value = make()?;
    write_secret(path, &value)?;
    Ok(Secret::new(value))
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{value}")?;
    Ok(())
}

/// The Care-of Address of the `i`th datacenter's switch: benchmarking
/// addresses (RFC 2544), which no one routes.
fn care_of(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(198, 18, 0, u8::try_from(i + 1).unwrap_or(u8::MAX))
}

/// Starts an Edge Service Switch per datacenter, on 127.0.0.1 with a
/// simulated data plane (one machine has one network for them all: the
/// switches keep their tables, answer and are driven for real, and move
/// no packets), each with its key and table under `<data>/switches/`, and
/// registers them.
async fn start_switches<F, Fut>(
    state: &crate::AppState,
    dir: &Path,
    names: &[String],
    stopped: F,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let switches_dir = dir.join("switches");
    std::fs::create_dir_all(&switches_dir)
        .with_context(|| format!("creating {}", switches_dir.display()))?;
    let dcs = state.store.list_datacenters().await?;
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let dc = dcs
            .iter()
            .find(|d| &d.name == name)
            .with_context(|| format!("datacenter {name} is missing"))?;
        let key_file = switches_dir.join(format!("{name}.key"));
        secret_file(&key_file, || {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            Ok(neptune_switch::auth::encode_hex(&key))
        })?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let listen = listener.local_addr()?;
        let config = neptune_switch::SwitchConfig {
            name: format!("ess-{name}"),
            listen,
            state_file: switches_dir.join(format!("{name}.table.json")),
            key_file: key_file.clone(),
            care_of: care_of(i),
            home_prefixes: dc
                .home_pools
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("datacenter {name}'s pool: {e}"))?,
            peers: (0..names.len()).filter(|j| *j != i).map(care_of).collect(),
            data_plane: neptune_switch::config::DataPlaneConfig::Simulated,
            max_clock_skew_secs: 30,
            reconcile_secs: 5,
        };
        tasks.push(tokio::spawn(neptune_switch::serve(
            config,
            listener,
            stopped(),
        )));
        state
            .store
            .set_switch(&neptune_store::SwitchRecord {
                datacenter_id: dc.id,
                url: format!("http://{listen}"),
                key_file: key_file.to_string_lossy().into_owned(),
                care_of: care_of(i).to_string(),
                port: "public".to_owned(),
                via: None,
                updated_at: now_ms(),
            })
            .await?;
    }
    Ok(tasks)
}

/// Starts everything and returns once it serves; it runs until `shutdown`.
pub async fn start(
    opts: UpOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Up, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let dir = &opts.data_dir;
    for sub in ["images", "hosts"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let dir = dir.canonicalize()?;
    // The data directory holds the database, every tenant's disks and the
    // secrets below: its owner's alone, but enterable by libvirt's QEMU
    // user on the way to the disks it is given.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = match opts.hypervisor {
            UpHypervisor::Libvirt { .. } => 0o711,
            _ => 0o700,
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    let admin_password_created = !dir.join("admin.password").exists();
    let admin_password = secret_file(&dir.join("admin.password"), auth::generate_password)?;
    let agent_token = secret_file(&dir.join("agent.token"), || Ok(auth::new_token()?.0))?;

    let mut config = Config::new(
        format!("sqlite://{}", dir.join("neptune.db").display()),
        dir.join("images"),
    );
    config.admin_password = Some(admin_password.expose().to_owned());
    config.instance = format!("neptune-up:{}", dir.display());
    // Designs that name no template (the catalogue's) get one that boots
    // where guests really run, and an empty disk where they are simulated.
    let default = match opts.hypervisor {
        UpHypervisor::Libvirt { .. } => DefaultTemplate::Tiny,
        UpHypervisor::Sim => DefaultTemplate::Blank,
    };
    config.default_template = default.name().to_owned();
    let manager =
        Manager::open(config, Arc::new(AgentDirectory::new(agent_token.clone())?)).await?;
    let state = manager.state().clone();
    let (listener, addr) = Manager::bind(opts.listen).await?;
    let url = format!("http://{addr}");

    // Each Agent registers with a token of its own, scoped to its host:
    // minted at every start (the Agents run in this process), the previous
    // start's revoked.
    let admin = state
        .store
        .user_by_name("admin")
        .await
        .context("the administrator is missing")?;
    for stale in state.store.list_tokens(admin.id, now_ms()).await? {
        if stale.name.starts_with(AGENT_TOKEN_PREFIX) {
            let _ = state.store.revoke_token(stale.id, None).await;
        }
    }
    let _ = std::fs::remove_file(dir.join("agents-manager.token"));

    for (i, name) in opts.datacenters.iter().enumerate() {
        // Documentation prefixes (RFC 5737) stand in for public pools.
        let pool = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]
            .get(i)
            .copied();
        let dc = DatacenterRecord {
            public_gateway: None,
            id: Uuid::new_v4().into(),
            name: name.clone(),
            created_at: now_ms(),
            home_pools: pool.map(str::to_owned).into_iter().collect(),
        };
        match state.store.create_datacenter(&dc).await {
            Ok(()) | Err(StoreError::Duplicate { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The default template, so that catalogue designs deploy at once.
    if let Err(StoreError::NotFound { .. }) =
        state.store.template_for(admin.id, default.name()).await
    {
        let req = default.make(&dir.join("images")).await?;
        crate::app::templates::register(&state, admin.id, req)
            .await
            .map_err(|e| anyhow::anyhow!("registering the default template: {e}"))?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };

    let switches = start_switches(&state, &dir, &opts.datacenters, stopped.clone()).await?;

    let capacity = opts.capacity_per_host();
    let mut hosts = Vec::new();
    let mut configs = Vec::new();
    for dc in &opts.datacenters {
        for i in 1..=opts.hosts_per_datacenter {
            let name = format!("{dc}-{i}");
            let data_dir = dir.join("hosts").join(&name);
            let hypervisor: Arc<dyn Hypervisor> = match &opts.hypervisor {
                UpHypervisor::Sim => {
                    Arc::new(SimHypervisor::new(SimConfig::new(data_dir, capacity))?)
                }
                UpHypervisor::Libvirt { uri, kvm } => {
                    let hv = LibvirtHypervisor::new(LibvirtConfig {
                        uri: uri.clone(),
                        data_dir: data_dir.clone(),
                        capacity,
                        kvm: *kvm,
                        // One machine: entry points stay on an isolated
                        // public network.
                        public_bridge: None,
                        migration: Default::default(),
                        // As an Agent's (`neptune agent
                        // --migration-max-downtime-ms`).
                        migration_max_downtime: Some(std::time::Duration::from_millis(
                            neptune_hypervisor::libvirt::DEFAULT_MIGRATION_MAX_DOWNTIME_MS,
                        )),
                    })
                    .with_context(|| format!("preparing {}", data_dir.display()))?;
                    if let Some(closed) = hv.closed_directory() {
                        anyhow::bail!(
                            "libvirt runs QEMU as a user of its own, which cannot enter {} (no o+x): choose a --data-dir it can reach, such as under /var/lib or /srv",
                            closed.display()
                        );
                    }
                    Arc::new(hv)
                }
            };
            let (token, hash) = auth::new_token()?;
            let now = now_ms();
            state
                .store
                .insert_token(&TokenRecord {
                    id: Uuid::new_v4().into(),
                    hash,
                    user_id: admin.id,
                    kind: TokenKind::Api,
                    scope: TokenScope::Agent {
                        host: format!("{dc}/{name}"),
                    },
                    name: format!("{AGENT_TOKEN_PREFIX}{name}"),
                    created_at: now,
                    expires_at: Some(now + 365 * 86_400_000),
                })
                .await?;
            let registration = Secret::new(token);
            let config = AgentConfig {
                name: name.clone(),
                datacenter: dc.clone(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                advertise_url: None,
                token: agent_token.clone(),
                manager: Some(ManagerLink::new(url.clone(), registration.clone())),
                hypervisor,
                uplink_mbps: opts.uplink_mbps,
            };
            configs.push(config);
            hosts.push(name);
        }
    }
    // One listener for every host: a host costs no file of its own.
    let agents =
        neptune_agent::start_farm(configs, SocketAddr::from(([127, 0, 0, 1], 0)), stopped())
            .await?;

    let serve_state = stopped();
    let server = tokio::spawn(async move {
        let resumed = manager.resume_jobs().await?;
        if resumed > 0 {
            tracing::info!(jobs = resumed, "resumed unfinished jobs");
        }
        let result = manager.serve(listener, serve_state).await;
        let _ = agents.wait().await;
        for switch in switches {
            let _ = switch.await;
        }
        result
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    Ok((
        Up {
            url,
            admin_name: admin.name,
            admin_password,
            admin_password_created,
            hosts,
            switches: opts
                .datacenters
                .iter()
                .enumerate()
                .map(|(i, dc)| format!("{dc} (care-of {})", care_of(i)))
                .collect(),
        },
        server,
    ))
}
