//! Virtual Infrastructures: design, request, approval, lifecycle.
//!
//! A user sees and changes only their own VIs (others' are "not found", so
//! their existence does not leak); administrators see all, and only they
//! accept or reject. Every change goes through the lifecycle state machine
//! and is compare-and-set in the store.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use neptune_api as api;
use neptune_lifecycle::{Event, ViState};
use neptune_store::{Quota, Reservation, StoreError, Transition, ViRecord, VmRecord};
use neptune_topology::catalogue::{self, Params};
use neptune_topology::Topology;
use neptune_types::Mbps;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, JobKind, Step};
use crate::plan::{place, PlanError};
use crate::wiring::Wiring;
use crate::{now_ms, AppState};

/// Replaces every OS password of `topo` by its crypt(3) hash, off the
/// async threads; a value already hashed is kept. Identical passwords are
/// hashed once per design (10 000 nodes may share one).
async fn seal_passwords(state: &AppState, mut topo: Topology) -> ApiResult<Topology> {
    let needs = topo.nodes.iter().any(|n| {
        let p = n.os.password.expose();
        !p.is_empty() && !crate::auth::is_crypt_hash(p)
    });
    if !needs {
        return Ok(topo);
    }
    crate::auth::off_thread(state, move || {
        let mut hashed: HashMap<String, String> = HashMap::new();
        for node in &mut topo.nodes {
            let plain = node.os.password.expose();
            if plain.is_empty() || crate::auth::is_crypt_hash(plain) {
                continue;
            }
            let hash = match hashed.get(plain) {
                Some(h) => h.clone(),
                None => {
                    let h = crate::auth::crypt_password(plain)?;
                    hashed.insert(plain.to_owned(), h.clone());
                    h
                }
            };
            node.os.password = neptune_types::Secret::new(hash);
        }
        Ok(topo)
    })
    .await
}

