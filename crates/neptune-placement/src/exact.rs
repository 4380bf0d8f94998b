//! Exact placement of small VIs by branch and bound, and a lower bound on
//! the cut of any VI.
//!
//! A VI is usually small, and for a small one the best placement can be
//! proven: [`search`] assigns the VMs one at a time (pinned ones first, then
//! always the VM most connected to those already placed), tries its hosts
//! best connected first, and prunes a branch when
//!
//! - a host's capacity (slots, vCPU, RAM, disk), a pin or an anti-affinity
//!   group would break;
//! - a physical link would carry more than its capacity (when an admissible
//!   placement is sought: the network starts within its capacities); loads
//!   only grow as VMs are added, so no completion could repair it;
//! - the cut so far, plus for every VM not yet placed the least it must
//!   add to the cut whichever host it goes to (the weight of its links to
//!   placed VMs on other hosts, at best), reaches the best cut known.
//!
//! Hosts that hold none of the VI's VMs yet and are interchangeable (the
//! same residual capacity and the same place in the network) are tried
//! once: which of them a VM opens makes no difference. The search is
//! bounded by a number of steps, not by time (this crate reads no clock):
//! it either proves its best placement optimal, or says it could not.
//!
//! [`lower_bound`] bounds the cut of any placement from below: a VI that
//! needs `p` hosts is cut into `p` parts, each of whose boundaries weighs
//! at least the graph's minimum cut `λ` (Stoer–Wagner), so the cut is at
//! least `ceil(p λ / 2)`.

use std::collections::HashMap;

use crate::instance::{add, le, Instance, W};
use crate::model::{PhysicalNetwork, Problem};
use crate::network::{Loads, Router};

/// VIs of at most this many VMs are placed exactly.
pub const EXACT_MAX_NODES: usize = 24;

/// Search steps (a VM tried on a host) before the search gives up proving.
pub const EXACT_STEPS: u64 = 3_000_000;

/// What the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// A placement (bin of every node) better than the bound it was given.
    pub(crate) bins: Option<Vec<u32>>,
    /// The search ran to its end: nothing better than what it returns (or
    /// than the bound it was given) exists.
    pub(crate) complete: bool,
}

struct Search<'a> {
    inst: &'a Instance,
    bin_host: &'a [usize],
    order: Vec<usize>,
    /// Bin of each node, `u32::MAX` while unplaced.
    bin: Vec<u32>,
    load: Vec<W>,
    /// Nodes of this VI per bin.
    count: Vec<u32>,
    /// Anti-affinity groups present per bin.
    groups: Vec<Vec<u32>>,
    /// `conn[v * bins + b]`: weight of v's links to nodes placed in `b`.
    conn: Vec<u64>,
    /// Weight of v's links to placed nodes.
    tot: Vec<u64>,
    /// Symmetry class of each bin.
    class: Vec<u32>,
    /// Bins holding nodes of this VI, in the order they were opened.
    used: Vec<u32>,
    /// Scratch: per bin, the links unplaced nodes with room there have to it.
    column: Vec<Vec<u64>>,
    loads: Option<Loads<'a>>,
    cut: u64,
    /// The most an admissible placement can cut (admissible searches only).
    cut_limit: Option<u64>,
    best_cut: u64,
    best: Option<Vec<u32>>,
    steps: u64,
    budget: u64,
}

