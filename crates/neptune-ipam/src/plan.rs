//! The planner: from a snapshot of the domain's allocations and a VI's
//! request, a [`Plan`] — a subnet per link, an address per interface, a
//! Home Address per entry point — and the flat list of blocks the plan
//! takes. Planning changes nothing; see [`Allocations::commit`].
//!
//! How a VI is numbered:
//!
//! 1. Each link needs one address per end point, plus one when a gateway
//!    outside the VI is reserved. Two addresses or fewer: a point-to-point
//!    subnet (/31 by default, /30 if the domain says so). More: the
//!    smallest prefix whose host addresses (all but network and broadcast)
//!    hold them all.
//! 2. A link whose subnet is pinned, or whose end points pin addresses (the
//!    subnet is then the smallest one of the needed size or wider that
//!    holds every pinned address), is held apart: it is its own block of
//!    the private pool and must be free.
//! 3. The other links are packed, largest first, into one block of the
//!    private pool: the smallest power of two that holds them. Packing
//!    power-of-two subnets largest first leaves no gap, so the block wastes
//!    at most half of itself and usually far less. The block is taken best
//!    fit: the smallest free block of the pools that holds it, lowest
//!    address first, first pool first on ties.
//! 4. On each link the gateway comes first (a reserved gateway, else the
//!    end point named as gateway), then the end points in their order; each
//!    takes the lowest host address not pinned by another end point.
//! 5. Each entry point takes the lowest free Home Address of the home
//!    datacenter's pools, unless it pins one.
//!
//! The same snapshot and request always give the same plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use neptune_types::{InterfaceName, LinkId, NodeId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::space::{block_overlaps, from_net, size, to_net, Block};
use crate::{
    Allocation, Allocations, DatacenterName, EndPoint, Gateway, InterfaceRef, LinkRequest, Owner,
    PoolKind, PoolRef, ViId, ViRequest,
};

/// The addresses of one VI, ready for review and commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub vi: ViId,
    /// The block of the private pool the VI's unpinned links live in.
    pub block: Option<Ipv4Net>,
    /// One entry per link, in the request's order.
    pub links: Vec<LinkPlan>,
    /// One entry per entry point, in the request's order.
    pub entry_points: Vec<EntryPointPlan>,
    /// The blocks this plan takes from the pools: what a commit stores.
    pub allocations: Vec<Allocation>,
}

/// A link's subnet and the addresses on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPlan {
    pub link: LinkId,
    pub subnet: Ipv4Net,
    /// Whether the subnet was pinned (or implied by pinned addresses), so
    /// held apart from the VI's block.
    pub pinned: bool,
    /// The gateway's address, when the link has one.
    pub gateway: Option<Ipv4Addr>,
    /// One entry per end point, in the request's order.
    pub interfaces: Vec<InterfacePlan>,
}

/// The address of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfacePlan {
    pub node: NodeId,
    pub interface: InterfaceName,
    pub address: Ipv4Addr,
    /// The address with the link's prefix length, as configured in the guest.
    pub cidr: Ipv4Net,
    pub pinned: bool,
}

/// The Home Address of one entry point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPointPlan {
    pub node: NodeId,
    pub interface: InterfaceName,
    pub home_address: Ipv4Addr,
    pub datacenter: DatacenterName,
    pub pinned: bool,
}

impl Plan {
    /// Every planned interface, link by link.
    pub fn interfaces(&self) -> impl Iterator<Item = (&LinkPlan, &InterfacePlan)> + '_ {
        self.links
            .iter()
            .flat_map(|l| l.interfaces.iter().map(move |i| (l, i)))
    }
}

/// The largest free block in an exhaustion message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargestFree(pub Option<Ipv4Net>);

impl fmt::Display for LargestFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(net) => write!(f, "{net}"),
            None => f.write_str("none"),
        }
    }
}

