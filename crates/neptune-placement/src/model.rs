//! The engine's input: the VI graph, the inventory, the physical network and
//! the constraints.

use serde::{Deserialize, Serialize};

/// Compute resources: what a VM demands, what a host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Virtual CPUs.
    pub vcpu: u64,
    /// Memory in MiB.
    pub ram_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

impl Resources {
    /// No resources at all.
    pub const ZERO: Self = Self {
        vcpu: 0,
        ram_mib: 0,
        disk_gib: 0,
    };
    /// As much as anything can ask (a host that only counts VM slots).
    pub const UNLIMITED: Self = Self {
        vcpu: u64::MAX,
        ram_mib: u64::MAX,
        disk_gib: u64::MAX,
    };
}

/// One virtual node (VM) of a VI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualNode {
    /// The node's name, used in messages.
    pub name: String,
    /// What the VM needs from its host.
    pub demand: Resources,
}

/// A point-to-point virtual link between two nodes (indices into
/// [`VirtualGraph::nodes`]), carrying `bandwidth` (Mbit/s, or any unit shared
/// with the physical network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualLink {
    /// One end.
    pub a: usize,
    /// The other end.
    pub b: usize,
    /// Bandwidth the link needs.
    pub bandwidth: u64,
}

/// The VI graph. Links are point-to-point; a LAN is expanded into a clique
/// by [`VirtualGraph::add_lan`] (see the crate docs for why).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualGraph {
    /// The VMs.
    pub nodes: Vec<VirtualNode>,
    /// The links between them. Parallel links add up; a link from a node to
    /// itself never crosses a host and costs nothing.
    pub links: Vec<VirtualLink>,
}

impl VirtualGraph {
    /// A graph of `n` nodes named `vm0..`, each demanding `demand`, no links.
    pub fn with_nodes(n: usize, demand: Resources) -> Self {
        let nodes = (0..n)
            .map(|i| VirtualNode {
                name: format!("vm{i}"),
                demand,
            })
            .collect();
        Self {
            nodes,
            links: Vec::new(),
        }
    }

    /// Adds a link.
    pub fn link(&mut self, a: usize, b: usize, bandwidth: u64) {
        self.links.push(VirtualLink { a, b, bandwidth });
    }

    /// Adds a LAN of `members`, each able to send `bandwidth`, as a star:
    /// one link of `bandwidth` from its first member (the hub: a LAN's
    /// gateway, by the catalogue's convention) to every other member.
    ///
    /// A LAN is one shared segment, and each member sends and receives at
    /// most `bandwidth`. So out of a host holding `k` of its `n` members at
    /// most `bandwidth * min(k, n - k)` crosses the host's uplink each way.
    /// The star's load on a host's uplink, `bandwidth * k` (`* (n - k)` on
    /// the hub's host), is never below that: a safe reservation that grows
    /// with the members, where a clique (every pair linked) grows with their
    /// square and could not place a 40-member LAN at 100 Mbit/s on 10 Gbit/s
    /// uplinks. Its cut counts the members a host boundary separates from
    /// the hub.
    pub fn add_lan(&mut self, members: &[usize], bandwidth: u64) {
        if let Some((&hub, rest)) = members.split_first() {
            for &m in rest {
                self.link(hub, m, bandwidth);
            }
        }
    }
}

/// One physical host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The host's name.
    pub name: String,
    /// The datacenter the host belongs to.
    pub datacenter: String,
    /// What the host offers in total.
    pub capacity: Resources,
    /// How many VMs it may run in total.
    pub max_vms: u32,
    /// Resources already taken by VMs of other VIs.
    pub load: Resources,
    /// VMs of other VIs already running there.
    pub vms: u32,
}

impl Host {
    /// An empty host that only limits the number of VMs (the paper's model).
    pub fn slots(name: impl Into<String>, max_vms: u32) -> Self {
        Self {
            name: name.into(),
            datacenter: "dc0".to_owned(),
            capacity: Resources::UNLIMITED,
            max_vms,
            load: Resources::ZERO,
            vms: 0,
        }
    }
}

