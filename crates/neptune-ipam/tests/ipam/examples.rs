//! The planner on hand-written VIs, with exact addresses and messages.

use neptune_ipam::{
    plan, Allocations, CommitError, Gateway, Owner, PlanError, PointToPoint, StoreRow, ViId,
};
use neptune_types::{InterfaceName, LinkId, NodeId};

use crate::support::*;

/// The paper's typical VI: a NAT/firewall entry point in front of a LAN of
/// three back ends, two of which also share a point-to-point link.
fn typical() -> neptune_ipam::ViRequest {
    let mut lan = link(
        "lan",
        vec![
            ep("nat", "eth1"),
            ep("web", "eth0"),
            ep("app", "eth0"),
            ep("db", "eth0"),
        ],
    );
    lan.gateway = Gateway::EndPoint {
        node: NodeId::new("nat").unwrap(),
        interface: InterfaceName::new("eth1").unwrap(),
    };
    let p2p = link("repl", vec![ep("app", "eth1"), ep("db", "eth1")]);
    vi("luigi", vec![lan, p2p], vec![entry("nat", "eth0")])
}

#[test]
fn numbers_the_typical_vi() {
    let snapshot = Allocations::new(domain("10.0.0.0/8", "192.0.2.0/24")).unwrap();
    let p = plan(&snapshot, &typical()).unwrap();
    // LAN of 4 needs a /29 (6 hosts), the link a /31: 10 addresses, a /28 block.
    assert_eq!(p.block, Some(net("10.0.0.0/28")));
    let lan = &p.links[0];
    assert_eq!(lan.subnet, net("10.0.0.0/29"));
    assert_eq!(lan.gateway, Some(ip("10.0.0.1")));
    let addrs: Vec<String> = lan.interfaces.iter().map(|i| i.cidr.to_string()).collect();
    assert_eq!(
        addrs,
        ["10.0.0.1/29", "10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29"]
    );
    let repl = &p.links[1];
    assert_eq!(repl.subnet, net("10.0.0.8/31"));
    assert_eq!(repl.gateway, None);
    let addrs: Vec<_> = repl.interfaces.iter().map(|i| i.address).collect();
    assert_eq!(addrs, [ip("10.0.0.8"), ip("10.0.0.9")]);
    // .0 of the home pool is its network address, kept out of use.
    assert_eq!(p.entry_points[0].home_address, ip("192.0.2.1"));
    assert_eq!(p.allocations.len(), 2);
    // Planning again gives the same plan; planning changed nothing.
    assert_eq!(plan(&snapshot, &typical()).unwrap(), p);
    assert_eq!(snapshot.vi_count(), 0);
}

#[test]
fn slash30_option_skips_network_and_broadcast() {
    let mut config = domain("10.0.0.0/8", "192.0.2.0/24");
    config.point_to_point = PointToPoint::Slash30;
    let snapshot = Allocations::new(config).unwrap();
    let p = plan(&snapshot, &typical()).unwrap();
    let repl = &p.links[1];
    assert_eq!(repl.subnet, net("10.0.0.8/30"));
    let addrs: Vec<_> = repl.interfaces.iter().map(|i| i.address).collect();
    assert_eq!(addrs, [ip("10.0.0.9"), ip("10.0.0.10")]);
}

#[test]
fn reserved_gateway_takes_the_first_host() {
    let snapshot = Allocations::new(domain("10.0.0.0/8", "192.0.2.0/24")).unwrap();
    let mut lan = link("lan", vec![ep("a", "eth0"), ep("b", "eth0")]);
    lan.gateway = Gateway::Reserved;
    let p = plan(&snapshot, &vi("v", vec![lan], vec![])).unwrap();
    // Three addresses: a /29.
    assert_eq!(p.links[0].subnet, net("10.0.0.0/29"));
    assert_eq!(p.links[0].gateway, Some(ip("10.0.0.1")));
    let addrs: Vec<_> = p.links[0].interfaces.iter().map(|i| i.address).collect();
    assert_eq!(addrs, [ip("10.0.0.2"), ip("10.0.0.3")]);
}

