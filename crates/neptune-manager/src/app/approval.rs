//! Request and approval: the owner requests a defined VI (its quota
//! checked), may withdraw the request or revise a rejected design; an
//! administrator sees the plan preview, then accepts (placing the VI,
//! reserving its hosts and addresses, and starting its deploy) or rejects
//! with a reason, and may release an accepted VI whose deploy rolled back.

use neptune_types::ViId;
use std::collections::HashMap;

use neptune_api as api;
use neptune_lifecycle::{Event, ViState};
use neptune_store::{Reservation, Transition, ViRecord, ViUsage};

use super::access::{require_owner, visible};
use super::deploy::Layout;
use super::placement::{
    gateway_of, home_datacenter, pinned_mac_rows, plan_addresses, plan_placement, wiring, Placing,
    Target,
};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::JobKind;
use crate::{now_ms, AppState};

/// Applies a lifecycle event through the state machine and the store.
async fn apply(
    state: &AppState,
    caller: &Caller,
    vi: &ViRecord,
    event: Event,
    reject_reason: Option<String>,
) -> ApiResult<ViRecord> {
    apply_with(state, caller, vi, event, reject_reason, None).await
}

/// [`apply`], recording `usage` (what the VI takes of the quota) with it.
async fn apply_with(
    state: &AppState,
    caller: &Caller,
    vi: &ViRecord,
    event: Event,
    reject_reason: Option<String>,
    usage: Option<ViUsage>,
) -> ApiResult<ViRecord> {
    let to = vi.state.next(event)?;
    let change = Transition {
        to,
        actor: caller.user.id,
        at: now_ms(),
        reject_reason,
        home_datacenter_id: None,
        usage,
    };
    Ok(state.store.transition_vi(vi.id, vi.state, &change).await?)
}

/// An owner's lifecycle event on their own VI: request (which also checks
/// the quota), withdraw or revise.
pub async fn owner_event(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    event: Event,
) -> ApiResult<ViRecord> {
    let vi = visible(state, caller, id).await?;
    require_owner(caller, &vi)?;
    if event == Event::Request {
        vi.state.next(event)?;
        let usage = super::quota::check_quota(state, &vi).await?;
        // Recorded with the change that makes the VI count, so that no
        // other check finds it requested with nothing recorded (and
        // computes its usage again: with many requests at once, each one
        // did so for every request still between a change and its record).
        return apply_with(state, caller, &vi, event, None, Some(usage)).await;
    }
    apply(state, caller, &vi, event, None).await
}

/// What accepting the VI would do now in datacenter `datacenter` (the
/// first one when none is named): the placement of every VM and the
/// address plan; nothing is changed. For administrators and the owner.
pub async fn preview(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    datacenter: Option<&str>,
) -> ApiResult<api::Plan> {
    let vi = visible(state, caller, id).await?;
    let dc = home_datacenter(state, datacenter).await?;
    let topo = super::design::design_of(&vi)?;
    let (plan, hosts) = plan_placement(state, vi.id, &topo, &dc, None, &Default::default()).await?;
    let addresses = plan_addresses(state, vi.id, &topo, &dc.name).await?;
    let wiring = wiring(state, &topo, &addresses, &plan.records, &hosts).await?;
    // The steps are built as accept builds them, so that what would refuse
    // the deploy (a template, its software) refuses the preview.
    let layout = Layout {
        topo: &topo,
        vms: &plan.records,
        wiring: &wiring,
        addresses: &addresses,
        public_gateway: gateway_of(&dc)?,
        home: dc.id,
    };
    super::deploy::steps(state, &vi, layout).await?;
    Ok(api::Plan {
        addresses: crate::plan::address_view(&addresses),
        ..plan.view
    })
}

