//! Registering each datacenter's Edge Service Switch (administrators).
//! A registration is checked against the switch itself before it is kept:
//! the key file holds a key the switch accepts, the switch answers with
//! the Care-of Address registered, and it is the home switch of every
//! Home Address pool of its datacenter.

use std::net::Ipv4Addr;

use neptune_api as api;
use neptune_ipam::ipnet::Ipv4Net;
use neptune_store::SwitchRecord;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::switching::{self, SwitchError};
use crate::{now_ms, AppState};

/// Registers (or replaces) the switch of datacenter `name`.
pub async fn register(
    state: &AppState,
    caller: &Caller,
    name: &str,
    req: api::RegisterSwitch,
) -> ApiResult<api::Switch> {
    caller.require_admin()?;
    let dc = state.store.datacenter_by_name(name).await?;
    switching::control_address(&req.url).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let care_of: Ipv4Addr = req.care_of.parse().map_err(|_| {
        ApiError::InvalidRequest(format!("care_of {:?} is not an IPv4 address", req.care_of))
    })?;
    if !neptune_switch::state::valid_ifname(&req.port) {
        return Err(ApiError::InvalidRequest(format!(
            "port {:?} is not an interface name (1 to 15 of A-Z a-z 0-9 - _ .)",
            req.port
        )));
    }
    if let Some(via) = &req.via {
        via.parse::<Ipv4Addr>()
            .map_err(|_| ApiError::InvalidRequest(format!("via {via:?} is not an IPv4 address")))?;
    }
    let record = SwitchRecord {
        datacenter_id: dc.id,
        url: req.url,
        key_file: switching::absolute_key_file(&req.key_file)
            .to_string_lossy()
            .into_owned(),
        care_of: care_of.to_string(),
        port: req.port,
        via: req.via,
        updated_at: now_ms(),
    };
    let answered = switching::state(&record).await.map_err(|e| match e {
        SwitchError::Key(e) => ApiError::InvalidRequest(format!("{:#}", anyhow::Error::from(e))),
        SwitchError::Refused { status: 401, .. } => ApiError::InvalidRequest(format!(
            "the switch at {} refused the Manager's signed request: {}; is {} the switch's key file?",
            record.url,
            anyhow::Error::from(e).root_cause(),
            record.key_file
        )),
        other => ApiError::Conflict(format!("{:#}", anyhow::Error::from(other))),
    })?;
    if answered.care_of != care_of {
        return Err(ApiError::InvalidRequest(format!(
            "the switch at {} has care-of address {}, not {care_of}",
            record.url, answered.care_of
        )));
    }
    let prefixes: Vec<Ipv4Net> = answered
        .home_prefixes
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    for pool in &dc.home_pools {
        let covered = pool
            .parse::<Ipv4Net>()
            .is_ok_and(|pool| prefixes.iter().any(|p| p.contains(&pool)));
        if !covered {
            return Err(ApiError::InvalidRequest(format!(
                "datacenter {}'s Home Address pool {pool} is not among the switch's home prefixes ({}): it would refuse their bindings",
                dc.name,
                answered.home_prefixes.join(", ")
            )));
        }
    }
    state.store.set_switch(&record).await?;
    // Its table is brought in line with the store now, not at the next round.
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(err) = switching::repair(store.as_ref()).await {
            tracing::warn!(error = format!("{err:#}"), "switch drift repair");
        }
    });
    Ok(view(&record, &dc.name, Some(&answered)))
}

/// Forgets the switch of datacenter `name`. Its table is left as it is.
pub async fn remove(state: &AppState, caller: &Caller, name: &str) -> ApiResult<()> {
    caller.require_admin()?;
    let dc = state.store.datacenter_by_name(name).await?;
    Ok(state.store.delete_switch(dc.id).await?)
}

/// Every registered switch, each asked for its state now.
pub async fn list(state: &AppState, caller: &Caller) -> ApiResult<Vec<api::Switch>> {
    caller.require_admin()?;
    let dcs = state.store.list_datacenters().await?;
    let mut out = Vec::new();
    for record in state.store.switches().await? {
        let name = dcs
            .iter()
            .find(|d| d.id == record.datacenter_id)
            .map(|d| d.name.clone())
            .unwrap_or_default();
        let answered = switching::state(&record).await.ok();
        out.push(view(&record, &name, answered.as_ref()));
    }
    out.sort_by(|a, b| a.datacenter.cmp(&b.datacenter));
    Ok(out)
}

fn view(
    record: &SwitchRecord,
    datacenter: &str,
    answered: Option<&switching::SwitchState>,
) -> api::Switch {
    api::Switch {
        datacenter: datacenter.to_owned(),
        url: record.url.clone(),
        key_file: record.key_file.clone(),
        care_of: record.care_of.clone(),
        port: record.port.clone(),
        via: record.via.clone(),
        updated_at: record.updated_at,
        reachable: answered.is_some(),
        bindings: answered.map(|s| s.table.bindings.len() as u64),
        visitors: answered.map(|s| s.table.visitors.len() as u64),
    }
}
