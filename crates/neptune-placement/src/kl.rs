//! Kernighan–Lin: the two-way swap pass between two hosts, and the paper's
//! solver built from it (random initial solutions, pairwise passes until no
//! pass gains, restarts, best returned).

use crate::error::PlacementError;
use crate::instance::{add, le, sub, Instance, State, DIMS, NONE};
use crate::rng::Rng;

/// Reusable buffers for KL passes.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    local: Vec<u32>,
    nodes: Vec<u32>,
    m: Vec<i64>,
    side: Vec<u8>,
    locked: Vec<bool>,
    d: Vec<i64>,
    seq: Vec<(usize, usize)>,
    mark: Vec<u8>,
}

/// One Kernighan–Lin pass between bins `a` and `b`: tentatively swap the
/// best pair of unlocked nodes until none is left, then keep the prefix of
/// swaps with the largest positive total gain. Every prefix respects
/// capacity and anti-affinity. Returns the gain (cut reduction) applied.
pub(crate) fn kl_pair(
    inst: &Instance,
    st: &mut State,
    a: usize,
    b: usize,
    sc: &mut Scratch,
) -> u64 {
    if sc.local.len() < inst.n() {
        sc.local.resize(inst.n(), 0);
    }
    let Scratch {
        local,
        nodes,
        m,
        side,
        locked,
        d,
        seq,
        ..
    } = sc;
    nodes.clear();
    nodes.extend(st.members[a].iter().chain(st.members[b].iter()).copied());
    let na = st.members[a].len();
    let k = nodes.len();
    if na == 0 || na == k {
        return 0;
    }
    for (i, &v) in nodes.iter().enumerate() {
        local[v as usize] = i as u32 + 1;
    }
    m.clear();
    m.resize(k * k, 0);
    for (i, &v) in nodes.iter().enumerate() {
        for (u, w) in inst.neighbors(v as usize) {
            let j = local[u];
            if j > 0 {
                m[i * k + (j as usize - 1)] = w as i64;
            }
        }
    }
    for &v in nodes.iter() {
        local[v as usize] = 0;
    }
    side.clear();
    side.extend((0..k).map(|i| u8::from(i >= na)));
    locked.clear();
    locked.extend(nodes.iter().map(|&v| inst.fixed[v as usize].is_some()));
    d.clear();
    d.resize(k, 0);
    for i in 0..k {
        for j in 0..k {
            if i != j {
                d[i] += if side[i] == side[j] {
                    -m[i * k + j]
                } else {
                    m[i * k + j]
                };
            }
        }
    }
    let any_aa = nodes.iter().any(|&v| !inst.aa[v as usize].is_empty());
    let (mut la, mut lb) = (st.load[a], st.load[b]);
    seq.clear();
    let mut total = 0i64;
    let mut best = 0i64;
    let mut best_len = 0usize;
    loop {
        let mut pick: Option<(i64, usize, usize)> = None;
        for x in 0..k {
            if locked[x] || side[x] != 0 {
                continue;
            }
            let vx = nodes[x] as usize;
            for y in 0..k {
                if locked[y] || side[y] != 1 {
                    continue;
                }
                let g = d[x] + d[y] - 2 * m[x * k + y];
                if pick.is_some_and(|p| p.0 >= g) {
                    continue;
                }
                let vy = nodes[y] as usize;
                let na_load = add(sub(la, inst.wt[vx]), inst.wt[vy]);
                let nb_load = add(sub(lb, inst.wt[vy]), inst.wt[vx]);
                if !le(na_load, inst.cap[a]) || !le(nb_load, inst.cap[b]) {
                    continue;
                }
                if any_aa && !aa_ok(inst, nodes, side, x, y) {
                    continue;
                }
                pick = Some((g, x, y));
            }
        }
        let Some((g, x, y)) = pick else { break };
        let (vx, vy) = (nodes[x] as usize, nodes[y] as usize);
        la = add(sub(la, inst.wt[vx]), inst.wt[vy]);
        lb = add(sub(lb, inst.wt[vy]), inst.wt[vx]);
        locked[x] = true;
        locked[y] = true;
        for i in 0..k {
            if locked[i] {
                continue;
            }
            let (mx, my) = (m[i * k + x], m[i * k + y]);
            if side[i] == 0 {
                d[i] += 2 * mx - 2 * my;
            } else {
                d[i] += 2 * my - 2 * mx;
            }
        }
        side[x] = 1;
        side[y] = 0;
        seq.push((vx, vy));
        total += g;
        if total > best {
            best = total;
            best_len = seq.len();
        }
    }
    for &(vx, vy) in &seq[..best_len] {
        st.remove(inst, vx);
        st.remove(inst, vy);
        st.insert(inst, vx, b);
        st.insert(inst, vy, a);
    }
    best.max(0) as u64
}

