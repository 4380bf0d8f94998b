//! The catalogue of predefined topologies: parameterised generators that
//! produce valid Virtual Infrastructures for fast definition (the paper's
//! "pre-defined topologies").
//!
//! Every kind has one entry point (a public `eth0` bound to the host
//! interface) on its first node; virtual links use bridged interfaces
//! `eth1`, `eth2`, ... `nodes` is always the total number of VMs.

use neptune_types::{InterfaceName, LinkId, Mbps, Mib, NodeId, TopologyId};
use thiserror::Error;

use crate::model::{
    Cpu, Endpoint, EntryPoint, InterfaceBinding, LinkKind, NetworkInterface, OperatingSystem,
    Software, SoftwareConfiguration, Topology, VirtualLink, VirtualNode,
};

/// The kinds of predefined topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Line,
    Ring,
    Star,
    Tree,
    FullMesh,
    /// The paper's typical VI: a NAT/firewall entry point in front of private backends.
    NatBackends,
    /// A load balancer, web servers and a database.
    ThreeTier,
    /// A head node and workers on one LAN.
    Cluster,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Line,
        Kind::Ring,
        Kind::Star,
        Kind::Tree,
        Kind::FullMesh,
        Kind::NatBackends,
        Kind::ThreeTier,
        Kind::Cluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Line => "line",
            Kind::Ring => "ring",
            Kind::Star => "star",
            Kind::Tree => "tree",
            Kind::FullMesh => "full-mesh",
            Kind::NatBackends => "nat-backends",
            Kind::ThreeTier => "three-tier",
            Kind::Cluster => "cluster",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn description(self) -> &'static str {
        match self {
            Kind::Line => "a chain of VMs, each linked to the next",
            Kind::Ring => "a closed chain of VMs",
            Kind::Star => "a hub VM linked to every other VM",
            Kind::Tree => "a binary tree of VMs, the root facing the Internet",
            Kind::FullMesh => "every VM linked to every other VM",
            Kind::NatBackends => {
                "the paper's typical VI: a NAT/firewall entry point on a LAN of private backends"
            }
            Kind::ThreeTier => "a load balancer, N web servers and a database on two LANs",
            Kind::Cluster => "a head node and N workers on one LAN",
        }
    }

    /// The fewest VMs the kind makes sense with.
    pub fn min_nodes(self) -> usize {
        match self {
            Kind::Line | Kind::Star | Kind::Tree | Kind::FullMesh => 2,
            Kind::NatBackends | Kind::Cluster => 2,
            Kind::Ring | Kind::ThreeTier => 3,
        }
    }

    /// The most VMs the kind is generated with (a full mesh grows quadratically).
    pub fn max_nodes(self) -> usize {
        match self {
            Kind::FullMesh => 64,
            _ => MAX_NODES,
        }
    }

    pub fn default_nodes(self) -> usize {
        match self {
            Kind::ThreeTier => 5,
            _ => 4,
        }
    }
}

/// Most VMs any generated topology has: as many as any design may have.
pub const MAX_NODES: usize = crate::validate::limits::MAX_NODES;

/// Parameters of a generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Total number of VMs.
    pub nodes: usize,
    /// Bandwidth of every virtual link.
    pub bandwidth: Mbps,
    /// Template of every VM; empty: the Manager's default template.
    pub template: String,
    pub ram: Mib,
    pub disk: Mib,
    pub vcpus: u32,
}

