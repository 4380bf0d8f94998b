//! Configuration of one Edge Service Switch.
//!
//! Read from a JSON file (`neptune switch --config FILE`) or assembled from
//! flags. The key itself never lives here: only the path of the key file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::prefix::Ipv4Prefix;

/// Default UDP port of VXLAN-GPE (IANA).
pub const VXLAN_GPE_PORT: u16 = 4790;

/// Everything an ESS needs to start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// A name for logs (e.g. the datacenter).
    #[serde(default = "default_name")]
    pub name: String,
    /// Address of the control API.
    pub listen: SocketAddr,
    /// The Mobility Binding Table and visitors, persisted here.
    pub state_file: PathBuf,
    /// File holding the switch's HMAC key as hex text (at least 16 bytes).
    pub key_file: PathBuf,
    /// This switch's tunnel endpoint: the Care-of Address peers tunnel to.
    pub care_of: Ipv4Addr,
    /// Home prefixes this switch is the Home Service Switch of.
    #[serde(default)]
    pub home_prefixes: Vec<Ipv4Prefix>,
    /// Care-of addresses of the other switches of the Service Switching domain.
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    /// Which data plane moves the packets.
    #[serde(default)]
    pub data_plane: DataPlaneConfig,
    /// Largest accepted difference between a request's timestamp and the clock.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// How often the data plane is reconciled with the table (repairs drift).
    #[serde(default = "default_reconcile")]
    pub reconcile_secs: u64,
}

fn default_name() -> String {
    "ess".to_owned()
}
fn default_skew() -> u64 {
    30
}
fn default_reconcile() -> u64 {
    5
}

/// The data plane adapter and its settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataPlaneConfig {
    /// Records bindings, moves no packets (`neptune up`).
    #[default]
    Simulated,
    /// Kernel lightweight tunnels programmed over rtnetlink.
    Kernel(KernelConfig),
    /// TUN device plus raw IP-in-IP sockets (RFC 2003 on the wire).
    Userspace(UserspaceConfig),
}

/// Kernel data plane settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// `vxlan-gpe` (works everywhere) or `ipip` (RFC 2003, needs the ipip module).
    #[serde(default)]
    pub device_kind: TunnelDeviceKind,
    /// Name of the `external` tunnel device.
    #[serde(default = "default_kernel_device")]
    pub device: String,
    /// UDP port for VXLAN-GPE.
    #[serde(default = "default_port")]
    pub port: u16,
    /// MTU of the tunnel device; `None`: 1500 minus the encapsulation overhead.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Routing table that holds the routes to visitors (tunnel ingress looks only here).
    #[serde(default = "default_visitor_table")]
    pub visitor_table: u32,
    /// First priority of the policy rules this switch owns (it owns 64 of them).
    #[serde(default = "default_rule_base")]
    pub rule_base: u32,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            device_kind: TunnelDeviceKind::default(),
            device: default_kernel_device(),
            port: default_port(),
            mtu: None,
            visitor_table: default_visitor_table(),
            rule_base: default_rule_base(),
        }
    }
}

/// Userspace data plane settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserspaceConfig {
    /// Name of the TUN device.
    #[serde(default = "default_tun")]
    pub tun: String,
    /// MTU of the TUN device (1500 minus the 20-byte outer header by default).
    #[serde(default = "default_tun_mtu")]
    pub mtu: u32,
    /// Packets per recvmmsg/sendmmsg batch.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// TUN offloads: TCP super-packets cut in userspace on the home switch,
    /// segments joined again on the foreign switch (see `offload`).
    #[serde(default = "default_true")]
    pub offload: bool,
    /// Hand TCP super-packets back to this switch's IP stack through an
    /// injector device (`<tun>i`), which forwards them to the peer as GSO
    /// packets (default); `false`: cut them in userspace and send the
    /// segments through the socket. Needs `offload` on the RFC 2003 wire.
    #[serde(default = "default_true")]
    pub inject: bool,
    /// What goes on the wire: RFC 2003 IP-in-IP (default), or VXLAN-GPE over
    /// UDP, which the kernel can carry with UDP segmentation and receive
    /// coalescing offloads (and which talks to the kernel data plane).
    #[serde(default)]
    pub wire: UserspaceWire,
    /// UDP port of the `vxlan-gpe` wire.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Routing table that holds the routes to visitors.
    #[serde(default = "default_visitor_table")]
    pub visitor_table: u32,
    /// First priority of the policy rules this switch owns.
    #[serde(default = "default_rule_base")]
    pub rule_base: u32,
}

