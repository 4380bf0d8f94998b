//! Drift between what the store says and what the hosts run, found by
//! asking every Agent for its VMs and put right where that is safe:
//!
//! - a VM of a running VI that is defined but stopped is started again (the
//!   VI's wanted state is running);
//! - a VM of a running VI that is gone from its host turns the VI `failed`,
//!   with a reason naming the VM and the host, for its owner or an
//!   administrator to terminate (a VI is never half-redeployed behind their
//!   back);
//! - a VM of Neptune's (named `nt-...`) that no settled VI places on that
//!   host (left behind by a crash, an undo that failed, a host that came
//!   back) is destroyed and its disk removed.
//!
//! - the datacenters' Edge Service Switches are brought in line with the
//!   store (see [`crate::switching::repair`]).
//!
//! VIs with a job in progress belong to their job and are left alone, and
//! so are `failed` VIs (an operator looks at them). The hosts are listed
//! before the store is read, so any VM a job made after the listing belongs
//! to a VI that the store already shows in progress; a VM reported missing
//! is listed again, after the store read, before its VI is failed.

use neptune_types::HostId;
use neptune_types::{UserId, ViId};
use std::collections::{HashMap, HashSet};

use neptune_api::{FailedVi, ReconcileReport as Report};
use neptune_hypervisor::{VmInfo, VmState};
use neptune_lifecycle::{Event, ViState};
use neptune_store::{HostRecord, HostState, StoreError, Transition, ViRecord};

use crate::{jobs, now_ms, AppState};