#[test]
fn vis_never_share_addresses_and_release_is_reused() {
    let mut domain = Allocations::new(domain("10.0.0.0/24", "192.0.2.0/29")).unwrap();
    let a = plan(&domain, &sized_vi("a", &[2, 2, 2], 1)).unwrap(); // 3 /31 -> /29
    domain.commit(&a).unwrap();
    let b = plan(&domain, &sized_vi("b", &[5], 1)).unwrap(); // /29
    domain.commit(&b).unwrap();
    assert_eq!(a.block, Some(net("10.0.0.0/29")));
    assert_eq!(b.block, Some(net("10.0.0.8/29")));
    assert_eq!(a.entry_points[0].home_address, ip("192.0.2.1"));
    // Best fit: the lone /32 left beside the reserved broadcast address.
    assert_eq!(b.entry_points[0].home_address, ip("192.0.2.6"));
    let c = plan(&domain, &sized_vi("c", &[2], 0)).unwrap();
    assert_eq!(c.block, Some(net("10.0.0.16/31")));
    domain.commit(&c).unwrap();
    let released = domain.release(&ViId::new("a").unwrap()).unwrap();
    assert_eq!(released.len(), 2);
    // A /31 goes into the smallest hole, the one c left.
    let d = plan(&domain, &sized_vi("d", &[1], 0)).unwrap();
    assert_eq!(d.block, Some(net("10.0.0.18/31")));
    // A /29 reuses the space a freed, the lowest /29 free.
    let d = plan(&domain, &sized_vi("d", &[5], 1)).unwrap();
    assert_eq!(d.block, Some(net("10.0.0.0/29")));
    assert_eq!(d.entry_points[0].home_address, ip("192.0.2.1"));
    assert!(matches!(
        domain.release(&ViId::new("a").unwrap()),
        Err(neptune_ipam::ReleaseError::UnknownVi(_))
    ));
}

#[test]
fn two_plans_from_one_snapshot_cannot_both_win() {
    let mut domain = Allocations::new(domain("10.0.0.0/24", "192.0.2.0/28")).unwrap();
    let snapshot = domain.clone();
    let first = plan(&snapshot, &sized_vi("first", &[4], 1)).unwrap(); // /29
    let second = plan(&snapshot, &sized_vi("second", &[2], 0)).unwrap(); // /31 inside it
    domain.commit(&first).unwrap();
    let err = domain.commit(&second).unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.0.0.0/31 for the address block of VI second conflicts with 10.0.0.0/29 \
         held by the address block of VI first; plan again"
    );
    // Planned again from the current state, it wins.
    let again = plan(&domain, &sized_vi("second", &[2], 0)).unwrap();
    assert_eq!(again.block, Some(net("10.0.0.8/31")));
    domain.commit(&again).unwrap();
    assert!(matches!(
        domain.commit(&again),
        Err(CommitError::AlreadyCommitted(_))
    ));
}

#[test]
fn store_rows_cover_every_enclosing_prefix() {
    let domain = Allocations::new(domain("10.0.0.0/29", "192.0.2.0/30")).unwrap();
    let p = plan(&domain, &sized_vi("v", &[2], 0)).unwrap();
    let rows = p.store_rows();
    let covers: Vec<String> = rows
        .iter()
        .filter_map(|r| match r {
            StoreRow::Covers { prefix, .. } => Some(prefix.to_string()),
            StoreRow::Owned { .. } => None,
        })
        .collect();
    assert_eq!(covers, ["10.0.0.0/29", "10.0.0.0/30"]);
    assert!(
        matches!(rows.last(), Some(StoreRow::Owned { prefix, .. }) if *prefix == net("10.0.0.0/31"))
    );
}