impl Default for UserspaceConfig {
    fn default() -> Self {
        UserspaceConfig {
            tun: default_tun(),
            mtu: default_tun_mtu(),
            batch: default_batch(),
            offload: true,
            inject: true,
            wire: UserspaceWire::default(),
            port: default_port(),
            visitor_table: default_visitor_table(),
            rule_base: default_rule_base(),
        }
    }
}

/// Encapsulation of the userspace data plane.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UserspaceWire {
    /// RFC 2003 over raw IPPROTO_IPIP sockets.
    #[default]
    Ipip,
    /// VXLAN-GPE over a UDP socket with UDP_SEGMENT / UDP_GRO.
    VxlanGpe,
}

/// Kind of the kernel tunnel device.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TunnelDeviceKind {
    /// `vxlan gpe external`: IP over UDP/4790, no kernel module beyond vxlan.
    #[default]
    VxlanGpe,
    /// `ipip external`: RFC 2003 on the wire.
    Ipip,
}

impl TunnelDeviceKind {
    /// Bytes added to every packet (outer IPv4 header, plus UDP and GPE header).
    pub fn overhead(self) -> u32 {
        match self {
            TunnelDeviceKind::VxlanGpe => 20 + 8 + 8,
            TunnelDeviceKind::Ipip => 20,
        }
    }
}

fn default_kernel_device() -> String {
    "nsw-gpe0".to_owned()
}
fn default_port() -> u16 {
    VXLAN_GPE_PORT
}
fn default_visitor_table() -> u32 {
    4790
}
fn default_rule_base() -> u32 {
    100
}
fn default_tun() -> String {
    "nsw-tun0".to_owned()
}
fn default_tun_mtu() -> u32 {
    1480
}
fn default_true() -> bool {
    true
}
fn default_batch() -> usize {
    64
}

impl DataPlaneConfig {
    /// The adapter's name, as `kind` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            DataPlaneConfig::Simulated => "simulated",
            DataPlaneConfig::Kernel(_) => "kernel",
            DataPlaneConfig::Userspace(_) => "userspace",
        }
    }
}

impl SwitchConfig {
    /// Where the replay mark is kept: the state file's path with
    /// `.replay` appended (see [`crate::auth::ReplayMark`]).
    pub fn replay_mark_file(&self) -> PathBuf {
        let mut p = self.state_file.clone().into_os_string();
        p.push(".replay");
        PathBuf::from(p)
    }

    /// Reads and checks a JSON configuration file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: SwitchConfig =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    /// Consistency checks that the type system does not express.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.peers.contains(&self.care_of) {
            anyhow::bail!("care_of {} is listed among its own peers", self.care_of);
        }
        let name_ok = |n: &str| crate::state::valid_ifname(n);
        match &self.data_plane {
            DataPlaneConfig::Simulated => {}
            DataPlaneConfig::Kernel(k) => {
                if !name_ok(&k.device) {
                    anyhow::bail!("invalid device name {:?}", k.device);
                }
            }
            DataPlaneConfig::Userspace(u) => {
                if !name_ok(&u.tun) {
                    anyhow::bail!("invalid TUN name {:?}", u.tun);
                }
                if !(576..=65535).contains(&u.mtu) {
                    anyhow::bail!("TUN MTU {} out of range", u.mtu);
                }
                if u.batch == 0 || u.batch > 1024 {
                    anyhow::bail!("batch {} out of range 1..=1024", u.batch);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_full_configs() {
        let c: SwitchConfig = serde_json::from_str(
            r#"{"listen":"127.0.0.1:7400","state_file":"/tmp/s.json","key_file":"/tmp/k",
                "care_of":"198.18.1.2","home_prefixes":["203.0.113.0/24"],"peers":["198.18.2.2"],
                "data_plane":{"kind":"kernel","device_kind":"ipip"}}"#,
        )
        .unwrap();
        c.check().unwrap();
        match c.data_plane {
            DataPlaneConfig::Kernel(k) => assert_eq!(k.device_kind, TunnelDeviceKind::Ipip),
            other => panic!("{other:?}"),
        }
        let bad = r#"{"listen":"127.0.0.1:1","state_file":"s","key_file":"k","care_of":"1.1.1.1","peers":["1.1.1.1"]}"#;
        let c: SwitchConfig = serde_json::from_str(bad).unwrap();
        assert!(c.check().is_err());
    }
}
