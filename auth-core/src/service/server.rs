//! The serving loop: hyper-util's auto (HTTP/1 + HTTP/2) connection builder driving a warp
//! filter, because warp 0.4's own `serve` has no header-size limit, no read timeout, no
//! connection cap and keeps the client address private.
//!
//! Every request gets two extensions before the filter runs: [`PeerAddr`] (the socket peer, for
//! per-IP throttling) and a [`CallerSlot`] (filled by the auth filters, read by the request log).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;
use warp::Filter;
use warp::reply::{Reply, Response};

use super::config::{CorsSettings, ServerSettings};
use crate::caller::CallerSlot;

/// The socket peer of a request's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// A filter extracting the peer address (always present under [`serve`]).
pub fn peer_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>().map(|p: Option<PeerAddr>| p.map(|p| p.0))
}

/// A filter extracting the request's caller slot (for the auth filters).
pub fn caller_slot() -> impl Filter<Extract = (Option<CallerSlot>,), Error = Infallible> + Clone {
    warp::ext::optional::<CallerSlot>()
}

/// A service's routes as the loop serves them: `plain` for every request, and, when CORS is on,
/// `cross_origin` (the same routes behind warp's CORS layer) for a preflight and a request from a
/// listed `Origin` (see [`super::cors::wrap`]). The loop picks one per request by two header
/// lookups: a request without an `Origin` pays nothing for CORS.
#[derive(Clone)]
pub struct Routes<F> {
    /// Every request the CORS layer has no business with.
    pub plain: F,
    /// A preflight, or a request from a listed origin (`None`: CORS is off).
    pub cross_origin: Option<F>,
}

impl<F> Routes<F> {
    /// Routes with CORS off.
    pub fn plain(filter: F) -> Self {
        Self {
            plain: filter,
            cross_origin: None,
        }
    }
}

/// HTTP/2's per-stream flow-control window: the largest request body a route reads (tasks-api's
/// 32 KiB), so one upload never waits on a window update, and no more.
pub const H2_STREAM_WINDOW: u32 = 32 * 1024;
/// HTTP/2's per-connection window, shared by its streams: eight of the largest bodies at once (a
/// gateway multiplexes many clients' uploads over one connection), a quarter of hyper's 1 MiB.
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// Serves `routes` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (up to `server.shutdown_timeout_seconds`; `false` when some had not by then). `cors` gives the responses the loop writes itself
/// (refusals before any filter, a panic, a timeout) the CORS headers the routes' would have.
pub async fn serve<F>(
    listener: TcpListener,
    routes: Routes<F>,
    settings: ServerSettings,
    cors: &CorsSettings,
    shutdown: impl Future<Output = ()>,
) -> bool
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
    F::Future: Send,
{
    let limit = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let header_timeout = Duration::from_secs(settings.header_read_timeout_seconds.max(1));
    let write_timeout = Duration::from_secs(settings.write_timeout_seconds.max(1));
    let max_header = settings.max_header_bytes.max(8192);
    let limits = Arc::new(RequestLimits {
        body_timeout: Duration::from_secs(settings.body_read_timeout_seconds.max(1)),
        request_timeout: Duration::from_secs(settings.request_timeout_seconds.max(1)),
        max_query_bytes: settings.max_query_bytes,
        max_query_params: settings.max_query_params,
        cors: cors.clone(),
        gave_up: AtomicBool::new(false),
    });
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let graceful_watch = graceful.watcher();
        let svc = hyper_util::service::TowerToHyperService::new(RequestService {
            inner: warp::service(routes.plain.clone()),
            cross_origin: routes.cross_origin.clone().map(warp::service),
            peer,
            limits: limits.clone(),
        });
        tokio::spawn(async move {
            // hyper's header timeout starts with the first request line, and hyper-util reads
            // HTTP/2's preface with no timer: a client that connects and sends nothing, or part
            // of the preface, would hold a connection slot forever. It gets
            // `header_read_timeout` to send enough to tell the two apart.
            if !protocol_known_in_time(&stream, header_timeout).await {
                tracing::debug!(%peer, "connection sent too little in time (or closed); dropped");
                drop(permit);
                return;
            }
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_header);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX))
                .max_concurrent_streams(128)
                // Flow-control windows sized to this workspace's bodies (32 KiB at most), not
                // hyper's 1 MiB per stream: h2 buffers DATA a route has not read (a GET, a
                // refused request), so each stream could park a mebibyte.
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .keep_alive_interval(Some(header_timeout))
                .keep_alive_timeout(header_timeout);
            // A write that makes no progress for `write_timeout` (the client stopped reading,
            // its receive window shut) fails the connection: no other timer runs while hyper
            // waits to flush a response (the header timer starts only once it has).
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(write_timeout));
            let conn = builder.serve_connection(TokioIo::new(Box::pin(stream)), svc);
            let conn = graceful_watch.watch(conn.into_owned());
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = Duration::from_secs(settings.shutdown_timeout_seconds);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after the shutdown timeout; closing");
        limits.gave_up.store(true, Ordering::Relaxed);
        return false;
    }
    true
}

