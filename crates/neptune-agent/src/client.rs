//! [`AgentClient`]: the typed client of the Agent API, as the Manager uses
//! it; and [`AgentHypervisor`], the same client behind the
//! [`Hypervisor`] port, so the Manager's jobs drive a remote host exactly
//! as they would drive a local hypervisor.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use neptune_hypervisor::{
    validate_vm_name, BatchOp, BatchOut, Capacity, Hypervisor, HypervisorError, Incoming,
    IncomingRequest, MigrationProgress, MigrationReport, NetworkJoin, Op, Outgoing, VmInfo, VmSpec,
};
use neptune_types::Secret;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{self, codes, ErrorBody};

/// How long one question about a move waits for it to change: the answer
/// comes the moment the move progresses or ends.
const MIGRATION_WAIT: Duration = Duration::from_secs(2);

/// How often a VM arriving on a host whose Agent cannot be waited on
/// (an older one) is looked for.
const OLD_AGENT_LOOK_EVERY: Duration = Duration::from_millis(50);

/// Operations sent in one `POST /v1/batch`.
const BATCH_CHUNK: usize = 64;

/// Default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time for a whole request (a simulated or real hypervisor
/// operation included).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call to an Agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, reset, or timed out. The operation
    /// may or may not have happened; every Agent call is idempotent, so
    /// repeating it is safe.
    #[error("agent {url} is unreachable")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The Agent answered with a refusal.
    #[error("agent refused the request ({status}, {code}): {message}")]
    Refused {
        status: u16,
        /// One of [`crate::api::codes`] (or `http_<status>` when the answer
        /// was not an Agent error body).
        code: String,
        message: String,
        /// [`ErrorBody::details`].
        details: Vec<String>,
    },
    /// The Agent answered something this client cannot read.
    #[error("agent {url} sent an unreadable answer")]
    Protocol {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request was never sent: a VM name unfit for a URL.
    #[error("invalid request")]
    Invalid(#[source] HypervisorError),
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

impl ClientError {
    /// Whether repeating the same call may succeed: no answer, or an
    /// Agent-side failure (5xx). Refusals (4xx) need something to change
    /// first.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The refusal's code, if the Agent refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The same failure in the port's terms. `op` and `vm` say which call
    /// failed; `what` is the call's other argument the error may name (the
    /// template image of a disk, the state path of a restore).
    pub fn into_hypervisor_error(self, op: Op, vm: &str, what: &str) -> HypervisorError {
        match self {
            ClientError::Unreachable { .. } => HypervisorError::Unreachable(error_chain(&self)),
            ClientError::Invalid(e) => e,
            ClientError::Refused {
                code,
                message,
                details,
                ..
            } => {
                let detail = if details.is_empty() {
                    message.clone()
                } else {
                    details.join("; ")
                };
                match code.as_str() {
                    codes::NO_SUCH_VM => HypervisorError::NoSuchVm(vm.to_owned()),
                    codes::SPEC_MISMATCH => HypervisorError::SpecMismatch {
                        name: vm.to_owned(),
                    },
                    codes::NO_ROOM => HypervisorError::NoRoom(detail),
                    codes::NO_DISK => HypervisorError::NoDisk(vm.to_owned()),
                    codes::NO_IMAGE => HypervisorError::NoImage(what.to_owned()),
                    codes::NO_SAVED_STATE => HypervisorError::NoSavedState(what.to_owned()),
                    // Refused as sent: repeating it cannot help.
                    codes::INVALID_REQUEST
                    | codes::PAYLOAD_TOO_LARGE
                    | codes::UNSUPPORTED_MEDIA_TYPE => HypervisorError::InvalidRequest(detail),
                    codes::HYPERVISOR_UNREACHABLE => HypervisorError::Unreachable(detail),
                    codes::HYPERVISOR_FAILED => HypervisorError::Failed {
                        op,
                        vm: vm.to_owned(),
                        message: detail,
                    },
                    _ => HypervisorError::Failed {
                        op,
                        vm: vm.to_owned(),
                        message: format!("agent refused ({code}): {message}"),
                    },
                }
            }
            ClientError::Protocol { .. } | ClientError::Build(_) => HypervisorError::Failed {
                op,
                vm: vm.to_owned(),
                message: error_chain(&self),
            },
        }
    }
}

/// `err` and its sources, one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A typed client of one Agent. Cheap to clone (connections are pooled).
#[derive(Debug, Clone)]
pub struct AgentClient {
    base: String,
    token: Secret,
    timeout: Duration,
    http: reqwest::Client,
    /// Requests in flight at once through every client sharing it (each
    /// holds a connection, a file): `None`, unbounded.
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
}

/// What many [`AgentClient`]s share: one connection pool (a few idle
/// connections kept per Agent, closed after 5 s idle) and one bound on
/// the requests in flight at once. A Manager reaching thousands of hosts
/// makes one, so that its open files stay bounded whatever the number of
/// hosts and jobs; a request over the bound waits for a slot.
#[derive(Debug, Clone)]
pub struct AgentPool {
    http: reqwest::Client,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl AgentPool {
    /// A pool with at most `max_in_flight` requests at once.
    pub fn new(max_in_flight: usize) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(4)
            .build()
            .map_err(ClientError::Build)?;
        Ok(AgentPool {
            http,
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))),
        })
    }

    /// A client of the Agent at `base_url` through this pool.
    pub fn client(&self, base_url: &str, token: Secret) -> AgentClient {
        AgentClient {
            base: base_url.trim_end_matches('/').to_owned(),
            token,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            http: self.http.clone(),
            in_flight: Some(self.in_flight.clone()),
        }
    }
}