/// Why a VI could not be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error("VI {0} already holds addresses; release them before planning it again")]
    AlreadyHolds(ViId),
    #[error("link {0} is listed twice")]
    DuplicateLink(LinkId),
    #[error("link {0} has no end points")]
    EmptyLink(LinkId),
    #[error("interface {interface} is an end point of link {first} and of link {second}")]
    InterfaceOnTwoLinks {
        interface: InterfaceRef,
        first: LinkId,
        second: LinkId,
    },
    #[error("gateway {gateway} of link {link} is not one of its end points")]
    GatewayNotEndPoint { link: LinkId, gateway: InterfaceRef },
    #[error("link {link} needs {needed} addresses; no IPv4 subnet holds that many")]
    LinkTooLarge { link: LinkId, needed: u64 },
    #[error("pinned subnet {subnet} of link {link} has host bits set; did you mean {network}?")]
    SubnetHostBits {
        link: LinkId,
        subnet: Ipv4Net,
        network: Ipv4Net,
    },
    #[error("pinned subnet {subnet} of link {link} is not inside {pools}")]
    SubnetOutsidePools {
        link: LinkId,
        subnet: Ipv4Net,
        pools: String,
    },
    #[error("pinned subnet {subnet} of link {link} holds {room} addresses; a pin may hold at most {limit} (a /{MAX_PIN_LEN}, or the link's own size)")]
    SubnetTooLarge {
        link: LinkId,
        subnet: Ipv4Net,
        room: u64,
        limit: u64,
    },
    #[error("the pinned addresses of link {link} span a subnet wider than a pin may hold ({limit} addresses: a /{MAX_PIN_LEN}, or the link's own size)")]
    PinsTooFarApart { link: LinkId, limit: u64 },
    #[error("pinned subnet {subnet} of link {link} has room for {room} addresses; the link needs {needed}")]
    SubnetTooSmall {
        link: LinkId,
        subnet: Ipv4Net,
        room: u64,
        needed: u64,
    },
    #[error(
        "pinned address {address} of {interface} is not inside subnet {subnet} of link {link}"
    )]
    AddressOutsideSubnet {
        link: LinkId,
        interface: InterfaceRef,
        address: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("pinned address {address} of {interface} is the network or broadcast address of subnet {subnet} of link {link}")]
    AddressNotUsable {
        link: LinkId,
        interface: InterfaceRef,
        address: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("pinned address {address} of {interface} is not inside {pools}")]
    AddressOutsidePools {
        interface: InterfaceRef,
        address: Ipv4Addr,
        pools: String,
    },
    #[error("address {address} is pinned by both {first} and {second} on link {link}")]
    DuplicateAddress {
        link: LinkId,
        address: Ipv4Addr,
        first: InterfaceRef,
        second: Box<InterfaceRef>,
    },
    #[error("the pinned addresses of link {link} do not fit in one subnet of its pool with room for {needed} addresses")]
    AddressesApart { link: LinkId, needed: u64 },
    #[error("subnet {first_subnet} of link {first} overlaps subnet {second_subnet} of link {second} in the same VI")]
    SubnetsOverlap {
        first: LinkId,
        first_subnet: Ipv4Net,
        second: LinkId,
        second_subnet: Ipv4Net,
    },
    #[error("subnet {subnet} of link {link} is taken: {held} is held by {held_by}")]
    SubnetTaken {
        link: LinkId,
        subnet: Ipv4Net,
        held: Ipv4Net,
        held_by: Box<Owner>,
    },
    #[error("pinned address {address} of {interface} needs subnet {subnet} for link {link}, but {held} is held by {held_by}")]
    AddressTaken {
        link: LinkId,
        interface: InterfaceRef,
        address: Ipv4Addr,
        subnet: Ipv4Net,
        held: Ipv4Net,
        held_by: Box<Owner>,
    },
    #[error("entry point {0} is listed twice")]
    DuplicateEntryPoint(InterfaceRef),
    #[error("VI {0} has entry points but no home datacenter")]
    NoHomeDatacenter(ViId),
    #[error("datacenter {0} is not part of this domain")]
    UnknownDatacenter(DatacenterName),
    #[error("pinned Home Address {address} of entry point {entry_point} is not inside {pools}")]
    HomeAddressOutsidePools {
        entry_point: InterfaceRef,
        address: Ipv4Addr,
        pools: String,
    },
    #[error(
        "Home Address {address} is pinned by both entry point {first} and entry point {second}"
    )]
    DuplicateHomeAddress {
        address: Ipv4Addr,
        first: InterfaceRef,
        second: InterfaceRef,
    },
    #[error("Home Address {address} of entry point {entry_point} is taken by {held_by}")]
    HomeAddressTaken {
        entry_point: InterfaceRef,
        address: Ipv4Addr,
        held_by: Box<Owner>,
    },
    #[error("{pools} cannot hold a /{len} ({}) for {what}: {} free, largest free block {largest}", addresses(*.size), addresses(*.free))]
    Exhausted {
        pools: String,
        what: String,
        len: u8,
        size: u64,
        free: u64,
        largest: LargestFree,
    },
}

