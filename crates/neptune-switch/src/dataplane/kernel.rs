//! The kernel data plane: lightweight-tunnel routes through one `external`
//! tunnel device, programmed over rtnetlink.
//!
//! Home switch: `H/32 encap ip id KEY src CARE_OF_SELF dst CARE_OF dev nsw-gpe0`
//! per binding; a move replaces that one route atomically.
//!
//! Foreign switch: the device decapsulates whatever reaches its socket,
//! which listens on every local address (the kernel binds the VXLAN socket
//! to the wildcard whatever the device's `local` is). An nf_tables guard
//! ([`crate::nftables`], table `neptune_<device>`, hook prerouting) therefore
//! drops every tunnel packet addressed to any local address unless it comes
//! from a peer to the care-of address, and counts it (`dropped_not_peer`).
//! Behind it, policy rules confine what decapsulated packets may reach:
//!
//! | priority | rule |
//! | --- | --- |
//! | base | `from PEER to CARE_OF ipproto udp dport 4790 lookup local` (one per peer) |
//! | base + 40 | `to CARE_OF ipproto udp dport 4790 blackhole` (non-peers) |
//! | base + 45 | `from VISITOR iif PORT lookup REVERSE_k` (reverse tunnelling) |
//! | base + 49 | `from HOME_PREFIX iif nsw-gpe0 lookup main` (reverse tunnelled) |
//! | base + 50 | `iif nsw-gpe0 lookup VISITORS` |
//! | base + 51 | `iif nsw-gpe0 blackhole` |
//! | base + 60 | `lookup local` (moved here from priority 0) |
//!
//! The local table is moved behind these rules so that the peer check runs
//! before local delivery; everything else keeps its order. The rules at
//! base and base + 40 only cover the care-of address; they stay as a
//! second fence should the guard's table be removed by hand, until the
//! reconcile loop puts it back ([`DataPlane::repair`]). The peers'
//! rules share one priority, so the number of peers is not limited by the
//! 64 priorities the switch owns.
//!
//! MTU: VXLAN-GPE adds 36 bytes (outer IPv4 20, UDP 8, GPE 8), IP-in-IP 20;
//! the device MTU is 1500 minus that, so a correspondent sending full-size
//! packets with DF receives "fragmentation needed" from the home switch and
//! path-MTU discovery converges.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::{link_stat, DataPlane, DataPlaneError, DataPlaneStats, Routes};
use crate::config::{KernelConfig, SwitchConfig, TunnelDeviceKind};
use crate::netlink::{set_ipv4_conf, Netlink, RouteTarget, Rule, TABLE_LOCAL};
use crate::nftables::{self, Refused, TunnelGuard};
use crate::state::SwitchTable;

const IPPROTO_UDP: u8 = 17;

/// Kernel lightweight tunnels.
#[derive(Debug)]
pub struct KernelPlane {
    routes: Mutex<Routes>,
    config: SwitchConfig,
    kernel: KernelConfig,
    /// Changes only when the device was deleted and is created again.
    device_index: AtomicU32,
    guard: TunnelGuard,
    guard_seen: Mutex<GuardSeen>,
}

/// What the plane last knew of its tunnel guard.
#[derive(Debug, Default)]
struct GuardSeen {
    /// The nf_tables generation at which the guard was last installed by
    /// this plane, if no other change came in between: while the ruleset
    /// stays at it, the guard is as installed.
    generation: Option<u32>,
    /// The newest count read, carried into a re-installed table.
    refused: Refused,
}

