//! Terminating a VI: a VI with VMs on hosts is taken off them by a job
//! that also frees its hosts, its addresses and what a suspend saved of
//! it; one without ends at once.

use neptune_lifecycle::{Event, ViState};
use neptune_store::{Transition, ViRecord, VmRecord};
use neptune_types::{HostId, ViId};

use super::access::visible;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::jobs::{self, JobKind, Step};
use crate::{now_ms, AppState};

/// Terminates a VI (its owner or an administrator).
pub async fn terminate(state: &AppState, caller: &Caller, id: ViId) -> ApiResult<ViRecord> {
    let vi = visible(state, caller, id).await?;
    let to = vi.state.next(Event::Terminate)?;
    if to == ViState::Terminating {
        // A VI caught in a migration may have VMs on either side.
        let mut vms = state.store.vms(vi.id).await?;
        vms.extend(state.store.vm_moves(vi.id).await?);
        let covers = crate::plan::covers_of(vi.id, &state.store.owned_addresses_of(vi.id).await?)?;
        let saved = super::suspend::suspended_dir(state, vi.id);
        let mut steps = steps(vi.id, &vms, covers, saved.to_string_lossy().into_owned());
        // Its Home Addresses leave every switch (before the addresses are
        // freed for another VI).
        let unroute = unroute(state, &vi).await?;
        let at = steps.len() - 2;
        steps.splice(at..at, unroute);
        super::deploy::start_job(state, caller, &vi, JobKind::Terminate, &steps).await
    } else {
        let change = Transition {
            to,
            actor: caller.user.id,
            at: now_ms(),
            reject_reason: None,
            home_datacenter_id: None,
            usage: None,
        };
        Ok(state.store.transition_vi(vi.id, vi.state, &change).await?)
    }
}

/// The steps that take a VI's Home Addresses off every switch: no longer
/// delivered anywhere, no longer bound at home.
async fn unroute(state: &AppState, vi: &ViRecord) -> ApiResult<Vec<Step>> {
    let Some(home) = vi.home_datacenter_id else {
        return Ok(Vec::new());
    };
    let addresses =
        crate::switching::home_addresses(vi).map_err(crate::error::ApiError::Internal)?;
    let key = crate::switching::tunnel_key(vi.id);
    let dcs = state.store.list_datacenters().await?;
    // Steps of one kind in a row run together.
    let unvisits = addresses.iter().flat_map(|&address| {
        dcs.iter().map(move |dc| Step::Unvisit {
            datacenter: dc.id,
            address,
            key,
        })
    });
    let unbinds = addresses.iter().map(|&address| Step::Route {
        address,
        home,
        to: home,
        from: home,
        key,
    });
    Ok(unvisits.chain(unbinds).collect())
}

/// The steps that take a VI off its hosts and free them, its addresses
/// and what a suspend saved of it. Every destroy comes before every disk
/// removal: steps of one kind in a row run as one batch, 16 at a time,
/// where alternating them made every batch a single step.
fn steps(vi: ViId, vms: &[VmRecord], covers: Vec<(String, String)>, saved: String) -> Vec<Step> {
    let names: Vec<(HostId, String)> = vms
        .iter()
        .map(|v| (v.host_id, jobs::vm_name(vi, &v.node_id)))
        .collect();
    let destroys = names.iter().map(|(host, vm)| Step::Destroy {
        host: *host,
        vm: vm.clone(),
    });
    let removals = names.iter().map(|(host, vm)| Step::RemoveDisk {
        host: *host,
        vm: vm.clone(),
    });
    destroys
        .chain(removals)
        .chain([
            Step::ReleaseHosts,
            Step::ReleaseAddresses { covers },
            Step::DeleteSaved { dir: saved },
        ])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn terminate_destroys_every_vm_before_removing_any_disk() {
        let vi = ViId::from(Uuid::from_u128(7));
        let vms: Vec<VmRecord> = (0..3)
            .map(|i| VmRecord {
                vi_id: vi,
                node_id: format!("n{i}"),
                host_id: HostId::from(Uuid::from_u128(i)),
                vcpus: 1,
                ram_mib: 512,
                disk_mib: 4096,
                uplink_mbps: 0,
            })
            .collect();
        let steps = steps(vi, &vms, Vec::new(), "saved".to_owned());
        let ops: Vec<String> = steps
            .iter()
            .map(|s| {
                s.name()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            ops,
            [
                "destroy", "destroy", "destroy", "remove", "remove", "remove", "release",
                "release", "delete"
            ],
            "{ops:?}"
        );
        // Each kind's steps form one batch of the job engine.
        assert_eq!(jobs::batch_end(&steps, 0), 3);
        assert_eq!(jobs::batch_end(&steps, 3), 6);
    }
}