/// Whether, within `timeout`, the connection's first bytes are HTTP/2's whole preface or
/// anything that is not a part of it (HTTP/1: hyper's header timeout takes over from there).
/// Only a peer whose bytes so far are a strict prefix of the preface is polled again (every
/// 10 ms): a real HTTP/2 client sends the 24 bytes at once.
async fn protocol_known_in_time(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if n == PREFACE.len() || !PREFACE.starts_with(&buf[..n]) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Connections beyond `server.max_connections` the process needs descriptors for: the database
/// pool, key fetches, SQLite's files, the listener.
const OTHER_FILES: u64 = 128;

/// Raises the soft limit on open files to the hard one (as Go's runtime does): systemd and
/// container runtimes often start services at a soft 1024, below `server.max_connections`, so
/// the process would run out of descriptors (EMFILE: failed accepts, database connections and
/// key fetches) before its own cap applies. Warns when even the hard limit is below what the
/// cap needs. Returns the soft limit now in force.
#[cfg(unix)]
pub fn raise_open_files_limit(max_connections: usize) -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Far above any need.
    const CEILING: u64 = 1 << 20;
    let (mut soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // Linux allows any soft limit up to the hard one; macOS refuses one above its
    // `kern.maxfilesperproc` (its hard limit is unlimited): halve until one is taken.
    let mut wanted = hard.min(CEILING);
    while wanted > soft {
        if setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
            soft = wanted;
            break;
        }
        wanted /= 2;
    }
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(OTHER_FILES);
    if soft < needed {
        tracing::warn!(
            open_files = soft,
            needed,
            "the open-files limit (ulimit -n) is below server.max_connections plus {OTHER_FILES}: \
             descriptors run out before the connection cap applies; raise the limit or lower \
             server.max_connections"
        );
    }
    Some(soft)
}

/// The process's stop signals (SIGINT, SIGTERM), listened for from when they are registered:
/// registered before the service serves, and kept for its whole life, so no signal is lost
/// between the first and a second.
pub struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Listens for SIGINT and SIGTERM from now on (within a Tokio runtime with its IO driver).
    pub fn register() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }
}

