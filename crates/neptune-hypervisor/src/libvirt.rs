//! The libvirt adapter: VMs as libvirt domains (QEMU, with KVM where the
//! host has it), disks as qcow2 overlays of a host's copy of the template
//! image, cloud-init seeds as read-only CD-ROMs, serial consoles kept in
//! files, and the virtual links as isolated libvirt networks, one bridge
//! per link on the host.
//!
//! It drives libvirt through its own clients, `virsh` and `qemu-img`, as a
//! host's tools would: a binding to the libvirt C library would make every
//! build of the one `neptune` binary (the Manager's too, and `neptune up`'s
//! simulated hosts) need libvirt's headers and library.
//!
//! What is Neptune's on a host: a domain carrying its [`VmSpec`] in its
//! metadata (other domains are listed by nobody and never touched), the
//! disks under `<data_dir>/disks`, their bases under `<data_dir>/bases`,
//! the seeds under `<data_dir>/seeds`, the consoles under
//! `<data_dir>/consoles`, the networks its VMs use (removed with the
//! last VM on them) and those joined to their segments without a VM
//! (recorded under `<data_dir>/joins`, removed when the next VM leaves
//! the host), and the IFB devices that shape its VMs' outbound
//! traffic where libvirt cannot (removed with their VM). Every operation
//! is idempotent, as the port requires; the state of a crash half-way is
//! recognised by the next call.
//!
//! Several hosts may share one libvirt daemon (a single-machine Neptune,
//! the tests): a domain belongs to the host whose data directory holds its
//! disk, and each host sees, counts and touches only its own. The networks
//! are shared: a link's network joins every VM on it that the daemon runs,
//! and goes with the last of them, whichever host it belongs to.

mod bases;
mod console;
mod events;
mod migration;
mod seed;
mod shaping;
mod terminal;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::Mutex;

pub use shaping::BandwidthShaping;

use crate::{
    check_joins, check_room, check_spec, validate_vm_name, write_atomically, Capacity, Hypervisor,
    HypervisorError, Incoming, IncomingRequest, MigrationProgress, MigrationReport, NetworkJoin,
    Op, Outgoing, Result, Segment, VmInfo, VmSpec, VmState, PUBLIC_NETWORK,
};

/// The longest a virsh call may take: a save or restore writes or reads
/// the VM's whole memory.
const VIRSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The longest an `ip` or `bridge` call may take.
const NET_TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The namespace of Neptune's element in a domain's metadata.
const METADATA_NS: &str = "https://neptune-iaas.org/xmlns/libvirt/vm/1";

/// How to reach libvirt and what the host offers.
#[derive(Debug, Clone)]
pub struct LibvirtConfig {
    /// libvirt connection URI, such as `qemu:///system`.
    pub uri: String,
    /// Where VM disks live (`<data_dir>/disks`).
    pub data_dir: PathBuf,
    pub capacity: Capacity,
    /// Whether guests run on KVM; `None`: when KVM runs a guest here (the
    /// adapter boots a tiny one to find out, see [`crate::kvm`]: a host
    /// may have `/dev/kvm` and still fail every guest). Set it to `false`
    /// where QEMU may not use the device (libvirt runs QEMU as its own
    /// user, and a host without udev rules keeps `/dev/kvm` to root):
    /// guests then run under software emulation.
    pub kvm: Option<bool>,
    /// The host's bridge on the datacenter's public network: the NICs on
    /// [`PUBLIC_NETWORK`] (entry points) are plugged into it. `None`: they
    /// get an isolated network of that name, like a link's, with no way
    /// out of the host.
    pub public_bridge: Option<String>,
    /// How other hosts reach this one to move VMs here live.
    pub migration: MigrationEndpoint,
    /// The longest a VM moving live from this host may stay paused for
    /// the switch-over, as QEMU foresees it (libvirt's maximum downtime,
    /// see [`DEFAULT_MIGRATION_MAX_DOWNTIME_MS`]), raised from the sixth
    /// pass over its memory on; `None`: QEMU's own, 300 ms, never raised.
    pub migration_max_downtime: Option<std::time::Duration>,
}

/// The maximum downtime (ms) of the VMs an Agent moves away live, unless
/// told otherwise (`neptune agent --migration-max-downtime-ms`, and
/// `neptune up`).
///
/// QEMU pauses a moving guest once what is left to send fits in this time
/// at the rate it measured. A pause past a correspondent's first TCP
/// retransmission timeout (200 ms at least) costs it that timeout
/// doubled on top. At QEMU's own limit, 300 ms, tiny emulated entry points
/// paused up to 488 ms and stalled their correspondent 185 to 687 ms; at
/// 30 ms they paused 25 to 226 ms and stalled it 300 ms or less in 34 of
/// 36 moves, under QEMU 10 (bench/migration/README.md). What is left of a
/// pause is libvirt's and QEMU's own work around it, which a lower limit
/// does not shorten. A guest writing its memory faster than it is sent
/// does not fit so low a limit: the move raises it from its sixth pass
/// over the memory on (doubling it at each pass, up to a second).
pub const DEFAULT_MIGRATION_MAX_DOWNTIME_MS: u64 = 30;

/// How other hosts' daemons reach this host's to move a VM here live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationEndpoint {
    /// The libvirt URI another host's Agent drives this daemon through
    /// (`qemu+tls://HOST/system`, `qemu+ssh://HOST/system`); `None`: the
    /// connection URI itself, right when every host's Agent reaches every
    /// daemon by it (one machine, or a socket path all of them see).
    pub connect: Option<String>,
    /// Where the memory and disk streams come in (`tcp://ADDRESS`);
    /// `None`: the address libvirt finds for this host's name.
    pub stream: Option<String>,
}

/// The adapter.
#[derive(Debug)]
pub struct LibvirtHypervisor {
    config: LibvirtConfig,
    /// `kvm` where the host has it, else QEMU's software emulation.
    domain_type: &'static str,
    /// How NICs are held to their link's bandwidth.
    shaping: BandwidthShaping,
    /// Serialises the operations that check room or share networks, so two
    /// concurrent defines cannot both take the last slot.
    admission: Mutex<()>,
    /// Serialises the disk room checks (not the copies, which take long).
    disks: Mutex<()>,
    /// One lock per template path: concurrent first disks of a template
    /// wait for one copy of it instead of making one each.
    copies: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// How many `prepare_disk` calls are under way: bases are collected
    /// only when none is, so that none loses the base it is about to use.
    preparing: std::sync::Mutex<usize>,
    /// The consoles typed on, held open.
    terminals: terminal::Terminals,
    /// libvirt's lifecycle events, for the instants of a live move.
    events: events::Events,
}

/// What a disk is made from, kept beside it: a second `prepare_disk` with
/// the same request finds it done, a different one is refused. Written
/// before the copy, it reserves the disk's room on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DiskRecord {
    template_image: String,
    size_mib: u64,
    /// The file name of the base in `<data_dir>/bases` the disk is an
    /// overlay of, once known: a base no record names is collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<String>,
}

impl DiskRecord {
    /// Whether both ask for the same disk.
    fn same_request(&self, other: &Self) -> bool {
        self.template_image == other.template_image && self.size_mib == other.size_mib
    }
}

/// The state file of a VM that was not running when saved: there is no
/// memory to keep, and restoring it boots it.
#[derive(Debug, Serialize, Deserialize)]
struct StoppedState {
    neptune_stopped_vm: VmSpec,
}

impl LibvirtHypervisor {
    /// Whether guests run on KVM (else under QEMU's software emulation).
    pub fn uses_kvm(&self) -> bool {
        self.domain_type == "kvm"
    }

    /// Whether NICs get their link's bandwidth as a limit, one way or
    /// another (see [`BandwidthShaping`]).
    pub fn shapes_bandwidth(&self) -> bool {
        self.shaping != BandwidthShaping::Off
    }

    /// How NICs get their link's bandwidth as a limit: by default
    /// libvirt's `<bandwidth>` where the kernel has what libvirt shapes
    /// with, else the adapter's own `tc` on the taps where the kernel has
    /// that (see `shaping`). Where neither works the spec keeps the
    /// bandwidth and the NIC runs unshaped, rather than every VM on a link
    /// failing to start.
    pub fn bandwidth_shaping(&self) -> BandwidthShaping {
        self.shaping
    }

    /// Shapes NICs this way, whatever the kernel can do: for a daemon on
    /// another machine than the probe's, and for tests.
    pub fn with_bandwidth_shaping(mut self, shaping: BandwidthShaping) -> Self {
        self.shaping = shaping;
        self
    }

    /// An adapter for `config`; creates the disk directory. The data
    /// directory is made absolute: libvirt needs absolute disk paths, and a
    /// domain's disk path tells which host it belongs to.
    pub fn new(mut config: LibvirtConfig) -> std::io::Result<Self> {
        for dir in ["disks", "bases/templates", "seeds", "consoles", "joins"] {
            std::fs::create_dir_all(config.data_dir.join(dir))?;
        }
        config.data_dir = config.data_dir.canonicalize()?;
        let kvm = config.kvm.unwrap_or_else(crate::kvm::usable);
        let domain_type = if kvm { "kvm" } else { "qemu" };
        Ok(Self {
            domain_type,
            shaping: shaping::usable(),
            admission: Mutex::new(()),
            disks: Mutex::new(()),
            copies: std::sync::Mutex::new(HashMap::new()),
            preparing: std::sync::Mutex::new(0),
            terminals: terminal::Terminals::default(),
            events: events::Events::new(&config.uri),
            config,
        })
    }