impl KernelPlane {
    /// Creates the device, the blackholes and the rules.
    pub fn start(config: &SwitchConfig, k: &KernelConfig) -> Result<Self, DataPlaneError> {
        let (proto, dport) = tunnel_protocol(k);
        let guard = TunnelGuard {
            table: TunnelGuard::table_for(&k.device),
            care_of: config.care_of,
            peers: config.peers.clone(),
            proto,
            dport,
        };
        let mut guard_seen = GuardSeen::default();
        // The guard first: the device decapsulates from the moment it exists.
        install_guard(&guard, &mut guard_seen)?;
        let mut nl = Netlink::open()?;
        let device_index = ensure_device(&mut nl, config, k)?;
        let mut routes = Routes {
            nl,
            visitor_table: k.visitor_table,
            rule_base: k.rule_base,
            peers: config.peers.clone(),
            home_prefixes: config.home_prefixes.clone(),
            ingress: k.device.clone(),
        };
        routes.blackhole_home()?;
        install_rules(&mut routes.nl, config, k)?;
        routes.confine_ingress()?;
        Ok(KernelPlane {
            routes: Mutex::new(routes),
            config: config.clone(),
            kernel: k.clone(),
            device_index: AtomicU32::new(device_index),
            guard,
            guard_seen: Mutex::new(guard_seen),
        })
    }

    /// Re-installs the guard if nf_tables changed since it was installed.
    fn ensure_guard(&self) -> Result<(), DataPlaneError> {
        let mut seen = self
            .guard_seen
            .lock()
            .map_err(|_| DataPlaneError::Poisoned)?;
        if seen.generation.is_some() && seen.generation == Some(nftables::generation()?) {
            return Ok(());
        }
        // Someone changed nf_tables, perhaps only elsewhere: replacing the
        // table whole, in one transaction, costs less than comparing it and
        // never leaves a moment without the guard.
        if let Ok(refused) = self.guard.refused() {
            seen.refused = refused;
        }
        install_guard(&self.guard, &mut seen)?;
        tracing::info!(table = %self.guard.table, "tunnel guard re-installed (nf_tables changed since it was installed)");
        Ok(())
    }
}

/// Installs the guard, its count carried over, and notes at which
/// generation of the ruleset it stands.
fn install_guard(guard: &TunnelGuard, seen: &mut GuardSeen) -> Result<(), DataPlaneError> {
    seen.generation = None;
    let before = nftables::generation()?;
    guard.install(seen.refused)?;
    let after = nftables::generation()?;
    // One commit moves the generation by one; more means another change
    // came in between, which the next round looks at.
    seen.generation = (after == before.wrapping_add(1)).then_some(after);
    Ok(())
}

/// Creates the tunnel device if it does not exist, and sets it up: up, its
/// MTU, no reverse-path check. Returns its index.
fn ensure_device(
    nl: &mut Netlink,
    config: &SwitchConfig,
    k: &KernelConfig,
) -> Result<u32, DataPlaneError> {
    match k.device_kind {
        TunnelDeviceKind::VxlanGpe => nl.add_vxlan_gpe(&k.device, config.care_of, k.port)?,
        TunnelDeviceKind::Ipip => nl.add_ipip_external(&k.device)?,
    }
    let index = Netlink::index(&k.device)?;
    let mtu = k.mtu.unwrap_or(1500 - k.device_kind.overhead());
    nl.set_up(index, Some(mtu))?;
    // Decapsulated packets come from correspondents anywhere: no reverse-path check.
    set_ipv4_conf(&k.device, "rp_filter", "0")?;
    Ok(index)
}

/// IP protocol and UDP port of the tunnel packets the device decapsulates.
fn tunnel_protocol(k: &KernelConfig) -> (u8, Option<u16>) {
    match k.device_kind {
        TunnelDeviceKind::VxlanGpe => (IPPROTO_UDP, Some(k.port)),
        TunnelDeviceKind::Ipip => (crate::packet::IPPROTO_IPIP, None),
    }
}

/// Priority of the rules that let peers' tunnel packets reach local
/// delivery: one rule per peer, all at this one priority (relative to the
/// base), so that any number of peers fits in the priorities the switch owns.
const PEER_RULES: u32 = 0;
/// Priority of the blackhole of every other tunnel packet to the care-of address.
const NOT_PEER_RULE: u32 = 40;
/// Priority the local table's lookup moves to.
const LOCAL_RULE: u32 = 60;

