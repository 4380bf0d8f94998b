//! The production solver: multilevel coarsening (heavy-edge matching under
//! the host capacity), greedy graph growing onto hosts at the coarsest level,
//! and, on the way back, refinement by gain-driven moves and swaps plus
//! Kernighan–Lin pair passes, all under exact capacity; then admissibility
//! repair on the physical network. Several V-cycles from different seeds,
//! the best kept (admissible first, then the smallest cut).
//!
//! After each V-cycle, simulated annealing on moves and swaps at the finest
//! level. With hosts of a few VMs each the partition has many tiny blocks
//! that are all nearly full, so almost every improvement is an exchange;
//! KL pair passes find them, but a pass costs the square of two hosts'
//! members for every adjacent host pair, while an annealing step costs a
//! few adjacency lists. Measured on the benchmark's instances, annealing
//! reaches a given cut 5-50x sooner than iterated KL, so the default
//! ([`Effort::Fast`](crate::Effort)) anneals after a lightly refined
//! V-cycle; [`Effort::High`](crate::Effort) adds the full KL refinement,
//! iterated V-cycles and iterated local search of the original design.

use crate::error::PlacementError;
use crate::instance::{add, le, Instance, State, NONE, W};
use crate::kl::{self, Scratch};
use crate::network::{Loads, Router};
use crate::rng::Rng;

/// One coarsening step: matches nodes by heavy edges, never merging pinned
/// or anti-affine nodes, never beyond what one host can take.
/// Returns the coarse instance and the fine -> coarse map.
fn coarsen(
    inst: &Instance,
    rng: &mut Rng,
    classes: &[W],
    part: Option<&[u32]>,
) -> (Instance, Vec<u32>) {
    let n = inst.n();
    let mut mate = vec![NONE; n];
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    // Pinned and anti-affine nodes are never matched: marked as their own
    // mates up front, so the loop below reads one array per neighbour.
    for v in 0..n {
        if inst.fixed[v].is_some() || !inst.aa[v].is_empty() {
            mate[v] = v as u32;
        }
    }
    for &v in &order {
        if mate[v] != NONE {
            continue;
        }
        // Heaviest link per unit of the two ends' sizes: w / (s_v s_u),
        // compared as w_a s_b > w_b s_a (the same order, without dividing).
        let mut best: Option<(u64, u64, usize)> = None;
        for (u, w) in inst.neighbors(v) {
            if mate[u] != NONE || u == v || part.is_some_and(|p| p[u] != p[v]) {
                continue;
            }
            let sum = add(inst.wt[v], inst.wt[u]);
            if !classes.iter().any(|c| le(sum, *c)) {
                continue;
            }
            let size = inst.wt[u][0].max(1);
            if best.is_none_or(|(bw, bs, _)| {
                u128::from(w) * u128::from(bs) > u128::from(bw) * u128::from(size)
            }) {
                best = Some((w, size, u));
            }
        }
        if let Some((_, _, u)) = best {
            mate[v] = u as u32;
            mate[u] = v as u32;
        }
    }
    for v in 0..n {
        if mate[v] == v as u32 {
            mate[v] = NONE;
        }
    }
    let mut cmap = vec![NONE; n];
    let mut wt = Vec::new();
    let mut fixed = Vec::new();
    let mut aa = Vec::new();
    // The fine nodes of each coarse node, in order.
    let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(n);
    for v in 0..n {
        if cmap[v] != NONE {
            continue;
        }
        let c = wt.len() as u32;
        cmap[v] = c;
        let mut w = inst.wt[v];
        if mate[v] != NONE {
            let u = mate[v] as usize;
            cmap[u] = c;
            w = add(w, inst.wt[u]);
        }
        pairs.push((v as u32, mate[v]));
        wt.push(w);
        fixed.push(inst.fixed[v]);
        aa.push(inst.aa[v].clone());
    }
    // The coarse adjacency straight from the fine one: each coarse node's
    // links are its fine nodes' links, renamed, merged per neighbour
    // through `slot` (building an edge list and a CSR from it took as long
    // as the matching).
    let nc = wt.len();
    let mut xadj = Vec::with_capacity(nc + 1);
    xadj.push(0usize);
    let mut adj: Vec<u32> = Vec::with_capacity(inst.adj.len());
    let mut ew: Vec<u64> = Vec::with_capacity(inst.adj.len());
    let mut slot = vec![usize::MAX; nc];
    for (c, &(v, m)) in pairs.iter().enumerate() {
        let start = adj.len();
        for x in [v, m] {
            if x == NONE {
                continue;
            }
            for (u, w) in inst.neighbors(x as usize) {
                let cu = cmap[u];
                if cu as usize == c {
                    continue;
                }
                let i = slot[cu as usize];
                if i != usize::MAX && i >= start {
                    ew[i] = ew[i].saturating_add(w);
                } else {
                    slot[cu as usize] = adj.len();
                    adj.push(cu);
                    ew.push(w);
                }
            }
        }
        xadj.push(adj.len());
    }
    let coarse = Instance {
        xadj,
        adj,
        ew,
        wt,
        cap: inst.cap.clone(),
        fixed,
        aa,
    };
    (coarse, cmap)
}

