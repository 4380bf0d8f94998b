//! `neptune topology`: check, convert and generate VI topologies.

#![allow(clippy::print_stdout, clippy::print_stderr)] // printing is this command's job

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use neptune_topology::catalogue::{self, Kind, Params};
use neptune_topology::{Diagnostic, Summary, Topology};
use neptune_types::Mbps;

#[derive(Debug, Subcommand)]
pub(crate) enum TopologyCommand {
    /// Validate topology files (XML or JSON) and summarise each.
    ///
    /// Prints every problem as FILE:LINE:COLUMN: MESSAGE and exits 1 if any
    /// file has one.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Convert a topology between the XML dialect and JSON.
    ///
    /// JSON never carries the OS password; XML (the design document) does.
    Convert {
        file: PathBuf,
        #[arg(long, value_enum)]
        to: Form,
    },
    /// Generate a predefined topology from the catalogue (XML on stdout).
    New {
        /// The kind of topology (see `neptune topology catalogue`).
        kind: String,
        /// Total number of VMs.
        #[arg(long)]
        nodes: Option<usize>,
        /// Bandwidth of every virtual link, in Mbit/s.
        #[arg(long, default_value_t = 100)]
        bandwidth: u64,
        /// Template of every VM (default: none named, so the Manager's
        /// default template).
        #[arg(long)]
        template: Option<String>,
        #[arg(long, value_enum, default_value_t = Form::Xml)]
        to: Form,
    },
    /// List the catalogue of predefined topologies.
    Catalogue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Form {
    Xml,
    Json,
}

pub(crate) fn run(cmd: TopologyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TopologyCommand::Check { files, output } => check(&files, output),
        TopologyCommand::Convert { file, to } => {
            let Some(topo) = load_reporting(&file)? else {
                return Ok(ExitCode::from(1));
            };
            print!("{}", render(&topo, to));
            Ok(ExitCode::SUCCESS)
        }
        TopologyCommand::New {
            kind,
            nodes,
            bandwidth,
            template,
            to,
        } => {
            let kind = catalogue::kind(&kind)?;
            let mut params = Params::new(kind);
            params.nodes = nodes.unwrap_or(params.nodes);
            params.bandwidth = Mbps(bandwidth);
            params.template = template.unwrap_or_default();
            let topo = catalogue::generate(kind, &params)?;
            print!("{}", render(&topo, to));
            Ok(ExitCode::SUCCESS)
        }
        TopologyCommand::Catalogue => {
            println!(
                "{:<14} {:>8} {:>7}  DESCRIPTION",
                "KIND", "NODES", "DEFAULT"
            );
            for kind in Kind::ALL {
                let range = format!("{}-{}", kind.min_nodes(), kind.max_nodes());
                println!(
                    "{:<14} {:>8} {:>7}  {}",
                    kind.name(),
                    range,
                    kind.default_nodes(),
                    kind.description()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render(topo: &Topology, form: Form) -> String {
    match form {
        Form::Xml => neptune_topology::to_xml(topo),
        Form::Json => neptune_topology::to_json(topo) + "\n",
    }
}

/// Loads `path`; on problems (text that is not UTF-8 among them) prints
/// each as `FILE:LINE:COL: MESSAGE` and returns `None`. I/O errors are errors.
fn load_reporting(path: &PathBuf) -> anyhow::Result<Option<Topology>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match neptune_topology::load_bytes(&bytes) {
        Ok(topo) => Ok(Some(topo)),
        Err(diags) => {
            report(path, &diags);
            Ok(None)
        }
    }
}

fn report(path: &std::path::Path, diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{}:{d}", path.display());
    }
}

fn check(files: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut summaries = Vec::new();
    for path in files {
        match load_reporting(path)? {
            Some(topo) => {
                let summary = topo.summary();
                if output == Output::Text {
                    println!("{}: {}", path.display(), describe(&summary));
                }
                summaries.push(serde_json::json!({ "file": path, "summary": summary }));
            }
            None => failed = true,
        }
    }
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

fn describe(s: &Summary) -> String {
    format!(
        "topology {:?}: {}, {}, {}, {}, {} RAM, {} disk, {} total link bandwidth",
        s.id.as_str(),
        plural(s.nodes as u64, "node", "nodes"),
        plural(s.links as u64, "link", "links"),
        plural(s.entry_points as u64, "entry point", "entry points"),
        plural(s.vcpus, "vCPU", "vCPUs"),
        s.ram,
        s.disk,
        s.bandwidth,
    )
}