/// The rules in front of local delivery, in the order they must be added:
/// every peer's tunnel packets to the care-of address reach the local table,
/// every other source's are blackholed, then the local table (moved behind
/// them from priority 0).
fn fence_rules(config: &SwitchConfig, k: &KernelConfig) -> Vec<Rule> {
    let base = k.rule_base;
    let (proto, dport) = tunnel_protocol(k);
    let tunnel_to_care_of = Rule {
        to: Some((config.care_of, 32)),
        ip_proto: Some(proto),
        dport,
        ..Rule::default()
    };
    let mut rules: Vec<Rule> = config
        .peers
        .iter()
        .map(|peer| Rule {
            priority: base + PEER_RULES,
            from: Some((*peer, 32)),
            table: Some(TABLE_LOCAL),
            ..tunnel_to_care_of.clone()
        })
        .collect();
    rules.push(Rule {
        priority: base + NOT_PEER_RULE,
        table: None,
        ..tunnel_to_care_of
    });
    rules.push(Rule {
        priority: base + LOCAL_RULE,
        table: Some(TABLE_LOCAL),
        ..Rule::default()
    });
    rules
}

fn install_rules(
    nl: &mut Netlink,
    config: &SwitchConfig,
    k: &KernelConfig,
) -> Result<(), DataPlaneError> {
    let base = k.rule_base;
    for prio in base..base + 64 {
        // The ingress rules are replaced by `confine_ingress`.
        if !(base + 49..=base + 51).contains(&prio) {
            nl.delete_rules(prio, None)?;
        }
    }
    for rule in fence_rules(config, k) {
        nl.add_rule(&rule)?;
    }
    // Only now that local lookups continue at base + 60, drop the one at 0.
    nl.delete_rules(0, Some(TABLE_LOCAL))?;
    Ok(())
}