/// Greedy graph growing: fills bins one after another with the unassigned
/// node most connected to the bin that still fits; then places leftovers
/// wherever they fit. Returns the nodes that fit nowhere.
fn grow(inst: &Instance, st: &mut State, rng: &mut Rng) -> Vec<usize> {
    let n = inst.n();
    for v in 0..n {
        if st.bin[v] == NONE {
            if let Some(b) = inst.fixed[v] {
                if st.fits(inst, v, b as usize, None) {
                    st.insert(inst, v, b as usize);
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&v| st.bin[v] == NONE).collect();
    rng.shuffle(&mut order);
    let mut bins: Vec<usize> = (0..inst.bins()).collect();
    rng.shuffle(&mut bins);
    let mut conn = vec![0u64; n];
    let mut front: Vec<usize> = Vec::new();
    let mut cursor = 0usize;
    for &b in &bins {
        // A full bin takes nobody: skip reading its members' links (on the
        // way up, where only a few nodes are left to place, that was a scan
        // of the whole graph for each level).
        if st.load[b][0] >= inst.cap[b][0] {
            continue;
        }
        front.clear();
        for &m in &st.members[b] {
            for (u, w) in inst.neighbors(m as usize) {
                if st.bin[u] == NONE {
                    if conn[u] == 0 {
                        front.push(u);
                    }
                    conn[u] += w.max(1);
                }
            }
        }
        loop {
            if st.load[b][0] >= inst.cap[b][0] {
                break;
            }
            let mut pick: Option<usize> = None;
            for &u in &front {
                if st.bin[u] == NONE
                    && conn[u] > 0
                    && pick.is_none_or(|p| conn[u] > conn[p])
                    && st.fits(inst, u, b, None)
                {
                    pick = Some(u);
                }
            }
            if pick.is_none() {
                while cursor < order.len() && st.bin[order[cursor]] != NONE {
                    cursor += 1;
                }
                pick = order[cursor.min(order.len())..]
                    .iter()
                    .take(64)
                    .copied()
                    .find(|&u| st.bin[u] == NONE && st.fits(inst, u, b, None));
            }
            let Some(v) = pick else { break };
            st.insert(inst, v, b);
            conn[v] = 0;
            for (u, w) in inst.neighbors(v) {
                if st.bin[u] == NONE {
                    if conn[u] == 0 {
                        front.push(u);
                    }
                    conn[u] += w.max(1);
                }
            }
        }
        for &u in &front {
            conn[u] = 0;
        }
    }
    let mut left = Vec::new();
    let mut bconn = vec![0u64; inst.bins()];
    // `open[s]`: bins before it have fewer than `s` slots left. Loads only
    // grow here, so they never get them back, and the search for any bin
    // that fits a node of `s` slots starts there: without this it is
    // quadratic when every host ends up full.
    let mut open: Vec<usize> = Vec::new();
    for &v in &order {
        if st.bin[v] != NONE {
            continue;
        }
        let mut touched = Vec::new();
        for (u, w) in inst.neighbors(v) {
            let b = st.bin[u];
            if b != NONE {
                if bconn[b as usize] == 0 {
                    touched.push(b as usize);
                }
                bconn[b as usize] += w.max(1);
            }
        }
        let mut pick = touched
            .iter()
            .copied()
            .filter(|&b| st.fits(inst, v, b, None))
            .max_by_key(|&b| (bconn[b], std::cmp::Reverse(b)));
        for &b in &touched {
            bconn[b] = 0;
        }
        if pick.is_none() {
            let s = (inst.wt[v][0] as usize).min(n);
            if open.len() <= s {
                open.resize(s + 1, 0);
            }
            let room = |b: usize| inst.cap[b][0].saturating_sub(st.load[b][0]);
            while open[s] < inst.bins() && room(open[s]) < s as u64 {
                open[s] += 1;
            }
            pick = (open[s]..inst.bins()).find(|&b| st.fits(inst, v, b, None));
        }
        match pick {
            Some(b) => st.insert(inst, v, b),
            None => left.push(v),
        }
    }
    left
}

/// One sweep of gain-driven moves (to a bin with room) and swaps (with a
/// node of a full bin), each applied only when it lowers the cut.
///
/// A swap of `v` (in `a`) with `u` (in `b`) is priced from `u`'s links
/// inside `b` (kept per node, as the annealing does) and its links to `a`,
/// summed from the adjacency of `a`'s few members: reading the adjacency of
/// every member of every candidate bin instead was most of the sweep's
/// time on large VIs (cache misses, one per member).
fn greedy_sweep<G: Adjacency>(
    inst: &Instance,
    g: &G,
    st: &mut State,
    rng: &mut Rng,
    conn: &mut [u64],
    changed: &mut [bool],
) -> u64 {
    let n = inst.n();
    let mut order: Vec<usize> = (0..n).filter(|&v| inst.fixed[v].is_none()).collect();
    rng.shuffle(&mut order);
    let mut own = own_weights(g, st);
    // Per node of a candidate bin: its links to `a`, and to `v` alone.
    let mut to_a = vec![0i64; n];
    let mut to_v = vec![0i64; n];
    let mut marked: Vec<usize> = Vec::new();
    let mut gained = 0u64;
    let mut touched: Vec<usize> = Vec::new();
    for v in order {
        let a = st.bin[v] as usize;
        touched.clear();
        for (u, w) in g.each(v) {
            let b = st.bin[u] as usize;
            if conn[b] == 0 {
                touched.push(b);
            }
            conn[b] += w;
        }
        let own_v = conn[a];
        let mut best_move: Option<(u64, usize)> = None;
        for &b in &touched {
            if b != a
                && conn[b] > own_v
                && best_move.is_none_or(|m| conn[b] - own_v > m.0)
                && st.fits(inst, v, b, None)
            {
                best_move = Some((conn[b] - own_v, b));
            }
        }
        if let Some((gain, b)) = best_move {
            changed[a] = true;
            changed[b] = true;
            shift_by(inst, g, st, &mut own, v, b);
            gained += gain;
        } else {
            let mut cands: Vec<usize> = touched.iter().copied().filter(|&b| b != a).collect();
            // The three best-connected hosts, in order (a selection, not a
            // full sort: this runs for most nodes of every sweep).
            let key = |&b: &usize| (std::cmp::Reverse(conn[b]), b);
            if cands.len() > 3 {
                cands.select_nth_unstable_by_key(2, key);
                cands.truncate(3);
            }
            cands.sort_unstable_by_key(key);
            for &x in &st.members[a] {
                let x = x as usize;
                for (y, w) in g.each(x) {
                    if cands.contains(&(st.bin[y] as usize)) {
                        if to_a[y] == 0 && to_v[y] == 0 {
                            marked.push(y);
                        }
                        to_a[y] += w as i64;
                        if x == v {
                            to_v[y] += w as i64;
                        }
                    }
                }
            }
            let mut best_swap: Option<(i64, usize)> = None;
            for &b in &cands {
                for &u in &st.members[b] {
                    let u = u as usize;
                    if inst.fixed[u].is_some() {
                        continue;
                    }
                    let gain = conn[b] as i64 - own_v as i64 + to_a[u] - own[u] - 2 * to_v[u];
                    if gain > 0
                        && best_swap.is_none_or(|s| gain > s.0)
                        && st.fits(inst, v, b, Some(u))
                        && st.fits(inst, u, a, Some(v))
                    {
                        best_swap = Some((gain, u));
                    }
                }
            }
            for &y in &marked {
                to_a[y] = 0;
                to_v[y] = 0;
            }
            marked.clear();
            if let Some((gain, u)) = best_swap {
                let b = st.bin[u] as usize;
                changed[a] = true;
                changed[b] = true;
                shift_by(inst, g, st, &mut own, v, b);
                shift_by(inst, g, st, &mut own, u, a);
                gained += gain as u64;
            }
        }
        for &b in &touched {
            conn[b] = 0;
        }
    }
    gained
}

/// The weight of each node's links inside its own bin.
fn own_weights<G: Adjacency>(g: &G, st: &State) -> Vec<i64> {
    (0..st.bin.len())
        .map(|v| {
            g.each(v)
                .filter(|&(y, _)| st.bin[y] == st.bin[v])
                .map(|(_, w)| w as i64)
                .sum()
        })
        .collect()
}

/// Moves `v` to bin `b` (capacity unchecked) and updates `own`, the weight
/// of each node's links inside its own bin.
fn shift_by<G: Adjacency>(
    inst: &Instance,
    g: &G,
    st: &mut State,
    own: &mut [i64],
    v: usize,
    b: usize,
) {
    let a = st.bin[v];
    let mut vb = 0i64;
    for (y, w) in g.each(v) {
        let (by, w) = (st.bin[y], w as i64);
        if by == a {
            own[y] -= w;
        } else if by == b as u32 {
            own[y] += w;
            vb += w;
        }
    }
    own[v] = vb;
    st.relocate(inst, v, b);
}

/// Local search at one level: greedy sweeps, then KL pair passes, until
/// neither gains (or `rounds`).
fn refine(
    inst: &Instance,
    st: &mut State,
    rng: &mut Rng,
    sc: &mut Scratch,
    rounds: usize,
    kl_passes: usize,
    sweeps: usize,
) {
    let mut conn = vec![0u64; inst.bins()];
    for round in 0..rounds {
        let mut g = 0;
        let mut changed = vec![false; inst.bins()];
        for _ in 0..sweeps {
            let s = greedy_sweep(inst, inst, st, rng, &mut conn, &mut changed);
            g += s;
            if s == 0 {
                break;
            }
        }
        if kl_passes > 0 {
            let only = if round == 0 {
                None
            } else {
                Some(
                    (0..inst.bins() as u32)
                        .filter(|&b| changed[b as usize])
                        .collect(),
                )
            };
            g += kl::kl_sweeps(inst, st, sc, kl_passes, only);
        }
        if g == 0 {
            break;
        }
    }
}

/// Settings of the production solver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// V-cycles from scratch.
    pub(crate) cycles: usize,
    /// Whether a V-cycle from scratch coarsens. Without, it is the greedy
    /// growing at the finest level, then the refinement and annealing.
    pub(crate) coarsen: bool,
    /// Iterated V-cycles after each, at most (stopped when one does not improve).
    pub(crate) iterations: usize,
    /// Steps of iterated local search at the end of each cycle.
    pub(crate) ils_steps: usize,
    /// KL sweeps on coarse levels.
    pub(crate) coarse_kl: usize,
    /// KL sweeps at the finest and the coarsest level.
    pub(crate) fine_kl: usize,
    /// Refinement rounds per level, and greedy sweeps per round.
    pub(crate) rounds: usize,
    pub(crate) sweeps: usize,
    /// Annealing steps per node after each V-cycle, and the start
    /// temperature as a fraction of the mean link bandwidth.
    pub(crate) anneal: usize,
    pub(crate) anneal_hot: f64,
}

fn capacity_classes(inst: &Instance) -> Vec<W> {
    let mut classes: Vec<W> = inst.cap.clone();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() > 8 {
        let mut m = [0u64; 4];
        for c in &classes {
            for d in 0..4 {
                m[d] = m[d].max(c[d]);
            }
        }
        classes = vec![m];
    }
    classes
}

/// One V-cycle. From scratch (`start` = None): coarsen, grow at the coarsest
/// level, refine on the way back. Iterated (`start` = a complete state):
/// coarsen only inside the bins of `start`, so every level carries `start`,
/// and refine it on every level (moving whole clusters on coarse levels).
fn vcycle(
    inst: &Instance,
    rng: &mut Rng,
    sc: &mut Scratch,
    start: Option<&State>,
    settings: &Settings,
) -> Result<State, PlacementError> {
    let classes = capacity_classes(inst);
    // Coarse levels, each with the map from the level above it.
    let mut coarser: Vec<(Instance, Vec<u32>)> = Vec::new();
    let mut part: Option<Vec<u32>> = start.map(|s| s.bin.clone());
    loop {
        let cur = coarser.last().map_or(inst, |l| &l.0);
        if cur.n() <= 2 * inst.bins().max(8) || (start.is_none() && !settings.coarsen) {
            break;
        }
        let (coarse, cmap) = coarsen(cur, rng, &classes, part.as_deref());
        if coarse.n() as f64 > 0.95 * cur.n() as f64 {
            break;
        }
        if let Some(p) = &part {
            let mut cp = vec![NONE; coarse.n()];
            for (v, &c) in cmap.iter().enumerate() {
                cp[c as usize] = p[v];
            }
            part = Some(cp);
        }
        coarser.push((coarse, cmap));
    }
    // `levels[i]` is (the instance at level i, its map to level i + 1).
    let mut maps: Vec<Vec<u32>> = Vec::with_capacity(coarser.len());
    let mut insts: Vec<Instance> = Vec::with_capacity(coarser.len());
    for (c, m) in coarser {
        insts.push(c);
        maps.push(m);
    }
    let cur = insts.last().unwrap_or(inst);
    let level = |i: usize| if i == 0 { inst } else { &insts[i - 1] };
    let mut levels: Vec<(&Instance, Vec<u32>)> = maps
        .into_iter()
        .enumerate()
        .map(|(i, m)| (level(i), m))
        .collect();
    let mut st;
    let mut left = Vec::new();
    if let Some(p) = &part {
        st = State::from_bins(cur, p);
    } else {
        st = State::empty(cur);
        left = grow(cur, &mut st, rng);
        if !left.is_empty() && levels.is_empty() {
            return Err(kl::blocked(cur, &st, left[0]));
        }
    }
    if left.is_empty() {
        let passes = if levels.is_empty() {
            settings.fine_kl
        } else {
            settings.coarse_kl
        };
        refine(
            cur,
            &mut st,
            rng,
            sc,
            settings.rounds,
            passes,
            settings.sweeps,
        );
    }
    while let Some((fine, cmap)) = levels.pop() {
        let bins: Vec<u32> = cmap.iter().map(|&c| st.bin[c as usize]).collect();
        st = State::from_bins(fine, &bins);
        if !left.is_empty() {
            left = grow(fine, &mut st, rng);
            if !left.is_empty() && levels.is_empty() {
                return Err(kl::blocked(fine, &st, left[0]));
            }
        }
        if left.is_empty() {
            let passes = if levels.is_empty() {
                settings.fine_kl
            } else {
                settings.coarse_kl
            };
            refine(
                fine,
                &mut st,
                rng,
                sc,
                settings.rounds,
                passes,
                settings.sweeps,
            );
        }
    }
    Ok(st)
}

/// Simulated annealing at the finest level: `moves` steps, each taking a
/// node `v` to the host of a random neighbour, alone when it fits there,
/// else exchanged with the member of that host that looks best (priced by
/// its links inside that host and to `v`). Worse steps are taken with
/// probability `exp(-delta / T)`, T falling geometrically from `hot` to
/// 0.05 times the mean link bandwidth; the best state seen at the end of a
/// temperature stage is kept. Capacity, pins and anti-affinity are checked
/// by every step, so every state visited is feasible.
///
/// Then one greedy sweep: annealing only tries the host of a random
/// neighbour, the sweep every host a node touches (worth 0.1 % of cut on
/// the benchmark for a tenth of the time).
fn anneal(inst: &Instance, st: &mut State, rng: &mut Rng, moves: usize, hot: f64) {
    if inst.n() < 2 || inst.bins() < 2 || moves == 0 {
        return;
    }
    match Packed::tagged(inst) {
        Some(g) => anneal_and_sweep(inst, &g, st, rng, moves, hot),
        None => anneal_and_sweep(inst, &Packed::wide(inst), st, rng, moves, hot),
    }
}

fn anneal_and_sweep<E: Entry>(
    inst: &Instance,
    g: &Packed<E>,
    st: &mut State,
    rng: &mut Rng,
    moves: usize,
    hot: f64,
) {
    anneal_packed(inst, g, st, rng, moves, hot);
    let mut conn = vec![0u64; inst.bins()];
    let mut changed = vec![false; inst.bins()];
    greedy_sweep(inst, g, st, rng, &mut conn, &mut changed);
}

/// A graph's adjacency, as the instance or a packed copy of it holds it.
trait Adjacency {
    fn each(&self, v: usize) -> impl Iterator<Item = (usize, u64)> + '_;
}

impl Adjacency for Instance {
    fn each(&self, v: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.neighbors(v)
    }
}

impl<E: Entry> Adjacency for Packed<E> {
    fn each(&self, v: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.of(v).iter().map(|&e| (e.node(), self.w(e) as u64))
    }
}

/// Asks the CPU to bring `x`'s cache line closer, without waiting for it.
#[allow(unsafe_code, reason = "a prefetch hint reads nothing and cannot fault")]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has; it is
    // a hint that never faults, and `x` is a valid reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(x).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// One neighbour entry of the annealing's adjacency.
trait Entry: Copy {
    fn node(self) -> usize;
    fn weight(self, classes: &[i64; 256]) -> i64;
}

/// A neighbour below 2^24 and the index of its link's weight in a table of
/// at most 256: four bytes an entry. VIs use few distinct bandwidths, and
/// at this size a large VI's adjacency stays in a core's L2 cache.
#[derive(Clone, Copy)]
struct Tagged(u32);

impl Entry for Tagged {
    fn node(self) -> usize {
        (self.0 >> 8) as usize
    }
    fn weight(self, classes: &[i64; 256]) -> i64 {
        classes[(self.0 & 0xff) as usize]
    }
}

impl Entry for (u32, u64) {
    fn node(self) -> usize {
        self.0 as usize
    }
    fn weight(self, _: &[i64; 256]) -> i64 {
        self.1 as i64
    }
}

/// The graph as the annealing reads it: each node's neighbours and link
/// weights side by side, so a node's adjacency is one or two cache lines
/// instead of two arrays' worth. The annealing touches random nodes, and on
/// large VIs these misses were most of its time.
struct Packed<E> {
    xadj: Vec<usize>,
    nbr: Vec<E>,
    classes: Box<[i64; 256]>,
}

impl Packed<Tagged> {
    /// `None` when there are too many nodes or weights to tag.
    fn tagged(inst: &Instance) -> Option<Self> {
        if inst.n() >= 1 << 24 {
            return None;
        }
        let mut weights: Vec<u64> = Vec::new();
        let mut classes = Box::new([0i64; 256]);
        let mut nbr = Vec::with_capacity(inst.adj.len());
        let mut last = (u64::MAX, 0u32);
        for (&u, &w) in inst.adj.iter().zip(&inst.ew) {
            if w != last.0 {
                let class = match weights.iter().position(|&x| x == w) {
                    Some(c) => c,
                    None if weights.len() < 256 && i64::try_from(w).is_ok() => {
                        classes[weights.len()] = w as i64;
                        weights.push(w);
                        weights.len() - 1
                    }
                    None => return None,
                };
                last = (w, class as u32);
            }
            nbr.push(Tagged(u << 8 | last.1));
        }
        Some(Self {
            xadj: inst.xadj.clone(),
            nbr,
            classes,
        })
    }
}

impl Packed<(u32, u64)> {
    fn wide(inst: &Instance) -> Self {
        Self {
            xadj: inst.xadj.clone(),
            nbr: inst
                .adj
                .iter()
                .copied()
                .zip(inst.ew.iter().copied())
                .collect(),
            classes: Box::new([0; 256]),
        }
    }
}

impl<E: Entry> Packed<E> {
    fn of(&self, v: usize) -> &[E] {
        &self.nbr[self.xadj[v]..self.xadj[v + 1]]
    }

    fn w(&self, e: E) -> i64 {
        e.weight(&self.classes)
    }
}

fn anneal_packed<E: Entry>(
    inst: &Instance,
    g: &Packed<E>,
    st: &mut State,
    rng: &mut Rng,
    moves: usize,
    hot: f64,
) {
    const STAGES: usize = 64;
    let free: Vec<u32> = (0..inst.n())
        .filter(|&v| inst.fixed[v].is_none() && inst.xadj[v] < inst.xadj[v + 1])
        .map(|v| v as u32)
        .collect();
    if free.is_empty() {
        return;
    }
    // Two free nodes of equal demand without anti-affinity can always trade
    // places: then a swap needs no capacity check (the common case, and the
    // check is a fifth of the time otherwise).
    let plain = inst.aa.iter().all(Vec::is_empty) && inst.wt.iter().all(|w| *w == inst.wt[0]);
    // Then a bin's load is its member count times that demand, and whether
    // one more fits is a comparison of counts: no read of the bin's load
    // and capacity (two cache misses a step on large VIs).
    let most: Vec<usize> = if plain {
        inst.cap
            .iter()
            .map(|c| {
                (0..4)
                    .filter(|&d| inst.wt[0][d] > 0)
                    .map(|d| (c[d] / inst.wt[0][d]) as usize)
                    .min()
                    .unwrap_or(usize::MAX)
            })
            .collect()
    } else {
        Vec::new()
    };
    // Without pins the partner loop need not read each partner's pin.
    let pinned = inst.fixed.iter().any(Option::is_some);
    // Temperatures relative to the mean link bandwidth, so the schedule
    // does not depend on the unit: at the end a step that cuts a typical
    // link is taken with probability e^-20.
    let total: u64 = inst.ew.iter().fold(0u64, |a, &w| a.saturating_add(w));
    let mean = (total as f64 / inst.ew.len().max(1) as f64).max(1.0);
    let (t_hi, t_lo) = (hot * mean, 0.05 * mean);
    let cool = (t_lo / t_hi).powf(1.0 / (STAGES - 1) as f64);
    let per = moves.div_ceil(STAGES);
    let mut cut = st.cut(inst) as i64;
    let mut best_cut = cut;
    let mut best_bins: Option<Vec<u32>> = None;
    // Weight of each node's links inside its own host, kept up to date on
    // every accepted step. It prices a swap partner without reading the
    // partner's adjacency: on large VIs those reads were cache misses and
    // most of the annealing's time (one per member of the target host).
    let mut own = own_weights(g, st);
    // Neighbours of `v` on the target host, with the link weight.
    let max_deg = (0..inst.n())
        .map(|v| inst.xadj[v + 1] - inst.xadj[v])
        .max()
        .unwrap_or(0);
    let mut in_b: Vec<(u32, i64)> = vec![(0, 0); max_deg];
    // Per member of the target host, the bound of its swap with `v`.
    let mut bounds: Vec<i64> = Vec::new();
    let mut t = t_hi;
    // Each step draws the next step's node and loads the start of its
    // adjacency, so that cache miss overlaps this step's work.
    let mut next = free[rng.index(free.len())] as usize;
    for _ in 0..STAGES {
        let (limit, per_t) = (40.0 * t, 1.0 / t);
        for _ in 0..per {
            let v = next;
            next = free[rng.index(free.len())] as usize;
            prefetch(&g.nbr[g.xadj[next]]);
            let a = st.bin[v] as usize;
            let nv = g.of(v);
            let b = st.bin[nv[rng.index(nv.len())].node()] as usize;
            if a == b {
                continue;
            }
            let va = own[v];
            let mut vb = 0i64;
            // Without branches: whether a neighbour is on `b` is a coin
            // toss the branch predictor loses.
            let mut k = 0usize;
            for &e in nv {
                let (y, w) = (e.node(), g.w(e));
                let on_b = st.bin[y] as usize == b;
                vb += i64::from(on_b) * w;
                in_b[k] = (y as u32, w);
                k += usize::from(on_b);
            }
            let in_b = &in_b[..k];
            let mut pick: Option<(i64, Option<usize>)> = None;
            let alone = if plain {
                st.members[b].len() < most[b]
            } else {
                st.fits(inst, v, b, None)
            };
            if alone {
                pick = Some((va - vb, None));
            } else {
                // The partner: the member `u` of `b` whose swap costs least
                // when its links to `a` are left out (an upper bound of the
                // true change), then the true change for it alone.
                // Bounds by member position: each member's links inside
                // `b`, plus twice its links to `v` (`v`'s few neighbours on
                // `b`, added at their positions rather than looked up per
                // member).
                let mb = &st.members[b];
                bounds.clear();
                bounds.extend(mb.iter().map(|&u| own[u as usize]));
                for &(y, w) in in_b {
                    bounds[st.position(y as usize)] += 2 * w;
                }
                let mut best: Option<(i64, usize)> = None;
                if plain && !pinned {
                    // Anyone can trade places with `v`: the first least
                    // bound, chosen without branches (which one wins is
                    // a coin toss the branch predictor loses).
                    if let Some((&first, rest)) = bounds.split_first() {
                        let (mut at, mut least) = (0usize, first);
                        for (i, &x) in rest.iter().enumerate() {
                            let lower = x < least;
                            least = if lower { x } else { least };
                            at = if lower { i + 1 } else { at };
                        }
                        best = Some((least, mb[at] as usize));
                    }
                } else {
                    for (&u, &bound) in mb.iter().zip(bounds.iter()) {
                        let u = u as usize;
                        if pinned && inst.fixed[u].is_some() {
                            continue;
                        }
                        if best.is_none_or(|p| bound < p.0)
                            && (plain
                                || (st.fits(inst, v, b, Some(u)) && st.fits(inst, u, a, Some(v))))
                        {
                            best = Some((bound, u));
                        }
                    }
                }
                if let Some((bound, u)) = best {
                    // Without branches, as for `v` above.
                    let ua: i64 = g
                        .of(u)
                        .iter()
                        .map(|&e| i64::from(st.bin[e.node()] as usize == a) * g.w(e))
                        .sum();
                    pick = Some((va - vb + bound - ua, Some(u)));
                }
            }
            let Some((d, u)) = pick else { continue };
            // Beyond 40 temperatures the odds are below e^-40: no draw.
            if d > 0 && (d as f64 > limit || refused(d as f64 * per_t, rng.unit())) {
                continue;
            }
            shift_by(inst, g, st, &mut own, v, b);
            if let Some(u) = u {
                shift_by(inst, g, st, &mut own, u, a);
            }
            cut += d;
        }
        if cut < best_cut {
            best_cut = cut;
            best_bins = Some(st.bin.clone());
        }
        t *= cool;
    }
    if cut > best_cut {
        if let Some(bins) = best_bins {
            *st = State::from_bins(inst, &bins);
        }
    }
}

/// Whether a step that raises the cut by `x` > 0 temperatures is refused
/// for the uniform draw `r`, that is whether `r >= e^-x`. Nearly every such
/// step is refused, and `exp` was a seventh of the annealing's time: as
/// e^x >= 1 + x + x^2/2 + x^3/6, a draw at or above that bound's inverse is
/// refused without it. The margin keeps the answer exactly `exp`'s despite
/// rounding, so the search is the same, only cheaper.
fn refused(x: f64, r: f64) -> bool {
    let bound = 1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0)));
    r * bound >= 1.0 + 1e-9 || r >= (-x).exp()
}