/// "1 address", "16 addresses".
fn addresses(n: u64) -> String {
    if n == 1 {
        "1 address".to_owned()
    } else {
        format!("{n} addresses")
    }
}

/// Host addresses in a subnet of prefix length `len`.
fn hosts(len: u8) -> u64 {
    match len {
        32 => 1,
        31 => 2,
        _ => size(len) - 2,
    }
}

/// The first and last host address of `subnet`, as integers.
fn host_range(subnet: Ipv4Net) -> (u64, u64) {
    let first = u64::from(u32::from(subnet.network()));
    let last = u64::from(u32::from(subnet.broadcast()));
    if subnet.prefix_len() >= 31 {
        (first, last)
    } else {
        (first + 1, last - 1)
    }
}

fn usable(address: Ipv4Addr, subnet: Ipv4Net) -> bool {
    let (first, last) = host_range(subnet);
    let a = u64::from(u32::from(address));
    subnet.contains(&address) && first <= a && a <= last
}

/// The widest prefix a link may pin (explicitly, or through the addresses
/// of its end points) unless the link itself needs more: a tenant cannot
/// take more of the shared private pools than its links use.
pub const MAX_PIN_LEN: u8 = 24;

/// The prefix length of a subnet for `count` addresses.
fn subnet_len(count: u64, point_to_point: u8) -> Option<u8> {
    if count <= 2 {
        return Some(point_to_point);
    }
    (0..=29u8).rev().find(|&len| hosts(len) >= count)
}

/// "private pool 10.0.0.0/8", "home pools A, B of datacenter x", ...
fn describe(pools: &[&PoolRef], fallback: &str) -> String {
    match pools {
        [] => fallback.to_owned(),
        [one] => one.to_string(),
        many => {
            let list: Vec<String> = many.iter().map(|p| p.prefix.to_string()).collect();
            match &many[0].kind {
                PoolKind::Private => format!("private pools {}", list.join(", ")),
                PoolKind::Home { datacenter } => {
                    format!("home pools {} of datacenter {datacenter}", list.join(", "))
                }
            }
        }
    }
}

struct LinkShape<'a> {
    request: &'a LinkRequest,
    /// Prefix length the link needs.
    len: u8,
    /// Addresses the link needs.
    count: u64,
    gateway: Option<usize>,
    subnet: Option<Ipv4Net>,
    pinned: bool,
}

fn shape<'a>(
    request: &'a LinkRequest,
    point_to_point: u8,
    on_link: &mut BTreeMap<InterfaceRef, &'a LinkId>,
) -> Result<LinkShape<'a>, PlanError> {
    let link = &request.link;
    if request.end_points.is_empty() {
        return Err(PlanError::EmptyLink(link.clone()));
    }
    for ep in &request.end_points {
        if let Some(first) = on_link.insert(ep.interface_ref(), link) {
            return Err(PlanError::InterfaceOnTwoLinks {
                interface: ep.interface_ref(),
                first: first.clone(),
                second: link.clone(),
            });
        }
    }
    let gateway = match &request.gateway {
        Gateway::EndPoint { node, interface } => Some(
            request
                .end_points
                .iter()
                .position(|ep| &ep.node == node && &ep.interface == interface)
                .ok_or_else(|| PlanError::GatewayNotEndPoint {
                    link: link.clone(),
                    gateway: InterfaceRef {
                        node: node.clone(),
                        interface: interface.clone(),
                    },
                })?,
        ),
        Gateway::None | Gateway::Reserved => None,
    };
    let count = request.end_points.len() as u64 + u64::from(request.gateway == Gateway::Reserved);
    let len = subnet_len(count, point_to_point).ok_or_else(|| PlanError::LinkTooLarge {
        link: link.clone(),
        needed: count,
    })?;
    Ok(LinkShape {
        request,
        len,
        count,
        gateway,
        subnet: None,
        pinned: false,
    })
}

