//! Benchmark driver of Neptune's address planner (see README.md beside this
//! file): plan and commit many VIs of 10-50 interfaces into one private
//! pool, then churn (random terminations and new VIs), then fill until the
//! first VI that does not fit. Neptune's planner (buddy system, best fit)
//! and a naive first-fit allocator see the same VIs and the same operations.
#![allow(clippy::print_stdout, reason = "a benchmark driver prints its tables")]

mod firstfit;
mod workload;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use neptune_ipam::ipnet::Ipv4Net;
use neptune_ipam::{plan, Allocations, DatacenterName, DomainConfig, ViId, ViRequest};
use neptune_ipam::{Plan, PlanError};

use crate::firstfit::FirstFit;
use crate::workload::{Rng, Vi};

#[derive(Debug, Parser)]
#[command(about = "Benchmark of Neptune's address planner against a naive first-fit allocator")]
struct Cli {
    /// VIs planned and committed in the fill phase.
    #[arg(long, default_value_t = 100_000)]
    vis: usize,
    /// Operations of the churn phase (each a termination or a new VI, even odds).
    #[arg(long, default_value_t = 100_000)]
    churn: usize,
    /// The private pool.
    #[arg(long, default_value = "10.0.0.0/8")]
    pool: Ipv4Net,
    /// The home pool (one Home Address per VI; large enough never to be the limit).
    #[arg(long, default_value = "100.64.0.0/10")]
    home_pool: Ipv4Net,
    /// Operations of the saturated churn phase (terminate one VI, try a new one).
    #[arg(long, default_value_t = 20_000)]
    saturated: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tiny sizes (500 VIs, 500 churn operations, 200 saturated, a /16):
    /// checks that the benchmark runs end to end, measures nothing.
    #[arg(long, conflicts_with_all = ["vis", "churn", "saturated", "pool"])]
    smoke: bool,
}

/// Per-operation times.
#[derive(Default)]
struct Times(Vec<Duration>);

impl Times {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.0.push(start.elapsed());
        out
    }

    fn summary(&self) -> String {
        let mut v = self.0.clone();
        if v.is_empty() {
            return "-".to_owned();
        }
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let total: Duration = v.iter().sum();
        format!(
            "median {:>6.1} us  p99 {:>6.1} us  max {:>8.1} us  total {:>6.2} s  (n = {})",
            at(0.5).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6,
            at(1.0).as_secs_f64() * 1e6,
            total.as_secs_f64(),
            v.len()
        )
    }
}

/// Free space of a pool, as maximal aligned blocks or intervals.
struct Free {
    free: u64,
    largest: u64,
    intervals: usize,
    /// How many /24 blocks still fit.
    room24: u64,
}

impl Free {
    fn from_intervals(intervals: &[(u64, u64)], blocks_are_aligned: bool) -> Free {
        let free = intervals.iter().map(|(s, e)| e - s).sum();
        let largest = intervals
            .iter()
            .map(|&(s, e)| {
                if blocks_are_aligned {
                    e - s
                } else {
                    largest_aligned(s, e)
                }
            })
            .max()
            .unwrap_or(0);
        let room24 = intervals
            .iter()
            .map(|&(s, e)| (e >> 8).saturating_sub(s.div_ceil(256)))
            .sum();
        let mut count = 0;
        let mut end = None;
        for &(s, e) in intervals {
            if end != Some(s) {
                count += 1;
            }
            end = Some(e);
        }
        Free {
            free,
            largest,
            intervals: count,
            room24,
        }
    }

    fn line(&self, total: u64) -> String {
        let frag = if self.free == 0 {
            0.0
        } else {
            1.0 - self.largest as f64 / self.free as f64
        };
        format!(
            "used {:>5.1}%  free {:>9}  largest free /{:<2}  free intervals {:>6}  /24s that fit {:>6}  fragmentation {:.3}",
            100.0 * (total - self.free) as f64 / total as f64,
            self.free,
            if self.largest == 0 { 32 } else { 32 - self.largest.trailing_zeros() },
            self.intervals,
            self.room24,
            frag
        )
    }
}

/// The size of the largest aligned power-of-two block inside [s, e).
pub(crate) fn largest_aligned(s: u64, e: u64) -> u64 {
    let mut best = 0;
    let mut size = 1u64;
    while size <= e - s {
        let a = s.div_ceil(size) * size;
        if a + size <= e {
            best = size;
        }
        size *= 2;
    }
    best
}

