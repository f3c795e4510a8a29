//! `floor-proxy`: the fixed stack (tokio, hyper's HTTP/1 server, an axum `Router`, reqwest)
//! relaying the two benchmarked routes with nothing of dify-bff's own: no identity, no
//! validation, no error normalising, no metrics, no logging, no limits, no timeouts.
//!
//! It is the floor under dify-bff on the same stack: what the stack alone costs per JSON
//! request and per held stream. `bench/README.md` says how to run it next to dify-bff and
//! nginx; it is never a server to deploy.
//!
//! Usage: `floor-proxy LISTEN_ADDR UPSTREAM_BASE KEY`, e.g.
//! `floor-proxy 127.0.0.1:18084 http://127.0.0.1:18081/v1 app-bench`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

struct Floor {
    http: Client,
    conversations: String,
    chat: String,
    auth: HeaderValue,
}

/// The upstream client (`FLOOR_CLIENT`): `reqwest` (the default: the stack the issue fixes) or
/// `hyper` (hyper-util's pooled client, which reqwest drives, used directly: what dify-bff
/// calls a plain-HTTP Dify with).
#[allow(
    clippy::large_enum_variant,
    reason = "one per process; a box would add a hop to the measured path"
)]
enum Client {
    Reqwest(reqwest::Client),
    Hyper(HyperClient<HttpConnector, Full<Bytes>>),
}

impl Client {
    fn from_env() -> Result<Client, String> {
        if std::env::var("FLOOR_CLIENT").as_deref() == Ok("hyper") {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client = HyperClient::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_max_idle_per_host(1024)
                .build(connector);
            return Ok(Client::Hyper(client));
        }
        reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(Client::Reqwest)
            .map_err(|e| e.to_string())
    }
}

/// A call on hyper's client: Dify's answer, or `None` when it failed.
async fn hyper_call(
    http: &HyperClient<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    auth: &HeaderValue,
    body: Option<Bytes>,
) -> Option<axum::http::Response<hyper::body::Incoming>> {
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(url)
        .header(header::AUTHORIZATION, auth.clone());
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(body.unwrap_or_default())).ok()?;
    http.request(request).await.ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, base, key] = args.as_slice() else {
        eprintln!("usage: floor-proxy LISTEN_ADDR UPSTREAM_BASE KEY");
        return ExitCode::from(2);
    };
    let Ok(listen) = listen.parse::<SocketAddr>() else {
        eprintln!("floor-proxy: {listen:?} is not an address");
        return ExitCode::from(2);
    };
    let flavour = Flavour::from_env();
    let result = match flavour {
        Flavour::PerCore(n) => per_core(n, listen, base, key),
        _ => flavour
            .runtime()
            .map_err(|e| format!("cannot start the runtime: {e}"))
            .and_then(|runtime| runtime.block_on(serve(listen, base, key, false))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime, for measuring the stack's own choices (`FLOOR_RUNTIME`, `FLOOR_WORKERS`):
/// `current` (the default: one CPU per proxy in the harness, the scheduler dify-bff runs
/// there), `multi` (tokio's work-stealing pool of `FLOOR_WORKERS` threads) or `percore`
/// (`FLOOR_WORKERS` threads, each a `current_thread` runtime with its own `SO_REUSEPORT`
/// listener and its own upstream pool: nginx's model).
#[derive(Clone, Copy)]
enum Flavour {
    Current,
    Multi(usize),
    PerCore(usize),
}

impl Flavour {
    fn from_env() -> Flavour {
        let workers = std::env::var("FLOOR_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        match std::env::var("FLOOR_RUNTIME").as_deref() {
            Ok("multi") => Flavour::Multi(workers),
            Ok("percore") => Flavour::PerCore(workers),
            _ => Flavour::Current,
        }
    }

    fn runtime(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Flavour::Multi(n) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build(),
            _ => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        }
    }
}

fn per_core(n: usize, listen: SocketAddr, base: &str, key: &str) -> Result<(), String> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (base, key) = (base.to_owned(), key.to_owned());
            std::thread::spawn(move || {
                Flavour::Current
                    .runtime()
                    .map_err(|e| format!("cannot start the runtime: {e}"))
                    .and_then(|runtime| runtime.block_on(serve(listen, &base, &key, true)))
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| "a runtime thread panicked".to_owned())??;
    }
    Ok(())
}

fn bind(listen: SocketAddr, reuse_port: bool) -> Result<TcpListener, String> {
    let socket = match listen {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    if reuse_port {
        socket.set_reuseport(true).map_err(|e| e.to_string())?;
    }
    socket.bind(listen).map_err(|e| e.to_string())?;
    socket.listen(1024).map_err(|e| e.to_string())
}

async fn serve(listen: SocketAddr, base: &str, key: &str, reuse_port: bool) -> Result<(), String> {
    let http = Client::from_env()?;
    let base = base.trim_end_matches('/');
    let floor = Arc::new(Floor {
        http,
        conversations: format!("{base}/conversations?user=floor&limit=20"),
        chat: format!("{base}/chat-messages"),
        auth: HeaderValue::from_str(&format!("Bearer {key}")).map_err(|e| e.to_string())?,
    });
    let app = Router::new()
        .route("/conversations", get(conversations))
        .route("/chat", post(chat))
        .with_state(floor);
    let listener = bind(listen, reuse_port)?;
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    if let Ok(writev) = std::env::var("FLOOR_WRITEV") {
        builder.writev(writev == "1");
    }
    if let Some(max) = std::env::var("FLOOR_MAX_BUF")
        .ok()
        .and_then(|m| m.parse().ok())
    {
        builder.max_buf_size(max);
    }
    let builder = Arc::new(builder);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn conversations(State(floor): State<Arc<Floor>>) -> Response {
    let http = match &floor.http {
        Client::Reqwest(http) => http,
        Client::Hyper(http) => {
            let answer = hyper_call(http, Method::GET, &floor.conversations, &floor.auth, None);
            let Some(answer) = answer.await else {
                return StatusCode::BAD_GATEWAY.into_response();
            };
            let status = answer.status();
            return match answer.into_body().collect().await {
                Ok(body) => json(status, body.to_bytes()),
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            };
        }
    };
    let sent = http
        .get(&floor.conversations)
        .header(header::AUTHORIZATION, floor.auth.clone())
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let status = answer.status();
            match answer.bytes().await {
                Ok(body) => json(status, body),
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn chat(State(floor): State<Arc<Floor>>, request: Request) -> Response {
    let Ok(body) = axum::body::to_bytes(request.into_body(), 1 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let http = match &floor.http {
        Client::Reqwest(http) => http,
        Client::Hyper(http) => {
            let answer = hyper_call(http, Method::POST, &floor.chat, &floor.auth, Some(body));
            return match answer.await {
                Some(answer) => (
                    answer.status(),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::new(answer.into_body()),
                )
                    .into_response(),
                None => StatusCode::BAD_GATEWAY.into_response(),
            };
        }
    };
    let sent = http
        .post(&floor.chat)
        .header(header::AUTHORIZATION, floor.auth.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(answer) => (
            answer.status(),
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(answer.bytes_stream()),
        )
            .into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