/// Turns a design request into a validated topology.
fn topology_of(design: &api::ViDesign) -> ApiResult<Topology> {
    let sources = [
        design.xml.is_some(),
        design.topology.is_some(),
        design.catalogue.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(ApiError::InvalidRequest(
            "give exactly one of \"xml\", \"topology\" (JSON) or \"catalogue\"".to_owned(),
        ));
    }
    let invalid = |diags: Vec<neptune_topology::Diagnostic>| {
        ApiError::InvalidTopology(diags.iter().map(ToString::to_string).collect())
    };
    if let Some(xml) = &design.xml {
        return neptune_topology::from_xml(xml).map_err(invalid);
    }
    if let Some(json) = &design.topology {
        return neptune_topology::from_json(&json.to_string()).map_err(invalid);
    }
    let Some(c) = &design.catalogue else {
        return Err(ApiError::InvalidRequest("no design given".to_owned()));
    };
    let kind = catalogue::kind(&c.kind).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let mut params = Params::new(kind);
    if let Some(n) = c.nodes {
        params.nodes = n;
    }
    if let Some(b) = c.bandwidth {
        params.bandwidth = Mbps(b);
    }
    if let Some(t) = &c.template {
        params.template = t.clone();
    }
    catalogue::generate(kind, &params).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

pub(crate) fn design_of(vi: &ViRecord) -> ApiResult<Topology> {
    neptune_topology::from_xml(&vi.design_xml).map_err(|d| {
        ApiError::Internal(anyhow::anyhow!(
            "stored design of VI {} does not load: {:?}",
            vi.id,
            d
        ))
    })
}

pub(crate) fn summary(topo: &Topology) -> api::ViSummary {
    let s = topo.summary();
    api::ViSummary {
        nodes: s.nodes,
        links: s.links,
        entry_points: s.entry_points,
        vcpus: s.vcpus,
        ram_mib: s.ram.0,
        disk_mib: s.disk.0,
        bandwidth_mbps: s.bandwidth.0,
    }
}

type Names = Arc<HashMap<Uuid, String>>;

/// Names of the users `ids`; the store is read only when one is new here.
pub(super) async fn user_names(
    state: &AppState,
    ids: impl Iterator<Item = Uuid>,
) -> ApiResult<Names> {
    if let Some(names) = state.views.users.covering(ids) {
        return Ok(names);
    }
    let users = state.store.list_users().await?;
    Ok(state
        .views
        .users
        .replace(users.into_iter().map(|u| (u.id, u.name)).collect()))
}

/// Names of the datacenters `ids`; the store is read only when one is new here.
async fn datacenter_names(state: &AppState, ids: impl Iterator<Item = Uuid>) -> ApiResult<Names> {
    if let Some(names) = state.views.datacenters.covering(ids) {
        return Ok(names);
    }
    let dcs = state.store.list_datacenters().await?;
    Ok(state
        .views
        .datacenters
        .replace(dcs.into_iter().map(|d| (d.id, d.name)).collect()))
}

/// Names of the hosts `ids`; the store is read only when one is new here.
async fn host_names(state: &AppState, ids: impl Iterator<Item = Uuid>) -> ApiResult<Names> {
    if let Some(names) = state.views.hosts.covering(ids) {
        return Ok(names);
    }
    let hosts = state.store.list_hosts().await?;
    Ok(state
        .views
        .hosts
        .replace(hosts.into_iter().map(|h| (h.id, h.name)).collect()))
}

fn vi_out(
    views: &super::views::Views,
    vi: &ViRecord,
    users: &HashMap<Uuid, String>,
    dcs: &HashMap<Uuid, String>,
) -> ApiResult<api::Vi> {
    let summary = views.summary(vi)?;
    Ok(api::Vi {
        id: vi.id,
        name: vi.name.clone(),
        owner: users.get(&vi.owner_id).cloned().unwrap_or_default(),
        state: vi.state,
        summary,
        home_datacenter: vi.home_datacenter_id.and_then(|d| dcs.get(&d).cloned()),
        reject_reason: vi.reject_reason.clone(),
        version: vi.version,
        created_at: vi.created_at,
        updated_at: vi.updated_at,
    })
}

/// Whether the caller may see a VI of `owner`: its owner and administrators.
fn may_see(caller: &Caller, owner: Uuid) -> bool {
    owner == caller.user.id || caller.is_admin()
}

/// The VI if the caller may see it; someone else's VI is "not found".
pub(super) async fn visible(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<ViRecord> {
    let vi = state.store.vi(id).await?;
    if !may_see(caller, vi.owner_id) {
        return Err(ApiError::NotFound("VI"));
    }
    Ok(vi)
}

fn require_owner(caller: &Caller, vi: &ViRecord) -> ApiResult<()> {
    if vi.owner_id == caller.user.id {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only the VI's owner may do this"))
    }
}

/// States in which a VI counts against its owner's quota.
fn counts_against_quota(s: ViState) -> bool {
    !matches!(
        s,
        ViState::Defined | ViState::Rejected | ViState::Terminated
    )
}

/// Refuses when `vi` together with the owner's other committed VIs exceeds the quota.
async fn check_quota(state: &AppState, vi: &ViRecord) -> ApiResult<()> {
    let owner = state.store.user(vi.owner_id).await?;
    let others = state.store.list_vis(Some(vi.owner_id)).await?;
    let pools = &state.config.private_pools;
    let mut used = Usage::default();
    for other in others
        .iter()
        .filter(|o| o.id != vi.id && counts_against_quota(o.state))
    {
        // A design that cannot be planned takes no address.
        let private = state.views.private_addresses(other, pools)?.unwrap_or(0);
        used = used.plus(&state.views.summary(other)?, private);
    }
    // This VI's design must be plannable to count: say why it is not.
    let private = state
        .views
        .private_addresses(vi, pools)?
        .map_err(ApiError::Conflict)?;
    used = used.plus(&state.views.summary(vi)?, private);
    match used.over(&owner.quota) {
        Some((what, u, q)) => Err(ApiError::QuotaExceeded(format!(
            "this would bring {} to {u} {what}; the quota is {q}",
            owner.name
        ))),
        None => Ok(()),
    }
}

/// Resources summed over VIs. Every sum saturates, and a quota is at most
/// `i64::MAX`, so no design can wrap a sum below its quota.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    vms: u64,
    vcpus: u64,
    ram_mib: u64,
    public_addresses: u64,
    private_addresses: u64,
}

impl Usage {
    fn plus(self, s: &api::ViSummary, private_addresses: u64) -> Usage {
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        Usage {
            vms: self.vms.saturating_add(n(s.nodes)),
            vcpus: self.vcpus.saturating_add(s.vcpus),
            ram_mib: self.ram_mib.saturating_add(s.ram_mib),
            public_addresses: self.public_addresses.saturating_add(n(s.entry_points)),
            private_addresses: self.private_addresses.saturating_add(private_addresses),
        }
    }

    /// The first resource over its quota: its name, the usage, the quota.
    fn over(&self, q: &Quota) -> Option<(&'static str, u64, i64)> {
        [
            ("VMs", self.vms, q.vms),
            ("vCPUs", self.vcpus, q.vcpus),
            ("MiB of RAM", self.ram_mib, q.ram_mib),
            (
                "public addresses",
                self.public_addresses,
                q.public_addresses,
            ),
            (
                "private addresses",
                self.private_addresses,
                q.private_addresses,
            ),
        ]
        .into_iter()
        // A negative quota allows nothing.
        .find(|(_, used, quota)| u64::try_from(*quota).map_or(true, |q| *used > q))
    }
}

pub(super) async fn detail(state: &AppState, vi: &ViRecord) -> ApiResult<api::ViDetail> {
    // The design's full form is built for each detail, never kept: the
    // detail itself is kept, serialised and bounded in bytes (see `cache`).
    let topology = serde_json::from_str(&neptune_topology::to_json(&design_of(vi)?))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let events = state.store.vi_events(vi.id).await?;
    let vms = state.store.vms(vi.id).await?;
    let users = user_names(
        state,
        [vi.owner_id]
            .into_iter()
            .chain(events.iter().map(|e| e.actor).filter(|a| !a.is_nil())),
    )
    .await?;
    let dcs = datacenter_names(state, vi.home_datacenter_id.into_iter()).await?;
    let hosts = host_names(state, vms.iter().map(|v| v.host_id)).await?;
    let events = events
        .into_iter()
        .map(|e| api::ViEvent {
            at: e.at,
            from: e.from_state,
            to: e.to_state,
            // Jobs act as Neptune itself (the nil actor).
            actor: match users.get(&e.actor) {
                Some(name) => name.clone(),
                None if e.actor.is_nil() => "neptune".to_owned(),
                None => String::new(),
            },
            reason: e.reason,
        })
        .collect();
    let vms = vms
        .into_iter()
        .map(|v| api::PlannedVm {
            host: hosts.get(&v.host_id).cloned().unwrap_or_default(),
            node: v.node_id,
            vcpus: v.vcpus,
            ram_mib: v.ram_mib,
            disk_mib: v.disk_mib,
        })
        .collect();
    let jobs = state
        .store
        .jobs_of_vi(vi.id)
        .await?
        .iter()
        .map(|j| super::jobs::job_out(&state.views, j))
        .collect();
    let addresses = crate::plan::committed(vi).map(|p| crate::plan::address_view(&p));
    Ok(api::ViDetail {
        addresses,
        vi: vi_out(&state.views, vi, &users, &dcs)?,
        topology,
        events,
        vms,
        jobs,
    })
}

fn vi_name(design: &api::ViDesign, topo: &Topology) -> ApiResult<String> {
    let name = design.name.clone().unwrap_or_else(|| topo.id.to_string());
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "a VI name is 1 to 100 printable characters".to_owned(),
        ));
    }
    Ok(name)
}

