//! One conformance suite for the Hypervisor port, run against both
//! adapters, as the Store's suite runs against both stores: the simulated
//! one always, the libvirt one against the daemon named by
//! `NEPTUNE_TEST_LIBVIRT_URI` (`scripts/libvirt-test-server` starts one;
//! in CI, `CI` set, a missing daemon is a failure, not a skip).
//!
//! A case is an `async fn(&dyn Env)`: it asks its environment for hosts
//! (each a `dyn Hypervisor`) of a capacity, a template image and names,
//! and asserts what the port promises whatever the adapter: idempotent
//! operations, its refusals, capacity, save on one host and restore on
//! another, disk export, console bounds, the live move, and networks
//! joined to wider segments. What only one
//! adapter does (libvirt's networks, bandwidth and booted guests; the
//! simulation's faults, delays and files) is tested beside that adapter.
//!
//! The libvirt half runs emulated guests of a blank 16 MiB disk: they
//! never boot an operating system, which the port does not need, so each
//! case takes seconds. Its live move needs a second daemon, standing for
//! another host (`support::SecondDaemon`).

#![allow(clippy::unwrap_used, clippy::print_stderr)] // test helpers fail loudly

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use neptune_hypervisor::libvirt::{LibvirtConfig, LibvirtHypervisor, MigrationEndpoint};
use neptune_hypervisor::sim::{Fault, SimConfig, SimHypervisor};
use neptune_hypervisor::{
    Capacity, DiskBase, Hypervisor, HypervisorError, Incoming, IncomingRequest, NetworkJoin, Nic,
    Op, Segment, VmSpec, VmState, MAX_CONSOLE_INPUT,
};
use support::{adapter, libvirt_uri, names, virsh, SecondDaemon};

/// What a case needs of an adapter besides the port.
#[async_trait::async_trait]
trait Env: Send + Sync {
    /// A new, empty host of this adapter with `capacity`, named `name`
    /// in this environment.
    fn host(&self, name: &str, capacity: Capacity) -> Arc<dyn Hypervisor>;
    /// Two new hosts a running VM can move live between: a source named
    /// `source` and a destination.
    fn pair(&self, capacity: Capacity) -> (Arc<dyn Hypervisor>, Arc<dyn Hypervisor>);
    /// A destination like `to`, made so that the next move from the
    /// source of [`Env::pair`] to it fails.
    fn doomed(&self, to: &Incoming) -> Incoming;
    /// A template image every host can read, of at most [`DISK_MIB`].
    fn template(&self) -> &str;
    /// A folder every host reads and writes: saved states, exports.
    fn scratch(&self) -> &Path;
    /// A VM or network name unique to this run of the case (the hosts of
    /// several cases may share a daemon).
    fn name(&self, what: &str) -> String;
    /// Network `network` of host `host` (named as for [`Env::host`]): the
    /// peers its segment floods to, sorted (none without a segment);
    /// `None` when nothing of it is on the host.
    async fn network(&self, host: &str, network: &str) -> Option<Vec<SocketAddr>>;
    /// Whether the disk a host answered with `disk` exists (a file but on
    /// a volatile simulated host).
    fn has_disk(&self, disk: &str) -> bool {
        Path::new(disk).is_file()
    }
}

/// Every VM's disk.
const DISK_MIB: u64 = 32;

const ROOMY: Capacity = Capacity {
    cpus: 4,
    ram_mib: 1024,
    disk_mib: 1024,
    vm_slots: 4,
};

fn spec(env: &dyn Env, vm: &str, disk: &str) -> VmSpec {
    VmSpec {
        seed: None,
        name: vm.to_owned(),
        vcpus: 1,
        ram_mib: 64,
        disk_mib: DISK_MIB,
        disk: disk.to_owned(),
        nics: vec![Nic {
            bandwidth_mbps: None,
            mac: "52:54:00:4e:43:01".into(),
            network: env.name("lan"),
            segment: None,
        }],
    }
}