/// The subnet a link pins, directly or through its end points' addresses,
/// checked against the link's needs; with the index of its private pool.
fn pinned_subnet(
    shape: &LinkShape<'_>,
    snapshot: &Allocations,
    private: &[usize],
) -> Result<Option<(Ipv4Net, usize)>, PlanError> {
    let link = &shape.request.link;
    let pools = snapshot.pools();
    let private_refs: Vec<&PoolRef> = private.iter().map(|&i| &pools[i].pool).collect();
    let pins: Vec<(&EndPoint, Ipv4Addr)> = shape
        .request
        .end_points
        .iter()
        .filter_map(|ep| ep.address.map(|a| (ep, a)))
        .collect();
    for (i, (ep, address)) in pins.iter().enumerate() {
        if let Some((first, _)) = pins[..i].iter().find(|(_, a)| a == address) {
            return Err(PlanError::DuplicateAddress {
                link: link.clone(),
                address: *address,
                first: first.interface_ref(),
                second: Box::new(ep.interface_ref()),
            });
        }
    }
    let check_pins = |subnet: Ipv4Net| -> Result<(), PlanError> {
        for (ep, address) in &pins {
            if !subnet.contains(address) {
                return Err(PlanError::AddressOutsideSubnet {
                    link: link.clone(),
                    interface: ep.interface_ref(),
                    address: *address,
                    subnet,
                });
            }
            if !usable(*address, subnet) {
                return Err(PlanError::AddressNotUsable {
                    link: link.clone(),
                    interface: ep.interface_ref(),
                    address: *address,
                    subnet,
                });
            }
        }
        Ok(())
    };
    if let Some(subnet) = shape.request.subnet {
        if subnet.trunc() != subnet {
            return Err(PlanError::SubnetHostBits {
                link: link.clone(),
                subnet,
                network: subnet.trunc(),
            });
        }
        let widest = MAX_PIN_LEN.min(shape.len);
        if subnet.prefix_len() < widest {
            return Err(PlanError::SubnetTooLarge {
                link: link.clone(),
                subnet,
                room: size(subnet.prefix_len()),
                limit: size(widest),
            });
        }
        if hosts(subnet.prefix_len()) < shape.count {
            return Err(PlanError::SubnetTooSmall {
                link: link.clone(),
                subnet,
                room: hosts(subnet.prefix_len()),
                needed: shape.count,
            });
        }
        check_pins(subnet)?;
        let pool = private
            .iter()
            .copied()
            .find(|&i| pools[i].pool.prefix.contains(&subnet));
        return match pool {
            Some(pool) => Ok(Some((subnet, pool))),
            None => Err(PlanError::SubnetOutsidePools {
                link: link.clone(),
                subnet,
                pools: describe(&private_refs, "the private pools"),
            }),
        };
    }
    let Some(&(first_ep, first)) = pins.first() else {
        return Ok(None);
    };
    let pool = private
        .iter()
        .copied()
        .find(|&i| pools[i].pool.prefix.contains(&first))
        .ok_or_else(|| PlanError::AddressOutsidePools {
            interface: first_ep.interface_ref(),
            address: first,
            pools: describe(&private_refs, "the private pools"),
        })?;
    let pool_len = pools[pool].pool.prefix.prefix_len();
    let widest = MAX_PIN_LEN.min(shape.len);
    for len in (pool_len..=shape.len).rev() {
        let candidate = Ipv4Net::new_assert(first, len).trunc();
        if pins.iter().all(|(_, a)| usable(*a, candidate)) {
            if len < widest {
                return Err(PlanError::PinsTooFarApart {
                    link: link.clone(),
                    limit: size(widest),
                });
            }
            return Ok(Some((candidate, pool)));
        }
    }
    Err(PlanError::AddressesApart {
        link: link.clone(),
        needed: shape.count,
    })
}

