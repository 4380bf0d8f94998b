//! How a VI's virtual links are wired across hosts. A link whose VMs are
//! all on one host is that host's bridge; a link whose VMs are on several
//! hosts is also a VXLAN segment (RFC 7348) between them: each host's
//! bridge of the link floods to the others' tunnel endpoints.
//!
//! A segment is numbered from its link's subnet, which the address plan
//! makes unique in the Service Switching domain: no two links of any VIs
//! share an identifier, and a VI keeps its identifiers wherever it goes
//! (its private addresses move with it). A host's tunnel endpoint is the
//! address of its Agent's URL.
//!
//! Pure, but for [`tunnel_endpoints`], which resolves host names.

use neptune_types::HostId;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use neptune_hypervisor::{Segment, MAX_VNI};
use neptune_ipam::ipnet::Ipv4Net;
use neptune_store::HostRecord;

/// The UDP port of VXLAN (IANA), on every host.
pub const VXLAN_PORT: u16 = 4789;

/// Why a VI's links cannot be wired.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WiringError {
    #[error("link {0} has no subnet in the address plan")]
    NoSubnet(String),
    #[error(
        "link {link}'s subnet {subnet} has no VXLAN identifier: it is too far into the private pools for VXLAN's 24 bits"
    )]
    NoIdentifier { link: String, subnet: Ipv4Net },
    #[error("link {link} spans hosts, and host {host}'s Agent URL names no address to tunnel to")]
    NoEndpoint { link: String, host: String },
}

/// The VXLAN network identifier of a link numbered from `subnet`: its
/// place in the private `pools` (in their order) counted in pairs of
/// addresses, plus one (0 is no identifier). Two links' subnets never
/// overlap and a link with two VMs or more has two addresses or more, so
/// two such links never share an identifier. `None` beyond the 24 bits
/// of VXLAN, or outside the pools.
pub fn vni(pools: &[Ipv4Net], subnet: Ipv4Net) -> Option<u32> {
    let mut base: u64 = 0;
    for pool in pools {
        if pool.contains(&subnet) {
            let offset = u32::from(subnet.network()) - u32::from(pool.network());
            let id = (base + u64::from(offset)) / 2 + 1;
            return u32::try_from(id).ok().filter(|id| *id <= MAX_VNI);
        }
        base += 1u64 << (32 - pool.prefix_len());
    }
    None
}

/// A link's segment: its identifier and the tunnel endpoint of every host
/// with a VM on it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkSegment {
    vni: u32,
    hosts: Vec<(HostId, IpAddr)>,
}

/// The segments of one VI's links, for the hosts it is placed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiring {
    links: HashMap<String, LinkSegment>,
}