/// Iterated local search at the finest level: a random swap between two
/// adjacent hosts, then KL passes over the host pairs it touched (and those
/// they touch in turn); kept when the cut does not grow, undone otherwise.
fn perturb_and_refine(
    inst: &Instance,
    st: &mut State,
    rng: &mut Rng,
    sc: &mut Scratch,
    steps: usize,
) {
    if inst.n() < 2 || inst.bins() < 2 {
        return;
    }
    for _ in 0..steps {
        let v = rng.below(inst.n());
        if inst.fixed[v].is_some() || inst.xadj[v] == inst.xadj[v + 1] {
            continue;
        }
        let deg = inst.xadj[v + 1] - inst.xadj[v];
        let x = inst.adj[inst.xadj[v] + rng.below(deg)] as usize;
        let (a, b) = (st.bin[v] as usize, st.bin[x] as usize);
        if a == b || st.members[b].is_empty() {
            continue;
        }
        let u = st.members[b][rng.below(st.members[b].len())] as usize;
        if inst.fixed[u].is_some() || !st.fits(inst, v, b, Some(u)) || !st.fits(inst, u, a, Some(v))
        {
            continue;
        }
        // Cut change of the swap.
        let mut delta = 0i64;
        for (y, w) in inst.neighbors(v) {
            if y == u {
                continue;
            }
            let by = st.bin[y] as usize;
            delta += w as i64 * (i64::from(by != b) - i64::from(by != a));
        }
        for (y, w) in inst.neighbors(u) {
            if y == v {
                continue;
            }
            let by = st.bin[y] as usize;
            delta += w as i64 * (i64::from(by != a) - i64::from(by != b));
        }
        st.log = Some(Vec::new());
        st.remove(inst, v);
        st.remove(inst, u);
        st.insert(inst, v, b);
        st.insert(inst, u, a);
        let gain = kl::kl_sweeps(inst, st, sc, 16, Some(vec![a as u32, b as u32])) as i64;
        let log = st.log.take().unwrap_or_default();
        if delta - gain > 0 {
            for &(y, from) in log.iter().rev() {
                st.relocate(inst, y as usize, from as usize);
            }
        }
    }
}