impl AgentClient {
    /// A client of the Agent at `base_url` (`http://host:port`) with the
    /// default timeouts.
    pub fn new(base_url: &str, token: Secret) -> Result<Self, ClientError> {
        Self::with_timeouts(
            base_url,
            token,
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_REQUEST_TIMEOUT,
        )
    }

    /// A client with its own connection and request timeouts.
    pub fn with_timeouts(
        base_url: &str,
        token: Secret,
        connect: Duration,
        request: Duration,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(connect)
            // Below the 10 s after which the Agent closes an idle
            // connection (neptune-http), so a pooled one is never reused
            // just as the Agent closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(ClientError::Build)?;
        Ok(AgentClient {
            base: base_url.trim_end_matches('/').to_owned(),
            token,
            timeout: request,
            http,
            in_flight: None,
        })
    }

    /// The Agent's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /healthz` (needs no token).
    pub async fn health(&self) -> Result<api::Health, ClientError> {
        self.call(Method::GET, "/healthz", None::<&()>).await
    }

    /// `GET /v1/openapi.json` (needs no token): the Agent API's OpenAPI
    /// document, as this Agent serves it.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, api::OPENAPI_PATH, None::<&()>).await
    }

    /// `POST /v1/networks/join`: makes sure of `networks` on the host,
    /// each flooding to at least its segment's peers.
    pub async fn join_segments(&self, networks: &[NetworkJoin]) -> Result<(), ClientError> {
        let body = api::JoinSegments {
            networks: networks.to_vec(),
        };
        self.call_empty(Method::POST, "/v1/networks/join", Some(&body))
            .await
    }

    /// `POST /v1/batch`: `ops` (at most [`api::MAX_BATCH_OPS`]) run on
    /// the host together; one result per operation, in order.
    pub async fn batch(&self, ops: &[BatchOp]) -> Result<Vec<api::BatchResult>, ClientError> {
        let body = api::Batch { ops: ops.to_vec() };
        let answer: api::BatchAnswer = self.call(Method::POST, "/v1/batch", Some(&body)).await?;
        if answer.results.len() != ops.len() {
            return Err(ClientError::Refused {
                status: 200,
                code: "http_200".to_owned(),
                message: format!(
                    "{} results for {} operations of a batch",
                    answer.results.len(),
                    ops.len()
                ),
                details: Vec::new(),
            });
        }
        Ok(answer.results)
    }

    /// `GET /v1/host`.
    pub async fn host(&self) -> Result<api::HostInfo, ClientError> {
        self.call(Method::GET, "/v1/host", None::<&()>).await
    }

    /// `GET /v1/vms`.
    pub async fn list_vms(&self) -> Result<Vec<VmInfo>, ClientError> {
        self.call(Method::GET, "/v1/vms", None::<&()>).await
    }

    /// `GET /v1/vms/{name}`.
    pub async fn vm(&self, name: &str) -> Result<VmInfo, ClientError> {
        let path = vm_path(name, "")?;
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `PUT /v1/vms/{name}/disk`: returns the disk's path on the host.
    pub async fn prepare_disk(
        &self,
        name: &str,
        template_image: &str,
        size_mib: u64,
    ) -> Result<String, ClientError> {
        let path = vm_path(name, "/disk")?;
        let body = api::PrepareDisk {
            template_image: template_image.to_owned(),
            size_mib,
        };
        let disk: api::Disk = self.call(Method::PUT, &path, Some(&body)).await?;
        Ok(disk.disk)
    }

    /// `DELETE /v1/vms/{name}/disk`.
    pub async fn remove_disk(&self, name: &str) -> Result<(), ClientError> {
        let path = vm_path(name, "/disk")?;
        self.call_empty(Method::DELETE, &path, None::<&()>).await
    }

    /// `PUT /v1/vms/{name}`: defines the VM (stopped).
    pub async fn define(&self, spec: &VmSpec) -> Result<(), ClientError> {
        let path = vm_path(&spec.name, "")?;
        self.call_empty(Method::PUT, &path, Some(spec)).await
    }

    /// `POST /v1/vms/{name}/start`.
    pub async fn start(&self, name: &str) -> Result<(), ClientError> {
        let path = vm_path(name, "/start")?;
        self.call_empty(Method::POST, &path, None::<&()>).await
    }

    /// `GET /v1/vms/{name}/console`: the last `bytes` of the VM's console.
    pub async fn console(&self, name: &str, bytes: u64) -> Result<String, ClientError> {
        let path = vm_path(name, &format!("/console?bytes={bytes}"))?;
        let c: api::Console = self.call(Method::GET, &path, None::<&()>).await?;
        Ok(c.text)
    }

    /// `POST /v1/vms/{name}/console`: types `input` on the VM's console.
    pub async fn console_input(&self, name: &str, input: &str) -> Result<(), ClientError> {
        let path = vm_path(name, "/console")?;
        let body = api::ConsoleInput {
            input: input.to_owned(),
        };
        self.call_empty(Method::POST, &path, Some(&body)).await
    }

    /// `POST /v1/vms/{name}/disk/export`: copies the VM's disk to `dest`.
    pub async fn export_disk(&self, name: &str, dest: &str) -> Result<(), ClientError> {
        let path = vm_path(name, "/disk/export")?;
        let body = api::ExportDisk {
            dest: dest.to_owned(),
        };
        self.call_empty(Method::POST, &path, Some(&body)).await
    }

    /// `POST /v1/vms/{name}/save`: saves the VM to `state_path` and frees
    /// the host.
    pub async fn save(&self, name: &str, state_path: &str) -> Result<(), ClientError> {
        let path = vm_path(name, "/save")?;
        let body = api::SaveVm {
            state_path: state_path.to_owned(),
        };
        self.call_empty(Method::POST, &path, Some(&body)).await
    }

    /// `POST /v1/vms/{name}/restore`: defines and starts the VM from a
    /// saved state.
    pub async fn restore(&self, spec: &VmSpec, state_path: &str) -> Result<(), ClientError> {
        let path = vm_path(&spec.name, "/restore")?;
        let body = api::RestoreVm {
            spec: spec.clone(),
            state_path: state_path.to_owned(),
        };
        self.call_empty(Method::POST, &path, Some(&body)).await
    }

    /// `DELETE /v1/vms/{name}`: stops and undefines the VM (its disk stays).
    pub async fn destroy(&self, name: &str) -> Result<(), ClientError> {
        let path = vm_path(name, "")?;
        self.call_empty(Method::DELETE, &path, None::<&()>).await
    }

    /// `GET /v1/vms/{name}/outgoing`.
    pub async fn outgoing(&self, name: &str) -> Result<api::Outgoing, ClientError> {
        let path = vm_path(name, "/outgoing")?;
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `POST /v1/incoming`.
    pub async fn accept_incoming(
        &self,
        request: &api::IncomingRequest,
    ) -> Result<api::Incoming, ClientError> {
        validate_vm_name(&request.spec.name).map_err(ClientError::Invalid)?;
        self.call(Method::POST, "/v1/incoming", Some(request)).await
    }

    /// `POST /v1/vms/{name}/migrate`: starts the move (or finds it).
    pub async fn migrate(
        &self,
        name: &str,
        to: &api::Incoming,
    ) -> Result<api::Migration, ClientError> {
        let path = vm_path(name, "/migrate")?;
        self.call(Method::POST, &path, Some(to)).await
    }

    /// `GET /v1/vms/{name}/migration`.
    pub async fn migration(&self, name: &str) -> Result<api::Migration, ClientError> {
        let path = vm_path(name, "/migration")?;
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /v1/vms/{name}/migration?wait_ms=N`: while the move runs, the
    /// answer comes when it changes, or after `wait`.
    pub async fn migration_changed(
        &self,
        name: &str,
        wait: Duration,
    ) -> Result<api::Migration, ClientError> {
        let path = format!(
            "{}?wait_ms={}",
            vm_path(name, "/migration")?,
            wait.as_millis()
        );
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /v1/vms/{name}/arrival?wait_ms=N`: whether the VM runs on the
    /// host, answered the moment it does, or after `wait`.
    pub async fn arrival(&self, name: &str, wait: Duration) -> Result<api::Arrival, ClientError> {
        let path = format!(
            "{}?wait_ms={}",
            vm_path(name, "/arrival")?,
            wait.as_millis()
        );
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `POST /v1/vms/{name}/arrived`.
    pub async fn arrived(&self, name: &str) -> Result<(), ClientError> {
        let path = vm_path(name, "/arrived")?;
        self.call_empty(Method::POST, &path, None::<&()>).await
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .timeout(self.timeout)
            .bearer_auth(self.token.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source: source.without_url(),
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.refusal(resp).await)
    }

    async fn refusal(&self, resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(source) => {
                return ClientError::Unreachable {
                    url: self.base.clone(),
                    source: source.without_url(),
                }
            }
        };
        refusal_of(status, &text)
    }

    /// A slot of the pool's bound, held until the answer is read whole.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &self.in_flight {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let _slot = self.slot().await;
        let resp = self.send(method, path, body).await?;
        resp.json::<T>().await.map_err(|source| {
            if source.is_decode() {
                ClientError::Protocol {
                    url: self.base.clone(),
                    source: source.without_url(),
                }
            } else {
                ClientError::Unreachable {
                    url: self.base.clone(),
                    source: source.without_url(),
                }
            }
        })
    }

    async fn call_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        let _slot = self.slot().await;
        let resp = self.send(method, path, body).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(());
        }
        // Drain whatever came, so the connection can be reused.
        resp.bytes()
            .await
            .map(|_| ())
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source: source.without_url(),
            })
    }
}

