//! Evaluation of an assignment node -> host: cut, physical link loads,
//! admissibility, and validation of a manual map with every violation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{PlacementError, Resource};
use crate::instance::{add, DIMS};
use crate::model::Problem;
use crate::network::{self, Loads, PhysicalLink, Router};

/// Traffic on one physical link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLoad {
    /// The link.
    pub link: PhysicalLink,
    /// Bandwidth on it (this VI plus load already there).
    pub load: u64,
    /// Its capacity.
    pub capacity: u64,
}

/// A placement and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Host (inventory index) of every node.
    pub host_of: Vec<usize>,
    /// Total bandwidth of virtual links whose ends are on different hosts.
    pub cut: u64,
    /// Load of every physical link that carries traffic, sorted by link.
    pub link_loads: Vec<LinkLoad>,
    /// Every physical link within its capacity.
    pub admissible: bool,
    /// Most VMs of this VI on one host.
    pub max_group: usize,
}

/// One way a placement breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Violation {
    /// The map has no host for a node.
    Unplaced {
        /// The node.
        node: String,
    },
    /// The map names a host that does not exist.
    UnknownHost {
        /// The node.
        node: String,
        /// The host index given.
        host: usize,
    },
    /// The host is outside the requested datacenter.
    OutsideDatacenter {
        /// The node.
        node: String,
        /// The host.
        host: String,
    },
    /// A host over capacity.
    OverCapacity {
        /// The host.
        host: String,
        /// Which resource.
        resource: Resource,
        /// Used including other VIs.
        used: u64,
        /// Capacity.
        capacity: u64,
    },
    /// A pinned node elsewhere.
    PinViolated {
        /// The node.
        node: String,
        /// Where it is pinned.
        pinned: String,
        /// Where it was put.
        placed: String,
    },
    /// Two members of an anti-affinity group share a host.
    AntiAffinity {
        /// The group index.
        group: usize,
        /// The host.
        host: String,
        /// Members on it.
        nodes: Vec<String>,
    },
    /// The problem itself is malformed (bad network, bad link).
    Invalid {
        /// Why.
        reason: String,
    },
    /// A physical link over capacity.
    LinkOverCapacity {
        /// The link.
        link: PhysicalLink,
        /// Its load.
        load: u64,
        /// Its capacity.
        capacity: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unplaced { node } => write!(f, "node {node} has no host"),
            Self::UnknownHost { node, host } => write!(f, "node {node} is on unknown host {host}"),
            Self::OutsideDatacenter { node, host } => {
                write!(f, "node {node} is on host {host}, outside the datacenter")
            }
            Self::OverCapacity {
                host,
                resource,
                used,
                capacity,
            } => {
                write!(
                    f,
                    "host {host} over capacity: {resource} {used} > {capacity}"
                )
            }
            Self::PinViolated {
                node,
                pinned,
                placed,
            } => {
                write!(
                    f,
                    "node {node} is pinned to {pinned} but placed on {placed}"
                )
            }
            Self::AntiAffinity { group, host, nodes } => write!(
                f,
                "anti-affinity group {group}: {} share host {host}",
                nodes.join(", ")
            ),
            Self::Invalid { reason } => f.write_str(reason),
            Self::LinkOverCapacity {
                link,
                load,
                capacity,
            } => {
                write!(
                    f,
                    "physical link {link:?} over capacity: {load} > {capacity}"
                )
            }
        }
    }
}

/// Cut, link loads and admissibility of a complete assignment.
pub fn evaluate(p: &Problem, host_of: &[usize]) -> Result<Placement, PlacementError> {
    let hosts = p.inventory.hosts.len();
    if host_of.len() != p.graph.nodes.len() {
        return Err(PlacementError::Invalid(format!(
            "the map places {} nodes, the VI has {}",
            host_of.len(),
            p.graph.nodes.len()
        )));
    }
    if let Some((v, h)) = host_of.iter().enumerate().find(|(_, &h)| h >= hosts) {
        return Err(PlacementError::Invalid(format!(
            "node {v} is on unknown host {h}"
        )));
    }
    if let Some(l) = p
        .graph
        .links
        .iter()
        .find(|l| l.a >= host_of.len() || l.b >= host_of.len())
    {
        return Err(PlacementError::Invalid(format!(
            "a link joins nodes {} and {}, beyond the VI",
            l.a, l.b
        )));
    }
    let router = Router::new(p)?;
    let mut count = vec![0usize; hosts];
    for &h in host_of {
        count[h] += 1;
    }
    let max_group = count.into_iter().max().unwrap_or(0);
    let cut = p
        .graph
        .links
        .iter()
        .filter(|l| host_of[l.a] != host_of[l.b])
        .fold(0u64, |c, l| c.saturating_add(l.bandwidth));
    if let Some(bandwidth) = router.mesh_bandwidth() {
        let traffic = p
            .graph
            .links
            .iter()
            .map(|l| (host_of[l.a], host_of[l.b], l.bandwidth))
            .filter(|&(a, b, w)| a != b && w > 0);
        // At most one pair per crossing link: reserved, not grown (what is
        // reserved and not written is never touched).
        let mut link_loads = Vec::with_capacity(traffic.clone().count());
        network::mesh_loads(hosts, traffic, |a, b, load| {
            link_loads.push(LinkLoad {
                link: PhysicalLink::HostPair { a, b },
                load,
                capacity: bandwidth,
            });
        });
        return Ok(Placement {
            host_of: host_of.to_vec(),
            cut,
            admissible: link_loads.iter().all(|l| l.load <= bandwidth),
            link_loads,
            max_group,
        });
    }
    let mut loads = Loads::new(&router);
    for l in &p.graph.links {
        let (a, b) = (host_of[l.a], host_of[l.b]);
        if a != b {
            loads.traffic(a, b, l.bandwidth, true);
        }
    }
    let mut link_loads: Vec<LinkLoad> = loads
        .load
        .iter()
        .filter(|(_, &w)| w > 0)
        .map(|(&link, &load)| LinkLoad {
            link,
            load,
            capacity: router.capacity(link).0,
        })
        .collect();
    link_loads.sort_by_key(|l| l.link);
    Ok(Placement {
        host_of: host_of.to_vec(),
        cut,
        admissible: loads.overload == 0,
        link_loads,
        max_group,
    })
}