fn path_in(env: &dyn Env, name: &str) -> String {
    env.scratch().join(name).display().to_string()
}

/// Every operation repeated succeeds and changes nothing more; the same
/// call with a different spec is a `SpecMismatch`.
async fn lifecycle_is_idempotent(env: &dyn Env) {
    let h = env.host("h", ROOMY);
    let vm = env.name("vm");
    let mismatch = Err(HypervisorError::SpecMismatch { name: vm.clone() });

    let disk = h.prepare_disk(&vm, env.template(), DISK_MIB).await.unwrap();
    assert!(env.has_disk(&disk), "{disk}");
    assert_eq!(
        h.prepare_disk(&vm, env.template(), DISK_MIB).await.unwrap(),
        disk
    );
    assert_eq!(
        h.prepare_disk(&vm, env.template(), 2 * DISK_MIB).await,
        Err(HypervisorError::SpecMismatch { name: vm.clone() })
    );

    let spec = spec(env, &vm, &disk);
    h.define(&spec).await.unwrap();
    h.define(&spec).await.unwrap();
    let other = VmSpec {
        vcpus: 2,
        ..spec.clone()
    };
    assert_eq!(h.define(&other).await, mismatch);
    let info = h.info(&vm).await.unwrap().unwrap();
    assert_eq!((info.state, &info.spec), (VmState::Stopped, &spec));
    assert_eq!(h.list().await.unwrap(), vec![info]);

    h.start(&vm).await.unwrap();
    h.start(&vm).await.unwrap();
    let info = h.info(&vm).await.unwrap().unwrap();
    assert_eq!(info.state, VmState::Running);
    assert!(info.ready, "a VM without a seed is ready when it runs");

    h.destroy(&vm).await.unwrap();
    h.destroy(&vm).await.unwrap();
    assert_eq!(h.info(&vm).await.unwrap(), None);
    assert!(h.list().await.unwrap().is_empty());
    assert!(env.has_disk(&disk), "destroy keeps the disk");
    h.remove_disk(&vm).await.unwrap();
    h.remove_disk(&vm).await.unwrap();
    assert!(!env.has_disk(&disk));
}

/// What every adapter refuses, with the error the port names for it, and
/// what it accepts of a VM that is not there.
async fn refusals(env: &dyn Env) {
    let h = env.host("h", ROOMY);
    let ghost = env.name("ghost");
    let no_vm = HypervisorError::NoSuchVm(ghost.clone());

    assert_eq!(h.start(&ghost).await, Err(no_vm.clone()));
    let state = path_in(env, "ghost.state");
    assert_eq!(h.save(&ghost, &state).await, Err(no_vm.clone()));
    assert_eq!(h.outgoing(&ghost).await, Err(no_vm.clone()));
    assert_eq!(h.finish_incoming(&ghost).await, Err(no_vm.clone()));
    assert_eq!(h.console(&ghost, 100).await, Err(no_vm.clone()));
    assert_eq!(h.console_input(&ghost, b"x").await, Err(no_vm.clone()));
    let to = Incoming {
        vm: ghost.clone(),
        connect: "nowhere".into(),
        stream: None,
        definition: String::new(),
        incremental: false,
    };
    assert_eq!(h.migrate(&ghost, &to, &|_| {}).await, Err(no_vm.clone()));
    assert!(matches!(
        h.migrate(&env.name("other"), &to, &|_| {}).await,
        Err(HypervisorError::InvalidRequest(_))
    ));
    assert_eq!(h.info(&ghost).await.unwrap(), None);
    // Absent is fine.
    h.destroy(&ghost).await.unwrap();
    h.remove_disk(&ghost).await.unwrap();
    assert_eq!(
        h.export_disk(&ghost, &path_in(env, "ghost.disk")).await,
        Err(HypervisorError::NoDisk(ghost.clone()))
    );

    let missing = path_in(env, "no-such-image.qcow2");
    assert_eq!(
        h.prepare_disk(&ghost, &missing, DISK_MIB).await,
        Err(HypervisorError::NoImage(missing))
    );
    let unsaved = env.name("unsaved");
    let disk = h
        .prepare_disk(&unsaved, env.template(), DISK_MIB)
        .await
        .unwrap();
    assert_eq!(
        h.restore(&spec(env, &unsaved, &disk), &state).await,
        Err(HypervisorError::NoSavedState(state.clone()))
    );
    h.remove_disk(&unsaved).await.unwrap();

    let long = "a".repeat(129);
    for bad in ["", "../etc", "a/b", ".hidden", "a b", long.as_str()] {
        let invalid = |r: Result<(), HypervisorError>| {
            assert!(
                matches!(r, Err(HypervisorError::InvalidRequest(_))),
                "{bad:?}: {r:?}"
            )
        };
        invalid(
            h.prepare_disk(bad, env.template(), DISK_MIB)
                .await
                .map(|_| ()),
        );
        invalid(h.define(&spec(env, bad, "d")).await);
        invalid(h.start(bad).await);
        invalid(h.console(bad, 10).await.map(|_| ()));
    }
    let vm = env.name("vm");
    for zero in [
        VmSpec {
            vcpus: 0,
            ..spec(env, &vm, "d")
        },
        VmSpec {
            ram_mib: 0,
            ..spec(env, &vm, "d")
        },
    ] {
        assert!(matches!(
            h.define(&zero).await,
            Err(HypervisorError::InvalidRequest(_))
        ));
    }
    assert!(h.list().await.unwrap().is_empty(), "nothing was made");
}