/// `/v1/vms/{name}{suffix}`, refusing names that are not VM names (they
/// are the only part of a path that comes from outside).
fn vm_path(name: &str, suffix: &str) -> Result<String, ClientError> {
    validate_vm_name(name).map_err(ClientError::Invalid)?;
    Ok(format!("/v1/vms/{name}{suffix}"))
}

/// A remote host's hypervisor, reached through its Agent: the
/// [`Hypervisor`] port over [`AgentClient`]. Transport failures become
/// [`HypervisorError::Unreachable`], refusals the variant they came from.
#[derive(Debug, Clone)]
pub struct AgentHypervisor {
    client: AgentClient,
    capacity: Capacity,
}

impl AgentHypervisor {
    /// Wraps `client`; `capacity` is what the host registered (the port's
    /// `capacity` cannot ask the Agent, it is not async).
    pub fn new(client: AgentClient, capacity: Capacity) -> Self {
        AgentHypervisor { client, capacity }
    }

    /// Wraps `client`, asking the Agent for its capacity.
    pub async fn connect(client: AgentClient) -> Result<Self, ClientError> {
        let host = client.host().await?;
        Ok(Self::new(client, host.capacity))
    }

    /// The client inside.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }
}

#[async_trait]
impl Hypervisor for AgentHypervisor {
    fn capacity(&self) -> Capacity {
        self.capacity
    }

