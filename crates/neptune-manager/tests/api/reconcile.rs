//! Reconciliation: drift between the store and the hosts put right.

use super::*;

/// Drift between the store and a host, put right by a reconciliation pass:
/// a stopped VM started, a VM gone failing its VI, a leaked VM destroyed,
/// a VM that is not Neptune's left alone.
pub(crate) async fn drift_is_reconciled(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    let id = m.running_vi(&p, "cluster", 3).await;
    let gone = m.running_vi(&p, "line", 2).await;
    let (uuid, gone_uuid): (ViId, ViId) = (id.parse().unwrap(), gone.parse().unwrap());
    alice.act(gone_uuid, "terminate").await.unwrap();
    let v = m
        .wait_detail(&p.alice, gone_uuid, ViState::Terminating)
        .await;
    assert_eq!(v.vi.state, ViState::Terminated);

    let sim = m.sims.sim("host0");
    let name = |vi: &str, node: &str| format!("nt-{}-{node}", &vi.replace('-', "")[..12]);
    let spec_of = |vm: &str, list: &[neptune_hypervisor::VmInfo]| {
        list.iter().find(|v| v.name == vm).unwrap().spec.clone()
    };
    let list = sim.list().await.unwrap();
    // head: saved away and defined again, stopped.
    let head = name(&id, "head");
    let head_spec = spec_of(&head, &list);
    let state = m.dir.path().join("head.state");
    sim.save(&head, state.to_str().unwrap()).await.unwrap();
    sim.define(&head_spec).await.unwrap();
    // worker2: gone.
    let worker2 = name(&id, "worker2");
    sim.destroy(&worker2).await.unwrap();
    // A leftover of the terminated VI, and a VM that is not Neptune's.
    let leaked = name(&gone, "node0");
    let image = m.dir.path().join("images/debian-12.qcow2");
    for vm in [leaked.as_str(), "operators-own"] {
        let disk = sim
            .prepare_disk(vm, image.to_str().unwrap(), 10)
            .await
            .unwrap();
        sim.define(&neptune_hypervisor::VmSpec {
            name: vm.to_owned(),
            disk,
            ..head_spec.clone()
        })
        .await
        .unwrap();
    }

    let report = admin.reconcile().await.unwrap();
    assert_eq!(report.hosts_checked, 1, "{report:?}");
    assert_eq!(report.started, [format!("host0/{head}")], "{report:?}");
    assert_eq!(report.reaped, [format!("host0/{leaked}")], "{report:?}");
    assert_eq!(report.failed[0].vi, uuid, "{report:?}");
    assert!(
        report.failed[0]
            .reason
            .contains(&format!("VM {worker2} is gone from host host0")),
        "{report:?}"
    );
    assert!(report.errors.is_empty(), "{report:?}");

    let list = sim.list().await.unwrap();
    let state_of = |vm: &str| list.iter().find(|v| v.name == vm).map(|v| v.state);
    assert_eq!(state_of(&head), Some(neptune_hypervisor::VmState::Running));
    assert_eq!(state_of(&leaked), None, "the leftover is destroyed");
    assert!(!sim.disk_path(&leaked).exists(), "with its disk");
    assert!(
        state_of("operators-own").is_some(),
        "not Neptune's: left alone"
    );
    let v = alice.vi(uuid).await.unwrap();
    assert_eq!(v.vi.state, ViState::Failed, "{v:?}");

    // A second pass finds nothing more to do; the failed VI is left to its owner.
    let again = admin.reconcile().await.unwrap();
    assert!(
        again.started.is_empty() && again.reaped.is_empty() && again.failed.is_empty(),
        "{again:?}"
    );
    alice.act(uuid, "terminate").await.unwrap();
    let v = m.wait_detail(&p.alice, uuid, ViState::Terminating).await;
    assert_eq!(v.vi.state, ViState::Terminated, "{v:?}");
    let left: Vec<String> = sim
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(left, vec!["operators-own".to_owned()]);
}