/// Slots, vCPUs, RAM and disk are each enforced, at define, restore and
/// accepting a VM live, and nothing is kept of a refusal.
async fn capacity_is_enforced(env: &dyn Env) {
    let cap = Capacity {
        cpus: 2,
        ram_mib: 256,
        disk_mib: 2 * DISK_MIB + DISK_MIB / 2,
        vm_slots: 1,
    };
    let h = env.host("h", cap);
    let (a, b, c) = (env.name("a"), env.name("b"), env.name("c"));
    let a_disk = h.prepare_disk(&a, env.template(), DISK_MIB).await.unwrap();
    let b_disk = h.prepare_disk(&b, env.template(), DISK_MIB).await.unwrap();
    assert!(matches!(
        h.prepare_disk(&c, env.template(), DISK_MIB).await,
        Err(HypervisorError::NoRoom(_))
    ));

    let a_spec = spec(env, &a, &a_disk);
    h.define(&a_spec).await.unwrap();
    let err = h.define(&spec(env, &b, &b_disk)).await.unwrap_err();
    assert!(
        matches!(&err, HypervisorError::NoRoom(m) if m.contains("slots")),
        "{err}"
    );
    h.define(&a_spec).await.unwrap();
    let arriving = IncomingRequest {
        spec: spec(env, &c, "d"),
        disk_bytes: DISK_MIB << 20,
        uuid: "6e657074-756e-4500-8000-00000000c0de".into(),
        ready: true,
        base: None,
    };
    assert!(matches!(
        h.accept_incoming(&arriving).await,
        Err(HypervisorError::NoRoom(_))
    ));

    h.destroy(&a).await.unwrap();
    for too_big in [
        VmSpec {
            vcpus: 3,
            ..spec(env, &b, &b_disk)
        },
        VmSpec {
            ram_mib: 512,
            ..spec(env, &b, &b_disk)
        },
    ] {
        assert!(matches!(
            h.define(&too_big).await,
            Err(HypervisorError::NoRoom(_))
        ));
    }
    h.define(&spec(env, &b, &b_disk)).await.unwrap();
    assert_eq!(
        h.list().await.unwrap().len(),
        1,
        "nothing kept of a refusal"
    );

    h.remove_disk(&a).await.unwrap();
    h.prepare_disk(&c, env.template(), DISK_MIB).await.unwrap();
    h.destroy(&b).await.unwrap();
    h.remove_disk(&b).await.unwrap();
    h.remove_disk(&c).await.unwrap();
}

