//! The HTTP server every Neptune daemon (the Manager, the Agent, the Edge
//! Service Switch) serves its API with: every connection bounded in time
//! and in number, so that no client, anonymous or not, can stop it.
//!
//! - **Headers and idle connections**: a request's headers must arrive
//!   within [`Limits::header_timeout`] of the first byte being awaited, and
//!   the same clock runs while a kept-alive connection waits for its next
//!   request, so slow-header and idle connections are closed alike.
//! - **Bodies**: a request body must arrive within [`Limits::body_timeout`]
//!   (`408`), and within the route's size limit (see `http`). A route that
//!   takes large bodies (an image upload) gives its request more time
//!   through the request's [`BodyDeadline`], in proportion to the size it
//!   accepts.
//! - **How many**: at most [`Limits::max_connections`] are open, a number
//!   kept below the process's file limit with room for the store, the
//!   Agents' connections and logs. A connection beyond it takes the place of
//!   the connection idle the longest (one between requests); when every
//!   connection is busy, it is closed at once. A flood of idle sockets thus
//!   costs an attacker their own connections, not the server's service.
//! - **Out of files** (`EMFILE`): accepting pauses briefly and resumes;
//!   nothing fails.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

/// The address a request came from (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::IpAddr);

/// How the server bounds its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time for a request's headers, and for an idle connection's next request.
    pub header_timeout: Duration,
    /// Time for a request's body.
    pub body_timeout: Duration,
}

/// Most connections whatever the file limit.
pub const MAX_CONNECTIONS: usize = 4096;

/// File descriptors kept for everything but API connections: the store's
/// pool (SQLite: 8 connections and their WAL files; PostgreSQL: 16), the
/// Manager's connections to Agents, logs and the process's own files.
const RESERVED_FILES: u64 = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// The defaults, with at most as many connections as the process's
    /// file limit leaves room for: a quarter of the limit, and at least
    /// [`RESERVED_FILES`], stay for everything else.
    pub fn for_file_limit(files: u64) -> Limits {
        let reserved = RESERVED_FILES.max(files / 4);
        let room = usize::try_from(files.saturating_sub(reserved)).unwrap_or(usize::MAX);
        Limits {
            max_connections: MAX_CONNECTIONS.min(room).max(16),
            ..Limits::default()
        }
    }

    /// The defaults under this process's file limit, raised first to its
    /// hard limit (as most servers do: the soft limit of 1024 is a default
    /// for programs that use `select`, which this one does not).
    pub fn for_this_process() -> Limits {
        Limits::for_file_limit(raise_file_limit())
    }
}