    /// On a connection whose QEMU runs as a user of its own (libvirt's
    /// system daemon), the first directory on the way to the disks that
    /// users other than its owner cannot enter: QEMU cannot open a disk
    /// below it, and `virsh start` fails with "Permission denied".
    pub fn closed_directory(&self) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        if !self.runs_qemu_as_its_own_user() {
            return None;
        }
        let disks = self.config.data_dir.join("disks");
        disks
            .ancestors()
            .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
            .last()
            .map(Path::to_owned)
    }

    /// The host bridge that stands for network `net`: the public bridge,
    /// for the public network of a host that has one.
    fn public_bridge_for(&self, net: &str) -> Option<&str> {
        self.config
            .public_bridge
            .as_deref()
            .filter(|_| net == PUBLIC_NETWORK)
    }

    /// Whether QEMU runs as a user of its own: the system daemon's
    /// connection.
    fn runs_qemu_as_its_own_user(&self) -> bool {
        self.config.uri.starts_with("qemu:///system")
            || self.config.uri.starts_with("qemu+") && self.config.uri.ends_with("/system")
    }

    /// The path of `vm`'s disk.
    pub fn disk_path(&self, vm: &str) -> PathBuf {
        self.config
            .data_dir
            .join("disks")
            .join(format!("{vm}.qcow2"))
    }

    fn record_path(&self, vm: &str) -> PathBuf {
        self.config
            .data_dir
            .join("disks")
            .join(format!("{vm}.qcow2.json"))
    }

    fn bases_dir(&self) -> PathBuf {
        self.config.data_dir.join("bases")
    }

    fn seeds_dir(&self) -> PathBuf {
        self.config.data_dir.join("seeds")
    }

    /// The path of `vm`'s seed image (`cidata`), when its spec has a seed.
    pub fn seed_path(&self, vm: &str) -> PathBuf {
        self.seeds_dir().join(format!("{vm}.iso"))
    }

    /// The path of the file that keeps `vm`'s serial console.
    pub fn console_path(&self, vm: &str) -> PathBuf {
        self.config
            .data_dir
            .join("consoles")
            .join(format!("{vm}.log"))
    }

    /// Present while `vm`'s guest, in its current run, is known ready: it
    /// said so on its console (which may since have been trimmed or
    /// rotated), or it was restored from a state saved ready.
    fn ready_path(&self, vm: &str) -> PathBuf {
        self.config
            .data_dir
            .join("consoles")
            .join(format!("{vm}.ready"))
    }

    /// What `spec`'s domain has on this host besides the spec.
    fn files_of(&self, spec: &VmSpec) -> DomainExtras {
        DomainExtras {
            shape: self.shaping == BandwidthShaping::Libvirt,
            macs: Vec::new(),
            console_log: path_str(&self.console_path(&spec.name)).to_owned(),
            seed: spec
                .seed
                .as_ref()
                .map(|_| path_str(&self.seed_path(&spec.name)).to_owned()),
        }
    }

    /// Runs `virsh` on the configured connection; its standard output, or
    /// the error it printed.
    ///
    /// A call that takes longer than [`VIRSH_TIMEOUT`] is given up (and
    /// virsh killed) as `Unreachable`: a hung daemon must not hang the
    /// Agent's request with it, and every operation may be repeated.
    async fn virsh(&self, op: Op, vm: &str, args: &[&str]) -> Result<String> {
        self.virsh_at(op, vm, &self.config.uri, args, VIRSH_TIMEOUT)
            .await
    }

    /// Runs `virsh` on connection `uri`, given up after `timeout` (see
    /// [`LibvirtHypervisor::virsh`]).
    async fn virsh_at(
        &self,
        op: Op,
        vm: &str,
        uri: &str,
        args: &[&str],
        timeout: std::time::Duration,
    ) -> Result<String> {
        let mut cmd = Command::new("virsh");
        cmd.arg("--quiet").arg("--connect").arg(uri).args(args);
        let out = run_for(cmd, "virsh", args, timeout)
            .await?
            .map_err(|e| HypervisorError::Unreachable(format!("cannot run virsh: {e}")))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if message.contains("failed to connect to the hypervisor") {
            return Err(HypervisorError::Unreachable(message));
        }
        Err(HypervisorError::Failed {
            op,
            vm: vm.to_owned(),
            message: format!("virsh {}: {message}", args.first().unwrap_or(&"")),
        })
    }

    async fn qemu_img(&self, op: Op, vm: &str, args: &[&str]) -> Result<()> {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .await
            .map_err(|e| failed(op, vm, "cannot run qemu-img", &e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed(
                op,
                vm,
                &format!("qemu-img {}", args.first().unwrap_or(&"")),
                &String::from_utf8_lossy(&out.stderr).trim(),
            ))
        }
    }

    /// Whether `spec` is a VM of this host: its disk is the one this host
    /// prepares for it.
    fn is_mine(&self, spec: &VmSpec) -> bool {
        Path::new(&spec.disk) == self.disk_path(&spec.name)
    }

    /// This host's domains: name, state and spec.
    async fn domains(&self, op: Op) -> Result<Vec<VmInfo>> {
        let mut all = self.all_domains(op).await?;
        all.retain(|d| self.is_mine(&d.spec));
        for d in &mut all {
            d.ready = self.is_ready(d);
        }
        Ok(all)
    }

    /// Whether `vm`'s guest is ready: it runs, and it has no seed, or it
    /// said so on its console since its last boot, or it was restored from
    /// a state saved ready. What the console said is remembered (the
    /// console may lose it to a trim), and the console is trimmed here.
    fn is_ready(&self, vm: &VmInfo) -> bool {
        if vm.state != VmState::Running {
            return false;
        }
        let Some(seed) = &vm.spec.seed else {
            return true;
        };
        let marker = self.ready_path(&vm.name);
        if marker.is_file() {
            return true;
        }
        let log = self.console_path(&vm.name);
        let _ = console::trim(&log);
        // Past a trim, what virtlogd lets grow before it rotates (2 MiB by
        // default) is the most there can be.
        let Ok(text) = console::tail(&log, 4 << 20) else {
            return false;
        };
        if !console::shows_ready(&text, &seed.ready_line()) {
            return false;
        }
        let _ = std::fs::write(&marker, b"console\n");
        true
    }

    /// Neptune's domains on the daemon, every host's (`ready` left false).
    ///
    /// One `virsh list` for every domain's state, then one `dumpxml` per
    /// domain for its spec: a few milliseconds a domain, fine for the
    /// tens of VMs of a host.
    async fn all_domains(&self, op: Op) -> Result<Vec<VmInfo>> {
        let table = self.virsh(op, "", &["list", "--all"]).await?;
        let mut out = Vec::new();
        for (name, running) in table.lines().filter_map(list_row) {
            let xml = match self.virsh(op, name, &["dumpxml", name]).await {
                Ok(xml) => xml,
                // Gone since the list.
                Err(HypervisorError::Failed { message, .. }) if is_absent(&message) => continue,
                Err(e) => return Err(e),
            };
            if let Some(spec) = spec_of(&xml) {
                out.push(VmInfo {
                    name: name.to_owned(),
                    state: if running {
                        VmState::Running
                    } else {
                        VmState::Stopped
                    },
                    ready: false,
                    spec,
                });
            }
        }
        Ok(out)
    }

    /// `name`'s state and spec, or `None` when there is no such domain or
    /// it is not this host's.
    async fn domain(&self, op: Op, name: &str) -> Result<Option<VmInfo>> {
        let xml = match self.virsh(op, name, &["dumpxml", name]).await {
            Ok(xml) => xml,
            Err(HypervisorError::Failed { message, .. }) if is_absent(&message) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(spec) = spec_of(&xml).filter(|s| self.is_mine(s)) else {
            return Ok(None);
        };
        let state = match self.virsh(op, name, &["domstate", name]).await {
            Ok(s) if s.trim() == "running" => VmState::Running,
            Ok(_) => VmState::Stopped,
            Err(HypervisorError::Failed { message, .. }) if is_absent(&message) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut info = VmInfo {
            name: name.to_owned(),
            ready: false,
            state,
            spec,
        };
        info.ready = self.is_ready(&info);
        Ok(Some(info))
    }

    /// Makes sure the libvirt network of each NIC exists, runs and starts
    /// with the host. One `virsh net-list` tells all three, so a start
    /// whose networks are in place costs one call.
    async fn ensure_networks(&self, op: Op, spec: &VmSpec) -> Result<()> {
        let table = self.virsh(op, &spec.name, &["net-list", "--all"]).await?;
        let mut done: Vec<&str> = Vec::new();
        for nic in &spec.nics {
            let net = nic.network.as_str();
            if done.contains(&net) {
                continue;
            }
            done.push(net);
            self.ensure_network(op, &spec.name, &table, net, nic.segment.as_ref())
                .await?;
        }
        Ok(())
    }

    /// Makes sure network `net` exists, runs, starts with the host and,
    /// with a segment, floods to its peers (see
    /// [`LibvirtHypervisor::ensure_tunnel`]). The public bridge stands for
    /// the public network where the host has one: checked, never made.
    /// `table`: what `virsh net-list --all` printed; `vm`: what an error
    /// names (the VM whose network it is, or the network itself).
    async fn ensure_network(
        &self,
        op: Op,
        vm: &str,
        table: &str,
        net: &str,
        segment: Option<&Segment>,
    ) -> Result<()> {
        if let Some(bridge) = self.public_bridge_for(net) {
            // The operator's bridge: checked, never made or removed here.
            if !Path::new("/sys/class/net").join(bridge).exists() {
                return Err(HypervisorError::Failed {
                    op,
                    vm: vm.to_owned(),
                    message: format!("the public bridge {bridge} does not exist on this host"),
                });
            }
            return Ok(());
        }
        let (active, autostart) = match table.lines().find_map(|r| net_row(r, net)) {
            Some(state) => state,
            None => {
                let xml = network_xml(net, segment.is_some());
                let file = self.scratch_file(op, vm, "net.xml", &xml)?;
                let defined = self.virsh(op, vm, &["net-define", path_str(&file)]).await;
                let _ = std::fs::remove_file(&file);
                match defined {
                    Ok(_) => {}
                    // Another host on this daemon made it meanwhile:
                    // the same network, from the same name.
                    Err(HypervisorError::Failed { message, .. })
                        if message.contains("already exists") => {}
                    Err(e) => return Err(e),
                }
                (false, false)
            }
        };
        if !active {
            match self.virsh(op, vm, &["net-start", net]).await {
                Ok(_) => {}
                Err(HypervisorError::Failed { message, .. })
                    if message.contains("already active") => {}
                Err(e) => return Err(e),
            }
        }
        if !autostart {
            self.virsh(op, vm, &["net-autostart", net]).await?;
        }
        if let Some(segment) = segment {
            self.ensure_tunnel(op, vm, net, segment).await?;
        }
        Ok(())
    }

    /// See [`Hypervisor::join_segments`]. Each network made here is
    /// recorded (`joins/`) before it is made, so that the next VM to leave
    /// the host collects it if no VM uses it (see
    /// [`LibvirtHypervisor::release_networks`]).
    async fn join_networks(&self, networks: &[NetworkJoin]) -> Result<()> {
        let op = Op::Join;
        check_joins(networks)?;
        let _admitted = self.admission.lock().await;
        let Some(first) = networks.first() else {
            return Ok(());
        };
        let table = self
            .virsh(op, &first.network, &["net-list", "--all"])
            .await?;
        let mut done: Vec<&str> = Vec::new();
        for join in networks {
            let net = join.network.as_str();
            if done.contains(&net) {
                continue;
            }
            done.push(net);
            if self.public_bridge_for(net).is_none() {
                write_atomically(&self.join_path(net), net.as_bytes())
                    .map_err(|e| failed(op, net, "cannot record the join", &e))?;
            }
            self.ensure_network(op, net, &table, net, join.segment.as_ref())
                .await?;
        }
        Ok(())
    }

    /// The record of network `net`, joined on this host
    /// ([`LibvirtHypervisor::join_networks`]): its name.
    fn join_path(&self, net: &str) -> PathBuf {
        self.config
            .data_dir
            .join("joins")
            .join(format!("{}.network", bridge_name(net)))
    }

    /// The networks joined on this host and not released since.
    fn joined_networks(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.config.data_dir.join("joins")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".network"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// The peers network `network`'s segment floods to on this host, from
    /// its VXLAN device; `None` when the network has no device here. For
    /// tests and diagnostics: what [`Hypervisor::join_segments`] and the
    /// VMs' starts made.
    pub async fn segment_peers(&self, network: &str) -> Result<Option<Vec<SocketAddr>>> {
        let op = Op::Join;
        let dev = tunnel_name(network);
        if !Path::new("/sys/class/net").join(&dev).exists() {
            return Ok(None);
        }
        let link = self
            .net_tool(
                op,
                network,
                "ip",
                &["-details", "-json", "link", "show", "dev", &dev],
            )
            .await?;
        let Some((_, port)) = tunnel_of(&link) else {
            return Ok(None);
        };
        let fdb = self
            .net_tool(
                op,
                network,
                "bridge",
                &["-json", "fdb", "show", "dev", &dev],
            )
            .await?;
        Ok(Some(flood_peers(&fdb, port)))
    }

    /// Joins network `network` to the other hosts of its segment: a VXLAN
    /// device on its bridge, flooding to every peer (no learning over the
    /// tunnel: the peers are known, and a MAC is learnt from the frames
    /// that come in). Peers already there are kept; it runs again at every
    /// start, so a host that rebooted gets its tunnel back.
    async fn ensure_tunnel(
        &self,
        op: Op,
        vm: &str,
        network: &str,
        segment: &Segment,
    ) -> Result<()> {
        let dev = tunnel_name(network);
        let exists = Path::new("/sys/class/net").join(&dev).exists();
        if exists {
            let json = self
                .net_tool(
                    op,
                    vm,
                    "ip",
                    &["-details", "-json", "link", "show", "dev", &dev],
                )
                .await?;
            match tunnel_of(&json) {
                Some((vni, port)) if vni == segment.vni && port == segment.port => {}
                found => {
                    return Err(HypervisorError::Failed {
                        op,
                        vm: vm.to_owned(),
                        message: format!(
                            "device {dev} of network {network} is not VXLAN network {} on port {} (found {found:?})",
                            segment.vni, segment.port
                        ),
                    })
                }
            }
        } else {
            let (vni, port) = (segment.vni.to_string(), segment.port.to_string());
            self.net_tool(
                op,
                vm,
                "ip",
                &[
                    "link",
                    "add",
                    &dev,
                    "type",
                    "vxlan",
                    "id",
                    &vni,
                    "dstport",
                    &port,
                    "nolearning",
                ],
            )
            .await?;
        }
        let bridge = bridge_name(network);
        let mtu = TUNNELLED_MTU.to_string();
        self.net_tool(
            op,
            vm,
            "ip",
            &["link", "set", &dev, "mtu", &mtu, "master", &bridge, "up"],
        )
        .await?;
        let fdb = self
            .net_tool(op, vm, "bridge", &["-json", "fdb", "show", "dev", &dev])
            .await?;
        let known = flood_peers(&fdb, segment.port);
        for peer in segment.peers.iter().filter(|p| !known.contains(p)) {
            let (ip, port) = (peer.ip().to_string(), peer.port().to_string());
            self.net_tool(
                op,
                vm,
                "bridge",
                &[
                    "fdb",
                    "append",
                    "00:00:00:00:00:00",
                    "dev",
                    &dev,
                    "dst",
                    &ip,
                    "port",
                    &port,
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Runs a host networking tool (`ip`, `bridge`, `tc`): its standard
    /// output, or the error it printed.
    async fn net_tool(&self, op: Op, vm: &str, program: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        let out = run_for(cmd, program, args, NET_TOOL_TIMEOUT)
            .await?
            .map_err(|e| failed(op, vm, &format!("cannot run {program}"), &e))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(HypervisorError::Failed {
            op,
            vm: vm.to_owned(),
            message: format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }

    /// Holds the NICs of `spec`'s running domain to their link's bandwidth
    /// with the adapter's own `tc` (see `shaping`), when that is how this
    /// host shapes. Its taps are new at every start and restore, so this
    /// follows each; every step replaces what is there, so it may run
    /// again on a shaped domain.
    async fn shape_taps(&self, op: Op, spec: &VmSpec) -> Result<()> {
        if self.shaping != BandwidthShaping::Tap
            || spec.nics.iter().all(|n| n.bandwidth_mbps.is_none())
        {
            return Ok(());
        }
        let vm = spec.name.as_str();
        let taps = shaping::taps(&self.virsh(op, vm, &["domiflist", vm]).await?);
        if taps.len() != spec.nics.len() {
            return Err(failed(
                op,
                vm,
                "cannot shape its NICs",
                &format!(
                    "libvirt lists {} NICs, the spec {}",
                    taps.len(),
                    spec.nics.len()
                ),
            ));
        }
        for (index, (nic, tap)) in spec.nics.iter().zip(&taps).enumerate() {
            let Some(mbps) = nic.bandwidth_mbps else {
                continue;
            };
            // The tap is where the daemon runs QEMU: not here when the
            // daemon is on another machine or in another namespace.
            let Some(tap) = tap
                .as_deref()
                .filter(|t| Path::new("/sys/class/net").join(t).exists())
            else {
                return Err(failed(
                    op,
                    vm,
                    "cannot shape its NICs",
                    &format!(
                        "the tap of its NIC on {} ({tap:?}) is not in this host's network namespace",
                        nic.network
                    ),
                ));
            };
            let ifb = shaping::ifb_name(vm, index);
            if !Path::new("/sys/class/net").join(&ifb).exists() {
                self.net_tool(op, vm, "ip", &["link", "add", &ifb, "type", "ifb"])
                    .await?;
            }
            let alias = shaping::ifb_alias(vm, index);
            self.net_tool(
                op,
                vm,
                "ip",
                &["link", "set", "dev", &ifb, "alias", &alias, "up"],
            )
            .await?;
            let [ingress, redirect] = shaping::redirect_args(tap, &ifb);
            for args in [
                shaping::tbf_args(tap, mbps),
                shaping::tbf_args(&ifb, mbps),
                ingress,
                redirect,
            ] {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.net_tool(op, vm, "tc", &args).await?;
            }
        }
        Ok(())
    }

    /// Removes the IFB devices of `vm`'s NICs (see `shaping`), found by
    /// their alias: whatever its spec was, and whichever way the host
    /// shapes now.
    async fn release_ifbs(&self, op: Op, vm: &str) -> Result<()> {
        let prefix = shaping::ifb_alias_prefix(vm);
        let Ok(devices) = std::fs::read_dir("/sys/class/net") else {
            return Ok(());
        };
        for dev in devices.flatten() {
            let name = dev.file_name().to_string_lossy().into_owned();
            if !name.starts_with("ntif") {
                continue;
            }
            let alias = std::fs::read_to_string(dev.path().join("ifalias")).unwrap_or_default();
            if alias.trim_end().starts_with(&prefix) {
                self.net_tool(op, vm, "ip", &["link", "del", "dev", &name])
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes the networks of `spec` that no other Neptune domain uses,
    /// of any host, nor a VM accepted to arrive here; and so the networks
    /// joined on this host ([`Hypervisor::join_segments`]) that none
    /// uses.
    async fn release_networks(&self, op: Op, spec: &VmSpec) -> Result<()> {
        let others = self.all_domains(op).await?;
        let arriving = self.arrivals(&spec.name);
        let mut nets: Vec<String> = Vec::new();
        for net in spec
            .nics
            .iter()
            .map(|n| n.network.clone())
            .chain(self.joined_networks())
        {
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        for net in &nets {
            let net = net.as_str();
            if self.public_bridge_for(net).is_some() {
                continue;
            }
            let used = others
                .iter()
                .map(|d| &d.spec)
                .chain(&arriving)
                .any(|s| s.nics.iter().any(|n| n.network == net));
            if used {
                continue;
            }
            // The bridge goes with the network; its tunnel would stay.
            let dev = tunnel_name(net);
            if Path::new("/sys/class/net").join(&dev).exists() {
                self.net_tool(op, &spec.name, "ip", &["link", "del", "dev", &dev])
                    .await?;
            }
            // Stopping an inactive or absent network fails; only the
            // undefine's answer matters.
            let _ = self.virsh(op, &spec.name, &["net-destroy", net]).await;
            match self.virsh(op, &spec.name, &["net-undefine", net]).await {
                Ok(_) => {}
                Err(HypervisorError::Failed { message, .. }) if is_absent(&message) => {}
                Err(e) => return Err(e),
            }
            remove_if_there(&self.join_path(net))
                .map_err(|e| failed(op, &spec.name, "cannot forget a joined network", &e))?;
        }
        Ok(())
    }

    /// Writes `text` to a file of the data directory named for `vm`, for
    /// virsh to read.
    fn scratch_file(&self, op: Op, vm: &str, suffix: &str, text: &str) -> Result<PathBuf> {
        let path = self.config.data_dir.join(format!(".{vm}.{suffix}"));
        std::fs::write(&path, text).map_err(|e| failed(op, vm, "cannot write", &e))?;
        Ok(path)
    }

    /// Defines `spec`'s domain; `macs`: see [`DomainExtras::macs`].
    async fn define_domain(
        &self,
        op: Op,
        spec: &VmSpec,
        uuid: Option<&str>,
        macs: Vec<String>,
    ) -> Result<()> {
        let mut extras = self.files_of(spec);
        extras.macs = macs;
        let file = self.scratch_file(
            op,
            &spec.name,
            "xml",
            &domain_xml(
                self.domain_type,
                spec,
                uuid,
                self.config.public_bridge.as_deref(),
                &extras,
            ),
        )?;
        let defined = self
            .virsh(op, &spec.name, &["define", path_str(&file)])
            .await;
        let _ = std::fs::remove_file(&file);
        defined.map(|_| ())
    }

    /// Writes `spec`'s seed image, replacing what is there; nothing for a
    /// spec without a seed.
    async fn write_seed(&self, op: Op, spec: &VmSpec) -> Result<()> {
        let Some(s) = &spec.seed else {
            return Ok(());
        };
        seed::write_iso(
            &self.seeds_dir(),
            &spec.name,
            s,
            &self.seed_path(&spec.name),
        )
        .await
        .map_err(|e| failed(op, &spec.name, "cannot make the seed", &e))
    }

    /// Boots `spec`'s defined domain afresh: its seed in place, its
    /// readiness forgotten, a boundary in its console (the guest says
    /// again when it is ready).
    async fn boot(&self, op: Op, spec: &VmSpec) -> Result<()> {
        let vm = spec.name.as_str();
        if spec.seed.is_some() && !self.seed_path(vm).is_file() {
            self.write_seed(op, spec).await?;
        }
        remove_if_there(&self.ready_path(vm))
            .and_then(|()| console::mark(&self.console_path(vm), &format!("boot of {vm}")))
            .map_err(|e| failed(op, vm, "cannot prepare the console", &e))?;
        self.virsh(op, vm, &["start", vm]).await.map(|_| ())
    }

    /// Removes what this host keeps of `vm` besides its domain and disk:
    /// its seed, its console (and virtlogd's rotations of it), its
    /// readiness.
    fn remove_vm_files(&self, op: Op, vm: &str) -> Result<()> {
        let log = self.console_path(vm);
        let mut files = vec![self.seed_path(vm), self.ready_path(vm), log.clone()];
        let rotated = format!(
            "{}.",
            log.file_name().and_then(|n| n.to_str()).unwrap_or("")
        );
        if let Ok(entries) = std::fs::read_dir(self.config.data_dir.join("consoles")) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(&rotated))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }));
        }
        for f in files {
            remove_if_there(&f).map_err(|e| failed(op, vm, "cannot remove the VM's files", &e))?;
        }
        Ok(())
    }
}

/// Counts a `prepare_disk` under way for as long as it lives.
struct Preparing<'a>(&'a std::sync::Mutex<usize>);

impl<'a> Preparing<'a> {
    fn enter(count: &'a std::sync::Mutex<usize>) -> Self {
        *count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        Self(count)
    }
}

impl Drop for Preparing<'_> {
    fn drop(&mut self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
    }
}

/// An image's format and virtual size, from `qemu-img info --output=json`;
/// `None` for a format that is no plain word (it becomes a file name).
fn image_info(json: &str) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let format = v["format"].as_str()?;
    let plain = !format.is_empty()
        && format
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    plain.then(|| (format.to_owned(), v["virtual-size"].as_u64().unwrap_or(0)))
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a thread of its own: copying and hashing a template take
/// seconds, which the async runtime's workers must not spend.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("neptune-disk-copy".to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("the copying thread panicked"))
}

/// Runs `cmd` (`program` with `args`) to its end: its output whatever its
/// exit status, or why it could not start. One that takes longer than
/// `timeout` is killed and given up as `Unreachable`: a hung daemon must not
/// hang the Agent's request with it, and every operation may be repeated.
async fn run_for(
    mut cmd: Command,
    program: &str,
    args: &[&str],
    timeout: std::time::Duration,
) -> Result<std::io::Result<std::process::Output>> {
    tokio::time::timeout(timeout, cmd.kill_on_drop(true).output())
        .await
        .map_err(|_| {
            HypervisorError::Unreachable(format!(
                "{program} {} took over {} s",
                args.first().unwrap_or(&""),
                timeout.as_secs()
            ))
        })
}

fn failed(op: Op, vm: &str, what: &str, err: &dyn std::fmt::Display) -> HypervisorError {
    HypervisorError::Failed {
        op,
        vm: vm.to_owned(),
        message: format!("{what}: {err}"),
    }
}

/// Whether virsh's error says the domain or network does not exist.
fn is_absent(message: &str) -> bool {
    message.contains("Domain not found")
        || message.contains("failed to get domain")
        || message.contains("Network not found")
        || message.contains("failed to get network")
}

/// A row of `virsh --quiet list --all` (`<id or -> <name> <state words>`):
/// the name, and whether the domain runs.
fn list_row(row: &str) -> Option<(&str, bool)> {
    let mut words = row.split_whitespace();
    let _id = words.next()?;
    let name = words.next()?;
    Some((name, words.next() == Some("running")))
}

/// Network `name`'s row of `virsh --quiet net-list --all` (`<name> <state>
/// <autostart> <persistent>`): whether it is active and starts with the
/// host; `None` for another network's row.
fn net_row(row: &str, name: &str) -> Option<(bool, bool)> {
    let mut words = row.split_whitespace();
    if words.next()? != name {
        return None;
    }
    Some((words.next() == Some("active"), words.next() == Some("yes")))
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The Linux bridge of a network: at most 15 bytes, the kernel's limit,
/// and the same on every host for the same network.
fn bridge_name(network: &str) -> String {
    format!("ntbr{:011x}", name_hash(network))
}

/// The VXLAN device that carries a network's segment to the other hosts.
fn tunnel_name(network: &str) -> String {
    format!("ntvx{:011x}", name_hash(network))
}

/// 44 bits of FNV-1a: stable across builds and hosts, unlike the std
/// hasher, and 11 hex digits fit a 4-letter prefix in the kernel's 15 bytes.
fn name_hash(network: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h & 0xfff_ffff_ffff
}

/// The MTU of a network whose frames also cross a VXLAN tunnel: a 1500-byte
/// underlay less the 50 bytes VXLAN adds over IPv4.
const TUNNELLED_MTU: u32 = 1450;

/// A tunnel device's VXLAN identifier and UDP port, from `ip -details
/// -json link show`.
fn tunnel_of(json: &str) -> Option<(u32, u16)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let data = &v.get(0)?["linkinfo"]["info_data"];
    Some((
        u32::try_from(data["id"].as_u64()?).ok()?,
        u16::try_from(data["port"].as_u64()?).ok()?,
    ))
}

/// The flooding destinations of a tunnel device, from `bridge -json fdb
/// show dev`: the all-zeros entries, each with its port (the device's own
/// when the entry names none).
fn flood_peers(json: &str, own_port: u16) -> Vec<SocketAddr> {
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|e| e["mac"] == "00:00:00:00:00:00")
        .filter_map(|e| {
            let ip: IpAddr = e["dst"].as_str()?.parse().ok()?;
            let port = e["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(own_port);
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// An isolated network (no forwarding, no addresses on the host): a bridge
/// that joins the host's VMs on one virtual link, and room for the VXLAN
/// header when the link spans hosts (the guests' virtio NICs take the MTU).
fn network_xml(network: &str, tunnelled: bool) -> String {
    let mtu = if tunnelled {
        format!("  <mtu size='{TUNNELLED_MTU}'/>\n")
    } else {
        String::new()
    };
    format!(
        "<network>\n  <name>{}</name>\n  <bridge name='{}' stp='off'/>\n{mtu}</network>\n",
        esc(network),
        bridge_name(network)
    )
}

/// What a domain has on its host besides its spec.
#[derive(Debug, Clone)]
struct DomainExtras {
    /// Whether NICs carry libvirt's `<bandwidth>`.
    shape: bool,
    /// For the NICs whose spec leaves the MAC to libvirt, in order: the
    /// MACs of the saved image being restored (libvirt refuses to restore
    /// a NIC under another MAC).
    macs: Vec<String>,
    /// Where libvirt keeps the serial console's output.
    console_log: String,
    /// The seed image, for a spec with a seed.
    seed: Option<String>,
}

/// libvirt's unit of `<bandwidth>` rates, kilobytes (of 1000 bytes: libvirt
/// hands the rate to `tc` as `kbps`) per second, for `mbps` megabits per
/// second; at least 1, libvirt's smallest.
fn kilobytes_per_second(mbps: u64) -> u64 {
    (mbps.saturating_mul(1000) / 8).max(1)
}

/// The domain of `spec`: its resources, its disk, its seed as a read-only
/// CD-ROM, a virtio NIC on its link's network per interface (on
/// `public_bridge` for the public network, when the host has one) shaped
/// to the link's bandwidth both ways, a serial console logged to a file,
/// and the spec itself in the metadata. `uuid`: the one of a saved image
/// being restored.
fn domain_xml(
    domain_type: &str,
    spec: &VmSpec,
    uuid: Option<&str>,
    public_bridge: Option<&str>,
    files: &DomainExtras,
) -> String {
    let json = serde_json::to_string(spec).unwrap_or_default();
    let mut x = format!(
        "<domain type='{domain_type}'>\n  <name>{}</name>\n",
        esc(&spec.name)
    );
    if let Some(u) = uuid {
        x.push_str(&format!("  <uuid>{}</uuid>\n", esc(u)));
    }
    x.push_str(&format!(
        "  <metadata>\n    <neptune:vm xmlns:neptune='{METADATA_NS}'>{}</neptune:vm>\n  </metadata>\n",
        esc(&json)
    ));
    x.push_str(&format!(
        "  <memory unit='MiB'>{}</memory>\n  <vcpu>{}</vcpu>\n",
        spec.ram_mib, spec.vcpus
    ));
    x.push_str(
        "  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n    <boot dev='hd'/>\n  </os>\n  <features><acpi/></features>\n  <devices>\n",
    );
    x.push_str(&format!(
        "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n",
        esc(&spec.disk)
    ));
    if let Some(seed) = &files.seed {
        x.push_str(&format!(
            "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <source file='{}'/>\n      <target dev='hdc' bus='ide'/>\n      <readonly/>\n    </disk>\n",
            esc(seed)
        ));
    }
    for (i, nic) in spec.nics.iter().enumerate() {
        let (kind, source) = match public_bridge {
            Some(b) if nic.network == PUBLIC_NETWORK => ("bridge", format!("bridge='{}'", esc(b))),
            _ => ("network", format!("network='{}'", esc(&nic.network))),
        };
        x.push_str(&format!("    <interface type='{kind}'>\n"));
        let mac = Some(nic.mac.as_str())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                files
                    .macs
                    .get(i)
                    .map(String::as_str)
                    .filter(|m| !m.is_empty())
            });
        if let Some(mac) = mac {
            x.push_str(&format!("      <mac address='{}'/>\n", esc(mac)));
        }
        x.push_str(&format!(
            "      <source {source}/>\n      <model type='virtio'/>\n"
        ));
        if let Some(mbps) = nic.bandwidth_mbps.filter(|_| files.shape) {
            // No peak or burst: the link's rate is a ceiling, and htb's
            // default burst (a tick's worth) keeps it one.
            let rate = kilobytes_per_second(mbps);
            x.push_str(&format!(
                "      <bandwidth>\n        <inbound average='{rate}'/>\n        <outbound average='{rate}'/>\n      </bandwidth>\n"
            ));
        }
        x.push_str("    </interface>\n");
    }
    // `append`: a VM started again (or restored on this host) adds to its
    // console instead of losing what it printed before.
    x.push_str(&format!(
        "    <serial type='pty'>\n      <log file='{}' append='on'/>\n      <target port='0'/>\n    </serial>\n    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n  </devices>\n</domain>\n",
        esc(&files.console_log)
    ));
    x
}

/// The spec in a domain's XML, when it is Neptune's.
fn spec_of(xml: &str) -> Option<VmSpec> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let node = doc
        .descendants()
        .find(|n| n.tag_name().name() == "vm" && n.tag_name().namespace() == Some(METADATA_NS))?;
    serde_json::from_str(node.text()?).ok()
}

/// The MACs of a domain's NICs, in order.
fn macs_of(xml: &str) -> Vec<String> {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("interface"))
        .map(|i| {
            i.children()
                .find(|n| n.has_tag_name("mac"))
                .and_then(|m| m.attribute("address"))
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The UUID recorded in a saved image's domain XML.
fn uuid_of(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let node = doc.descendants().find(|n| n.has_tag_name("uuid"))?;
    Some(node.text()?.trim().to_owned())
}

#[async_trait]
impl Hypervisor for LibvirtHypervisor {
    fn capacity(&self) -> Capacity {
        self.config.capacity
    }

    async fn prepare_disk(&self, vm: &str, template_image: &str, size_mib: u64) -> Result<String> {
        let op = Op::PrepareDisk;
        validate_vm_name(vm)?;
        let _preparing = Preparing::enter(&self.preparing);
        let reserving = self.disks.lock().await;
        let path = self.disk_path(vm);
        let shown = path_str(&path).to_owned();
        let mut record = DiskRecord {
            template_image: template_image.to_owned(),
            size_mib,
            base: None,
        };
        // Done when the disk is there (it is renamed into place whole) with
        // its record.
        if path.is_file() {
            if let Ok(bytes) = std::fs::read(self.record_path(vm)) {
                return match serde_json::from_slice::<DiskRecord>(&bytes) {
                    Ok(existing) if existing.same_request(&record) => Ok(shown),
                    _ => Err(HypervisorError::SpecMismatch {
                        name: vm.to_owned(),
                    }),
                };
            }
        }
        if !Path::new(template_image).is_file() {
            return Err(HypervisorError::NoImage(template_image.to_owned()));
        }
        let used = self.disk_usage(vm)?.saturating_add(size_mib);
        if used > self.config.capacity.disk_mib {
            return Err(HypervisorError::NoRoom(format!(
                "{used} MiB of disks would exceed the host's {} MiB",
                self.config.capacity.disk_mib
            )));
        }
        self.write_record(op, vm, &record)?;
        drop(reserving);
        let tmp = path.with_extension("qcow2.tmp");
        let made = self.make_overlay(op, vm, &mut record, &tmp).await;
        let made = made.and_then(|()| {
            std::fs::rename(&tmp, &path).map_err(|e| failed(op, vm, "cannot place the disk", &e))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(self.record_path(vm));
            return Err(e);
        }
        Ok(shown)
    }

    async fn remove_disk(&self, vm: &str) -> Result<()> {
        let op = Op::RemoveDisk;
        validate_vm_name(vm)?;
        let _reserving = self.disks.lock().await;
        for p in [self.disk_path(vm), self.record_path(vm)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed(op, vm, "cannot delete the disk", &e)),
            }
        }
        self.collect_bases()
            .map_err(|e| failed(op, vm, "cannot collect the unused bases", &e))
    }

    async fn define(&self, spec: &VmSpec) -> Result<()> {
        let op = Op::Define;
        self.check_own_spec(spec)?;
        // The seed image is the VM's own file, written whole or not at all:
        // made before the lock, so that the defines of a VI's VMs do not
        // wait for each other's (a refused define leaves it to the destroy
        // that undoes it).
        self.write_seed(op, spec).await?;
        let _admitted = self.admission.lock().await;
        let all = self.domains_but_name_taken(op, spec).await?;
        if let Some(existing) = all.iter().find(|d| d.name == spec.name) {
            return if existing.spec == *spec {
                Ok(())
            } else {
                Err(HypervisorError::SpecMismatch {
                    name: spec.name.clone(),
                })
            };
        }
        check_room(self.config.capacity, all.iter().map(|d| &d.spec), spec)?;
        self.ensure_networks(op, spec).await?;
        self.define_domain(op, spec, None, Vec::new()).await
    }

    async fn start(&self, vm: &str) -> Result<()> {
        let op = Op::Start;
        validate_vm_name(vm)?;
        match self.domain(op, vm).await? {
            None => Err(HypervisorError::NoSuchVm(vm.to_owned())),
            // Shaped again: a start interrupted after the boot left it
            // running unshaped.
            Some(d) if d.state == VmState::Running => self.shape_taps(op, &d.spec).await,
            Some(d) => {
                // Networks under the lock (a concurrent define may be
                // making one), the boot outside it.
                {
                    let _admitted = self.admission.lock().await;
                    self.ensure_networks(op, &d.spec).await?;
                }
                match self.boot(op, &d.spec).await {
                    Ok(()) => self.shape_taps(op, &d.spec).await,
                    // Active but not running: paused or crashed, which a
                    // start cannot mend. Say what the guest is.
                    Err(HypervisorError::Failed { message, .. })
                        if message.contains("already active") =>
                    {
                        let state = self
                            .virsh(op, vm, &["domstate", "--reason", vm])
                            .await
                            .unwrap_or_default();
                        Err(HypervisorError::Failed {
                            op,
                            vm: vm.to_owned(),
                            message: format!(
                                "the guest is {} and does not run (where KVM cannot run guests, use --kvm off)",
                                state.trim()
                            ),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn save(&self, vm: &str, state_path: &str) -> Result<()> {
        let op = Op::Save;
        validate_vm_name(vm)?;
        self.terminals.forget(vm);
        let state = Path::new(state_path);
        let Some(d) = self.domain(op, vm).await? else {
            // Already saved (and gone) is fine; never saved is not.
            return if state.is_file() {
                self.remove_vm_files(op, vm)?;
                self.release_ifbs(op, vm).await
            } else {
                Err(HypervisorError::NoSuchVm(vm.to_owned()))
            };
        };
        if let Some(parent) = state.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| failed(op, vm, "cannot make the state's directory", &e))?;
        }
        // Beside the state, whether its guest was ready: restored, it does
        // not boot again to say so.
        let ready_beside = PathBuf::from(format!("{state_path}.ready"));
        if d.ready {
            write_atomically(&ready_beside, b"ready\n")
        } else {
            remove_if_there(&ready_beside)
        }
        .map_err(|e| failed(op, vm, "cannot record the readiness", &e))?;
        match d.state {
            VmState::Running => {
                // Written aside and renamed: the state appears whole or
                // not at all.
                let tmp = format!("{state_path}.tmp");
                self.virsh(op, vm, &["save", vm, &tmp]).await?;
                std::fs::rename(&tmp, state)
                    .map_err(|e| failed(op, vm, "cannot place the state", &e))?;
            }
            // Stopped with a state already written: a save interrupted
            // before the undefine below.
            VmState::Stopped if state.is_file() => {}
            VmState::Stopped => {
                let stopped = StoppedState {
                    neptune_stopped_vm: d.spec.clone(),
                };
                let bytes = serde_json::to_vec(&stopped)
                    .map_err(|e| failed(op, vm, "cannot encode", &e))?;
                write_atomically(state, &bytes)
                    .map_err(|e| failed(op, vm, "cannot write the state", &e))?;
            }
        }
        self.virsh(op, vm, &["undefine", vm]).await?;
        // The host keeps nothing of a saved VM, its seed, console, IFBs
        // and networks included (`restore` makes them again).
        self.remove_vm_files(op, vm)?;
        self.release_ifbs(op, vm).await?;
        let _admitted = self.admission.lock().await;
        self.release_networks(op, &d.spec).await
    }

    async fn restore(&self, spec: &VmSpec, state_path: &str) -> Result<()> {
        let op = Op::Restore;
        self.check_own_spec(spec)?;
        let vm = spec.name.as_str();
        let _admitted = self.admission.lock().await;
        let all = self.domains_but_name_taken(op, spec).await?;
        if let Some(existing) = all.iter().find(|d| d.name == vm) {
            if existing.spec != *spec {
                return Err(HypervisorError::SpecMismatch {
                    name: vm.to_owned(),
                });
            }
            if existing.state == VmState::Running {
                return self.shape_taps(op, spec).await;
            }
            // Defined but stopped (a restore interrupted before the
            // start): start it.
            self.ensure_networks(op, spec).await?;
            self.boot(op, spec).await?;
            return self.shape_taps(op, spec).await;
        }
        let state = Path::new(state_path);
        if !state.is_file() {
            return Err(HypervisorError::NoSavedState(state_path.to_owned()));
        }
        check_room(self.config.capacity, all.iter().map(|d| &d.spec), spec)?;
        self.ensure_networks(op, spec).await?;
        self.write_seed(op, spec).await?;
        let stopped = std::fs::read(state)
            .ok()
            .and_then(|b| serde_json::from_slice::<StoppedState>(&b).ok());
        if stopped.is_some() {
            self.define_domain(op, spec, None, Vec::new()).await?;
            self.boot(op, spec).await?;
            return self.shape_taps(op, spec).await;
        }
        // The guest goes on from where it was saved: ready then, ready now.
        let saved_ready = Path::new(&format!("{state_path}.ready")).is_file();
        let marker = self.ready_path(vm);
        if saved_ready {
            std::fs::write(&marker, b"restored\n")
        } else {
            remove_if_there(&marker)
        }
        .and_then(|()| {
            console::mark(
                &self.console_path(vm),
                &format!("restore of {vm} from {state_path}"),
            )
        })
        .map_err(|e| failed(op, vm, "cannot prepare the console", &e))?;
        // The saved image names the UUID and devices of the VM it came
        // from; it is restored with this host's spec (its disk path) under
        // that UUID, then defined so that it outlives a stop.
        let saved = self
            .virsh(op, vm, &["save-image-dumpxml", state_path])
            .await?;
        if spec_of(&saved).is_some_and(|s| s.name != spec.name) {
            return Err(failed(
                op,
                vm,
                "the saved state belongs to another VM",
                &state_path,
            ));
        }
        let uuid = uuid_of(&saved);
        let mut extras = self.files_of(spec);
        extras.macs = macs_of(&saved);
        let xml = domain_xml(
            self.domain_type,
            spec,
            uuid.as_deref(),
            self.config.public_bridge.as_deref(),
            &extras,
        );
        let file = self.scratch_file(op, vm, "restore.xml", &xml)?;
        let restored = self
            .virsh(op, vm, &["restore", state_path, "--xml", path_str(&file)])
            .await;
        let _ = std::fs::remove_file(&file);
        restored?;
        self.define_domain(op, spec, uuid.as_deref(), extras.macs)
            .await?;
        self.shape_taps(op, spec).await
    }

    async fn export_disk(&self, vm: &str, dest: &str) -> Result<()> {
        let op = Op::ExportDisk;
        validate_vm_name(vm)?;
        let disk = self.disk_path(vm);
        if !disk.is_file() {
            return Err(HypervisorError::NoDisk(vm.to_owned()));
        }
        let dest_path = Path::new(dest);
        if let Some(parent) = dest_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| failed(op, vm, "cannot make the copy's directory", &e))?;
        }
        let tmp = format!("{dest}.tmp");
        // `-U`: the disk may be in use by the running VM (a crash-consistent
        // copy, as the port says).
        self.qemu_img(
            op,
            vm,
            &["convert", "-U", "-O", "qcow2", path_str(&disk), &tmp],
        )
        .await?;
        std::fs::rename(&tmp, dest_path).map_err(|e| failed(op, vm, "cannot place the copy", &e))
    }

    async fn destroy(&self, vm: &str) -> Result<()> {
        let op = Op::Destroy;
        validate_vm_name(vm)?;
        self.terminals.forget(vm);
        let _admitted = self.admission.lock().await;
        let Some(d) = self.domain(op, vm).await? else {
            // Files a destroy interrupted after the undefine left, and what
            // was made for a VM accepted to arrive live that never did.
            let arriving = self.arrival_spec(vm);
            self.remove_vm_files(op, vm)?;
            self.release_ifbs(op, vm).await?;
            if let Some(spec) = arriving {
                self.release_networks(op, &spec).await?;
            }
            return self.forget_arrival(op, vm);
        };
        // Whatever its state: a paused (or crashed, or stopping) domain is
        // active too, and undefining it would leave its QEMU process behind.
        match self.virsh(op, vm, &["destroy", vm]).await {
            Ok(_) => {}
            Err(HypervisorError::Failed { message, .. })
                if message.contains("domain is not running") => {}
            Err(e) => return Err(e),
        }
        match self.virsh(op, vm, &["undefine", vm]).await {
            Ok(_) => {}
            Err(HypervisorError::Failed { message, .. }) if is_absent(&message) => {}
            Err(e) => return Err(e),
        }
        self.remove_vm_files(op, vm)?;
        self.forget_arrival(op, vm)?;
        self.release_ifbs(op, vm).await?;
        self.release_networks(op, &d.spec).await
    }

    async fn list(&self) -> Result<Vec<VmInfo>> {
        // The port has no list operation to name in an error; a list is
        // what a define reads first.
        self.domains(Op::Define).await
    }

    async fn info(&self, vm: &str) -> Result<Option<VmInfo>> {
        validate_vm_name(vm)?;
        // One dumpxml and one domstate, where a list reads every domain.
        Ok(self.domain(Op::Define, vm).await?.map(|mut v| {
            v.ready = self.is_ready(&v);
            v
        }))
    }

    async fn console(&self, vm: &str, max_bytes: u64) -> Result<String> {
        let op = Op::Console;
        validate_vm_name(vm)?;
        let log = self.console_path(vm);
        if !log.is_file() {
            // A VM that has not run yet has said nothing.
            return match self.domain(op, vm).await? {
                Some(_) => Ok(String::new()),
                None => Err(HypervisorError::NoSuchVm(vm.to_owned())),
            };
        }
        let text = console::trim(&log)
            .and_then(|()| console::tail(&log, max_bytes))
            .map_err(|e| failed(op, vm, "cannot read the console", &e))?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    async fn console_input(&self, vm: &str, input: &[u8]) -> Result<()> {
        let op = Op::Console;
        validate_vm_name(vm)?;
        crate::check_console_input(vm, input)?;
        match self.domain(op, vm).await? {
            None => return Err(HypervisorError::NoSuchVm(vm.to_owned())),
            Some(d) if d.state != VmState::Running => {
                return Err(failed(op, vm, "the console", &"the VM does not run"))
            }
            Some(_) => {}
        }
        // The serial port is a pseudo-terminal; its path changes with every
        // start, so it is asked for each time.
        let tty = self.virsh(op, vm, &["ttyconsole", vm]).await?;
        let tty = tty.trim();
        if !tty.starts_with("/dev/pts/") {
            return Err(failed(
                op,
                vm,
                "the console",
                &format!("is {tty:?}, not a terminal"),
            ));
        }
        // At most 4 KiB into a terminal that a thread keeps draining: quick.
        self.terminals
            .write(vm, tty, input)
            .map_err(|e| failed(op, vm, "cannot type on the console", &e))
    }

    async fn outgoing(&self, vm: &str) -> Result<Outgoing> {
        self.outgoing_vm(vm).await
    }

    async fn accept_incoming(&self, request: &IncomingRequest) -> Result<Incoming> {
        self.accept_vm(request).await
    }

    async fn migrate(
        &self,
        vm: &str,
        to: &Incoming,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<MigrationReport> {
        self.migrate_vm(vm, to, progress).await
    }

    async fn wait_running(&self, vm: &str, within: std::time::Duration) -> Result<bool> {
        self.wait_vm_running(vm, within).await
    }

    async fn finish_incoming(&self, vm: &str) -> Result<()> {
        self.finish_vm(vm).await
    }

    async fn join_segments(&self, networks: &[NetworkJoin]) -> Result<()> {
        self.join_networks(networks).await
    }
}

impl LibvirtHypervisor {
    /// A spec this host can run: valid, on the disk this host prepares for
    /// it (as the port asks: the path `prepare_disk` returned).
    fn check_own_spec(&self, spec: &VmSpec) -> Result<()> {
        check_spec(spec)?;
        if self.is_mine(spec) {
            Ok(())
        } else {
            Err(HypervisorError::NoDisk(spec.name.clone()))
        }
    }

    /// This host's domains, refusing `spec` when another host on the same
    /// daemon has a domain of its name (defining it would overwrite that
    /// host's VM).
    async fn domains_but_name_taken(&self, op: Op, spec: &VmSpec) -> Result<Vec<VmInfo>> {
        let mut all = self.all_domains(op).await?;
        if all
            .iter()
            .any(|d| d.name == spec.name && !self.is_mine(&d.spec))
        {
            return Err(HypervisorError::Failed {
                op,
                vm: spec.name.clone(),
                message: "another host on this libvirt daemon has a VM of that name".to_owned(),
            });
        }
        all.retain(|d| self.is_mine(&d.spec));
        Ok(all)
    }

    fn write_record(&self, op: Op, vm: &str, record: &DiskRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).map_err(|e| failed(op, vm, "cannot encode", &e))?;
        write_atomically(&self.record_path(vm), &bytes)
            .map_err(|e| failed(op, vm, "cannot record the disk", &e))
    }

    /// Makes `tmp`, a qcow2 overlay of `record`'s template's base, of the
    /// record's size, and records the base.
    async fn make_overlay(
        &self,
        op: Op,
        vm: &str,
        record: &mut DiskRecord,
        tmp: &Path,
    ) -> Result<()> {
        let info = self
            .qemu_img_out(
                op,
                vm,
                &["info", "-U", "--output=json", &record.template_image],
            )
            .await?;
        let (format, virtual_size) = image_info(&info).ok_or_else(|| {
            failed(
                op,
                vm,
                "cannot read the template's format",
                &record.template_image,
            )
        })?;
        if virtual_size > record.size_mib.saturating_mul(1 << 20) {
            return Err(HypervisorError::InvalidRequest(format!(
                "a disk of {} MiB cannot hold template {:?} of {virtual_size} bytes",
                record.size_mib, record.template_image
            )));
        }
        let base = self
            .base_for(op, vm, &record.template_image, &format)
            .await?;
        record.base = Some(
            base.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
        );
        self.write_record(op, vm, record)?;
        let _ = std::fs::remove_file(tmp);
        let size = format!("{}M", record.size_mib);
        // The backing format is always named: a guessed one lets a raw
        // image whose bytes look like qcow2 name any file as its backing.
        self.qemu_img(
            op,
            vm,
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                path_str(&base),
                "-F",
                &format,
                path_str(tmp),
                &size,
            ],
        )
        .await
    }

    /// This host's copy of `template` (of image format `format`), made if
    /// it has none: the first disk of a template copies it, the others
    /// (concurrent ones too) wait for that copy and use it.
    async fn base_for(&self, op: Op, vm: &str, template: &str, format: &str) -> Result<PathBuf> {
        let lock = {
            let mut copies = self
                .copies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(copies.entry(template.to_owned()).or_default())
        };
        let _copying = lock.lock().await;
        let bases_dir = self.bases_dir();
        if let Some(base) = bases::known_base(&bases_dir, template) {
            return Ok(base);
        }
        let identity = bases::identity(Path::new(template))
            .map_err(|_| HypervisorError::NoImage(template.to_owned()))?;
        let (src, dir, fmt) = (
            PathBuf::from(template),
            bases_dir.clone(),
            format.to_owned(),
        );
        let tmp = bases::incoming_path(&bases_dir, template);
        let name = blocking(move || bases::copy_verified(&src, &tmp, &dir, &fmt))
            .await
            .and_then(|r| r)
            .map_err(|e| failed(op, vm, "cannot copy the template", &e))?;
        let origin = bases::Origin {
            template: template.to_owned(),
            identity,
            base: name.clone(),
        };
        let bytes = serde_json::to_vec(&origin).map_err(|e| failed(op, vm, "cannot encode", &e))?;
        write_atomically(&bases::origin_path(&bases_dir, template), &bytes)
            .map_err(|e| failed(op, vm, "cannot record the template's base", &e))?;
        Ok(bases_dir.join(name))
    }

    /// Removes the bases no disk's record names, and the copies a crash
    /// left half-way; nothing while a `prepare_disk` is under way (it may
    /// be about to use a base no record names yet). `remove_disk` calls it
    /// after each disk it removes; calling it at any other time is safe.
    pub fn collect_bases(&self) -> std::io::Result<()> {
        let preparing = self
            .preparing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *preparing > 0 {
            return Ok(());
        }
        let mut used = std::collections::HashSet::new();
        for e in std::fs::read_dir(self.config.data_dir.join("disks"))?.flatten() {
            if !e.file_name().to_string_lossy().ends_with(".qcow2.json") {
                continue;
            }
            if let Some(base) = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<DiskRecord>(&b).ok())
                .and_then(|r| r.base)
            {
                used.insert(base);
            }
        }
        let bases_dir = self.bases_dir();
        for e in std::fs::read_dir(&bases_dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if bases::is_base_file(&name) && !used.contains(&name) {
                remove_if_there(&e.path())?;
            }
        }
        for e in std::fs::read_dir(bases_dir.join("templates"))?.flatten() {
            let stale = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<bases::Origin>(&b).ok())
                .is_none_or(|o| !bases_dir.join(&o.base).is_file());
            if stale {
                remove_if_there(&e.path())?;
            }
        }
        drop(preparing);
        Ok(())
    }

    async fn qemu_img_out(&self, op: Op, vm: &str, args: &[&str]) -> Result<String> {
        let out = Command::new("qemu-img")
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| failed(op, vm, "cannot run qemu-img", &e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(failed(
                op,
                vm,
                &format!("qemu-img {}", args.first().unwrap_or(&"")),
                &String::from_utf8_lossy(&out.stderr).trim(),
            ))
        }
    }

    /// MiB of the disks prepared on this host, but `vm`'s.
    fn disk_usage(&self, vm: &str) -> Result<u64> {
        let dir = self.config.data_dir.join("disks");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| failed(Op::PrepareDisk, vm, "cannot list the disks", &e))?;
        let mine = format!("{vm}.qcow2.json");
        let mut used = 0u64;
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !name.ends_with(".qcow2.json") || name == mine {
                continue;
            }
            if let Ok(r) = std::fs::read(e.path())
                .map_err(|_| ())
                .and_then(|b| serde_json::from_slice::<DiskRecord>(&b).map_err(|_| ()))
            {
                used = used.saturating_add(r.size_mib);
            }
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Nic;

    fn spec() -> VmSpec {
        VmSpec {
            seed: None,
            name: "nt-a<b>".to_owned(),
            vcpus: 2,
            ram_mib: 512,
            disk_mib: 1024,
            disk: "/var/lib/neptune/disks/x'y.qcow2".to_owned(),
            nics: vec![
                Nic {
                    bandwidth_mbps: None,
                    mac: "52:54:00:00:00:01".to_owned(),
                    network: "nt-1a2b3c4d-lan&0".to_owned(),
                    segment: None,
                },
                Nic {
                    bandwidth_mbps: None,
                    mac: String::new(),
                    network: "public".to_owned(),
                    segment: None,
                },
            ],
        }
    }

    fn files() -> DomainExtras {
        DomainExtras {
            shape: true,
            macs: Vec::new(),
            console_log: "/var/lib/neptune/consoles/a&b.log".to_owned(),
            seed: None,
        }
    }

    /// The spec travels in the domain's metadata and comes back intact,
    /// whatever characters it holds.
    #[test]
    fn the_spec_round_trips_through_the_domain_xml() {
        let s = spec();
        let xml = domain_xml(
            "qemu",
            &s,
            Some("0b7e2c1a-7c44-4c1e-9d8e-2a5e1b9f0c33"),
            None,
            &files(),
        );
        assert_eq!(spec_of(&xml).as_ref(), Some(&s));
        assert_eq!(
            uuid_of(&xml).as_deref(),
            Some("0b7e2c1a-7c44-4c1e-9d8e-2a5e1b9f0c33")
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let sources: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("source"))
            .filter_map(|n| n.attribute("network").or(n.attribute("file")))
            .collect();
        assert_eq!(
            sources,
            [
                "/var/lib/neptune/disks/x'y.qcow2",
                "nt-1a2b3c4d-lan&0",
                "public"
            ]
        );
        let macs = doc.descendants().filter(|n| n.has_tag_name("mac")).count();
        assert_eq!(macs, 1, "an empty MAC is left to libvirt");

        // With a public bridge, the public NIC is plugged into it; the
        // link's stays on its network.
        let xml = domain_xml("qemu", &s, None, Some("br<pub>"), &files());
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let nics: Vec<(&str, &str)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("interface"))
            .map(|i| {
                let source = i.children().find(|n| n.has_tag_name("source")).unwrap();
                let to = source.attribute("network").or(source.attribute("bridge"));
                (i.attribute("type").unwrap(), to.unwrap())
            })
            .collect();
        assert_eq!(
            nics,
            [("network", "nt-1a2b3c4d-lan&0"), ("bridge", "br<pub>")]
        );
        assert_eq!(spec_of(&xml), Some(s), "the spec is the same");
    }

    fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> roxmltree::Node<'a, 'i> {
        n.children().find(|c| c.has_tag_name(tag)).unwrap()
    }

    /// The seed is a read-only IDE CD-ROM, the console is logged to its
    /// file, a link's bandwidth shapes its NIC both ways in kilobytes per
    /// second (unless shaping is off), a restored NIC keeps its MAC, and the
    /// spec comes back whole.
    #[test]
    fn seed_console_bandwidth_and_macs_in_the_domain_xml() {
        let mut s = spec();
        s.nics[0].bandwidth_mbps = Some(100);
        s.nics[1].bandwidth_mbps = Some(1);
        s.seed = Some(crate::Seed {
            instance_id: "i-1".to_owned(),
            meta_data: "instance-id: i-1".to_owned(),
            user_data: "#cloud-config\npassword: '<&>'".to_owned(),
            network_config: "version: 2".to_owned(),
        });
        let mut extras = files();
        extras.seed = Some("/var/lib/neptune/seeds/a&b.iso".to_owned());
        extras.macs = vec![String::new(), "52:54:00:00:00:99".to_owned()];
        let xml = domain_xml("qemu", &s, None, None, &extras);
        assert_eq!(spec_of(&xml).as_ref(), Some(&s));
        assert_eq!(macs_of(&xml), ["52:54:00:00:00:01", "52:54:00:00:00:99"]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cdrom = doc
            .descendants()
            .find(|n| n.attribute("device") == Some("cdrom"))
            .unwrap();

        assert_eq!(
            child(cdrom, "source").attribute("file"),
            Some("/var/lib/neptune/seeds/a&b.iso")
        );
        assert_eq!(child(cdrom, "target").attribute("bus"), Some("ide"));
        assert_eq!(child(cdrom, "driver").attribute("type"), Some("raw"));
        child(cdrom, "readonly");
        let serial = doc
            .descendants()
            .find(|n| n.has_tag_name("serial"))
            .unwrap();
        let log = child(serial, "log");
        assert_eq!(
            log.attribute("file"),
            Some("/var/lib/neptune/consoles/a&b.log")
        );
        assert_eq!(log.attribute("append"), Some("on"));
        let rates: Vec<(&str, &str)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("inbound") || n.has_tag_name("outbound"))
            .map(|n| (n.tag_name().name(), n.attribute("average").unwrap()))
            .collect();
        assert_eq!(
            rates,
            [
                ("inbound", "12500"),
                ("outbound", "12500"),
                ("inbound", "125"),
                ("outbound", "125")
            ]
        );
        extras.shape = false;
        let xml = domain_xml("qemu", &s, None, None, &extras);
        assert!(!xml.contains("<bandwidth>"));
        assert_eq!(spec_of(&xml), Some(s), "the spec keeps the bandwidth");
        assert_eq!(kilobytes_per_second(0), 1);
    }

    #[test]
    fn image_info_gives_a_plain_format_and_the_size() {
        assert_eq!(
            image_info(r#"{"format":"qcow2","virtual-size":16777216}"#),
            Some(("qcow2".to_owned(), 16 << 20))
        );
        assert_eq!(image_info(r#"{"format":"../x","virtual-size":1}"#), None);
        assert_eq!(image_info("nope"), None);
    }

    #[test]
    fn list_rows_give_name_and_state() {
        assert_eq!(
            list_row(" 3    nt-a-web   running"),
            Some(("nt-a-web", true))
        );
        assert_eq!(
            list_row(" -    nt-a-db    shut off"),
            Some(("nt-a-db", false))
        );
        assert_eq!(list_row(" 7    nt-a-x     paused"), Some(("nt-a-x", false)));
        assert_eq!(list_row(""), None);
    }

    #[test]
    fn net_rows_give_state_and_autostart() {
        assert_eq!(
            net_row(" lan   active     yes   yes", "lan"),
            Some((true, true))
        );
        assert_eq!(
            net_row(" lan   inactive   no    yes", "lan"),
            Some((false, false))
        );
        assert_eq!(net_row(" lan2  active     yes   yes", "lan"), None);
    }

    #[test]
    fn a_domain_without_neptunes_metadata_is_not_neptunes() {
        assert_eq!(spec_of("<domain><name>other</name></domain>"), None);
        assert_eq!(spec_of("not xml"), None);
    }

    /// What `ip -details -json link show` and `bridge -json fdb show`
    /// print (iproute2 6.1), read back.
    #[test]
    fn tunnels_and_their_peers_are_read_from_iproute2() {
        let link = r#"[{"ifindex":293,"ifname":"ntvxtest0","mtu":1500,"linkinfo":{"info_kind":"vxlan","info_data":{"id":4242,"port_range":{"low":0,"high":0},"port":4790,"learning":false,"ttl":0}}}]"#;
        assert_eq!(tunnel_of(link), Some((4242, 4790)));
        assert_eq!(
            tunnel_of(r#"[{"ifname":"eth0","linkinfo":{"info_kind":"veth"}}]"#),
            None
        );
        assert_eq!(tunnel_of("[]"), None);
        let fdb = r#"[{"mac":"00:00:00:00:00:00","dst":"127.0.0.1","port":4791,"flags":["self"],"state":"permanent"},{"mac":"00:00:00:00:00:00","dst":"10.1.2.3","flags":["self"],"state":"permanent"},{"mac":"52:54:00:12:34:56","dst":"10.1.2.4","flags":["self"]}]"#;
        assert_eq!(
            flood_peers(fdb, 4790),
            vec![
                "127.0.0.1:4791".parse::<SocketAddr>().unwrap(),
                "10.1.2.3:4790".parse().unwrap()
            ]
        );
        assert!(flood_peers("", 4789).is_empty());
        assert_eq!(tunnel_name("n").len(), 15);
        assert_eq!(tunnel_name("n")[4..], bridge_name("n")[4..]);
    }

    #[test]
    fn bridge_names_fit_the_kernel_and_differ_per_network() {
        let a = bridge_name("nt-1a2b3c4d-a-very-long-link-name");
        let b = bridge_name("nt-1a2b3c4d-another-link");
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, bridge_name("nt-1a2b3c4d-a-very-long-link-name"));
        let xml = network_xml("l<&>", false);
        assert!(!xml.contains("mtu"));
        assert!(network_xml("l", true).contains("<mtu size='1450'/>"));
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let name = doc.descendants().find(|n| n.has_tag_name("name")).unwrap();
        assert_eq!(name.text(), Some("l<&>"));
    }

    /// A data directory below one that others cannot enter is found (the
    /// system daemon's QEMU could not open the disks), and one they can
    /// enter is not reported.
    #[test]
    fn a_data_directory_out_of_qemus_reach_is_named() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let closed = tmp.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let adapter = |uri: &str| {
            LibvirtHypervisor::new(LibvirtConfig {
                uri: uri.to_owned(),
                data_dir: closed.join("data"),
                capacity: Capacity {
                    cpus: 1,
                    ram_mib: 1,
                    disk_mib: 1,
                    vm_slots: 1,
                },
                kvm: Some(false),
                public_bridge: None,
                migration: Default::default(),
                migration_max_downtime: None,
            })
            .unwrap()
        };
        let hv = adapter("qemu:///system");
        let found = hv.closed_directory().unwrap();
        let closed = closed.canonicalize().unwrap();
        assert!(closed.starts_with(&found), "{}", found.display());
        assert!(hv.runs_qemu_as_its_own_user());
        assert!(adapter("qemu+ssh://host/system").runs_qemu_as_its_own_user());
        assert!(!adapter("qemu:///session").runs_qemu_as_its_own_user());
        assert_eq!(
            adapter("qemu:///session").closed_directory(),
            None,
            "a session's QEMU runs as its caller"
        );

        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(hv.closed_directory(), Some(closed));
    }
}
