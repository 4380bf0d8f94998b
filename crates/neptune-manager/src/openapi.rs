//! The OpenAPI document, generated from the handlers and API types. The
//! checked-in copy (`openapi/neptune.json` at the repository root) is
//! compared with this in a test, so code and document never drift.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http;

#[derive(OpenApi)]
#[openapi(
    info(title = "Neptune", description = "Infrastructure as a Service for whole Virtual Infrastructures: design, approval, placement, deployment, Service Switching."),
    paths(
        http::health, http::openapi_json,
        http::index, http::asset,
        http::login, http::logout, http::create_session, http::show_session, http::delete_session, http::create_api_token, http::list_tokens, http::revoke_token,
        http::me, http::change_password, http::list_ssh_keys, http::add_ssh_key, http::delete_ssh_key, http::list_users, http::show_user, http::create_user, http::disable_user, http::enable_user, http::set_user_quota,
        http::list_datacenters, http::create_datacenter, http::list_hosts, http::show_host, http::register_host,
        http::list_templates, http::show_template, http::create_template, http::import_template, http::set_template_visibility, http::catalogue, http::address_pools, http::reconcile,
        http::create_vi, http::list_vis, http::show_vi, http::edit_vi,
        http::request_vi, http::withdraw_vi, http::revise_vi, http::plan_vi, http::accept_vi, http::reject_vi, http::deploy_vi, http::release_vi,
        http::suspend_vi, http::resume_vi, http::save_template, http::terminate_vi,
        http::migrate_vi, http::cancel_migration, http::migration_plan, http::migration_requests,
        http::register_switch, http::remove_switch, http::list_switches,
        http::vm_states, http::read_console, http::type_on_console,
        http::vi_jobs, http::show_job, http::job_events,
    ),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The web console's session (`POST /api/v1/auth/session`); with it,
        // a state-changing request also sends `X-CSRF-Token`.
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("neptune_session"))),
        );
    }
}

/// The OpenAPI document of the Manager's API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
