//! The `neptune` binary run as users and operators run it: one test binary
//! (one build), a module per command group.

mod address;
mod crash;
mod hostile;
mod placement;
mod service_switching;
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

/// Every command and subcommand says what it does in `--help`.
#[test]
fn every_subcommand_has_help_text() {
    fn undocumented(args: &[&str]) -> Vec<String> {
        let mut all = args.to_vec();
        all.push("--help");
        let help = stdout(&neptune(&all));
        let mut missing = Vec::new();
        let mut in_commands = false;
        for line in help.lines() {
            if line.starts_with("Commands:") {
                in_commands = true;
                continue;
            }
            if in_commands && !line.starts_with("  ") {
                break;
            }
            if in_commands {
                let mut words = line.split_whitespace();
                let name = words.next().unwrap_or_default().to_owned();
                if name == "help" {
                    continue;
                }
                if words.next().is_none() {
                    missing.push(format!("{} {name}", args.join(" ")));
                }
                let mut sub = args.to_vec();
                let name: &'static str = Box::leak(name.into_boxed_str());
                sub.push(name);
                missing.extend(undocumented(&sub));
            }
        }
        missing
    }
    assert_eq!(undocumented(&[]), Vec::<String>::new());
}
