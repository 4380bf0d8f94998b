//! Planning a VI's placement: pure functions of the design and an inventory
//! snapshot. Nothing here changes state; the Manager commits a plan in one
//! transaction (the store refuses it if a host filled up meanwhile).

use std::collections::HashMap;

use neptune_api::{AddressPlan, HomeAddress, InterfaceAddress, LinkAddresses, Plan, PlannedVm};
use neptune_ipam::ipnet::Ipv4Net;
use neptune_ipam::{
    Allocation, Allocations, DatacenterConfig, DatacenterName, DomainConfig, Owner, PointToPoint,
    StoreRow, ViRequest,
};
use neptune_placement::{
    Constraints, Host, Inventory, Options, PhysicalNetwork, Problem, Resources, SolverKind, Switch,
    TreeNetwork, Uplink, VirtualGraph, VirtualNode,
};
use neptune_store::{AddressRow, DatacenterRecord, HostRecord, HostState, OwnedAddress, VmRecord};
use neptune_topology::Topology;
use neptune_types::ViId;

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("datacenter {0:?} has no ready host")]
    NoHosts(String),
    #[error(transparent)]
    Placement(#[from] neptune_placement::PlacementError),
    #[error("the manual placement is invalid: {}", .0.join("; "))]
    Manual(Vec<String>),
}

/// A placement plan, as shown to the admin before accepting.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementPlan {
    /// What the admin sees.
    pub view: Plan,
    /// What the store commits.
    pub records: Vec<VmRecord>,
}

/// The placement graph of a design: VMs with their demands, links with
/// their bandwidth (a LAN as a star through its first member, see
/// neptune-placement).
pub fn graph(topo: &Topology) -> VirtualGraph {
    let index: HashMap<&str, usize> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut g = VirtualGraph {
        nodes: topo
            .nodes
            .iter()
            .map(|n| VirtualNode {
                name: n.id.to_string(),
                demand: Resources {
                    vcpu: u64::from(n.vcpus()),
                    ram_mib: n.ram.0,
                    disk_gib: n.disk.0.div_ceil(1024),
                },
            })
            .collect(),
        links: Vec::new(),
    };
    for link in &topo.links {
        let members: Vec<usize> = link
            .endpoints
            .iter()
            .filter_map(|e| index.get(e.node.as_str()).copied())
            .collect();
        g.add_lan(&members, link.bandwidth.0);
    }
    g
}