/// Anti-affinity after tentatively swapping `x` (side 0) and `y` (side 1).
fn aa_ok(inst: &Instance, nodes: &[u32], side: &[u8], x: usize, y: usize) -> bool {
    let clash = |v: usize, target: u8, except: usize| {
        let gv = &inst.aa[nodes[v] as usize];
        !gv.is_empty()
            && (0..nodes.len()).any(|i| {
                i != v
                    && i != except
                    && side[i] == target
                    && inst.aa[nodes[i] as usize].iter().any(|g| gv.contains(g))
            })
    };
    !clash(x, 1, y) && !clash(y, 0, x)
}

/// Pairs of bins joined by at least one edge, sorted.
pub(crate) fn adjacent_bin_pairs(inst: &Instance, st: &State) -> Vec<(u32, u32)> {
    let mut pairs = Vec::new();
    for v in 0..inst.n() {
        let bv = st.bin[v];
        for (u, _) in inst.neighbors(v) {
            let bu = st.bin[u];
            if u > v && bu != bv {
                pairs.push((bv.min(bu), bv.max(bu)));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Repeats KL passes over all pairs of adjacent bins until a full sweep gains
/// nothing (or `max_sweeps`). A pass between two bins depends only on their
/// members, so after the first sweep only pairs with a bin changed in the
/// previous sweep are passed again: the result is the same as passing every
/// pair, at a fraction of the cost. Returns the total gain.
pub(crate) fn kl_sweeps(
    inst: &Instance,
    st: &mut State,
    sc: &mut Scratch,
    max_sweeps: usize,
    only: Option<Vec<u32>>,
) -> u64 {
    const CHANGED: u8 = 1;
    const NEXT: u8 = 2;
    let nb = inst.bins();
    if sc.mark.len() < nb {
        sc.mark.resize(nb, 0);
    }
    let first_all = only.is_none();
    let mut changed: Vec<u32> = only.unwrap_or_else(|| (0..nb as u32).collect());
    changed.retain(|&a| {
        let fresh = sc.mark[a as usize] & CHANGED == 0;
        sc.mark[a as usize] |= CHANGED;
        fresh
    });
    let mut next: Vec<u32> = Vec::new();
    let mut gained = 0u64;
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for round in 0..max_sweeps {
        let mut sweep = 0u64;
        if round == 0 && first_all {
            pairs = adjacent_bin_pairs(inst, st);
        } else {
            pairs.clear();
            for &a in &changed {
                for &v in &st.members[a as usize] {
                    for (u, _) in inst.neighbors(v as usize) {
                        let b = st.bin[u];
                        if b != a {
                            pairs.push((a.min(b), a.max(b)));
                        }
                    }
                }
            }
            pairs.sort_unstable();
            pairs.dedup();
        }
        for &(a, b) in &pairs {
            let (a, b) = (a as usize, b as usize);
            if sc.mark[a] & CHANGED == 0 && sc.mark[b] & CHANGED == 0 {
                continue;
            }
            let g = kl_pair(inst, st, a, b, sc);
            if g > 0 {
                for x in [a, b] {
                    if sc.mark[x] & NEXT == 0 {
                        sc.mark[x] |= NEXT;
                        next.push(x as u32);
                    }
                }
                sweep += g;
            }
        }
        gained += sweep;
        for &a in &changed {
            sc.mark[a as usize] &= !CHANGED;
        }
        if sweep == 0 {
            break;
        }
        for &a in &next {
            sc.mark[a as usize] = CHANGED;
        }
        std::mem::swap(&mut changed, &mut next);
        next.clear();
    }
    for &a in changed.iter().chain(next.iter()) {
        sc.mark[a as usize] = 0;
    }
    gained
}

/// A random initial solution: pinned nodes first, then the others in random
/// order, each on the first bin that fits, scanning from a random bin.
pub(crate) fn random_initial(inst: &Instance, rng: &mut Rng) -> Result<State, PlacementError> {
    let mut st = State::empty(inst);
    let nb = inst.bins();
    let mut order: Vec<usize> = (0..inst.n()).collect();
    rng.shuffle(&mut order);
    order.sort_by_key(|&v| inst.fixed[v].is_none());
    for v in order {
        let start = rng.below(nb);
        let found = (0..nb)
            .map(|i| (start + i) % nb)
            .find(|&b| st.fits(inst, v, b, None));
        match found {
            Some(b) => st.insert(inst, v, b),
            None => return Err(blocked(inst, &st, v)),
        }
    }
    Ok(st)
}

/// The reason node `v` fits no bin in state `st`.
pub(crate) fn blocked(inst: &Instance, st: &State, v: usize) -> PlacementError {
    let mut worst = [0usize; 4];
    for b in 0..inst.bins() {
        let after = add(st.load[b], inst.wt[v]);
        for d in 0..4 {
            if after[d] > inst.cap[b][d] {
                worst[d] += 1;
            }
        }
    }
    let d = (0..4).max_by_key(|&d| (worst[d], 4 - d)).unwrap_or(0);
    let free: u64 = (0..inst.bins())
        .map(|b| inst.cap[b][d].saturating_sub(st.load[b][d]))
        .max()
        .unwrap_or(0);
    if worst[d] == 0 {
        return PlacementError::NothingFits {
            resource: crate::error::Resource::DistinctHosts,
            location: format!("every host, for node #{v} (anti-affinity or pin)"),
            need: 1,
            available: 0,
        };
    }
    PlacementError::NothingFits {
        resource: DIMS[d],
        location: format!(
            "{} of {} hosts after packing, for node #{v}",
            worst[d],
            inst.bins()
        ),
        need: inst.wt[v][d],
        available: free,
    }
}

/// What the faithful KL records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KlTrace {
    /// Cut of the solution each restart ended with, in order.
    pub restart_costs: Vec<u64>,
    /// The 1-based restart (the paper's i*) that first found the best cut.
    pub best_iteration: usize,
}

/// The paper's solver: `restarts` random initial solutions, each improved by
/// pairwise KL passes until no pass gains; the cheapest is returned.
pub(crate) fn solve(
    inst: &Instance,
    rng: &mut Rng,
    restarts: usize,
) -> Result<(State, KlTrace), PlacementError> {
    let mut sc = Scratch::default();
    let mut best: Option<(u64, State)> = None;
    let mut costs = Vec::new();
    let mut best_iteration = 1;
    for i in 0..restarts.max(1) {
        let mut st = random_initial(inst, rng)?;
        kl_sweeps(inst, &mut st, &mut sc, usize::MAX, None);
        let c = st.cut(inst);
        costs.push(c);
        if best.as_ref().is_none_or(|(bc, _)| c < *bc) {
            best = Some((c, st));
            best_iteration = i + 1;
        }
    }
    debug_assert!(best
        .as_ref()
        .is_some_and(|(_, s)| s.bin.iter().all(|&b| b != NONE)));
    match best {
        Some((_, st)) => Ok((
            st,
            KlTrace {
                restart_costs: costs,
                best_iteration,
            },
        )),
        None => Err(PlacementError::Invalid("no restart ran".to_owned())),
    }
}