/// The first SIGINT or SIGTERM is sent on `first` (the graceful stop); a later SIGINT (a
/// second Ctrl-C) ends the process at once, exit status 130, without waiting for in-flight
/// requests. Only SIGINT forces: orchestrators send SIGTERM and then SIGKILL, and
/// `cargo xtask dev` follows the terminal's Ctrl-C with a SIGTERM of its own. A SIGINT pending
/// with the first signal is taken as the first (`biased`), so that pair never forces.
pub async fn watch_stop_signals(mut signals: StopSignals, first: tokio::sync::oneshot::Sender<()>) {
    #[cfg(unix)]
    {
        tokio::select! {
            biased;
            _ = signals.interrupt.recv() => {},
            _ = signals.terminate.recv() => {},
        }
        tracing::info!("stop signal received, finishing in-flight requests");
        let _ = first.send(());
        signals.interrupt.recv().await;
    }
    #[cfg(not(unix))]
    {
        let _ = &mut signals;
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stop signal received, finishing in-flight requests");
        let _ = first.send(());
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::warn!("second Ctrl-C (SIGINT): exiting without waiting for in-flight requests");
    std::process::exit(130);
}

/// The per-request limits the loop enforces before any filter runs.
#[derive(Debug)]
struct RequestLimits {
    body_timeout: Duration,
    request_timeout: Duration,
    /// For the CORS headers of the responses the loop writes itself.
    cors: CorsSettings,
    max_query_bytes: usize,
    max_query_params: usize,
    /// Set when the shutdown grace period ran out: requests still running are dropped by the
    /// service, not abandoned by their clients.
    gave_up: AtomicBool,
}

impl RequestLimits {
    /// A response for a query string over the limits, if it is.
    fn check_query(&self, query: Option<&str>) -> Option<Response> {
        let query = query?;
        if query.len() > self.max_query_bytes {
            return Some(crate::error::error_response(
                http::StatusCode::URI_TOO_LONG,
                "uri_too_long",
                &format!("query string over {} bytes", self.max_query_bytes),
            ));
        }
        if query.split('&').filter(|p| !p.is_empty()).count() > self.max_query_params {
            return Some(crate::error::error_response(
                http::StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("more than {} query parameters", self.max_query_params),
            ));
        }
        None
    }
}

/// 400 `invalid_request` (RFC 6750 §3.1) for a request with more than one `Authorization` field
/// line, before any route runs. The field is not a list (RFC 9110 §5.3 forbids repeating it),
/// and which line a proxy in front read is anyone's guess: none is believed.
fn check_authorization(headers: &http::HeaderMap) -> Option<Response> {
    let mut lines = headers.get_all(http::header::AUTHORIZATION).iter();
    lines.next()?;
    lines.next()?;
    const MESSAGE: &str = "more than one Authorization header";
    let mut res =
        crate::error::error_response(http::StatusCode::BAD_REQUEST, "invalid_request", MESSAGE);
    res.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static(
            "Bearer error=\"invalid_request\", error_description=\"more than one Authorization header\"",
        ),
    );
    Some(res)
}

/// Wraps warp's service: adds the request extensions, enforces the request limits and writes the
/// request log line.
#[derive(Clone)]
struct RequestService<S> {
    inner: S,
    /// The routes behind the CORS layer, for a preflight or a listed origin.
    cross_origin: Option<S>,
    peer: SocketAddr,
    limits: Arc<RequestLimits>,
}