/// The hosts a VI may be placed on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The hosts, indexed by position.
    pub hosts: Vec<Host>,
}

/// A switch in a tree-shaped datacenter network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    /// The switch's name.
    pub name: String,
    /// The switch above it (index into [`TreeNetwork::switches`]); `None` for the root.
    pub parent: Option<usize>,
    /// Capacity of the link to the parent.
    pub uplink_capacity: u64,
    /// Bandwidth other VIs already use on that link.
    pub uplink_load: u64,
}

/// A host's uplink to its switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// The switch (index into [`TreeNetwork::switches`]).
    pub switch: usize,
    /// Capacity of the uplink.
    pub capacity: u64,
    /// Bandwidth other VIs already use on it.
    pub load: u64,
}

/// A tree of switches; traffic between two hosts follows the unique path
/// host uplink -> switches up to the common ancestor -> down to the other host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNetwork {
    /// The switches.
    pub switches: Vec<Switch>,
    /// One uplink per host of the inventory, in the same order.
    pub host_uplinks: Vec<Uplink>,
}

/// The physical network the VI's traffic must fit in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhysicalNetwork {
    /// No bandwidth limit: every placement is admissible.
    Unlimited,
    /// The paper's experimental model: a link of `bandwidth` between every
    /// pair of hosts.
    FullMesh {
        /// Capacity of each host-to-host link.
        bandwidth: u64,
    },
    /// Host uplinks and switch links with capacities.
    Tree(TreeNetwork),
}

/// What the admin asks beyond capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// Only hosts of this datacenter are used.
    pub datacenter: Option<String>,
    /// Manual pins: node -> host (indices).
    pub pins: Vec<(usize, usize)>,
    /// Anti-affinity groups: no two members on the same host.
    pub anti_affinity: Vec<Vec<usize>>,
}

/// One placement problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The VI.
    pub graph: VirtualGraph,
    /// The hosts.
    pub inventory: Inventory,
    /// The network between them.
    pub network: PhysicalNetwork,
    /// Pins, anti-affinity, datacenter.
    pub constraints: Constraints,
}

impl Problem {
    /// The paper's experiment: `n` identical VMs, `ceil(n / k)` hosts of `k`
    /// VM slots, a link of `bandwidth` between every pair of hosts
    /// (`None`: unlimited).
    pub fn groups(graph: VirtualGraph, k: u32, bandwidth: Option<u64>) -> Self {
        let k = k.max(1);
        let hosts_needed = graph.nodes.len().div_ceil(k as usize).max(1);
        let hosts = (0..hosts_needed)
            .map(|i| Host::slots(format!("host{i}"), k))
            .collect();
        let network = match bandwidth {
            Some(bandwidth) => PhysicalNetwork::FullMesh { bandwidth },
            None => PhysicalNetwork::Unlimited,
        };
        Self {
            graph,
            inventory: Inventory { hosts },
            network,
            constraints: Constraints::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The star's load on each host's uplink is at least what a LAN can
    /// put there: `bandwidth * min(k, n - k)` for `k` of `n` members.
    #[test]
    fn a_lan_is_a_star_that_bounds_its_real_traffic() {
        for n in 2..12usize {
            let mut g = VirtualGraph::with_nodes(n, Resources::ZERO);
            let members: Vec<usize> = (0..n).collect();
            g.add_lan(&members, 10);
            assert_eq!(g.links.len(), n - 1);
            // Every split of the members over two hosts (as a bit mask).
            for mask in 0..(1u32 << n) {
                let host = |v: usize| (mask >> v) & 1;
                let k = members.iter().filter(|&&v| host(v) == 1).count() as u64;
                let n = n as u64;
                let real = 10 * k.min(n - k);
                let load: u64 = g
                    .links
                    .iter()
                    .filter(|l| host(l.a) != host(l.b))
                    .map(|l| l.bandwidth)
                    .sum();
                assert!(load >= real, "mask {mask:b}: {load} < {real}");
                // Linear in the members, never the clique's square.
                assert!(load <= 10 * (n - 1));
            }
        }
    }
}
