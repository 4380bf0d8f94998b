//! A typed client of the Manager's API (`/api/v1`), used by the CLI.
#![deny(missing_docs)]

use neptune_api as api;
use neptune_api::{JobId, SshKeyId, TemplateId, TokenId, UserId, ViId};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A request body, such as an image file to upload
/// (`Body::from(tokio::fs::File)` streams it).
pub use reqwest::Body;

/// Why a call of the Manager's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the connection failed or timed out.
    #[error("cannot reach the Manager at {url}")]
    Unreachable {
        /// The Manager's base URL.
        url: String,
        /// The transport's error.
        #[source]
        source: reqwest::Error,
    },
    /// The Manager refused: its stable code and message.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The stable machine code (`not_found`, `conflict`, ...).
        code: String,
        /// The message for people.
        message: String,
        /// Problems of a design, one per line (`LINE:COL: MESSAGE`).
        details: Vec<String>,
    },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from the Manager")]
    Decode(#[source] reqwest::Error),
}

impl ClientError {
    /// The Manager's code of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one Manager, optionally authenticated.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the Manager at `base_url` (`http://host:port`), with a
    /// bearer token or none (to log in).
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        Client {
            base: base_url.trim_end_matches('/').to_owned(),
            token,
            // Idle connections are dropped before the Manager's 10 s idle
            // timeout closes them (neptune-http).
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The Manager's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/api/v1{path}", self.base);
        let req = self.http.request(method, &url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.answer(req).await
    }

    /// Sends `req` and reads its answer, or the Manager's refusal.
    async fn answer<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = resp.status();
        if status.is_success() {
            if status == StatusCode::NO_CONTENT {
                return serde_json::from_str("null").map_err(|_| ClientError::Api {
                    status,
                    code: "internal".into(),
                    message: "empty answer".into(),
                    details: vec![],
                });
            }
            return resp.json().await.map_err(ClientError::Decode);
        }
        let body: Option<api::ErrorBody> = resp.json().await.ok();
        Err(match body {
            Some(b) => ClientError::Api {
                status,
                code: b.code,
                message: b.message,
                details: b.details,
            },
            None => ClientError::Api {
                status,
                code: "internal".into(),
                message: format!("the Manager answered {status}"),
                details: vec![],
            },
        })
    }

