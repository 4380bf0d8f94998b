//! The Agent API's OpenAPI document, built from [`ROUTES`] and the types'
//! schemas. The routes are data, not handlers, so the document needs no
//! server; `neptune-agent`'s tests check that its server answers every
//! route listed here, and this crate's test that the checked-in copy
//! (`openapi/agent.json`) is what this builds.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ArrayBuilder, ContentBuilder, ObjectBuilder, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder, Schema, Type,
};
use utoipa::OpenApi;

use crate::{codes, DEFAULT_CONSOLE_BYTES, MAX_CONSOLE_BYTES};

/// One route of the Agent API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `PUT`, `POST` or `DELETE`.
    pub method: &'static str,
    /// The path, `{name}` standing for a VM's name.
    pub path: &'static str,
    /// What it does, in a line.
    pub summary: &'static str,
    /// The schema of the request body, if it has one.
    pub request: Option<&'static str>,
    /// The status of success.
    pub status: u16,
    /// The schema of the answer on success: a name, `[name]` for an array,
    /// `None` for no body.
    pub answer: Option<&'static str>,
    /// The statuses of its refusals, each an [`crate::ErrorBody`].
    pub refusals: &'static [u16],
}

/// The path of the Agent API's own OpenAPI document.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// What every route on a VM may answer besides its own refusals: a bad
/// name, no token, and a hypervisor that failed or did not answer.
const VM: &[u16] = &[400, 401, 502, 503];