/// Creates a VI (state `defined`) from XML, JSON or a catalogue kind.
#[utoipa::path(post, path = "/api/v1/vis", request_body = api::ViDesign, security(("bearer" = [])),
    responses((status = 201, body = api::ViDetail), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn create_vi(
    State(state): State<AppState>,
    caller: Caller,
    Json(design): Json<api::ViDesign>,
) -> ApiResult<(StatusCode, Json<api::ViDetail>)> {
    let topo = seal_passwords(&state, topology_of(&design)?).await?;
    let now = now_ms();
    let vi = ViRecord {
        id: Uuid::new_v4(),
        owner_id: caller.user.id,
        name: vi_name(&design, &topo)?,
        state: ViState::Defined,
        design_xml: neptune_topology::to_xml(&topo),
        home_datacenter_id: None,
        reject_reason: None,
        version: 1,
        created_at: now,
        updated_at: now,
        address_plan: None,
    };
    state.store.create_vi(&vi).await?;
    Ok((StatusCode::CREATED, Json(detail(&state, &vi).await?)))
}

/// The caller's VIs (administrators: all VIs).
///
/// The answer carries an `ETag`; sent back in `If-None-Match`, it gets
/// `304 Not Modified` while the list is unchanged.
#[utoipa::path(get, path = "/api/v1/vis",
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of a list already held")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<api::Vi>,
            headers(("ETag" = String, description = "Changes whenever the list does"))),
        (status = 304, description = "The list named by If-None-Match is current",
            headers(("ETag" = String))),
        (status = 401, body = api::ErrorBody)))]