impl Plan {
    /// The private addresses this plan takes: its block and its pinned
    /// subnets (what a tenant's quota of private addresses counts).
    pub fn private_addresses(&self) -> u64 {
        self.links
            .iter()
            .filter(|l| l.pinned)
            .map(|l| size(l.subnet.prefix_len()))
            .chain(self.block.map(|b| size(b.prefix_len())))
            .sum()
    }
}

/// Plans the addresses of `request` against `snapshot`. Changes nothing.
pub fn plan(snapshot: &Allocations, request: &ViRequest) -> Result<Plan, PlanError> {
    let vi = &request.vi;
    if snapshot.holds(vi) {
        return Err(PlanError::AlreadyHolds(vi.clone()));
    }
    let pools = snapshot.pools();
    let private: Vec<usize> = (0..pools.len())
        .filter(|&i| pools[i].pool.kind == PoolKind::Private)
        .collect();
    let point_to_point = snapshot.config().point_to_point.prefix_len();

    // 1. What each link needs.
    let mut seen = BTreeSet::new();
    let mut on_link = BTreeMap::new();
    let mut shapes = Vec::with_capacity(request.links.len());
    for link in &request.links {
        if !seen.insert(&link.link) {
            return Err(PlanError::DuplicateLink(link.link.clone()));
        }
        shapes.push(shape(link, point_to_point, &mut on_link)?);
    }

    // 2. Links held apart by pins.
    let mut allocations = Vec::new();
    let mut apart: Vec<(usize, Block)> = Vec::new();
    for i in 0..shapes.len() {
        let Some((subnet, pool)) = pinned_subnet(&shapes[i], snapshot, &private)? else {
            continue;
        };
        let link = &shapes[i].request.link;
        for &(j, other) in &apart {
            if block_overlaps(other, from_net(subnet)) {
                return Err(PlanError::SubnetsOverlap {
                    first: shapes[j].request.link.clone(),
                    first_subnet: to_net(other),
                    second: link.clone(),
                    second_subnet: subnet,
                });
            }
        }
        if let Err((held, held_by)) = pools[pool].space.check_free(from_net(subnet)) {
            let implied_by = shapes[i]
                .request
                .end_points
                .iter()
                .find_map(|ep| ep.address.map(|a| (ep.interface_ref(), a)))
                .filter(|_| shapes[i].request.subnet.is_none());
            return Err(match implied_by {
                Some((interface, address)) => PlanError::AddressTaken {
                    link: link.clone(),
                    interface,
                    address,
                    subnet,
                    held: to_net(held),
                    held_by: Box::new(held_by.clone()),
                },
                None => PlanError::SubnetTaken {
                    link: link.clone(),
                    subnet,
                    held: to_net(held),
                    held_by: Box::new(held_by.clone()),
                },
            });
        }
        apart.push((i, from_net(subnet)));
        allocations.push(Allocation {
            pool: pools[pool].pool.prefix,
            prefix: subnet,
            owner: Owner::LinkSubnet {
                vi: vi.clone(),
                link: link.clone(),
            },
        });
        shapes[i].subnet = Some(subnet);
        shapes[i].pinned = true;
    }

    // 3. The VI's block for the other links, best fit.
    let mut auto: Vec<usize> = (0..shapes.len())
        .filter(|&i| shapes[i].subnet.is_none())
        .collect();
    auto.sort_by_key(|&i| (shapes[i].len, i));
    let mut block = None;
    if !auto.is_empty() {
        let total: u64 = auto.iter().map(|&i| size(shapes[i].len)).sum();
        let bits = 64 - (total - 1).leading_zeros();
        let len = u8::try_from(32u32.saturating_sub(bits)).unwrap_or(0);
        let mut best: Option<(u8, usize, Block)> = None;
        if bits <= 32 {
            for &p in &private {
                let avoid: Vec<Block> = apart
                    .iter()
                    .map(|&(_, b)| b)
                    .filter(|&b| pools[p].space.contains(b))
                    .collect();
                if let Some((found, level)) = pools[p].space.best_fit(len, &avoid) {
                    if best.is_none_or(|(best_level, _, _)| level > best_level) {
                        best = Some((level, p, found));
                    }
                }
            }
        }
        let Some((_, pool, found)) = best else {
            let refs: Vec<&PoolRef> = private.iter().map(|&i| &pools[i].pool).collect();
            let largest = private
                .iter()
                .filter_map(|&i| pools[i].space.largest_free())
                .min_by_key(|&(start, len)| (len, start));
            return Err(PlanError::Exhausted {
                pools: describe(&refs, "the private pools"),
                what: format!(
                    "the address block of VI {vi} ({} link{})",
                    auto.len(),
                    if auto.len() == 1 { "" } else { "s" }
                ),
                len,
                size: total.next_power_of_two(),
                free: private.iter().map(|&i| pools[i].space.free()).sum(),
                largest: LargestFree(largest.map(to_net)),
            });
        };
        let mut offset = u64::from(found.0);
        for &i in &auto {
            let start = u32::try_from(offset).unwrap_or(u32::MAX);
            shapes[i].subnet = Some(to_net((start, shapes[i].len)));
            offset += size(shapes[i].len);
        }
        let prefix = to_net(found);
        block = Some(prefix);
        allocations.insert(
            0,
            Allocation {
                pool: pools[pool].pool.prefix,
                prefix,
                owner: Owner::Block { vi: vi.clone() },
            },
        );
    }

    // 4. Addresses on each link.
    let mut links = Vec::with_capacity(shapes.len());
    for shape in &shapes {
        let Some(subnet) = shape.subnet else {
            continue;
        };
        links.push(number_link(shape, subnet));
    }

    // 5. Home Addresses.
    let entry_points = plan_entry_points(snapshot, request, &mut allocations)?;

    Ok(Plan {
        vi: vi.clone(),
        block,
        links,
        entry_points,
        allocations,
    })
}

