//! The solvers' internal form of a problem: a CSR graph with merged edge
//! weights, node weights in four dimensions (slot, vCPU, RAM, disk), one
//! bin per eligible host with its residual capacity, pins and anti-affinity.

use crate::error::{PlacementError, Resource};
use crate::model::{Problem, Resources};

/// slot, vcpu, ram, disk.
pub(crate) type W = [u64; 4];

pub(crate) const DIMS: [Resource; 4] = [
    Resource::VmSlots,
    Resource::Vcpu,
    Resource::RamMib,
    Resource::DiskGib,
];

pub(crate) fn add(a: W, b: W) -> W {
    [
        a[0].saturating_add(b[0]),
        a[1].saturating_add(b[1]),
        a[2].saturating_add(b[2]),
        a[3].saturating_add(b[3]),
    ]
}

pub(crate) fn sub(a: W, b: W) -> W {
    [
        a[0].saturating_sub(b[0]),
        a[1].saturating_sub(b[1]),
        a[2].saturating_sub(b[2]),
        a[3].saturating_sub(b[3]),
    ]
}

pub(crate) fn le(a: W, b: W) -> bool {
    a.iter().zip(b.iter()).all(|(x, y)| x <= y)
}

fn res(r: Resources, slots: u64) -> W {
    [slots, r.vcpu, r.ram_mib, r.disk_gib]
}

/// The graph and the bins at one level of the multilevel hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub(crate) xadj: Vec<usize>,
    pub(crate) adj: Vec<u32>,
    pub(crate) ew: Vec<u64>,
    pub(crate) wt: Vec<W>,
    pub(crate) cap: Vec<W>,
    /// Bin each node is pinned to.
    pub(crate) fixed: Vec<Option<u32>>,
    /// Anti-affinity groups of each node (usually empty).
    pub(crate) aa: Vec<Vec<u32>>,
}

impl Instance {
    pub(crate) fn n(&self) -> usize {
        self.wt.len()
    }

    pub(crate) fn bins(&self) -> usize {
        self.cap.len()
    }

