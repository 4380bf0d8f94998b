//! Checks that hold whatever form a topology was written in. Each problem
//! carries a [`Loc`] that the XML reader maps to a line and column and the
//! JSON reader to a JSON pointer.

use std::collections::{HashMap, HashSet};

use neptune_types::{InterfaceName, MacAddr, NodeId};
use thiserror::Error;

use crate::model::{LinkKind, Topology};

/// Where in a topology a problem is (indices into the model's vectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loc {
    Topology,
    Node(usize),
    NodeField(usize, Field),
    Interface(usize, usize),
    InterfaceField(usize, usize, Field),
    Link(usize),
    LinkField(usize, Field),
    Endpoint(usize, usize),
}

/// A field of the model that a problem points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Ram,
    Disk,
    Mac,
    Address,
    HomeAddress,
    Bandwidth,
    Kind,
    Subnet,
    Text,
}

impl Loc {
    /// The JSON pointer of this location in the JSON form of the model.
    pub fn json_pointer(self) -> String {
        let field = |f: Field| match f {
            Field::Ram => "ram",
            Field::Disk => "disk",
            Field::Mac => "mac",
            Field::Address => "address",
            Field::HomeAddress => "entry_point/home_address",
            Field::Bandwidth => "bandwidth",
            Field::Kind => "type",
            Field::Subnet => "subnet",
            Field::Text => "name",
        };
        match self {
            Loc::Topology => String::new(),
            Loc::Node(n) => format!("/nodes/{n}"),
            Loc::NodeField(n, f) => format!("/nodes/{n}/{}", field(f)),
            Loc::Interface(n, i) => format!("/nodes/{n}/interfaces/{i}"),
            Loc::InterfaceField(n, i, f) => format!("/nodes/{n}/interfaces/{i}/{}", field(f)),
            Loc::Link(l) => format!("/links/{l}"),
            Loc::LinkField(l, f) => format!("/links/{l}/{}", field(f)),
            Loc::Endpoint(l, e) => format!("/links/{l}/endpoints/{e}"),
        }
    }
}

/// What is wrong with a topology.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    // Syntax: reported by the readers.
    #[error("{0}")]
    Syntax(String),
    #[error("unknown element <{element}> in <{parent}> (expected one of: {expected})")]
    UnknownElement {
        element: String,
        parent: String,
        expected: String,
    },
    #[error("<{element}> appears more than once in <{parent}>")]
    DuplicateElement { element: String, parent: String },
    #[error("missing element <{element}> in <{parent}>")]
    MissingElement { element: String, parent: String },
    #[error("unknown attribute {attribute:?} on <{element}> (expected one of: {expected})")]
    UnknownAttribute {
        element: String,
        attribute: String,
        expected: String,
    },
    #[error("missing attribute {attribute:?} on <{element}>")]
    MissingAttribute { element: String, attribute: String },
    #[error("{attribute:?} of <{element}>: {message}")]
    BadValue {
        element: String,
        attribute: String,
        message: String,
    },
    #[error("unexpected text {text:?} in <{element}>")]
    UnexpectedText { element: String, text: String },
    #[error("the input is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("elements are nested {depth} deep; the limit is {limit}")]
    TooDeep { depth: usize, limit: usize },
    #[error("DOCTYPE and entity declarations are not allowed")]
    Doctype,
    #[error("the text is not UTF-8 (byte 0x{byte:02x})")]
    NotUtf8 { byte: u8 },

    // Semantics: reported by [`validate`].
    #[error("the topology has no nodes")]
    NoNodes,
    #[error("duplicate node id \"{id}\" (first defined on {first})")]
    DuplicateNode { id: NodeId, first: String },
    #[error("duplicate interface \"{name}\" in node \"{node}\"")]
    DuplicateInterface { node: NodeId, name: InterfaceName },
    #[error("duplicate MAC address {mac} (also on {other})")]
    DuplicateMac { mac: MacAddr, other: String },
    #[error("duplicate link id {id:?}")]
    DuplicateLink { id: String },
    #[error("{what} must be positive")]
    NotPositive { what: &'static str },
    #[error("link refers to unknown node \"{node}\"")]
    UnknownNode { node: NodeId },
    #[error("link refers to unknown interface \"{interface}\" of node \"{node}\"")]
    UnknownInterface {
        node: NodeId,
        interface: InterfaceName,
    },
    #[error("a point-to-point link joins exactly 2 interfaces, this one joins {count}")]
    PointToPointArity { count: usize },
    #[error("a LAN joins at least 2 interfaces, this one joins {count}")]
    LanArity { count: usize },
    #[error("interface {node}/{interface} is already an end point of link {other:?}")]
    InterfaceInTwoLinks {
        node: NodeId,
        interface: InterfaceName,
        other: String,
    },
    #[error("the link joins node \"{node}\" to itself")]
    SelfLink { node: NodeId },
    #[error("pinned address {address} is not inside the link's pinned subnet {subnet}")]
    AddressOutsideSubnet {
        address: std::net::Ipv4Addr,
        subnet: ipnet::Ipv4Net,
    },
    #[error("pinned address {address} is used twice (also on {other})")]
    DuplicateAddress {
        address: std::net::Ipv4Addr,
        other: String,
    },
    #[error("text contains a control character")]
    ControlCharacter,
    #[error("the design has {count} {what}; the limit is {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{what} of {value} {unit} is beyond any host; the limit is {limit} {unit}")]
    TooBig {
        what: &'static str,
        value: u64,
        limit: u64,
        unit: &'static str,
    },
}