fn number_link(shape: &LinkShape<'_>, subnet: Ipv4Net) -> LinkPlan {
    let request = shape.request;
    let taken: BTreeSet<u64> = request
        .end_points
        .iter()
        .filter_map(|ep| ep.address.map(|a| u64::from(u32::from(a))))
        .collect();
    let (mut next, _) = host_range(subnet);
    let mut take = || {
        while taken.contains(&next) {
            next += 1;
        }
        next += 1;
        Ipv4Addr::from(u32::try_from(next - 1).unwrap_or(u32::MAX))
    };
    let mut gateway = None;
    if request.gateway == Gateway::Reserved {
        gateway = Some(take());
    }
    let mut addresses: Vec<Option<Ipv4Addr>> =
        request.end_points.iter().map(|ep| ep.address).collect();
    let order = shape
        .gateway
        .into_iter()
        .chain((0..addresses.len()).filter(|&i| Some(i) != shape.gateway));
    for i in order {
        if addresses[i].is_none() {
            addresses[i] = Some(take());
        }
    }
    if let Some(g) = shape.gateway {
        gateway = addresses[g];
    }
    let interfaces = request
        .end_points
        .iter()
        .zip(addresses)
        .filter_map(|(ep, address)| {
            let address = address?;
            Some(InterfacePlan {
                node: ep.node.clone(),
                interface: ep.interface.clone(),
                address,
                cidr: Ipv4Net::new_assert(address, subnet.prefix_len()),
                pinned: ep.address.is_some(),
            })
        })
        .collect();
    LinkPlan {
        link: request.link.clone(),
        subnet,
        pinned: shape.pinned,
        gateway,
        interfaces,
    }
}