#[test]
fn pinned_subnet_and_addresses_are_honoured() {
    let mut domain = Allocations::new(domain("10.0.0.0/8", "192.0.2.0/24")).unwrap();
    let mut req = typical();
    req.links[0].subnet = Some(net("10.9.0.0/24"));
    req.links[1].end_points[1].address = Some(ip("10.7.7.7"));
    req.entry_points[0].home_address = Some(ip("192.0.2.77"));
    let p = plan(&domain, &req).unwrap();
    assert_eq!(p.block, None);
    assert_eq!(p.links[0].subnet, net("10.9.0.0/24"));
    assert!(p.links[0].pinned);
    assert_eq!(p.links[0].interfaces[3].address, ip("10.9.0.4"));
    // The pinned address implies the /31 around it; the other end takes the free one.
    assert_eq!(p.links[1].subnet, net("10.7.7.6/31"));
    assert_eq!(p.links[1].interfaces[0].address, ip("10.7.7.6"));
    assert_eq!(p.links[1].interfaces[1].address, ip("10.7.7.7"));
    assert!(p.links[1].interfaces[1].pinned && !p.links[1].interfaces[0].pinned);
    assert_eq!(p.entry_points[0].home_address, ip("192.0.2.77"));
    domain.commit(&p).unwrap();
    // An unpinned VI is placed around the pins: best fit puts it in the
    // smallest hole, beside the pinned /31.
    let other = plan(&domain, &sized_vi("other", &[2], 1)).unwrap();
    assert_eq!(other.block, Some(net("10.7.7.4/31")));
    assert_eq!(other.entry_points[0].home_address, ip("192.0.2.1"));
}

#[test]
fn a_pin_takes_no_more_than_a_slash_24_or_its_link() {
    let domain = Allocations::new(domain("10.0.0.0/8", "192.0.2.0/24")).unwrap();
    // Half the private pool for a link of two.
    let mut req = sized_vi("greedy", &[2], 0);
    req.links[0].subnet = Some(net("10.128.0.0/9"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "pinned subnet 10.128.0.0/9 of link l0 holds 8388608 addresses; a pin may hold at \
         most 256 (a /24, or the link's own size)"
    );
    // The same through two pinned addresses far apart.
    let mut req = sized_vi("greedy", &[2], 0);
    req.links[0].end_points[0].address = Some(ip("10.0.0.1"));
    req.links[0].end_points[1].address = Some(ip("10.200.0.1"));
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::PinsTooFarApart { limit: 256, .. })
    ));
    // A /24 is fine, and counts as 256 private addresses; the block of
    // the other links as its own size.
    let mut req = sized_vi("fair", &[2, 2, 5], 0);
    req.links[0].subnet = Some(net("10.1.2.0/24"));
    let p = plan(&domain, &req).unwrap();
    assert_eq!(p.private_addresses(), 256 + 16);
    // A link that needs more than a /24 may pin what it needs.
    let mut req = sized_vi("big", &[300], 0);
    req.links[0].subnet = Some(net("10.4.0.0/23"));
    assert_eq!(plan(&domain, &req).unwrap().private_addresses(), 512);
    req.links[0].subnet = Some(net("10.4.0.0/22"));
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::SubnetTooLarge { limit: 512, .. })
    ));
}

#[test]
fn pins_taken_by_another_vi_are_refused_naming_the_holder() {
    let mut domain = Allocations::new(domain("10.0.0.0/8", "192.0.2.0/24")).unwrap();
    let first = plan(&domain, &typical()).unwrap();
    domain.commit(&first).unwrap();
    let mut req = sized_vi("second", &[2], 1);
    req.links[0].subnet = Some(net("10.0.0.8/31"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "subnet 10.0.0.8/31 of link l0 is taken: 10.0.0.0/28 is held by the address block of VI luigi"
    );
    let mut req = sized_vi("second", &[2], 1);
    req.links[0].subnet = Some(net("10.0.0.0/24"));
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::SubnetTaken { .. })
    ));
    let mut req = sized_vi("second", &[2], 1);
    req.links[0].end_points[1].address = Some(ip("10.0.0.5"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "pinned address 10.0.0.5 of n0x1/eth0 needs subnet 10.0.0.4/31 for link l0, but \
         10.0.0.0/28 is held by the address block of VI luigi"
    );
    let mut req = sized_vi("second", &[2], 1);
    req.entry_points[0].home_address = Some(ip("192.0.2.1"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "Home Address 192.0.2.1 of entry point gw0/eth0 is taken by the Home Address of entry \
         point nat/eth0 of VI luigi"
    );
    req.entry_points[0].home_address = Some(ip("192.0.2.255"));
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::HomeAddressTaken { held_by, .. }) if matches!(*held_by, Owner::Reserved { .. })
    ));
}