impl<S, B> Service<http::Request<B>> for RequestService<S>
where
    S: Service<http::Request<TimeoutBody<B>>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        std::task::ready!(self.inner.poll_ready(cx))?;
        match &mut self.cross_origin {
            Some(cross_origin) => cross_origin.poll_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let slot = CallerSlot::default();
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(PeerAddr(self.peer));
        let method = req.method().clone();
        // HEAD is GET without the body (RFC 9110 §9.3.2): routes match it as GET, and hyper
        // sends the head only. Load balancers' HEAD health checks then see /health's 200.
        if method == http::Method::HEAD {
            *req.method_mut() = http::Method::GET;
        }
        // The path only: a query string may carry anything, a token included.
        let path: String = req.uri().path().chars().take(256).collect();
        let refused = self
            .limits
            .check_query(req.uri().query())
            .or_else(|| check_authorization(req.headers()));
        let request_timeout = self.limits.request_timeout;
        let limits = Arc::clone(&self.limits);
        // The CORS headers of the responses written here when CORS is on: for a request from a
        // page, and `Vary: Origin` on every one, with an `Origin` or without.
        // (`None`: CORS off; `Some(None)`: on, and no `Origin`, so nothing is cloned.)
        let cors = (!self.limits.cors.allowed_origins.is_empty()).then(|| {
            req.headers()
                .get(http::header::ORIGIN)
                .map(|origin| (origin.clone(), Arc::clone(&self.limits)))
        });
        let own = move |mut res: Response| {
            match &cors {
                None => {}
                Some(None) => super::cors::add_vary(&mut res),
                Some(Some((origin, limits))) => {
                    super::cors::add_to_loop_response(&mut res, origin, &limits.cors);
                }
            }
            res
        };
        let outcome = match refused {
            Some(refused) => Err(refused),
            None => {
                let timeout = self.limits.body_timeout;
                let req = req.map(|body| TimeoutBody::new(body, timeout));
                match &mut self.cross_origin {
                    Some(cross_origin)
                        if super::cors::for_the_cors_layer(&req, &self.limits.cors) =>
                    {
                        Ok(cross_origin.call(req))
                    }
                    _ => Ok(self.inner.call(req)),
                }
            }
        };
        Box::pin(async move {
            // Dropped before the answer (the client closed the connection, or reset the
            // stream): the request still gets its access line, as nginx's 499.
            let mut unanswered = Unanswered {
                method: &method,
                path: &path,
                start,
                slot: &slot,
                limits: &limits,
                answered: false,
            };
            let res = match outcome {
                // A handler that panics costs its request a 500, not the connection (and with
                // it every other request in flight on an HTTP/2 connection). The panic hook has
                // already printed the panic; this line ties it to the request.
                Ok(fut) => match tokio::time::timeout(
                    request_timeout,
                    AssertUnwindSafe(fut).catch_unwind(),
                )
                .await
                {
                    Ok(Ok(res)) => res?,
                    // Stuck (a database that stopped answering): the client is told to come
                    // back rather than held; the handler's future is dropped.
                    Err(_) => {
                        metrics::counter!("http_request_timeouts_total").increment(1);
                        tracing::warn!(method = %method, path = %path, "request not answered within server.request_timeout_seconds; answered 503");
                        let mut res = crate::error::error_response(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "temporarily_unavailable",
                            "the request took too long; try again later",
                        );
                        res.headers_mut()
                            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(5u32));
                        own(res)
                    }
                    Ok(Err(_)) => {
                        metrics::counter!("http_handler_panics_total").increment(1);
                        tracing::error!(method = %method, path = %path, "request handler panicked; answered 500");
                        own(crate::error::error_response(
                            http::StatusCode::INTERNAL_SERVER_ERROR,
                            "internal_error",
                            "internal server error",
                        ))
                    }
                },
                Err(refused) => own(refused),
            };
            // hyper drops a HEAD response's body on HTTP/1 only; on HTTP/2 it would send it.
            // The length stays GET's; a 204 or 304 has none to give (RFC 9110 §8.6: a 304's
            // would have to be the 200's).
            let res = if method == http::Method::HEAD {
                let (mut parts, body) = res.into_parts();
                let bodiless = matches!(
                    parts.status,
                    http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
                );
                if let Some(len) = http_body::Body::size_hint(&body).exact()
                    && !bodiless
                {
                    parts
                        .headers
                        .entry(http::header::CONTENT_LENGTH)
                        .or_insert(len.into());
                }
                Response::from_parts(parts, Default::default())
            } else {
                res
            };
            unanswered.answered = true;
            tracing::info!(
                target: "access",
                method = %method,
                path = %path,
                status = res.status().as_u16(),
                latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                sub = slot.get(),
                "request"
            );
            Ok(res)
        })
    }
}