fn inventory(hosts: &[&HostRecord]) -> Inventory {
    Inventory {
        hosts: hosts
            .iter()
            .map(|h| Host {
                name: h.name.clone(),
                datacenter: h.datacenter_id.to_string(),
                capacity: Resources {
                    vcpu: h.cpus.max(0) as u64,
                    ram_mib: h.ram_mib.max(0) as u64,
                    disk_gib: (h.disk_mib.max(0) as u64) / 1024,
                },
                max_vms: u32::try_from(h.vm_slots.max(0)).unwrap_or(u32::MAX),
                load: Resources {
                    vcpu: h.used.vcpus.max(0) as u64,
                    ram_mib: h.used.ram_mib.max(0) as u64,
                    disk_gib: (h.used.disk_mib.max(0) as u64).div_ceil(1024),
                },
                vms: u32::try_from(h.used.slots.max(0)).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}

/// Capacity given to links the Manager knows no limit for; far from
/// `u64::MAX` so that loads added to it cannot overflow.
const UNLIMITED_MBPS: u64 = u64::MAX / 4;

/// The datacenter's network as the Manager knows it: every host's uplink to
/// one switch, with the capacity its Agent registered and what placed VIs
/// take of it. Traffic between two hosts crosses both uplinks. A host
/// without a registered uplink does not limit bandwidth; when none has one,
/// the network is unlimited (the cut is still minimised).
fn network(hosts: &[&HostRecord]) -> PhysicalNetwork {
    if hosts.iter().all(|h| h.uplink_mbps <= 0) {
        return PhysicalNetwork::Unlimited;
    }
    let mbps = |v: i64| u64::try_from(v).unwrap_or(0);
    PhysicalNetwork::Tree(TreeNetwork {
        switches: vec![Switch {
            name: "datacenter".to_owned(),
            parent: None,
            uplink_capacity: UNLIMITED_MBPS,
            uplink_load: 0,
        }],
        host_uplinks: hosts
            .iter()
            .map(|h| Uplink {
                switch: 0,
                capacity: if h.uplink_mbps > 0 {
                    mbps(h.uplink_mbps)
                } else {
                    UNLIMITED_MBPS
                },
                load: mbps(h.used.uplink_mbps),
            })
            .collect(),
    })
}

/// Each node's share of its host's uplink: the bandwidth of its virtual
/// links to nodes on other hosts. A host's shares add up to what the VI
/// puts on its uplink, which the store reserves per VM.
pub fn uplink_shares(graph: &VirtualGraph, host_of: &[usize]) -> Vec<u64> {
    let mut shares = vec![0u64; graph.nodes.len()];
    for l in &graph.links {
        if host_of[l.a] != host_of[l.b] {
            shares[l.a] = shares[l.a].saturating_add(l.bandwidth);
            shares[l.b] = shares[l.b].saturating_add(l.bandwidth);
        }
    }
    shares
}

/// Places `topo` on the ready hosts of `dc`, automatically or, when
/// `manual` maps node ids to host names, as the admin says (validated the
/// same way, every violation reported).
pub fn place(
    vi: ViId,
    topo: &Topology,
    dc: &DatacenterRecord,
    hosts: &[HostRecord],
    manual: Option<&HashMap<String, String>>,
    seed: u64,
) -> Result<PlacementPlan, PlanError> {
    let ready: Vec<&HostRecord> = hosts
        .iter()
        .filter(|h| h.datacenter_id == dc.id && h.state == HostState::Ready)
        .collect();
    if ready.is_empty() {
        return Err(PlanError::NoHosts(dc.name.clone()));
    }
    if manual.is_none() {
        let some = candidates(&ready, topo, seed);
        if some.len() < ready.len() {
            // A few hosts with room suffice almost always; should they not
            // (room too fragmented, uplinks too full), every ready host is
            // tried, so the shortlist never refuses what all could take.
            match place_on(vi, topo, dc, some, None, seed) {
                Ok(plan) if plan.view.admissible => return Ok(plan),
                _ => {}
            }
        }
    }
    place_on(vi, topo, dc, ready, manual, seed)
}

/// Fewest hosts an automatic placement considers (when the datacenter has
/// them): enough choice for the partitioning to keep a VI's links inside
/// hosts.
pub const MIN_CANDIDATES: usize = 16;

/// The hosts an automatic placement of `topo` considers: those with the
/// most room left (vCPUs, then RAM), in an order that is stable for a VI
/// (`seed`) and different between VIs where hosts have equal room, taken
/// until they hold twice what the VI needs in every resource and VM slots,
/// and at least [`MIN_CANDIDATES`]. Planning on tens of thousands of hosts
/// costs time linear in their number in the solver; this keeps it to the
/// size of the VI, and spreads concurrent accepts over different hosts so
/// their commits do not collide.
pub fn candidates<'h>(ready: &[&'h HostRecord], topo: &Topology, seed: u64) -> Vec<&'h HostRecord> {
    let need = |f: fn(&neptune_topology::VirtualNode) -> i64| -> i64 {
        topo.nodes.iter().map(f).fold(0i64, i64::saturating_add)
    };
    let want = [
        need(|n| i64::from(n.vcpus())),
        need(|n| i64::try_from(n.ram.0).unwrap_or(i64::MAX)),
        need(|n| i64::try_from(n.disk.0).unwrap_or(i64::MAX)),
        i64::try_from(topo.nodes.len()).unwrap_or(i64::MAX),
    ]
    .map(|x| x.saturating_mul(2));
    let free = |h: &HostRecord| {
        [
            h.cpus - h.used.vcpus,
            h.ram_mib - h.used.ram_mib,
            h.disk_mib - h.used.disk_mib,
            h.vm_slots - h.used.slots,
        ]
        .map(|x| x.max(0))
    };
    // What the smallest VM needs of each resource, taken apart: a host
    // that fits none of the VI's VMs is no candidate.
    let smallest = (
        topo.nodes
            .iter()
            .map(|n| i64::from(n.vcpus()))
            .min()
            .unwrap_or(0),
        topo.nodes
            .iter()
            .map(|n| i64::try_from(n.ram.0).unwrap_or(i64::MAX))
            .min()
            .unwrap_or(0),
    );
    let mut hosts: Vec<(&HostRecord, [i64; 4], u64)> = ready
        .iter()
        .map(|&h| (h, free(h), mix(seed ^ h.id.uuid().as_u64_pair().0)))
        .filter(|(_, f, _)| f[3] > 0 && f[0] >= smallest.0 && f[1] >= smallest.1)
        .collect();
    hosts.sort_unstable_by(|a, b| (b.1[0], b.1[1]).cmp(&(a.1[0], a.1[1])).then(a.2.cmp(&b.2)));
    let mut held = [0i64; 4];
    let mut out = Vec::new();
    for (h, f, _) in hosts {
        if out.len() >= MIN_CANDIDATES && held.iter().zip(&want).all(|(h, w)| h >= w) {
            break;
        }
        for (held, f) in held.iter_mut().zip(f) {
            *held = held.saturating_add(f);
        }
        out.push(h);
    }
    out
}

