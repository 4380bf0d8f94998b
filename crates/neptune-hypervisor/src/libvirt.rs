//! The libvirt adapter: VMs as libvirt domains (QEMU, with KVM where the
//! host has it), disks as qcow2 files copied from the template image, and
//! the virtual links as isolated libvirt networks, one bridge per link on
//! the host.
//!
//! It drives libvirt through its own clients, `virsh` and `qemu-img`, as a
//! host's tools would: a binding to the libvirt C library would make every
//! build of the one `neptune` binary (the Manager's too, and `neptune up`'s
//! simulated hosts) need libvirt's headers and library.
//!
//! What is Neptune's on a host: a domain carrying its [`VmSpec`] in its
//! metadata (other domains are listed by nobody and never touched), the
//! disks under `<data_dir>/disks`, and the networks its VMs use (removed
//! with the last VM on them). Every operation is idempotent, as the port
//! requires; the state of a crash half-way is recognised by the next call.
//!
//! Several hosts may share one libvirt daemon (a single-machine Neptune,
//! the tests): a domain belongs to the host whose data directory holds its
//! disk, and each host sees, counts and touches only its own. The networks
//! are shared: a link's network joins every VM on it that the daemon runs,
//! and goes with the last of them, whichever host it belongs to.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::{
    check_room, check_spec, validate_vm_name, write_atomically, Capacity, Hypervisor,
    HypervisorError, Op, Result, Segment, VmInfo, VmSpec, VmState, PUBLIC_NETWORK,
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
}

/// The adapter.
#[derive(Debug)]
pub struct LibvirtHypervisor {
    config: LibvirtConfig,
    /// `kvm` where the host has it, else QEMU's software emulation.
    domain_type: &'static str,
    /// Serialises the operations that check room or share networks, so two
    /// concurrent defines cannot both take the last slot.
    admission: Mutex<()>,
    /// Serialises the disk room checks (not the copies, which take long).
    disks: Mutex<()>,
}