/// Searches for a placement of `inst` with a cut below `bound` (`None`: any),
/// admissible when `admissible` is asked and the network starts within its
/// capacities.
pub(crate) fn search(
    inst: &Instance,
    problem: &Problem,
    router: &Router<'_>,
    bin_host: &[usize],
    bound: Option<u64>,
    admissible: bool,
    budget: u64,
) -> Outcome {
    let n = inst.n();
    let bins = inst.bins();
    let loads = Loads::new(router);
    let loads = (admissible && loads.overload == 0 && !router.is_unlimited()).then_some(loads);
    let cut_limit = loads
        .as_ref()
        .and_then(|_| admissible_cut_limit(problem, bin_host));
    let mut s = Search {
        inst,
        bin_host,
        order: order(inst),
        bin: vec![u32::MAX; n],
        load: vec![[0; 4]; bins],
        count: vec![0; bins],
        groups: vec![Vec::new(); bins],
        conn: vec![0; n * bins],
        tot: vec![0; n],
        class: classes(inst, problem, router, bin_host),
        used: Vec::new(),
        column: vec![Vec::new(); bins],
        loads,
        cut: 0,
        cut_limit,
        best_cut: bound.unwrap_or(u64::MAX),
        best: None,
        steps: 0,
        budget,
    };
    let complete = s.go(0);
    Outcome {
        bins: s.best,
        complete,
    }
}

/// Pinned nodes first; then, greedily, the node with the heaviest links to
/// those already ordered (ties: the heavier node overall, then the lower
/// index), so that the bound tightens early.
fn order(inst: &Instance) -> Vec<usize> {
    let n = inst.n();
    let degree: Vec<u64> = (0..n)
        .map(|v| inst.neighbors(v).map(|(_, w)| w).sum())
        .collect();
    let mut taken = vec![false; n];
    let mut out = Vec::with_capacity(n);
    let take = |v: usize, out: &mut Vec<usize>, taken: &mut Vec<bool>| {
        taken[v] = true;
        out.push(v);
    };
    for v in (0..n).filter(|&v| inst.fixed[v].is_some()) {
        take(v, &mut out, &mut taken);
    }
    while out.len() < n {
        let next = (0..n)
            .filter(|&v| !taken[v])
            .max_by_key(|&v| (pull_of(&out, inst, v), degree[v], std::cmp::Reverse(v)));
        let Some(v) = next else { break };
        take(v, &mut out, &mut taken);
    }
    out
}

/// The weight of `v`'s links to the nodes in `out`.
fn pull_of(out: &[usize], inst: &Instance, v: usize) -> u64 {
    inst.neighbors(v)
        .filter(|(u, _)| out.contains(u))
        .map(|(_, w)| w)
        .sum()
}

/// The most an admissible placement can cut: every cut link loads a host
/// pair of a full mesh, or (at least) the uplinks of both its hosts in a
/// tree; `None` when the network does not limit bandwidth.
pub(crate) fn admissible_cut_limit(problem: &Problem, bin_host: &[usize]) -> Option<u64> {
    match &problem.network {
        PhysicalNetwork::Unlimited => None,
        PhysicalNetwork::FullMesh { bandwidth } => {
            let b = bin_host.len() as u64;
            Some(bandwidth.saturating_mul(b * b.saturating_sub(1) / 2))
        }
        PhysicalNetwork::Tree(t) => {
            let room: u64 = bin_host
                .iter()
                .map(|&h| {
                    t.host_uplinks[h]
                        .capacity
                        .saturating_sub(t.host_uplinks[h].load)
                })
                .fold(0, u64::saturating_add);
            Some(room / 2)
        }
    }
}

/// Bins that are interchangeable while empty share a class: the same
/// residual capacity and the same place in the network.
fn classes(
    inst: &Instance,
    problem: &Problem,
    router: &Router<'_>,
    bin_host: &[usize],
) -> Vec<u32> {
    let mut seen: HashMap<(W, (u64, u64, u64)), u32> = HashMap::new();
    (0..inst.bins())
        .map(|b| {
            let h = bin_host[b];
            let place = match &problem.network {
                PhysicalNetwork::Unlimited => (0, 0, 0),
                // A mesh's hosts are alike unless some pair carries load already.
                PhysicalNetwork::FullMesh { .. } if router.preloaded().is_empty() => (0, 0, 0),
                PhysicalNetwork::FullMesh { .. } => (1, h as u64, 0),
                PhysicalNetwork::Tree(t) => {
                    let u = &t.host_uplinks[h];
                    (u.switch as u64 + 2, u.capacity, u.load)
                }
            };
            let next = seen.len() as u32;
            *seen.entry((inst.cap[b], place)).or_insert(next)
        })
        .collect()
}

