use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum TopologyCommand {
    /// List the catalogue of predefined topologies.
    Catalogue,
}

pub(crate) fn run(cmd: TopologyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TopologyCommand::Catalogue => Ok(ExitCode::SUCCESS),
    }
}
