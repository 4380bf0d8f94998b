//! `neptune switch`: run an Edge Service Switch (one per datacenter).
//!
//! Thin: the arguments and the daemon live in `neptune-switch`
//! (`neptune_switch::cli`), shared with `neptune-switchd`.

use std::process::ExitCode;

/// Arguments of `neptune switch`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    inner: neptune_switch::cli::SwitchArgs,
}

/// Runs the switch until SIGINT or SIGTERM.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    neptune_switch::cli::run(args.inner)?;
    Ok(ExitCode::SUCCESS)
}
