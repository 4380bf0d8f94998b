//! Login, tokens and users.

use neptune_types::{SshKeyId, TokenId, UserId};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use neptune_api as api;
use neptune_store::{Quota, Role, TokenKind, TokenRecord, TokenScope, UserRecord};
use uuid::Uuid;

use super::user_out;
use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::{now_ms, AppState};

/// Exchanges a user name and password for a session token.
///
/// Failed logins are counted per account and source, per source and per
/// account; past a limit the answer is `429` with `Retry-After`, before
/// any password is checked (see docs/manager.md).
#[utoipa::path(post, path = "/api/v1/auth/login", request_body = api::LoginRequest,
    responses((status = 200, body = api::TokenResponse), (status = 401, body = api::ErrorBody),
        (status = 429, body = api::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))))]
pub(crate) async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<crate::server::Peer>>,
    Json(req): Json<api::LoginRequest>,
) -> ApiResult<Json<api::TokenResponse>> {
    let source = peer.map(|Extension(p)| p.0);
    let throttle = &state.logins;
    throttle
        .check(&req.name, source, Instant::now())
        .map_err(|wait| ApiError::TooManyAttempts(wait.as_secs().max(1)))?;
    let user = match state.store.user_by_name(&req.name).await {
        Ok(u) => Some(u),
        Err(neptune_store::StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    // An unknown name costs the same time as a real check, so names
    // cannot be probed; either way the hashing runs off the async threads.
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = req.password.clone();
    let ok = auth::off_thread(&state, move || match hash {
        Some(hash) => Ok(auth::verify_password(&password, &hash)),
        None => auth::hash_password(&password).map(|_| false),
    })
    .await?;
    // A disabled user is refused as a wrong password is: nothing told.
    let Some(user) = user.filter(|u| ok && u.disabled_at.is_none()) else {
        throttle.failed(&req.name, source, Instant::now());
        return Err(ApiError::BadCredentials);
    };
    throttle.succeeded(&req.name, source);
    let (token, token_hash) = auth::new_token().map_err(ApiError::Internal)?;
    let now = now_ms();
    let expires_at = now + state.config.session_ttl_ms;
    let id = TokenId::from(Uuid::new_v4());
    state
        .store
        .insert_token(&TokenRecord {
            id,
            hash: token_hash,
            user_id: user.id,
            kind: TokenKind::Session,
            scope: TokenScope::User,
            name: "login".to_owned(),
            created_at: now,
            expires_at: Some(expires_at),
        })
        .await?;
    Ok(Json(api::TokenResponse {
        id,
        token,
        expires_at: Some(expires_at),
        user: user_out(&user),
    }))
}

/// Revokes the token the request carries.
#[utoipa::path(post, path = "/api/v1/auth/logout", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    state.store.delete_token(&caller.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Days an API token lasts unless asked otherwise, and at most.
pub(crate) const TOKEN_DAYS: u32 = 90;
pub(crate) const MAX_TOKEN_DAYS: u32 = 365;

/// Creates a named API token for the CLI, scripts or an Agent. Shown once.
///
/// It expires after `expires_in_days` (default 90, at most 365). An
/// `agent` token (administrators only) may do one thing: register and
/// heartbeat the host `host` (`DATACENTER/HOST`) with `POST /api/v1/hosts`.
/// A token cannot make one broader than itself: an `agent` token makes none.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = api::CreateApiToken, security(("bearer" = [])),
    responses((status = 201, body = api::TokenResponse), (status = 401, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn create_api_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<api::CreateApiToken>,
) -> ApiResult<(StatusCode, Json<api::TokenResponse>)> {
    if req.name.trim().is_empty()
        || req.name.chars().count() > 100
        || req.name.chars().any(char::is_control)
    {
        return Err(ApiError::InvalidRequest(
            "a token name is 1 to 100 printable characters".to_owned(),
        ));
    }
    let days = req.expires_in_days.unwrap_or(TOKEN_DAYS);
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(ApiError::InvalidRequest(format!(
            "expires_in_days is 1 to {MAX_TOKEN_DAYS}"
        )));
    }
    let scope = match (req.scope.unwrap_or(api::TokenScope::User), req.host) {
        (api::TokenScope::User, None) => TokenScope::User,
        (api::TokenScope::User, Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "only an agent token names a host".to_owned(),
            ))
        }
        (api::TokenScope::Agent, Some(host)) => {
            caller.require_admin()?;
            let valid = host.split_once('/').is_some_and(|(dc, name)| {
                neptune_types::NodeId::new(dc).is_ok() && neptune_types::NodeId::new(name).is_ok()
            });
            if !valid {
                return Err(ApiError::InvalidRequest(
                    "an agent token's host is DATACENTER/HOST".to_owned(),
                ));
            }
            TokenScope::Agent { host }
        }
        (api::TokenScope::Agent, None) => {
            return Err(ApiError::InvalidRequest(
                "an agent token names its host: DATACENTER/HOST".to_owned(),
            ))
        }
    };
    let (token, hash) = auth::new_token().map_err(ApiError::Internal)?;
    let now = now_ms();
    let expires_at = now.saturating_add(i64::from(days) * 86_400_000);
    let id = TokenId::from(Uuid::new_v4());
    state
        .store
        .insert_token(&TokenRecord {
            id,
            hash,
            user_id: caller.user.id,
            kind: TokenKind::Api,
            scope,
            name: req.name,
            created_at: now,
            expires_at: Some(expires_at),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(api::TokenResponse {
            id,
            token,
            expires_at: Some(expires_at),
            user: user_out(&caller.user),
        }),
    ))
}

