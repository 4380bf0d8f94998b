//! `neptune agent`: run the Agent of one physical host.
//!
//! Thin: the daemon lives in `neptune-agent` (`neptune_agent::daemon`).
//! Tokens come from files, never from the command line (`ps` shows it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use neptune_agent::daemon::{DaemonOptions, HypervisorKind, LogLevel, SimDelay};
use neptune_agent::Capacity;

/// Which hypervisor adapter (flag form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HypervisorFlag {
    /// Simulated: VMs in memory, disks as small files in the data directory.
    Sim,
    /// libvirt: QEMU/KVM domains, qcow2 disks in the data directory, one
    /// libvirt network per virtual link (needs virsh and qemu-img).
    Libvirt,
}

/// Whether libvirt guests run on KVM (flag form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KvmFlag {
    /// KVM when a tiny guest runs on it here (probed once; /dev/kvm alone is not enough).
    Auto,
    On,
    /// Software emulation (QEMU TCG).
    Off,
}

impl From<KvmFlag> for Option<bool> {
    fn from(flag: KvmFlag) -> Self {
        match flag {
            KvmFlag::Auto => None,
            KvmFlag::On => Some(true),
            KvmFlag::Off => Some(false),
        }
    }
}

/// How to reach libvirt (`--hypervisor libvirt`).
#[derive(Debug, clap::Args)]
pub(crate) struct LibvirtArgs {
    /// libvirt connection URI (`--hypervisor libvirt`).
    #[arg(long, default_value = "qemu:///system")]
    pub(crate) libvirt_uri: String,
    /// Whether libvirt guests run on KVM.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) kvm: KvmFlag,
}

/// Arguments of `neptune agent`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address of the Agent API (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// The host's name, unique across datacenters.
    #[arg(long)]
    name: String,
    /// The datacenter this host belongs to (must exist in the Manager).
    #[arg(long)]
    datacenter: String,
    /// URL the Manager uses to reach this Agent (default: http://<listen>).
    #[arg(long)]
    advertise_url: Option<String>,
    /// A Manager's URL to register with (omit to run standalone). Give it
    /// once per Manager sharing the domain's database (or as URL,URL,...):
    /// the Agent reports to whichever answers.
    #[arg(long, requires = "manager_token_file", value_delimiter = ',')]
    manager: Vec<String>,
    /// File holding a Manager API token of an administrator.
    #[arg(long, requires = "manager")]
    manager_token_file: Option<PathBuf>,
    /// File holding the token callers of this Agent must present.
    #[arg(long)]
    token_file: PathBuf,
    /// Hypervisor adapter.
    #[arg(long, value_enum, default_value = "sim")]
    hypervisor: HypervisorFlag,
    #[command(flatten)]
    libvirt: LibvirtArgs,
    /// The host's bridge on the datacenter's public network: entry points'
    /// public NICs are plugged into it (`--hypervisor libvirt`; without
    /// it, they get an isolated network with no way out of the host).
    #[arg(long)]
    public_bridge: Option<String>,
    /// The libvirt URI other hosts' Agents reach this host's daemon by to
    /// move VMs here live (`qemu+tls://HOST/system`, `qemu+ssh://HOST/system`;
    /// default: --libvirt-uri, right only where every Agent reaches every
    /// daemon by it).
    #[arg(long)]
    migration_connect: Option<String>,
    /// Where the memory and disk streams of VMs moving here come in
    /// (`tcp://ADDRESS`; default: the address libvirt finds for this
    /// host's name).
    #[arg(long)]
    migration_stream: Option<String>,
    /// The longest a VM moving live from this host may stay paused for
    /// the switch-over, in milliseconds (libvirt's maximum downtime;
    /// QEMU's own is 300, which pauses long enough to stall TCP
    /// connections). A move that has not fitted it after five passes over
    /// the guest's memory doubles it at each pass, up to 1000 (a limit
    /// above that stays as it is; docs/agent.md).
    #[arg(long, default_value_t = neptune_agent::daemon::DEFAULT_MIGRATION_MAX_DOWNTIME_MS,
        value_parser = clap::value_parser!(u64).range(1..=60_000))]
    migration_max_downtime_ms: u64,
    /// Where disks and the VM table live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Physical CPUs offered to VMs.
    #[arg(long, default_value_t = 16)]
    cpus: u32,
    /// RAM offered to VMs (MiB).
    #[arg(long, default_value_t = 65_536)]
    ram_mib: u64,
    /// Disk offered to VM disks (MiB).
    #[arg(long, default_value_t = 1_048_576)]
    disk_mib: u64,
    /// Most VMs at once.
    #[arg(long, default_value_t = 32)]
    vm_slots: u32,
    /// Mbit/s of the host's uplink to its datacenter's switch, for
    /// placement (0: not known, bandwidth does not limit placement here).
    #[arg(long, default_value_t = 0)]
    uplink_mbps: u64,
    /// Seconds between two registrations with the Manager (the heartbeat).
    #[arg(long, default_value_t = 5)]
    heartbeat_secs: u64,
    /// Time a simulated operation takes, OP=MILLIS (repeatable; OP is
    /// all, prepare_disk, remove_disk, define, start, save, restore,
    /// destroy, export_disk, migrate, incoming or join; later entries
    /// win).
    #[arg(long = "sim-delay", value_name = "OP=MILLIS")]
    sim_delays: Vec<SimDelay>,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log_level: LogLevel,
}

/// Runs the Agent until SIGINT (Ctrl-C) or SIGTERM.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::private_files(args.hypervisor == HypervisorFlag::Libvirt);
    let options = DaemonOptions {
        listen: args.listen,
        name: args.name,
        datacenter: args.datacenter,
        advertise_url: args.advertise_url,
        manager_urls: args.manager,
        manager_token_file: args.manager_token_file,
        token_file: args.token_file,
        hypervisor: match args.hypervisor {
            HypervisorFlag::Sim => HypervisorKind::Sim,
            HypervisorFlag::Libvirt => HypervisorKind::Libvirt,
        },
        libvirt_uri: args.libvirt.libvirt_uri,
        kvm: args.libvirt.kvm.into(),
        public_bridge: args.public_bridge,
        migration: neptune_agent::daemon::MigrationEndpoint {
            connect: args.migration_connect,
            stream: args.migration_stream,
        },
        migration_max_downtime: Some(Duration::from_millis(args.migration_max_downtime_ms)),
        data_dir: args.data_dir,
        capacity: Capacity {
            cpus: args.cpus,
            ram_mib: args.ram_mib,
            disk_mib: args.disk_mib,
            vm_slots: args.vm_slots,
        },
        uplink_mbps: args.uplink_mbps,
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        sim_delays: args.sim_delays,
        log_level: args.log_level,
    };
    neptune_agent::daemon::run_blocking(options)?;
    Ok(ExitCode::SUCCESS)
}
