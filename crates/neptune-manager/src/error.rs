//! The Manager's one error type, converted to HTTP at the edge.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use neptune_api::ErrorBody;
use neptune_store::StoreError;

/// Why a request failed. `Display` is the message users see; causes are
/// logged once, where the error is turned into a response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required: send Authorization: Bearer TOKEN")]
    Unauthenticated,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// What the request named does not exist, or the caller may not see
    /// it: the message says which, as the caller wrote it.
    #[error("{what} {key} not found")]
    Missing { what: &'static str, key: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the topology is invalid ({} problems)", .0.len())]
    InvalidTopology(Vec<String>),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("too many failed logins; try again in {0} s")]
    TooManyAttempts(u64),
    #[error("{0}")]
    TooLarge(String),
    /// The Manager is busy with others' requests of this kind: retry later.
    #[error("{0}")]
    Busy(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated | ApiError::BadCredentials => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) | ApiError::Missing { .. } => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidTopology(_) => "invalid_topology",
            ApiError::QuotaExceeded(_) => "quota_exceeded",
            ApiError::TooManyAttempts(_) | ApiError::Busy(_) => "too_many_requests",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::BadCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::Missing { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::InvalidRequest(_) | ApiError::InvalidTopology(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::QuotaExceeded(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyAttempts(_) | ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// `err`, naming `key` when it is the store's "not found" for what the
    /// request asked by that key.
    pub fn naming(err: StoreError, key: &str) -> ApiError {
        match err {
            StoreError::NotFound { what } => ApiError::Missing {
                what,
                key: key.to_owned(),
            },
            other => other.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { what } => ApiError::NotFound(what),
            StoreError::Duplicate { what } => ApiError::Conflict(format!("{what} already exists")),
            StoreError::Conflict { .. } => ApiError::Conflict(err.to_string()),
            StoreError::QuotaExceeded(what) => ApiError::QuotaExceeded(what),
            // Planning again did not help (another Manager kept taking what
            // this plan needed): the request may be made again.
            StoreError::AddressTaken { .. } | StoreError::NoRoom { .. } => ApiError::Conflict(
                format!("{err}; other requests took it meanwhile: try again"),
            ),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<neptune_lifecycle::TransitionRefused> for ApiError {
    fn from(err: neptune_lifecycle::TransitionRefused) -> Self {
        ApiError::Conflict(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let details = match &self {
            ApiError::InvalidTopology(d) => d.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            code: self.code().to_owned(),
            message: self.to_string(),
            details,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::TooManyAttempts(secs) = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_races_for_room_or_addresses_are_conflicts() {
        for err in [
            StoreError::AddressTaken {
                prefix: "192.0.2.14/32".into(),
            },
            StoreError::NoRoom {
                host: neptune_types::HostId::nil(),
                node: "web".into(),
            },
        ] {
            let api = ApiError::from(err);
            assert_eq!(api.status(), StatusCode::CONFLICT, "{api}");
            assert!(api.to_string().contains("try again"), "{api}");
        }
    }
}