/// The bounds of one design, whatever its form: what no datacenter could
/// host, or what would let one design take the Manager's memory. Every
/// bound is documented in `docs/topology-xml.md`.
pub mod limits {
    /// Virtual nodes in one design.
    pub const MAX_NODES: usize = 10_000;
    /// Virtual links in one design.
    pub const MAX_LINKS: usize = 20_000;
    /// Network interfaces of one node.
    pub const MAX_INTERFACES_PER_NODE: usize = 64;
    /// Network interfaces of all nodes together.
    pub const MAX_INTERFACES: usize = 40_000;
    /// Virtual CPUs of one node.
    pub const MAX_VCPUS: u64 = 1024;
    /// RAM of one node, MiB (16 TiB).
    pub const MAX_RAM_MIB: u64 = 16 << 20;
    /// Disk of one node, MiB (64 TiB).
    pub const MAX_DISK_MIB: u64 = 64 << 20;
    /// Bandwidth of one link, Mbit/s (1 Tbit/s).
    pub const MAX_BANDWIDTH_MBPS: u64 = 1_000_000;
}

/// Every semantic problem of `topo`, in document order.
pub fn validate(topo: &Topology) -> Vec<(Loc, Problem)> {
    let mut out = Vec::new();
    if topo.nodes.is_empty() {
        out.push((Loc::Topology, Problem::NoNodes));
    }
    let interfaces: usize = topo.nodes.iter().map(|n| n.interfaces.len()).sum();
    for (what, count, limit) in [
        ("nodes", topo.nodes.len(), limits::MAX_NODES),
        ("links", topo.links.len(), limits::MAX_LINKS),
        ("network interfaces", interfaces, limits::MAX_INTERFACES),
    ] {
        if count > limit {
            out.push((Loc::Topology, Problem::TooMany { what, count, limit }));
        }
    }

    let mut node_index: HashMap<&NodeId, usize> = HashMap::new();
    let mut macs: HashMap<MacAddr, String> = HashMap::new();
    let mut addresses: HashMap<std::net::Ipv4Addr, String> = HashMap::new();
    for (n, node) in topo.nodes.iter().enumerate() {
        if let Some(&first) = node_index.get(&node.id) {
            out.push((
                Loc::Node(n),
                Problem::DuplicateNode {
                    id: node.id.clone(),
                    first: format!("node #{}", first + 1),
                },
            ));
        } else {
            node_index.insert(&node.id, n);
        }
        if node.ram.0 == 0 {
            out.push((
                Loc::NodeField(n, Field::Ram),
                Problem::NotPositive { what: "RAM" },
            ));
        }
        if node.disk.0 == 0 {
            out.push((
                Loc::NodeField(n, Field::Disk),
                Problem::NotPositive { what: "disk size" },
            ));
        }
        for (loc, what, value, limit, unit) in [
            (
                Loc::Node(n),
                "a node's CPU amount",
                u64::from(node.cpu.amount),
                limits::MAX_VCPUS,
                "vCPUs",
            ),
            (
                Loc::NodeField(n, Field::Ram),
                "RAM",
                node.ram.0,
                limits::MAX_RAM_MIB,
                "MiB",
            ),
            (
                Loc::NodeField(n, Field::Disk),
                "disk size",
                node.disk.0,
                limits::MAX_DISK_MIB,
                "MiB",
            ),
        ] {
            if value > limit {
                out.push((
                    loc,
                    Problem::TooBig {
                        what,
                        value,
                        limit,
                        unit,
                    },
                ));
            }
        }
        if node.interfaces.len() > limits::MAX_INTERFACES_PER_NODE {
            out.push((
                Loc::Node(n),
                Problem::TooMany {
                    what: "network interfaces on one node",
                    count: node.interfaces.len(),
                    limit: limits::MAX_INTERFACES_PER_NODE,
                },
            ));
        }
        let texts: [&str; 7] = [
            &node.name,
            &node.cpu.name,
            &node.cpu.kind,
            &node.os.name,
            &node.os.username,
            node.os.password.expose(),
            &node.software.template,
        ];
        if has_control(&node.description, true)
            || texts.into_iter().any(|t| has_control(t, false))
            || node.software.software.iter().any(|s| {
                [&s.name, &s.kind, &s.version]
                    .into_iter()
                    .any(|t| has_control(t, false))
            })
        {
            out.push((Loc::NodeField(n, Field::Text), Problem::ControlCharacter));
        }
        let mut names = HashSet::new();
        for (i, iface) in node.interfaces.iter().enumerate() {
            if !names.insert(&iface.name) {
                out.push((
                    Loc::Interface(n, i),
                    Problem::DuplicateInterface {
                        node: node.id.clone(),
                        name: iface.name.clone(),
                    },
                ));
            }
            let here = format!("{}/{}", node.id, iface.name);
            if let Some(mac) = iface.mac {
                if let Some(other) = macs.get(&mac) {
                    out.push((
                        Loc::InterfaceField(n, i, Field::Mac),
                        Problem::DuplicateMac {
                            mac,
                            other: other.clone(),
                        },
                    ));
                } else {
                    macs.insert(mac, here.clone());
                }
            }
            if has_control(&iface.kind, false) {
                out.push((
                    Loc::InterfaceField(n, i, Field::Kind),
                    Problem::ControlCharacter,
                ));
            }
            let pinned = iface
                .address
                .into_iter()
                .map(|a| (a, Field::Address))
                .chain(
                    iface
                        .entry_point
                        .iter()
                        .filter_map(|e| e.home_address)
                        .map(|a| (a, Field::HomeAddress)),
                );
            for (address, field) in pinned {
                if let Some(other) = addresses.get(&address) {
                    out.push((
                        Loc::InterfaceField(n, i, field),
                        Problem::DuplicateAddress {
                            address,
                            other: other.clone(),
                        },
                    ));
                } else {
                    addresses.insert(address, here.clone());
                }
            }
        }
    }

    let mut link_ids = HashSet::new();
    let mut attached: HashMap<(&NodeId, &InterfaceName), &str> = HashMap::new();
    for (l, link) in topo.links.iter().enumerate() {
        if !link_ids.insert(&link.id) {
            out.push((
                Loc::Link(l),
                Problem::DuplicateLink {
                    id: link.id.to_string(),
                },
            ));
        }
        if link.bandwidth.0 == 0 {
            out.push((
                Loc::LinkField(l, Field::Bandwidth),
                Problem::NotPositive { what: "bandwidth" },
            ));
        }
        if link.bandwidth.0 > limits::MAX_BANDWIDTH_MBPS {
            out.push((
                Loc::LinkField(l, Field::Bandwidth),
                Problem::TooBig {
                    what: "bandwidth",
                    value: link.bandwidth.0,
                    limit: limits::MAX_BANDWIDTH_MBPS,
                    unit: "Mbit/s",
                },
            ));
        }
        let count = link.endpoints.len();
        match link.kind {
            LinkKind::PointToPoint if count != 2 => {
                out.push((
                    Loc::LinkField(l, Field::Kind),
                    Problem::PointToPointArity { count },
                ));
            }
            LinkKind::Lan if count < 2 => {
                out.push((Loc::LinkField(l, Field::Kind), Problem::LanArity { count }));
            }
            _ => {}
        }
        let mut nodes_here = HashSet::new();
        for (e, ep) in link.endpoints.iter().enumerate() {
            let Some(&n) = node_index.get(&ep.node) else {
                out.push((
                    Loc::Endpoint(l, e),
                    Problem::UnknownNode {
                        node: ep.node.clone(),
                    },
                ));
                continue;
            };
            let node = &topo.nodes[n];
            let Some(iface) = node.interface(&ep.interface) else {
                out.push((
                    Loc::Endpoint(l, e),
                    Problem::UnknownInterface {
                        node: ep.node.clone(),
                        interface: ep.interface.clone(),
                    },
                ));
                continue;
            };
            if !nodes_here.insert(&ep.node) {
                out.push((
                    Loc::Endpoint(l, e),
                    Problem::SelfLink {
                        node: ep.node.clone(),
                    },
                ));
            }
            if let Some(other) = attached.insert((&ep.node, &ep.interface), link.id.as_str()) {
                out.push((
                    Loc::Endpoint(l, e),
                    Problem::InterfaceInTwoLinks {
                        node: ep.node.clone(),
                        interface: ep.interface.clone(),
                        other: other.to_owned(),
                    },
                ));
            }
            if let (Some(subnet), Some(address)) = (link.subnet, iface.address) {
                if !subnet.contains(&address) {
                    out.push((
                        Loc::Endpoint(l, e),
                        Problem::AddressOutsideSubnet { address, subnet },
                    ));
                }
            }
        }
    }
    out
}

fn has_control(text: &str, allow_newlines: bool) -> bool {
    text.chars()
        .any(|c| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\t')))
}