/// Raises the soft limit on open files to the hard limit and returns it.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(err) => {
                tracing::warn!(error = %err, soft, hard, "cannot raise the open file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the open file limit; assuming 1024");
            1024
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves,
/// then lets the open requests finish (at most `limits.body_timeout`).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Connections::new(limits.max_connections));
    let router = router.layer(axum::middleware::from_fn(
        move |req: Request<Body>, next: axum::middleware::Next| {
            body_deadline(req, next, limits.body_timeout)
        },
    ));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of files, or a connection reset before it was
                    // accepted: wait a little, never give up serving.
                    tracing::warn!(error = %err, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(conn) = open.admit() else {
            // Every connection is busy with a request: this one waits for
            // none of them.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, peer, router.clone(), conn, limits));
    }
    open.close_all();
    let deadline = Instant::now() + limits.body_timeout;
    while open.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    router: axum::Router,
    conn: Admitted,
    limits: Limits,
) {
    let state = conn.state.clone();
    let service = tower::service_fn(move |mut req: Request<Incoming>| {
        let busy = Busy::begin(&state);
        req.extensions_mut().insert(Peer(peer.ip()));
        let router = router.clone();
        async move {
            let response = router.oneshot(req.map(Body::new)).await?;
            // The connection stays busy until the whole body is sent.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(Tracked {
                    inner: body,
                    _busy: busy,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = conn.state.close.notified() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended");
    }
}

/// A request's body deadline (a request extension): a handler may move it
/// before it reads the body, for a body that takes longer to arrive than
/// the server's [`Limits::body_timeout`] (say, one minute plus a second per
/// 8 MiB declared). The deadline is never removed: the body stays bounded
/// in time.
#[derive(Debug, Clone)]
pub struct BodyDeadline(Arc<Mutex<Option<tokio::time::Instant>>>);

impl BodyDeadline {
    /// Lets the body arrive until `within` from now.
    pub fn extend(&self, within: Duration) {
        if let Ok(mut at) = self.0.lock() {
            *at = Some(tokio::time::Instant::now() + within);
        }
    }
}

/// `408 Request Timeout` for a body that does not arrive in time, whatever
/// the handler made of the failed read.
async fn body_deadline(
    req: Request<Body>,
    next: axum::middleware::Next,
    timeout: Duration,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let expired = Arc::new(AtomicBool::new(false));
    let moved = BodyDeadline(Arc::default());
    parts.extensions.insert(moved.clone());
    let body = Body::new(Deadline {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(timeout)),
        moved,
        expired: expired.clone(),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    if expired.load(Ordering::Acquire) {
        // The error shape of every Neptune API: {code, message}.
        let body = serde_json::json!({
            "code": "request_timeout",
            "message": "the request body did not arrive in time",
        });
        return (axum::http::StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    }
    response
}

/// A request body that fails once its deadline passes.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Where a handler moved the deadline to, not yet applied.
    moved: BodyDeadline,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some(at) = this.moved.0.lock().ok().and_then(|mut m| m.take()) {
            this.sleep.as_mut().reset(at);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired.store(true, Ordering::Release);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its connection busy until it is dropped.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One open connection, as the registry sees it.
#[derive(Debug)]
struct ConnState {
    /// Requests in flight (their responses not yet fully sent).
    busy: AtomicUsize,
    /// When the last request began (or the connection opened), in
    /// milliseconds since the registry was made.
    last_active: AtomicU64,
    /// Asked to close; not chosen again.
    closing: AtomicBool,
    close: Notify,
    epoch: Instant,
}

/// A request in flight on a connection.
struct Busy(Arc<ConnState>);

impl Busy {
    fn begin(state: &Arc<ConnState>) -> Busy {
        state.busy.fetch_add(1, Ordering::AcqRel);
        let now = u64::try_from(state.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        state.last_active.store(now, Ordering::Release);
        Busy(state.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections.
#[derive(Debug)]
struct Connections {
    max: usize,
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
}

/// A connection's place in the registry, given back when it is dropped.
struct Admitted {
    id: u64,
    state: Arc<ConnState>,
    registry: Arc<Connections>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut open) = self.registry.open.lock() {
            open.remove(&self.id);
        }
    }
}

impl Connections {
    fn new(max: usize) -> Connections {
        Connections {
            max,
            epoch: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn count(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }

    /// A place for a new connection: free, or taken from the connection
    /// idle the longest; none when every connection is busy.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.open.lock().ok()?;
        let live = open
            .values()
            .filter(|c| !c.closing.load(Ordering::Acquire))
            .count();
        if live >= self.max {
            let idlest = open
                .values()
                .filter(|c| {
                    !c.closing.load(Ordering::Acquire) && c.busy.load(Ordering::Acquire) == 0
                })
                .min_by_key(|c| c.last_active.load(Ordering::Acquire))?;
            idlest.closing.store(true, Ordering::Release);
            idlest.close.notify_one();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            epoch: self.epoch,
        });
        open.insert(id, state.clone());
        Some(Admitted {
            id,
            state,
            registry: self.clone(),
        })
    }

    fn close_all(&self) {
        if let Ok(open) = self.open.lock() {
            for c in open.values() {
                c.closing.store(true, Ordering::Release);
                c.close.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_below_the_file_limit() {
        assert_eq!(Limits::for_file_limit(1024).max_connections, 768);
        assert_eq!(Limits::for_file_limit(300).max_connections, 44);
        assert_eq!(
            Limits::for_file_limit(1 << 20).max_connections,
            MAX_CONNECTIONS
        );
        // Never none, even under an absurd limit.
        assert_eq!(Limits::for_file_limit(10).max_connections, 16);
    }

    #[test]
    fn a_connection_beyond_the_cap_takes_the_idlest_place() {
        let open = Arc::new(Connections::new(2));
        let a = open.admit().unwrap();
        let b = open.admit().unwrap();
        // `a` is busy; `b` is idle: a third connection closes `b`.
        let busy = Busy::begin(&a.state);
        let c = open.admit().unwrap();
        assert!(b.state.closing.load(Ordering::Acquire));
        assert!(!a.state.closing.load(Ordering::Acquire));
        // Now `a` and `c` are live, `a` busy, `c` idle: a fourth closes `c`.
        let _d = open.admit().unwrap();
        assert!(c.state.closing.load(Ordering::Acquire));
        drop(b);
        drop(c);
        assert_eq!(open.count(), 2);
        // Both live ones busy: the next is refused.
        let _busy_d = Busy::begin(&_d.state);
        assert!(open.admit().is_none());
        drop(busy);
        assert!(open.admit().is_some());
    }
}