/// A 64-bit mixer (SplitMix64's finaliser): nearby inputs give unrelated
/// outputs, so hosts of equal room are ordered differently for every VI.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// [`place`] on the hosts `ready`, all of them ready hosts of `dc`.
fn place_on(
    vi: ViId,
    topo: &Topology,
    dc: &DatacenterRecord,
    ready: Vec<&HostRecord>,
    manual: Option<&HashMap<String, String>>,
    seed: u64,
) -> Result<PlacementPlan, PlanError> {
    let problem = Problem {
        graph: graph(topo),
        inventory: inventory(&ready),
        network: network(&ready),
        constraints: Constraints::default(),
    };
    let (placement, optimal, lower_bound, gap) = match manual {
        Some(map) => {
            let mut errors = Vec::new();
            let mut host_of = Vec::with_capacity(topo.nodes.len());
            for node in &topo.nodes {
                match map.get(node.id.as_str()) {
                    Some(name) => match ready.iter().position(|h| &h.name == name) {
                        Some(i) => host_of.push(i),
                        None => errors.push(format!(
                            "node {}: host {name:?} is not a ready host of datacenter {}",
                            node.id, dc.name
                        )),
                    },
                    None => errors.push(format!("node {} has no host", node.id)),
                }
            }
            for name in map.keys() {
                if !topo.nodes.iter().any(|n| n.id.as_str() == name) {
                    errors.push(format!("the design has no node {name:?}"));
                }
            }
            if !errors.is_empty() {
                return Err(PlanError::Manual(errors));
            }
            let map: Vec<Option<usize>> = host_of.iter().copied().map(Some).collect();
            let violations = neptune_placement::validate(&problem, &map);
            if !violations.is_empty() {
                return Err(PlanError::Manual(
                    violations.iter().map(ToString::to_string).collect(),
                ));
            }
            let placement = neptune_placement::evaluate(&problem, &host_of)?;
            (placement, false, None, None)
        }
        None => {
            let options = Options {
                solver: SolverKind::Multilevel,
                effort: neptune_placement::Effort::Fast,
                restarts: None,
                seed,
            };
            let solution = neptune_placement::solve(&problem, &options)?;
            let gap = solution.gap();
            (
                solution.placement,
                solution.optimal,
                solution.lower_bound,
                gap,
            )
        }
    };
    let shares = uplink_shares(&problem.graph, &placement.host_of);
    let mut vms = Vec::new();
    let mut records = Vec::new();
    for ((node, &h), share) in topo.nodes.iter().zip(&placement.host_of).zip(shares) {
        let host = ready[h];
        let vm = VmRecord {
            vi_id: vi,
            node_id: node.id.to_string(),
            host_id: host.id,
            vcpus: i64::from(node.vcpus()),
            ram_mib: i64::try_from(node.ram.0).unwrap_or(i64::MAX),
            disk_mib: i64::try_from(node.disk.0).unwrap_or(i64::MAX),
            uplink_mbps: i64::try_from(share).unwrap_or(i64::MAX),
        };
        vms.push(PlannedVm {
            node: vm.node_id.clone(),
            host: host.name.clone(),
            vcpus: vm.vcpus,
            ram_mib: vm.ram_mib,
            disk_mib: vm.disk_mib,
            moving_to: None,
        });
        records.push(vm);
    }
    Ok(PlacementPlan {
        view: Plan {
            datacenter: dc.name.clone(),
            vms,
            cut_mbps: placement.cut,
            admissible: placement.admissible,
            optimal,
            lower_bound_mbps: lower_bound,
            gap,
            addresses: AddressPlan::default(),
        },
        records,
    })
}

