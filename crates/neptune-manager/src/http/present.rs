//! What the API shows of the Manager's records: a VI in a list and in
//! detail, a job's progress, with the names of the users, datacenters and
//! hosts they refer to (read through [`crate::views`]'s name maps).

use neptune_types::{DatacenterId, HostId, UserId};
use std::collections::HashMap;
use std::sync::Arc;

use neptune_api as api;
use neptune_store::{JobRecord, JobState, ViRecord};

use crate::error::{ApiError, ApiResult};
use crate::views::Views;
use crate::AppState;

type Names<K> = Arc<HashMap<K, String>>;

/// Names of the users `ids`; the store is read only when one is new here.
pub(crate) async fn user_names(
    state: &AppState,
    ids: impl Iterator<Item = UserId>,
) -> ApiResult<Names<UserId>> {
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
pub(super) async fn datacenter_names(
    state: &AppState,
    ids: impl Iterator<Item = DatacenterId>,
) -> ApiResult<Names<DatacenterId>> {
    if let Some(names) = state.views.datacenters.covering(ids) {
        return Ok(names);
    }
    let dcs = state.store.list_datacenters().await?;
    Ok(state
        .views
        .datacenters
        .replace(dcs.into_iter().map(|d| (d.id, d.name)).collect()))
}

/// Names of the hosts `ids`; the store is read only when one is new here,
/// and then only for those: a domain's hosts are tens of thousands, and
/// the first details after a start would each read all of them at once.
async fn host_names(
    state: &AppState,
    ids: impl Iterator<Item = HostId>,
) -> ApiResult<Names<HostId>> {
    let mut ids: Vec<HostId> = ids.collect();
    if let Some(names) = state.views.hosts.covering(ids.iter().copied()) {
        return Ok(names);
    }
    ids.sort_unstable();
    ids.dedup();
    let hosts = state.store.hosts_by_id(&ids).await?;
    Ok(state
        .views
        .hosts
        .add(hosts.into_iter().map(|h| (h.id, h.name))))
}

pub(super) fn vi_out(
    views: &Views,
    vi: &ViRecord,
    users: &HashMap<UserId, String>,
    dcs: &HashMap<DatacenterId, String>,
) -> ApiResult<api::Vi> {
    let summary = views.summary(vi)?;
    Ok(api::Vi {
        id: vi.id,
        name: vi.name.clone(),
        owner: users.get(&vi.owner_id).cloned().unwrap_or_default(),
        state: vi.state,
        summary,
        home_datacenter: vi.home_datacenter_id.and_then(|d| dcs.get(&d).cloned()),
        location: vi
            .location_id
            .or(vi.home_datacenter_id)
            .and_then(|d| dcs.get(&d).cloned()),
        reject_reason: vi.reject_reason.clone(),
        version: vi.version,
        created_at: vi.created_at,
        updated_at: vi.updated_at,
    })
}

/// The detail of `vi`, which the caller has just changed. It is kept for
/// the readers (see `views::cache`) when nothing changed the VI's row
/// since, and whoever waits for the VI to change is woken (see
/// [`crate::changes`]): a waiter then finds the body built.
pub(super) async fn changed_detail(state: &AppState, vi: &ViRecord) -> ApiResult<api::ViDetail> {
    // A body is kept at a stamp only if built from reads made after it:
    // the row is read again, and kept only if it is still the caller's.
    let stamp = state.store.vi_stamp(vi.id).await?;
    let now = state.store.vi(vi.id).await?;
    let shown = detail(state, vi).await?;
    if now == *vi && vi.state != neptune_lifecycle::ViState::Terminated {
        let json = serde_json::to_vec(&shown).map_err(|e| ApiError::Internal(e.into()))?;
        state.views.details.put(vi.id, stamp.revision, json.into());
    }
    state.jobs.changes().changed_state(vi.id);
    Ok(shown)
}

pub(super) async fn detail(state: &AppState, vi: &ViRecord) -> ApiResult<api::ViDetail> {
    // The design is kept serialised, not parsed (see `views`): a live VI's
    // parsed designs kept cost more memory than the parsing they saved.
    let topology = state.views.design_json(vi)?;
    let neptune_store::ViParts {
        events,
        vms,
        moves,
        migration_request: request,
        jobs,
    } = state.store.vi_parts(vi.id).await?;
    let users = user_names(
        state,
        [vi.owner_id]
            .into_iter()
            .chain(events.iter().map(|e| e.actor).filter(|a| !a.is_nil()))
            .chain(request.iter().map(|r| r.requested_by)),
    )
    .await?;
    let dcs = datacenter_names(
        state,
        vi.home_datacenter_id
            .into_iter()
            .chain(vi.location_id)
            .chain(request.iter().map(|r| r.datacenter_id)),
    )
    .await?;
    let hosts = host_names(state, vms.iter().chain(&moves).map(|v| v.host_id)).await?;
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
            moving_to: moves
                .iter()
                .find(|m| m.node_id == v.node_id)
                .and_then(|m| hosts.get(&m.host_id).cloned()),
            node: v.node_id,
            vcpus: v.vcpus,
            ram_mib: v.ram_mib,
            disk_mib: v.disk_mib,
        })
        .collect();
    let location = vi.location_id.or(vi.home_datacenter_id);
    let bindings = match (location, vi.home_datacenter_id) {
        (Some(at), Some(home)) if at != home => {
            let switches = state.store.switches().await?;
            let care_of = switches
                .iter()
                .find(|s| s.datacenter_id == at)
                .map(|s| s.care_of.clone());
            crate::switching::home_addresses(vi)
                .map_err(ApiError::Internal)?
                .into_iter()
                .map(|a| api::Binding {
                    address: a.to_string(),
                    datacenter: dcs.get(&at).cloned().unwrap_or_default(),
                    care_of: care_of.clone(),
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let migration_request = request.map(|r| api::MigrationRequest {
        vi: r.vi_id,
        to: dcs.get(&r.datacenter_id).cloned().unwrap_or_default(),
        requested_by: users.get(&r.requested_by).cloned().unwrap_or_default(),
        requested_at: r.requested_at,
    });
    let jobs = jobs
        .iter()
        .map(|j| job_out(state, j))
        .collect::<ApiResult<_>>()?;
    let addresses = crate::plan::committed(vi)?.map(|p| crate::plan::address_view(&p));
    Ok(api::ViDetail {
        addresses,
        vi: vi_out(&state.views, vi, &users, &dcs)?,
        topology,
        events,
        vms,
        jobs,
        bindings,
        migration_request,
    })
}

pub(crate) fn job_out(state: &AppState, job: &JobRecord) -> ApiResult<api::Job> {
    // A job that succeeded is past its last step and names none: its
    // steps' names are not read, and no longer kept.
    let names = if job.state == JobState::Succeeded && job.cursor >= job.total {
        state.views.forget_step_names(job.id);
        Arc::default()
    } else {
        state.views.step_names(job)?
    };
    let kind = api::JobKind::parse(&job.kind).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "job {} has an unknown kind {:?}",
            job.id,
            job.kind
        ))
    })?;
    let rolling_back = job.state == JobState::RollingBack;
    let current = if rolling_back {
        job.cursor - 1
    } else {
        job.cursor
    };
    let step_name = usize::try_from(current)
        .ok()
        .and_then(|i| names.get(i))
        .map(|s| {
            if rolling_back {
                format!("undo {s}")
            } else {
                s.clone()
            }
        })
        .unwrap_or_default();
    let percent = if job.total == 0 {
        100
    } else {
        u8::try_from((job.cursor.clamp(0, job.total) * 100) / job.total).unwrap_or(100)
    };
    Ok(api::Job {
        id: job.id,
        vi: job.vi_id,
        kind,
        state: match job.state {
            JobState::Running => api::JobState::Running,
            JobState::RollingBack => api::JobState::RollingBack,
            JobState::Succeeded => api::JobState::Succeeded,
            JobState::RolledBack => api::JobState::RolledBack,
            JobState::Failed => api::JobState::Failed,
        },
        step: job.cursor,
        total: job.total,
        step_name,
        percent,
        error: job.error.clone(),
        created_at: job.created_at,
        updated_at: job.updated_at,
        moves: state.jobs.moves_of(job.id),
    })
}
