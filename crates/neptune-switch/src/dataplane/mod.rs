//! The `DataPlane` port and its three adapters.
//!
//! The table says, per address, what packets should do ([`Forwarding`]); a
//! data plane makes it so. `apply` is idempotent and is called after every
//! accepted update, at start (before the API serves) and periodically (to
//! repair drift, e.g. a visitor port that appeared late). `repair`, also
//! periodic, puts back what the plane owns besides the table's routes
//! (devices, policy rules, the tunnel guard, home blackholes) should anyone
//! have removed it.
//!
//! - [`sim::SimulatedPlane`]: records what it was told (for `neptune up` and tests).
//! - [`kernel::KernelPlane`]: one `external` tunnel device (VXLAN-GPE, or
//!   `ipip` where the module exists) and one /32 route per binding carrying a
//!   lightweight-tunnel encap; a move is one atomic route replace; an
//!   nf_tables guard refuses (and counts) tunnel packets that are not from a
//!   peer to the care-of address.
//! - [`userspace::UserspacePlane`]: RFC 2003 in userspace, a TUN device plus a
//!   raw IPPROTO_IPIP socket, batched with recvmmsg/sendmmsg.
//!
//! Both real planes install, on the home switch, a blackhole route for each
//! home prefix, so packets for an address between two bindings are dropped
//! rather than looped back to the Internet; and a policy table so that
//! decapsulated packets can only reach visitors.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{DataPlaneConfig, SwitchConfig};
use crate::netlink::{Netlink, NetlinkError, RouteTarget, Rule, TABLE_MAIN};
use crate::prefix::Ipv4Prefix;
use crate::state::{Forwarding, SwitchTable};

pub mod kernel;
pub mod sim;
mod tun;
pub mod userspace;

/// A data plane failure.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// Programming the kernel failed.
    #[error("programming the kernel")]
    Netlink(#[from] NetlinkError),
    /// Device or socket I/O failed.
    #[error("data plane I/O")]
    Io(#[from] std::io::Error),
    /// A lock was poisoned by a panicking thread.
    #[error("data plane state poisoned")]
    Poisoned,
}

/// Counters of a data plane (packets, drops by reason).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DataPlaneStats {
    /// Adapter name.
    pub kind: &'static str,
    /// Named counters.
    pub counters: BTreeMap<&'static str, u64>,
}

/// The port: make packets follow the table.
pub trait DataPlane: Send + Sync + fmt::Debug {
    /// Adapter name.
    fn kind(&self) -> &'static str;
    /// Makes forwarding of `addrs` match `table`.
    fn apply(&self, table: &SwitchTable, addrs: &[Ipv4Addr]) -> Result<(), DataPlaneError>;
    /// Puts back, idempotently, what the plane set up at start and owns,
    /// whatever the table says; called before every reconcile round's
    /// `apply`. Nothing to repair by default.
    fn repair(&self) -> Result<(), DataPlaneError> {
        Ok(())
    }
    /// Counters.
    fn stats(&self) -> DataPlaneStats;
}

/// Builds and starts the configured adapter.
pub fn build(config: &SwitchConfig) -> Result<Arc<dyn DataPlane>, DataPlaneError> {
    Ok(match &config.data_plane {
        DataPlaneConfig::Simulated => Arc::new(sim::SimulatedPlane::default()),
        DataPlaneConfig::Kernel(k) => Arc::new(kernel::KernelPlane::start(config, k)?),
        DataPlaneConfig::Userspace(u) => Arc::new(userspace::UserspacePlane::start(config, u)?),
    })
}

/// Routes shared by the kernel and userspace planes: /32 per address in the
/// main table, visitors also in the visitor table, and for reverse-tunnelled
/// visitors a source rule into a per-home-switch table whose default route
/// leads into the tunnel.
#[derive(Debug)]
pub(crate) struct Routes {
    pub(crate) nl: Netlink,
    pub(crate) visitor_table: u32,
    pub(crate) rule_base: u32,
    pub(crate) peers: Vec<Ipv4Addr>,
    pub(crate) home_prefixes: Vec<Ipv4Prefix>,
    /// The device decapsulated packets arrive on.
    pub(crate) ingress: String,
}

/// Priority of the reverse-tunnelling source rules (relative to the base).
const REVERSE_RULE: u32 = 45;
/// Priority of the rule that lets reverse-tunnelled packets from home
/// addresses out of the home switch.
const HOME_SOURCE_RULE: u32 = 49;

impl Routes {
    /// Table of the reverse tunnel towards `home` (one per peer).
    fn reverse_table(&self, home: Ipv4Addr) -> Option<u32> {
        let i = self.peers.iter().position(|p| *p == home)?;
        Some(self.visitor_table + 1 + u32::try_from(i).ok()?)
    }