pub(crate) async fn list_vis(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let owner = if caller.is_admin() {
        None
    } else {
        Some(caller.user.id)
    };
    // Read before the list, as for a VI's detail (see `cache`).
    let stamp = state.store.vi_list_stamp(owner).await?;
    if let Some(body) = state.views.lists.get(owner, stamp) {
        return Ok(body.respond(&headers));
    }
    let vis = state.store.list_vis(owner).await?;
    let users = user_names(&state, vis.iter().map(|v| v.owner_id)).await?;
    let dcs = datacenter_names(&state, vis.iter().filter_map(|v| v.home_datacenter_id)).await?;
    let list = vis
        .iter()
        .map(|v| vi_out(&state.views, v, &users, &dcs))
        .collect::<ApiResult<Vec<_>>>()?;
    let json = serde_json::to_vec(&list).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(state
        .views
        .lists
        .put(owner, stamp, json.into())
        .respond(&headers))
}

/// One VI with its design and history.
///
/// The answer carries an `ETag`; sent back in `If-None-Match`, it gets
/// `304 Not Modified` while the VI is unchanged.
#[utoipa::path(get, path = "/api/v1/vis/{id}",
    params(("id" = Uuid, Path),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of a detail already held")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = api::ViDetail,
            headers(("ETag" = String, description = "Changes whenever the detail does"))),
        (status = 304, description = "The detail named by If-None-Match is current",
            headers(("ETag" = String))),
        (status = 404, body = api::ErrorBody)))]
pub(crate) async fn show_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // The stamp is read before anything the detail shows, so a body built
    // now reflects at least this revision (see `cache`).
    let stamp = state.store.vi_stamp(id).await?;
    if !may_see(&caller, stamp.owner_id) {
        return Err(ApiError::NotFound("VI"));
    }
    if let Some(body) = state.views.details.get(id, stamp.revision) {
        return Ok(body.respond(&headers));
    }
    let vi = state.store.vi(id).await?;
    let json = serde_json::to_vec(&detail(&state, &vi).await?)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(state
        .views
        .details
        .put(id, stamp.revision, json.into())
        .respond(&headers))
}

/// Replaces the design of a defined VI (the owner's; `version` must match).
#[utoipa::path(put, path = "/api/v1/vis/{id}", params(("id" = Uuid, Path)), request_body = api::ViDesign,
    security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn edit_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(design): Json<api::ViDesign>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = visible(&state, &caller, id).await?;
    require_owner(&caller, &vi)?;
    vi.state.next(Event::Edit)?;
    let topo = seal_passwords(&state, topology_of(&design)?).await?;
    let version = design.version.ok_or_else(|| {
        ApiError::InvalidRequest("an edit names the \"version\" it is based on".to_owned())
    })?;
    let updated = state
        .store
        .update_vi_design(
            id,
            version,
            &vi_name(&design, &topo)?,
            &neptune_topology::to_xml(&topo),
            now_ms(),
        )
        .await?;
    Ok(Json(detail(&state, &updated).await?))
}

/// Applies a lifecycle event through the state machine and the store.
async fn apply(
    state: &AppState,
    caller: &Caller,
    vi: &ViRecord,
    event: Event,
    reject_reason: Option<String>,
    home_datacenter_id: Option<Uuid>,
) -> ApiResult<ViRecord> {
    let to = vi.state.next(event)?;
    let change = Transition {
        to,
        actor: caller.user.id,
        at: now_ms(),
        reject_reason,
        home_datacenter_id,
    };
    Ok(state.store.transition_vi(vi.id, vi.state, &change).await?)
}

/// An owner's lifecycle event on their own VI (request also checks the quota).
async fn owner_event(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    event: Event,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = visible(state, caller, id).await?;
    require_owner(caller, &vi)?;
    if event == Event::Request {
        vi.state.next(event)?;
        check_quota(state, &vi).await?;
    }
    let vi = apply(state, caller, &vi, event, None, None).await?;
    Ok(Json(detail(state, &vi).await?))
}

/// Asks for the VI to be allocated (the owner; checks the quota).
#[utoipa::path(post, path = "/api/v1/vis/{id}/request", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn request_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<api::ViDetail>> {
    owner_event(&state, &caller, id, Event::Request).await
}

/// Takes a pending request back (the owner), to edit the design.
#[utoipa::path(post, path = "/api/v1/vis/{id}/withdraw", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn withdraw_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<api::ViDetail>> {
    owner_event(&state, &caller, id, Event::Withdraw).await
}

/// Takes a rejected design back to `defined` (the owner), to edit it.
#[utoipa::path(post, path = "/api/v1/vis/{id}/revise", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn revise_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<api::ViDetail>> {
    owner_event(&state, &caller, id, Event::Revise).await
}

