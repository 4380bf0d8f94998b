//! `neptune placement`: place a VI graph read in METIS format onto groups of
//! hosts (the paper's experiment model) with the faithful Kernighan–Lin or
//! the production multilevel solver.
//!
//! Exit codes: 0 an admissible placement, 1 a placement that overloads a
//! physical link, 2 an error (unreadable graph, nothing fits).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use neptune_placement::{metis, Effort, Options, Problem, SolverKind};

#[derive(Debug, Subcommand)]
pub(crate) enum PlacementCommand {
    /// Partition a METIS graph (edge weights = bandwidth) into groups of at
    /// most K nodes, one group per host.
    Solve {
        /// The graph, in METIS format (`-` reads standard input).
        graph: PathBuf,
        /// Most VMs per host.
        #[arg(long, short = 'k', value_parser = clap::value_parser!(u32).range(1..))]
        group_size: u32,
        /// Bandwidth of the link between every pair of hosts (unlimited if absent).
        #[arg(long)]
        link_capacity: Option<u64>,
        /// Solver: the paper's Kernighan–Lin or the production multilevel one.
        #[arg(long, value_enum, default_value_t = SolverArg::Default)]
        solver: SolverArg,
        /// Search effort of the default solver: `fast` takes less than
        /// Scotch's time, `high` 30-90x longer for a cut 0.4-1.8 % smaller.
        #[arg(long, value_enum, default_value_t = EffortArg::Fast)]
        effort: EffortArg,
        /// Restarts (KL, default 5) or V-cycles (default: by graph size).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        restarts: Option<u32>,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputArg::Text)]
        output: OutputArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SolverArg {
    /// The paper's Kernighan–Lin.
    Kl,
    /// The production multilevel solver.
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EffortArg {
    /// One V-cycle, then annealing for a number of steps proportional to n.
    Fast,
    /// Full KL refinement, several V-cycles, longer annealing, iterated local search.
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputArg {
    /// A short summary.
    Text,
    /// The summary and the group of every node, as JSON.
    Json,
}

pub(crate) fn run(cmd: PlacementCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PlacementCommand::Solve {
            graph,
            group_size,
            link_capacity,
            solver,
            effort,
            restarts,
            seed,
            output,
        } => {
            let text = if graph.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&graph)
                    .with_context(|| format!("reading {}", graph.display()))?
            };
            let g = metis::parse(&text, metis::Limits::default())
                .with_context(|| format!("{}", graph.display()))?;
            let nodes = g.n;
            let problem = Problem::groups(g.into_virtual_graph(), group_size, link_capacity);
            let options = Options {
                solver: match solver {
                    SolverArg::Kl => SolverKind::KernighanLin,
                    SolverArg::Default => SolverKind::Multilevel,
                },
                effort: match effort {
                    EffortArg::Fast => Effort::Fast,
                    EffortArg::High => Effort::High,
                },
                restarts: restarts.map(|r| r as usize),
                seed,
            };
            let start = Instant::now();
            let solution = neptune_placement::solve(&problem, &options)?;
            let secs = start.elapsed().as_secs_f64();
            let p = &solution.placement;
            let solver_name = match solver {
                SolverArg::Kl => "kl",
                SolverArg::Default => "default",
            };
            let out = match output {
                OutputArg::Json => {
                    let mut v = serde_json::json!({
                        "solver": solver_name,
                        "effort": match effort {
                            EffortArg::Fast => "fast",
                            EffortArg::High => "high",
                        },
                        "nodes": nodes,
                        "group_size": group_size,
                        "link_capacity": link_capacity,
                        "seed": seed,
                        "cut": p.cut,
                        "max_group_size": p.max_group,
                        "groups": problem.inventory.hosts.len(),
                        "admissible": p.admissible,
                        "overloaded_links": p.link_loads.iter().filter(|l| l.load > l.capacity).count(),
                        "optimal": solution.optimal,
                        "lower_bound": solution.lower_bound,
                        "gap": solution.gap(),
                        "time_s": secs,
                        "group": p.host_of,
                    });
                    if let Some(t) = &solution.kl {
                        v["restart_costs"] = serde_json::json!(t.restart_costs);
                        v["best_iteration"] = serde_json::json!(t.best_iteration);
                    }
                    serde_json::to_string_pretty(&v)?
                }
                OutputArg::Text => {
                    let mut s = format!(
                        "solver: {solver_name}\nnodes: {}\ncut: {}\nmax group size: {} (limit {group_size})\nadmissible: {}\ntime: {secs:.3} s",
                        nodes,
                        p.cut,
                        p.max_group,
                        if p.admissible { "yes" } else { "no" },
                    );
                    s.push_str(&bound_text(&solution));
                    if let Some(t) = &solution.kl {
                        s.push_str(&format!(
                            "\nrestart costs: {:?}\nbest found at restart: {}",
                            t.restart_costs, t.best_iteration
                        ));
                    }
                    s
                }
            };
            #[allow(clippy::print_stdout, reason = "the command's output is the point")]
            {
                println!("{out}");
            }
            Ok(if p.admissible {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `optimal: yes`, or the lower bound and the gap it leaves.
fn bound_text(s: &neptune_placement::Solution) -> String {
    if s.optimal {
        return "\noptimal: yes (proven by exact search)".to_owned();
    }
    match (s.lower_bound, s.gap()) {
        (Some(lb), Some(gap)) => format!(
            "\noptimal: not proven\nlower bound: {lb} (gap {:.1} %)",
            gap * 100.0
        ),
        _ => format!(
            "\noptimal: not proven\nlower bound: not computed beyond {} VMs",
            neptune_placement::exact::BOUND_MAX_NODES
        ),
    }
}
