//! Serving: the listener, the optional metrics listener, and graceful shutdown (API.md §4).
//!
//! Connections are served by hyper directly (not `axum::serve`) so that slow clients cannot hold
//! the server: a request head must arrive within `REQUEST_HEADER_TIMEOUT_SECS` (idle keep-alive
//! connections close after the same time), a head is at most [`MAX_HEAD_BYTES`], a request body
//! may not stall for longer than `REQUEST_BODY_TIMEOUT_SECS`, and a client that takes none of
//! the bytes written to it for `STREAM_IDLE_TIMEOUT_SECS` is disconnected.

pub mod body_timeout;
pub mod open_files;
pub mod peers;
pub mod workers;
pub mod write_timeout;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

use self::body_timeout::ReadTimeoutBody;
use self::peers::{PeerLimit, PeerSlot};
use self::workers::{Dispatched, Handover, Open, Workers};
use self::write_timeout::WriteStallTimeout;
use crate::config::Config;
use crate::http::front_door::Door;
use crate::routes;
use crate::state::AppState;
use crate::telemetry::metrics;

/// How long streams get to write their `shutting_down` event before the server closes.
const FINAL_EVENT_WAIT: Duration = Duration::from_secs(5);

/// The largest request head (request line and headers) read; more gets hyper's bare 431 and
/// the connection is closed.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// What every connection of a listener is served with.
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    header_timeout: Duration,
    body_timeout: Duration,
    body_deadline: Duration,
    /// A client that takes no bytes for this long is disconnected (a stream it stopped reading
    /// would otherwise hold its permit and Dify's worker for ever).
    write_timeout: Duration,
}

impl ConnectionLimits {
    fn from_config(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: config.request_header_timeout,
            body_timeout: config.request_body_timeout,
            body_deadline: config.request_body_deadline,
            write_timeout: config.stream_idle_timeout,
        }
    }
}

/// [`serve_on`], binding `METRICS_ADDR` (when set) itself.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    serve_on(listener, metrics_listener, config, shutdown).await
}

/// Serves until `shutdown` resolves, then drains: probes still answer, no new stream starts,
/// open streams get `SHUTDOWN_GRACE_SECS` to finish, the rest end with `shutting_down`.
/// `metrics_listener` is the bound `METRICS_ADDR`, if any.
pub async fn serve_on(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    metrics::handle();
    let state = AppState::new(config).map_err(std::io::Error::other)?;
    let app = routes::router(state.clone());
    let limits = ConnectionLimits::from_config(&state.config);
    let close = CancellationToken::new();
    if state.config.check_dify_at_start {
        for served in state.apps.iter() {
            let ready = served.clone();
            let check = crate::dify::diagnose::check_until_answered(
                served.dify.clone(),
                routes::health::PROBE_TIMEOUT,
                move |result: Result<(), String>| {
                    ready
                        .readiness
                        .put(result.map_err(|reason| format!("Dify is not usable: {reason}")));
                },
            )
            .instrument(tracing::info_span!("start-up check", app = %served.name));
            let stop = close.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = check => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    }

    if let Some(metrics_listener) = metrics_listener {
        if let Ok(addr) = metrics_listener.local_addr() {
            tracing::info!(%addr, "serving /metrics on its own address");
        }
        let metrics_app = routes::health::metrics_router();
        tokio::spawn(run(
            metrics_listener,
            Serving::new(Served::Metrics(metrics_app), limits, close.clone()),
            None,
            1,
        ));
    }

    let peers = PeerLimit::new(
        state.config.max_connections_per_peer,
        state.config.trusted_proxies.clone(),
    );
    let serving = Serving::new(Served::Api(app), limits, close.clone());
    let mut server = tokio::spawn(run(listener, serving, peers, state.config.worker_threads));

    tokio::select! {
        result = &mut server => return result.map_err(std::io::Error::other),
        () = shutdown => {}
    }

    drain(&state).await;
    CLOSING.store(true, Ordering::Release);
    close.cancel();
    server.await.map_err(std::io::Error::other)
}

/// What a listener serves: the API (its router behind the front door), or `/metrics` alone.
#[derive(Clone)]
enum Served {
    Api(Door<Router>),
    Metrics(Router),
}

/// What every connection of a listener is served with, on whichever worker.
#[derive(Clone)]
struct Serving {
    builder: Arc<http1::Builder>,
    app: Served,
    limits: ConnectionLimits,
    close: CancellationToken,
}

impl Serving {
    fn new(app: Served, limits: ConnectionLimits, close: CancellationToken) -> Serving {
        // HTTP/1.1 only: browsers never speak cleartext HTTP/2 (h2c), and h2c's version sniffing
        // would read the first bytes without the header timeout.
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        Serving {
            builder: Arc::new(builder),
            app,
            limits,
            close,
        }
    }

    fn serve(
        &self,
        connections: &mut JoinSet<()>,
        stream: TcpStream,
        peer: SocketAddr,
        held: (Option<PeerSlot>, Open),
    ) {
        connections.spawn(serve_connection(
            self.builder.clone(),
            stream,
            peer,
            self.app.clone(),
            self.limits,
            self.close.clone(),
            held,
        ));
    }

    /// A worker's loop: serves what it is handed until `close`, then finishes like [`run`].
    async fn serve_handed(self, mut queue: mpsc::UnboundedReceiver<Handover>) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                handover = queue.recv() => match handover {
                    Some(handover) => {
                        if let Some((stream, peer, slot, open)) = workers::receive(handover) {
                            self.serve(&mut connections, stream, peer, (slot, open));
                        }
                    }
                    None => break,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = self.close.cancelled() => break,
            }
        }
        finish(connections).await;
    }
}