impl Search<'_> {
    /// The least every unplaced node must still add to the cut: its links
    /// to placed nodes, less what it can keep uncut. A node keeps at most
    /// its links to the one bin with room for it that it is best linked
    /// to; and a bin with room for `r` more nodes lets at most `r` of them
    /// keep their links there. Both bound what all can keep together.
    fn remaining(&mut self, from: usize) -> u64 {
        let bins = self.inst.bins();
        let mut total = 0u64;
        let mut best_each = 0u64;
        for &b in &self.used {
            self.column[b as usize].clear();
        }
        for &v in &self.order[from..] {
            total = total.saturating_add(self.tot[v]);
            let row = &self.conn[v * bins..(v + 1) * bins];
            match self.inst.fixed[v] {
                Some(b) => best_each = best_each.saturating_add(row[b as usize]),
                None => {
                    let mut best = 0;
                    for &b in &self.used {
                        let w = row[b as usize];
                        if w > 0 && self.fits(v, b as usize) {
                            best = best.max(w);
                            self.column[b as usize].push(w);
                        }
                    }
                    best_each = best_each.saturating_add(best);
                }
            }
        }
        // Pinned nodes keep what their bin gives them; the others share
        // the room of the bins in use.
        let pinned: u64 = self.order[from..]
            .iter()
            .filter_map(|&v| self.inst.fixed[v].map(|b| self.conn[v * bins + b as usize]))
            .sum();
        let mut by_room = pinned;
        for &b in &self.used {
            let room = (self.inst.cap[b as usize][0] - self.load[b as usize][0]) as usize;
            let col = &mut self.column[b as usize];
            if col.len() > room {
                col.select_nth_unstable_by(room, |a, b| b.cmp(a));
                col.truncate(room);
            }
            by_room = by_room.saturating_add(col.iter().sum::<u64>());
        }
        total - best_each.min(by_room).min(total)
    }

    /// Searches the placements of `order[i..]`; false if the budget ran out.
    fn go(&mut self, i: usize) -> bool {
        if i == self.order.len() {
            if self.cut < self.best_cut {
                self.best_cut = self.cut;
                self.best = Some(self.bin.clone());
            }
            return true;
        }
        let least = self.cut.saturating_add(self.remaining(i));
        if least >= self.best_cut || self.cut_limit.is_some_and(|limit| least > limit) {
            return true;
        }
        let v = self.order[i];
        let bins = self.inst.bins();
        let candidates: Vec<u32> = match self.inst.fixed[v] {
            Some(b) => vec![b],
            None => {
                // Hosts already used, best connected first; then one empty
                // host of each class.
                let mut used = self.used.clone();
                used.sort_by_key(|&b| std::cmp::Reverse(self.conn[v * bins + b as usize]));
                let mut opened = Vec::new();
                for b in 0..bins as u32 {
                    if self.count[b as usize] == 0 && !opened.contains(&self.class[b as usize]) {
                        opened.push(self.class[b as usize]);
                        used.push(b);
                    }
                }
                used
            }
        };
        for b in candidates {
            if !self.fits(v, b as usize) {
                continue;
            }
            self.steps += 1;
            if self.steps > self.budget {
                return false;
            }
            let added = self.tot[v] - self.conn[v * bins + b as usize];
            if self.cut.saturating_add(added) >= self.best_cut {
                continue;
            }
            if self.place(v, b) {
                let complete = self.go(i + 1);
                self.unplace(v, b);
                if !complete {
                    return false;
                }
            } else {
                self.unplace(v, b);
            }
        }
        true
    }

    fn fits(&self, v: usize, b: usize) -> bool {
        le(add(self.load[b], self.inst.wt[v]), self.inst.cap[b])
            && self.inst.aa[v].iter().all(|g| !self.groups[b].contains(g))
    }

    /// Places `v` in `b`; false when that overloads the network.
    fn place(&mut self, v: usize, b: u32) -> bool {
        let bins = self.inst.bins();
        let bu = b as usize;
        self.cut += self.tot[v] - self.conn[v * bins + bu];
        self.bin[v] = b;
        self.load[bu] = add(self.load[bu], self.inst.wt[v]);
        self.count[bu] += 1;
        if self.count[bu] == 1 {
            self.used.push(b);
        }
        self.groups[bu].extend_from_slice(&self.inst.aa[v]);
        for (u, w) in self.inst.neighbors(v) {
            self.conn[u * bins + bu] += w;
            self.tot[u] += w;
            let ub = self.bin[u];
            if ub != u32::MAX && ub != b {
                if let Some(loads) = &mut self.loads {
                    loads.traffic(self.bin_host[bu], self.bin_host[ub as usize], w, true);
                }
            }
        }
        self.loads.as_ref().is_none_or(|l| l.overload == 0)
    }

    fn unplace(&mut self, v: usize, b: u32) {
        let bins = self.inst.bins();
        let bu = b as usize;
        for (u, w) in self.inst.neighbors(v) {
            self.conn[u * bins + bu] -= w;
            self.tot[u] -= w;
            let ub = self.bin[u];
            if ub != u32::MAX && ub != b {
                if let Some(loads) = &mut self.loads {
                    loads.traffic(self.bin_host[bu], self.bin_host[ub as usize], w, false);
                }
            }
        }
        let len = self.groups[bu].len() - self.inst.aa[v].len();
        self.groups[bu].truncate(len);
        self.count[bu] -= 1;
        if self.count[bu] == 0 {
            // Bins close in the reverse order they opened.
            self.used.retain(|&u| u != b);
        }
        self.load[bu] = crate::instance::sub(self.load[bu], self.inst.wt[v]);
        self.bin[v] = u32::MAX;
        self.cut -= self.tot[v] - self.conn[v * bins + bu];
    }
}