/// The paper's suspend and resume across hosts: a running VM's disk
/// exported and its memory saved on one host, both taken up by another,
/// where it runs again; each step repeated.
async fn saved_on_one_host_restored_on_another(env: &dyn Env) {
    let a = env.host("a", ROOMY);
    let b = env.host("b", ROOMY);
    let full = env.host(
        "full",
        Capacity {
            ram_mib: 32,
            ..ROOMY
        },
    );
    let vm = env.name("vm");
    let disk = a.prepare_disk(&vm, env.template(), DISK_MIB).await.unwrap();
    let spec = spec(env, &vm, &disk);
    a.define(&spec).await.unwrap();
    a.start(&vm).await.unwrap();

    let export = path_in(env, "repo/vm.qcow2");
    a.export_disk(&vm, &export).await.unwrap();
    a.export_disk(&vm, &export).await.unwrap();
    assert!(Path::new(&export).is_file());

    let state = path_in(env, "states/vm.state");
    a.save(&vm, &state).await.unwrap();
    assert_eq!(a.info(&vm).await.unwrap(), None, "save frees the host");
    assert!(a.list().await.unwrap().is_empty());
    a.save(&vm, &state).await.unwrap();
    a.remove_disk(&vm).await.unwrap();
    assert!(!env.has_disk(&disk));

    // No room on a host: refused, nothing defined.
    let full_disk = full.prepare_disk(&vm, &export, DISK_MIB).await.unwrap();
    let full_spec = VmSpec {
        disk: full_disk,
        ..spec.clone()
    };
    assert!(matches!(
        full.restore(&full_spec, &state).await,
        Err(HypervisorError::NoRoom(_))
    ));
    assert!(full.list().await.unwrap().is_empty());
    full.remove_disk(&vm).await.unwrap();

    let b_disk = b.prepare_disk(&vm, &export, DISK_MIB).await.unwrap();
    assert_ne!(b_disk, disk, "each host has its own disk");
    let b_spec = VmSpec {
        disk: b_disk,
        ..spec.clone()
    };
    b.restore(&b_spec, &state).await.unwrap();
    b.restore(&b_spec, &state).await.unwrap();
    let there = b.info(&vm).await.unwrap().unwrap();
    assert_eq!((there.state, &there.spec), (VmState::Running, &b_spec));
    let bigger = VmSpec {
        ram_mib: 128,
        ..b_spec.clone()
    };
    assert_eq!(
        b.restore(&bigger, &state).await,
        Err(HypervisorError::SpecMismatch { name: vm.clone() })
    );
    b.destroy(&vm).await.unwrap();
    b.remove_disk(&vm).await.unwrap();
}

/// A console gives at most what is asked of its end; input is bounded and
/// reaches only a running VM.
async fn console_bounds(env: &dyn Env) {
    let h = env.host("h", ROOMY);
    let vm = env.name("vm");
    let disk = h.prepare_disk(&vm, env.template(), DISK_MIB).await.unwrap();
    h.define(&spec(env, &vm, &disk)).await.unwrap();
    h.console(&vm, 1 << 20).await.unwrap();
    assert!(matches!(
        h.console_input(&vm, b"x").await,
        Err(HypervisorError::Failed {
            op: Op::Console,
            ..
        })
    ));
    h.start(&vm).await.unwrap();
    assert_eq!(h.console(&vm, 0).await.unwrap(), "");
    for n in [1, 16, 4096] {
        let text = h.console(&vm, n).await.unwrap();
        assert!(text.chars().count() as u64 <= n, "{n}: {text:?}");
    }
    assert!(matches!(
        h.console_input(&vm, &[b'x'; MAX_CONSOLE_INPUT + 1]).await,
        Err(HypervisorError::InvalidRequest(_))
    ));
    h.console_input(&vm, b"\n").await.unwrap();
    h.destroy(&vm).await.unwrap();
    h.remove_disk(&vm).await.unwrap();
}

