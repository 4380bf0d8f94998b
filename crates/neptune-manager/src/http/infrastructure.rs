//! Datacenters, hosts, templates and the topology catalogue.

use neptune_types::{DatacenterId, TemplateId};
use std::collections::HashMap;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::Json;
use neptune_api as api;
use neptune_store::{
    DatacenterRecord, HostRecord, HostState, HostUsage, TemplateRecord, Visibility,
};
use neptune_topology::catalogue::Kind;
use uuid::Uuid;

use super::{datacenter_out, host_out, template_out};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{heartbeats, now_ms, AppState};

/// The datacenters of the Service Switching domain; for administrators,
/// with how many of their hosts are ready and unreachable.
#[utoipa::path(get, path = "/api/v1/datacenters", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::Datacenter>), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn list_datacenters(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::Datacenter>>> {
    let mut dcs: Vec<api::Datacenter> = state
        .store
        .list_datacenters()
        .await?
        .iter()
        .map(datacenter_out)
        .collect();
    if caller.require_admin().is_ok() {
        let counts = state.store.host_counts().await?;
        for dc in &mut dcs {
            let mut hosts = api::HostCounts::default();
            for c in counts.iter().filter(|c| c.datacenter_id == dc.id) {
                let n = u64::try_from(c.hosts).unwrap_or(0);
                match c.state {
                    HostState::Ready => hosts.ready = n,
                    HostState::Unreachable => hosts.unreachable = n,
                }
            }
            dc.hosts = Some(hosts);
        }
    }
    Ok(Json(dcs))
}