impl Wiring {
    /// Wires the links of `topo`, its VMs placed as `host_of` says (node id
    /// -> host ids: two while a VM moves, which the link then spans both), numbered from `addresses` in the domain's private
    /// `pools`; `endpoints`: the hosts' tunnel endpoints.
    pub fn new(
        topo: &neptune_topology::Topology,
        addresses: &neptune_ipam::Plan,
        pools: &[Ipv4Net],
        host_of: &HashMap<&str, Vec<HostId>>,
        hosts: &[HostRecord],
        endpoints: &HashMap<HostId, IpAddr>,
    ) -> Result<Wiring, WiringError> {
        let mut links = HashMap::new();
        for link in &topo.links {
            let on: BTreeSet<HostId> = link
                .endpoints
                .iter()
                .flat_map(|e| host_of.get(e.node.as_str()).into_iter().flatten().copied())
                .collect();
            if on.len() < 2 {
                continue;
            }
            let id = link.id.as_str();
            let subnet = addresses
                .links
                .iter()
                .find(|l| l.link.as_str() == id)
                .map(|l| l.subnet)
                .ok_or_else(|| WiringError::NoSubnet(id.to_owned()))?;
            let vni = vni(pools, subnet).ok_or_else(|| WiringError::NoIdentifier {
                link: id.to_owned(),
                subnet,
            })?;
            let hosts =
                on.into_iter()
                    .map(|h| {
                        endpoints.get(&h).map(|ip| (h, *ip)).ok_or_else(|| {
                            WiringError::NoEndpoint {
                                link: id.to_owned(),
                                host: hosts
                                    .iter()
                                    .find(|r| r.id == h)
                                    .map_or_else(|| h.to_string(), |r| r.name.clone()),
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
            links.insert(id.to_owned(), LinkSegment { vni, hosts });
        }
        Ok(Wiring { links })
    }

    /// Link `link`'s segment as host `host` joins it: the other hosts'
    /// endpoints. `None` when no other host is reached through a tunnel:
    /// the link is on this host alone, or the other hosts share its
    /// endpoint (one machine, one bridge: a tunnel to itself would loop).
    pub fn segment(&self, link: &str, host: HostId) -> Option<Segment> {
        let seg = self.links.get(link)?;
        let own = seg.hosts.iter().find(|(h, _)| *h == host)?.1;
        let peers: Vec<SocketAddr> = seg
            .hosts
            .iter()
            .filter(|(_, ip)| *ip != own)
            .map(|(_, ip)| SocketAddr::new(*ip, VXLAN_PORT))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        (!peers.is_empty()).then_some(Segment {
            vni: seg.vni,
            port: VXLAN_PORT,
            peers,
        })
    }
}

/// The host part of an Agent URL (`http://10.0.0.5:7070`, `http://[fd00::5]:7070`,
/// `http://host-1:7070/`).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    let host = authority.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

/// The tunnel endpoint of every host whose Agent URL names an address or
/// a name that resolves (the first address it resolves to). Hosts that
/// have none are left out: [`Wiring::new`] names them if a link needs them.
pub async fn tunnel_endpoints(hosts: &[HostRecord]) -> HashMap<HostId, IpAddr> {
    let mut out = HashMap::new();
    for h in hosts {
        let Some(host) = url_host(&h.agent_url) else {
            continue;
        };
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => tokio::net::lookup_host((host, 0))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .map(|a| a.ip()),
        };
        if let Some(ip) = ip {
            out.insert(h.id, ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use neptune_types::ViId;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn identifiers_count_pairs_of_addresses_through_the_pools() {
        let pools = [net("10.0.0.0/8"), net("172.16.0.0/12")];
        assert_eq!(vni(&pools, net("10.0.0.0/31")), Some(1));
        assert_eq!(vni(&pools, net("10.0.0.2/31")), Some(2));
        assert_eq!(vni(&pools, net("10.0.0.8/29")), Some(5));
        assert_eq!(vni(&pools, net("10.255.255.254/31")), Some(1 << 23));
        // The second pool follows the first.
        assert_eq!(vni(&pools, net("172.16.0.0/24")), Some((1 << 23) + 1));
        assert_eq!(
            vni(&pools, net("172.31.255.254/31")),
            Some((1 << 23) + (1 << 19))
        );
        assert_eq!(
            vni(&pools, net("192.168.0.0/24")),
            None,
            "outside the pools"
        );
        // Out of VXLAN's 24 bits: the last pair of 2^25 addresses on.
        let big = [net("10.0.0.0/8"), net("11.0.0.0/8"), net("12.0.0.0/8")];
        assert_eq!(vni(&big, net("11.255.255.252/31")), Some(MAX_VNI));
        assert_eq!(vni(&big, net("11.255.255.254/31")), None);
        assert_eq!(vni(&big, net("12.0.0.0/31")), None);
    }

    /// Non-overlapping subnets of two addresses or more, anywhere in the
    /// pools, get distinct identifiers.
    #[test]
    fn disjoint_subnets_get_distinct_identifiers() {
        let pools = [
            net("10.0.0.0/8"),
            net("172.16.0.0/12"),
            net("192.168.0.0/16"),
        ];
        let subnet = (0usize..3, any::<u32>(), 24u8..=31).prop_map(move |(p, x, len)| {
            let pool = pools[p];
            let host_bits = 32 - u32::from(pool.prefix_len());
            let addr = u32::from(pool.network()) | (x & ((1u32 << host_bits) - 1));
            Ipv4Net::new(addr.into(), len.max(pool.prefix_len()))
                .unwrap()
                .trunc()
        });
        proptest!(|(a in subnet.clone(), b in subnet)| {
            prop_assume!(!a.contains(&b.network()) && !b.contains(&a.network()));
            prop_assert_ne!(vni(&pools, a), vni(&pools, b));
        });
    }

    /// A line of three VMs on three hosts: the middle one joins both
    /// links, the ends one each; a host without an endpoint is named.
    #[test]
    fn a_line_across_hosts_is_wired_link_by_link() {
        use neptune_store::{DatacenterRecord, HostState, HostUsage};
        use neptune_topology::catalogue::{generate, Kind, Params};

        let topo = generate(
            Kind::Line,
            &Params {
                nodes: 3,
                ..Params::new(Kind::Line)
            },
        )
        .unwrap();
        let dc = DatacenterRecord {
            public_gateway: None,
            id: Uuid::new_v4().into(),
            name: "napoli".into(),
            created_at: 0,
            home_pools: vec!["192.0.2.0/24".into()],
        };
        let pools = [net("10.0.0.0/8")];
        let domain = crate::plan::domain(&pools, std::slice::from_ref(&dc)).unwrap();
        let snapshot = crate::plan::snapshot(domain, &[]).unwrap();
        let vi = ViId::from(Uuid::new_v4());
        let addresses = crate::plan::addresses(&snapshot, vi, &topo, "napoli").unwrap();
        let hosts: Vec<HostRecord> = (0..3)
            .map(|i| HostRecord {
                id: Uuid::new_v4().into(),
                datacenter_id: dc.id,
                name: format!("h{i}"),
                agent_url: format!("http://10.9.0.{i}:7070"),
                cpus: 8,
                ram_mib: 8192,
                disk_mib: 1 << 20,
                vm_slots: 1,
                uplink_mbps: 0,
                state: HostState::Ready,
                last_seen: 0,
                used: HostUsage::default(),
            })
            .collect();
        let host_of: HashMap<&str, Vec<HostId>> = topo
            .nodes
            .iter()
            .zip(&hosts)
            .map(|(n, h)| (n.id.as_str(), vec![h.id]))
            .collect();
        let endpoints: HashMap<HostId, IpAddr> = hosts
            .iter()
            .map(|h| (h.id, url_host(&h.agent_url).unwrap().parse().unwrap()))
            .collect();
        let wiring = Wiring::new(&topo, &addresses, &pools, &host_of, &hosts, &endpoints).unwrap();
        let (first, second) = (topo.links[0].id.as_str(), topo.links[1].id.as_str());
        let peer = |i: u8| vec![SocketAddr::from(([10, 9, 0, i], VXLAN_PORT))];
        let a = wiring.segment(first, hosts[0].id).unwrap();
        assert_eq!(a.peers, peer(1));
        assert_eq!(wiring.segment(first, hosts[1].id).unwrap().peers, peer(0));
        assert_eq!(wiring.segment(second, hosts[1].id).unwrap().peers, peer(2));
        assert_ne!(a.vni, wiring.segment(second, hosts[1].id).unwrap().vni);
        assert_eq!(wiring.segment(second, hosts[0].id), None, "not on h0");

        let mut missing = endpoints.clone();
        missing.remove(&hosts[2].id);
        let err = Wiring::new(&topo, &addresses, &pools, &host_of, &hosts, &missing).unwrap_err();
        assert_eq!(
            err,
            WiringError::NoEndpoint {
                link: second.to_owned(),
                host: "h2".to_owned()
            }
        );
    }

    #[test]
    fn agent_urls_give_their_host() {
        assert_eq!(url_host("http://10.0.0.5:7070"), Some("10.0.0.5"));
        assert_eq!(url_host("https://[fd00::5]:7070/x"), Some("fd00::5"));
        assert_eq!(url_host("http://host-1/"), Some("host-1"));
        assert_eq!(url_host("http://u:p@10.0.0.6:1"), Some("10.0.0.6"));
        assert_eq!(url_host("http://:7070"), None);
    }
}