impl DataPlane for KernelPlane {
    fn kind(&self) -> &'static str {
        "kernel"
    }

    fn apply(&self, table: &SwitchTable, addrs: &[Ipv4Addr]) -> Result<(), DataPlaneError> {
        let mut routes = self.routes.lock().map_err(|_| DataPlaneError::Poisoned)?;
        let mut first_err = None;
        for addr in addrs {
            let r = routes.apply(*addr, &table.forwarding(*addr), |care_of, key| {
                Ok(RouteTarget::Encap {
                    oif: self.device_index.load(Ordering::Relaxed),
                    id: u64::from(key),
                    dst: care_of,
                    src: self.config.care_of,
                })
            });
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn repair(&self) -> Result<(), DataPlaneError> {
        let mut first_err = None;
        let mut note = |r: Result<(), DataPlaneError>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        // The guard before the device: a device created again decapsulates at once.
        note(self.ensure_guard());
        let mut routes = self.routes.lock().map_err(|_| DataPlaneError::Poisoned)?;
        note(
            ensure_device(&mut routes.nl, &self.config, &self.kernel).map(|index| {
                if self.device_index.swap(index, Ordering::Relaxed) != index {
                    tracing::warn!(device = %self.kernel.device, "the tunnel device was gone; created again");
                }
            }),
        );
        let mut restored = 0;
        for rule in fence_rules(&self.config, &self.kernel) {
            note(
                routes
                    .nl
                    .ensure_rule(&rule)
                    .map(|added| restored += usize::from(added))
                    .map_err(Into::into),
            );
        }
        // Only behind the rule at base + 60 (ensured above), as at start.
        note(
            routes
                .nl
                .delete_rules(0, Some(TABLE_LOCAL))
                .map_err(Into::into),
        );
        note(routes.restore().map(|n| restored += n));
        if restored > 0 {
            tracing::warn!(
                restored,
                "policy rules of the switch were missing; added back"
            );
        }
        first_err.map_or(Ok(()), Err)
    }

    fn stats(&self) -> DataPlaneStats {
        let mut s = DataPlaneStats {
            kind: "kernel",
            ..DataPlaneStats::default()
        };
        for (k, n) in [
            ("tunnel_tx_packets", "tx_packets"),
            ("tunnel_rx_packets", "rx_packets"),
            ("tunnel_tx_dropped", "tx_dropped"),
            ("tunnel_rx_dropped", "rx_dropped"),
        ] {
            s.counters.insert(k, link_stat(&self.kernel.device, n));
        }
        match self.guard.refused() {
            Ok(n) => {
                s.counters.insert("dropped_not_peer", n.packets);
                // Kept should the table be deleted: a re-installed guard counts on from here.
                if let Ok(mut seen) = self.guard_seen.lock() {
                    seen.refused = n;
                }
            }
            Err(e) => {
                tracing::debug!(error = %anyhow::Error::from(e), "reading the tunnel guard's counter");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: usize, device_kind: TunnelDeviceKind) -> (SwitchConfig, KernelConfig) {
        let peers: Vec<String> = (0..peers)
            .map(|i| format!("\"10.{}.{}.1\"", i / 256, i % 256))
            .collect();
        let k = KernelConfig {
            device_kind,
            ..KernelConfig::default()
        };
        let config: SwitchConfig = serde_json::from_str(&format!(
            r#"{{"listen":"127.0.0.1:1","state_file":"s","key_file":"k","care_of":"198.18.1.2",
                "peers":[{}],"data_plane":{}}}"#,
            peers.join(","),
            serde_json::json!({"kind": "kernel", "device_kind": device_kind})
        ))
        .unwrap();
        config.check().unwrap();
        (config, k)
    }

    /// Which rule a tunnel packet from `from` to the care-of address meets
    /// first (rules at one priority are tried in the order they were added).
    fn first_match(rules: &[Rule], from: Ipv4Addr, care_of: Ipv4Addr) -> Option<&Rule> {
        let mut sorted: Vec<&Rule> = rules.iter().collect();
        sorted.sort_by_key(|r| r.priority);
        sorted.into_iter().find(|r| {
            r.from.is_none_or(|(a, _)| a == from) && r.to.is_none_or(|(a, _)| a == care_of)
        })
    }

    #[test]
    fn every_peer_reaches_local_delivery_however_many_there_are() {
        for kind in [TunnelDeviceKind::VxlanGpe, TunnelDeviceKind::Ipip] {
            let (config, k) = config(300, kind);
            let rules = fence_rules(&config, &k);
            for (i, peer) in config.peers.iter().enumerate() {
                let rule = first_match(&rules, *peer, config.care_of)
                    .unwrap_or_else(|| panic!("peer {i} ({peer}) meets no rule"));
                assert_eq!(
                    (rule.table, rule.from),
                    (Some(TABLE_LOCAL), Some((*peer, 32))),
                    "peer {i} ({peer}) meets {rule:?}"
                );
                assert_eq!(rule.ip_proto, Some(tunnel_protocol(&k).0));
            }
            let stranger = first_match(&rules, Ipv4Addr::new(192, 0, 2, 66), config.care_of);
            assert_eq!(
                stranger.map(|r| (r.priority, r.table)),
                Some((k.rule_base + NOT_PEER_RULE, None)),
                "a non-peer is not blackholed"
            );
            // Within the priorities the switch owns, and clear of the ingress
            // and reverse-tunnelling rules.
            for r in &rules {
                let offset = r.priority - k.rule_base;
                assert!(
                    offset < 64 && !(45..=51).contains(&offset),
                    "{r:?} outside its place"
                );
            }
            assert_eq!(
                rules.last().map(|r| (r.priority, r.table, r.to)),
                Some((k.rule_base + LOCAL_RULE, Some(TABLE_LOCAL), None))
            );
        }
    }
}
