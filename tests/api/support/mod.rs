//! The test harness: the real server on an ephemeral port against the Dify emulator, a client
//! per browser (each with its own cookie jar), and a watch for secrets in every response and
//! log line.

pub mod logs;
pub mod raw;
pub mod redis;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dify_bff::config::Config;
use dify_emulator::{Emulator, EmulatorOptions, Recorded};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The key the proxy holds in tests; it must never reach a browser or a log line.
pub const API_KEY: &str = "app-Te5tKeyNeverShownAnywhere";
/// The key of a second app (tests of several apps); it must never show either.
pub const SECOND_API_KEY: &str = "app-SecondAppKeyNeverShownEither";
/// The cookie-signing secret in tests; it must never show either.
pub const SESSION_SECRET: &str = "test-session-secret-that-is-long-enough-0123456789";

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub emulator: Emulator,
    pub browser: Browser,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// Variables on top of the defaults, as they would be in the environment.
pub type Vars = Vec<(&'static str, String)>;

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(vec![], EmulatorOptions::default()).await
    }

    pub async fn spawn_with_env(vars: Vars) -> TestApp {
        Self::spawn_with(vars, EmulatorOptions::default()).await
    }

    pub async fn spawn_with(vars: Vars, options: EmulatorOptions) -> TestApp {
        Self::spawn_with_config(vars, options, |_| {}).await
    }

    /// Like `spawn_with`, then `adjust` changes the parsed `Config` before the server starts:
    /// timeouts are whole seconds in the environment, so tests set short `Duration`s here.
    pub async fn spawn_with_config(
        vars: Vars,
        options: EmulatorOptions,
        adjust: impl FnOnce(&mut Config),
    ) -> TestApp {
        logs::install();
        let emulator = Emulator::start(EmulatorOptions {
            api_key: API_KEY.to_owned(),
            ..options
        })
        .await
        .expect("emulator starts");
        let mut config = config_for(&emulator.base_url(), vars);
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(dify_bff::serve(listener, config, async move {
            let _ = rx.await;
        }));
        let base = format!("http://{addr}");
        TestApp {
            addr,
            browser: Browser::new(&base),
            base,
            emulator,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Another browser: its own cookie jar, so its own identity.
    pub fn new_browser(&self) -> Browser {
        Browser::new(&self.base)
    }

    /// Starts shutdown (as SIGTERM does) and returns the server task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("server still running")
    }

    /// Requests the emulator received on `path` (e.g. "/v1/chat-messages").
    pub fn upstream_requests(&self, path: &str) -> Vec<Recorded> {
        self.emulator
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Requests the emulator received other than the index.
    pub fn upstream_count(&self) -> usize {
        self.emulator.requests().len()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        logs::assert_no_secret();
    }
}

pub fn config_for(base_url: &str, vars: Vars) -> Config {
    let mut all: Vec<(&'static str, String)> = vec![
        ("DIFY_API_KEY", API_KEY.to_owned()),
        ("DIFY_BASE_URL", base_url.to_owned()),
        ("SESSION_SECRET", SESSION_SECRET.to_owned()),
        ("UPSTREAM_TIMEOUT_SECS", "10".to_owned()),
        ("RATE_LIMIT_PER_MINUTE", "0".to_owned()),
        // Today's stop-at-once behaviour unless a test turns resuming on.
        ("STREAM_RESUME_GRACE_SECS", "0".to_owned()),
    ];
    all.extend(vars);
    Config::from_lookup(
        |name| {
            all.iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        },
        false,
    )
    .expect("test config is valid")
}

/// Fails the test if a secret shows in these bytes.
pub fn assert_no_secret(what: &str, bytes: &[u8]) {
    for secret in [API_KEY, SECOND_API_KEY, SESSION_SECRET, redis::TLS_PASSWORD] {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "a secret appeared in {what}");
    }
}

/// A whole response, already checked for secrets.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub async fn read(response: reqwest::Response) -> TestResponse {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        for (name, value) in &headers {
            assert_no_secret(&format!("header {name}"), value.as_bytes());
        }
        assert_no_secret("a response body", &body);
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts our error shape with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "status; body: {}",
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "errors are JSON"
        );
        let body = self.json();
        assert_eq!(body["code"], code, "code; body: {body}");
        assert_eq!(body["status"], status, "status field; body: {body}");
        assert!(body["message"].is_string(), "message; body: {body}");
    }
}