/// The address plan of `topo` against the stored allocations (changes nothing).
async fn plan_addresses(
    state: &AppState,
    vi: Uuid,
    topo: &Topology,
    home: &str,
) -> ApiResult<neptune_ipam::Plan> {
    let datacenters = state.store.list_datacenters().await?;
    let domain = crate::plan::domain(&state.config.private_pools, &datacenters)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let stored = state.store.owned_addresses().await?;
    let snapshot =
        crate::plan::snapshot(domain, &stored).map_err(|e| ApiError::Internal(e.into()))?;
    crate::plan::addresses(&snapshot, vi, topo, home)
        .map_err(|e| ApiError::Conflict(e.for_tenant()))
}

/// The home datacenter named in the request, or the first one.
async fn home_datacenter(
    state: &AppState,
    name: Option<&str>,
) -> ApiResult<neptune_store::DatacenterRecord> {
    match name {
        Some(name) => Ok(state.store.datacenter_by_name(name).await?),
        None => state
            .store
            .list_datacenters()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ApiError::Conflict("no datacenter is registered to host the VI".to_owned())
            }),
    }
}

pub(super) fn plan_error(err: PlanError) -> ApiError {
    match err {
        PlanError::Manual(_) => ApiError::InvalidRequest(err.to_string()),
        other => ApiError::Conflict(other.to_string()),
    }
}

/// Refuses a placement whose traffic between hosts would exceed a host's
/// uplink (the store would refuse its commit anyway; this says why).
pub(super) fn require_admissible(plan: &crate::plan::PlacementPlan) -> ApiResult<()> {
    if plan.view.admissible {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "no placement fits the hosts' uplinks: the VI's links between hosts need {} Mbit/s \
             and a host's uplink has less left (see the plan)",
            plan.view.cut_mbps
        )))
    }
}

/// A placement seed that is stable for a VI, so its plan preview and its
/// acceptance agree when nothing changed in between.
pub(super) fn seed(vi: Uuid) -> u64 {
    vi.as_u64_pair().0
}

/// How the links of a VI placed as `vms` are wired across `hosts`, its
/// addresses planned as `addresses`.
pub(super) async fn wiring(
    state: &AppState,
    topo: &Topology,
    addresses: &neptune_ipam::Plan,
    vms: &[VmRecord],
    hosts: &[neptune_store::HostRecord],
) -> ApiResult<Wiring> {
    let host_of: HashMap<&str, Uuid> = vms
        .iter()
        .map(|v| (v.node_id.as_str(), v.host_id))
        .collect();
    let placed: Vec<_> = hosts
        .iter()
        .filter(|h| vms.iter().any(|v| v.host_id == h.id))
        .cloned()
        .collect();
    let endpoints = crate::wiring::tunnel_endpoints(&placed).await;
    Wiring::new(
        topo,
        addresses,
        &state.config.private_pools,
        &host_of,
        hosts,
        &endpoints,
    )
    .map_err(|e| ApiError::Conflict(e.to_string()))
}

/// The deploy steps of a placed VI: prepare every VM's disk from its
/// template, define every VM, start every VM, wait until every guest is
/// ready.
async fn deploy_steps(
    state: &AppState,
    vi: &ViRecord,
    topo: &Topology,
    vms: &[VmRecord],
    wiring: &Wiring,
    addresses: &neptune_ipam::Plan,
    public_gateway: Option<std::net::Ipv4Addr>,
) -> ApiResult<Vec<Step>> {
    let (owner, vi) = (vi.owner_id, vi.id);
    let mut copies = Vec::new();
    let mut defines = Vec::new();
    let mut starts = Vec::new();
    let mut readies = Vec::new();
    let keys = owner_keys(state, owner).await?;
    for node in &topo.nodes {
        let placed = vms
            .iter()
            .find(|v| v.node_id == node.id.as_str())
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("node {} is not placed", node.id)))?;
        let name = if node.software.template.is_empty() {
            state.config.default_template.as_str()
        } else {
            node.software.template.as_str()
        };
        let template = match state.store.template_for(owner, name).await {
            Ok(t) => t,
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::Conflict(format!(
                    "node {} uses template {name:?}, which is neither the VI owner's nor public",
                    node.id
                )))
            }
            Err(e) => return Err(e.into()),
        };
        software_provided(node, &template)?;
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
                topo,
                node,
                placed.host_id,
                wiring,
                jobs::GuestConfig {
                    addresses,
                    ssh_keys: &keys,
                    public_gateway,
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
    Ok(copies
        .into_iter()
        .chain(defines)
        .chain(starts)
        .chain(readies)
        .collect())
}