/// Every route the Agent serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/healthz",
        summary: "Whether the Agent serves (no token needed)",
        request: None,
        status: 200,
        answer: Some("Health"),
        refusals: &[],
    },
    Route {
        method: "GET",
        path: OPENAPI_PATH,
        summary: "This API's OpenAPI document, as checked in at openapi/agent.json (no token needed)",
        request: None,
        status: 200,
        answer: None,
        refusals: &[],
    },
    Route {
        method: "GET",
        path: "/v1/host",
        summary: "The host this Agent drives and its capacity",
        request: None,
        status: 200,
        answer: Some("HostInfo"),
        refusals: &[401],
    },
    Route {
        method: "GET",
        path: "/v1/vms",
        summary: "The VMs defined on this host",
        request: None,
        status: 200,
        answer: Some("[VmInfo]"),
        refusals: &[401, 502, 503],
    },
    Route {
        method: "GET",
        path: "/v1/vms/{name}",
        summary: "One VM",
        request: None,
        status: 200,
        answer: Some("VmInfo"),
        refusals: &[400, 401, 404, 502, 503],
    },
    Route {
        method: "PUT",
        path: "/v1/vms/{name}",
        summary: "Defines the VM, stopped (the same spec again: nothing changes)",
        request: Some("VmSpec"),
        status: 204,
        answer: None,
        refusals: &[400, 401, 409, 413, 415, 502, 503],
    },
    Route {
        method: "DELETE",
        path: "/v1/vms/{name}",
        summary: "Stops and undefines the VM; its disk stays (absent: nothing to do)",
        request: None,
        status: 204,
        answer: None,
        refusals: VM,
    },
    Route {
        method: "PUT",
        path: "/v1/vms/{name}/disk",
        summary: "Makes the VM's disk from a template image; answers its path",
        request: Some("PrepareDisk"),
        status: 200,
        answer: Some("Disk"),
        refusals: &[400, 401, 409, 413, 415, 422, 502, 503],
    },
    Route {
        method: "DELETE",
        path: "/v1/vms/{name}/disk",
        summary: "Deletes the VM's disk (absent: nothing to do)",
        request: None,
        status: 204,
        answer: None,
        refusals: VM,
    },
    Route {
        method: "POST",
        path: "/v1/vms/{name}/disk/export",
        summary: "Copies the VM's disk to a path of the shared image repository",
        request: Some("ExportDisk"),
        status: 204,
        answer: None,
        refusals: &[400, 401, 404, 413, 415, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/vms/{name}/start",
        summary: "Starts the VM (running: nothing to do)",
        request: None,
        status: 204,
        answer: None,
        refusals: &[400, 401, 404, 409, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/vms/{name}/save",
        summary: "Saves the VM's memory to a file and frees the host (suspend)",
        request: Some("SaveVm"),
        status: 204,
        answer: None,
        refusals: &[400, 401, 404, 413, 415, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/vms/{name}/restore",
        summary: "Defines and starts the VM from a saved state (resume)",
        request: Some("RestoreVm"),
        status: 204,
        answer: None,
        refusals: &[400, 401, 409, 413, 415, 422, 502, 503],
    },
    Route {
        method: "GET",
        path: "/v1/vms/{name}/console",
        summary: "The end of the VM's serial console",
        request: None,
        status: 200,
        answer: Some("Console"),
        refusals: &[400, 401, 404, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/vms/{name}/console",
        summary: "Types on the VM's serial console",
        request: Some("ConsoleInput"),
        status: 204,
        answer: None,
        refusals: &[400, 401, 404, 409, 413, 415, 502, 503],
    },
    Route {
        method: "GET",
        path: "/v1/vms/{name}/outgoing",
        summary: "The running VM as it would leave this host live",
        request: None,
        status: 200,
        answer: Some("Outgoing"),
        refusals: &[400, 401, 404, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/incoming",
        summary: "Prepares this host for a VM arriving live",
        request: Some("IncomingRequest"),
        status: 200,
        answer: Some("Incoming"),
        refusals: &[400, 401, 409, 413, 415, 422, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/vms/{name}/migrate",
        summary: "Starts moving the VM live to the host that accepted it (or finds the move under way or done)",
        request: Some("Incoming"),
        status: 202,
        answer: Some("Migration"),
        refusals: &[400, 401, 413, 415],
    },
    Route {
        method: "GET",
        path: "/v1/vms/{name}/migration",
        summary: "How the VM's last live move from this host goes (?wait_ms=N, at most 10000: while it runs, answered when it progresses or ends, or after N ms)",
        request: None,
        status: 200,
        answer: Some("Migration"),
        refusals: &[400, 401, 404],
    },
    Route {
        method: "GET",
        path: "/v1/vms/{name}/arrival",
        summary: "Whether the VM runs on this host (?wait_ms=N, at most 10000: while it does not, answered the moment its guest resumes here, or after N ms)",
        request: None,
        status: 200,
        answer: Some("Arrival"),
        refusals: &[400, 401, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/vms/{name}/arrived",
        summary: "Completes a VM that arrived live",
        request: None,
        status: 204,
        answer: None,
        refusals: &[400, 401, 404, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/networks/join",
        summary: "Makes sure of networks on this host, each flooding to at least its segment's peers (those already there kept)",
        request: Some("JoinSegments"),
        status: 204,
        answer: None,
        refusals: &[400, 401, 413, 415, 502, 503],
    },
    Route {
        method: "POST",
        path: "/v1/batch",
        summary: "Runs operations on this host's VMs together (at most 256): each answers as its own route would, in order",
        request: Some("Batch"),
        status: 200,
        answer: Some("BatchAnswer"),
        refusals: &[400, 401, 413, 415],
    },
];

/// The codes a refusal with `status` may carry, for the document.
fn codes_of(status: u16) -> &'static [&'static str] {
    match status {
        400 => &[codes::INVALID_REQUEST],
        401 => &[codes::UNAUTHENTICATED],
        404 => &[codes::NO_SUCH_VM, codes::NO_DISK, codes::NOT_FOUND],
        409 => &[codes::SPEC_MISMATCH, codes::NO_ROOM],
        413 => &[codes::PAYLOAD_TOO_LARGE],
        415 => &[codes::UNSUPPORTED_MEDIA_TYPE],
        422 => &[codes::NO_IMAGE, codes::NO_SAVED_STATE],
        502 => &[codes::HYPERVISOR_FAILED],
        503 => &[codes::HYPERVISOR_UNREACHABLE],
        _ => &[],
    }
}

/// The schemas of every type that travels; the derive also collects the
/// types they hold (`VmSpec`'s `Nic`, `Segment`, `Seed`, ...).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Neptune Agent",
        description = "The API of the per-host Agent, through which the Neptune Manager drives a host's hypervisor. Every operation is idempotent."
    ),
    components(schemas(
        crate::Health,
        crate::HostInfo,
        crate::Console,
        crate::ConsoleInput,
        crate::PrepareDisk,
        crate::Disk,
        crate::ExportDisk,
        crate::SaveVm,
        crate::RestoreVm,
        crate::Migration,
        crate::MigrationState,
        crate::Arrival,
        crate::JoinSegments,
        crate::NetworkJoin,
        crate::Batch,
        crate::BatchAnswer,
        crate::BatchResult,
        crate::BatchOp,
        crate::BatchOut,
        crate::ErrorBody,
        crate::VmSpec,
        crate::VmInfo,
        crate::VmState,
        crate::Outgoing,
        crate::DiskBase,
        crate::IncomingRequest,
        crate::Incoming,
        crate::MigrationProgress,
        crate::MigrationReport,
        crate::Capacity,
    ))
)]
struct Schemas;

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// The schema of `answer` as [`Route::answer`] names it.
fn schema_of(answer: &str) -> RefOr<Schema> {
    match answer.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        Some(item) => ArrayBuilder::new().items(reference(item)).into(),
        None => reference(answer),
    }
}

fn json(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

/// The Agent API's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = Schemas::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut paths = PathsBuilder::new();
    for route in ROUTES {
        let mut op = OperationBuilder::new()
            .summary(Some(route.summary))
            .operation_id(Some(operation_id(route)));
        if route.path.contains("{name}") {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("name")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some("The VM's name: 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'"))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if route.method == "GET" && route.path.ends_with("/console") {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("bytes")
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(format!(
                        "How many of the console's last bytes to return: {DEFAULT_CONSOLE_BYTES} by default, at most {MAX_CONSOLE_BYTES}"
                    )))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                                utoipa::openapi::KnownFormat::Int64,
                            ))),
                    )),
            );
        }
        if let Some(body) = route.request {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", json(reference(body)))
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let mut ok = ResponseBuilder::new().description(match route.status {
            202 => "Accepted",
            204 => "Done",
            _ => "OK",
        });
        if let Some(answer) = route.answer {
            ok = ok.content("application/json", json(schema_of(answer)));
        }
        if route.path == OPENAPI_PATH {
            ok = ok.content(
                "application/json",
                json(
                    ObjectBuilder::new()
                        .schema_type(Type::Object)
                        .description(Some("An OpenAPI 3.1 document"))
                        .into(),
                ),
            );
        }
        op = op.response(route.status.to_string(), ok.build());
        for status in route.refusals {
            let codes: Vec<String> = codes_of(*status).iter().map(|c| format!("`{c}`")).collect();
            op = op.response(
                status.to_string(),
                ResponseBuilder::new()
                    .description(format!("Refused: {}", codes.join(" or ")))
                    .content("application/json", json(reference("ErrorBody")))
                    .build(),
            );
        }
        if route.refusals.contains(&401) {
            op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        paths = paths.path(route.path, PathItem::new(method(route.method), op));
    }
    doc.paths = paths.build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    doc
}

