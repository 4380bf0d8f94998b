//! Instance generators of the paper's experiments.

use neptune_placement::Rng;

/// Link bandwidth of the paper's instances.
pub(crate) const LINK_BW: u64 = 10;
/// Physical bandwidth between two hosts.
pub(crate) const PHYS_BW: u64 = 100;

/// The "arcs" family (Table 2): every node has `arcs` distinct random
/// out-neighbours, each arc of bandwidth 10; so out-bandwidth is
/// `10 * arcs <= 90 % of 100` for `arcs <= 9`, and every node has at least
/// one connection. Arcs both ways between two nodes add up (20).
pub(crate) fn arcs(n: usize, arcs: usize, seed: u64) -> Vec<(usize, usize, u64)> {
    let mut r = Rng::new(seed);
    let arcs = arcs.min(n.saturating_sub(1));
    let mut out = Vec::with_capacity(n * arcs);
    let mut pick: Vec<usize> = Vec::with_capacity(arcs);
    for v in 0..n {
        pick.clear();
        while pick.len() < arcs {
            let u = r.below(n);
            if u != v && !pick.contains(&u) {
                pick.push(u);
            }
        }
        debug_assert!(pick.len() as u64 * LINK_BW <= PHYS_BW * 9 / 10 || arcs > 9);
        out.extend(pick.iter().map(|&u| (v, u, LINK_BW)));
    }
    out
}

/// The "density" family (Fig. 6): each of the n x n off-diagonal entries is
/// an arc with probability 2 %, bandwidth 10; a node left without any
/// connection gets one random arc.
pub(crate) fn density(n: usize, seed: u64) -> Vec<(usize, usize, u64)> {
    let mut r = Rng::new(seed);
    let mut out = Vec::new();
    let mut touched = vec![false; n];
    for v in 0..n {
        for u in 0..n {
            if u != v && r.below(10_000) < 200 {
                out.push((v, u, LINK_BW));
                touched[v] = true;
                touched[u] = true;
            }
        }
    }
    for (v, &t) in touched.iter().enumerate() {
        if !t && n > 1 {
            let mut u = r.below(n);
            while u == v {
                u = r.below(n);
            }
            out.push((v, u, LINK_BW));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arcs_have_distinct_out_neighbours_and_bounded_out_bandwidth() {
        let e = arcs(50, 6, 3);
        assert_eq!(e.len(), 300);
        for v in 0..50 {
            let mut outs: Vec<usize> = e.iter().filter(|x| x.0 == v).map(|x| x.1).collect();
            assert_eq!(outs.len(), 6);
            assert!(!outs.contains(&v));
            outs.sort_unstable();
            outs.dedup();
            assert_eq!(outs.len(), 6);
            let out_bw: u64 = e.iter().filter(|x| x.0 == v).map(|x| x.2).sum();
            assert!(out_bw <= PHYS_BW * 9 / 10);
        }
    }

    #[test]
    fn density_is_about_two_percent_and_connects_every_node() {
        let n = 400;
        let e = density(n, 1);
        let frac = e.len() as f64 / (n * (n - 1)) as f64;
        assert!((0.017..0.023).contains(&frac), "{frac}");
        let mut seen = vec![false; n];
        for &(a, b, _) in &e {
            seen[a] = true;
            seen[b] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
