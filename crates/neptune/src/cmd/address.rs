//! `neptune address`: plan the addresses of a VI topology.

#![allow(clippy::print_stdout, clippy::print_stderr)] // printing is this command's job

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use neptune_ipam::ipnet::Ipv4Net;
use neptune_ipam::{
    plan, Allocations, DatacenterConfig, DatacenterName, DomainConfig, Plan, PointToPoint,
    ViRequest,
};

#[derive(Debug, Subcommand)]
pub(crate) enum AddressCommand {
    /// Plan a topology's addresses in an empty domain: a subnet per link,
    /// an address per interface, a Home Address per entry point.
    ///
    /// Exits 1 when the plan is refused (a pin conflicts, a pool is too
    /// small), 2 on other errors.
    Plan {
        /// The topology (XML dialect or JSON).
        topology: PathBuf,
        /// A private pool of the domain (repeat for several).
        #[arg(long = "pool", value_name = "PREFIX", default_value = "10.0.0.0/8")]
        pools: Vec<Ipv4Net>,
        /// A public pool of Home Addresses of the home datacenter (repeat for several).
        #[arg(
            long = "home-pool",
            value_name = "PREFIX",
            default_value = "192.0.2.0/24"
        )]
        home_pools: Vec<Ipv4Net>,
        /// The name of the home datacenter.
        #[arg(long, default_value = "home")]
        datacenter: String,
        /// Prefix length of point-to-point subnets.
        #[arg(long, value_enum, default_value_t = P2p::Slash31)]
        point_to_point: P2p,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum P2p {
    /// /31 (RFC 3021): two addresses, both usable.
    #[value(name = "31")]
    Slash31,
    /// /30: for guests without RFC 3021 support.
    #[value(name = "30")]
    Slash30,
}

pub(crate) fn run(cmd: AddressCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AddressCommand::Plan {
            topology,
            pools,
            home_pools,
            datacenter,
            point_to_point,
            output,
        } => {
            let text = std::fs::read_to_string(&topology)
                .with_context(|| format!("reading {}", topology.display()))?;
            let topo = match neptune_topology::load(&text) {
                Ok(topo) => topo,
                Err(diags) => {
                    for d in diags {
                        eprintln!("{}:{d}", topology.display());
                    }
                    return Ok(ExitCode::from(1));
                }
            };
            let datacenter = DatacenterName::new(datacenter).context("--datacenter")?;
            let config = DomainConfig {
                private_pools: pools,
                datacenters: vec![DatacenterConfig {
                    name: datacenter.clone(),
                    home_pools,
                }],
                reserved: Vec::new(),
                point_to_point: match point_to_point {
                    P2p::Slash31 => PointToPoint::Slash31,
                    P2p::Slash30 => PointToPoint::Slash30,
                },
            };
            let snapshot = Allocations::new(config).context("the address pools")?;
            let mut request = ViRequest::from(&topo);
            request.home = Some(datacenter);
            let plan = match plan(&snapshot, &request) {
                Ok(plan) => plan,
                Err(err) => {
                    eprintln!("{}: {err}", topology.display());
                    return Ok(ExitCode::from(1));
                }
            };
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                Output::Text => print!("{}", render(&plan)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Rows printed in aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn render(plan: &Plan) -> String {
    let mut out = format!("VI {}", plan.vi);
    match plan.block {
        Some(block) => out.push_str(&format!(": block {block}\n")),
        None => out.push_str(": no block (every link is pinned)\n"),
    }
    let pinned = |p: bool| if p { "pinned" } else { "" }.to_owned();
    if !plan.links.is_empty() {
        let rows: Vec<Vec<String>> = plan
            .links
            .iter()
            .map(|l| {
                vec![
                    l.link.to_string(),
                    l.subnet.to_string(),
                    l.gateway.map_or("-".to_owned(), |g| g.to_string()),
                    pinned(l.pinned),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["LINK", "SUBNET", "GATEWAY", ""], &rows));
        let rows: Vec<Vec<String>> = plan
            .interfaces()
            .map(|(l, i)| {
                vec![
                    format!("{}/{}", i.node, i.interface),
                    l.link.to_string(),
                    i.cidr.to_string(),
                    pinned(i.pinned),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["INTERFACE", "LINK", "ADDRESS", ""], &rows));
    }
    if !plan.entry_points.is_empty() {
        let rows: Vec<Vec<String>> = plan
            .entry_points
            .iter()
            .map(|e| {
                vec![
                    format!("{}/{}", e.node, e.interface),
                    e.home_address.to_string(),
                    e.datacenter.to_string(),
                    pinned(e.pinned),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["ENTRY POINT", "HOME ADDRESS", "DATACENTER", ""],
            &rows,
        ));
    }
    out
}
