//! `neptune-switchd`: the Edge Service Switch daemon, identical to
//! `neptune switch` (same arguments, same library call).

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "neptune-switchd",
    version,
    about = "Neptune Edge Service Switch"
)]
struct Cli {
    #[command(flatten)]
    args: neptune_switch::cli::SwitchArgs,
}

fn main() -> ExitCode {
    neptune_switch::cli::main(Cli::parse().args)
}