/// Refuses a node whose `<software>` entries its template does not carry:
/// guests install nothing at boot (they may have no way out), so what a
/// node needs must be in its image. A template registered without its
/// software list (an image of unknown content) is not checked.
fn software_provided(
    node: &neptune_topology::VirtualNode,
    template: &neptune_store::TemplateRecord,
) -> ApiResult<()> {
    let provided: Vec<api::Software> = serde_json::from_str(&template.software).unwrap_or_default();
    if provided.is_empty() {
        return Ok(());
    }
    for wanted in &node.software.software {
        if !provided.iter().any(|p| p.name == wanted.name) {
            return Err(ApiError::Conflict(format!(
                "node {} asks for software {:?}, which template {:?} does not carry (its image has {} packages; a node's software must be in its template)",
                node.id,
                wanted.name,
                template.name,
                provided.len()
            )));
        }
    }
    Ok(())
}

/// The public gateway of datacenter `dc`, which entry points route through.
pub(super) fn gateway_of(
    dc: &neptune_store::DatacenterRecord,
) -> ApiResult<Option<std::net::Ipv4Addr>> {
    crate::plan::public_gateway(dc).map_err(|e| ApiError::Conflict(e.to_string()))
}

/// The SSH public keys of a VI's owner, which its guests accept.
pub(super) async fn owner_keys(state: &AppState, owner: Uuid) -> ApiResult<Vec<String>> {
    Ok(state
        .store
        .ssh_keys(owner)
        .await?
        .into_iter()
        .map(|k| k.public_key)
        .collect())
}