/// Every violation of a manual map (`None` = node not placed). Empty when the
/// map is a valid, admissible placement.
pub fn validate(p: &Problem, host_of: &[Option<usize>]) -> Vec<Violation> {
    let mut out = Vec::new();
    let nodes = &p.graph.nodes;
    let hosts = &p.inventory.hosts;
    let name = |v: usize| {
        nodes
            .get(v)
            .map_or_else(|| format!("#{v}"), |x| x.name.clone())
    };
    let mut ok = true;
    let mut used = vec![[0u64; 4]; hosts.len()];
    for v in 0..nodes.len() {
        match host_of.get(v).copied().flatten() {
            None => {
                ok = false;
                out.push(Violation::Unplaced { node: name(v) });
            }
            Some(h) if h >= hosts.len() => {
                ok = false;
                out.push(Violation::UnknownHost {
                    node: name(v),
                    host: h,
                });
            }
            Some(h) => {
                if let Some(dc) = &p.constraints.datacenter {
                    if &hosts[h].datacenter != dc {
                        out.push(Violation::OutsideDatacenter {
                            node: name(v),
                            host: hosts[h].name.clone(),
                        });
                    }
                }
                let d = nodes[v].demand;
                used[h] = add(used[h], [1, d.vcpu, d.ram_mib, d.disk_gib]);
            }
        }
    }
    for (h, host) in hosts.iter().enumerate() {
        let mine = used[h];
        if mine == [0; 4] {
            continue;
        }
        let total = add(
            mine,
            [
                host.vms.into(),
                host.load.vcpu,
                host.load.ram_mib,
                host.load.disk_gib,
            ],
        );
        let cap = [
            host.max_vms.into(),
            host.capacity.vcpu,
            host.capacity.ram_mib,
            host.capacity.disk_gib,
        ];
        for d in 0..4 {
            if total[d] > cap[d] {
                out.push(Violation::OverCapacity {
                    host: host.name.clone(),
                    resource: DIMS[d],
                    used: total[d],
                    capacity: cap[d],
                });
            }
        }
    }
    for &(v, h) in &p.constraints.pins {
        let placed = host_of.get(v).copied().flatten();
        if v < nodes.len() && placed.is_some() && placed != Some(h) {
            let hn = |h: usize| {
                hosts
                    .get(h)
                    .map_or_else(|| format!("#{h}"), |x| x.name.clone())
            };
            out.push(Violation::PinViolated {
                node: name(v),
                pinned: hn(h),
                placed: placed.map(hn).unwrap_or_default(),
            });
        }
    }
    for (g, members) in p.constraints.anti_affinity.iter().enumerate() {
        let mut by_host: Vec<(usize, usize)> = members
            .iter()
            .filter_map(|&v| host_of.get(v).copied().flatten().map(|h| (h, v)))
            .filter(|(h, _)| *h < hosts.len())
            .collect();
        by_host.sort_unstable();
        by_host.dedup();
        for chunk in by_host.chunk_by(|a, b| a.0 == b.0) {
            if chunk.len() > 1 {
                out.push(Violation::AntiAffinity {
                    group: g,
                    host: hosts[chunk[0].0].name.clone(),
                    nodes: chunk.iter().map(|&(_, v)| name(v)).collect(),
                });
            }
        }
    }
    if ok {
        let full: Vec<usize> = host_of.iter().map(|h| h.unwrap_or(0)).collect();
        match evaluate(p, &full) {
            Ok(pl) => {
                for l in pl.link_loads.iter().filter(|l| l.load > l.capacity) {
                    out.push(Violation::LinkOverCapacity {
                        link: l.link,
                        load: l.load,
                        capacity: l.capacity,
                    });
                }
            }
            Err(e) => out.push(Violation::Invalid {
                reason: e.to_string(),
            }),
        }
    }
    out
}
