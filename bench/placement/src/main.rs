//! Benchmark driver of Neptune's placement (see README.md beside this file):
//! instance generators, the paper's Table 2 and Fig. 6 with the faithful KL,
//! and the instance set of the side-by-side comparison (run by compare.py).
#![allow(clippy::print_stdout, reason = "a benchmark driver prints its tables")]

mod gen;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use neptune_placement::{
    metis, solve, Effort, Options, Problem, Resources, SolverKind, VirtualGraph,
};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of Neptune's placement")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Writes the comparison instances (METIS files) into DIR.
    Instances {
        /// Output directory.
        dir: PathBuf,
        /// Sizes.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "20,100,400,1000,10000,100000"
        )]
        sizes: Vec<usize>,
        /// Instances per class (arcs/node) at n = 20.
        #[arg(long, default_value_t = 10)]
        small_instances: usize,
    },
    /// Table 2: distribution of i* over RUNS runs of the faithful KL.
    Table2 {
        /// Runs per cell (the paper: 100).
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Largest n of the paper's 20, 100 and 400 (smaller for a smoke run).
        #[arg(long, default_value_t = 400)]
        max_n: usize,
        /// CSV output.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Solves METIS files with the production solver and prints cut and time
    /// (a quick check; the comparison runs the `neptune` binary).
    Solve {
        /// METIS files.
        files: Vec<PathBuf>,
        /// Group size.
        #[arg(long, short = 'k', default_value_t = 5)]
        group_size: u32,
        /// V-cycles (default: by size).
        #[arg(long)]
        restarts: Option<usize>,
        /// Search effort: the default preset, or `--high`.
        #[arg(long)]
        high: bool,
    },
    /// Fig. 6: time of the faithful KL (5 restarts) vs n, density family.
    Fig6 {
        /// Repetitions per n (median reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Largest n.
        #[arg(long, default_value_t = 1000)]
        max_n: usize,
        /// CSV output.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

fn graph(n: usize, edges: &[(usize, usize, u64)]) -> VirtualGraph {
    let mut g = VirtualGraph::with_nodes(n, Resources::ZERO);
    for &(a, b, w) in edges {
        g.link(a, b, w);
    }
    g
}

/// Paper's Table 2 (rows: 20/100/400 nodes x 4/6/8 arcs; columns i* = 1..5).
const PAPER_TABLE2: [[u32; 5]; 9] = [
    [47, 21, 18, 7, 7],
    [52, 21, 13, 8, 6],
    [43, 27, 14, 6, 10],
    [23, 21, 21, 23, 12],
    [23, 21, 28, 20, 8],
    [18, 16, 26, 18, 22],
    [18, 24, 16, 18, 24],
    [20, 24, 18, 16, 22],
    [22, 28, 14, 12, 24],
];

fn table2(runs: usize, max_n: usize, csv: Option<PathBuf>) -> anyhow::Result<()> {
    let mut out = String::from(
        "n,arcs_per_node,runs,istar1,istar2,istar3,istar4,istar5,paper1,paper2,paper3,paper4,paper5,ties_at_best,admissible,mean_time_s\n",
    );
    println!("Table 2: i* of the faithful KL (5 restarts), ours | paper");
    println!(
        "{:<26} {:>22}   {:>22}  ties adm",
        "", "ours i*=1..5", "paper i*=1..5"
    );
    let mut row = 0;
    for n in [20usize, 100, 400] {
        if n > max_n {
            break;
        }
        for a in [4usize, 6, 8] {
            let mut hist = [0u32; 5];
            let mut ties = 0;
            let mut adm = 0;
            let mut time = 0.0;
            for r in 0..runs {
                let seed = (n * 1_000_003 + a * 10_007 + r) as u64;
                let p = Problem::groups(graph(n, &gen::arcs(n, a, seed)), 5, Some(gen::PHYS_BW));
                let t = Instant::now();
                let s = solve(
                    &p,
                    &Options {
                        solver: SolverKind::KernighanLin,
                        effort: Effort::Fast,
                        restarts: Some(5),
                        seed,
                    },
                )?;
                time += t.elapsed().as_secs_f64();
                let tr = s.kl.context("KL trace")?;
                hist[tr.best_iteration - 1] += 1;
                let best = s.placement.cut;
                if tr.restart_costs.iter().filter(|&&c| c == best).count() > 1 {
                    ties += 1;
                }
                adm += u32::from(s.placement.admissible);
            }
            let paper = PAPER_TABLE2[row];
            row += 1;
            let scale = |x: u32| (f64::from(x) * 100.0 / runs as f64).round() as u32;
            println!(
                "{:<26} {:>4}{:>4}{:>4}{:>4}{:>4}   {:>4}{:>4}{:>4}{:>4}{:>4}  {:>4} {:>3}",
                format!("Matrix {n}x{n} arc/nodes={a}"),
                scale(hist[0]),
                scale(hist[1]),
                scale(hist[2]),
                scale(hist[3]),
                scale(hist[4]),
                paper[0],
                paper[1],
                paper[2],
                paper[3],
                paper[4],
                ties,
                adm
            );
            writeln!(
                out,
                "{n},{a},{runs},{},{},{},{},{},{},{},{},{},{},{ties},{adm},{:.6}",
                hist[0],
                hist[1],
                hist[2],
                hist[3],
                hist[4],
                paper[0],
                paper[1],
                paper[2],
                paper[3],
                paper[4],
                time / runs as f64
            )?;
        }
    }
    if let Some(p) = csv {
        std::fs::write(&p, out).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn fig6(reps: usize, max_n: usize, csv: Option<PathBuf>) -> anyhow::Result<()> {
    let mut out = String::from("n,edges,kl_time_s,kl_cut,multilevel_time_s,multilevel_cut\n");
    println!("Fig. 6: time vs n, density 2 %, groups of 5 (median of {reps})");
    println!(
        "{:>6} {:>8} {:>12} {:>8} {:>14} {:>8}",
        "n", "edges", "KL x5 (s)", "KL cut", "multilevel (s)", "ML cut"
    );
    for n in (100..=max_n).step_by(100) {
        let edges = gen::density(n, n as u64);
        let p = Problem::groups(graph(n, &edges), 5, None);
        let mut tk = Vec::new();
        let mut tm = Vec::new();
        let (mut ck, mut cm) = (0, 0);
        for r in 0..reps {
            let t = Instant::now();
            ck = solve(
                &p,
                &Options {
                    solver: SolverKind::KernighanLin,
                    effort: Effort::Fast,
                    restarts: Some(5),
                    seed: r as u64,
                },
            )?
            .placement
            .cut;
            tk.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            cm = solve(
                &p,
                &Options {
                    solver: SolverKind::Multilevel,
                    effort: Effort::Fast,
                    restarts: None,
                    seed: r as u64,
                },
            )?
            .placement
            .cut;
            tm.push(t.elapsed().as_secs_f64());
        }
        let (a, b) = (median(tk), median(tm));
        println!(
            "{n:>6} {:>8} {a:>12.4} {ck:>8} {b:>14.4} {cm:>8}",
            edges.len()
        );
        writeln!(out, "{n},{},{a:.6},{ck},{b:.6},{cm}", edges.len())?;
    }
    if let Some(p) = csv {
        std::fs::write(&p, out).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn instances(dir: PathBuf, sizes: Vec<usize>, small: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for n in sizes {
        let count = if n <= 20 { small } else { 1 };
        for a in [4usize, 6, 8] {
            for i in 0..count {
                let seed = (n * 7919 + a * 104_729 + i) as u64;
                let edges = gen::arcs(n, a, seed);
                let path = dir.join(format!("arcs-n{n}-a{a}-i{i}.graph"));
                std::fs::write(&path, metis::write(n, &edges))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Instances {
            dir,
            sizes,
            small_instances,
        } => instances(dir, sizes, small_instances),
        Cmd::Table2 { runs, max_n, csv } => table2(runs, max_n, csv),
        Cmd::Fig6 { reps, max_n, csv } => fig6(reps, max_n, csv),
        Cmd::Solve {
            files,
            group_size,
            restarts,
            high,
        } => {
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                let g = metis::parse(&text, metis::Limits::default())?;
                let p = Problem::groups(g.into_virtual_graph(), group_size, Some(gen::PHYS_BW));
                let t = Instant::now();
                let s = solve(
                    &p,
                    &Options {
                        solver: SolverKind::Multilevel,
                        effort: if high { Effort::High } else { Effort::Fast },
                        restarts,
                        seed: 1,
                    },
                )?;
                println!(
                    "{} cut {} admissible {} time {:.3} s",
                    f.display(),
                    s.placement.cut,
                    s.placement.admissible,
                    t.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
    }
}