    pub(crate) fn neighbors(&self, v: usize) -> impl Iterator<Item = (usize, u64)> + Clone + '_ {
        let r = self.xadj[v]..self.xadj[v + 1];
        self.adj[r.clone()]
            .iter()
            .zip(self.ew[r].iter())
            .map(|(&u, &w)| (u as usize, w))
    }

    /// CSR from an edge list; parallel edges merged, self-loops dropped.
    /// Entries are written where they belong and merged within each row in
    /// place, so the only memory beyond the result is one word per node
    /// (a copy of the list and a staging array were a twentieth of a fast
    /// solve, in page faults as much as in copying).
    pub(crate) fn csr(
        n: usize,
        edges: impl Iterator<Item = (usize, usize, u64)> + Clone,
    ) -> (Vec<usize>, Vec<u32>, Vec<u64>) {
        let mut xadj = vec![0usize; n + 1];
        for (a, b, _) in edges.clone() {
            if a != b {
                xadj[a + 1] += 1;
                xadj[b + 1] += 1;
            }
        }
        for v in 0..n {
            xadj[v + 1] += xadj[v];
        }
        let mut fill = xadj[..n].to_vec();
        let mut adj = vec![0u32; xadj[n]];
        let mut ew = vec![0u64; xadj[n]];
        for (a, b, w) in edges {
            if a != b {
                adj[fill[a]] = b as u32;
                ew[fill[a]] = w;
                fill[a] += 1;
                adj[fill[b]] = a as u32;
                ew[fill[b]] = w;
                fill[b] += 1;
            }
        }
        // Parallel edges are merged through `slot` (where each neighbour of
        // the current node landed), not by sorting each list: sorting was a
        // tenth of a fast solve. Neighbours keep their first-seen order.
        // Rows only shrink, so each is written at or before where it is read.
        let slot = &mut fill;
        slot.fill(usize::MAX);
        let mut out = 0usize;
        let mut start = 0usize;
        for v in 0..n {
            let (from, to) = (start, xadj[v + 1]);
            start = to;
            xadj[v] = out;
            let row_start = out;
            for i in from..to {
                let (u, w) = (adj[i], ew[i]);
                let j = slot[u as usize];
                if j != usize::MAX && j >= row_start {
                    ew[j] = ew[j].saturating_add(w);
                } else {
                    slot[u as usize] = out;
                    adj[out] = u;
                    ew[out] = w;
                    out += 1;
                }
            }
        }
        xadj[n] = out;
        adj.truncate(out);
        ew.truncate(out);
        (xadj, adj, ew)
    }

    /// Builds the instance; `bin_host[b]` is the inventory index of bin `b`.
    pub(crate) fn from_problem(p: &Problem) -> Result<(Self, Vec<usize>), PlacementError> {
        let n = p.graph.nodes.len();
        let hosts = &p.inventory.hosts;
        if let Some((i, l)) = p
            .graph
            .links
            .iter()
            .enumerate()
            .find(|(_, l)| l.a >= n || l.b >= n)
        {
            return Err(PlacementError::Invalid(format!(
                "link {i} joins nodes {} and {}, but the VI has {n} nodes",
                l.a, l.b
            )));
        }
        let (xadj, adj, ew) = Self::csr(n, p.graph.links.iter().map(|l| (l.a, l.b, l.bandwidth)));
        let mut bin_host = Vec::new();
        let mut host_bin = vec![None; hosts.len()];
        let mut cap = Vec::new();
        for (h, host) in hosts.iter().enumerate() {
            if let Some(dc) = &p.constraints.datacenter {
                if &host.datacenter != dc {
                    continue;
                }
            }
            host_bin[h] = Some(bin_host.len() as u32);
            bin_host.push(h);
            cap.push(sub(
                res(host.capacity, host.max_vms.into()),
                res(host.load, host.vms.into()),
            ));
        }
        if cap.is_empty() {
            return Err(PlacementError::NothingFits {
                resource: Resource::VmSlots,
                location: match &p.constraints.datacenter {
                    Some(dc) => format!("datacenter {dc} (no host)"),
                    None => "the inventory (no host)".to_owned(),
                },
                need: n as u64,
                available: 0,
            });
        }
        let mut fixed = vec![None; n];
        for &(v, h) in &p.constraints.pins {
            if v >= n || h >= hosts.len() {
                return Err(PlacementError::Invalid(format!(
                    "pin of node {v} to host {h}: no such node or host"
                )));
            }
            let Some(b) = host_bin[h] else {
                return Err(PlacementError::Invalid(format!(
                    "node {} is pinned to host {}, outside the datacenter",
                    p.graph.nodes[v].name, hosts[h].name
                )));
            };
            if fixed[v].is_some_and(|x| x != b) {
                return Err(PlacementError::Invalid(format!(
                    "node {} is pinned to two hosts",
                    p.graph.nodes[v].name
                )));
            }
            fixed[v] = Some(b);
        }
        let mut aa = vec![Vec::new(); n];
        for (g, members) in p.constraints.anti_affinity.iter().enumerate() {
            for &v in members {
                if v >= n {
                    return Err(PlacementError::Invalid(format!(
                        "anti-affinity group {g} names node {v}, but the VI has {n} nodes"
                    )));
                }
                if !aa[v].contains(&(g as u32)) {
                    aa[v].push(g as u32);
                }
            }
        }
        let wt = p.graph.nodes.iter().map(|x| res(x.demand, 1)).collect();
        let inst = Self {
            xadj,
            adj,
            ew,
            wt,
            cap,
            fixed,
            aa,
        };
        inst.precheck(p, &bin_host)?;
        Ok((inst, bin_host))
    }

    /// Reasons that make every placement impossible, found before searching.
    fn precheck(&self, p: &Problem, bin_host: &[usize]) -> Result<(), PlacementError> {
        let scope = match &p.constraints.datacenter {
            Some(dc) => format!("datacenter {dc}"),
            None => "the inventory".to_owned(),
        };
        // Each node must fit an empty host.
        for v in 0..self.n() {
            if self.cap.iter().any(|c| le(self.wt[v], *c)) {
                continue;
            }
            let d = (0..4)
                .find(|&d| self.cap.iter().all(|c| self.wt[v][d] > c[d]))
                .unwrap_or(0);
            let best = self.cap.iter().map(|c| c[d]).max().unwrap_or(0);
            return Err(PlacementError::NothingFits {
                resource: DIMS[d],
                location: format!("every host of {scope}, for node {}", p.graph.nodes[v].name),
                need: self.wt[v][d],
                available: best,
            });
        }
        // Totals.
        let need = self.wt.iter().fold([0; 4], |a, w| add(a, *w));
        let have = self.cap.iter().fold([0; 4], |a, w| add(a, *w));
        for d in 0..4 {
            if need[d] > have[d] {
                return Err(PlacementError::NothingFits {
                    resource: DIMS[d],
                    location: scope,
                    need: need[d],
                    available: have[d],
                });
            }
        }
        // Pins.
        let mut pinned = vec![[0u64; 4]; self.bins()];
        for v in 0..self.n() {
            if let Some(b) = self.fixed[v] {
                pinned[b as usize] = add(pinned[b as usize], self.wt[v]);
            }
        }
        for (b, load) in pinned.iter().enumerate() {
            for d in 0..4 {
                if load[d] > self.cap[b][d] {
                    return Err(PlacementError::NothingFits {
                        resource: DIMS[d],
                        location: format!(
                            "host {} (nodes pinned there)",
                            p.inventory.hosts[bin_host[b]].name
                        ),
                        need: load[d],
                        available: self.cap[b][d],
                    });
                }
            }
        }
        // Anti-affinity.
        for (g, members) in p.constraints.anti_affinity.iter().enumerate() {
            let mut m = members.clone();
            m.sort_unstable();
            m.dedup();
            if m.len() > self.bins() {
                return Err(PlacementError::NothingFits {
                    resource: Resource::DistinctHosts,
                    location: format!("{scope}, for anti-affinity group {g}"),
                    need: m.len() as u64,
                    available: self.bins() as u64,
                });
            }
        }
        Ok(())
    }
}