/// A request's access line for when its future is dropped unanswered: the client went away
/// (closed the connection, reset the HTTP/2 stream) while its handler ran. Logged with status
/// 499 (nginx's "client closed request") and counted in `http_requests_abandoned_total`, so a
/// request a load balancer gave up on is not missing from the service's log.
struct Unanswered<'a> {
    method: &'a http::Method,
    path: &'a str,
    start: Instant,
    slot: &'a CallerSlot,
    limits: &'a RequestLimits,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let latency_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Past the shutdown grace period the service drops what still runs: not the client's
        // doing, and no answer reached it.
        if self.limits.gave_up.load(Ordering::Relaxed) {
            tracing::warn!(
                target: "access",
                method = %self.method,
                path = %self.path,
                status = 503u16,
                latency_us,
                sub = self.slot.get(),
                "request dropped unanswered: the service stopped (server.shutdown_timeout_seconds passed)"
            );
            return;
        }
        metrics::counter!("http_requests_abandoned_total").increment(1);
        tracing::info!(
            target: "access",
            method = %self.method,
            path = %self.path,
            status = 499u16,
            latency_us,
            sub = self.slot.get(),
            "request abandoned: the client went away before its answer"
        );
    }
}

/// The error a request body yields when it does not arrive within `server.body_read_timeout_seconds`.
#[derive(Debug, thiserror::Error)]
#[error("request body read timed out")]
pub struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once its deadline, counted from the first
/// read, passes: a slow client cannot hold a request open forever.
pub struct TimeoutBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimeoutBody<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl<B> http_body::Body for TimeoutBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use super::*;

    async fn start<F>(
        filter: F,
        settings: ServerSettings,
    ) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>)
    where
        F: Filter + Clone + Send + Sync + 'static,
        F::Extract: Reply,
        F::Future: Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let cors = CorsSettings::default();
        let handle = tokio::spawn(async move {
            serve(
                listener,
                Routes::plain(filter),
                settings,
                &cors,
                async move {
                    let _ = rx.await;
                },
            )
            .await;
        });
        (addr, tx, handle)
    }

    /// An HTTP/2 client is granted no more than the stream window for a request body a route
    /// may never read (hyper's default let each connection park a mebibyte, where HTTP/1
    /// holds 16 KiB).
    #[tokio::test]
    async fn an_http2_stream_may_send_no_more_than_its_window() {
        let route = warp::path("unread").map(|| "ok");
        let (addr, _stop, _handle) = start(route, ServerSettings::default()).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let request = || {
            http::Request::post(format!("http://{addr}/unread"))
                .body(())
                .unwrap()
        };
        // One whole exchange first: the server's SETTINGS and window updates have arrived.
        let (response, _) = client.send_request(request(), true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
        let mut client = client.ready().await.unwrap();
        let (_response, mut body) = client.send_request(request(), false).unwrap();
        body.reserve_capacity(2 * 1024 * 1024);
        let granted = std::future::poll_fn(|cx| body.poll_capacity(cx))
            .await
            .unwrap()
            .unwrap();
        assert!(granted > 0);
        assert!(
            granted <= H2_STREAM_WINDOW as usize,
            "{granted} bytes granted"
        );
    }

    /// A panicking handler answers 500 with the usual JSON body; the connection and the server
    /// go on serving.
    #[tokio::test]
    async fn a_panicking_handler_is_a_500_and_the_connection_lives() {
        let route = warp::path("boom")
            .map(|| -> &'static str { panic!("a handler bug") })
            .or(warp::path("ok").map(|| "fine"));
        let (addr, _stop, _h) = start(route, ServerSettings::default()).await;
        // One client: one keep-alive connection for both requests.
        let client = one_connection_client();
        let res = client
            .get(format!("http://{addr}/boom"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "internal_error", "{body}");
        still_serves(&client, addr).await;
    }

    /// A client that keeps one keep-alive connection per host.
    fn one_connection_client() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap()
    }

    /// The connection `client` holds still serves the next request (`/ok` answers "fine").
    async fn still_serves(client: &reqwest::Client, addr: SocketAddr) {
        let res = client
            .get(format!("http://{addr}/ok"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), "fine");
    }

    /// A handler that never finishes (a database that stopped answering) is answered 503 after
    /// `server.request_timeout_seconds`, and the connection serves the next request.
    #[tokio::test]
    async fn a_stuck_handler_is_a_503_and_the_connection_lives() {
        let route = warp::path("stuck")
            .and_then(std::future::pending::<Result<&'static str, warp::Rejection>>)
            .or(warp::path("ok").map(|| "fine"));
        let settings = ServerSettings {
            request_timeout_seconds: 1,
            ..ServerSettings::default()
        };
        let (addr, _stop, _h) = start(route, settings).await;
        let client = one_connection_client();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            client.get(format!("http://{addr}/stuck")).send(),
        )
        .await
        .expect("answered, not held")
        .unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "5");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        still_serves(&client, addr).await;
    }

    /// HEAD answers as GET does, without the body; other methods still do not match GET routes.
    #[tokio::test]
    async fn head_is_get_without_the_body() {
        let route = warp::get()
            .and(warp::path("health"))
            .map(|| "{\"status\":\"ok\"}")
            .recover(crate::error::handle_rejection);
        let (addr, _stop, _h) = start(route, ServerSettings::default()).await;
        let client = reqwest::Client::new();
        let res = client
            .head(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-length"], "15");
        assert_eq!(res.bytes().await.unwrap().len(), 0);
        // The service itself answers with no body, whatever the protocol: hyper's HTTP/2 server
        // would send one (its HTTP/1 server, above, drops it either way).
        let mut svc = RequestService {
            cross_origin: None,
            inner: warp::service(
                warp::get()
                    .and(warp::path("health"))
                    .map(|| "{\"status\":\"ok\"}"),
            ),
            peer: addr,
            limits: Arc::new(RequestLimits {
                body_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(5),
                cors: CorsSettings::default(),
                max_query_bytes: 1024,
                max_query_params: 8,
                gave_up: AtomicBool::new(false),
            }),
        };
        let req = http::Request::builder()
            .method("HEAD")
            .uri("/health")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = svc.call(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-length"], "15");
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(body.is_empty(), "{body:?}");
        let res = client
            .delete(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405);
    }

    #[tokio::test]
    async fn filters_see_the_peer_address() {
        let route = peer_addr()
            .map(|p: Option<SocketAddr>| p.map(|a| a.ip().to_string()).unwrap_or_default());
        let (addr, _stop, _h) = start(route, ServerSettings::default()).await;
        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "127.0.0.1");
    }

    #[tokio::test]
    async fn in_flight_requests_finish_after_the_stop_signal() {
        // The handler waits for a release we control: no sleeping.
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let release = Arc::new(Mutex::new(Some(release_rx)));
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let entered = Arc::new(Mutex::new(Some(entered_tx)));
        let route = warp::any().then(move || {
            let release = release.lock().unwrap().take();
            let entered = entered.lock().unwrap().take();
            async move {
                if let Some(e) = entered {
                    let _ = e.send(());
                }
                if let Some(r) = release {
                    let _ = r.await;
                }
                "finished"
            }
        });
        let (addr, stop, handle) = start(route, ServerSettings::default()).await;
        let request = tokio::spawn(async move {
            reqwest::get(format!("http://{addr}/"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        entered_rx.await.unwrap();
        stop.send(()).unwrap();
        // The stop has been handled once the listener is closed (a connection is refused)...
        let mut refused = false;
        for _ in 0..10_000 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused, "the listener closes at the stop signal");
        // ...and the server still waits for the in-flight request.
        assert!(!handle.is_finished());
        release_tx.send(()).unwrap();
        assert_eq!(request.await.unwrap(), "finished");
        handle.await.unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener closed after shutdown"
        );
    }

    use tokio::net::TcpStream;

    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        let (addr, _stop, _h) = start(warp::any().map(|| "ok"), ServerSettings::default()).await;
        let big = "a".repeat(64 * 1024);
        let res = raw(
            addr,
            format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(res.starts_with("HTTP/1.1 431"), "{res}");
        let ok = raw(
            addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }

    #[tokio::test]
    async fn long_or_crowded_query_strings_are_refused_before_any_filter() {
        let (addr, _stop, _h) = start(warp::any().map(|| "ok"), ServerSettings::default()).await;
        let long = format!(
            "GET /?q={} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            "a".repeat(5000)
        );
        let res = raw(addr, long.as_bytes()).await;
        assert!(res.starts_with("HTTP/1.1 414"), "{res}");
        assert!(res.contains("\"error\":\"uri_too_long\""), "{res}");
        let crowded: Vec<String> = (0..40).map(|i| format!("p{i}=1")).collect();
        let req = format!(
            "GET /?{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            crowded.join("&")
        );
        let res = raw(addr, req.as_bytes()).await;
        assert!(res.starts_with("HTTP/1.1 400"), "{res}");
        let fine: Vec<String> = (0..32).map(|i| format!("p{i}=1")).collect();
        let req = format!(
            "GET /?{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            fine.join("&")
        );
        assert!(raw(addr, req.as_bytes()).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_body_that_never_finishes_is_a_408() {
        // The deadline is the server's own timer (1 s here); the test waits on the response.
        let settings = ServerSettings {
            body_read_timeout_seconds: 1,
            ..ServerSettings::default()
        };
        let route = super::super::body::json::<serde_json::Value>(1024)
            .map(|v: serde_json::Value| v.to_string())
            .recover(crate::error::handle_rejection);
        let (addr, _stop, _h) = start(route, settings).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"a\":")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let res = String::from_utf8_lossy(&out);
        assert!(res.starts_with("HTTP/1.1 408"), "{res}");
        assert!(res.contains("request_timeout"), "{res}");
    }

    #[tokio::test]
    async fn the_connection_cap_holds_further_connections_back() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        let route = warp::any().map(move || {
            count.fetch_add(1, Ordering::SeqCst);
            "ok"
        });
        let settings = ServerSettings {
            max_connections: 1,
            ..ServerSettings::default()
        };
        let (addr, _stop, _h) = start(route, settings).await;
        // The first connection takes the only slot and sends nothing; the second sends a whole
        // request (on loopback it is in the server's socket once written).
        let first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        // Every chance to serve it, with no wall-clock wait: the server runs on this test's one
        // thread, and its reactor is polled while the test yields.
        for _ in 0..10_000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            served.load(Ordering::SeqCst),
            0,
            "the second connection was served while the first held the only slot"
        );
        drop(first);
        let mut res = String::new();
        second.read_to_string(&mut res).await.unwrap();
        assert!(
            res.starts_with("HTTP/1.1 200") && res.ends_with("ok"),
            "{res}"
        );
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        // The deadline is the server's own timer (1 s here); the test waits on the socket.
        let settings = ServerSettings {
            header_read_timeout_seconds: 1,
            ..ServerSettings::default()
        };
        let (addr, _stop, _h) = start(warp::any().map(|| "ok"), settings).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(
            read.is_ok(),
            "the server kept a slow client's connection open"
        );
        let res = String::from_utf8_lossy(&out);
        assert!(!res.contains("200 OK"), "{res}");
    }

    /// A client that sends a request and never reads the answer (its receive window shut once
    /// the socket buffers fill) gives its slot back after `server.write_timeout_seconds`:
    /// before, nothing timed hyper's wait to flush, and the slot was held for ever.
    #[tokio::test]
    async fn a_client_that_never_reads_gives_its_slot_back() {
        // The deadline is the server's own timer (1 s here); the test waits on the next client.
        let route = warp::path("big")
            .map(|| vec![b'x'; 32 << 20])
            .or(warp::any().map(|| b"ok".to_vec()));
        let settings = ServerSettings {
            header_read_timeout_seconds: 1,
            write_timeout_seconds: 1,
            max_connections: 1,
            ..ServerSettings::default()
        };
        let (addr, _stop, _h) = start(route, settings).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        next_client_served(addr, "a client that never reads kept the only slot").await;
        drop(stalled);
    }

    /// A request whose client goes away while its handler runs still gets its access line
    /// (status 499): before, the dropped future logged nothing.
    #[tokio::test]
    async fn a_request_its_client_abandons_is_logged() {
        let logs = crate::service::telemetry::LogCapture::install();
        let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
        let dropped_tx = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
        /// Tells the test when the handler's future is dropped.
        struct OnDrop(Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                if let Some(tx) = self.0.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
        }
        let started = Arc::new(tokio::sync::Notify::new());
        let running = started.clone();
        let route = warp::path("never-answered-4a7").then(move || {
            let guard = OnDrop(dropped_tx.clone());
            running.notify_one();
            async move {
                let _guard = guard;
                std::future::pending::<&'static str>().await
            }
        });
        let (addr, _stop, _h) = start(route, ServerSettings::default()).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /never-answered-4a7 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Closed once the handler runs: the server sees the end of the stream and drops it.
        tokio::time::timeout(Duration::from_secs(10), started.notified())
            .await
            .expect("the handler ran");
        drop(conn);
        tokio::time::timeout(Duration::from_secs(10), dropped_rx)
            .await
            .expect("the abandoned request's handler was dropped")
            .unwrap();
        let text = logs.contents();
        let line = text
            .lines()
            .find(|l| l.contains("path=/never-answered-4a7"))
            .unwrap_or_else(|| panic!("no access line for the abandoned request:\n{text}"));
        assert!(
            line.contains("status=499") && line.contains("abandoned"),
            "{line}"
        );
    }

    /// The soft open-files limit is raised to the hard one: a service started at a low soft
    /// limit (systemd's 1024) gets the descriptors its connection cap needs.
    #[cfg(unix)]
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let low = hard.min(4096) / 2;
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, low);
        let raised = super::raise_open_files_limit(16).unwrap();
        assert_eq!(raised, hard.min(1 << 20));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, raised);
    }

    /// A server with one connection slot and a header timeout of 1 s.
    async fn one_slot() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let settings = ServerSettings {
            header_read_timeout_seconds: 1,
            max_connections: 1,
            ..ServerSettings::default()
        };
        start(warp::any().map(|| "ok"), settings).await
    }

    /// The server closes `conn` on its own timer (the test waits on the socket), and then the
    /// next client gets the slot.
    async fn closed_and_slot_reused(addr: SocketAddr, mut conn: TcpStream, what: &str) {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{what} was kept open");
        next_client_served(addr, "the next client is not served").await;
    }

    /// A new client is served within 10 s (the server's own timers free the slot before).
    async fn next_client_served(addr: SocketAddr, failure: &str) {
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            raw(
                addr,
                b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            ),
        )
        .await
        .expect(failure);
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_gives_its_slot_back() {
        let (addr, _stop, _h) = one_slot().await;
        let silent = TcpStream::connect(addr).await.unwrap();
        closed_and_slot_reused(addr, silent, "a silent connection").await;
    }

    /// A client that sends part of HTTP/2's preface and stalls: hyper-util reads the preface
    /// with no timer, so before, it held the slot for ever.
    #[tokio::test]
    async fn a_client_that_stalls_in_the_http2_preface_gives_its_slot_back() {
        let (addr, _stop, _h) = one_slot().await;
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(b"PRI * HTTP/2").await.unwrap();
        closed_and_slot_reused(addr, stalled, "a stalled preface").await;
    }

    /// HTTP/1 requests whose method starts like the preface, sent a byte at a time, are read.
    #[tokio::test]
    async fn a_request_sent_a_byte_at_a_time_is_served() {
        let (addr, _stop, _h) = one_slot().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        // No Nagle: each byte leaves in a segment of its own, as far as the client decides.
        conn.set_nodelay(true).unwrap();
        for b in b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" {
            conn.write_all(&[*b]).await.unwrap();
            conn.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        let mut res = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut res))
            .await
            .unwrap()
            .unwrap();
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_gives_its_slot_back() {
        // One request on a keep-alive connection, then nothing.
        let (addr, _stop, _h) = one_slot().await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 512];
        let n = idle.read(&mut first).await.unwrap();
        let head = String::from_utf8_lossy(&first[..n]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        closed_and_slot_reused(addr, idle, "an idle keep-alive connection").await;
    }
}
