//! Neptune placement: map a whole Virtual Infrastructure (VI) onto physical
//! hosts. Pure: no I/O, no clock, randomness only from a caller's seed (same
//! input and seed, same placement).
//!
//! # Model
//!
//! - **VI graph** ([`VirtualGraph`]): VMs with vCPU / RAM / disk demands and
//!   point-to-point virtual links with a bandwidth. **A LAN is a star**
//!   ([`VirtualGraph::add_lan`]): one link of the LAN's bandwidth from its
//!   first member to every other. Each member of the shared segment sends at
//!   most the LAN's bandwidth, so the star's load on every host's uplink
//!   bounds the LAN's real traffic there, and grows with the members, not
//!   with their square as a clique's would; it keeps the graph a plain graph
//!   that every partitioner reads (METIS format).
//! - **Inventory** ([`Inventory`]): hosts with capacities, a VM-slot limit,
//!   a datacenter, and the load other VIs already put there (capacity minus
//!   load is what this VI may use).
//! - **Physical network** ([`PhysicalNetwork`]): unlimited; the paper's
//!   experiment model, a link of bandwidth B between every pair of hosts
//!   ([`PhysicalNetwork::FullMesh`]); or a tree of switches with host uplinks
//!   and switch links, each with a capacity and existing load.
//! - **Constraints** ([`Constraints`]): a datacenter, manual pins, anti-affinity.
//!
//! A placement ([`Placement`]) gives the host of every node, the load of every
//! physical link, the cut (bandwidth between hosts) and the **admissibility**
//! verdict: every physical link within its capacity. Host capacity (slots,
//! vCPU, RAM, disk), pins and anti-affinity are hard: no solver returns a
//! placement that breaks them; when nothing fits, [`PlacementError::NothingFits`]
//! names the resource and where it ran out. [`validate`] checks an admin's
//! manual map the same way and lists every violation.
//!
//! # Solvers
//!
//! The paper splits placement into partitioning and partition-to-host
//! mapping. Here both are one step: the parts *are* the hosts (each with its
//! own residual capacity), so the map needs no second stage and heterogeneous
//! hosts are handled exactly.
//!
//! - [`SolverKind::KernighanLin`], the paper's: a random initial solution,
//!   Kernighan–Lin two-way swap passes between every pair of adjacent hosts
//!   until a full sweep gains nothing; restarted (5 times in the paper) and the
//!   best returned, with each restart's cost and the restart `i*` that found it
//!   ([`KlTrace`]). Like the paper's, it does not search for admissibility.
//! - [`SolverKind::Multilevel`], the production solver: heavy-edge coarsening
//!   under the host capacity, greedy graph growing onto hosts, refinement by
//!   moves, swaps and KL pair passes on every level, simulated annealing on
//!   moves and swaps at the finest level, then admissibility repair (moves
//!   and swaps that lower the overload of the physical links); several
//!   V-cycles for small VIs, the best kept (admissible first, then smallest
//!   cut). [`Effort`] trades time for cut.

#![allow(
    clippy::needless_range_loop,
    reason = "graph code indexes several parallel arrays by node and bin"
)]

mod error;
mod eval;
pub mod exact;
mod instance;
mod kl;
pub mod metis;
mod model;
mod multilevel;
mod network;
mod rng;

pub use error::{PlacementError, Resource};
pub use eval::{evaluate, validate, LinkLoad, Placement, Violation};
pub use kl::KlTrace;
pub use model::{
    Constraints, Host, Inventory, PhysicalNetwork, Problem, Resources, Switch, TreeNetwork, Uplink,
    VirtualGraph, VirtualLink, VirtualNode,
};
pub use network::PhysicalLink;
pub use rng::Rng;

use serde::{Deserialize, Serialize};

/// Which solver to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SolverKind {
    /// The paper's Kernighan–Lin with random restarts.
    KernighanLin,
    /// The production multilevel solver.
    Multilevel,
}

/// How hard the production solver searches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effort {
    /// Greedy graph growing (beyond 20 000 nodes, a V-cycle without
    /// refinement on the way up; several, the best kept, for VIs of up to
    /// 256 nodes), then simulated annealing for a number of steps
    /// proportional to the VI's size. On the benchmark: a cut smaller than
    /// Mt-KaHyPar's in 0.65-0.91x Scotch's wall time and 0.38-0.75x its CPU
    /// time (bench/placement).
    #[default]
    Fast,
    /// Full KL refinement on every level, iterated V-cycles, several
    /// V-cycles up to 20 000 nodes, longer annealing and iterated local
    /// search after it: on the benchmark 30-90x the time of `Fast` for a
    /// cut 0.4-1.8 % smaller.
    High,
}