    /// Programs one address; `tunnel` says how a route into the tunnel looks.
    pub(crate) fn apply(
        &mut self,
        addr: Ipv4Addr,
        forwarding: &Forwarding,
        tunnel: impl Fn(Ipv4Addr, u32) -> Result<RouteTarget, DataPlaneError>,
    ) -> Result<(), DataPlaneError> {
        let mut reverse_rule = Rule {
            priority: self.rule_base + REVERSE_RULE,
            from: Some((addr, 32)),
            ..Rule::default()
        };
        match forwarding {
            Forwarding::Tunnel { care_of, key } => {
                let target = tunnel(*care_of, *key)?;
                self.nl.replace_route(TABLE_MAIN, addr, 32, &target)?;
                self.nl.delete_route(self.visitor_table, addr, 32)?;
                self.nl.delete_rule(&reverse_rule)?;
            }
            Forwarding::Local { port, via, reverse } => {
                let oif = Netlink::index(port)?;
                self.nl.set_up(oif, None)?;
                let target = RouteTarget::Device { oif, via: *via };
                self.nl.replace_route(TABLE_MAIN, addr, 32, &target)?;
                self.nl
                    .replace_route(self.visitor_table, addr, 32, &target)?;
                match reverse.and_then(|(home, key)| Some((home, key, self.reverse_table(home)?))) {
                    Some((home, key, table)) => {
                        let default = tunnel(home, key)?;
                        self.nl
                            .replace_route(table, Ipv4Addr::UNSPECIFIED, 0, &default)?;
                        reverse_rule.iif = Some(port.clone());
                        reverse_rule.table = Some(table);
                        // Replace: drop whatever rule the address had, then add.
                        self.nl.delete_rule(&Rule {
                            table: None,
                            iif: None,
                            ..reverse_rule.clone()
                        })?;
                        self.nl.add_rule(&reverse_rule)?;
                    }
                    None => self.nl.delete_rule(&reverse_rule)?,
                }
            }
            Forwarding::Absent => {
                self.nl.delete_route(TABLE_MAIN, addr, 32)?;
                self.nl.delete_route(self.visitor_table, addr, 32)?;
                self.nl.delete_rule(&reverse_rule)?;
            }
        }
        Ok(())
    }

    /// Blackholes the home prefixes.
    pub(crate) fn blackhole_home(&mut self) -> Result<(), DataPlaneError> {
        for p in &self.home_prefixes {
            self.nl.replace_route(
                TABLE_MAIN,
                p.addr(),
                p.prefix_len(),
                &RouteTarget::Blackhole,
            )?;
        }
        Ok(())
    }

    /// Decapsulated packets (arriving on the ingress device) may only reach
    /// visitors, or, reverse-tunnelled from a home address of this switch,
    /// the Internet.
    fn ingress_rules(&self) -> Vec<Rule> {
        let base = self.rule_base;
        let from_home = self.home_prefixes.iter().map(|p| Rule {
            priority: base + HOME_SOURCE_RULE,
            from: Some((p.addr(), p.prefix_len())),
            iif: Some(self.ingress.clone()),
            table: Some(TABLE_MAIN),
            ..Rule::default()
        });
        from_home
            .chain([
                Rule {
                    priority: base + 50,
                    iif: Some(self.ingress.clone()),
                    table: Some(self.visitor_table),
                    ..Rule::default()
                },
                Rule {
                    priority: base + 51,
                    iif: Some(self.ingress.clone()),
                    ..Rule::default()
                },
            ])
            .collect()
    }

    /// Installs [`Routes::ingress_rules`], replacing whatever the switch's
    /// priorities for them held.
    pub(crate) fn confine_ingress(&mut self) -> Result<(), DataPlaneError> {
        let base = self.rule_base;
        for prio in [base + HOME_SOURCE_RULE, base + 50, base + 51] {
            self.nl.delete_rules(prio, None)?;
        }
        for rule in self.ingress_rules() {
            self.nl.add_rule(&rule)?;
        }
        Ok(())
    }

    /// Puts back the home blackholes and whichever ingress rules are
    /// missing, without the moment of no rules that replacing them would
    /// open; returns how many rules were missing.
    pub(crate) fn restore(&mut self) -> Result<usize, DataPlaneError> {
        self.blackhole_home()?;
        let mut restored = 0;
        for rule in self.ingress_rules() {
            restored += usize::from(self.nl.ensure_rule(&rule)?);
        }
        Ok(restored)
    }
}

/// Reads `/sys/class/net/DEV/statistics/NAME` (0 if unreadable).
pub(crate) fn link_stat(dev: &str, name: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