/// The live move: the destination accepts (repeatably), a move that fails
/// leaves the VM running where it was, the move frees the source, a
/// repeated move finds nothing to move, and the destination completes
/// the VM (repeatably), running and ready on its own disk.
async fn a_running_vm_moves_live(env: &dyn Env) {
    let (a, b) = env.pair(ROOMY);
    let vm = env.name("vm");
    let disk = a.prepare_disk(&vm, env.template(), DISK_MIB).await.unwrap();
    let spec = spec(env, &vm, &disk);
    a.define(&spec).await.unwrap();
    assert_eq!(
        a.outgoing(&vm).await,
        Err(HypervisorError::NoSuchVm(vm.clone())),
        "only a running VM leaves live"
    );
    a.start(&vm).await.unwrap();

    let out = a.outgoing(&vm).await.unwrap();
    assert_eq!(
        (&out.spec, out.disk_bytes, out.ready),
        (&spec, DISK_MIB << 20, true)
    );
    let base = out.base.clone().expect("an overlay of the template");
    assert_eq!(base.template_image, env.template());

    // Another base than the destination's copy of the template (the
    // template was replaced since the source copied it), or none: the
    // whole disk is to be copied.
    let other = env.name("other");
    for base in [
        None,
        Some(DiskBase {
            base: format!("{}.qcow2", "0".repeat(64)),
            ..base.clone()
        }),
    ] {
        let whole = IncomingRequest {
            spec: VmSpec {
                name: other.clone(),
                ..spec.clone()
            },
            disk_bytes: out.disk_bytes,
            uuid: "6e657074-756e-4500-8000-0000000000ff".into(),
            ready: true,
            base,
        };
        assert!(!b.accept_incoming(&whole).await.unwrap().incremental);
        b.destroy(&other).await.unwrap();
        b.remove_disk(&other).await.unwrap();
    }

    let request = out.incoming_request(out.spec.clone());
    let to = b.accept_incoming(&request).await.unwrap();
    assert_eq!(b.accept_incoming(&request).await.unwrap(), to, "idempotent");
    assert_eq!(to.vm, vm);
    assert!(to.incremental, "the destination holds the same base");
    assert!(
        b.list().await.unwrap().is_empty(),
        "not defined before it arrives"
    );

    let doomed = env.doomed(&to);
    let err = a.migrate(&vm, &doomed, &|_| {}).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        a.info(&vm).await.unwrap().map(|v| v.state),
        Some(VmState::Running),
        "a failed move leaves the VM running here"
    );

    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let report = a
        .migrate(&vm, &to, &move |p| log.lock().unwrap().push(p))
        .await
        .unwrap();
    assert!(report.bytes > 0, "{report:?}");
    assert!(
        seen.lock().unwrap().iter().any(|p| p.bytes_done > 0),
        "progress was heard"
    );
    assert_eq!(a.info(&vm).await.unwrap(), None, "the source is freed");
    assert_eq!(
        a.migrate(&vm, &to, &|_| {}).await,
        Err(HypervisorError::NoSuchVm(vm.clone())),
        "moved already"
    );

    b.finish_incoming(&vm).await.unwrap();
    b.finish_incoming(&vm).await.unwrap();
    let there = b.info(&vm).await.unwrap().unwrap();
    assert!(there.state == VmState::Running && there.ready, "{there:?}");
    assert_ne!(there.spec.disk, disk, "on the destination's own disk");
    assert_eq!(
        b.outgoing(&vm).await.unwrap().base,
        Some(base),
        "an overlay of the same base there, so the next move copies little too"
    );
    assert_eq!(
        VmSpec {
            disk: disk.clone(),
            ..there.spec.clone()
        },
        spec
    );

    // The source's disk stays until it is removed.
    assert!(env.has_disk(&disk));
    a.remove_disk(&vm).await.unwrap();
    b.destroy(&vm).await.unwrap();
    b.remove_disk(&vm).await.unwrap();
    assert!(b.list().await.unwrap().is_empty());
}