#[test]
fn conflicting_pins_inside_a_vi_are_refused() {
    let domain = Allocations::new(domain("10.0.0.0/8", "192.0.2.0/24")).unwrap();
    let mut req = sized_vi("v", &[2, 3], 2);
    req.links[0].subnet = Some(net("10.1.0.0/24"));
    req.links[1].subnet = Some(net("10.1.0.128/25"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "subnet 10.1.0.0/24 of link l0 overlaps subnet 10.1.0.128/25 of link l1 in the same VI"
    );
    let mut req = sized_vi("v", &[3], 0);
    req.links[0].subnet = Some(net("10.1.0.0/30"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "pinned subnet 10.1.0.0/30 of link l0 has room for 2 addresses; the link needs 3"
    );
    let mut req = sized_vi("v", &[3], 0);
    req.links[0].subnet = Some(net("10.1.0.1/24"));
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::SubnetHostBits { .. })
    ));
    req.links[0].subnet = Some(net("11.1.0.0/24"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "pinned subnet 11.1.0.0/24 of link l0 is not inside private pool 10.0.0.0/8"
    );
    req.links[0].subnet = Some(net("10.1.0.0/24"));
    req.links[0].end_points[0].address = Some(ip("10.2.0.1"));
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::AddressOutsideSubnet { .. })
    ));
    req.links[0].end_points[0].address = Some(ip("10.1.0.255"));
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::AddressNotUsable { .. })
    ));
    req.links[0].end_points[0].address = Some(ip("10.1.0.9"));
    req.links[0].end_points[2].address = Some(ip("10.1.0.9"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "address 10.1.0.9 is pinned by both n0x0/eth0 and n0x2/eth0 on link l0"
    );
    let mut req = sized_vi("v", &[2], 2);
    req.entry_points[0].home_address = Some(ip("192.0.2.9"));
    req.entry_points[1].home_address = Some(ip("192.0.2.9"));
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::DuplicateHomeAddress { .. })
    ));
    req.entry_points[1].home_address = Some(ip("198.51.100.1"));
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "pinned Home Address 198.51.100.1 of entry point gw1/eth0 is not inside home pool \
         192.0.2.0/24 of datacenter napoli"
    );
}

#[test]
fn pinned_addresses_far_apart_widen_the_subnet_or_are_refused() {
    let domain = Allocations::new(domain("10.0.0.0/16", "192.0.2.0/24")).unwrap();
    let req = vi(
        "v",
        vec![link(
            "l",
            vec![
                pinned_ep("a", "eth0", "10.0.1.1"),
                pinned_ep("b", "eth0", "10.0.1.6"),
            ],
        )],
        vec![],
    );
    let p = plan(&domain, &req).unwrap();
    assert_eq!(p.links[0].subnet, net("10.0.1.0/29"));
    let req = vi(
        "v",
        vec![link(
            "l",
            vec![
                pinned_ep("a", "eth0", "10.0.0.1"),
                pinned_ep("b", "eth0", "10.0.255.255"),
            ],
        )],
        vec![],
    );
    // The only subnet holding both is the whole pool, whose broadcast is pinned.
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "the pinned addresses of link l do not fit in one subnet of its pool with room for 2 addresses"
    );
}

#[test]
fn malformed_requests_are_refused() {
    let domain = Allocations::new(domain("10.0.0.0/8", "192.0.2.0/24")).unwrap();
    let req = vi("v", vec![link("l", vec![])], vec![]);
    assert_eq!(
        plan(&domain, &req).unwrap_err(),
        PlanError::EmptyLink(LinkId::new("l").unwrap())
    );
    let req = vi(
        "v",
        vec![
            link("l", vec![ep("a", "eth0")]),
            link("l", vec![ep("b", "eth0")]),
        ],
        vec![],
    );
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::DuplicateLink(_))
    ));
    let req = vi(
        "v",
        vec![
            link("l", vec![ep("a", "eth0")]),
            link("m", vec![ep("a", "eth0")]),
        ],
        vec![],
    );
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "interface a/eth0 is an end point of link l and of link m"
    );
    let mut l = link("l", vec![ep("a", "eth0"), ep("b", "eth0"), ep("c", "eth0")]);
    l.gateway = Gateway::EndPoint {
        node: NodeId::new("z").unwrap(),
        interface: InterfaceName::new("eth0").unwrap(),
    };
    assert!(matches!(
        plan(&domain, &vi("v", vec![l], vec![])),
        Err(PlanError::GatewayNotEndPoint { .. })
    ));
    let mut req = sized_vi("v", &[2], 1);
    req.home = None;
    assert_eq!(
        plan(&domain, &req).unwrap_err().to_string(),
        "VI v has entry points but no home datacenter"
    );
    req.home = Some(neptune_ipam::DatacenterName::new("roma").unwrap());
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::UnknownDatacenter(_))
    ));
    let req = vi("v", vec![], vec![entry("a", "eth0"), entry("a", "eth0")]);
    assert!(matches!(
        plan(&domain, &req),
        Err(PlanError::DuplicateEntryPoint(_))
    ));
}