/// The steps that take a VI off its hosts and free them, its addresses
/// and what a suspend saved of it. Every destroy comes before every disk
/// removal: steps of one kind in a row run as one batch, 16 at a time,
/// where alternating them made every batch a single step.
fn terminate_steps(
    vi: Uuid,
    vms: &[VmRecord],
    covers: Vec<(String, String)>,
    saved: String,
) -> Vec<Step> {
    let names: Vec<(Uuid, String)> = vms
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

    #[test]
    fn terminate_destroys_every_vm_before_removing_any_disk() {
        let vi = Uuid::from_u128(7);
        let vms: Vec<VmRecord> = (0..3)
            .map(|i| VmRecord {
                vi_id: vi,
                node_id: format!("n{i}"),
                host_id: Uuid::from_u128(i),
                vcpus: 1,
                ram_mib: 512,
                disk_mib: 4096,
                uplink_mbps: 0,
            })
            .collect();
        let steps = terminate_steps(vi, &vms, Vec::new(), "saved".to_owned());
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

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanQuery {
    /// The home datacenter to plan for (default: the first one).
    datacenter: Option<String>,
}

/// What accepting the VI would do now: the placement of every VM (nothing
/// is changed). For administrators and the VI's owner.
#[utoipa::path(get, path = "/api/v1/vis/{id}/plan", params(("id" = Uuid, Path), PlanQuery), security(("bearer" = [])),
    responses((status = 200, body = api::Plan), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn plan_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(query): Query<PlanQuery>,
) -> ApiResult<Json<api::Plan>> {
    let vi = visible(&state, &caller, id).await?;
    let dc = home_datacenter(&state, query.datacenter.as_deref()).await?;
    let topo = design_of(&vi)?;
    let hosts = state.store.list_hosts().await?;
    let plan = place(vi.id, &topo, &dc, &hosts, None, seed(vi.id)).map_err(plan_error)?;
    let addresses = plan_addresses(&state, vi.id, &topo, &dc.name).await?;
    let wiring = wiring(&state, &topo, &addresses, &plan.records, &hosts).await?;
    deploy_steps(
        &state,
        &vi,
        &topo,
        &plan.records,
        &wiring,
        &addresses,
        gateway_of(&dc)?,
    )
    .await?;
    Ok(Json(api::Plan {
        addresses: crate::plan::address_view(&addresses),
        ..plan.view
    }))
}

/// Accepts a requested VI (administrators only): places it (automatically,
/// or as the request's manual map says), reserves its hosts and starts
/// deploying it. Follow the returned VI's job for progress.
#[utoipa::path(post, path = "/api/v1/vis/{id}/accept", params(("id" = Uuid, Path)), request_body = api::AcceptRequest,
    security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn accept_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Option<Json<api::AcceptRequest>>,
) -> ApiResult<Json<api::ViDetail>> {
    caller.require_admin()?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let vi = visible(&state, &caller, id).await?;
    vi.state.next(Event::Accept)?;
    let dc = home_datacenter(&state, req.datacenter.as_deref()).await?;
    check_quota(&state, &vi).await?;
    let topo = design_of(&vi)?;
    let pins = pinned_mac_rows(&topo)?;
    let manual: Option<HashMap<String, String>> = req.placement.map(|m| m.into_iter().collect());
    // Plan on a snapshot, commit with the store's capacity checks; if a
    // host filled up in between, plan again on the new snapshot.
    let _planning = state.planning.lock().await;
    let mut attempt = 0;
    let (accepted, steps) = loop {
        attempt += 1;
        let hosts = state.store.list_hosts().await?;
        let plan =
            place(vi.id, &topo, &dc, &hosts, manual.as_ref(), seed(vi.id)).map_err(plan_error)?;
        require_admissible(&plan)?;
        let addresses = plan_addresses(&state, vi.id, &topo, &dc.name).await?;
        let wiring = wiring(&state, &topo, &addresses, &plan.records, &hosts).await?;
        let steps = deploy_steps(
            &state,
            &vi,
            &topo,
            &plan.records,
            &wiring,
            &addresses,
            gateway_of(&dc)?,
        )
        .await?;
        let mut rows = crate::plan::address_rows(&addresses);
        rows.extend(pins.iter().cloned());
        let reservation = Reservation {
            vms: plan.records,
            addresses: rows,
            address_plan: Some(
                serde_json::to_string(&addresses).map_err(|e| ApiError::Internal(e.into()))?,
            ),
            job: None,
        };
        let change = Transition {
            to: ViState::Accepted,
            actor: caller.user.id,
            at: now_ms(),
            reject_reason: None,
            home_datacenter_id: Some(dc.id),
        };
        match state
            .store
            .transition_with_placement(vi.id, vi.state, &change, &reservation)
            .await
        {
            Ok(accepted) => break (accepted, steps),
            // Another Manager took the room or the addresses: plan again.
            Err(StoreError::NoRoom { .. }) if attempt < 5 && manual.is_none() => continue,
            // A pinned MAC is not planned: planning again will not free it.
            Err(StoreError::AddressTaken { prefix }) if pins.iter().any(|p| p.prefix == prefix) => {
                return Err(mac_taken(&state, &caller, &prefix).await)
            }
            Err(StoreError::AddressTaken { .. }) if attempt < 5 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let vi = start_job(&state, &caller, &accepted, JobKind::Deploy, &steps).await?;
    Ok(Json(detail(&state, &vi).await?))
}

/// The address-table rows that hold the MACs pinned in `topo`; a pin in
/// Neptune's own range is refused.
fn pinned_mac_rows(topo: &Topology) -> ApiResult<Vec<neptune_store::AddressRow>> {
    crate::seed::pinned_macs(topo)
        .into_iter()
        .map(|(mac, at)| {
            if crate::seed::is_neptunes(mac) {
                return Err(ApiError::InvalidRequest(format!(
                    "{at} pins MAC {mac}, in the range Neptune allocates from (02:4E:...): leave it out and Neptune chooses one"
                )));
            }
            Ok(neptune_store::AddressRow {
                pool: crate::seed::MAC_POOL.to_owned(),
                prefix: crate::seed::mac_text(mac),
                owner: Some(format!("\"{at}\"")),
            })
        })
        .collect()
}

/// The refusal of a pinned MAC that another VI holds: it names the VI to
/// its owner (and administrators), and no other tenant's.
async fn mac_taken(state: &AppState, caller: &Caller, mac: &str) -> ApiError {
    let holder = match state.store.owned_addresses().await {
        Ok(rows) => rows
            .into_iter()
            .find(|r| r.pool == crate::seed::MAC_POOL && r.prefix == mac)
            .and_then(|r| r.vi_id),
        Err(e) => return e.into(),
    };
    let named = match holder {
        Some(id) => match state.store.vi(id).await {
            Ok(v) if caller.is_admin() || v.owner_id == caller.user.id => {
                format!("VI {:?} ({})", v.name, v.id)
            }
            _ => "another tenant's VI".to_owned(),
        },
        None => "another VI".to_owned(),
    };
    ApiError::Conflict(format!(
        "MAC {mac} is pinned in the design and {named} holds it"
    ))
}

/// Deploys an accepted VI again on the hosts and addresses it holds, after
/// a deploy that rolled back (administrators only). Follow the job.
#[utoipa::path(post, path = "/api/v1/vis/{id}/deploy", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn deploy_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<api::ViDetail>> {
    caller.require_admin()?;
    let vi = visible(&state, &caller, id).await?;
    vi.state.next(Event::Deploy)?;
    let vms = state.store.vms(vi.id).await?;
    let addresses = crate::plan::committed(&vi)
        .filter(|_| !vms.is_empty())
        .ok_or_else(|| {
            ApiError::Conflict(
                "the VI holds no placement to deploy on: release it and accept it again".to_owned(),
            )
        })?;
    let topo = design_of(&vi)?;
    let hosts = state.store.list_hosts().await?;
    let wiring = wiring(&state, &topo, &addresses, &vms, &hosts).await?;
    // Routed through the home datacenter's gateway, as at its acceptance.
    let gateway = match state
        .store
        .list_datacenters()
        .await?
        .iter()
        .find(|d| Some(d.id) == vi.home_datacenter_id)
    {
        Some(dc) => gateway_of(dc)?,
        None => None,
    };
    let steps = deploy_steps(&state, &vi, &topo, &vms, &wiring, &addresses, gateway).await?;
    let vi = start_job(&state, &caller, &vi, JobKind::Deploy, &steps).await?;
    Ok(Json(detail(&state, &vi).await?))
}

/// Gives an accepted VI's hosts and addresses back and returns it to
/// `requested`, to be planned and accepted anew (administrators only):
/// the way forward from a deploy that rolled back when its hosts are gone.
#[utoipa::path(post, path = "/api/v1/vis/{id}/release", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn release_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<api::ViDetail>> {
    caller.require_admin()?;
    let vi = visible(&state, &caller, id).await?;
    vi.state.next(Event::Release)?;
    // Each release is idempotent, and the state moves last: a crash in
    // between leaves an accepted VI that is released again.
    state.store.release_vms(vi.id).await?;
    let covers = crate::plan::covers_of(vi.id, &state.store.owned_addresses().await?);
    state.store.release_addresses(vi.id, &covers).await?;
    let vi = apply(&state, &caller, &vi, Event::Release, None, None).await?;
    Ok(Json(detail(&state, &vi).await?))
}

/// Creates a job for `kind`, moving the VI to the job's state, and runs it.
pub(super) async fn start_job(
    state: &AppState,
    caller: &Caller,
    vi: &ViRecord,
    kind: JobKind,
    steps: &[Step],
) -> ApiResult<ViRecord> {
    let job = jobs::new_job(vi.id, kind, steps).map_err(ApiError::Internal)?;
    let event = match kind {
        JobKind::Deploy => Event::Deploy,
        JobKind::Suspend => Event::Suspend,
        JobKind::Resume => Event::Resume,
        JobKind::Terminate => Event::Terminate,
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
    };
    let vi = state.store.start_job(&job, vi.state, &change).await?;
    state.jobs.spawn(job.id);
    Ok(vi)
}

/// Rejects a requested VI with a reason (administrators only).
#[utoipa::path(post, path = "/api/v1/vis/{id}/reject", params(("id" = Uuid, Path)), request_body = api::RejectRequest,
    security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn reject_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<api::RejectRequest>,
) -> ApiResult<Json<api::ViDetail>> {
    caller.require_admin()?;
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(ApiError::InvalidRequest(
            "a rejection carries a reason of 1 to 1000 characters".to_owned(),
        ));
    }
    let vi = visible(&state, &caller, id).await?;
    let vi = apply(&state, &caller, &vi, Event::Reject, Some(reason), None).await?;
    Ok(Json(detail(&state, &vi).await?))
}

/// Terminates a VI (its owner or an administrator). A VI with VMs on
/// hosts is terminated by a job (follow it); one without ends at once.
#[utoipa::path(post, path = "/api/v1/vis/{id}/terminate", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn terminate_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = visible(&state, &caller, id).await?;
    let to = vi.state.next(Event::Terminate)?;
    let vms = state.store.vms(vi.id).await?;
    let vi = if to == ViState::Terminating {
        let covers = crate::plan::covers_of(vi.id, &state.store.owned_addresses().await?);
        let saved = super::operations::suspended_dir(&state, vi.id);
        let steps = terminate_steps(vi.id, &vms, covers, saved.to_string_lossy().into_owned());
        start_job(&state, &caller, &vi, JobKind::Terminate, &steps).await?
    } else {
        apply(&state, &caller, &vi, Event::Terminate, None, None).await?
    };
    Ok(Json(detail(&state, &vi).await?))
}