#[cfg(test)]
mod tests {
    use neptune_store::HostUsage;
    use neptune_topology::catalogue::{generate, Kind, Params};
    use neptune_types::DatacenterId;
    use uuid::Uuid;

    use super::*;

    fn host(dc: DatacenterId, name: &str, cpus: i64, slots: i64) -> HostRecord {
        HostRecord {
            id: Uuid::new_v4().into(),
            datacenter_id: dc,
            name: name.to_owned(),
            agent_url: String::new(),
            cpus,
            ram_mib: 65536,
            disk_mib: 1 << 20,
            vm_slots: slots,
            uplink_mbps: 0,
            state: HostState::Ready,
            last_seen: 0,
            used: HostUsage::default(),
        }
    }

    fn datacenter(name: &str) -> DatacenterRecord {
        DatacenterRecord {
            public_gateway: None,
            id: Uuid::new_v4().into(),
            name: name.into(),
            created_at: 0,
            home_pools: vec![],
        }
    }

    /// A catalogue design of `nodes` VMs.
    fn design(kind: Kind, nodes: usize) -> Topology {
        generate(
            kind,
            &Params {
                nodes,
                ..Params::new(kind)
            },
        )
        .unwrap()
    }

    /// A large datacenter is planned on a shortlist: the hosts with the
    /// most room, enough of them, the same for one VI and different
    /// between VIs where hosts are alike.
    #[test]
    fn automatic_placement_considers_a_shortlist_of_the_roomiest_hosts() {
        let dc = datacenter("a");
        let topo = design(Kind::Cluster, 4);
        let mut hosts: Vec<HostRecord> = (0..300)
            .map(|i| host(dc.id, &format!("h{i}"), 16, 8))
            .collect();
        // Half of them are busy: the shortlist takes none of those.
        for h in hosts.iter_mut().skip(150) {
            h.used.vcpus = 12;
            h.used.slots = 4;
        }
        // And a full one never appears.
        hosts[0].used.slots = 8;
        let ready: Vec<&HostRecord> = hosts.iter().collect();
        let short = candidates(&ready, &topo, 1);
        assert_eq!(short.len(), MIN_CANDIDATES);
        assert!(short.iter().all(|h| h.used.vcpus == 0 && h.used.slots == 0));
        assert!(short.iter().all(|h| h.name != "h0"));
        let names = |c: &[&HostRecord]| c.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&short), names(&candidates(&ready, &topo, 1)));
        assert_ne!(names(&short), names(&candidates(&ready, &topo, 2)));
        // A VI needing more than 16 hosts' room gets twice its need.
        let big = design(Kind::Cluster, 100);
        let long = candidates(&ready, &big, 1);
        let vcpus: i64 = big.nodes.iter().map(|n| i64::from(n.vcpus())).sum();
        let held: i64 = long.iter().map(|h| h.cpus - h.used.vcpus).sum();
        let slots: i64 = long.iter().map(|h| h.vm_slots - h.used.slots).sum();
        assert!(held >= 2 * vcpus && slots >= 200, "{held} {slots}");
        assert!(long.len() < ready.len());
        // The plan uses shortlisted hosts only.
        let plan = place(Uuid::new_v4().into(), &topo, &dc, &hosts, None, 1).unwrap();
        let short_names = names(&short);
        assert!(plan.view.vms.iter().all(|v| short_names.contains(&v.host)));
    }

    /// A host is shortlisted when it fits the smallest need of each
    /// resource, taken apart: here one VM needs little RAM, another few
    /// vCPUs, and a host with little RAM free still takes the first.
    #[test]
    fn the_smallest_need_is_taken_per_resource() {
        let dc = datacenter("a");
        let mut topo = design(Kind::Cluster, 2);
        topo.nodes[0].cpu.amount = 1;
        topo.nodes[0].ram = neptune_types::Mib(8192);
        topo.nodes[1].cpu.amount = 2;
        topo.nodes[1].ram = neptune_types::Mib(256);
        let lean = HostRecord {
            ram_mib: 1024,
            ..host(dc.id, "lean", 32, 8)
        };
        let ready = vec![&lean];
        assert_eq!(candidates(&ready, &topo, 1).len(), 1);
    }

    /// When the shortlist cannot take the VI (here: its one big node fits
    /// only hosts with fewer vCPUs free, which sort last), every ready host
    /// is tried.
    #[test]
    fn a_shortlist_that_cannot_take_the_vi_falls_back_to_every_host() {
        let dc = datacenter("a");
        let mut topo = design(Kind::Cluster, 4);
        topo.nodes[0].ram = neptune_types::Mib(32768);
        let mut hosts: Vec<HostRecord> = (0..40)
            .map(|i| HostRecord {
                ram_mib: 4096,
                ..host(dc.id, &format!("small{i}"), 64, 8)
            })
            .collect();
        hosts.push(host(dc.id, "roomy", 8, 8));
        let ready: Vec<&HostRecord> = hosts.iter().collect();
        assert!(candidates(&ready, &topo, 1)
            .iter()
            .all(|h| h.name != "roomy"));
        let plan = place(Uuid::new_v4().into(), &topo, &dc, &hosts, None, 1).unwrap();
        let first = topo.nodes[0].id.as_str();
        let on = plan.view.vms.iter().find(|v| v.node == first).unwrap();
        assert_eq!(on.host, "roomy");
    }

    /// A line of 6 VMs (links of 100 Mbit/s) on two hosts of 3 slots: any
    /// placement cuts at least one link, which crosses both uplinks.
    #[test]
    fn uplinks_limit_placement_and_are_shared_by_vms() {
        let dc = datacenter("a");
        let topo = design(Kind::Line, 6);
        let with_uplink = |name: &str, mbps: i64, used: i64| HostRecord {
            uplink_mbps: mbps,
            used: HostUsage {
                uplink_mbps: used,
                ..HostUsage::default()
            },
            ..host(dc.id, name, 8, 3)
        };
        let hosts = vec![with_uplink("h1", 100, 0), with_uplink("h2", 100, 0)];
        let plan = place(Uuid::new_v4().into(), &topo, &dc, &hosts, None, 1).unwrap();
        assert!(plan.view.admissible);
        for h in &hosts {
            let on_host: i64 = plan
                .records
                .iter()
                .filter(|v| v.host_id == h.id)
                .map(|v| v.uplink_mbps)
                .sum();
            assert_eq!(on_host, 100, "the cut link crosses {}'s uplink", h.name);
        }
        // Half of h1's uplink is taken by another VI: no placement fits.
        let busy = vec![with_uplink("h1", 100, 50), with_uplink("h2", 100, 0)];
        let plan = place(Uuid::new_v4().into(), &topo, &dc, &busy, None, 1).unwrap();
        assert!(!plan.view.admissible, "{:?}", plan.view);
        // A manual map cutting three links is refused, naming the uplink.
        let map: HashMap<String, String> = topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.id.to_string(),
                    if i % 2 == 0 { "h1" } else { "h2" }.to_owned(),
                )
            })
            .collect();
        let err = place(Uuid::new_v4().into(), &topo, &dc, &hosts, Some(&map), 1).unwrap_err();
        assert!(matches!(err, PlanError::Manual(_)), "{err}");
        assert!(err.to_string().to_lowercase().contains("uplink"), "{err}");
        // Without registered uplinks, bandwidth does not limit placement.
        let plain = vec![host(dc.id, "h1", 8, 3), host(dc.id, "h2", 8, 3)];
        assert!(place(Uuid::new_v4().into(), &topo, &dc, &plain, Some(&map), 1).is_ok());
    }

    #[test]
    fn places_within_capacity_and_minimises_the_cut() {
        let dc = datacenter("a");
        let other = Uuid::new_v4().into();
        let hosts = vec![
            host(dc.id, "h1", 8, 3),
            host(dc.id, "h2", 8, 3),
            host(other, "elsewhere", 64, 64),
        ];
        let topo = design(Kind::Line, 6);
        let plan = place(Uuid::new_v4().into(), &topo, &dc, &hosts, None, 1).unwrap();
        assert_eq!(plan.view.vms.len(), 6);
        assert!(
            plan.view.vms.iter().all(|v| v.host != "elsewhere"),
            "only the chosen datacenter"
        );
        for h in ["h1", "h2"] {
            assert_eq!(plan.view.vms.iter().filter(|v| v.host == h).count(), 3);
        }
        assert_eq!(
            plan.view.cut_mbps, 100,
            "a line split in two halves cuts one link"
        );
    }

    #[test]
    fn refuses_what_does_not_fit_and_bad_manual_maps() {
        let dc = datacenter("a");
        let hosts = vec![host(dc.id, "h1", 2, 10)];
        let topo = design(Kind::Star, 4);
        let err = place(Uuid::new_v4().into(), &topo, &dc, &hosts, None, 1).unwrap_err();
        assert!(err.to_string().contains("nothing fits"), "{err}");
        let empty = datacenter("b");
        assert!(matches!(
            place(Uuid::new_v4().into(), &topo, &empty, &hosts, None, 1),
            Err(PlanError::NoHosts(_))
        ));

        let hosts = vec![host(dc.id, "h1", 64, 10), host(dc.id, "h2", 64, 1)];
        let mut map: HashMap<String, String> = topo
            .nodes
            .iter()
            .map(|n| (n.id.to_string(), "h2".to_owned()))
            .collect();
        map.insert("ghost".into(), "h1".into());
        map.insert("spoke1".into(), "nowhere".into());
        let err = place(Uuid::new_v4().into(), &topo, &dc, &hosts, Some(&map), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the design has no node \"ghost\""), "{err}");
        assert!(
            err.contains("node spoke1: host \"nowhere\" is not a ready host"),
            "{err}"
        );
        map.remove("ghost");
        map.insert("spoke1".into(), "h1".into());
        let err = place(Uuid::new_v4().into(), &topo, &dc, &hosts, Some(&map), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("h2"), "too many VMs on h2: {err}");
        let fine: HashMap<String, String> = topo
            .nodes
            .iter()
            .map(|n| (n.id.to_string(), "h1".to_owned()))
            .collect();
        let plan = place(Uuid::new_v4().into(), &topo, &dc, &hosts, Some(&fine), 1).unwrap();
        assert_eq!((plan.view.cut_mbps, plan.view.vms.len()), (0, 4));
    }
}