/// Moves and swaps that lower (overload, cut) lexicographically, focused on
/// nodes whose traffic crosses an overloaded physical link.
pub(crate) fn repair(
    inst: &Instance,
    st: &mut State,
    router: &Router<'_>,
    bin_host: &[usize],
    rng: &mut Rng,
    budget: usize,
    max_kicks: usize,
) {
    let mut loads = Loads::new(router);
    for v in 0..inst.n() {
        for (u, w) in inst.neighbors(v) {
            if u > v {
                let (a, b) = (bin_host[st.bin[v] as usize], bin_host[st.bin[u] as usize]);
                loads.traffic(a, b, w, true);
            }
        }
    }
    let mut route = Vec::new();
    let mut cut = st.cut(inst) as i64;
    let mut best = (loads.overload, cut, st.bin.clone());
    let mut kicks = 0usize;
    for _ in 0..budget {
        if loads.overload == 0 {
            return;
        }
        if (loads.overload, cut) < (best.0, best.1) {
            best = (loads.overload, cut, st.bin.clone());
        }
        // Nodes with traffic on an overloaded link.
        let mut hot: Vec<usize> = Vec::new();
        for v in 0..inst.n() {
            if inst.fixed[v].is_some() {
                continue;
            }
            let hv = bin_host[st.bin[v] as usize];
            let is_hot = inst.neighbors(v).any(|(u, _)| {
                let hu = bin_host[st.bin[u] as usize];
                router.route(hv, hu, &mut route);
                route.iter().any(|l| {
                    let (c, _) = router.capacity(*l);
                    loads.load.get(l).is_some_and(|x| *x > c)
                })
            });
            if is_hot {
                hot.push(v);
            }
        }
        rng.shuffle(&mut hot);
        let mut improved = false;
        'search: for &v in &hot {
            let a = st.bin[v] as usize;
            let mut targets: Vec<usize> = (0..inst.bins()).filter(|&b| b != a).collect();
            if targets.len() > 32 {
                rng.shuffle(&mut targets);
                targets.truncate(32);
            }
            for &b in &targets {
                let base = (loads.overload, cut);
                if st.fits(inst, v, b, None) {
                    let d = shift(inst, st, &mut loads, bin_host, v, b);
                    if (loads.overload, cut + d) < base {
                        cut += d;
                        improved = true;
                        break 'search;
                    }
                    shift(inst, st, &mut loads, bin_host, v, a);
                }
                let members: Vec<u32> = st.members[b].clone();
                for u in members {
                    let u = u as usize;
                    if inst.fixed[u].is_some()
                        || !st.fits(inst, v, b, Some(u))
                        || !st.fits(inst, u, a, Some(v))
                    {
                        continue;
                    }
                    let d1 = shift(inst, st, &mut loads, bin_host, v, b);
                    let d2 = shift(inst, st, &mut loads, bin_host, u, a);
                    if (loads.overload, cut + d1 + d2) < base {
                        cut += d1 + d2;
                        improved = true;
                        break 'search;
                    }
                    shift(inst, st, &mut loads, bin_host, u, b);
                    shift(inst, st, &mut loads, bin_host, v, a);
                }
            }
        }
        if !improved {
            // Stuck: kick with a random feasible swap of a hot node, go on.
            kicks += 1;
            if kicks > max_kicks || hot.is_empty() {
                break;
            }
            for _ in 0..16 {
                let v = hot[rng.below(hot.len())];
                let a = st.bin[v] as usize;
                let b = rng.below(inst.bins());
                if b == a {
                    continue;
                }
                if st.fits(inst, v, b, None) {
                    cut += shift(inst, st, &mut loads, bin_host, v, b);
                    break;
                }
                let Some(&u) = st.members[b].get(rng.below(st.members[b].len().max(1))) else {
                    continue;
                };
                let u = u as usize;
                if inst.fixed[u].is_none()
                    && st.fits(inst, v, b, Some(u))
                    && st.fits(inst, u, a, Some(v))
                {
                    cut += shift(inst, st, &mut loads, bin_host, v, b);
                    cut += shift(inst, st, &mut loads, bin_host, u, a);
                    break;
                }
            }
        }
    }
    if loads.overload == 0 || (loads.overload, cut) < (best.0, best.1) {
        return;
    }
    let restore = State::from_bins(inst, &best.2);
    *st = restore;
}

