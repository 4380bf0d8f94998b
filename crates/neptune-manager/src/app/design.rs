//! Designing a VI: from the paper's XML dialect, its JSON form or a kind of
//! the catalogue, validated, its OS passwords sealed as crypt(3) hashes,
//! stored as XML in state `defined`; edited only while `defined`.

use neptune_types::ViId;
use std::collections::HashMap;

use neptune_api as api;
use neptune_lifecycle::{Event, ViState};
use neptune_store::ViRecord;
use neptune_topology::catalogue::{self, Params};
use neptune_topology::Topology;
use neptune_types::Mbps;
use uuid::Uuid;

use super::access::{require_owner, visible};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
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
    let invalid = |diags: Vec<neptune_topology::Diagnostic>| {
        ApiError::InvalidTopology(diags.iter().map(ToString::to_string).collect())
    };
    let c = match &design.source {
        api::DesignSource::Xml(xml) => return neptune_topology::from_xml(xml).map_err(invalid),
        api::DesignSource::Topology(json) => {
            return neptune_topology::from_json(&json.to_string()).map_err(invalid)
        }
        api::DesignSource::Catalogue(c) => c,
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

pub fn design_of(vi: &ViRecord) -> ApiResult<Topology> {
    neptune_topology::from_xml(&vi.design_xml).map_err(|d| {
        ApiError::Internal(anyhow::anyhow!(
            "stored design of VI {} does not load: {:?}",
            vi.id,
            d
        ))
    })
}

pub fn summary(topo: &Topology) -> api::ViSummary {
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

fn vi_name(design: &api::ViDesign, topo: &Topology) -> ApiResult<String> {
    let name = design.name.clone().unwrap_or_else(|| topo.id.to_string());
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "a VI name is 1 to 100 printable characters".to_owned(),
        ));
    }
    Ok(name)
}

/// Creates a VI of the caller's in state `defined`.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    design: &api::ViDesign,
) -> ApiResult<ViRecord> {
    let topo = seal_passwords(state, topology_of(design)?).await?;
    let now = now_ms();
    let vi = ViRecord {
        id: Uuid::new_v4().into(),
        owner_id: caller.user.id,
        name: vi_name(design, &topo)?,
        state: ViState::Defined,
        design_xml: neptune_topology::to_xml(&topo),
        home_datacenter_id: None,
        reject_reason: None,
        version: 1,
        created_at: now,
        updated_at: now,
        address_plan: None,
        location_id: None,
    };
    state.store.create_vi(&vi).await?;
    Ok(vi)
}

/// Replaces the design of a defined VI (the owner's; `version` must match).
pub async fn edit(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    design: &api::ViDesign,
) -> ApiResult<ViRecord> {
    let vi = visible(state, caller, id).await?;
    require_owner(caller, &vi)?;
    vi.state.next(Event::Edit)?;
    let topo = seal_passwords(state, topology_of(design)?).await?;
    let version = design.version.ok_or_else(|| {
        ApiError::InvalidRequest("an edit names the \"version\" it is based on".to_owned())
    })?;
    Ok(state
        .store
        .update_vi_design(
            id,
            version,
            &vi_name(design, &topo)?,
            &neptune_topology::to_xml(&topo),
            now_ms(),
        )
        .await?)
}
