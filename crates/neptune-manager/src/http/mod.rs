//! The HTTP JSON API under `/api/v1`: routing and the conversions between
//! store records and API types. Handlers live in one module per resource.

mod console;
pub(crate) mod guard;
mod identity;
mod infrastructure;
mod operations;
mod present;
mod progress;
pub(crate) mod session;
mod switching;
mod vis;
mod web;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};
use neptune_api as api;
use neptune_store::{
    DatacenterRecord, HostRecord, HostState, Quota, Role, TemplateRecord, UserRecord, Visibility,
};
use neptune_types::UserId;

use crate::AppState;

pub(crate) use console::*;
pub(crate) use identity::*;
pub(crate) use infrastructure::*;
pub(crate) use operations::*;
pub(crate) use progress::*;
pub(crate) use session::*;
pub(crate) use switching::*;
pub(crate) use vis::*;
pub(crate) use web::*;

pub(crate) fn router(state: AppState) -> Router {
    // A design may be large: its own body limit, and a slot while it is read.
    let design = |route: MethodRouter<AppState>| {
        route
            .layer(DefaultBodyLimit::max(guard::MAX_DESIGN_BODY_BYTES))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                guard::design_slot,
            ))
    };
    let v1 = Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route(
            "/auth/session",
            get(show_session)
                .post(create_session)
                .delete(delete_session),
        )
        .route("/tokens", get(list_tokens).post(create_api_token))
        .route("/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/me", get(me))
        .route("/me/password", post(change_password))
        .route("/me/ssh-keys", get(list_ssh_keys).post(add_ssh_key))
        .route("/me/ssh-keys/{id}", axum::routing::delete(delete_ssh_key))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(show_user))
        .route("/users/{id}/disable", post(disable_user))
        .route("/users/{id}/enable", post(enable_user))
        .route("/users/{id}/quota", put(set_user_quota))
        .route(
            "/datacenters",
            get(list_datacenters).post(create_datacenter),
        )
        .route(
            "/datacenters/{name}/switch",
            put(register_switch).delete(remove_switch),
        )
        .route("/switches", get(list_switches))
        .route("/migration-requests", get(migration_requests))
        .route("/hosts", get(list_hosts).post(register_host))
        .route("/hosts/{name}", get(show_host))
        .route("/templates", get(list_templates).post(create_template))
        .route("/templates/import", post(import_template))
        .route("/templates/{id}", get(show_template))
        .route("/templates/{id}/visibility", post(set_template_visibility))
        .route("/catalogue", get(catalogue))
        .route("/address-pools", get(address_pools))
        .route("/reconcile", post(reconcile))
        .route("/vis", get(list_vis).merge(design(post(create_vi))))
        .route("/vis/{id}", get(show_vi).merge(design(put(edit_vi))))
        .route("/vis/{id}/request", post(request_vi))
        .route("/vis/{id}/withdraw", post(withdraw_vi))
        .route("/vis/{id}/revise", post(revise_vi))
        .route("/vis/{id}/plan", get(plan_vi))
        .route("/vis/{id}/jobs", get(vi_jobs))
        .route("/vis/{id}/accept", post(accept_vi))
        .route("/vis/{id}/reject", post(reject_vi))
        .route("/vis/{id}/deploy", post(deploy_vi))
        .route("/vis/{id}/release", post(release_vi))
        .route("/vis/{id}/suspend", post(suspend_vi))
        .route("/vis/{id}/resume", post(resume_vi))
        .route(
            "/vis/{id}/migrate",
            post(migrate_vi).delete(cancel_migration),
        )
        .route("/vis/{id}/migrate/plan", get(migration_plan))
        .route("/vis/{id}/templates", post(save_template))
        .route("/vis/{id}/terminate", post(terminate_vi))
        .route("/vis/{id}/vms", get(vm_states))
        .route(
            "/vis/{id}/vms/{node}/console",
            get(read_console).post(type_on_console),
        )
        .route("/jobs/{id}", get(show_job))
        .route("/jobs/{id}/events", get(job_events));
    Router::new()
        .route("/healthz", get(health))
        .nest("/api/v1", v1)
        .merge(web::router())
        .layer(DefaultBodyLimit::max(guard::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(guard::declared_length))
        .layer(axum::middleware::from_fn(guard::error_shape))
        .with_state(state)
}

/// Liveness of the Manager.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = api::Health)))]
pub(crate) async fn health() -> Json<api::Health> {
    Json(api::Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi())
}

pub(crate) fn visibility_out(v: Visibility) -> api::Visibility {
    match v {
        Visibility::Private => api::Visibility::Private,
        Visibility::Public => api::Visibility::Public,
    }
}

pub(crate) fn role(r: Role) -> api::Role {
    match r {
        Role::Admin => api::Role::Admin,
        Role::User => api::Role::User,
    }
}

pub(crate) fn quota_out(q: Quota) -> api::Quota {
    api::Quota {
        vms: q.vms,
        vcpus: q.vcpus,
        ram_mib: q.ram_mib,
        public_addresses: q.public_addresses,
        designs: q.designs,
        design_mib: q.design_mib,
        private_addresses: q.private_addresses,
    }
}

pub(crate) fn user_out(u: &UserRecord) -> api::User {
    api::User {
        id: u.id,
        name: u.name.clone(),
        role: role(u.role),
        quota: quota_out(u.quota),
        disabled: u.disabled_at.is_some(),
        usage: None,
    }
}

pub(crate) fn datacenter_out(d: &DatacenterRecord) -> api::Datacenter {
    api::Datacenter {
        home_pools: d.home_pools.clone(),
        id: d.id,
        name: d.name.clone(),
        public_gateway: d.public_gateway.clone(),
        hosts: None,
    }
}

pub(crate) fn host_out(h: &HostRecord, datacenter: &str) -> api::Host {
    api::Host {
        id: h.id,
        datacenter: datacenter.to_owned(),
        name: h.name.clone(),
        agent_url: h.agent_url.clone(),
        cpus: h.cpus,
        ram_mib: h.ram_mib,
        disk_mib: h.disk_mib,
        vm_slots: h.vm_slots,
        uplink_mbps: h.uplink_mbps,
        state: match h.state {
            HostState::Ready => api::HostState::Ready,
            HostState::Unreachable => api::HostState::Unreachable,
        },
        last_seen: h.last_seen,
        used_vcpus: h.used.vcpus,
        used_ram_mib: h.used.ram_mib,
        used_disk_mib: h.used.disk_mib,
        used_slots: h.used.slots,
        used_uplink_mbps: h.used.uplink_mbps,
    }
}

pub(crate) fn template_out(
    t: &TemplateRecord,
    users: &std::collections::HashMap<UserId, String>,
) -> crate::error::ApiResult<api::Template> {
    Ok(api::Template {
        id: t.id,
        name: t.name.clone(),
        owner: t
            .owner_id
            .and_then(|o| users.get(&o).cloned())
            .unwrap_or_default(),
        visibility: visibility_out(t.visibility),
        format: t.format.clone(),
        size_mib: t.size_mib,
        os_name: t.os_name.clone(),
        vcpus: t.vcpus,
        ram_mib: t.ram_mib,
        disk_mib: t.disk_mib,
        software: crate::app::templates::software_of(t)?,
    })
}
