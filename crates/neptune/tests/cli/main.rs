//! The `neptune` binary run as users and operators run it: one test binary
//! (one build), a module per command group.

mod address;
mod crash;
mod hostile;
mod placement;
mod topology;
mod up;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the binary with `args` and waits for it.
pub(crate) fn neptune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_neptune"))
        .args(args)
        .output()
        .expect("run neptune")
}

/// A file of neptune-topology's testdata.
pub(crate) fn testdata(name: &str) -> String {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "neptune-topology",
        "testdata",
        name,
    ]
    .iter()
    .collect();
    p.to_string_lossy().into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