/// Moves `v` to bin `to` (capacity unchecked), updating link loads; returns
/// the change of the cut.
fn shift(
    inst: &Instance,
    st: &mut State,
    loads: &mut Loads<'_>,
    bin_host: &[usize],
    v: usize,
    to: usize,
) -> i64 {
    let from = st.bin[v] as usize;
    let (hf, ht) = (bin_host[from], bin_host[to]);
    let mut d = 0i64;
    for (u, w) in inst.neighbors(v) {
        let bu = st.bin[u] as usize;
        let hu = bin_host[bu];
        loads.traffic(hf, hu, w, false);
        loads.traffic(ht, hu, w, true);
        d += i64::from(bu != to) * w as i64 - i64::from(bu != from) * w as i64;
    }
    st.relocate(inst, v, to);
    d
}

/// What one cycle's search found.
enum Searched {
    /// A placement, before any repair.
    Placed(State),
    /// The V-cycle could not place every node.
    Blocked(PlacementError),
}

/// One cycle's search: a V-cycle from scratch, iterated V-cycles while
/// they improve, annealing, iterated local search.
fn search(
    inst: &Instance,
    r: &mut Rng,
    sc: &mut Scratch,
    settings: &Settings,
) -> Result<Searched, PlacementError> {
    let mut st = match vcycle(inst, r, sc, None, settings) {
        Ok(st) => st,
        Err(e) => return Ok(Searched::Blocked(e)),
    };
    let mut cut = st.cut(inst);
    for _ in 0..settings.iterations {
        let next = vcycle(inst, r, sc, Some(&st), settings)?;
        let c = next.cut(inst);
        if c >= cut {
            break;
        }
        st = next;
        cut = c;
    }
    if settings.anneal > 0 {
        anneal(
            inst,
            &mut st,
            r,
            settings.anneal.saturating_mul(inst.n()),
            settings.anneal_hot,
        );
    }
    perturb_and_refine(inst, &mut st, r, sc, settings.ils_steps);
    Ok(Searched::Placed(st))
}

