//! From a designed topology to the planner's request.
//!
//! Every virtual link becomes a [`LinkRequest`] with its end points in the
//! design's order, the link's pinned subnet and the end points' pinned
//! addresses. Every interface marked as an entry point becomes an
//! [`EntryPointRequest`] with its pinned Home Address.
//!
//! Gateways: the paper's typical VI puts a NAT/firewall entry point in front
//! of a LAN of back ends. So on a LAN, the first end point whose node is an
//! entry point is the LAN's gateway (it is numbered first, and the plan
//! names its address as the LAN's gateway). Point-to-point links have none.
//!
//! An address pinned on an interface that is on no link is not planned:
//! there is no subnet to put it in.

use neptune_topology::{LinkKind, Topology};

use crate::{DatacenterName, EndPoint, EntryPointRequest, Gateway, LinkRequest, ViId, ViRequest};

impl ViRequest {
    /// The request for `topology`, planned as VI `vi` with Home Addresses
    /// from the datacenter `home`.
    pub fn from_topology(topology: &Topology, vi: ViId, home: Option<DatacenterName>) -> Self {
        let is_entry_node = |node: &neptune_types::NodeId| {
            topology
                .node(node)
                .is_some_and(|n| n.interfaces.iter().any(|i| i.entry_point.is_some()))
        };
        let links = topology
            .links
            .iter()
            .map(|link| {
                let end_points: Vec<EndPoint> = link
                    .endpoints
                    .iter()
                    .map(|e| EndPoint {
                        node: e.node.clone(),
                        interface: e.interface.clone(),
                        address: topology
                            .node(&e.node)
                            .and_then(|n| n.interface(&e.interface))
                            .and_then(|i| i.address),
                    })
                    .collect();
                let gateway = match link.kind {
                    LinkKind::Lan => end_points
                        .iter()
                        .find(|e| is_entry_node(&e.node))
                        .map(|e| Gateway::EndPoint {
                            node: e.node.clone(),
                            interface: e.interface.clone(),
                        })
                        .unwrap_or_default(),
                    LinkKind::PointToPoint => Gateway::None,
                };
                LinkRequest {
                    link: link.id.clone(),
                    end_points,
                    subnet: link.subnet,
                    gateway,
                }
            })
            .collect();
        let entry_points = topology
            .entry_points()
            .map(|(node, interface)| EntryPointRequest {
                node: node.id.clone(),
                interface: interface.name.clone(),
                home_address: interface.entry_point.as_ref().and_then(|e| e.home_address),
            })
            .collect();
        ViRequest {
            vi,
            home,
            links,
            entry_points,
        }
    }
}

impl From<&Topology> for ViRequest {
    /// The request for `topology` as the VI named by its id, without a home
    /// datacenter (set [`ViRequest::home`] before planning entry points).
    fn from(topology: &Topology) -> Self {
        ViRequest::from_topology(topology, ViId::from(&topology.id), None)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{plan, Allocations, DomainConfig};

    const SHOP: &str = include_str!("../../neptune-topology/testdata/web-with-links.xml");

    #[test]
    fn the_shop_design_becomes_a_request_with_its_pins() {
        let topo = neptune_topology::from_xml(SHOP).unwrap();
        let req = ViRequest::from(&topo);
        assert_eq!(req.vi.as_str(), "shop");
        assert_eq!(req.links.len(), 1);
        let lan = &req.links[0];
        assert_eq!(lan.subnet, Some("10.20.0.0/29".parse().unwrap()));
        assert_eq!(lan.end_points[0].address, Some(Ipv4Addr::new(10, 20, 0, 1)));
        assert_eq!(lan.end_points[1].address, None);
        assert!(matches!(&lan.gateway, Gateway::EndPoint { node, .. } if node.as_str() == "gw"));
        assert_eq!(req.entry_points.len(), 1);
        assert_eq!(
            req.entry_points[0].home_address,
            Some(Ipv4Addr::new(192, 0, 2, 10))
        );

        let home = DatacenterName::new("napoli").unwrap();
        let config = DomainConfig::simple(
            "10.0.0.0/8".parse().unwrap(),
            home.clone(),
            "192.0.2.0/24".parse().unwrap(),
        );
        let snapshot = Allocations::new(config).unwrap();
        let req = ViRequest {
            home: Some(home),
            ..req
        };
        let p = plan(&snapshot, &req).unwrap();
        let addrs: Vec<String> = p.links[0]
            .interfaces
            .iter()
            .map(|i| i.cidr.to_string())
            .collect();
        assert_eq!(addrs, ["10.20.0.1/29", "10.20.0.2/29", "10.20.0.3/29"]);
        assert_eq!(p.links[0].gateway, Some(Ipv4Addr::new(10, 20, 0, 1)));
        assert_eq!(p.entry_points[0].home_address, Ipv4Addr::new(192, 0, 2, 10));
    }

    #[test]
    fn every_catalogue_topology_is_numbered_without_overlap() {
        use neptune_topology::catalogue::{generate, Kind, Params};
        let home = DatacenterName::new("napoli").unwrap();
        let config = DomainConfig::simple(
            "10.0.0.0/16".parse().unwrap(),
            home.clone(),
            "192.0.2.0/24".parse().unwrap(),
        );
        let mut domain = Allocations::new(config).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for kind in Kind::ALL {
            for nodes in [
                kind.min_nodes(),
                kind.default_nodes(),
                kind.max_nodes().min(40),
            ] {
                let topo = generate(
                    kind,
                    &Params {
                        nodes,
                        ..Params::new(kind)
                    },
                )
                .unwrap();
                let vi = ViId::new(format!("{}-{nodes}", kind.name())).unwrap();
                let req = ViRequest::from_topology(&topo, vi, Some(home.clone()));
                let p = plan(&domain, &req).unwrap();
                let endpoints: usize = topo.links.iter().map(|l| l.endpoints.len()).sum();
                assert_eq!(p.interfaces().count(), endpoints, "{}", kind.name());
                assert_eq!(p.entry_points.len(), topo.entry_points().count());
                for (link, i) in p.interfaces() {
                    assert!(link.subnet.contains(&i.address));
                    assert!(seen.insert(i.address), "{} given twice", i.address);
                }
                for e in &p.entry_points {
                    assert!(seen.insert(e.home_address));
                }
                domain.commit(&p).unwrap();
            }
        }
        // The catalogue has links and entry points to number.
        let homes = seen.iter().filter(|a| a.octets()[0] == 192).count();
        assert!(
            homes > 0 && seen.len() - homes > 100,
            "{homes} of {}",
            seen.len()
        );
    }

    #[test]
    fn point_to_point_links_have_no_gateway() {
        let xml = SHOP
            .replace("type=\"lan\"", "type=\"point_to_point\"")
            .replace("      <endpoint node=\"web2\" interface=\"eth0\"/>\n", "");
        let topo = neptune_topology::from_xml(&xml).unwrap();
        let req = ViRequest::from(&topo);
        assert_eq!(req.links[0].end_points.len(), 2);
        assert_eq!(req.links[0].gateway, Gateway::None);
    }
}
