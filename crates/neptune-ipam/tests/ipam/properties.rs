//! Property tests: random VIs planned, committed and released in random
//! order, against independent oracles.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use neptune_ipam::{
    plan, Allocation, Allocations, CommitError, DatacenterConfig, DatacenterName, DomainConfig,
    Plan, PlanError, PointToPoint, StoreRow, ViId, ViRequest,
};
use proptest::prelude::*;

use crate::support::*;

fn config() -> DomainConfig {
    DomainConfig {
        private_pools: vec![net("10.0.0.0/21"), net("10.8.0.0/24")],
        datacenters: vec![DatacenterConfig {
            name: DatacenterName::new("napoli").unwrap(),
            home_pools: vec![net("192.0.2.0/28"), net("198.51.100.0/30")],
        }],
        reserved: vec![net("10.0.0.0/30")],
        point_to_point: PointToPoint::Slash31,
    }
}

fn first(n: Ipv4Net) -> u64 {
    u64::from(u32::from(n.network()))
}

fn last(n: Ipv4Net) -> u64 {
    u64::from(u32::from(n.broadcast()))
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    first(a) <= last(b) && first(b) <= last(a)
}

/// The store's allocation table under `UNIQUE (pool, prefix)`, following
/// the rules documented on `StoreRow`.
#[derive(Clone, Default)]
struct RowTable {
    rows: BTreeMap<(Ipv4Net, Ipv4Net), Option<u32>>, // None: owned, Some(n): covers n blocks
}

impl RowTable {
    /// One transaction: all rows or none.
    fn insert(&mut self, rows: &[StoreRow]) -> bool {
        let mut next = self.clone();
        for row in rows {
            match row {
                StoreRow::Owned { pool, prefix, .. } => {
                    if next.rows.insert((*pool, *prefix), None).is_some() {
                        return false;
                    }
                }
                StoreRow::Covers { pool, prefix } => {
                    match next.rows.entry((*pool, *prefix)).or_insert(Some(0)) {
                        Some(n) => *n += 1,
                        None => return false,
                    }
                }
            }
        }
        *self = next;
        true
    }

    fn delete(&mut self, allocations: &[Allocation]) {
        for a in allocations {
            assert_eq!(self.rows.remove(&(a.pool, a.prefix)), Some(None));
            for prefix in a.covering_prefixes() {
                let key = (a.pool, prefix);
                let n = self.rows.get_mut(&key).unwrap().as_mut().unwrap();
                *n -= 1;
                if *n == 0 {
                    self.rows.remove(&key);
                }
            }
        }
    }
}

/// Everything the tests know about the domain, besides the snapshot.
struct World {
    domain: Allocations,
    table: RowTable,
    live: BTreeMap<ViId, Plan>,
    next_id: usize,
}