fn method(name: &str) -> HttpMethod {
    match name {
        "GET" => HttpMethod::Get,
        "PUT" => HttpMethod::Put,
        "POST" => HttpMethod::Post,
        "DELETE" => HttpMethod::Delete,
        other => unreachable!("route method {other} is not one of the API's"),
    }
}

/// `get_vms_name_console` from `GET /v1/vms/{name}/console`
/// (`get_openapi_json` from `GET /v1/openapi.json`): unique, and readable
/// in generated clients.
fn operation_id(route: &Route) -> String {
    let mut id = route.method.to_ascii_lowercase();
    for part in route
        .path
        .split('/')
        .filter(|p| !p.is_empty() && *p != "v1")
    {
        id.push('_');
        id.extend(
            part.trim_matches(|c| c == '{' || c == '}')
                .chars()
                .map(|c| if c == '.' { '_' } else { c }),
        );
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_checked_in() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/agent.json");
        let generated = serde_json::to_string_pretty(&openapi()).expect("serialises") + "\n";
        if std::env::var_os("NEPTUNE_UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &generated).expect("openapi/ is writable");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "openapi/agent.json is out of date: rerun with NEPTUNE_UPDATE_GOLDEN=1 and commit it"
        );
    }

    #[test]
    fn every_schema_a_route_names_is_in_the_document() {
        let doc = openapi();
        let schemas = &doc.components.as_ref().expect("components").schemas;
        for route in ROUTES {
            let names = route.request.into_iter().chain(
                route
                    .answer
                    .map(|a| a.trim_start_matches('[').trim_end_matches(']')),
            );
            for name in names {
                assert!(schemas.contains_key(name), "{route:?} names {name}");
            }
        }
        for nested in ["Nic", "Segment", "Seed", "ErrorBody"] {
            assert!(schemas.contains_key(nested), "{nested} missing");
        }
    }

    #[test]
    fn routes_are_unique_and_every_refusal_has_codes() {
        let mut seen = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(seen.insert((route.method, route.path)), "{route:?} twice");
            assert!(ids.insert(operation_id(route)), "{route:?}: its id twice");
            for status in route.refusals {
                assert!(!codes_of(*status).is_empty(), "{route:?}: {status}");
            }
        }
    }
}