/// Why no address plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("the address configuration is invalid: {0}")]
    Config(String),
    #[error("stored addresses are corrupt: {0}")]
    Stored(String),
    #[error(transparent)]
    Plan(#[from] neptune_ipam::PlanError),
}

impl AddressError {
    /// The message for the VI's owner: what of their design is refused,
    /// never who holds the space it wanted (another tenant's VI, link or
    /// block is not theirs to know).
    pub fn for_tenant(&self) -> String {
        use neptune_ipam::PlanError as E;
        match self {
            AddressError::Plan(E::SubnetTaken { link, subnet, .. }) => {
                format!("subnet {subnet} of link {link} is taken")
            }
            AddressError::Plan(E::AddressTaken {
                link,
                interface,
                address,
                subnet,
                ..
            }) => format!(
                "pinned address {address} of {interface} needs subnet {subnet} for link {link}, \
                 which is taken"
            ),
            AddressError::Plan(E::HomeAddressTaken {
                entry_point,
                address,
                ..
            }) => format!("Home Address {address} of entry point {entry_point} is taken"),
            other => other.to_string(),
        }
    }
}

/// The domain's address configuration: the Manager's private pools and
/// every datacenter's Home Address pools.
pub fn domain(
    private_pools: &[Ipv4Net],
    datacenters: &[DatacenterRecord],
) -> Result<DomainConfig, AddressError> {
    let mut dcs = Vec::new();
    let mut reserved = Vec::new();
    for dc in datacenters {
        let name = DatacenterName::new(dc.name.as_str())
            .map_err(|e| AddressError::Config(e.to_string()))?;
        let pools = dc
            .home_pools
            .iter()
            .map(|p| {
                p.parse::<Ipv4Net>()
                    .map_err(|_| AddressError::Config(format!("{p:?} is not a prefix")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(gw) = public_gateway(dc)? {
            let inside = pools.iter().find(|p| p.contains(&gw)).ok_or_else(|| {
                AddressError::Config(format!(
                    "public gateway {gw} of datacenter {} is in none of its Home Address pools",
                    dc.name
                ))
            })?;
            if gw == inside.network() || gw == inside.broadcast() {
                return Err(AddressError::Config(format!(
                    "public gateway {gw} of datacenter {} is not a host address of {inside}",
                    dc.name
                )));
            }
            // Never a Home Address.
            reserved.push(Ipv4Net::from(gw));
        }
        dcs.push(DatacenterConfig {
            name,
            home_pools: pools,
        });
    }
    let config = DomainConfig {
        private_pools: private_pools.to_vec(),
        datacenters: dcs,
        reserved,
        point_to_point: PointToPoint::default(),
    };
    config
        .validate()
        .map_err(|e| AddressError::Config(e.to_string()))?;
    Ok(config)
}

/// A datacenter's public gateway, if it has one.
pub fn public_gateway(dc: &DatacenterRecord) -> Result<Option<std::net::Ipv4Addr>, AddressError> {
    dc.public_gateway
        .as_deref()
        .map(|g| {
            g.parse().map_err(|_| {
                AddressError::Config(format!(
                    "public gateway {g:?} of datacenter {} is not an IPv4 address",
                    dc.name
                ))
            })
        })
        .transpose()
}

/// The planner's snapshot: the domain and every stored allocation.
pub fn snapshot(
    config: DomainConfig,
    stored: &[OwnedAddress],
) -> Result<Allocations, AddressError> {
    let allocations = stored
        .iter()
        .filter(|row| row.pool != crate::seed::MAC_POOL)
        .map(|row| {
            let bad = |what: &str| {
                AddressError::Stored(format!("{what} of row {}/{}", row.pool, row.prefix))
            };
            Ok(Allocation {
                pool: row.pool.parse().map_err(|_| bad("pool"))?,
                prefix: row.prefix.parse().map_err(|_| bad("prefix"))?,
                owner: serde_json::from_str::<Owner>(&row.owner).map_err(|_| bad("owner"))?,
            })
        })
        .collect::<Result<Vec<_>, AddressError>>()?;
    Allocations::restore(config, allocations).map_err(|e| AddressError::Stored(e.to_string()))
}

/// The address plan committed with a VI's acceptance, if it has one; a
/// stored plan that does not load is an error naming the VI, never "no
/// plan".
pub fn committed(
    vi: &neptune_store::ViRecord,
) -> Result<Option<neptune_ipam::Plan>, neptune_store::StoreError> {
    vi.decode_address_plan()
}

/// The private addresses `topo` takes when planned as VI `vi`, whatever
/// the other VIs hold: its link subnets and its block, as planned in the
/// empty pools (what the quota of private addresses counts before a plan
/// is committed).
pub fn private_demand(
    private_pools: &[Ipv4Net],
    vi: ViId,
    topo: &Topology,
) -> Result<u64, AddressError> {
    let empty = Allocations::new(domain(private_pools, &[])?)
        .map_err(|e| AddressError::Config(e.to_string()))?;
    let vi =
        neptune_ipam::ViId::new(vi.to_string()).map_err(|e| AddressError::Config(e.to_string()))?;
    let mut request = ViRequest::from_topology(topo, vi, None);
    // Home Addresses come from the public pools: not counted here.
    request.entry_points.clear();
    Ok(neptune_ipam::plan(&empty, &request)?.private_addresses())
}

/// Plans the addresses of `topo` as VI `vi` homed in `home`.
pub fn addresses(
    snapshot: &Allocations,
    vi: ViId,
    topo: &Topology,
    home: &str,
) -> Result<neptune_ipam::Plan, AddressError> {
    let vi =
        neptune_ipam::ViId::new(vi.to_string()).map_err(|e| AddressError::Config(e.to_string()))?;
    let home = DatacenterName::new(home).map_err(|e| AddressError::Config(e.to_string()))?;
    let request = ViRequest::from_topology(topo, vi, Some(home));
    Ok(neptune_ipam::plan(snapshot, &request)?)
}

/// The rows the store commits for `plan`.
pub fn address_rows(plan: &neptune_ipam::Plan) -> Vec<AddressRow> {
    plan.store_rows()
        .into_iter()
        .map(|row| match row {
            StoreRow::Owned {
                pool,
                prefix,
                owner,
            } => AddressRow {
                pool: pool.to_string(),
                prefix: prefix.to_string(),
                owner: Some(serde_json::to_string(&owner).unwrap_or_default()),
            },
            StoreRow::Covers { pool, prefix } => AddressRow {
                pool: pool.to_string(),
                prefix: prefix.to_string(),
                owner: None,
            },
        })
        .collect()
}

/// The covering prefixes of a VI's stored allocations (what releasing them
/// decrements). A row that does not load is an error: skipping it would
/// keep its addresses taken for ever.
pub fn covers_of(
    vi: ViId,
    stored: &[OwnedAddress],
) -> Result<Vec<(String, String)>, neptune_store::StoreError> {
    let damaged = |row: &OwnedAddress, what: &str| neptune_store::StoreError::Corrupt {
        table: "addresses",
        column: "prefix",
        row: format!("pool {:?}, prefix {:?}", row.pool, row.prefix),
        problem: what.to_owned(),
        source: None,
    };
    let mut out = Vec::new();
    for row in stored
        .iter()
        .filter(|row| row.vi_id == Some(vi) && row.pool != crate::seed::MAC_POOL)
    {
        let pool: Ipv4Net = row
            .pool
            .parse()
            .map_err(|_| damaged(row, "the pool is no prefix"))?;
        let prefix: Ipv4Net = row
            .prefix
            .parse()
            .map_err(|_| damaged(row, "the prefix is no prefix"))?;
        let owner: Owner = row.decode_owner()?;
        let a = Allocation {
            pool,
            prefix,
            owner,
        };
        out.extend(
            a.covering_prefixes()
                .map(|c| (row.pool.clone(), c.to_string())),
        );
    }
    Ok(out)
}

/// The API view of an address plan.
pub fn address_view(plan: &neptune_ipam::Plan) -> AddressPlan {
    AddressPlan {
        block: plan.block.map(|b| b.to_string()),
        links: plan
            .links
            .iter()
            .map(|l| LinkAddresses {
                link: l.link.to_string(),
                subnet: l.subnet.to_string(),
                gateway: l.gateway.map(|g| g.to_string()),
            })
            .collect(),
        interfaces: plan
            .interfaces()
            .map(|(l, i)| InterfaceAddress {
                node: i.node.to_string(),
                interface: i.interface.to_string(),
                link: l.link.to_string(),
                address: i.cidr.to_string(),
            })
            .collect(),
        home_addresses: plan
            .entry_points
            .iter()
            .map(|e| HomeAddress {
                node: e.node.to_string(),
                interface: e.interface.to_string(),
                address: e.home_address.to_string(),
                datacenter: e.datacenter.to_string(),
            })
            .collect(),
    }
}