/// What a disk is made from, kept beside it: a second `prepare_disk` with
/// the same request finds it done, a different one is refused. Written
/// before the copy, it reserves the disk's room on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DiskRecord {
    template_image: String,
    size_mib: u64,
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

    /// An adapter for `config`; creates the disk directory. The data
    /// directory is made absolute: libvirt needs absolute disk paths, and a
    /// domain's disk path tells which host it belongs to.
    pub fn new(mut config: LibvirtConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(config.data_dir.join("disks"))?;
        config.data_dir = config.data_dir.canonicalize()?;
        let kvm = config.kvm.unwrap_or_else(crate::kvm::usable);
        let domain_type = if kvm { "kvm" } else { "qemu" };
        Ok(Self {
            config,
            domain_type,
            admission: Mutex::new(()),
            disks: Mutex::new(()),
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

    /// Runs `virsh` on the configured connection; its standard output, or
    /// the error it printed.
    ///
    /// A call that takes longer than [`VIRSH_TIMEOUT`] is given up (and
    /// virsh killed) as `Unreachable`: a hung daemon must not hang the
    /// Agent's request with it, and every operation may be repeated.
    async fn virsh(&self, op: Op, vm: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("virsh");
        cmd.arg("--quiet")
            .arg("--connect")
            .arg(&self.config.uri)
            .args(args);
        let out = run_for(cmd, "virsh", args, VIRSH_TIMEOUT)
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
        Ok(all)
    }

    /// Neptune's domains on the daemon, every host's.
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
                    ready: running && spec.seed.is_none(),
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
        Ok(Some(VmInfo {
            name: name.to_owned(),
            ready: state == VmState::Running && spec.seed.is_none(),
            state,
            spec,
        }))
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
            if let Some(bridge) = self.public_bridge_for(net) {
                // The operator's bridge: checked, never made or removed here.
                if !Path::new("/sys/class/net").join(bridge).exists() {
                    return Err(HypervisorError::Failed {
                        op,
                        vm: spec.name.clone(),
                        message: format!("the public bridge {bridge} does not exist on this host"),
                    });
                }
                continue;
            }
            let (active, autostart) = match table.lines().find_map(|r| net_row(r, net)) {
                Some(state) => state,
                None => {
                    let xml = network_xml(net, nic.segment.is_some());
                    let file = self.scratch_file(op, &spec.name, "net.xml", &xml)?;
                    let defined = self
                        .virsh(op, &spec.name, &["net-define", path_str(&file)])
                        .await;
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
                match self.virsh(op, &spec.name, &["net-start", net]).await {
                    Ok(_) => {}
                    Err(HypervisorError::Failed { message, .. })
                        if message.contains("already active") => {}
                    Err(e) => return Err(e),
                }
            }
            if !autostart {
                self.virsh(op, &spec.name, &["net-autostart", net]).await?;
            }
            if let Some(segment) = &nic.segment {
                self.ensure_tunnel(op, &spec.name, net, segment).await?;
            }
        }
        Ok(())
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

    /// Runs a host networking tool (`ip`, `bridge`): its standard output, or
    /// the error it printed.
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

    /// Removes the networks of `spec` that no other Neptune domain uses,
    /// of any host.
    async fn release_networks(&self, op: Op, spec: &VmSpec) -> Result<()> {
        let others = self.all_domains(op).await?;
        for nic in &spec.nics {
            let net = nic.network.as_str();
            if self.public_bridge_for(net).is_some() {
                continue;
            }
            let used = others
                .iter()
                .any(|d| d.spec.nics.iter().any(|n| n.network == net));
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

    async fn define_domain(&self, op: Op, spec: &VmSpec, uuid: Option<&str>) -> Result<()> {
        let file = self.scratch_file(
            op,
            &spec.name,
            "xml",
            &domain_xml(
                self.domain_type,
                spec,
                uuid,
                self.config.public_bridge.as_deref(),
            ),
        )?;
        let defined = self
            .virsh(op, &spec.name, &["define", path_str(&file)])
            .await;
        let _ = std::fs::remove_file(&file);
        defined.map(|_| ())
    }
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

/// The domain of `spec`: its resources, its disk, a virtio NIC on its
/// link's network per interface (on `public_bridge` for the public
/// network, when the host has one), a serial console, and the spec itself
/// in the metadata. `uuid`: the one of a saved image being restored.
fn domain_xml(
    domain_type: &str,
    spec: &VmSpec,
    uuid: Option<&str>,
    public_bridge: Option<&str>,
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
    for nic in &spec.nics {
        let (kind, source) = match public_bridge {
            Some(b) if nic.network == PUBLIC_NETWORK => ("bridge", format!("bridge='{}'", esc(b))),
            _ => ("network", format!("network='{}'", esc(&nic.network))),
        };
        x.push_str(&format!("    <interface type='{kind}'>\n"));
        if !nic.mac.is_empty() {
            x.push_str(&format!("      <mac address='{}'/>\n", esc(&nic.mac)));
        }
        x.push_str(&format!(
            "      <source {source}/>\n      <model type='virtio'/>\n    </interface>\n"
        ));
    }
    x.push_str("    <serial type='pty'/>\n    <console type='pty'/>\n  </devices>\n</domain>\n");
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
        let reserving = self.disks.lock().await;
        let path = self.disk_path(vm);
        let shown = path_str(&path).to_owned();
        let wanted = DiskRecord {
            template_image: template_image.to_owned(),
            size_mib,
        };
        // Done when the disk is there (it is renamed into place whole) with
        // its record.
        if path.is_file() {
            if let Ok(bytes) = std::fs::read(self.record_path(vm)) {
                return match serde_json::from_slice::<DiskRecord>(&bytes) {
                    Ok(existing) if existing == wanted => Ok(shown),
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
        let record =
            serde_json::to_vec(&wanted).map_err(|e| failed(op, vm, "cannot encode", &e))?;
        write_atomically(&self.record_path(vm), &record)
            .map_err(|e| failed(op, vm, "cannot record the disk", &e))?;
        drop(reserving);
        let tmp = path.with_extension("qcow2.tmp");
        let tmp_s = path_str(&tmp);
        let size = format!("{size_mib}M");
        let mut made = self
            .qemu_img(op, vm, &["convert", "-O", "qcow2", template_image, tmp_s])
            .await;
        if made.is_ok() {
            made = self.qemu_img(op, vm, &["resize", tmp_s, &size]).await;
        }
        if made.is_ok() {
            made = std::fs::rename(&tmp, &path)
                .map_err(|e| failed(op, vm, "cannot place the disk", &e));
        }
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
        Ok(())
    }

    async fn define(&self, spec: &VmSpec) -> Result<()> {
        let op = Op::Define;
        self.check_own_spec(spec)?;
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
        self.define_domain(op, spec, None).await
    }

    async fn start(&self, vm: &str) -> Result<()> {
        let op = Op::Start;
        validate_vm_name(vm)?;
        match self.domain(op, vm).await? {
            None => Err(HypervisorError::NoSuchVm(vm.to_owned())),
            Some(d) if d.state == VmState::Running => Ok(()),
            Some(d) => {
                // Networks under the lock (a concurrent define may be
                // making one), the boot outside it.
                {
                    let _admitted = self.admission.lock().await;
                    self.ensure_networks(op, &d.spec).await?;
                }
                match self.virsh(op, vm, &["start", vm]).await {
                    Ok(_) => Ok(()),
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
        let state = Path::new(state_path);
        let Some(d) = self.domain(op, vm).await? else {
            // Already saved (and gone) is fine; never saved is not.
            return if state.is_file() {
                Ok(())
            } else {
                Err(HypervisorError::NoSuchVm(vm.to_owned()))
            };
        };
        if let Some(parent) = state.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| failed(op, vm, "cannot make the state's directory", &e))?;
        }
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
        // The host keeps nothing of a saved VM, its networks included
        // (`restore` makes them again).
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
                return Ok(());
            }
            // Defined but stopped (a restore interrupted before the
            // start): start it.
            self.ensure_networks(op, spec).await?;
            return self.virsh(op, vm, &["start", vm]).await.map(|_| ());
        }
        let state = Path::new(state_path);
        if !state.is_file() {
            return Err(HypervisorError::NoSavedState(state_path.to_owned()));
        }
        check_room(self.config.capacity, all.iter().map(|d| &d.spec), spec)?;
        self.ensure_networks(op, spec).await?;
        let stopped = std::fs::read(state)
            .ok()
            .and_then(|b| serde_json::from_slice::<StoppedState>(&b).ok());
        if stopped.is_some() {
            self.define_domain(op, spec, None).await?;
            return self.virsh(op, vm, &["start", vm]).await.map(|_| ());
        }
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
        let xml = domain_xml(
            self.domain_type,
            spec,
            uuid.as_deref(),
            self.config.public_bridge.as_deref(),
        );
        let file = self.scratch_file(op, vm, "restore.xml", &xml)?;
        let restored = self
            .virsh(op, vm, &["restore", state_path, "--xml", path_str(&file)])
            .await;
        let _ = std::fs::remove_file(&file);
        restored?;
        self.define_domain(op, spec, uuid.as_deref()).await
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
        let _admitted = self.admission.lock().await;
        let Some(d) = self.domain(op, vm).await? else {
            return Ok(());
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
        self.release_networks(op, &d.spec).await
    }

    async fn list(&self) -> Result<Vec<VmInfo>> {
        // The port has no list operation to name in an error; a list is
        // what a define reads first.
        self.domains(Op::Define).await
    }

    async fn console(&self, vm: &str, _max_bytes: u64) -> Result<String> {
        validate_vm_name(vm)?;
        Err(failed(Op::Console, vm, "the console", &"is not kept yet"))
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
        let xml = domain_xml("qemu", &s, None, Some("br<pub>"));
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