/// A host's network joins a wider segment: made with its first peers,
/// joined again with another it floods to both, the same joins again
/// change nothing, and a network without a segment is only made. A host
/// whose VM is on the network is widened without redefining it; joined
/// networks go once no VM uses them, with the last VM on them or when the
/// next VM leaves the host.
async fn networks_join_wider_segments(env: &dyn Env) {
    let h = env.host("h", ROOMY);
    let (wan, plain) = (env.name("wan"), env.name("plain"));
    // Unique on the machine: the libvirt tests' are 0x4e....
    let vni = 0x4f_0000 + (std::process::id() & 0xffff);
    let p1: SocketAddr = "192.0.2.77:4789".parse().unwrap();
    let p2: SocketAddr = "192.0.2.78:4789".parse().unwrap();
    let segment = |peers: &[SocketAddr]| Segment {
        vni,
        port: 4789,
        peers: peers.to_vec(),
    };
    let join = |peers: &[SocketAddr]| NetworkJoin {
        network: wan.clone(),
        segment: Some(segment(peers)),
    };
    let no_segment = NetworkJoin {
        network: plain.clone(),
        segment: None,
    };

    assert_eq!(env.network("h", &wan).await, None);
    h.join_segments(&[join(&[p1])]).await.unwrap();
    assert_eq!(env.network("h", &wan).await, Some(vec![p1]));
    h.join_segments(&[join(&[p2])]).await.unwrap();
    assert_eq!(
        env.network("h", &wan).await,
        Some(vec![p1, p2]),
        "the peers already there are kept"
    );
    for _ in 0..2 {
        h.join_segments(&[join(&[p2, p1]), no_segment.clone()])
            .await
            .unwrap();
        assert_eq!(
            env.network("h", &wan).await,
            Some(vec![p1, p2]),
            "the same peers again change nothing"
        );
        assert_eq!(env.network("h", &plain).await, Some(vec![]));
    }
    h.join_segments(&[]).await.unwrap();

    let refused = |r: Result<(), HypervisorError>| {
        assert!(
            matches!(r, Err(HypervisorError::InvalidRequest(_))),
            "{r:?}"
        )
    };
    let mut bad = join(&[p1]);
    bad.segment.as_mut().unwrap().vni = 0;
    refused(h.join_segments(&[bad]).await);
    refused(h.join_segments(&[join(&[p1]), join(&[p2])]).await);
    for name in ["", "a/b", "-x"] {
        let bad = NetworkJoin {
            network: name.to_owned(),
            segment: None,
        };
        refused(h.join_segments(&[bad]).await);
    }

    // A VM on the joined network, as the Manager finds a VI's VMs still on
    // their source hosts.
    let vm = env.name("vm");
    let disk = h.prepare_disk(&vm, env.template(), DISK_MIB).await.unwrap();
    let mut spec = spec(env, &vm, &disk);
    spec.nics[0].network = wan.clone();
    spec.nics[0].segment = Some(segment(&[p1]));
    h.define(&spec).await.unwrap();
    h.start(&vm).await.unwrap();
    let p3: SocketAddr = "192.0.2.79:4789".parse().unwrap();
    h.join_segments(&[join(&[p3])]).await.unwrap();
    assert_eq!(env.network("h", &wan).await, Some(vec![p1, p2, p3]));
    let info = h.info(&vm).await.unwrap().unwrap();
    assert_eq!(
        (info.state, &info.spec),
        (VmState::Running, &spec),
        "the VM runs on, not redefined"
    );

    h.destroy(&vm).await.unwrap();
    assert_eq!(
        env.network("h", &wan).await,
        None,
        "gone with the last VM on it"
    );
    assert_eq!(
        env.network("h", &plain).await,
        None,
        "a joined network no VM uses goes when a VM leaves"
    );
    h.remove_disk(&vm).await.unwrap();
}