impl World {
    fn new() -> Self {
        let domain = Allocations::new(config()).unwrap();
        Self {
            domain,
            table: RowTable::default(),
            live: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("vi{}", self.next_id)
    }

    /// Commits `plan` to the snapshot and to the row table, which must agree.
    fn commit(&mut self, plan: &Plan) -> Result<(), CommitError> {
        let result = self.domain.commit(plan);
        let stored = self.table.insert(&plan.store_rows());
        assert_eq!(
            result.is_ok(),
            stored,
            "row table and snapshot disagree: {result:?}"
        );
        if result.is_ok() {
            self.live.insert(plan.vi.clone(), plan.clone());
        }
        result
    }

    fn release(&mut self, vi: &ViId) {
        let released = self.domain.release(vi).unwrap();
        self.table.delete(&released);
        let plan = self.live.remove(vi).unwrap();
        assert_eq!(released, plan.allocations);
    }

    /// The invariants of a snapshot, checked from the outside.
    fn check(&self) {
        let allocations: Vec<Allocation> = self.domain.iter().collect();
        let free: Vec<(Ipv4Net, Ipv4Net)> = self.domain.free_blocks().collect();
        let usage = self.domain.utilisation();
        for u in &usage {
            let pool = u.pool.prefix;
            let mut pieces: Vec<(Ipv4Net, bool)> = allocations
                .iter()
                .filter(|a| a.pool == pool)
                .map(|a| (a.prefix, true))
                .chain(
                    free.iter()
                        .filter(|(p, _)| *p == pool)
                        .map(|&(_, b)| (b, false)),
                )
                .collect();
            pieces.sort_by_key(|&(n, _)| first(n));
            // Allocated and free blocks tile the pool exactly: no overlap, no gap.
            let mut cursor = first(pool);
            for &(n, _) in &pieces {
                assert!(pool.contains(&n), "{n} outside {pool}");
                assert_eq!(first(n), cursor, "gap or overlap at {n} in {pool}");
                cursor = last(n) + 1;
            }
            assert_eq!(cursor, last(pool) + 1);
            let size = |n: Ipv4Net| 1u64 << (32 - n.prefix_len());
            let used_exact: u64 = pieces.iter().filter(|p| p.1).map(|p| size(p.0)).sum();
            let free_exact: u64 = pieces.iter().filter(|p| !p.1).map(|p| size(p.0)).sum();
            assert_eq!(u.used, used_exact);
            assert_eq!(u.free, free_exact);
            assert_eq!(u.total, size(pool));
            let free_here: Vec<Ipv4Net> = pieces.iter().filter(|p| !p.1).map(|p| p.0).collect();
            assert_eq!(u.free_blocks, free_here.len());
            let largest = free_here
                .iter()
                .copied()
                .min_by_key(|n| (n.prefix_len(), first(*n)));
            assert_eq!(u.largest_free, largest);
            // Coalescing is complete: no two free blocks are buddies.
            let set: BTreeSet<Ipv4Net> = free_here.iter().copied().collect();
            for n in &free_here {
                if n.prefix_len() > pool.prefix_len() {
                    let parent = n.supernet().unwrap();
                    let siblings: Vec<Ipv4Net> = parent.subnets(n.prefix_len()).unwrap().collect();
                    assert!(
                        !siblings.iter().all(|s| set.contains(s)),
                        "free buddies {siblings:?} not merged"
                    );
                }
            }
        }
        // Addresses of live VIs: inside their subnets, never shared.
        let mut addresses = BTreeSet::new();
        let mut subnets: Vec<Ipv4Net> = Vec::new();
        for plan in self.live.values() {
            for link in &plan.links {
                let held = plan.block.is_some_and(|b| b.contains(&link.subnet))
                    || plan.allocations.iter().any(|a| a.prefix == link.subnet);
                assert!(held, "{} of {} is not held", link.subnet, plan.vi);
                subnets.push(link.subnet);
                for i in &link.interfaces {
                    assert!(link.subnet.contains(&i.address));
                    if link.subnet.prefix_len() <= 30 {
                        assert_ne!(i.address, link.subnet.network());
                        assert_ne!(i.address, link.subnet.broadcast());
                    }
                    assert!(addresses.insert(i.address), "{} given twice", i.address);
                }
                if let Some(g) = link.gateway {
                    assert!(link.subnet.contains(&g));
                }
            }
            for e in &plan.entry_points {
                assert!(
                    addresses.insert(e.home_address),
                    "{} given twice",
                    e.home_address
                );
            }
        }
        subnets.sort_by_key(|&n| first(n));
        for pair in subnets.windows(2) {
            assert!(
                !overlaps(pair[0], pair[1]),
                "{} overlaps {}",
                pair[0],
                pair[1]
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Plan and commit a VI with links of these sizes and this many entry points.
    Add { sizes: Vec<usize>, entries: usize },
    /// Release the n-th live VI (modulo their number).
    Release(usize),
    /// Pin link 0's subnet at slot `slot` of its size in the first pool.
    AddPinned { sizes: Vec<usize>, slot: u32 },
    /// Pin an address of a point-to-point link.
    AddPinnedAddress { offset: u32 },
    /// Two VIs planned from the same snapshot, committed one after the other.
    Race { a: Vec<usize>, b: Vec<usize> },
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![3 => Just(2usize), 2 => 1usize..=3, 1 => 4usize..=40],
        1..=6,
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (sizes(), 0usize..=2).prop_map(|(sizes, entries)| Op::Add { sizes, entries }),
        4 => any::<usize>().prop_map(Op::Release),
        1 => (sizes(), 0u32..4096).prop_map(|(sizes, slot)| Op::AddPinned { sizes, slot }),
        1 => (0u32..2048).prop_map(|offset| Op::AddPinnedAddress { offset }),
        1 => (sizes(), sizes()).prop_map(|(a, b)| Op::Race { a, b }),
    ]
}

/// An exhaustion error must be true: no free block of the private pools
/// (or no free Home Address) could hold what was asked.
fn assert_honest_exhaustion(world: &World, err: &PlanError) {
    if let PlanError::Exhausted { len, pools, .. } = err {
        let private = pools.contains("private");
        let fits = world.domain.utilisation().iter().any(|u| {
            let matches_kind = matches!(u.pool.kind, neptune_ipam::PoolKind::Private) == private;
            matches_kind && u.largest_free.is_some_and(|l| l.prefix_len() <= *len)
        });
        // Home Addresses already chosen for the same VI may take the last
        // free ones, so only private exhaustion is checked against the state.
        if private {
            assert!(!fits, "claimed exhaustion but a /{len} is free: {err}");
        }
    }
}

fn request(world: &mut World, sizes: &[usize], entries: usize) -> ViRequest {
    let id = world.fresh_id();
    sized_vi(&id, sizes, entries)
}

fn run(ops: Vec<Op>) {
    let mut world = World::new();
    let empty_usage = world.domain.utilisation();
    let empty_free: Vec<_> = world.domain.free_blocks().collect();
    for op in ops {
        match op {
            Op::Add { sizes, entries } => {
                let req = request(&mut world, &sizes, entries);
                match plan(&world.domain, &req) {
                    Ok(p) => {
                        assert_eq!(plan(&world.domain, &req).unwrap(), p, "not deterministic");
                        world.commit(&p).unwrap();
                    }
                    Err(err) => {
                        assert!(matches!(err, PlanError::Exhausted { .. }), "{err}");
                        assert_honest_exhaustion(&world, &err);
                    }
                }
            }
            Op::Release(n) => {
                if !world.live.is_empty() {
                    let vi = world.live.keys().nth(n % world.live.len()).unwrap().clone();
                    world.release(&vi);
                }
            }
            Op::AddPinned { sizes, slot } => {
                let mut req = request(&mut world, &sizes, 0);
                let n = sizes[0] as u64;
                let len = if n <= 2 {
                    31
                } else {
                    (0..=29u8)
                        .rev()
                        .find(|&l| (1u64 << (32 - l)) - 2 >= n)
                        .unwrap()
                };
                let span = 1u64 << (32 - len);
                let base = first(net("10.0.0.0/21")) + (u64::from(slot) * span) % 2048;
                let pin = Ipv4Net::new(Ipv4Addr::from(base as u32), len)
                    .unwrap()
                    .trunc();
                req.links[0].subnet = Some(pin);
                let taken = world.domain.iter().any(|a| overlaps(a.prefix, pin));
                match plan(&world.domain, &req) {
                    Ok(p) => {
                        assert!(!taken, "pin {pin} honoured though taken");
                        assert_eq!(p.links[0].subnet, pin);
                        assert!(p.links[0].pinned);
                        world.commit(&p).unwrap();
                    }
                    Err(PlanError::SubnetTaken { subnet, held, .. }) => {
                        assert!(taken, "pin {pin} refused though free");
                        assert_eq!(subnet, pin);
                        assert!(overlaps(held, pin));
                    }
                    Err(err @ PlanError::Exhausted { .. }) => assert!(!taken, "{err}"),
                    Err(err) => panic!("unexpected {err}"),
                }
            }
            Op::AddPinnedAddress { offset } => {
                let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + offset);
                let id = world.fresh_id();
                let req = vi(
                    &id,
                    vec![link(
                        "l",
                        vec![
                            ep("a", "eth0"),
                            pinned_ep("b", "eth0", &address.to_string()),
                        ],
                    )],
                    vec![],
                );
                let subnet = Ipv4Net::new(address, 31).unwrap().trunc();
                let taken = world.domain.iter().any(|a| overlaps(a.prefix, subnet));
                match plan(&world.domain, &req) {
                    Ok(p) => {
                        assert!(!taken);
                        assert_eq!(p.links[0].subnet, subnet);
                        assert_eq!(p.links[0].interfaces[1].address, address);
                        world.commit(&p).unwrap();
                    }
                    Err(PlanError::AddressTaken {
                        address: a,
                        subnet: n,
                        held,
                        ..
                    }) => {
                        assert!(taken, "{address} refused though free");
                        assert_eq!((a, n), (address, subnet));
                        assert!(overlaps(held, subnet));
                    }
                    Err(err) => panic!("unexpected {err}"),
                }
            }
            Op::Race { a, b } => {
                let ra = request(&mut world, &a, 1);
                let rb = request(&mut world, &b, 1);
                let snapshot = world.domain.clone();
                let (Ok(pa), Ok(pb)) = (plan(&snapshot, &ra), plan(&snapshot, &rb)) else {
                    continue;
                };
                world.commit(&pa).unwrap();
                let clash = pa.allocations.iter().any(|x| {
                    pb.allocations
                        .iter()
                        .any(|y| x.pool == y.pool && overlaps(x.prefix, y.prefix))
                });
                match world.commit(&pb) {
                    Ok(()) => assert!(!clash, "both plans won"),
                    Err(CommitError::Conflict { .. }) => assert!(clash, "refused without a clash"),
                    Err(err) => panic!("unexpected {err}"),
                }
            }
        }
        world.check();
    }
    // Releasing everything restores the empty pools.
    let all: Vec<ViId> = world.live.keys().cloned().collect();
    for vi in &all {
        world.release(vi);
    }
    world.check();
    assert_eq!(world.domain.utilisation(), empty_usage);
    assert_eq!(world.domain.free_blocks().collect::<Vec<_>>(), empty_free);
    assert!(world.table.rows.is_empty());
    assert_eq!(world.domain.vi_count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_vis_never_overlap_and_accounting_is_exact(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

#[test]
fn filling_the_pools_then_emptying_them_in_random_order() {
    // A long, fixed run that reaches exhaustion many times.
    let mut ops = Vec::new();
    for i in 0..400usize {
        let sizes = vec![2 + i % 7, 2, 1 + (i * 7) % 30];
        ops.push(Op::Add {
            sizes,
            entries: i % 2,
        });
        if i % 3 == 0 {
            ops.push(Op::Release(i * 31));
        }
    }
    run(ops);
}
