//! Login, tokens and users.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use neptune_api as api;
use neptune_store::{Quota, Role, TokenKind, TokenRecord, UserRecord};
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
    let Some(user) = user.filter(|_| ok) else {
        throttle.failed(&req.name, source, Instant::now());
        return Err(ApiError::BadCredentials);
    };
    throttle.succeeded(&req.name, source);
    let (token, token_hash) = auth::new_token().map_err(ApiError::Internal)?;
    let now = now_ms();
    let expires_at = now + state.config.session_ttl_ms;
    state
        .store
        .insert_token(&TokenRecord {
            hash: token_hash,
            user_id: user.id,
            kind: TokenKind::Session,
            name: "login".to_owned(),
            created_at: now,
            expires_at: Some(expires_at),
        })
        .await?;
    Ok(Json(api::TokenResponse {
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

/// Creates a named API token (no expiry) for the CLI and scripts. Shown once.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = api::CreateApiToken, security(("bearer" = [])),
    responses((status = 201, body = api::TokenResponse), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn create_api_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<api::CreateApiToken>,
) -> ApiResult<(StatusCode, Json<api::TokenResponse>)> {
    if req.name.trim().is_empty() || req.name.len() > 100 {
        return Err(ApiError::InvalidRequest(
            "a token name is 1 to 100 characters".to_owned(),
        ));
    }
    let (token, hash) = auth::new_token().map_err(ApiError::Internal)?;
    state
        .store
        .insert_token(&TokenRecord {
            hash,
            user_id: caller.user.id,
            kind: TokenKind::Api,
            name: req.name,
            created_at: now_ms(),
            expires_at: None,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(api::TokenResponse {
            token,
            expires_at: None,
            user: user_out(&caller.user),
        }),
    ))
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/me", security(("bearer" = [])),
    responses((status = 200, body = api::User), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn me(caller: Caller) -> Json<api::User> {
    Json(user_out(&caller.user))
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
    let quota = req.quota.map_or_else(Quota::default, |q| Quota {
        vms: q.vms,
        vcpus: q.vcpus,
        ram_mib: q.ram_mib,
        public_addresses: q.public_addresses,
        designs: q.designs,
        design_mib: q.design_mib,
    });
    let password = req.password.clone();
    let password_hash = auth::off_thread(&state, move || auth::hash_password(&password)).await?;
    let user = UserRecord {
        id: Uuid::new_v4(),
        name: req.name,
        password_hash,
        role: match req.role {
            api::Role::Admin => Role::Admin,
            api::Role::User => Role::User,
        },
        quota,
        created_at: now_ms(),
    };
    state.store.create_user(&user).await?;
    Ok((StatusCode::CREATED, Json(user_out(&user))))
}