/// A partition of an instance's nodes into its bins, with loads and member
/// lists kept up to date.
#[derive(Debug, Clone)]
pub(crate) struct State {
    /// Bin of each node; `NONE` when not yet assigned.
    pub(crate) bin: Vec<u32>,
    pub(crate) load: Vec<W>,
    pub(crate) members: Vec<Vec<u32>>,
    pos: Vec<u32>,
    /// When recording: (node, bin it left), for undo.
    pub(crate) log: Option<Vec<(u32, u32)>>,
    /// Per bin, the anti-affinity groups present (sorted, with counts).
    aa_in: Vec<Vec<(u32, u32)>>,
}

pub(crate) const NONE: u32 = u32::MAX;

impl State {
    pub(crate) fn empty(inst: &Instance) -> Self {
        Self {
            bin: vec![NONE; inst.n()],
            load: vec![[0; 4]; inst.bins()],
            members: vec![Vec::new(); inst.bins()],
            pos: vec![0; inst.n()],
            aa_in: vec![Vec::new(); inst.bins()],
            log: None,
        }
    }

    /// Whether `v` could join bin `b` if `leaving` (in `b`) left it.
    pub(crate) fn fits(&self, inst: &Instance, v: usize, b: usize, leaving: Option<usize>) -> bool {
        if inst.fixed[v].is_some_and(|f| f as usize != b) {
            return false;
        }
        let base = match leaving {
            Some(u) => sub(self.load[b], inst.wt[u]),
            None => self.load[b],
        };
        if !le(add(base, inst.wt[v]), inst.cap[b]) {
            return false;
        }
        for g in &inst.aa[v] {
            if let Ok(i) = self.aa_in[b].binary_search_by_key(g, |e| e.0) {
                let mut count = self.aa_in[b][i].1;
                if let Some(u) = leaving {
                    if inst.aa[u].contains(g) {
                        count -= 1;
                    }
                }
                if count > 0 {
                    return false;
                }
            }
        }
        true
    }