/// VIs larger than this get no bound: the minimum cut's time grows with
/// the square of the VMs, and the solve must stay fast.
pub const BOUND_MAX_NODES: usize = 500;

/// A lower bound on the cut of every placement of `inst` that fits the
/// hosts' capacities.
pub(crate) fn lower_bound(inst: &Instance) -> u64 {
    let n = inst.n();
    if n < 2 {
        return 0;
    }
    // Hosts the VI needs at least: per resource, its total over the
    // largest room any host has; and the largest anti-affinity group.
    let mut parts = 1u64;
    for d in 0..4 {
        let total: u64 = inst.wt.iter().map(|w| w[d]).fold(0, u64::saturating_add);
        let room = inst.cap.iter().map(|c| c[d]).max().unwrap_or(0);
        if total > 0 {
            parts = parts.max(if room == 0 {
                u64::MAX
            } else {
                total.div_ceil(room)
            });
        }
    }
    let mut sizes: HashMap<u32, u64> = HashMap::new();
    for groups in &inst.aa {
        for &g in groups {
            *sizes.entry(g).or_default() += 1;
        }
    }
    parts = parts.max(sizes.values().copied().max().unwrap_or(1));
    // Nodes pinned to different hosts: their links between are cut.
    let pinned_cut: u64 = (0..n)
        .flat_map(|v| inst.neighbors(v).map(move |(u, w)| (v, u, w)))
        .filter(|&(v, u, _)| v < u)
        .filter(|&(v, u, _)| matches!((inst.fixed[v], inst.fixed[u]), (Some(a), Some(b)) if a != b))
        .map(|(_, _, w)| w)
        .sum();
    if parts < 2 || parts == u64::MAX {
        return pinned_cut;
    }
    let lambda = min_cut(inst);
    pinned_cut.max((parts.min(n as u64).saturating_mul(lambda)).div_ceil(2))
}

