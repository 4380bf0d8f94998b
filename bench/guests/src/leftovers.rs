//! What the benchmark leaves on the libvirt daemon when a run fails half
//! way: the domains and networks of its VIs. The daemon is shared (other
//! tests and benchmarks may run guests on it), so only names that start
//! with one of this run's VI prefixes are touched.

use std::process::Command;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// The libvirt objects of the VIs this run created.
#[derive(Debug, Clone)]
pub(crate) struct Leftovers {
    uri: String,
    prefixes: Arc<Mutex<Vec<String>>>,
}

/// The prefix of every domain (`nt-<12 hex>-<node>`) and link network
/// (`nt-<8 hex>-<link>`) of VI `vi`.
pub(crate) fn prefix_of(vi: Uuid) -> String {
    format!("nt-{}", &vi.simple().to_string()[..8])
}

impl Leftovers {
    pub(crate) fn new(uri: &str) -> Self {
        Leftovers {
            uri: uri.to_owned(),
            prefixes: Arc::default(),
        }
    }

    /// Registered before the VI is accepted, so that a failure at any
    /// later point still finds its guests.
    pub(crate) fn watch(&self, vi: Uuid) {
        self.prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(prefix_of(vi));
    }

    fn virsh(&self, args: &[&str]) -> String {
        Command::new("virsh")
            .args(["--quiet", "--connect", &self.uri])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The domains and networks of `prefix` on the daemon.
    pub(crate) fn remaining(&self, prefix: &str) -> Vec<String> {
        let mut names = Vec::new();
        for list in [["list", "--all", "--name"], ["net-list", "--all", "--name"]] {
            names.extend(
                self.virsh(&list)
                    .lines()
                    .map(str::trim)
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_owned),
            );
        }
        names
    }

    /// Destroys and undefines every domain and network of the watched VIs;
    /// returns their names.
    pub(crate) fn sweep(&self) -> Vec<String> {
        let prefixes = self
            .prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut removed = Vec::new();
        // Domains first: a network in use by a running guest cannot go.
        for (list, stop, undefine) in [
            (["list", "--all", "--name"], "destroy", "undefine"),
            (
                ["net-list", "--all", "--name"],
                "net-destroy",
                "net-undefine",
            ),
        ] {
            for name in self.virsh(&list).lines().map(str::trim) {
                if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    self.virsh(&[stop, name]);
                    self.virsh(&[undefine, name]);
                    removed.push(name.to_owned());
                }
            }
        }
        removed
    }
}