/// How to solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// The solver.
    pub solver: SolverKind,
    /// Search effort of the multilevel solver (ignored by KL).
    #[serde(default)]
    pub effort: Effort,
    /// Restarts (KL; the paper uses 5) or V-cycles (multilevel). `None`: 5 for
    /// KL, a number that shrinks with the VI's size for multilevel.
    pub restarts: Option<usize>,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            solver: SolverKind::Multilevel,
            effort: Effort::Fast,
            restarts: None,
            seed: 1,
        }
    }
}

/// A placement and how it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Solution {
    /// The placement.
    pub placement: Placement,
    /// For KL: each restart's cost and i*.
    pub kl: Option<KlTrace>,
    /// The cut is proven the least possible: among admissible placements,
    /// or among all when none is admissible. The multilevel solver's exact
    /// search ran to its end ([`exact`], VIs of up to
    /// [`exact::EXACT_MAX_NODES`] VMs).
    pub optimal: bool,
    /// No placement cuts less (the cut itself when optimal); `None` beyond
    /// [`exact::BOUND_MAX_NODES`] VMs.
    pub lower_bound: Option<u64>,
}

impl Solution {
    /// How far the cut may be from the best possible, as a fraction of the
    /// cut: 0 when optimal, `None` without a bound (or with a cut of 0).
    pub fn gap(&self) -> Option<f64> {
        let cut = self.placement.cut;
        match self.lower_bound {
            _ if self.optimal => Some(0.0),
            Some(lb) if cut > 0 => Some((cut - lb.min(cut)) as f64 / cut as f64),
            Some(_) => Some(0.0),
            None => None,
        }
    }
}

/// V-cycles of the multilevel solver for a VI of `n` nodes at `effort`.
pub fn default_cycles(n: usize, effort: Effort) -> usize {
    if effort == Effort::Fast && n > 256 {
        // Beyond a few hundred nodes annealing longer from one V-cycle
        // beats annealing several for the same time.
        return 1;
    }
    match n {
        0..=64 => 48,
        65..=256 => 16,
        257..=2_000 => 4,
        2_001..=20_000 => 3,
        _ => 1,
    }
}

/// Annealing for a VI of `n` nodes: steps per node per V-cycle, and the
/// start temperature as a fraction of the mean link bandwidth. The fast
/// preset's step counts are set so that the whole solve takes about
/// Scotch's time on the benchmark (bench/placement; Scotch grows more slowly
/// than n log n there, hence fewer steps per node for large VIs); small VIs
/// get many, they cost microseconds. The fewer the steps, the colder the
/// start: a short anneal cannot recover from much disorder, and the greedy
/// growing (the V-cycle beyond 20 000 nodes) already hands it a good
/// placement. A step prices its swap partner by the
/// partner's links inside its host rather than reading its adjacency (see
/// `multilevel::anneal`), which makes steps cheaper and each one a little
/// less well aimed: VIs of a few hundred nodes, where steps cost
/// microseconds in all, get twice the steps to make up for it.
fn anneal_schedule(n: usize, effort: Effort) -> (usize, f64) {
    match (effort, n) {
        (Effort::Fast, 0..=256) => (100, 0.35),
        (Effort::Fast, 257..=999) => (200, 0.35),
        (Effort::Fast, 1_000..=2_000) => (48, 0.2),
        (Effort::Fast, 2_001..=20_000) => (34, 0.15),
        (Effort::Fast, _) => (6, 0.1),
        (Effort::High, 0..=2_000) => (400, 0.35),
        (Effort::High, _) => (200, 0.35),
    }
}

/// Iterated-local-search steps per V-cycle for a VI of `n` nodes.
fn ils_steps(n: usize, cycles: usize) -> usize {
    let total = match n {
        0..=2_000 => 4 * n,
        2_001..=20_000 => n,
        _ => n / 4,
    };
    total / cycles.max(1)
}

/// After a heuristic's `err`: both solvers pack greedily and can miss a
/// placement of hosts filled to the brim (pins and anti-affinity
/// included), so a small VI is searched for one exactly; any other error,
/// or nothing found, stands.
fn brim_full(
    err: PlacementError,
    inst: &instance::Instance,
    problem: &Problem,
    router: &network::Router<'_>,
    bin_host: &[usize],
) -> Result<Vec<u32>, PlacementError> {
    if !matches!(err, PlacementError::NothingFits { .. }) || inst.n() > exact::EXACT_MAX_NODES {
        return Err(err);
    }
    exact::search(
        inst,
        problem,
        router,
        bin_host,
        None,
        false,
        exact::EXACT_STEPS,
    )
    .bins
    .ok_or(err)
}