    async fn prepare_disk(
        &self,
        vm: &str,
        template_image: &str,
        size_mib: u64,
    ) -> neptune_hypervisor::Result<String> {
        self.client
            .prepare_disk(vm, template_image, size_mib)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::PrepareDisk, vm, template_image))
    }

    async fn remove_disk(&self, vm: &str) -> neptune_hypervisor::Result<()> {
        self.client
            .remove_disk(vm)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::RemoveDisk, vm, ""))
    }

    async fn define(&self, spec: &VmSpec) -> neptune_hypervisor::Result<()> {
        self.client
            .define(spec)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Define, &spec.name, ""))
    }

    async fn start(&self, vm: &str) -> neptune_hypervisor::Result<()> {
        self.client
            .start(vm)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Start, vm, ""))
    }

    async fn save(&self, vm: &str, state_path: &str) -> neptune_hypervisor::Result<()> {
        self.client
            .save(vm, state_path)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Save, vm, state_path))
    }

    async fn restore(&self, spec: &VmSpec, state_path: &str) -> neptune_hypervisor::Result<()> {
        self.client
            .restore(spec, state_path)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Restore, &spec.name, state_path))
    }

    async fn export_disk(&self, vm: &str, dest: &str) -> neptune_hypervisor::Result<()> {
        self.client
            .export_disk(vm, dest)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::ExportDisk, vm, dest))
    }

    async fn destroy(&self, vm: &str) -> neptune_hypervisor::Result<()> {
        self.client
            .destroy(vm)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Destroy, vm, ""))
    }

    async fn list(&self) -> neptune_hypervisor::Result<Vec<VmInfo>> {
        // `list` has no `Op` to put in a `Failed`; a refused or unanswered
        // listing both mean the host's state is unknown right now.
        self.client
            .list_vms()
            .await
            .map_err(|e| HypervisorError::Unreachable(error_chain(&e)))
    }

    async fn info(&self, vm: &str) -> neptune_hypervisor::Result<Option<VmInfo>> {
        match self.client.vm(vm).await {
            Ok(v) => Ok(Some(v)),
            Err(e) => match e.into_hypervisor_error(Op::Define, vm, "") {
                HypervisorError::NoSuchVm(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn console(&self, vm: &str, max_bytes: u64) -> neptune_hypervisor::Result<String> {
        self.client
            .console(vm, max_bytes)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Console, vm, ""))
    }

    async fn console_input(&self, vm: &str, input: &[u8]) -> neptune_hypervisor::Result<()> {
        let text = std::str::from_utf8(input).map_err(|_| {
            HypervisorError::InvalidRequest("console input must be UTF-8 text".to_owned())
        })?;
        self.client
            .console_input(vm, text)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Console, vm, ""))
    }

    async fn outgoing(&self, vm: &str) -> neptune_hypervisor::Result<Outgoing> {
        self.client
            .outgoing(vm)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Migrate, vm, ""))
    }

    async fn accept_incoming(
        &self,
        request: &IncomingRequest,
    ) -> neptune_hypervisor::Result<Incoming> {
        let vm = request.spec.name.as_str();
        self.client
            .accept_incoming(request)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Incoming, vm, ""))
    }

    /// Starts the move on the source's Agent and follows it there until it
    /// ends. An Agent that forgot the move (it restarted, killing it) is
    /// `Unreachable`: the VM still runs there, and the move may be asked
    /// again.
    async fn migrate(
        &self,
        vm: &str,
        to: &Incoming,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> neptune_hypervisor::Result<MigrationReport> {
        let refused = |e: ClientError| e.into_hypervisor_error(Op::Migrate, vm, "");
        let mut status = self.client.migrate(vm, to).await.map_err(refused)?;
        loop {
            progress(status.progress);
            match status.state {
                api::MigrationState::Succeeded => {
                    return Ok(status.report.unwrap_or_default());
                }
                api::MigrationState::Failed => {
                    let body = status.error.unwrap_or(ErrorBody {
                        code: codes::HYPERVISOR_FAILED.to_owned(),
                        message: "the move failed".to_owned(),
                        details: Vec::new(),
                    });
                    return Err(refused(ClientError::Refused {
                        status: 502,
                        code: body.code,
                        message: body.message,
                        details: body.details,
                    }));
                }
                api::MigrationState::Running => {}
            }
            status = match self.client.migration_changed(vm, MIGRATION_WAIT).await {
                Ok(s) => s,
                Err(ClientError::Refused { code, .. }) if code == codes::NOT_FOUND => {
                    return Err(HypervisorError::Unreachable(format!(
                        "the Agent no longer knows the move of VM {vm:?} (it restarted)"
                    )))
                }
                Err(e) => return Err(refused(e)),
            };
        }
    }

    /// An Agent older than `GET /v1/vms/{name}/arrival` (404 `not_found`:
    /// no such route) is asked what the VM is instead, once per
    /// [`OLD_AGENT_LOOK_EVERY`].
    async fn wait_running(&self, vm: &str, within: Duration) -> neptune_hypervisor::Result<bool> {
        match self.client.arrival(vm, within).await {
            Ok(a) => Ok(a.running),
            Err(ClientError::Refused { code, .. }) if code == codes::NOT_FOUND => {
                tokio::time::sleep(OLD_AGENT_LOOK_EVERY.min(within)).await;
                Ok(self
                    .info(vm)
                    .await?
                    .is_some_and(|v| v.state == neptune_hypervisor::VmState::Running))
            }
            Err(e) => Err(e.into_hypervisor_error(Op::Incoming, vm, "")),
        }
    }

    async fn finish_incoming(&self, vm: &str) -> neptune_hypervisor::Result<()> {
        self.client
            .arrived(vm)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Incoming, vm, ""))
    }

    async fn batch(&self, ops: &[BatchOp]) -> Vec<neptune_hypervisor::Result<BatchOut>> {
        let mut out = Vec::with_capacity(ops.len());
        // Chunks small enough for the Agent's body limit whatever the specs
        // carry (a seed of several KiB each).
        for chunk in ops.chunks(BATCH_CHUNK) {
            match self.client.batch(chunk).await {
                Ok(results) => out.extend(chunk.iter().zip(results).map(|(op, r)| match r {
                    api::BatchResult { ok: Some(done), .. } => Ok(done),
                    api::BatchResult { error, .. } => {
                        let body = error.unwrap_or_else(|| ErrorBody {
                            code: "http_200".to_owned(),
                            message: "neither a result nor an error".to_owned(),
                            details: Vec::new(),
                        });
                        Err(ClientError::Refused {
                            status: 200,
                            code: body.code,
                            message: body.message,
                            details: body.details,
                        }
                        .into_hypervisor_error(
                            op.op(),
                            op.vm(),
                            op.template_image(),
                        ))
                    }
                })),
                // The whole request failed (no answer; an Agent without
                // the route): every operation of it did.
                Err(e) => {
                    let shared = e.into_hypervisor_error(Op::Define, "", "");
                    out.extend(chunk.iter().map(|op| {
                        Err(match &shared {
                            HypervisorError::Failed { message, .. } => HypervisorError::Failed {
                                op: op.op(),
                                vm: op.vm().to_owned(),
                                message: message.clone(),
                            },
                            other => other.clone(),
                        })
                    }));
                }
            }
        }
        out
    }

    async fn join_segments(&self, networks: &[NetworkJoin]) -> neptune_hypervisor::Result<()> {
        // A failure names the networks, as the hypervisor's own would.
        let names: Vec<&str> = networks.iter().map(|j| j.network.as_str()).collect();
        self.client
            .join_segments(networks)
            .await
            .map_err(|e| e.into_hypervisor_error(Op::Join, &names.join(","), ""))
    }
}