/// Accepts a requested VI (administrators only): places it (automatically,
/// or as the request's manual map says), reserves its hosts and addresses
/// and starts deploying it.
pub async fn accept(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    req: api::AcceptRequest,
) -> ApiResult<ViRecord> {
    caller.require_admin()?;
    let vi = visible(state, caller, id).await?;
    vi.state.next(Event::Accept)?;
    let dc = home_datacenter(state, req.datacenter.as_deref()).await?;
    super::quota::check_quota(state, &vi).await?;
    let topo = super::design::design_of(&vi)?;
    let pins = pinned_mac_rows(&topo)?;
    let manual: Option<HashMap<String, String>> = req.placement.map(|m| m.into_iter().collect());
    let public_gateway = gateway_of(&dc)?;
    let target = Target {
        vi: &vi,
        topo: &topo,
        dc: &dc,
        manual: manual.as_ref(),
        pins: &pins,
    };
    let mut placing = Placing::start(state, caller, target);
    let (accepted, job) = loop {
        let (plan, hosts) = placing.plan().await?;
        // Other datacenters' accepts plan from the same private pools: the
        // addresses are planned and reserved under one lock for all, and
        // committed after it.
        let (addresses, reserved) = {
            let mut book = state.planning.addresses().await;
            let addresses = book.plan(state, vi.id, &topo, &dc.name).await?;
            let reserved = book.reserve(&state.planning, &addresses);
            (addresses, reserved)
        };
        let wiring = wiring(state, &topo, &addresses, &plan.records, &hosts).await?;
        let layout = Layout {
            topo: &topo,
            vms: &plan.records,
            wiring: &wiring,
            addresses: &addresses,
            public_gateway,
            home: dc.id,
        };
        let steps = super::deploy::steps(state, &vi, layout).await?;
        // The deploy job is stored with the acceptance: a Manager that dies
        // right after it leaves a job for another to run, not an accepted
        // VI that nothing would deploy.
        let job = state
            .jobs
            .new_job(vi.id, JobKind::Deploy, &steps)
            .map_err(ApiError::Internal)?;
        let mut rows = crate::plan::address_rows(&addresses);
        rows.extend(pins.iter().cloned());
        let reservation = Reservation {
            vms: plan.records,
            addresses: rows,
            address_plan: Some(
                serde_json::to_string(&addresses).map_err(|e| ApiError::Internal(e.into()))?,
            ),
            moves: Vec::new(),
            job: Some(job.clone()),
        };
        let change = Transition {
            to: ViState::Accepted,
            actor: caller.user.id,
            at: now_ms(),
            reject_reason: None,
            home_datacenter_id: Some(dc.id),
            // Its committed address plan is what it takes from now on.
            usage: Some(super::quota::accepted_usage(state, &vi, &addresses)?),
        };
        // A commit refused or failed drops the reservation (and the kept
        // copy: another Manager may hold what it lacks).
        if let Some(accepted) = placing.commit(&change, &reservation).await? {
            reserved.committed().await;
            state.views.forget_demand(vi.id);
            break (accepted, job);
        }
    };
    drop(placing);
    super::deploy::begin(state, caller, &accepted, &job).await
}

/// Rejects a requested VI with a reason (administrators only).
pub async fn reject(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    reason: &str,
) -> ApiResult<ViRecord> {
    caller.require_admin()?;
    let reason = reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(ApiError::InvalidRequest(
            "a rejection carries a reason of 1 to 1000 characters".to_owned(),
        ));
    }
    let vi = visible(state, caller, id).await?;
    apply(state, caller, &vi, Event::Reject, Some(reason)).await
}

/// Gives an accepted VI's hosts and addresses back and returns it to
/// `requested`, to be planned and accepted anew (administrators only):
/// the way forward from a deploy that rolled back when its hosts are gone.
pub async fn release(state: &AppState, caller: &Caller, id: ViId) -> ApiResult<ViRecord> {
    caller.require_admin()?;
    let vi = visible(state, caller, id).await?;
    vi.state.next(Event::Release)?;
    // Each release is idempotent, and the state moves last: a crash in
    // between leaves an accepted VI that is released again.
    state.store.release_vms(vi.id).await?;
    let covers = crate::plan::covers_of(vi.id, &state.store.owned_addresses_of(vi.id).await?)?;
    state.store.release_addresses(vi.id, &covers).await?;
    apply(state, caller, &vi, Event::Release, None).await
}
