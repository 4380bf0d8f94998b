//! A small blocking client of the control API (tests, benchmarks, scripts).
//! HTTP/1.1 over one TCP connection per call, `Connection: close`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use crate::api::ErrorBody;
use crate::auth::{self, SwitchKey};

/// A reply: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// The refusal, if the status is an error and the body has the shape of
    /// every Neptune error (`{"code", "message"}`).
    pub fn error(&self) -> Option<ErrorBody> {
        if self.status < 400 {
            return None;
        }
        serde_json::from_str(&self.body).ok()
    }

    /// The refusal's code, if any (see [`crate::api::codes`]).
    pub fn code(&self) -> Option<String> {
        self.error().map(|e| e.code)
    }
}

/// Client of one switch.
#[derive(Debug, Clone)]
pub struct ControlClient {
    addr: SocketAddr,
    key: SwitchKey,
}

impl ControlClient {
    /// A client for the switch at `addr` holding `key`.
    pub fn new(addr: SocketAddr, key: SwitchKey) -> Self {
        ControlClient { addr, key }
    }

    /// A signed call.
    pub fn call(&self, method: &str, target: &str, body: &str) -> std::io::Result<Reply> {
        let headers = auth::signed_headers(&self.key, method, target, body.as_bytes());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        self.raw(method, target, &headers, body)
    }

    /// A call with exactly the given headers (for testing refusals).
    pub fn raw(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> std::io::Result<Reply> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("malformed HTTP reply"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok(Reply { status, body })
    }

    /// The signing headers for a request, to replay or alter.
    pub fn signed_headers(&self, method: &str, target: &str, body: &str) -> Vec<(String, String)> {
        auth::signed_headers(&self.key, method, target, body.as_bytes())
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// Headers signed for an explicit timestamp (e.g. a stale one).
    pub fn headers_at(
        &self,
        method: &str,
        target: &str,
        body: &str,
        timestamp: u64,
    ) -> Vec<(String, String)> {
        let nonce = auth::new_nonce();
        let sig = auth::sign(
            &self.key,
            method,
            target,
            timestamp,
            &nonce,
            body.as_bytes(),
        );
        vec![
            ("authorization".into(), sig),
            (auth::TIMESTAMP_HEADER.into(), timestamp.to_string()),
            (auth::NONCE_HEADER.into(), nonce),
        ]
    }

    /// `PUT /v1/bindings/{home}`.
    pub fn put_binding(
        &self,
        home: &str,
        care_of: &str,
        vi: &str,
        key: u32,
        generation: u64,
    ) -> std::io::Result<Reply> {
        let body = serde_json::json!({ "care_of": care_of, "vi": vi, "key": key, "generation": generation });
        self.call("PUT", &format!("/v1/bindings/{home}"), &body.to_string())
    }

    /// `DELETE /v1/bindings/{home}?generation=N`.
    pub fn delete_binding(&self, home: &str, generation: u64) -> std::io::Result<Reply> {
        self.call(
            "DELETE",
            &format!("/v1/bindings/{home}?generation={generation}"),
            "",
        )
    }

    /// `PUT /v1/visitors/{addr}`.
    pub fn put_visitor(
        &self,
        addr: &str,
        port: &str,
        vi: &str,
        key: u32,
        generation: u64,
    ) -> std::io::Result<Reply> {
        let body =
            serde_json::json!({ "port": port, "vi": vi, "key": key, "generation": generation });
        self.call("PUT", &format!("/v1/visitors/{addr}"), &body.to_string())
    }

    /// `PUT /v1/visitors/{addr}` with every field.
    pub fn put_visitor_with(
        &self,
        addr: &str,
        visitor: &crate::state::Visitor,
    ) -> std::io::Result<Reply> {
        let body = serde_json::to_string(visitor).map_err(std::io::Error::other)?;
        self.call("PUT", &format!("/v1/visitors/{addr}"), &body)
    }

    /// `DELETE /v1/visitors/{addr}?generation=N`.
    pub fn delete_visitor(&self, addr: &str, generation: u64) -> std::io::Result<Reply> {
        self.call(
            "DELETE",
            &format!("/v1/visitors/{addr}?generation={generation}"),
            "",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_read_from_its_body() {
        let refused = Reply {
            status: 409,
            body: r#"{"code":"stale_generation","message":"older"}"#.into(),
        };
        assert_eq!(
            refused.error(),
            Some(ErrorBody {
                code: "stale_generation".into(),
                message: "older".into()
            })
        );
        let ok = Reply {
            status: 200,
            body: r#"{"code":"x","message":"y"}"#.into(),
        };
        assert_eq!(ok.code(), None);
        let plain = Reply {
            status: 500,
            body: "oops".into(),
        };
        assert_eq!(plain.code(), None);
    }
}