/// One browser: a cookie-keeping client.
#[derive(Clone)]
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        Browser {
            base: base.to_owned(),
            client,
            jar,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder) -> TestResponse {
        TestResponse::read(builder.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.send(
            self.request(Method::DELETE, path)
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await
    }

    /// `POST /chat`, read to the end.
    pub async fn chat(&self, body: &Value) -> TestResponse {
        self.post_json("/chat", body).await
    }

    /// `POST /chat` blocking; returns the answer JSON.
    pub async fn chat_blocking(&self, query: &str, conversation_id: &str) -> Value {
        let res = self
            .chat(&serde_json::json!({"query": query, "conversation_id": conversation_id, "response_mode": "blocking"}))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json()
    }

    /// `POST /chat` streaming, left open for the caller to read.
    pub async fn chat_stream(&self, body: &Value) -> reqwest::Response {
        self.request(Method::POST, "/chat")
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

/// Reads a streaming response to its end, chunk by chunk, checking each for secrets.
pub async fn read_stream(mut response: reqwest::Response) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("stream readable") {
        all.extend_from_slice(&chunk);
    }
    assert_no_secret("a stream", &all);
    all
}

/// The `data:` JSON of each event in an SSE body.
pub fn sse_events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
        })
        .collect()
}

/// A capture file's bytes, from `tests/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// The de-chunked body of a capture's response.
pub fn fixture_body(name: &str) -> Vec<u8> {
    let reply = dify_emulator::Reply::from_capture(&fixture(name)).expect("capture parses");
    reply
        .steps
        .iter()
        .filter_map(|s| match s {
            dify_emulator::Step::Send(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Variables for `spawn_with_env`, from string pairs.
pub fn vars(pairs: &[(&'static str, &str)]) -> Vars {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// Waits until `check` holds, failing the test after `within`.
pub async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /usage` for this browser's identity.
pub async fn usage(browser: &Browser) -> Value {
    let res = browser.get("/usage").await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

/// Tokens used today by this browser's identity, once they reach `at_least` (within 3 s).
pub async fn tokens_counted(browser: &Browser, at_least: u64) -> u64 {
    eventually(
        "the tokens are counted",
        Duration::from_secs(3),
        async || usage(browser).await["tokens_used"].as_u64() >= Some(at_least),
    )
    .await;
    usage(browser).await["tokens_used"].as_u64().unwrap_or(0)
}

/// POSTs `body` to `path` and leaves after `after`, before any answer has come.
pub async fn leave_early(browser: &Browser, path: &str, body: &Value, after: Duration) {
    let left = browser
        .request(reqwest::Method::POST, path)
        .json(body)
        .timeout(after)
        .send()
        .await;
    assert!(
        left.is_err_and(|e| e.is_timeout()),
        "the client left before the answer"
    );
}

/// A blocking `POST /chat` body.
pub fn blocking(query: &str) -> Value {
    json!({"query": query, "response_mode": "blocking"})
}

/// What Dify >= 1.4 answers `GET /site` for an app with no site row (dify-protocol.md §10.4).
pub fn no_site_row() -> dify_emulator::Reply {
    dify_emulator::Reply::json(
        403,
        &serde_json::json!({"code": "forbidden", "message": "You don't have the permission to access the requested resource. It is either read-protected or not readable by the server.", "status": 403}),
    )
}

/// Dify's chat stream of one piece and a `message_end` that spent `spent` tokens, its headers
/// and first event sent only after `first_byte_after` (as Dify sends them: at the first token).
pub fn late_answer(first_byte_after: Duration, spent: u64) -> dify_emulator::Reply {
    let envelope = |name: &str| {
        json!({"event": name, "conversation_id": "7f1c2a3b-0000-4000-8000-00000000c001",
               "message_id": "7f1c2a3b-0000-4000-8000-00000000d001", "created_at": 1_700_000_000,
               "task_id": "7f1c2a3b-0000-4000-8000-00000000a001",
               "id": "7f1c2a3b-0000-4000-8000-00000000d001"})
    };
    let mut piece = envelope("message");
    piece["answer"] = json!("A long and expensive answer.");
    let mut end = envelope("message_end");
    end["metadata"] = json!({"usage": {"prompt_tokens": 34, "completion_tokens": spent - 34, "total_tokens": spent}});
    let event = |v: &Value| bytes::Bytes::from(format!("data: {v}\n\n"));
    let mut reply = dify_emulator::Reply::sse(vec![event(&piece), event(&end)]);
    reply
        .steps
        .insert(0, dify_emulator::Step::Pause(first_byte_after));
    reply
}

/// Fails the test if the emulator received any request.
pub fn assert_nothing_reached_dify(app: &TestApp) {
    let received = app.emulator.requests();
    assert!(
        received.is_empty(),
        "Dify received {:?}",
        received
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
}

/// The proxy's own origin, as a browser on its page sends it.
pub fn own_origin(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

/// A CORS preflight for `POST /chat` from `origin`.
pub fn preflight(app: &TestApp, origin: &str) -> reqwest::RequestBuilder {
    app.browser
        .request(Method::OPTIONS, "/chat")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
}
