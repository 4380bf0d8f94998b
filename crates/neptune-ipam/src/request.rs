//! What the planner needs to know about a VI: its links with their end
//! points, its entry points, its home datacenter, and the user's pins.
//! Built from a topology (see `crate::topology`) or by hand.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use neptune_types::{InterfaceName, LinkId, NodeId};
use serde::{Deserialize, Serialize};

use crate::{DatacenterName, ViId};

/// The addresses a VI needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViRequest {
    pub vi: ViId,
    /// Where the VI is first deployed: its Home Addresses come from this
    /// datacenter's pools. Required when the VI has entry points.
    pub home: Option<DatacenterName>,
    pub links: Vec<LinkRequest>,
    pub entry_points: Vec<EntryPointRequest>,
}

/// A virtual link (point to point or LAN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequest {
    pub link: LinkId,
    /// The interfaces on the link, in the order they are numbered.
    pub end_points: Vec<EndPoint>,
    /// A subnet pinned by the user.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    #[serde(default)]
    pub gateway: Gateway,
}

/// A virtual interface on a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndPoint {
    pub node: NodeId,
    pub interface: InterfaceName,
    /// An address pinned by the user.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
}

/// Which address of a link, if any, is its gateway (the next hop of the
/// other end points' default route).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gateway {
    /// No gateway (point-to-point links, isolated LANs).
    #[default]
    None,
    /// One of the end points routes for the others (the NAT/firewall node
    /// of the paper's typical VI); it gets the first host address.
    EndPoint {
        node: NodeId,
        interface: InterfaceName,
    },
    /// An address kept for a router outside the VI (a host bridge, the
    /// datacenter's router); the first host address is reserved for it.
    Reserved,
}

/// An entry point: an interface that the Internet reaches at a Home Address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPointRequest {
    pub node: NodeId,
    pub interface: InterfaceName,
    /// A Home Address pinned by the user.
    #[serde(default)]
    pub home_address: Option<Ipv4Addr>,
}

/// A node's interface, `node/interface` in messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InterfaceRef {
    pub node: NodeId,
    pub interface: InterfaceName,
}

impl fmt::Display for InterfaceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.interface)
    }
}

impl EndPoint {
    pub fn interface_ref(&self) -> InterfaceRef {
        InterfaceRef {
            node: self.node.clone(),
            interface: self.interface.clone(),
        }
    }
}

impl EntryPointRequest {
    pub fn interface_ref(&self) -> InterfaceRef {
        InterfaceRef {
            node: self.node.clone(),
            interface: self.interface.clone(),
        }
    }
}