/// The caller's tokens that have not expired (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::TokenInfo>), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::TokenInfo>>> {
    let tokens = state.store.list_tokens(caller.user.id, now_ms()).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| {
                let (scope, host) = match t.scope {
                    TokenScope::User => (api::TokenScope::User, None),
                    TokenScope::Agent { host } => (api::TokenScope::Agent, Some(host)),
                };
                api::TokenInfo {
                    id: t.id,
                    name: t.name,
                    kind: t.kind.as_str().to_owned(),
                    scope,
                    host,
                    created_at: t.created_at,
                    expires_at: t.expires_at,
                    current: t.hash == caller.token_hash,
                }
            })
            .collect(),
    ))
}

/// Revokes a token: the caller's own, or any (administrators).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = TokenId, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<TokenId>,
) -> ApiResult<StatusCode> {
    let only = (!caller.is_admin()).then_some(caller.user.id);
    state.store.revoke_token(id, only).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the caller's password. Every other token of theirs (other
/// logins, API tokens) is revoked; the one used here stays.
#[utoipa::path(post, path = "/api/v1/me/password", request_body = api::ChangePassword, security(("bearer" = [])),
    responses((status = 204), (status = 401, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<api::ChangePassword>,
) -> ApiResult<StatusCode> {
    if req.new_password.chars().count() < 8 {
        return Err(ApiError::InvalidRequest(
            "a password has at least 8 characters".to_owned(),
        ));
    }
    let current = caller.user.password_hash.clone();
    let (old, new) = (req.current_password, req.new_password);
    let hash = auth::off_thread(&state, move || {
        if !auth::verify_password(&old, &current) {
            return Ok(None);
        }
        auth::hash_password(&new).map(Some)
    })
    .await?
    .ok_or(ApiError::BadCredentials)?;
    state.store.set_password(caller.user.id, &hash).await?;
    state
        .store
        .revoke_tokens_of(caller.user.id, Some(&caller.token_hash))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn ssh_key_out(k: neptune_store::SshKeyRecord) -> api::SshKey {
    api::SshKey {
        id: k.id,
        name: k.name,
        fingerprint: k.fingerprint,
        public_key: k.public_key,
        created_at: k.created_at,
    }
}

/// The caller's SSH public keys, oldest first.
#[utoipa::path(get, path = "/api/v1/me/ssh-keys", security(("bearer" = [])),
    responses((status = 200, body = [api::SshKey]), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn list_ssh_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::SshKey>>> {
    let keys = state.store.ssh_keys(caller.user.id).await?;
    Ok(Json(keys.into_iter().map(ssh_key_out).collect()))
}

/// Adds an SSH public key of the caller's (at most 32): the guests of
/// their VIs deployed from now on accept it, for the design's OS user.
#[utoipa::path(post, path = "/api/v1/me/ssh-keys", request_body = api::AddSshKey, security(("bearer" = [])),
    responses((status = 201, body = api::SshKey), (status = 401, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 422, body = api::ErrorBody)))]
pub(crate) async fn add_ssh_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<api::AddSshKey>,
) -> ApiResult<(StatusCode, Json<api::SshKey>)> {
    let key = crate::ssh_keys::parse(&req.public_key)
        .map_err(|e| ApiError::InvalidRequest(format!("public_key: {e}")))?;
    let name = req
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            if key.comment.is_empty() {
                key.fingerprint.clone()
            } else {
                key.comment.clone()
            }
        });
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "name: at most 100 characters, none a control character".to_owned(),
        ));
    }
    let record = neptune_store::SshKeyRecord {
        id: Uuid::new_v4().into(),
        user_id: caller.user.id,
        name,
        public_key: key.line,
        fingerprint: key.fingerprint,
        created_at: now_ms(),
    };
    match state
        .store
        .add_ssh_key(&record, crate::ssh_keys::MAX_KEYS)
        .await
    {
        Ok(()) => Ok((StatusCode::CREATED, Json(ssh_key_out(record)))),
        Err(neptune_store::StoreError::Duplicate { .. }) => Err(ApiError::Conflict(format!(
            "you have the key {} already",
            record.fingerprint
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Forgets an SSH public key of the caller's (guests already deployed keep
/// it).
#[utoipa::path(delete, path = "/api/v1/me/ssh-keys/{id}", params(("id" = SshKeyId, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn delete_ssh_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SshKeyId>,
) -> ApiResult<StatusCode> {
    state.store.delete_ssh_key(caller.user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables a user (administrators; not themselves): they can no longer
/// log in, and every token of theirs is revoked. Their VIs stay.
#[utoipa::path(post, path = "/api/v1/users/{id}/disable", params(("id" = UserId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::User), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<UserId>,
) -> ApiResult<Json<api::User>> {
    caller.require_admin()?;
    if id == caller.user.id {
        return Err(ApiError::Forbidden(
            "administrators cannot disable themselves",
        ));
    }
    let user = state.store.set_user_disabled(id, Some(now_ms())).await?;
    Ok(Json(user_out(&user)))
}

/// Enables a disabled user again (administrators); they log in anew.
#[utoipa::path(post, path = "/api/v1/users/{id}/enable", params(("id" = UserId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::User), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn enable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<UserId>,
) -> ApiResult<Json<api::User>> {
    caller.require_admin()?;
    let user = state.store.set_user_disabled(id, None).await?;
    Ok(Json(user_out(&user)))
}

/// The caller, with what they hold of their quota (`usage`).
#[utoipa::path(get, path = "/api/v1/me", security(("bearer" = [])),
    responses((status = 200, body = api::User), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<api::User>> {
    with_usage(&state, &caller.user).await.map(Json)
}

/// A user as the API shows them, with what they hold of their quota.
async fn with_usage(state: &AppState, user: &UserRecord) -> ApiResult<api::User> {
    Ok(api::User {
        usage: Some(crate::app::quota::holdings(state, user.id).await?),
        ..user_out(user)
    })
}

/// One user, by id or by name, with what they hold of their quota
/// (`usage`): administrators any, other users themselves (anyone else is
/// `403`, whether or not they exist). A key that is a UUID is taken as an
/// id first, then as a name.
#[utoipa::path(get, path = "/api/v1/users/{id}",
    params(("id" = String, Path, description = "The user's id or login name")),
    security(("bearer" = [])),
    responses((status = 200, body = api::User), (status = 401, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn show_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<Json<api::User>> {
    let id = key.parse::<UserId>().ok();
    // An administrator's key that is another user's id names that user,
    // even when it is also the administrator's own name; other users see
    // only themselves, by id or by name.
    if id == Some(caller.user.id) || (key == caller.user.name && !caller.is_admin()) {
        return with_usage(&state, &caller.user).await.map(Json);
    }
    // Refused before any read, so a user cannot probe others' names.
    if !caller.is_admin() {
        return Err(ApiError::Forbidden("only administrators see other users"));
    }
    let by_id = match id {
        Some(id) => match state.store.user(id).await {
            Ok(u) => Some(u),
            Err(neptune_store::StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let user = match by_id {
        Some(u) => u,
        None => state
            .store
            .user_by_name(&key)
            .await
            .map_err(|e| ApiError::naming(e, &key))?,
    };
    with_usage(&state, &user).await.map(Json)
}

/// All users (administrators only).
#[utoipa::path(get, path = "/api/v1/users", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::User>), (status = 403, body = api::ErrorBody)))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::User>>> {
    caller.require_admin()?;
    Ok(Json(
        state
            .store
            .list_users()
            .await?
            .iter()
            .map(user_out)
            .collect(),
    ))
}

/// Creates a user (administrators only).
#[utoipa::path(post, path = "/api/v1/users", request_body = api::CreateUser, security(("bearer" = [])),
    responses((status = 201, body = api::User), (status = 403, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<api::CreateUser>,
) -> ApiResult<(StatusCode, Json<api::User>)> {
    caller.require_admin()?;
    let name_ok = !req.name.is_empty()
        && req.name.len() <= 64
        && req
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(ApiError::InvalidRequest(
            "a user name is 1 to 64 letters, digits, '-', '_' or '.'".to_owned(),
        ));
    }
    if req.password.chars().count() < 8 {
        return Err(ApiError::InvalidRequest(
            "a password has at least 8 characters".to_owned(),
        ));
    }
    let quota = req.quota.map_or_else(Quota::default, quota_in);
    let password = req.password.clone();
    let password_hash = auth::off_thread(&state, move || auth::hash_password(&password)).await?;
    let user = UserRecord {
        id: Uuid::new_v4().into(),
        name: req.name,
        password_hash,
        role: match req.role {
            api::Role::Admin => Role::Admin,
            api::Role::User => Role::User,
        },
        quota,
        created_at: now_ms(),
        disabled_at: None,
    };
    state.store.create_user(&user).await?;
    Ok((StatusCode::CREATED, Json(user_out(&user))))
}

fn quota_in(q: api::Quota) -> Quota {
    Quota {
        vms: q.vms,
        vcpus: q.vcpus,
        ram_mib: q.ram_mib,
        public_addresses: q.public_addresses,
        designs: q.designs,
        design_mib: q.design_mib,
        private_addresses: q.private_addresses,
    }
}

/// Replaces a user's quota (administrators; themselves included). What
/// the user holds already stays, even above the new quota: only their new
/// designs and requests are held to it. Every figure is 0 or more.
#[utoipa::path(put, path = "/api/v1/users/{id}/quota", params(("id" = UserId, Path)), request_body = api::Quota,
    security(("bearer" = [])),
    responses((status = 200, body = api::User), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn set_user_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<UserId>,
    Json(quota): Json<api::Quota>,
) -> ApiResult<Json<api::User>> {
    caller.require_admin()?;
    let quota = quota_in(quota);
    let figures = [
        ("vms", quota.vms),
        ("vcpus", quota.vcpus),
        ("ram_mib", quota.ram_mib),
        ("public_addresses", quota.public_addresses),
        ("designs", quota.designs),
        ("design_mib", quota.design_mib),
        ("private_addresses", quota.private_addresses),
    ];
    if let Some((name, n)) = figures.iter().find(|(_, n)| *n < 0) {
        return Err(ApiError::InvalidRequest(format!(
            "quota {name} is {n}: a quota is 0 or more"
        )));
    }
    let user = state.store.set_user_quota(id, &quota).await?;
    Ok(Json(user_out(&user)))
}