/// The weight of a minimum cut of the graph (Stoer–Wagner); 0 when it is
/// not connected.
fn min_cut(inst: &Instance) -> u64 {
    let n = inst.n();
    // Merged vertices keep their adjacency in maps.
    let mut adj: Vec<HashMap<usize, u64>> = (0..n)
        .map(|v| {
            let mut m = HashMap::new();
            for (u, w) in inst.neighbors(v) {
                *m.entry(u).or_insert(0) += w;
            }
            m
        })
        .collect();
    let mut alive: Vec<usize> = (0..n).collect();
    let mut best = u64::MAX;
    while alive.len() > 1 {
        // Maximum adjacency order, with a binary heap of keys.
        let mut key: HashMap<usize, u64> = alive.iter().map(|&v| (v, 0)).collect();
        let mut heap = std::collections::BinaryHeap::new();
        for &v in &alive {
            heap.push((0u64, v));
        }
        let mut added = std::collections::HashSet::new();
        let (mut prev, mut last) = (usize::MAX, usize::MAX);
        let mut last_key = 0;
        while let Some((k, v)) = heap.pop() {
            if added.contains(&v) || key.get(&v) != Some(&k) {
                continue;
            }
            added.insert(v);
            prev = last;
            last = v;
            last_key = k;
            for (&u, &w) in &adj[v] {
                if !added.contains(&u) {
                    if let Some(ku) = key.get_mut(&u) {
                        *ku += w;
                        heap.push((*ku, u));
                    }
                }
            }
        }
        if added.len() < alive.len() {
            return 0;
        }
        best = best.min(last_key);
        // Merge `last` into `prev`.
        let merged: Vec<(usize, u64)> = adj[last].iter().map(|(&u, &w)| (u, w)).collect();
        for (u, w) in merged {
            adj[u].remove(&last);
            if u != prev {
                *adj[prev].entry(u).or_insert(0) += w;
                *adj[u].entry(prev).or_insert(0) += w;
            }
        }
        adj[last].clear();
        alive.retain(|&v| v != last);
    }
    if best == u64::MAX {
        0
    } else {
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Resources, VirtualGraph};

    fn instance(
        n: usize,
        edges: &[(usize, usize, u64)],
        k: u32,
    ) -> (Problem, Instance, Vec<usize>) {
        let mut g = VirtualGraph::with_nodes(n, Resources::ZERO);
        for &(a, b, w) in edges {
            g.link(a, b, w);
        }
        let p = Problem::groups(g, k, None);
        let (inst, bin_host) = Instance::from_problem(&p).unwrap();
        (p, inst, bin_host)
    }

    #[test]
    fn the_minimum_cut_of_small_graphs() {
        // Two triangles of weight 5 joined by one link of 1.
        let edges = [
            (0, 1, 5),
            (1, 2, 5),
            (0, 2, 5),
            (3, 4, 5),
            (4, 5, 5),
            (3, 5, 5),
            (2, 3, 1),
        ];
        let (_, inst, _) = instance(6, &edges, 3);
        assert_eq!(min_cut(&inst), 1);
        // A cycle of 4: two links.
        let (_, inst, _) = instance(4, &[(0, 1, 3), (1, 2, 3), (2, 3, 3), (3, 0, 3)], 2);
        assert_eq!(min_cut(&inst), 6);
        // Not connected.
        let (_, inst, _) = instance(4, &[(0, 1, 3), (2, 3, 3)], 2);
        assert_eq!(min_cut(&inst), 0);
    }

    #[test]
    fn two_triangles_on_hosts_of_three_are_proven() {
        let edges = [
            (0, 1, 5),
            (1, 2, 5),
            (0, 2, 5),
            (3, 4, 5),
            (4, 5, 5),
            (3, 5, 5),
            (2, 3, 1),
        ];
        let (p, inst, bin_host) = instance(6, &edges, 3);
        let router = Router::new(&p).unwrap();
        let out = search(&inst, &p, &router, &bin_host, None, true, EXACT_STEPS);
        assert!(out.complete);
        let bins = out.bins.unwrap();
        assert_eq!(bins[0], bins[1]);
        assert_eq!(bins[1], bins[2]);
        assert_eq!(bins[3], bins[4]);
        assert_ne!(bins[2], bins[3]);
        // Nothing below a cut of 1 exists: asked for better, it finds none.
        let out = search(&inst, &p, &router, &bin_host, Some(1), true, EXACT_STEPS);
        assert_eq!(
            out,
            Outcome {
                bins: None,
                complete: true
            }
        );
        // Six VMs that need two hosts, with a minimum cut of 1: bound 1.
        assert_eq!(lower_bound(&inst), 1);
    }

    /// Hosts filled to the brim: 30 GiB of RAM in 3 hosts of 10. First fit
    /// decreasing fails (5+5, 4+4, 3+3+3, and a 3 left over); the search
    /// finds (5, 5), (4, 3, 3), (4, 3, 3), and so does `solve`.
    #[test]
    fn a_brim_full_packing_is_found() {
        use crate::model::{Constraints, Host, Inventory};
        let ram = [5u64, 5, 4, 4, 3, 3, 3, 3];
        let mut g = VirtualGraph::with_nodes(ram.len(), Resources::ZERO);
        for (v, &r) in ram.iter().enumerate() {
            g.nodes[v].demand.ram_mib = r;
        }
        g.link(0, 2, 10);
        let hosts = (0..3)
            .map(|i| Host {
                capacity: Resources {
                    vcpu: 64,
                    ram_mib: 10,
                    disk_gib: 100,
                },
                ..Host::slots(format!("h{i}"), 8)
            })
            .collect();
        let p = Problem {
            graph: g,
            inventory: Inventory { hosts },
            network: PhysicalNetwork::Unlimited,
            constraints: Constraints::default(),
        };
        let (inst, bin_host) = Instance::from_problem(&p).unwrap();
        let router = Router::new(&p).unwrap();
        let out = search(&inst, &p, &router, &bin_host, None, false, EXACT_STEPS);
        assert!(out.complete);
        let bins = out.bins.unwrap();
        for b in 0..3u32 {
            let used: u64 = (0..ram.len())
                .filter(|&v| bins[v] == b)
                .map(|v| ram[v])
                .sum();
            assert!(used <= 10, "{bins:?}");
        }
        let s = crate::solve(&p, &crate::Options::default()).unwrap();
        assert!(s.optimal);
        assert_eq!(
            s.placement.cut, 10,
            "5 and 4 cannot share a host of 10 with the rest"
        );
    }

    /// On every small instance, a solution called optimal has the cut an
    /// enumeration of every placement finds least, and the bound never
    /// exceeds it.
    #[test]
    fn optimal_means_what_enumeration_finds() {
        let mut rng = crate::Rng::new(7);
        for case in 0..300 {
            let n = 2 + rng.below(6);
            let k = 1 + rng.below(3) as u32;
            let mut edges = Vec::new();
            for a in 0..n {
                for b in a + 1..n {
                    if rng.below(3) == 0 {
                        edges.push((a, b, 1 + rng.below(20) as u64));
                    }
                }
            }
            let (p, _, _) = instance(n, &edges, k);
            let hosts = p.inventory.hosts.len();
            let mut least = u64::MAX;
            let mut assign = vec![0usize; n];
            loop {
                let fits =
                    (0..hosts).all(|h| assign.iter().filter(|&&x| x == h).count() <= k as usize);
                if fits {
                    let cut = edges
                        .iter()
                        .filter(|&&(a, b, _)| assign[a] != assign[b])
                        .map(|&(_, _, w)| w)
                        .sum();
                    least = least.min(cut);
                }
                // Next assignment, as a number in base `hosts`.
                let mut i = 0;
                while i < n && assign[i] == hosts - 1 {
                    assign[i] = 0;
                    i += 1;
                }
                if i == n {
                    break;
                }
                assign[i] += 1;
            }
            let s = crate::solve(&p, &crate::Options::default()).unwrap();
            assert!(s.optimal, "case {case}");
            assert_eq!(
                s.placement.cut, least,
                "case {case}: {edges:?} in groups of {k}"
            );
            assert_eq!(s.lower_bound, Some(least));
        }
    }
}