#[test]
fn exhaustion_names_the_pool_the_need_and_the_free_space() {
    let mut domain = Allocations::new(domain("10.0.0.0/28", "192.0.2.0/30")).unwrap();
    let a = plan(&domain, &sized_vi("a", &[2, 2], 1)).unwrap(); // /30
    domain.commit(&a).unwrap();
    let err = plan(&domain, &sized_vi("b", &[8], 0)).unwrap_err(); // /28
    assert_eq!(
        err.to_string(),
        "private pool 10.0.0.0/28 cannot hold a /28 (16 addresses) for the address block of \
         VI b (1 link): 12 addresses free, largest free block 10.0.0.8/29"
    );
    // The /30 home pool has two usable addresses; a took one.
    let err = plan(&domain, &sized_vi("c", &[2], 2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "home pool 192.0.2.0/30 of datacenter napoli cannot hold a /32 (1 address) for the \
         Home Address of entry point gw1/eth0 of VI c: 0 addresses free, largest free block \
         192.0.2.2/32"
    );
    assert!(matches!(
        plan(&domain, &sized_vi("a", &[2], 0)),
        Err(PlanError::AlreadyHolds(_))
    ));
}

#[test]
fn utilisation_reports_used_free_and_largest_block() {
    let mut domain = Allocations::new(domain("10.0.0.0/24", "192.0.2.0/29")).unwrap();
    let a = plan(&domain, &sized_vi("a", &[30], 2)).unwrap(); // /27
    domain.commit(&a).unwrap();
    let usage = domain.utilisation();
    assert_eq!(usage.len(), 2);
    assert_eq!(
        (usage[0].total, usage[0].used, usage[0].free),
        (256, 32, 224)
    );
    assert_eq!(usage[0].largest_free, Some(net("10.0.0.128/25")));
    assert_eq!(usage[0].free_blocks, 3);
    assert!((usage[0].fragmentation() - (1.0 - 128.0 / 224.0)).abs() < 1e-9);
    // Home pool: network and broadcast reserved, two Home Addresses.
    assert_eq!((usage[1].used, usage[1].free), (4, 4));
    let json = serde_json::to_value(&usage[1]).unwrap();
    assert_eq!(json["kind"], "home");
    assert_eq!(json["datacenter"], "napoli");
    assert_eq!(json["largest_free"], "192.0.2.2/31");
}

#[test]
fn restore_rebuilds_the_same_snapshot() {
    let mut domain = Allocations::new(domain("10.0.0.0/16", "192.0.2.0/24")).unwrap();
    for (i, sizes) in [[2usize, 3], [7, 2], [2, 2]].iter().enumerate() {
        let p = plan(&domain, &sized_vi(&format!("v{i}"), sizes, 1)).unwrap();
        domain.commit(&p).unwrap();
    }
    let stored: Vec<_> = domain.iter().collect();
    let restored = Allocations::restore(domain.config().clone(), stored.clone()).unwrap();
    assert_eq!(restored.iter().collect::<Vec<_>>(), stored);
    assert_eq!(restored.utilisation(), domain.utilisation());
    let next = sized_vi("next", &[4], 1);
    assert_eq!(
        plan(&restored, &next).unwrap(),
        plan(&domain, &next).unwrap()
    );
    let mut bad = stored.clone();
    bad.push(bad[1].clone());
    assert!(Allocations::restore(domain.config().clone(), bad).is_err());
}