/// Accepts connections until `close` is cancelled and spreads them over `worker_threads`
/// runtimes (this one included), then lets each connection finish its current exchange for up
/// to [`FINAL_EVENT_WAIT`] and cuts the rest.
async fn run(
    listener: TcpListener,
    serving: Serving,
    peers: Option<Arc<PeerLimit>>,
    worker_threads: usize,
) {
    let workers = {
        let serving = serving.clone();
        Workers::start(worker_threads, move |queue| {
            serving.clone().serve_handed(queue)
        })
    };
    let mut connections = JoinSet::new();

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = match &peers {
                        Some(peers) => match peers.admit(peer.ip()) {
                            Some(slot) => slot,
                            None => {
                                metrics::rejected("too_many_connections");
                                tracing::debug!(%peer, "too many connections from this peer; closed");
                                continue;
                            }
                        },
                        None => None,
                    };
                    if let Dispatched::Here { stream, slot, open } = workers.dispatch(stream, peer, slot) {
                        serving.serve(&mut connections, stream, peer, (slot, open));
                    }
                }
                Err(e) => on_accept_error(e).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = serving.close.cancelled() => break,
        }
    }
    drop(listener);
    finish(connections).await;
    workers.join().await;
}

async fn finish(mut connections: JoinSet<()>) {
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(FINAL_EVENT_WAIT, finished)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after shutdown; closing them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

async fn serve_connection(
    builder: Arc<http1::Builder>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Served,
    limits: ConnectionLimits,
    close: CancellationToken,
    held: (Option<PeerSlot>, Open),
) {
    let _held = held;
    // Streams are written event by event; never wait to coalesce small writes.
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let app = app.clone();
        // Boxed, so the connection task does not keep the handler's space for as long as a
        // stream lasts: the future ends when the response head is ready.
        Box::pin(async move {
            let mut request = request.map(|body| {
                Body::new(ReadTimeoutBody::new(
                    body,
                    limits.body_timeout,
                    limits.body_deadline,
                ))
            });
            request.extensions_mut().insert(ConnectInfo(peer));
            match app {
                Served::Api(api) => api.oneshot(request).await,
                Served::Metrics(metrics) => metrics.oneshot(request).await,
            }
        })
    });
    let io = TokioIo::new(WriteStallTimeout::new(stream, limits.write_timeout));
    // Boxed: hyper's connection state in an allocation of its own size. Pinned in place, it
    // made the connection task 2.4 KiB; boxed, the task is 1.0 KiB and the box 0.7 KiB
    // (heaptrack, 1,000 held streams).
    let mut connection = Box::pin(builder.serve_connection(io, service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = (Closing { signal: close.cancelled(), armed: None }) => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Set before a server of this process cancels its `close`: from then on every connection
/// polls its close signal again when woken (see [`Closing`]).
static CLOSING: AtomicBool = AtomicBool::new(false);

pin_project! {
    /// A connection's close signal, polled again only when the connection's waker changed or
    /// [`CLOSING`] is set: while it waits, a poll would only register the same waker again
    /// (two locks), on every wake of the connection (every relayed event of a stream).
    struct Closing<F> {
        #[pin]
        signal: F,
        armed: Option<Waker>,
    }
}

impl<F: Future<Output = ()>> Future for Closing<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let armed = this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if armed && !CLOSING.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let polled = this.signal.poll(cx);
        if !armed {
            *this.armed = Some(cx.waker().clone());
        }
        polled
    }
}

/// Per-connection failures are the client's business; anything else (out of file descriptors)
/// gets a pause so the loop does not spin.
async fn on_accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(250)).await;
}

async fn drain(state: &AppState) {
    state.begin_drain();
    let open = state.streams.open();
    tracing::info!(
        open_streams = open,
        grace_secs = state.config.shutdown_grace.as_secs(),
        "shutting down: draining open streams"
    );
    let deadline = tokio::time::Instant::now() + state.config.shutdown_grace;
    while state.streams.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if state.streams.open() > 0 {
        tracing::warn!(
            open_streams = state.streams.open(),
            "grace over: ending open streams"
        );
        crate::dify::relay::end_streams(&state.streams_cancel);
        let deadline = tokio::time::Instant::now() + FINAL_EVENT_WAIT;
        while state.streams.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tracing::info!("drained");
}