/// What the phases drive: Neptune's planner or the baseline.
trait Allocator {
    /// Places `vi` (timed by the caller); false when it does not fit.
    fn add(&mut self, vi: &Vi) -> anyhow::Result<bool>;
    /// Releases the live VI chosen by `pick`.
    fn release(&mut self, pick: u64) -> anyhow::Result<()>;
    fn live(&self) -> usize;
    fn free(&self) -> Free;
    /// Times of the adds since the last call (then forgotten).
    fn take_times(&mut self) -> String;
}

struct Neptune {
    domain: Allocations,
    pool: Ipv4Net,
    home: DatacenterName,
    live: Vec<ViId>,
    next: usize,
    plans: Times,
    commits: Times,
}

impl Allocator for Neptune {
    fn add(&mut self, vi: &Vi) -> anyhow::Result<bool> {
        let req = request(vi, self.next, &self.home)?;
        self.next += 1;
        let domain = &self.domain;
        let planned = self.plans.time(|| plan(domain, &req));
        let p: Plan = match planned {
            Ok(p) => p,
            Err(PlanError::Exhausted { pools, .. }) if pools.starts_with("private") => {
                return Ok(false)
            }
            Err(err) => bail!("planning {}: {err}", req.vi),
        };
        if p.block.map(|b| b.prefix_len()) != Some(vi.block_len()) {
            bail!("the planner sized {} differently from the workload", req.vi);
        }
        let domain = &mut self.domain;
        self.commits.time(|| domain.commit(&p)).context("commit")?;
        self.live.push(req.vi);
        Ok(true)
    }

    fn release(&mut self, pick: u64) -> anyhow::Result<()> {
        if !self.live.is_empty() {
            let vi = self.live.swap_remove(pick as usize % self.live.len());
            self.domain.release(&vi).context("release")?;
        }
        Ok(())
    }

    fn live(&self) -> usize {
        self.live.len()
    }

    fn take_times(&mut self) -> String {
        let out = format!(
            "plan   {}\n    commit {}",
            self.plans.summary(),
            self.commits.summary()
        );
        self.plans = Times::default();
        self.commits = Times::default();
        out
    }

    fn free(&self) -> Free {
        let mut blocks: Vec<(u64, u64)> = self
            .domain
            .free_blocks()
            .filter(|(p, _)| *p == self.pool)
            .map(|(_, b)| {
                let start = u64::from(u32::from(b.network()));
                (start, start + (1u64 << (32 - b.prefix_len())))
            })
            .collect();
        blocks.sort_unstable();
        Free::from_intervals(&blocks, true)
    }
}

struct Baseline {
    ff: FirstFit,
    live: Vec<(u64, u64)>,
    allocs: Times,
}

impl Allocator for Baseline {
    fn add(&mut self, vi: &Vi) -> anyhow::Result<bool> {
        let size = 1u64 << (32 - vi.block_len());
        let ff = &mut self.ff;
        Ok(match self.allocs.time(|| ff.allocate(size)) {
            Some(start) => {
                self.live.push((start, size));
                true
            }
            None => false,
        })
    }

    fn release(&mut self, pick: u64) -> anyhow::Result<()> {
        if !self.live.is_empty() {
            let (start, size) = self.live.swap_remove(pick as usize % self.live.len());
            self.ff.release(start, size);
        }
        Ok(())
    }

    fn live(&self) -> usize {
        self.live.len()
    }

    fn free(&self) -> Free {
        Free::from_intervals(self.ff.intervals(), false)
    }

    fn take_times(&mut self) -> String {
        let out = format!("allocate {}", self.allocs.summary());
        self.allocs = Times::default();
        out
    }
}

fn request(vi: &Vi, id: usize, home: &DatacenterName) -> anyhow::Result<ViRequest> {
    let mut r = vi.request(ViId::new(format!("vi{id}"))?)?;
    r.home = Some(home.clone());
    Ok(r)
}

