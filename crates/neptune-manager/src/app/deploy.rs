//! Putting a placed VI on its hosts: the deploy job's steps (every VM's
//! disk prepared from its template, every VM defined with its seed, started,
//! and awaited until its guest is ready), starting a job, and deploying an
//! accepted VI again after a deploy that rolled back.

use neptune_lifecycle::Event;
use neptune_store::{TemplateRecord, Transition, ViRecord, VmRecord};
use neptune_topology::Topology;
use neptune_types::ViId;
use neptune_types::{DatacenterId, UserId};

use super::access::visible;
use super::placement::{gateway_of, wiring};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, JobKind, Step};
use crate::wiring::Wiring;
use crate::{now_ms, AppState};

/// Where a VI is put, and how its guests are configured.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    pub topo: &'a Topology,
    pub vms: &'a [VmRecord],
    pub wiring: &'a Wiring,
    pub addresses: &'a neptune_ipam::Plan,
    /// The home datacenter's gateway, which entry points route through.
    pub public_gateway: Option<std::net::Ipv4Addr>,
    /// The home datacenter, whose switch delivers the Home Addresses.
    pub home: DatacenterId,
}

/// The deploy steps of a placed VI: prepare every VM's disk from its
/// template, define every VM, start every VM, wait until every guest is
/// ready, and have the home switch deliver its Home Addresses.
pub async fn steps(state: &AppState, vi: &ViRecord, at: Layout<'_>) -> ApiResult<Vec<Step>> {
    let (owner, vi) = (vi.owner_id, vi.id);
    let mut copies = Vec::new();
    let mut defines = Vec::new();
    let mut starts = Vec::new();
    let mut readies = Vec::new();
    let keys = owner_keys(state, owner).await?;
    let mut templates: std::collections::HashMap<String, TemplateRecord> =
        std::collections::HashMap::new();
    for node in &at.topo.nodes {
        let placed = at
            .vms
            .iter()
            .find(|v| v.node_id == node.id.as_str())
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("node {} is not placed", node.id)))?;
        // A VI's nodes mostly share a few templates: each is read once.
        let name = super::templates::name_of(state, node);
        let template = match templates.get(name) {
            Some(t) => t.clone(),
            None => {
                let t = super::templates::of_node(state, owner, node).await?;
                templates.insert(name.to_owned(), t.clone());
                t
            }
        };
        super::templates::require_software(node, &template)?;
        let vm = jobs::vm_name(vi, node.id.as_str());
        copies.push(Step::PrepareDisk {
            host: placed.host_id,
            vm: vm.clone(),
            image: template.image_path.clone(),
            size_mib: node.disk.0,
        });
        defines.push(Step::Define {
            host: placed.host_id,
            spec: jobs::vm_spec(
                vi,
                at.topo,
                node,
                placed.host_id,
                at.wiring,
                jobs::GuestConfig {
                    addresses: at.addresses,
                    ssh_keys: &keys,
                    public_gateway: at.public_gateway,
                },
            ),
            image: template.image_path,
        });
        starts.push(Step::Start {
            host: placed.host_id,
            vm: vm.clone(),
        });
        readies.push(Step::AwaitReady {
            host: placed.host_id,
            vm,
        });
    }
    let key = crate::switching::tunnel_key(vi);
    let visits = at.addresses.entry_points.iter().map(|e| Step::Visit {
        datacenter: at.home,
        address: e.home_address,
        key,
    });
    Ok(copies
        .into_iter()
        .chain(defines)
        .chain(starts)
        .chain(readies)
        .chain(visits)
        .collect())
}

/// The SSH public keys of a VI's owner, which its guests accept.
pub async fn owner_keys(state: &AppState, owner: UserId) -> ApiResult<Vec<String>> {
    Ok(state
        .store
        .ssh_keys(owner)
        .await?
        .into_iter()
        .map(|k| k.public_key)
        .collect())
}

/// Creates a job for `kind`, moving the VI to the job's state, and runs it.
pub async fn start_job(
    state: &AppState,
    caller: &Caller,
    vi: &ViRecord,
    kind: JobKind,
    steps: &[Step],
) -> ApiResult<ViRecord> {
    let job = state
        .jobs
        .new_job(vi.id, kind, steps)
        .map_err(ApiError::Internal)?;
    let event = match kind {
        JobKind::Deploy => Event::Deploy,
        JobKind::Suspend => Event::Suspend,
        JobKind::Resume => Event::Resume,
        JobKind::Terminate => Event::Terminate,
        JobKind::Migrate => Event::Migrate,
        JobKind::SaveTemplate => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "saving a template leaves the VI's state alone"
            )))
        }
    };
    let change = Transition {
        to: vi.state.next(event)?,
        actor: caller.user.id,
        at: now_ms(),
        reject_reason: None,
        home_datacenter_id: None,
        usage: None,
    };
    let vi = state.store.start_job(&job, vi.state, &change).await?;
    state.jobs.spawn(job.id);
    Ok(vi)
}

/// Starts the deploy `job` stored with `vi`'s acceptance: the VI moves to
/// `deploying` and the job runs. Should the VI have moved meanwhile (the
/// job engine of another Manager moves it too, see
/// `jobs::Jobs::run`), it is read again.
pub async fn begin(
    state: &AppState,
    caller: &Caller,
    vi: &ViRecord,
    job: &neptune_store::JobRecord,
) -> ApiResult<ViRecord> {
    let change = Transition {
        to: vi.state.next(Event::Deploy)?,
        actor: caller.user.id,
        at: now_ms(),
        reject_reason: None,
        home_datacenter_id: None,
        usage: None,
    };
    let deploying = match state.store.transition_vi(vi.id, vi.state, &change).await {
        Ok(vi) => vi,
        Err(neptune_store::StoreError::Conflict { .. }) => state.store.vi(vi.id).await?,
        Err(e) => return Err(e.into()),
    };
    state.jobs.spawn(job.id);
    Ok(deploying)
}

/// Deploys an accepted VI again on the hosts and addresses it holds, after
/// a deploy that rolled back (administrators only).
pub async fn deploy_again(state: &AppState, caller: &Caller, id: ViId) -> ApiResult<ViRecord> {
    caller.require_admin()?;
    let vi = visible(state, caller, id).await?;
    vi.state.next(Event::Deploy)?;
    let vms = state.store.vms(vi.id).await?;
    let addresses = crate::plan::committed(&vi)?
        .filter(|_| !vms.is_empty())
        .ok_or_else(|| {
            ApiError::Conflict(
                "the VI holds no placement to deploy on: release it and accept it again".to_owned(),
            )
        })?;
    let topo = super::design::design_of(&vi)?;
    let hosts = state.store.list_hosts().await?;
    let wiring = wiring(state, &topo, &addresses, &vms, &hosts).await?;
    // Routed through the home datacenter's gateway, as at its acceptance.
    let home = vi
        .home_datacenter_id
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("accepted VI {} has no home", vi.id)))?;
    let public_gateway = match state
        .store
        .list_datacenters()
        .await?
        .iter()
        .find(|d| d.id == home)
    {
        Some(dc) => gateway_of(dc)?,
        None => None,
    };
    let layout = Layout {
        topo: &topo,
        vms: &vms,
        wiring: &wiring,
        addresses: &addresses,
        public_gateway,
        home,
    };
    let steps = steps(state, &vi, layout).await?;
    start_job(state, caller, &vi, JobKind::Deploy, &steps).await
}