/// Adds a datacenter (administrators only).
#[utoipa::path(post, path = "/api/v1/datacenters", request_body = api::CreateDatacenter, security(("bearer" = [])),
    responses((status = 201, body = api::Datacenter), (status = 403, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn create_datacenter(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<api::CreateDatacenter>,
) -> ApiResult<(StatusCode, Json<api::Datacenter>)> {
    caller.require_admin()?;
    neptune_types::NodeId::new(req.name.as_str()).map_err(|_| {
        ApiError::InvalidRequest(
            "a datacenter name is 1 to 64 letters, digits, '-', '_' or '.'".into(),
        )
    })?;
    let dc = DatacenterRecord {
        public_gateway: req.public_gateway,
        id: Uuid::new_v4().into(),
        name: req.name,
        created_at: now_ms(),
        home_pools: req.home_pools,
    };
    // The new pools must fit the domain: no host bits, no overlap.
    let mut all = state.store.list_datacenters().await?;
    all.push(dc.clone());
    crate::plan::domain(&state.config.private_pools, &all)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    state.store.create_datacenter(&dc).await?;
    Ok((StatusCode::CREATED, Json(datacenter_out(&dc))))
}

/// Hosts with their capacities and health (administrators only).
#[utoipa::path(get, path = "/api/v1/hosts", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::Host>), (status = 403, body = api::ErrorBody)))]
pub(crate) async fn list_hosts(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::Host>>> {
    caller.require_admin()?;
    let names: HashMap<DatacenterId, String> = state
        .store
        .list_datacenters()
        .await?
        .into_iter()
        .map(|d| (d.id, d.name))
        .collect();
    let hosts = state.store.list_hosts().await?;
    Ok(Json(
        hosts
            .iter()
            .map(|h| host_out(h, names.get(&h.datacenter_id).map_or("?", String::as_str)))
            .collect(),
    ))
}

/// One host with its capacity, use and health (administrators only).
#[utoipa::path(get, path = "/api/v1/hosts/{name}",
    params(("name" = String, Path, description = "The host's name (unique across datacenters)")),
    security(("bearer" = [])),
    responses((status = 200, body = api::Host), (status = 401, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn show_host(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<api::Host>> {
    caller.require_admin()?;
    let host = state
        .store
        .host_by_name(&name)
        .await
        .map_err(|e| ApiError::naming(e, &name))?;
    let dcs = super::present::datacenter_names(&state, [host.datacenter_id].into_iter()).await?;
    Ok(Json(host_out(
        &host,
        dcs.get(&host.datacenter_id).map_or("?", String::as_str),
    )))
}

/// Registers a host (or refreshes its registration) in a datacenter:
/// administrators, and an Agent with the `agent` token of that host.
#[utoipa::path(post, path = "/api/v1/hosts", request_body = api::RegisterHost, security(("bearer" = [])),
    responses((status = 200, body = api::Host), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn register_host(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<api::RegisterHost>,
) -> ApiResult<Json<api::Host>> {
    match &caller.scope {
        // An Agent registers the host its token names, and only that one.
        neptune_store::TokenScope::Agent { host }
            if caller.is_admin() && *host == format!("{}/{}", req.datacenter, req.name) => {}
        neptune_store::TokenScope::Agent { .. } => {
            return Err(ApiError::Forbidden(
                "this agent token registers another host",
            ))
        }
        neptune_store::TokenScope::User => caller.require_admin()?,
    }
    if req.cpus <= 0 || req.ram_mib <= 0 || req.disk_mib <= 0 || req.vm_slots <= 0 {
        return Err(ApiError::InvalidRequest(
            "cpus, ram_mib, disk_mib and vm_slots must be positive".into(),
        ));
    }
    if req.uplink_mbps < 0 {
        return Err(ApiError::InvalidRequest(
            "uplink_mbps is 0 (not known) or positive".into(),
        ));
    }
    neptune_types::NodeId::new(req.name.as_str()).map_err(|_| {
        ApiError::InvalidRequest("a host name is 1 to 64 letters, digits, '-', '_' or '.'".into())
    })?;
    let dc = state
        .views
        .datacenter(state.store.as_ref(), &req.datacenter)
        .await?;
    let registration = heartbeats::Registration {
        datacenter_id: dc.id,
        agent_url: req.agent_url.clone(),
        cpus: req.cpus,
        ram_mib: req.ram_mib,
        disk_mib: req.disk_mib,
        vm_slots: req.vm_slots,
        uplink_mbps: req.uplink_mbps,
    };
    if let Some(host) = state.heartbeats.repeat(&req.name, &registration, now_ms()) {
        return Ok(Json(host_out(&host, &dc.name)));
    }
    let host = state
        .heartbeats
        .register(
            state.store.clone(),
            HostRecord {
                id: Uuid::new_v4().into(),
                datacenter_id: dc.id,
                name: req.name,
                agent_url: req.agent_url,
                cpus: req.cpus,
                ram_mib: req.ram_mib,
                disk_mib: req.disk_mib,
                vm_slots: req.vm_slots,
                uplink_mbps: req.uplink_mbps,
                state: HostState::Ready,
                last_seen: now_ms(),
                used: HostUsage::default(),
            },
        )
        .await?;
    Ok(Json(host_out(&host, &dc.name)))
}

/// The templates the caller may use: public ones and their own (an
/// administrator: all), each with its owner and visibility.
#[utoipa::path(get, path = "/api/v1/templates", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::Template>), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn list_templates(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::Template>>> {
    let templates: Vec<TemplateRecord> = state
        .store
        .list_templates()
        .await?
        .into_iter()
        .filter(|t| {
            caller.is_admin()
                || t.visibility == Visibility::Public
                || t.owner_id == Some(caller.user.id)
        })
        .collect();
    let owners =
        super::present::user_names(&state, templates.iter().filter_map(|t| t.owner_id)).await?;
    Ok(Json(
        templates
            .iter()
            .map(|t| template_out(t, &owners))
            .collect::<ApiResult<_>>()?,
    ))
}

/// One template the caller may use: a public one or their own (an
/// administrator: any). Another user's private template is not found, as
/// one that does not exist.
#[utoipa::path(get, path = "/api/v1/templates/{id}", params(("id" = TemplateId, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = api::Template), (status = 401, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)))]
pub(crate) async fn show_template(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<TemplateId>,
) -> ApiResult<Json<api::Template>> {
    let missing = || ApiError::Missing {
        what: "template",
        key: id.to_string(),
    };
    let t = match state.store.template(id).await {
        Ok(t) => t,
        Err(neptune_store::StoreError::NotFound { .. }) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let visible = caller.is_admin()
        || t.visibility == Visibility::Public
        || t.owner_id == Some(caller.user.id);
    if !visible {
        return Err(missing());
    }
    let owners = super::present::user_names(&state, t.owner_id.into_iter()).await?;
    Ok(Json(template_out(&t, &owners)?))
}

/// Registers an image of the image repository as a template
/// (administrators only; public unless `visibility` says otherwise).
/// `qemu-img` reads its format and size.
#[utoipa::path(post, path = "/api/v1/templates", request_body = api::CreateTemplate, security(("bearer" = [])),
    responses((status = 201, body = api::Template), (status = 403, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn create_template(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<api::CreateTemplate>,
) -> ApiResult<(StatusCode, Json<api::Template>)> {
    caller.require_admin()?;
    let t = crate::app::templates::register(&state, caller.user.id, req).await?;
    let owners = super::present::user_names(&state, [caller.user.id].into_iter()).await?;
    Ok((StatusCode::CREATED, Json(template_out(&t, &owners)?)))
}

/// Imports an image the caller uploads (the request's body, qcow2 or raw,
/// with its `Content-Length`) as a template of theirs: private unless an
/// administrator asks for a public one. `qemu-img` checks its format and
/// size; an image naming another file (a backing or data file) or a
/// damaged qcow2 is refused. The body may take a minute plus a second per
/// MiB to arrive; two uploads run at once (`429` beyond).
#[utoipa::path(post, path = "/api/v1/templates/import", params(api::ImportTemplate),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The image file"),
    security(("bearer" = [])),
    responses((status = 201, body = api::Template), (status = 403, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 413, body = api::ErrorBody),
        (status = 422, body = api::ErrorBody), (status = 429, body = api::ErrorBody)))]
pub(crate) async fn import_template(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    query: Result<Query<api::ImportTemplate>, axum::extract::rejection::QueryRejection>,
    deadline: Option<axum::Extension<crate::server::BodyDeadline>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Every refusal before the body is read goes through `refuse_unread`,
    // the framework's own (a bad token, a bad query) too.
    let (caller, req) = match (caller, query) {
        (Ok(caller), Ok(Query(req))) => (caller, req),
        (Err(e), _) => return super::guard::refuse_unread(e, declared, body),
        (_, Err(e)) => {
            let e = ApiError::InvalidRequest(e.body_text());
            return super::guard::refuse_unread(e, declared, body);
        }
    };
    let checked = crate::app::templates::check_import(&state, &caller, &req, declared).await;
    let (bytes, _slot) =
        match checked.and_then(|bytes| Ok((bytes, crate::app::templates::upload_slot(&state)?))) {
            Ok(admitted) => admitted,
            // Refused before the body is read: the client is likely still
            // sending it, and reads the answer once it is done.
            Err(e) => return super::guard::refuse_unread(e, declared, body),
        };
    if let Some(axum::Extension(deadline)) = deadline {
        deadline.extend(crate::app::templates::upload_time(bytes));
    }
    let imported = async {
        let t = crate::app::templates::import(&state, &caller, req, bytes, body.into_data_stream())
            .await?;
        let owners = super::present::user_names(&state, [caller.user.id].into_iter()).await?;
        Ok::<_, ApiError>((StatusCode::CREATED, Json(template_out(&t, &owners)?)))
    };
    imported.await.into_response()
}

/// Makes a template public (every user may deploy from it) or private
/// (its owner's alone). Administrators only; a public template's name must
/// be unique among public templates.
#[utoipa::path(post, path = "/api/v1/templates/{id}/visibility", params(("id" = TemplateId, Path)),
    request_body = api::SetVisibility, security(("bearer" = [])),
    responses((status = 200, body = api::Template), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn set_template_visibility(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<TemplateId>,
    Json(req): Json<api::SetVisibility>,
) -> ApiResult<Json<api::Template>> {
    caller.require_admin()?;
    let t = state
        .store
        .set_template_visibility(id, crate::app::templates::visibility(req.visibility))
        .await
        .map_err(|e| match e {
            neptune_store::StoreError::Duplicate { .. } => ApiError::Conflict(
                "a public template of that name exists; rename one first".to_owned(),
            ),
            other => other.into(),
        })?;
    let owners = super::present::user_names(&state, t.owner_id.into_iter()).await?;
    Ok(Json(template_out(&t, &owners)?))
}

/// A kind of the catalogue of predefined topologies.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CatalogueKind {
    kind: String,
    description: String,
    min_nodes: usize,
    max_nodes: usize,
    default_nodes: usize,
}

/// The catalogue of predefined topologies.
#[utoipa::path(get, path = "/api/v1/catalogue", security(("bearer" = [])),
    responses((status = 200, body = Vec<CatalogueKind>), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn catalogue(_caller: Caller) -> Json<Vec<CatalogueKind>> {
    Json(
        Kind::ALL
            .iter()
            .map(|k| CatalogueKind {
                kind: k.name().to_owned(),
                description: k.description().to_owned(),
                min_nodes: k.min_nodes(),
                max_nodes: k.max_nodes(),
                default_nodes: k.default_nodes(),
            })
            .collect(),
    )
}

/// Use of every address pool of the domain (administrators only).
#[utoipa::path(get, path = "/api/v1/address-pools", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::PoolUsage>), (status = 403, body = api::ErrorBody)))]
pub(crate) async fn address_pools(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::PoolUsage>>> {
    caller.require_admin()?;
    let datacenters = state.store.list_datacenters().await?;
    let domain = crate::plan::domain(&state.config.private_pools, &datacenters)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let stored = state.store.owned_addresses().await?;
    let snapshot =
        crate::plan::snapshot(domain, &stored).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(
        snapshot
            .utilisation()
            .into_iter()
            .map(|u| {
                let (kind, datacenter) = match &u.pool.kind {
                    neptune_ipam::PoolKind::Private => ("private", None),
                    neptune_ipam::PoolKind::Home { datacenter } => {
                        ("home", Some(datacenter.to_string()))
                    }
                };
                api::PoolUsage {
                    pool: u.pool.prefix.to_string(),
                    kind: kind.to_owned(),
                    datacenter,
                    total: u.total,
                    used: u.used,
                    free: u.free,
                    largest_free: u.largest_free.map(|n| n.to_string()),
                    free_blocks: u.free_blocks,
                }
            })
            .collect(),
    ))
}

/// Compares the store with what every host's Agent runs and puts drift
/// right (administrators only); the Manager also does this periodically.
#[utoipa::path(post, path = "/api/v1/reconcile", security(("bearer" = [])),
    responses((status = 200, body = api::ReconcileReport), (status = 403, body = api::ErrorBody)))]
pub(crate) async fn reconcile(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<api::ReconcileReport>> {
    caller.require_admin()?;
    Ok(Json(
        crate::reconcile::reconcile(&state)
            .await
            .map_err(ApiError::Internal)?,
    ))
}
