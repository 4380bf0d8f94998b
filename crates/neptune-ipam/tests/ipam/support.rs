//! Builders shared by the tests.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use neptune_ipam::{
    DatacenterName, DomainConfig, EndPoint, EntryPointRequest, Gateway, LinkRequest, ViId,
    ViRequest,
};
use neptune_types::{InterfaceName, LinkId, NodeId};

pub(crate) fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

pub(crate) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(crate) fn domain(private: &str, home: &str) -> DomainConfig {
    DomainConfig::simple(
        net(private),
        DatacenterName::new("napoli").unwrap(),
        net(home),
    )
}

pub(crate) fn ep(node: &str, interface: &str) -> EndPoint {
    EndPoint {
        node: NodeId::new(node).unwrap(),
        interface: InterfaceName::new(interface).unwrap(),
        address: None,
    }
}

pub(crate) fn pinned_ep(node: &str, interface: &str, address: &str) -> EndPoint {
    EndPoint {
        address: Some(ip(address)),
        ..ep(node, interface)
    }
}

pub(crate) fn link(id: &str, end_points: Vec<EndPoint>) -> LinkRequest {
    LinkRequest {
        link: LinkId::new(id).unwrap(),
        end_points,
        subnet: None,
        gateway: Gateway::None,
    }
}

pub(crate) fn entry(node: &str, interface: &str) -> EntryPointRequest {
    EntryPointRequest {
        node: NodeId::new(node).unwrap(),
        interface: InterfaceName::new(interface).unwrap(),
        home_address: None,
    }
}

pub(crate) fn vi(
    id: &str,
    links: Vec<LinkRequest>,
    entry_points: Vec<EntryPointRequest>,
) -> ViRequest {
    ViRequest {
        vi: ViId::new(id).unwrap(),
        home: Some(DatacenterName::new("napoli").unwrap()),
        links,
        entry_points,
    }
}

/// A VI of `n` links, link `i` having `sizes[i]` end points.
pub(crate) fn sized_vi(id: &str, sizes: &[usize], entry_points: usize) -> ViRequest {
    let links = sizes
        .iter()
        .enumerate()
        .map(|(l, &n)| {
            link(
                &format!("l{l}"),
                (0..n).map(|e| ep(&format!("n{l}x{e}"), "eth0")).collect(),
            )
        })
        .collect();
    let entries = (0..entry_points)
        .map(|e| entry(&format!("gw{e}"), "eth0"))
        .collect();
    vi(id, links, entries)
}