/// Runs each case as a test against each adapter: `sim::CASE`,
/// `sim_volatile::CASE` (the simulation in memory only) and
/// `libvirt::CASE`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sim {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let env = super::SimEnv::new(false);
                    super::$case(&env).await;
                }
            )*
        }
        mod sim_volatile {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let env = super::SimEnv::new(true);
                    super::$case(&env).await;
                    env.wrote_nothing();
                }
            )*
        }
        mod libvirt {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(env) = super::LibvirtEnv::new(stringify!($case)) else {
                        return;
                    };
                    super::$case(&env).await;
                }
            )*
        }
    };
}

conformance!(
    lifecycle_is_idempotent,
    refusals,
    capacity_is_enforced,
    saved_on_one_host_restored_on_another,
    console_bounds,
    a_running_vm_moves_live,
    networks_join_wider_segments,
);

/// Simulated hosts in one temporary folder.
struct SimEnv {
    dir: tempfile::TempDir,
    template: String,
    hosts: Mutex<HashMap<String, Arc<SimHypervisor>>>,
    volatile: bool,
}

impl SimEnv {
    fn new(volatile: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template.qcow2");
        std::fs::write(&template, b"template").unwrap();
        SimEnv {
            template: template.display().to_string(),
            dir,
            hosts: Mutex::default(),
            volatile,
        }
    }

    fn sim(&self, name: &str, capacity: Capacity) -> Arc<SimHypervisor> {
        let mut config = SimConfig::new(self.dir.path().join(name), capacity);
        if self.volatile {
            config = config.volatile();
        }
        let hv = Arc::new(SimHypervisor::new(config).unwrap());
        self.hosts
            .lock()
            .unwrap()
            .insert(name.to_owned(), hv.clone());
        hv
    }
}

impl SimEnv {
    /// A volatile host left nothing under its folder (saved states and
    /// exports go where the case named them, beside the hosts).
    fn wrote_nothing(&self) {
        for name in self.hosts.lock().unwrap().keys() {
            let root = self.dir.path().join(name);
            assert!(!root.exists(), "a volatile host wrote {}", root.display());
        }
    }
}

#[async_trait::async_trait]
impl Env for SimEnv {
    fn host(&self, name: &str, capacity: Capacity) -> Arc<dyn Hypervisor> {
        self.sim(name, capacity)
    }

    fn pair(&self, capacity: Capacity) -> (Arc<dyn Hypervisor>, Arc<dyn Hypervisor>) {
        (
            self.sim("source", capacity),
            self.sim("destination", capacity),
        )
    }

    fn doomed(&self, to: &Incoming) -> Incoming {
        // The simulation does not reach the destination: a fault stands
        // for the move failing midway.
        self.hosts.lock().unwrap()["source"].add_fault(Fault::times(Op::Migrate, 1));
        to.clone()
    }

    fn template(&self) -> &str {
        &self.template
    }

    fn scratch(&self) -> &Path {
        self.dir.path()
    }

    fn name(&self, what: &str) -> String {
        format!("vi1-{what}")
    }

    fn has_disk(&self, disk: &str) -> bool {
        if !self.volatile {
            return Path::new(disk).is_file();
        }
        self.hosts
            .lock()
            .unwrap()
            .values()
            .any(|hv| hv.holds_disk(Path::new(disk)))
    }

    async fn network(&self, host: &str, network: &str) -> Option<Vec<SocketAddr>> {
        let hv = self.hosts.lock().unwrap()[host].clone();
        hv.segment_peers(network).map(|mut p| {
            p.sort();
            p
        })
    }
}

/// Hosts of the test daemon, each an adapter over its own folder, and for
/// live moves a second daemon; everything named with a prefix of this
/// process and case, and removed afterwards, even when the case fails.
struct LibvirtEnv {
    uri: String,
    prefix: String,
    dir: tempfile::TempDir,
    template: String,
    second: Mutex<Option<SecondDaemon>>,
}