/// Places a VI.
pub fn solve(problem: &Problem, options: &Options) -> Result<Solution, PlacementError> {
    let (inst, bin_host) = instance::Instance::from_problem(problem)?;
    let router = network::Router::new(problem)?;
    let mut rng = Rng::new(options.seed);
    let (bins, trace) = match options.solver {
        SolverKind::KernighanLin => {
            match kl::solve(&inst, &mut rng, options.restarts.unwrap_or(5)) {
                Ok((st, trace)) => (st.bin, Some(trace)),
                Err(err) => (brim_full(err, &inst, problem, &router, &bin_host)?, None),
            }
        }
        SolverKind::Multilevel => {
            let n = inst.n();
            let effort = options.effort;
            let cycles = options
                .restarts
                .unwrap_or_else(|| default_cycles(n, effort));
            let (anneal, anneal_hot) = anneal_schedule(n, effort);
            let settings = match effort {
                // No refinement on the way up: annealing does it for less.
                Effort::Fast => multilevel::Settings {
                    cycles,
                    // Up to 20 000 VMs the annealing finds smaller cuts
                    // from the greedy growing's placement than from a
                    // V-cycle's, and the coarsening's time is better spent
                    // on more steps; beyond, a few steps per VM need the
                    // V-cycle's start (bench/placement).
                    coarsen: n > 20_000,
                    iterations: 0,
                    coarse_kl: 0,
                    fine_kl: 0,
                    rounds: 0,
                    sweeps: 0,
                    anneal,
                    anneal_hot,
                    ils_steps: 0,
                },
                Effort::High => multilevel::Settings {
                    cycles,
                    coarsen: true,
                    iterations: if n > 20_000 { 1 } else { 4 },
                    coarse_kl: if n > 20_000 { 0 } else { 8 },
                    fine_kl: 64,
                    rounds: 8,
                    sweeps: 4,
                    anneal,
                    anneal_hot,
                    ils_steps: ils_steps(n, cycles),
                },
            };
            match multilevel::solve(&inst, &router, &bin_host, &mut rng, settings) {
                Ok(st) => (st.bin, None),
                Err(err) => (brim_full(err, &inst, problem, &router, &bin_host)?, None),
            }
        }
    };
    let mut host_of: Vec<usize> = bins.iter().map(|&b| bin_host[b as usize]).collect();
    let mut placement = evaluate(problem, &host_of)?;
    let mut optimal = false;
    if options.solver == SolverKind::Multilevel && inst.n() <= exact::EXACT_MAX_NODES {
        // Prove the heuristic's cut the least, or find a lesser one; then
        // make sure the answer is admissible when an admissible one exists.
        let search = |bound: Option<u64>, admissible: bool, budget: u64| {
            exact::search(
                &inst, problem, &router, &bin_host, bound, admissible, budget,
            )
        };
        let heuristic = placement.clone();
        let least = search(Some(placement.cut), false, exact::EXACT_STEPS);
        if let Some(bins) = &least.bins {
            host_of = bins.iter().map(|&b| bin_host[b as usize]).collect();
            placement = evaluate(problem, &host_of)?;
        }
        optimal = least.complete;
        let none_admissible = least.complete
            && exact::admissible_cut_limit(problem, &bin_host)
                .is_some_and(|limit| placement.cut > limit);
        if !placement.admissible && !none_admissible {
            // The least cut overloads the network: the least admissible one
            // is larger; look for it below the heuristic's, if that was
            // admissible, or anywhere (a smaller budget: proving that none
            // exists takes the whole search).
            let (bound, budget) = if heuristic.admissible {
                (Some(heuristic.cut), exact::EXACT_STEPS)
            } else {
                (None, exact::EXACT_STEPS / 8)
            };
            let admissible = search(bound, true, budget);
            match &admissible.bins {
                Some(bins) => {
                    host_of = bins.iter().map(|&b| bin_host[b as usize]).collect();
                    placement = evaluate(problem, &host_of)?;
                }
                None if heuristic.admissible => placement = heuristic,
                None => {}
            }
            // Proven: the least admissible cut, or no admissible placement
            // at all (then the least cut stands).
            optimal = admissible.complete && (optimal || placement.admissible);
        }
    }
    let lower_bound = if optimal {
        Some(placement.cut)
    } else if inst.n() <= exact::BOUND_MAX_NODES {
        Some(exact::lower_bound(&inst).min(placement.cut))
    } else {
        None
    };
    Ok(Solution {
        placement,
        kl: trace,
        optimal,
        lower_bound,
    })
}

#[cfg(test)]
mod tests;
