//! Suspend and resume. A suspended VI's VMs are saved and their disks
//! moved to the image repository, and its hosts are freed "for future
//! reallocation"; resume places it again (possibly on other hosts) with the
//! same addresses. Each runs as a durable job.
//!
//! A suspended VI's files live in the image repository, which every host
//! reaches (as template images do):
//!
//! ```text
//! <image_dir>/suspended/<vi>/<vm>.state   saved memory
//! <image_dir>/suspended/<vi>/<vm>.disk    exported disk
//! <image_dir>/saved-templates/<id>.img    a VM saved as a template
//! ```

use neptune_types::ViId;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use neptune_hypervisor::VmSpec;
use neptune_lifecycle::Event;
use neptune_store::{Reservation, Transition, ViRecord};

use super::access::visible;
use super::placement::{gateway_of, wiring, Placing, Target};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, JobKind, Step};
use crate::{now_ms, AppState};

/// Where a suspended VI's states and disks are kept.
pub fn suspended_dir(state: &AppState, vi: ViId) -> PathBuf {
    state
        .config
        .image_dir
        .join("suspended")
        .join(vi.uuid().simple().to_string())
}

/// A path as the job steps carry it.
pub(super) fn path_string(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

/// Suspends a running VI (its owner or an administrator): every VM's
/// memory is saved and its disk copied to the image repository, then the
/// hosts are freed.
pub async fn suspend(state: &AppState, caller: &Caller, id: ViId) -> ApiResult<ViRecord> {
    let vi = visible(state, caller, id).await?;
    vi.state.next(Event::Suspend)?;
    let vms = state.store.vms(vi.id).await?;
    let mut running = running_specs(state, &vms).await?;
    let dir = suspended_dir(state, vi.id);
    let mut saves = Vec::new();
    let mut exports = Vec::new();
    let mut drops = Vec::new();
    for v in &vms {
        let vm = jobs::vm_name(vi.id, &v.node_id);
        let spec = running.remove(&vm).ok_or_else(|| {
            ApiError::Conflict(format!(
                "VM {vm} (node {}) is not on its host: the VI needs an operator",
                v.node_id
            ))
        })?;
        let export = path_string(dir.join(format!("{vm}.disk")));
        saves.push(Step::Save {
            host: v.host_id,
            state: path_string(dir.join(format!("{vm}.state"))),
            spec: spec.clone(),
        });
        exports.push(Step::ExportDisk {
            host: v.host_id,
            vm: vm.clone(),
            dest: export.clone(),
        });
        drops.push(Step::DropDisk {
            host: v.host_id,
            vm,
            export,
            size_mib: spec.disk_mib,
        });
    }
    let steps: Vec<Step> = [Step::MakeSavedDir {
        dir: path_string(dir.clone()),
    }]
    .into_iter()
    .chain(saves)
    .chain(exports)
    .chain(drops)
    .chain([Step::ReleaseHosts])
    .collect();
    super::deploy::start_job(state, caller, &vi, JobKind::Suspend, &steps).await
}

/// The specs of `vms` as their hosts run them (disk paths included), by
/// VM name: what puts a VM back exactly as it was after a failed suspend
/// or migration.
pub(super) async fn running_specs(
    state: &AppState,
    vms: &[neptune_store::VmRecord],
) -> ApiResult<HashMap<String, VmSpec>> {
    let hosts = state.store.list_hosts().await?;
    let mut running: HashMap<String, VmSpec> = HashMap::new();
    let mut asked = HashSet::new();
    for v in vms {
        if !asked.insert(v.host_id) {
            continue;
        }
        let host = hosts
            .iter()
            .find(|h| h.id == v.host_id)
            .ok_or_else(|| ApiError::Conflict(format!("host {} is gone", v.host_id)))?;
        let listed = state.jobs.vms_on(host).await.map_err(|e| {
            ApiError::Conflict(format!(
                "host {} cannot be asked for its VMs now: {e:#}",
                host.name
            ))
        })?;
        running.extend(listed.into_iter().map(|info| (info.name, info.spec)));
    }
    Ok(running)
}

/// Resumes a suspended VI (its owner or an administrator): placed again in
/// the datacenter it last ran in (on whichever hosts have room now), every
/// VM's disk copied back and its memory restored. Addresses are kept.
pub async fn resume(state: &AppState, caller: &Caller, id: ViId) -> ApiResult<ViRecord> {
    let vi = visible(state, caller, id).await?;
    resume_in(state, caller, &vi, None, None).await
}

/// Resumes `vi` in datacenter `to` (by default where it last ran), on the
/// hosts `manual` names (by default wherever there is room). Resumed in
/// another datacenter, its Home Addresses follow it: visitors there, bound
/// at the home switch, no longer delivered where it was.
pub(super) async fn resume_in(
    state: &AppState,
    caller: &Caller,
    vi: &ViRecord,
    to: Option<&neptune_store::DatacenterRecord>,
    manual: Option<&HashMap<String, String>>,
) -> ApiResult<ViRecord> {
    let vi = vi.clone();
    let next = vi.state.next(Event::Resume)?;
    let home = vi
        .home_datacenter_id
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("suspended VI {} has no home", vi.id)))?;
    let from = vi.location_id.unwrap_or(home);
    let dcs = state.store.list_datacenters().await?;
    let dc = match to {
        Some(dc) => dc.clone(),
        None => dcs
            .iter()
            .find(|d| d.id == from)
            .cloned()
            .ok_or(ApiError::NotFound("datacenter"))?,
    };
    // Guests keep the configuration they were given at home.
    let home_dc = dcs
        .iter()
        .find(|d| d.id == home)
        .ok_or(ApiError::NotFound("datacenter"))?;
    let topo = super::design::design_of(&vi)?;
    let addresses = crate::plan::committed(&vi)?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "suspended VI {} has no address plan",
            vi.id
        ))
    })?;
    let dir = suspended_dir(state, vi.id);
    let keys = super::deploy::owner_keys(state, vi.owner_id).await?;
    let public_gateway = gateway_of(home_dc)?;
    let target = Target {
        vi: &vi,
        topo: &topo,
        dc: &dc,
        manual,
        pins: &[],
    };
    let follow = if dc.id == from {
        Vec::new()
    } else {
        super::migrate::follow(&vi, home, from, dc.id)?
    };
    let mut placing = Placing::start(state, caller, target);
    let (resuming, job) = loop {
        let (plan, hosts) = placing.plan().await?;
        let wiring = wiring(state, &topo, &addresses, &plan.records, &hosts).await?;
        let mut copies = Vec::new();
        let mut restores = Vec::new();
        let mut readies = Vec::new();
        for node in &topo.nodes {
            let placed = plan
                .records
                .iter()
                .find(|r| r.node_id == node.id.as_str())
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("node {} is not placed", node.id))
                })?;
            let vm = jobs::vm_name(vi.id, node.id.as_str());
            let disk = path_string(dir.join(format!("{vm}.disk")));
            copies.push(Step::PrepareDisk {
                host: placed.host_id,
                vm: vm.clone(),
                image: disk.clone(),
                size_mib: node.disk.0,
            });
            restores.push(Step::Restore {
                host: placed.host_id,
                spec: jobs::vm_spec(
                    vi.id,
                    &topo,
                    node,
                    placed.host_id,
                    &wiring,
                    jobs::GuestConfig {
                        addresses: &addresses,
                        ssh_keys: &keys,
                        public_gateway,
                    },
                ),
                state: path_string(dir.join(format!("{vm}.state"))),
                image: Some(disk),
            });
            readies.push(Step::AwaitReady {
                host: placed.host_id,
                vm,
            });
        }
        let steps: Vec<Step> = [Step::HoldHosts]
            .into_iter()
            .chain(copies)
            .chain(restores)
            .chain(readies)
            .chain(follow.iter().cloned())
            .chain([Step::DeleteSaved {
                dir: path_string(dir.clone()),
            }])
            .collect();
        let job = state
            .jobs
            .new_job(vi.id, JobKind::Resume, &steps)
            .map_err(ApiError::Internal)?;
        let change = Transition {
            to: next,
            actor: caller.user.id,
            at: now_ms(),
            reject_reason: None,
            home_datacenter_id: None,
            usage: None,
        };
        let reservation = Reservation {
            vms: plan.records,
            job: Some(job.clone()),
            ..Default::default()
        };
        if let Some(resuming) = placing.commit(&change, &reservation).await? {
            break (resuming, job);
        }
    };
    drop(placing);
    state.jobs.spawn(job.id);
    Ok(resuming)
}