/// Runs every cycle's search, on as many threads as there are cores and
/// cycles. Each cycle has its own generator, forked in cycle order, and the
/// results come back in cycle order: the same on any number of cores.
fn search_all(
    inst: &Instance,
    rngs: &mut [Rng],
    settings: &Settings,
    cores: usize,
) -> Vec<Result<Searched, PlacementError>> {
    let workers = cores.min(rngs.len()).max(1);
    let mut chunks: Vec<Vec<(usize, &mut Rng)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, r) in rngs.iter_mut().enumerate() {
        chunks[i % workers].push((i, r));
    }
    let run = |chunk: Vec<(usize, &mut Rng)>| {
        let mut sc = Scratch::default();
        chunk
            .into_iter()
            .map(|(i, r)| (i, search(inst, r, &mut sc, settings)))
            .collect::<Vec<_>>()
    };
    let mut chunks = chunks.into_iter();
    let first = chunks.next().unwrap_or_default();
    let mut done = std::thread::scope(|s| {
        let others: Vec<_> = chunks.map(|c| s.spawn(move || run(c))).collect();
        let mut done = run(first);
        for h in others {
            match h.join() {
                Ok(part) => done.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, res)| res).collect()
}

/// The production solver. Returns the best state found and the overload left.
pub(crate) fn solve(
    inst: &Instance,
    router: &Router<'_>,
    bin_host: &[usize],
    rng: &mut Rng,
    settings: Settings,
) -> Result<State, PlacementError> {
    let mut rngs: Vec<Rng> = (0..settings.cycles.max(1)).map(|_| rng.fork()).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let found = search_all(inst, &mut rngs, &settings, cores);
    let mut best: Option<((bool, u64), State)> = None;
    let mut repair_failed = false;
    let mut first_err = None;
    for (res, r) in found.into_iter().zip(rngs.iter_mut()) {
        let mut st = match res? {
            Searched::Placed(st) => st,
            Searched::Blocked(e) => {
                first_err.get_or_insert(e);
                continue;
            }
        };
        // Repair only when the cut-optimised placement overloads a link.
        // Once a repair has failed, later cycles try with a small budget
        // (no admissible placement may exist at all).
        let mut over = overload(inst, &st, router, bin_host);
        if over > 0 {
            let before = st.clone();
            let (budget, kicks) = if repair_failed {
                (inst.n() + 16, 10)
            } else {
                (4 * inst.n() + 16, 200)
            };
            repair(inst, &mut st, router, bin_host, r, budget, kicks);
            over = overload(inst, &st, router, bin_host);
            if over > 0 {
                // Not admissible either way: keep the smaller cut.
                repair_failed = true;
                st = before;
            }
        }
        let key = (over > 0, st.cut(inst));
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, st));
        }
    }
    match (best, first_err) {
        (Some((_, st)), _) => Ok(st),
        (None, Some(e)) => Err(e),
        (None, None) => Err(PlacementError::Invalid("no cycle ran".to_owned())),
    }
}