/// The VI a VM name belongs to: `nt-<first 12 hex digits of the VI id>-<node>`.
fn vi_prefix(vm: &str) -> Option<&str> {
    vm.strip_prefix("nt-")?
        .get(..12)
        .filter(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn settled(s: ViState) -> bool {
    !s.is_in_progress() && s != ViState::Failed
}

/// One pass over every ready host.
pub async fn reconcile(state: &AppState) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let hosts: Vec<HostRecord> = state
        .store
        .list_hosts()
        .await?
        .into_iter()
        .filter(|h| h.state == HostState::Ready)
        .collect();
    let mut listed: Vec<(&HostRecord, Vec<VmInfo>)> = Vec::new();
    for host in &hosts {
        match state.jobs.vms_on(host).await {
            Ok(vms) => listed.push((host, vms)),
            Err(e) => {
                tracing::warn!(
                    host = host.name,
                    error = format!("{e:#}"),
                    "cannot list VMs"
                );
                report.hosts_unreachable.push(host.name.clone());
            }
        }
    }
    report.hosts_checked = listed.len();

    // Read after listing: see the module's comment.
    let vis = state.store.list_vis(None).await?;
    let by_prefix: HashMap<String, &ViRecord> = vis
        .iter()
        .map(|v| (v.id.uuid().simple().to_string()[..12].to_owned(), v))
        .collect();
    let mut expected: HashMap<(HostId, String), &ViRecord> = HashMap::new();
    for vi in vis.iter().filter(|v| v.state == ViState::Running) {
        for vm in state.store.vms(vi.id).await? {
            expected.insert((vm.host_id, jobs::vm_name(vi.id, &vm.node_id)), vi);
        }
    }

    let mut missing: HashMap<HostId, Vec<String>> = HashMap::new();
    for (host, vms) in &listed {
        let present: HashSet<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        for (host_id, name) in expected.keys() {
            if *host_id == host.id && !present.contains(name.as_str()) {
                missing.entry(host.id).or_default().push(name.clone());
            }
        }
        for vm in vms {
            let key = (host.id, vm.name.clone());
            if expected.contains_key(&key) {
                if vm.state == VmState::Stopped {
                    start(state, host, &vm.name, &mut report).await;
                }
                continue;
            }
            let Some(prefix) = vi_prefix(&vm.name) else {
                continue; // not Neptune's
            };
            let owner = by_prefix.get(prefix);
            if owner.is_some_and(|vi| !settled(vi.state)) {
                continue;
            }
            reap(state, host, &vm.name, owner.map(|v| v.id), &mut report).await;
        }
    }

    for (host_id, names) in missing {
        let Some(host) = hosts.iter().find(|h| h.id == host_id) else {
            continue;
        };
        // Listed again now that the store has been read: a VM that a job
        // made meanwhile shows up here.
        let again = match state.jobs.vms_on(host).await {
            Ok(vms) => vms,
            Err(_) => continue,
        };
        for name in names {
            if again.iter().any(|v| v.name == name) {
                continue;
            }
            let Some(vi) = expected.get(&(host_id, name.clone())) else {
                continue;
            };
            let reason = format!("VM {name} is gone from host {}", host.name);
            fail(state, vi, &reason, &mut report).await;
        }
    }
    let switches = crate::switching::repair(state.store.as_ref()).await?;
    report.switch_entries_applied = switches.applied;
    report.switch_entries_removed = switches.removed;
    report.switches_unreachable = switches.unreachable;
    Ok(report)
}

async fn start(state: &AppState, host: &HostRecord, vm: &str, report: &mut Report) {
    let done = async {
        state
            .jobs
            .hypervisor_for(host)
            .await?
            .start(vm)
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    match done {
        Ok(()) => {
            tracing::info!(host = host.name, vm, "started a stopped VM of a running VI");
            report.started.push(format!("{}/{vm}", host.name));
        }
        Err(e) => report.errors.push(format!("{}/{vm}: {e:#}", host.name)),
    }
}

async fn reap(
    state: &AppState,
    host: &HostRecord,
    vm: &str,
    vi: Option<ViId>,
    report: &mut Report,
) {
    // The VI may have started a job since the store was read.
    if let Some(id) = vi {
        match state.store.vi(id).await {
            Ok(v) if !settled(v.state) => return,
            Ok(v) if v.state == ViState::Running => {
                let placed = match state.store.vms(id).await {
                    Ok(placed) => placed,
                    // Not knowing where the VI is, leave its VMs alone.
                    Err(err) => {
                        tracing::warn!(vi = %id, error = %err, "cannot read where the VI is; leaving its VMs");
                        return;
                    }
                };
                if placed
                    .iter()
                    .any(|p| p.host_id == host.id && jobs::vm_name(id, &p.node_id) == vm)
                {
                    return;
                }
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => {
                report.errors.push(format!("{}/{vm}: {e}", host.name));
                return;
            }
        }
    }
    let done = async {
        let hv = state.jobs.hypervisor_for(host).await?;
        hv.destroy(vm).await?;
        hv.remove_disk(vm).await?;
        anyhow::Ok(())
    }
    .await;
    match done {
        Ok(()) => {
            tracing::warn!(
                host = host.name,
                vm,
                "destroyed a VM that no VI places there"
            );
            report.reaped.push(format!("{}/{vm}", host.name));
        }
        Err(e) => report.errors.push(format!("{}/{vm}: {e:#}", host.name)),
    }
}

async fn fail(state: &AppState, vi: &ViRecord, reason: &str, report: &mut Report) {
    if report.failed.iter().any(|f| f.vi == vi.id) {
        return;
    }
    let Ok(to) = ViState::Running.next(Event::Fail) else {
        return;
    };
    let change = Transition {
        to,
        actor: UserId::nil(),
        at: now_ms(),
        reject_reason: Some(reason.to_owned()),
        home_datacenter_id: None,
        usage: None,
    };
    match state
        .store
        .transition_vi(vi.id, ViState::Running, &change)
        .await
    {
        Ok(_) => {
            tracing::warn!(vi = %vi.id, reason, "VI failed");
            report.failed.push(FailedVi {
                vi: vi.id,
                reason: reason.to_owned(),
            });
        }
        // Its state changed meanwhile (a suspend, a terminate): not drift.
        Err(StoreError::Conflict { .. }) => {}
        Err(e) => report.errors.push(format!("VI {}: {e}", vi.id)),
    }
}

/// Runs a pass every `every`, until its task is dropped.
pub async fn run(state: AppState, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await; // the first tick is immediate: let the Manager settle first
    loop {
        tick.tick().await;
        match reconcile(&state).await {
            Ok(r) if r.started.is_empty() && r.failed.is_empty() && r.reaped.is_empty() => {}
            Ok(r) => tracing::info!(
                started = r.started.len(),
                failed = r.failed.len(),
                reaped = r.reaped.len(),
                "reconciled drift"
            ),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "reconciliation pass failed"),
        }
    }
}