    /// `POST /auth/login`: a session token.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
    ) -> Result<api::TokenResponse, ClientError> {
        let body = api::LoginRequest {
            name: name.to_owned(),
            password: password.to_owned(),
        };
        self.call(Method::POST, "/auth/login", Some(&body)).await
    }

    /// A user-scoped API token of the default lifetime.
    pub async fn create_api_token(&self, name: &str) -> Result<api::TokenResponse, ClientError> {
        self.create_token(&api::CreateApiToken {
            name: name.to_owned(),
            expires_in_days: None,
            scope: None,
            host: None,
        })
        .await
    }

    /// `POST /tokens`: an API token as asked.
    pub async fn create_token(
        &self,
        req: &api::CreateApiToken,
    ) -> Result<api::TokenResponse, ClientError> {
        self.call(Method::POST, "/tokens", Some(req)).await
    }

    /// `GET /tokens`: the caller's tokens (never their secrets).
    pub async fn tokens(&self) -> Result<Vec<api::TokenInfo>, ClientError> {
        self.call::<(), _>(Method::GET, "/tokens", None).await
    }

    /// `DELETE /tokens/{id}`.
    pub async fn revoke_token(&self, id: TokenId) -> Result<(), ClientError> {
        self.call::<(), Option<()>>(Method::DELETE, &format!("/tokens/{id}"), None)
            .await
            .map(|_| ())
    }

    /// `POST /me/password`.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<(), ClientError> {
        let body = api::ChangePassword {
            current_password: current.to_owned(),
            new_password: new.to_owned(),
        };
        self.call::<_, Option<()>>(Method::POST, "/me/password", Some(&body))
            .await
            .map(|_| ())
    }

    /// `GET /me/ssh-keys`.
    pub async fn ssh_keys(&self) -> Result<Vec<api::SshKey>, ClientError> {
        self.call::<(), _>(Method::GET, "/me/ssh-keys", None).await
    }

    /// `POST /me/ssh-keys`.
    pub async fn add_ssh_key(&self, req: &api::AddSshKey) -> Result<api::SshKey, ClientError> {
        self.call(Method::POST, "/me/ssh-keys", Some(req)).await
    }

    /// `DELETE /me/ssh-keys/{id}`.
    pub async fn remove_ssh_key(&self, id: SshKeyId) -> Result<(), ClientError> {
        self.call::<(), Option<()>>(Method::DELETE, &format!("/me/ssh-keys/{id}"), None)
            .await
            .map(|_| ())
    }

    /// `GET /users` (administrators).
    pub async fn users(&self) -> Result<Vec<api::User>, ClientError> {
        self.call::<(), _>(Method::GET, "/users", None).await
    }

    /// `GET /users/{id}`: one user by id or name, with what they hold of
    /// their quota (administrators; others: themselves).
    pub async fn user(&self, id_or_name: &str) -> Result<api::User, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/users/{}", encode_query(id_or_name)),
            None,
        )
        .await
    }

    /// `POST /users`: a new account (administrators).
    pub async fn create_user(&self, req: &api::CreateUser) -> Result<api::User, ClientError> {
        self.call(Method::POST, "/users", Some(req)).await
    }

    /// Disables (`true`) or enables a user (administrators).
    /// `POST /users/{id}/disable` or `.../enable` (administrators).
    pub async fn set_user_disabled(
        &self,
        id: UserId,
        disabled: bool,
    ) -> Result<api::User, ClientError> {
        let action = if disabled { "disable" } else { "enable" };
        self.call::<(), _>(Method::POST, &format!("/users/{id}/{action}"), None)
            .await
    }

    /// `PUT /users/{id}/quota` (administrators): replaces a user's quota.
    pub async fn set_user_quota(
        &self,
        id: UserId,
        quota: &api::Quota,
    ) -> Result<api::User, ClientError> {
        self.call(Method::PUT, &format!("/users/{id}/quota"), Some(quota))
            .await
    }

    /// `POST /auth/logout`: revokes this client's token.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call::<(), Option<()>>(Method::POST, "/auth/logout", None)
            .await
            .map(|_| ())
    }

    /// `GET /me`, with what the caller holds of their quota.
    pub async fn me(&self) -> Result<api::User, ClientError> {
        self.call::<(), _>(Method::GET, "/me", None).await
    }

    /// `GET /datacenters`.
    pub async fn datacenters(&self) -> Result<Vec<api::Datacenter>, ClientError> {
        self.call::<(), _>(Method::GET, "/datacenters", None).await
    }

    /// `POST /datacenters`: a new datacenter (administrators).
    pub async fn create_datacenter(
        &self,
        req: &api::CreateDatacenter,
    ) -> Result<api::Datacenter, ClientError> {
        self.call(Method::POST, "/datacenters", Some(req)).await
    }

    /// `GET /hosts`.
    pub async fn hosts(&self) -> Result<Vec<api::Host>, ClientError> {
        self.call::<(), _>(Method::GET, "/hosts", None).await
    }

    /// `GET /hosts/{name}` (administrators).
    pub async fn host(&self, name: &str) -> Result<api::Host, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/hosts/{}", encode_query(name)), None)
            .await
    }

    /// `POST /hosts`: registers a host, or updates the one of that name
    /// (administrators, or the host's own Agent).
    pub async fn register_host(&self, req: &api::RegisterHost) -> Result<api::Host, ClientError> {
        self.call(Method::POST, "/hosts", Some(req)).await
    }

    /// `POST /reconcile`: one reconciliation pass over every host, now
    /// (administrators).
    pub async fn reconcile(&self) -> Result<api::ReconcileReport, ClientError> {
        self.call::<(), _>(Method::POST, "/reconcile", None).await
    }

    /// `GET /templates`: the public ones and the caller's own.
    pub async fn templates(&self) -> Result<Vec<api::Template>, ClientError> {
        self.call::<(), _>(Method::GET, "/templates", None).await
    }

    /// `GET /templates/{id}`: a public template or the caller's own.
    pub async fn template(&self, id: TemplateId) -> Result<api::Template, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/templates/{id}"), None)
            .await
    }

    /// `POST /templates`: registers an image of the repository
    /// (administrators).
    pub async fn create_template(
        &self,
        req: &api::CreateTemplate,
    ) -> Result<api::Template, ClientError> {
        self.call(Method::POST, "/templates", Some(req)).await
    }

    /// `POST /templates/import`: uploads `image`, `length` bytes of a
    /// qcow2 or raw image (streamed, never held in memory whole), as a
    /// template of the caller's.
    pub async fn import_template(
        &self,
        query: &api::ImportTemplate,
        image: reqwest::Body,
        length: u64,
    ) -> Result<api::Template, ClientError> {
        let req = self
            .request(Method::POST, "/templates/import")
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(image);
        self.answer(req).await
    }

    /// `POST /templates/{id}/visibility` (administrators).
    pub async fn set_template_visibility(
        &self,
        id: TemplateId,
        visibility: api::Visibility,
    ) -> Result<api::Template, ClientError> {
        self.call(
            Method::POST,
            &format!("/templates/{id}/visibility"),
            Some(&api::SetVisibility { visibility }),
        )
        .await
    }

    /// `GET /vis`: the caller's VIs (administrators: all).
    pub async fn vis(&self) -> Result<Vec<api::Vi>, ClientError> {
        self.call::<(), _>(Method::GET, "/vis", None).await
    }

    /// `GET /vis/{id}`.
    pub async fn vi(&self, id: ViId) -> Result<api::ViDetail, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/vis/{id}"), None)
            .await
    }

    /// `POST /vis`: a new VI in state `defined`.
    pub async fn create_vi(&self, design: &api::ViDesign) -> Result<api::ViDetail, ClientError> {
        self.call(Method::POST, "/vis", Some(design)).await
    }

    /// `PUT /vis/{id}`: a new design for a defined VI; `design.version`
    /// names the version it is based on.
    pub async fn edit_vi(
        &self,
        id: ViId,
        design: &api::ViDesign,
    ) -> Result<api::ViDetail, ClientError> {
        self.call(Method::PUT, &format!("/vis/{id}"), Some(design))
            .await
    }

    /// `GET /vis/{id}/plan`: what accepting it would do now (changes
    /// nothing).
    pub async fn plan(&self, id: ViId, datacenter: Option<&str>) -> Result<api::Plan, ClientError> {
        let query = datacenter
            .map(|d| format!("?datacenter={d}"))
            .unwrap_or_default();
        self.call::<(), _>(Method::GET, &format!("/vis/{id}/plan{query}"), None)
            .await
    }

    /// `request`, `withdraw`, `revise`, `suspend`, `resume` or `terminate`.
    /// `POST /vis/{id}/{action}`: `request`, `withdraw`, `revise`,
    /// `deploy`, `release`, `suspend`, `resume` or `terminate`.
    pub async fn act(&self, id: ViId, action: &str) -> Result<api::ViDetail, ClientError> {
        self.call::<(), _>(Method::POST, &format!("/vis/{id}/{action}"), None)
            .await
    }

    /// `POST /vis/{id}/accept` (administrators), with a home datacenter
    /// and a manual placement when given.
    pub async fn accept(
        &self,
        id: ViId,
        req: &api::AcceptRequest,
    ) -> Result<api::ViDetail, ClientError> {
        self.call(Method::POST, &format!("/vis/{id}/accept"), Some(req))
            .await
    }

    /// `POST /vis/{id}/reject` (administrators).
    pub async fn reject(&self, id: ViId, reason: &str) -> Result<api::ViDetail, ClientError> {
        let body = api::RejectRequest {
            reason: reason.to_owned(),
        };
        self.call(Method::POST, &format!("/vis/{id}/reject"), Some(&body))
            .await
    }

    /// `POST /vis/{id}/migrate`: an administrator moves the VI to another
    /// datacenter at once (follow its job); its owner asks (the request
    /// waits for an administrator).
    pub async fn migrate(
        &self,
        id: ViId,
        req: &api::MigrateRequest,
    ) -> Result<api::ViDetail, ClientError> {
        self.call(Method::POST, &format!("/vis/{id}/migrate"), Some(req))
            .await
    }

    /// `DELETE /vis/{id}/migrate`: takes back (owner) or refuses
    /// (administrator) a waiting migration request.
    pub async fn cancel_migration(&self, id: ViId) -> Result<(), ClientError> {
        self.call::<(), Option<()>>(Method::DELETE, &format!("/vis/{id}/migrate"), None)
            .await
            .map(|_| ())
    }

    /// `GET /vis/{id}/migrate/plan?to=DATACENTER`: what moving the VI
    /// would do now.
    pub async fn migration_plan(
        &self,
        id: ViId,
        to: &str,
    ) -> Result<api::MigrationPlan, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/vis/{id}/migrate/plan?to={}", encode_query(to)),
            None,
        )
        .await
    }

    /// `GET /migration-requests` (administrators).
    pub async fn migration_requests(&self) -> Result<Vec<api::MigrationRequest>, ClientError> {
        self.call::<(), _>(Method::GET, "/migration-requests", None)
            .await
    }

    /// `PUT /datacenters/{name}/switch` (administrators).
    pub async fn register_switch(
        &self,
        datacenter: &str,
        req: &api::RegisterSwitch,
    ) -> Result<api::Switch, ClientError> {
        self.call(
            Method::PUT,
            &format!("/datacenters/{}/switch", encode_query(datacenter)),
            Some(req),
        )
        .await
    }

    /// `DELETE /datacenters/{name}/switch` (administrators).
    pub async fn remove_switch(&self, datacenter: &str) -> Result<(), ClientError> {
        self.call::<(), Option<()>>(
            Method::DELETE,
            &format!("/datacenters/{}/switch", encode_query(datacenter)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `GET /switches` (administrators).
    pub async fn switches(&self) -> Result<Vec<api::Switch>, ClientError> {
        self.call::<(), _>(Method::GET, "/switches", None).await
    }

    /// Saves the VM of a node of a running VI as a new template; follow the job.
    /// `POST /vis/{id}/templates`: saves a VM as a template (a job).
    pub async fn save_template(
        &self,
        vi: ViId,
        req: &api::SaveTemplate,
    ) -> Result<api::Job, ClientError> {
        self.call(Method::POST, &format!("/vis/{vi}/templates"), Some(req))
            .await
    }

    /// Each VM of the VI as its host runs it now.
    /// `GET /vis/{id}/vms`: where each VM is and how it is.
    pub async fn vm_states(&self, vi: ViId) -> Result<Vec<api::VmStatus>, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/vis/{vi}/vms"), None)
            .await
    }

    /// The last `bytes` of the serial console of `node`'s VM.
    /// `GET /vis/{id}/vms/{node}/console`: the end of a VM's console.
    pub async fn console(&self, vi: ViId, node: &str, bytes: u64) -> Result<String, ClientError> {
        let text: api::ConsoleText = self
            .call::<(), _>(
                Method::GET,
                &format!("/vis/{vi}/vms/{node}/console?bytes={bytes}"),
                None,
            )
            .await?;
        Ok(text.text)
    }

    /// Types `input` on the serial console of `node`'s VM.
    /// `POST /vis/{id}/vms/{node}/console`: types on a VM's console.
    pub async fn type_on_console(
        &self,
        vi: ViId,
        node: &str,
        input: &str,
    ) -> Result<(), ClientError> {
        let body = api::ConsoleInput {
            input: input.to_owned(),
        };
        self.call::<_, Option<()>>(
            Method::POST,
            &format!("/vis/{vi}/vms/{node}/console"),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// `GET /jobs/{id}`.
    pub async fn job(&self, id: JobId) -> Result<api::Job, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/jobs/{id}"), None)
            .await
    }
}

/// `s` percent-encoded for a URL's path segment or query value: letters,
/// digits and `-._~` as they are, every other byte as `%XX`.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
