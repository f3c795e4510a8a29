//! The documented nginx + oauth2-proxy server block (`deploy/nginx-oauth2-proxy.conf`, included
//! verbatim in docs/deploy.md), run by Debian's nginx in front of dify-bff in header mode, with
//! a stand-in for oauth2-proxy's `/oauth2/auth` (401 unless a `_oauth2_proxy` cookie names a
//! user). Without nginx these tests print a loud skip, unless `CI=true`, where they fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use dify_emulator::EmulatorOptions;
use serde_json::json;

use crate::support::{TestApp, assert_nothing_reached_dify, read_stream, sse_events, vars};

const CONFIG: &str = include_str!("../../deploy/nginx-oauth2-proxy.conf");
const AUTH_COOKIE: &str = "_oauth2_proxy";

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// dify-bff in header mode behind the documented nginx, with the stand-in oauth2-proxy.
struct Fronted {
    app: TestApp,
    nginx: NginxProcess,
    client: reqwest::Client,
}

struct NginxProcess {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl NginxProcess {
    /// nginx's warnings and errors so far (its log is at `info`).
    fn complaints(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                ["[warn]", "[error]", "[crit]", "[alert]", "[emerg]"]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fronted {
    async fn start() -> Option<Fronted> {
        let Some(nginx) = nginx_binary() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "nginx is required in CI (apt-get install -y nginx-light)"
            );
            eprintln!(
                "\n\n*** SKIPPED: nginx tests need Debian's nginx (apt-get install -y nginx-light) ***\n\n"
            );
            return None;
        };
        let app = TestApp::spawn_with(
            vars(&[
                ("USER_HEADER", "X-Auth-Request-User"),
                ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ]),
            EmulatorOptions::default(),
        )
        .await;
        let auth = start_stand_in_oauth2_proxy().await;
        let nginx = start_nginx(&nginx, app.addr, auth);
        wait_until_listening(nginx.addr).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Some(Fronted { app, nginx, client })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.nginx.addr)
    }

    fn signed_in(&self, builder: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
        builder.header("cookie", format!("{AUTH_COOKIE}={user}"))
    }
}

/// oauth2-proxy's `/oauth2/auth` as nginx sees it: 202 with `X-Auth-Request-User` for a
/// signed-in browser, 401 otherwise.
async fn start_stand_in_oauth2_proxy() -> SocketAddr {
    async fn auth(headers: HeaderMap) -> axum::response::Response {
        let user = headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                c.trim()
                    .strip_prefix(&format!("{AUTH_COOKIE}="))
                    .map(str::to_owned)
            });
        match user {
            Some(user) if !user.is_empty() => {
                (StatusCode::ACCEPTED, [("x-auth-request-user", user)]).into_response()
            }
            _ => StatusCode::UNAUTHORIZED.into_response(),
        }
    }
    let router = axum::Router::new()
        .route("/oauth2/auth", get(auth))
        .route("/oauth2/start", get(|| async { "sign in here" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The documented file with only the addresses changed, asserting each change took place (so
/// the test follows the file, not a copy of it).
fn site_config(listen: SocketAddr, bff: SocketAddr, auth: SocketAddr) -> String {
    let replace = |text: String, from: &str, to: &str| {
        assert!(text.contains(from), "the documented config has no `{from}`");
        text.replace(from, to)
    };
    let text = replace(
        CONFIG.to_owned(),
        "listen 443 ssl http2;",
        &format!("listen {listen};"),
    );
    let text = replace(text, "server 127.0.0.1:3000;", &format!("server {bff};"));
    let text = replace(text, "server 127.0.0.1:4180;", &format!("server {auth};"));
    text.lines()
        .filter(|line| !line.trim_start().starts_with("ssl_certificate"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn start_nginx(nginx: &Path, bff: SocketAddr, auth: SocketAddr) -> NginxProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = std::env::temp_dir().join(format!("dify-bff-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    std::fs::write(dir.join("site.conf"), site_config(addr, bff, auth)).unwrap();
    let main = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
         scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let check = Command::new(nginx)
        .args(["-t", "-p"])
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx refused the documented config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    NginxProcess { child, addr, dir }
}

async fn wait_until_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nginx did not start on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_anonymous_chat_naming_another_user_gets_401_and_never_reaches_dify() {
    let Some(front) = Fronted::start().await else {
        return;
    };
    let res = front
        .client
        .post(front.url("/chat"))
        .header("x-auth-request-user", "bob")
        .json(&json!({"query": "write into bob's history"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_nothing_reached_dify(&front.app);
}

#[tokio::test]
async fn every_api_route_needs_sign_in() {
    let Some(front) = Fronted::start().await else {
        return;
    };
    for (method, path) in [
        ("GET", "/conversations"),
        ("GET", "/messages?conversation_id=x"),
        ("POST", "/chat/task-1/stop"),
        ("DELETE", "/conversations/c-1"),
        ("POST", "/conversations/c-1/name"),
        ("POST", "/messages/m-1/feedbacks"),
        ("POST", "/files/upload"),
        ("GET", "/parameters"),
        ("GET", "/app.css"),
    ] {
        let res = front
            .client
            .request(method.parse().unwrap(), front.url(path))
            .header("x-auth-request-user", "bob")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
    }
    assert_nothing_reached_dify(&front.app);
}

#[tokio::test]
async fn a_signed_in_chat_streams_as_the_signed_in_user_not_the_header_sent() {
    let Some(front) = Fronted::start().await else {
        return;
    };
    let res = front
        .signed_in(front.client.post(front.url("/chat")), "alice")
        .header("x-auth-request-user", "bob")
        .json(&json!({"query": "hello through nginx"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&read_stream(res).await);
    assert_eq!(events.last().unwrap()["event"], "message_end");
    let sent = front.app.upstream_requests("/v1/chat-messages");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].user().as_deref(), Some("alice"));
}

#[tokio::test]
async fn an_upload_just_under_max_upload_bytes_reaches_dify_bff_not_an_nginx_413() {
    let Some(front) = Fronted::start().await else {
        return;
    };
    let size = 15 * 1024 * 1024 - 4096;
    let part = reqwest::multipart::Part::bytes(vec![b'a'; size])
        .file_name("notes.txt")
        .mime_str("text/plain")
        .unwrap();
    let res = front
        .signed_in(front.client.post(front.url("/files/upload")), "alice")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{status} {content_type}"
    );
    assert!(
        !front.app.upstream_requests("/v1/files/upload").is_empty(),
        "the upload reached Dify ({status})"
    );
}

#[tokio::test]
async fn probes_answer_without_sign_in_and_metrics_stay_private() {
    let Some(front) = Fronted::start().await else {
        return;
    };
    let health = front
        .client
        .get(front.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = front.client.get(front.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = front
        .signed_in(front.client.get(front.url("/metrics")), "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 404);
    assert_eq!(front.nginx.complaints(), Vec::<String>::new());
}

#[tokio::test]
async fn the_page_sends_a_signed_out_browser_to_sign_in() {
    let Some(front) = Fronted::start().await else {
        return;
    };
    let res = front.client.get(front.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap();
    assert!(location.ends_with("/oauth2/start?rd=/"), "{location}");
    let page = front
        .signed_in(front.client.get(front.url("/")), "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
}

#[test]
fn the_deploy_docs_show_the_tested_config_verbatim() {
    let docs = include_str!("../../docs/deploy.md");
    assert!(
        docs.contains(&format!("```nginx\n{CONFIG}```")),
        "docs/deploy.md must include deploy/nginx-oauth2-proxy.conf verbatim"
    );
}