/// The refusal an answer of `status` with body `text` is. An Agent older
/// than the shared error shape says `unauthorized` for 401 and `detail`
/// for `details`: both are read as today's, so callers match one code.
fn refusal_of(status: StatusCode, text: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => ClientError::Refused {
            status: status.as_u16(),
            code: if b.code == codes::LEGACY_UNAUTHORIZED {
                codes::UNAUTHENTICATED.to_owned()
            } else {
                b.code
            },
            message: b.message,
            details: b.details,
        },
        Err(_) => ClientError::Refused {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: text.chars().take(200).collect(),
            details: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_agents_refusals_read_as_todays() {
        let old = refusal_of(
            StatusCode::UNAUTHORIZED,
            r#"{"code":"unauthorized","message":"a valid agent token is required"}"#,
        );
        assert_eq!(old.code(), Some(codes::UNAUTHENTICATED));
        let new = refusal_of(
            StatusCode::UNAUTHORIZED,
            r#"{"code":"unauthenticated","message":"a valid agent token is required"}"#,
        );
        assert_eq!(new.code(), Some(codes::UNAUTHENTICATED));

        let old = refusal_of(
            StatusCode::CONFLICT,
            r#"{"code":"no_room","message":"the host has no room: all 2 VM slots are taken","detail":"all 2 VM slots are taken"}"#,
        );
        assert_eq!(
            old.into_hypervisor_error(Op::Define, "vm", ""),
            HypervisorError::NoRoom("all 2 VM slots are taken".into())
        );
        let new = refusal_of(
            StatusCode::CONFLICT,
            r#"{"code":"no_room","message":"the host has no room: all 2 VM slots are taken","details":["all 2 VM slots are taken"]}"#,
        );
        assert_eq!(
            new.into_hypervisor_error(Op::Define, "vm", ""),
            HypervisorError::NoRoom("all 2 VM slots are taken".into())
        );
    }

    #[test]
    fn a_body_refused_as_sent_is_not_retried() {
        for code in [codes::PAYLOAD_TOO_LARGE, codes::UNSUPPORTED_MEDIA_TYPE] {
            let e = refusal_of(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(r#"{{"code":"{code}","message":"refused"}}"#),
            );
            let e = e.into_hypervisor_error(Op::Define, "vm", "");
            assert_eq!(e, HypervisorError::InvalidRequest("refused".into()));
            assert!(!e.is_retryable());
        }
    }

    #[test]
    fn an_answer_that_is_not_an_error_body_keeps_its_status() {
        let e = refusal_of(StatusCode::BAD_GATEWAY, "<html>proxy error</html>");
        assert_eq!(e.code(), Some("http_502"));
        assert!(e.is_retryable());
    }
}