fn plan_entry_points(
    snapshot: &Allocations,
    request: &ViRequest,
    allocations: &mut Vec<Allocation>,
) -> Result<Vec<EntryPointPlan>, PlanError> {
    let vi = &request.vi;
    if request.entry_points.is_empty() {
        return Ok(Vec::new());
    }
    for (i, ep) in request.entry_points.iter().enumerate() {
        if request.entry_points[..i]
            .iter()
            .any(|o| o.node == ep.node && o.interface == ep.interface)
        {
            return Err(PlanError::DuplicateEntryPoint(ep.interface_ref()));
        }
    }
    let datacenter = request
        .home
        .as_ref()
        .ok_or_else(|| PlanError::NoHomeDatacenter(vi.clone()))?;
    if !snapshot
        .config()
        .datacenters
        .iter()
        .any(|dc| &dc.name == datacenter)
    {
        return Err(PlanError::UnknownDatacenter(datacenter.clone()));
    }
    let pools = snapshot.pools();
    let home: Vec<usize> = (0..pools.len())
        .filter(
            |&i| matches!(&pools[i].pool.kind, PoolKind::Home { datacenter: d } if d == datacenter),
        )
        .collect();
    let refs: Vec<&PoolRef> = home.iter().map(|&i| &pools[i].pool).collect();
    let fallback = format!("datacenter {datacenter}, which has no home pool");
    // Tentative Home Addresses per pool index.
    let mut chosen: Vec<(usize, Block)> = Vec::new();
    let mut addresses: Vec<Option<(Ipv4Addr, bool)>> = vec![None; request.entry_points.len()];
    for (i, ep) in request.entry_points.iter().enumerate() {
        let Some(address) = ep.home_address else {
            continue;
        };
        let block = from_net(Ipv4Net::from(address));
        let pool = home
            .iter()
            .copied()
            .find(|&p| pools[p].space.contains(block))
            .ok_or_else(|| PlanError::HomeAddressOutsidePools {
                entry_point: ep.interface_ref(),
                address,
                pools: describe(&refs, &fallback),
            })?;
        if let Some(first) = request.entry_points[..i]
            .iter()
            .find(|o| o.home_address == Some(address))
        {
            return Err(PlanError::DuplicateHomeAddress {
                address,
                first: first.interface_ref(),
                second: ep.interface_ref(),
            });
        }
        if let Err((_, held_by)) = pools[pool].space.check_free(block) {
            return Err(PlanError::HomeAddressTaken {
                entry_point: ep.interface_ref(),
                address,
                held_by: Box::new(held_by.clone()),
            });
        }
        chosen.push((pool, block));
        addresses[i] = Some((address, true));
    }
    for (i, ep) in request.entry_points.iter().enumerate() {
        if addresses[i].is_some() {
            continue;
        }
        let found = home.iter().copied().find_map(|p| {
            let avoid: Vec<Block> = chosen
                .iter()
                .filter(|&&(q, _)| q == p)
                .map(|&(_, b)| b)
                .collect();
            pools[p].space.best_fit(32, &avoid).map(|(b, _)| (p, b))
        });
        let Some((pool, block)) = found else {
            let taken_here = chosen.len() as u64;
            let largest = home
                .iter()
                .filter_map(|&p| pools[p].space.largest_free())
                .min_by_key(|&(start, len)| (len, start));
            return Err(PlanError::Exhausted {
                pools: describe(&refs, &fallback),
                what: format!(
                    "the Home Address of entry point {} of VI {vi}",
                    ep.interface_ref()
                ),
                len: 32,
                size: 1,
                free: home
                    .iter()
                    .map(|&p| pools[p].space.free())
                    .sum::<u64>()
                    .saturating_sub(taken_here),
                largest: LargestFree(largest.map(to_net)),
            });
        };
        chosen.push((pool, block));
        addresses[i] = Some((to_net(block).network(), false));
    }
    let mut plans = Vec::with_capacity(addresses.len());
    for (ep, address) in request.entry_points.iter().zip(addresses) {
        let Some((home_address, pinned)) = address else {
            continue;
        };
        let pool = home
            .iter()
            .map(|&p| pools[p].pool.prefix)
            .find(|net| net.contains(&home_address))
            .unwrap_or_else(|| Ipv4Net::from(home_address));
        allocations.push(Allocation {
            pool,
            prefix: Ipv4Net::from(home_address),
            owner: Owner::HomeAddress {
                vi: vi.clone(),
                node: ep.node.clone(),
                interface: ep.interface.clone(),
            },
        });
        plans.push(EntryPointPlan {
            node: ep.node.clone(),
            interface: ep.interface.clone(),
            home_address,
            datacenter: datacenter.clone(),
            pinned,
        });
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_small() {
        // Results of `plan` are passed around by callers; keep the error lean.
        assert!(
            std::mem::size_of::<PlanError>() < 128,
            "{}",
            std::mem::size_of::<PlanError>()
        );
    }
}