impl Params {
    pub fn new(kind: Kind) -> Self {
        Params {
            nodes: kind.default_nodes(),
            bandwidth: Mbps(100),
            template: String::new(),
            ram: Mib(512),
            disk: Mib::from_gib(4),
            vcpus: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogueError {
    #[error("unknown topology kind {0:?} (see `neptune topology catalogue`)")]
    UnknownKind(String),
    #[error("a {kind} topology needs between {min} and {max} nodes, not {nodes}")]
    NodeCount {
        kind: &'static str,
        nodes: usize,
        min: usize,
        max: usize,
    },
    #[error("bandwidth must be positive")]
    ZeroBandwidth,
    #[error("RAM and disk must be positive")]
    ZeroSize,
    #[error("template name {0:?} contains a control character")]
    BadTemplate(String),
}

/// Generates a topology of `kind`. The result passes [`crate::validate()`]
/// and has every MAC assigned.
pub fn generate(kind: Kind, params: &Params) -> Result<Topology, CatalogueError> {
    let n = params.nodes;
    if n < kind.min_nodes() || n > kind.max_nodes() {
        return Err(CatalogueError::NodeCount {
            kind: kind.name(),
            nodes: n,
            min: kind.min_nodes(),
            max: kind.max_nodes(),
        });
    }
    if params.bandwidth.0 == 0 {
        return Err(CatalogueError::ZeroBandwidth);
    }
    if params.ram.0 == 0 || params.disk.0 == 0 {
        return Err(CatalogueError::ZeroSize);
    }
    if params.template.chars().any(char::is_control) {
        return Err(CatalogueError::BadTemplate(params.template.clone()));
    }
    let mut b = Builder::new(kind, params);
    match kind {
        Kind::Line | Kind::Ring => {
            let nodes: Vec<usize> = (0..n)
                .map(|i| b.node(&format!("node{i}"), Role::Plain))
                .collect();
            b.entry(nodes[0]);
            for w in nodes.windows(2) {
                b.connect(w[0], w[1]);
            }
            if kind == Kind::Ring {
                b.connect(nodes[n - 1], nodes[0]);
            }
        }
        Kind::Star => {
            let hub = b.node("hub", Role::Plain);
            b.entry(hub);
            for i in 1..n {
                let spoke = b.node(&format!("spoke{i}"), Role::Plain);
                b.connect(hub, spoke);
            }
        }
        Kind::Tree => {
            let nodes: Vec<usize> = (0..n)
                .map(|i| b.node(&format!("node{i}"), Role::Plain))
                .collect();
            b.entry(nodes[0]);
            for i in 1..n {
                b.connect(nodes[(i - 1) / 2], nodes[i]);
            }
        }
        Kind::FullMesh => {
            let nodes: Vec<usize> = (0..n)
                .map(|i| b.node(&format!("node{i}"), Role::Plain))
                .collect();
            b.entry(nodes[0]);
            for i in 0..n {
                for j in i + 1..n {
                    b.connect(nodes[i], nodes[j]);
                }
            }
        }
        Kind::NatBackends => {
            let gw = b.node("gateway", Role::Gateway);
            b.entry(gw);
            let mut lan = vec![gw];
            lan.extend((1..n).map(|i| b.node(&format!("backend{i}"), Role::Backend)));
            b.lan("backend-lan", &lan);
        }
        Kind::ThreeTier => {
            let lb = b.node("balancer", Role::Balancer);
            b.entry(lb);
            let webs: Vec<usize> = (1..n - 1)
                .map(|i| b.node(&format!("web{i}"), Role::Web))
                .collect();
            let db = b.node("db", Role::Database);
            let mut front = vec![lb];
            front.extend(&webs);
            b.lan("front-lan", &front);
            let mut back = webs;
            back.push(db);
            b.lan("back-lan", &back);
        }
        Kind::Cluster => {
            let head = b.node("head", Role::Head);
            b.entry(head);
            let mut lan = vec![head];
            lan.extend((1..n).map(|i| b.node(&format!("worker{i}"), Role::Worker)));
            b.lan("cluster-lan", &lan);
        }
    }
    Ok(b.finish())
}

#[derive(Clone, Copy)]
enum Role {
    Plain,
    Gateway,
    Backend,
    Balancer,
    Web,
    Database,
    Head,
    Worker,
}

impl Role {
    fn software(self) -> Vec<Software> {
        let sw = |name: &str, kind: &str| Software {
            name: name.into(),
            kind: kind.into(),
            version: String::new(),
        };
        match self {
            Role::Plain | Role::Backend => vec![],
            Role::Gateway => vec![sw("nftables", "firewall")],
            Role::Balancer => vec![sw("haproxy", "loadbalancer")],
            Role::Web => vec![sw("nginx", "webserver")],
            Role::Database => vec![sw("postgresql", "database")],
            Role::Head | Role::Worker => vec![sw("slurm", "scheduler")],
        }
    }
}

struct Builder<'p> {
    params: &'p Params,
    kind: Kind,
    nodes: Vec<VirtualNode>,
    links: Vec<VirtualLink>,
}

impl<'p> Builder<'p> {
    fn new(kind: Kind, params: &'p Params) -> Self {
        Builder {
            params,
            kind,
            nodes: Vec::new(),
            links: Vec::new(),
        }
    }

    fn node(&mut self, id: &str, role: Role) -> usize {
        let p = self.params;
        self.nodes.push(VirtualNode {
            id: generated_id(id),
            name: id.to_owned(),
            description: String::new(),
            cpu: Cpu {
                amount: p.vcpus,
                ..Cpu::default()
            },
            ram: p.ram,
            disk: p.disk,
            interfaces: Vec::new(),
            os: OperatingSystem::default(),
            software: SoftwareConfiguration {
                template: p.template.clone(),
                ssh_port: Some(22),
                software: role.software(),
            },
        });
        self.nodes.len() - 1
    }

    fn interface(&mut self, node: usize, binding: InterfaceBinding) -> Endpoint {
        let n = &mut self.nodes[node];
        let name = generated_iface(n.interfaces.len());
        let mut iface = NetworkInterface::new(name.clone());
        iface.binding = binding;
        iface.kind = "virtio".to_owned();
        n.interfaces.push(iface);
        Endpoint {
            node: n.id.clone(),
            interface: name,
        }
    }

    /// The node's public interface: `eth0`, bound to the host interface.
    /// Called before the node gets any link.
    fn entry(&mut self, node: usize) {
        let ep = self.interface(node, InterfaceBinding::Hif);
        if let Some(iface) = self.nodes[node]
            .interfaces
            .iter_mut()
            .find(|i| i.name == ep.interface)
        {
            iface.entry_point = Some(EntryPoint::default());
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let ea = self.interface(a, InterfaceBinding::Bridge);
        let eb = self.interface(b, InterfaceBinding::Bridge);
        let id = generated_link(&format!("{}-{}", ea.node, eb.node), self.links.len());
        self.links.push(VirtualLink {
            id,
            kind: LinkKind::PointToPoint,
            bandwidth: self.params.bandwidth,
            endpoints: vec![ea, eb],
            subnet: None,
        });
    }

    fn lan(&mut self, name: &str, members: &[usize]) {
        let endpoints = members
            .iter()
            .map(|&m| self.interface(m, InterfaceBinding::Bridge))
            .collect();
        self.links.push(VirtualLink {
            id: generated_link(name, self.links.len()),
            kind: LinkKind::Lan,
            bandwidth: self.params.bandwidth,
            endpoints,
            subnet: None,
        });
    }

    fn finish(self) -> Topology {
        Topology {
            id: generated_topology(self.kind.name()),
            nodes: self.nodes,
            links: self.links,
        }
    }
}

// Generated names are valid by construction (short, from [a-z0-9-]).
fn generated_id(id: &str) -> NodeId {
    NodeId::new(id).expect("generated node ids are valid")
}

fn generated_iface(k: usize) -> InterfaceName {
    InterfaceName::new(format!("eth{k}")).expect("generated interface names are valid")
}

fn generated_link(name: &str, index: usize) -> LinkId {
    LinkId::new(name)
        .or_else(|_| LinkId::new(format!("link{index}")))
        .expect("generated link ids are valid")
}

fn generated_topology(name: &str) -> TopologyId {
    TopologyId::new(name).expect("catalogue names are valid ids")
}

/// Parses a kind name.
pub fn kind(name: &str) -> Result<Kind, CatalogueError> {
    Kind::from_name(name).ok_or_else(|| CatalogueError::UnknownKind(name.to_owned()))
}