    pub(crate) fn insert(&mut self, inst: &Instance, v: usize, b: usize) {
        self.bin[v] = b as u32;
        self.load[b] = add(self.load[b], inst.wt[v]);
        self.pos[v] = self.members[b].len() as u32;
        self.members[b].push(v as u32);
        for &g in &inst.aa[v] {
            match self.aa_in[b].binary_search_by_key(&g, |e| e.0) {
                Ok(i) => self.aa_in[b][i].1 += 1,
                Err(i) => self.aa_in[b].insert(i, (g, 1)),
            }
        }
    }

    pub(crate) fn remove(&mut self, inst: &Instance, v: usize) {
        let b = self.bin[v] as usize;
        if let Some(log) = &mut self.log {
            log.push((v as u32, b as u32));
        }
        self.load[b] = sub(self.load[b], inst.wt[v]);
        let p = self.pos[v] as usize;
        self.members[b].swap_remove(p);
        if let Some(&moved) = self.members[b].get(p) {
            self.pos[moved as usize] = p as u32;
        }
        for &g in &inst.aa[v] {
            if let Ok(i) = self.aa_in[b].binary_search_by_key(&g, |e| e.0) {
                self.aa_in[b][i].1 -= 1;
                if self.aa_in[b][i].1 == 0 {
                    self.aa_in[b].remove(i);
                }
            }
        }
        self.bin[v] = NONE;
    }

    /// Where `v` is in its bin's member list.
    pub(crate) fn position(&self, v: usize) -> usize {
        self.pos[v] as usize
    }

    pub(crate) fn relocate(&mut self, inst: &Instance, v: usize, b: usize) {
        self.remove(inst, v);
        self.insert(inst, v, b);
    }

    pub(crate) fn from_bins(inst: &Instance, bins: &[u32]) -> Self {
        let mut s = Self::empty(inst);
        for (v, &b) in bins.iter().enumerate() {
            if b != NONE {
                s.insert(inst, v, b as usize);
            }
        }
        s
    }

    pub(crate) fn cut(&self, inst: &Instance) -> u64 {
        let mut c = 0u64;
        for v in 0..inst.n() {
            for (u, w) in inst.neighbors(v) {
                if u > v && self.bin[u] != self.bin[v] {
                    c = c.saturating_add(w);
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Parallel edges merged into one link of their summed weight,
        /// self-loops dropped, each link listed from both ends, neighbours
        /// in the order they were first seen.
        #[test]
        fn csr_merges_parallel_edges_in_place(
            n in 1usize..20,
            raw in prop::collection::vec((0usize..20, 0usize..20, 0u64..50), 0..80),
        ) {
            let edges: Vec<_> = raw.into_iter().filter(|e| e.0 < n && e.1 < n).collect();
            let (xadj, adj, ew) = Instance::csr(n, edges.iter().copied());
            prop_assert_eq!(xadj.len(), n + 1);
            prop_assert_eq!(xadj[n], adj.len());
            prop_assert_eq!(adj.len(), ew.len());
            for v in 0..n {
                let mut want: Vec<(u32, u64)> = Vec::new();
                for &(a, b, w) in &edges {
                    let u = match (a == v, b == v) {
                        (true, false) => b,
                        (false, true) => a,
                        _ => continue,
                    };
                    match want.iter_mut().find(|e| e.0 == u as u32) {
                        Some(e) => e.1 += w,
                        None => want.push((u as u32, w)),
                    }
                }
                let got: Vec<(u32, u64)> = (xadj[v]..xadj[v + 1]).map(|i| (adj[i], ew[i])).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