impl LibvirtEnv {
    fn new(case: &str) -> Option<Self> {
        let uri = libvirt_uri()?;
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template.qcow2");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&template)
            .arg("16M")
            .status()
            .unwrap();
        assert!(status.success());
        Some(LibvirtEnv {
            uri,
            prefix: format!("ntc{}-{case}", std::process::id()),
            template: template.display().to_string(),
            dir,
            second: Mutex::default(),
        })
    }
}

#[async_trait::async_trait]
impl Env for LibvirtEnv {
    fn host(&self, name: &str, capacity: Capacity) -> Arc<dyn Hypervisor> {
        Arc::new(adapter(&self.uri, &self.dir.path().join(name), capacity))
    }

    fn pair(&self, capacity: Capacity) -> (Arc<dyn Hypervisor>, Arc<dyn Hypervisor>) {
        let other = SecondDaemon::start();
        let destination = LibvirtHypervisor::new(LibvirtConfig {
            uri: other.uri.clone(),
            data_dir: self.dir.path().join("destination"),
            capacity,
            kvm: Some(false),
            public_bridge: None,
            migration: MigrationEndpoint {
                connect: Some(other.uri.clone()),
                stream: Some(other.stream.clone()),
            },
            migration_max_downtime: None,
        })
        .unwrap();
        *self.second.lock().unwrap() = Some(other);
        (self.host("source", capacity), Arc::new(destination))
    }

    fn doomed(&self, to: &Incoming) -> Incoming {
        // A daemon that is not there: the move fails before the VM stops.
        let socket = self.dir.path().join("no-daemon.sock");
        Incoming {
            connect: format!("qemu+unix:///system?socket={}", socket.display()),
            ..to.clone()
        }
    }

    fn template(&self) -> &str {
        &self.template
    }

    fn scratch(&self) -> &Path {
        self.dir.path()
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// From the daemon's networks and the network's VXLAN device, read as
    /// the adapter reads it; the hosts share the daemon, so any host's.
    async fn network(&self, _host: &str, network: &str) -> Option<Vec<SocketAddr>> {
        let defined = names(&self.uri, &["net-list", "--all", "--name"])
            .iter()
            .any(|n| n == network);
        let probe = adapter(&self.uri, &self.dir.path().join("probe"), ROOMY);
        let peers = probe.segment_peers(network).await.unwrap();
        match (defined, peers) {
            (false, None) => None,
            (_, peers) => {
                let mut peers = peers.unwrap_or_default();
                peers.sort();
                Some(peers)
            }
        }
    }
}

impl Drop for LibvirtEnv {
    // Never panics (it runs while a failed case unwinds).
    fn drop(&mut self) {
        for (list, stop, undefine) in [
            ("list", "destroy", "undefine"),
            ("net-list", "net-destroy", "net-undefine"),
        ] {
            let (_, names) = virsh(&self.uri, &[list, "--all", "--name"]);
            for name in names.lines().map(str::trim) {
                if name.starts_with(&self.prefix) {
                    if list == "net-list" {
                        remove_tunnels(&self.uri, name);
                    }
                    virsh(&self.uri, &[stop, name]);
                    virsh(&self.uri, &[undefine, name]);
                }
            }
        }
    }
}

/// Removes the VXLAN devices on network `net`'s bridge: they outlive the
/// network (the adapter removes them with it, a failed case may not).
fn remove_tunnels(uri: &str, net: &str) {
    let (_, info) = virsh(uri, &["net-info", net]);
    let Some(bridge) = info.lines().find_map(|l| l.strip_prefix("Bridge:")) else {
        return;
    };
    let Ok(out) = Command::new("ip")
        .args(["-details", "-json", "link", "show", "master", bridge.trim()])
        .output()
    else {
        return;
    };
    let ports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    for port in ports.as_array().into_iter().flatten() {
        if port["linkinfo"]["info_kind"] == "vxlan" {
            if let Some(dev) = port["ifname"].as_str() {
                let _ = Command::new("ip").args(["link", "del", dev]).output();
            }
        }
    }
}