pub(crate) fn overload(
    inst: &Instance,
    st: &State,
    router: &Router<'_>,
    bin_host: &[usize],
) -> u64 {
    let host = |v: usize| bin_host[st.bin[v] as usize];
    if let Some(bandwidth) = router.mesh_bandwidth() {
        // Each bin is its own host, so the link of hosts (a, b) carries
        // exactly the traffic between bins a and b: summed per bin from
        // its members' links, in one array reset after each bin (this ran
        // after every solve, and a list of all crossing links was a twentieth
        // of a large one).
        let mut acc = vec![0u64; inst.bins()];
        let mut seen = vec![usize::MAX; inst.bins()];
        let mut touched = Vec::new();
        let mut over = 0u64;
        for a in 0..inst.bins() {
            for &v in &st.members[a] {
                for (u, w) in inst.neighbors(v as usize) {
                    let b = st.bin[u] as usize;
                    if b > a {
                        if seen[b] != a {
                            seen[b] = a;
                            touched.push(b);
                        }
                        acc[b] = acc[b].saturating_add(w);
                    }
                }
            }
            for &b in &touched {
                over = over.saturating_add(acc[b].saturating_sub(bandwidth));
                acc[b] = 0;
            }
            touched.clear();
        }
        return over;
    }
    let mut loads = Loads::new(router);
    for v in 0..inst.n() {
        for (u, w) in inst.neighbors(v) {
            if u > v {
                loads.traffic(host(v), host(u), w, true);
            }
        }
    }
    loads.overload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Problem, Resources, VirtualGraph};

    fn instance(n: usize, m: usize, k: u32, seed: u64) -> Instance {
        let mut r = Rng::new(seed);
        let mut g = VirtualGraph::with_nodes(n, Resources::ZERO);
        for _ in 0..m {
            let (a, b) = (r.below(n), r.below(n));
            g.link(a, b, 1 + r.below(9) as u64);
        }
        Instance::from_problem(&Problem::groups(g, k, None))
            .unwrap()
            .0
    }

    fn links(inst: &Instance) -> Vec<(usize, usize, u64)> {
        let mut out: Vec<_> = (0..inst.n())
            .flat_map(|v| inst.neighbors(v).map(move |(u, w)| (v, u, w)))
            .collect();
        out.sort_unstable();
        out
    }

    /// The coarse graph built straight from the fine adjacency is the
    /// quotient graph: for every pair of coarse nodes, the weight of the
    /// fine links between them, listed from both ends, no self-loops.
    #[test]
    fn coarsening_builds_the_quotient_graph() {
        for seed in 0..8 {
            let inst = instance(200, 600, 6, seed);
            let classes = capacity_classes(&inst);
            let (coarse, cmap) = coarsen(&inst, &mut Rng::new(seed), &classes, None);
            assert!(coarse.n() < inst.n());
            let mut want = std::collections::BTreeMap::new();
            for (v, u, w) in links(&inst) {
                let (cv, cu) = (cmap[v] as usize, cmap[u] as usize);
                if cv != cu {
                    *want.entry((cv, cu)).or_insert(0u64) += w;
                }
            }
            let want: Vec<_> = want.into_iter().map(|((a, b), w)| (a, b, w)).collect();
            assert_eq!(links(&coarse), want);
            for c in 0..coarse.n() {
                let members = cmap.iter().filter(|&&x| x as usize == c).count();
                assert_eq!(coarse.wt[c][0], members as u64);
            }
        }
    }

    /// The sweep prices swaps from each node's links inside its bin, kept
    /// up to date as it goes: what it reports gained is exactly what the
    /// cut lost, and it never breaks a capacity.
    #[test]
    fn a_sweep_gains_exactly_what_the_cut_loses() {
        for seed in 0..8 {
            let inst = instance(300, 900, 5, seed);
            let mut rng = Rng::new(seed);
            let mut st = State::empty(&inst);
            assert!(grow(&inst, &mut st, &mut rng).is_empty());
            let mut conn = vec![0u64; inst.bins()];
            let mut changed = vec![false; inst.bins()];
            let mut total = 0;
            for _ in 0..3 {
                let before = st.cut(&inst);
                let g = greedy_sweep(&inst, &inst, &mut st, &mut rng, &mut conn, &mut changed);
                assert_eq!(before - st.cut(&inst), g);
                total += g;
            }
            assert!(total > 0, "seed {seed}: the sweeps found nothing to gain");
            assert!((0..inst.bins()).all(|b| le(st.load[b], inst.cap[b])));
            // The same through the tagged copy the annealing reads.
            let g = Packed::tagged(&inst).unwrap();
            let before = st.cut(&inst);
            let gained = greedy_sweep(&inst, &g, &mut st, &mut rng, &mut conn, &mut changed);
            assert_eq!(before - st.cut(&inst), gained);
        }
    }

    /// Cycles searched on several threads give what they give on one:
    /// each has its own generator and the results come back in order.
    #[test]
    fn cycles_find_the_same_on_any_number_of_cores() {
        let inst = instance(120, 400, 5, 9);
        let settings = Settings {
            cycles: 5,
            coarsen: true,
            iterations: 1,
            ils_steps: 50,
            coarse_kl: 2,
            fine_kl: 4,
            rounds: 2,
            sweeps: 2,
            anneal: 20,
            anneal_hot: 0.3,
        };
        let run = |cores: usize| -> Vec<Vec<u32>> {
            let mut root = Rng::new(4);
            let mut rngs: Vec<Rng> = (0..settings.cycles).map(|_| root.fork()).collect();
            let found = search_all(&inst, &mut rngs, &settings, cores);
            let next: Vec<u64> = rngs.iter_mut().map(Rng::next_u64).collect();
            found
                .into_iter()
                .zip(next)
                .map(|(res, n)| match res {
                    Ok(Searched::Placed(st)) => {
                        let mut bins = st.bin.clone();
                        bins.push(n as u32);
                        bins
                    }
                    _ => Vec::new(),
                })
                .collect()
        };
        let one = run(1);
        assert!(one.iter().all(|b| !b.is_empty()));
        assert_ne!(one[0], one[1], "the cycles differ");
        assert_eq!(run(2), one);
        assert_eq!(run(3), one);
    }

    proptest::proptest! {
        /// The bound never changes an answer, even for draws right at e^-x
        /// and for steps of a tiny fraction of a temperature.
        #[test]
        fn refusal_is_exps_answer(x in 1e-12f64..40.0, r in 0f64..1.0, scale in 0u32..3) {
            let x = x / [1.0, 1e4, 1e9][scale as usize];
            let edge = (-x).exp();
            let around = [
                r,
                edge,
                f64::from_bits(edge.to_bits() - 1),
                f64::from_bits(edge.to_bits() + 1),
            ];
            for r in around.into_iter().filter(|r| (0.0..1.0).contains(r)) {
                proptest::prop_assert_eq!(refused(x, r), r >= edge, "x {} r {}", x, r);
            }
        }
    }

    #[test]
    fn tagged_adjacency_reads_as_the_instance() {
        let inst = instance(100, 400, 4, 3);
        let g = Packed::tagged(&inst).unwrap();
        for v in 0..inst.n() {
            assert!(g.each(v).eq(inst.neighbors(v)));
        }
        // More distinct weights than tags: no tagged copy.
        let mut wide = inst.clone();
        for (i, w) in wide.ew.iter_mut().enumerate() {
            *w = i as u64;
        }
        assert!(Packed::tagged(&wide).is_none());
        let g = Packed::wide(&wide);
        for v in 0..wide.n() {
            assert!(g.each(v).eq(wide.neighbors(v)));
        }
    }
}