/// The phases, each reported as the allocator's state after it.
fn phases(
    a: &mut dyn Allocator,
    cli: &Cli,
    vis: &[Vi],
    ops: &[u64],
    extra: &[Vi],
    mut mark: impl FnMut(&str, &mut dyn Allocator),
) -> anyhow::Result<()> {
    for vi in vis {
        if !a.add(vi)? {
            bail!("the pool is full after {} VIs; use fewer --vis", a.live());
        }
    }
    mark("fill", a);
    let mut extra = extra.iter().cycle();
    for &op in ops {
        if op % 2 == 0 {
            a.release(op / 2)?;
        } else if let Some(vi) = extra.next() {
            a.add(vi)?;
        }
    }
    mark("churn", a);
    for vi in extra.by_ref() {
        if !a.add(vi)? {
            break;
        }
    }
    mark("first failure", a);
    // Saturated: terminate one VI, then try new VIs until one fails.
    let mut rejected = 0u64;
    let mut rejected_with_room = 0u64;
    for &op in ops.iter().cycle().take(cli.saturated) {
        a.release(op)?;
        if let Some(vi) = extra.next() {
            if !a.add(vi)? {
                rejected += 1;
                if a.free().free >= 1u64 << (32 - vi.block_len()) {
                    rejected_with_room += 1;
                }
            }
        }
    }
    mark(
        &format!(
            "saturated churn: {rejected} of {} new VIs rejected, {rejected_with_room} of them \
             although enough addresses were free",
            cli.saturated
        ),
        a,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.smoke {
        cli.vis = 500;
        cli.churn = 500;
        cli.saturated = 200;
        cli.pool = "10.0.0.0/16".parse()?;
    }
    let mut rng = Rng::new(cli.seed);
    let vis: Vec<Vi> = (0..cli.vis).map(|_| Vi::random(&mut rng)).collect();
    let ops: Vec<u64> = (0..cli.churn.max(1)).map(|_| rng.next()).collect();
    // New VIs for the later phases (cycled when more are needed).
    let extra: Vec<Vi> = (0..cli.vis.max(1000))
        .map(|_| Vi::random(&mut rng))
        .collect();
    let total = 1u64 << (32 - cli.pool.prefix_len());

    let interfaces: usize = vis.iter().map(Vi::interfaces).sum();
    let links: usize = vis.iter().map(|v| v.links.len()).sum();
    let block: u64 = vis.iter().map(|v| 1u64 << (32 - v.block_len())).sum();
    let subnets: u64 = vis.iter().map(Vi::subnet_addresses).sum();
    println!(
        "workload: {} VIs, {} interfaces ({:.1} per VI), {} links; pool {}, home pool {}, seed {}",
        vis.len(),
        interfaces,
        interfaces as f64 / vis.len().max(1) as f64,
        links,
        cli.pool,
        cli.home_pool,
        cli.seed
    );
    println!(
        "VI blocks: {} addresses for {} interfaces ({:.1}% of block addresses on an interface, \
         {:.1}% inside a link subnet)",
        block,
        interfaces,
        100.0 * interfaces as f64 / block as f64,
        100.0 * subnets as f64 / block as f64
    );
    println!(
        "phases: fill with {} VIs; churn of {} operations (terminate or new VI, even odds); \
         new VIs until the first does not fit; saturated churn of {} (terminate one, try one)\n",
        cli.vis, cli.churn, cli.saturated
    );

    let home = DatacenterName::new("dc1")?;
    let config = DomainConfig::simple(cli.pool, home.clone(), cli.home_pool);
    let mut neptune = Neptune {
        domain: Allocations::new(config)?,
        pool: cli.pool,
        home,
        live: Vec::new(),
        next: 0,
        plans: Times::default(),
        commits: Times::default(),
    };
    println!("neptune: buddy system, best fit (full plan: subnets, addresses, Home Address)");
    phases(&mut neptune, &cli, &vis, &ops, &extra, |phase, a| {
        println!(
            "  after {phase}:\n    {}  ({} VIs live)",
            a.free().line(total),
            a.live()
        );
        println!("    {}", a.take_times());
    })?;
    println!();

    let base = u64::from(u32::from(cli.pool.network()));
    let mut baseline = Baseline {
        ff: FirstFit::new(base, total),
        live: Vec::new(),
        allocs: Times::default(),
    };
    println!("naive first fit over a sorted free list (VI block only)");
    phases(&mut baseline, &cli, &vis, &ops, &extra, |phase, a| {
        println!(
            "  after {phase}:\n    {}  ({} VIs live)",
            a.free().line(total),
            a.live()
        );
        println!("    {}", a.take_times());
    })?;
    Ok(())
}
