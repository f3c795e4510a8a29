//! The chat page in real headless Chromium, driven over WebDriver (fantoccini + Debian's
//! chromedriver) against the real server and the Dify emulator.
//!
//! One chromedriver serves the whole test binary. Starting Chromium costs more than most tests,
//! so sessions (each with a fresh profile, 1280×900) are pooled: a test takes one, and gives it
//! back with its cookies cleared when it passes (a failing test closes its session). The phone
//! test emulates a 360×740 touch screen on a pooled session. Every test gets its own server and
//! Dify emulator. Without Chromium the tests print a loud skip, unless `CI=true`, where they
//! fail. Screenshots land in `target/screenshots/`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::TestApp;
use bytes::Bytes;
use dify_emulator::{EmulatorOptions, Recorded, Reply, Step};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

mod accessibility;
mod branding;
mod embed;
mod language;
mod sources;
mod voice;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The browser itself: Debian's `/usr/bin/chromium` is a shell wrapper that adds desktop flags
/// (extension loading, GPU rasterization) that only cost time in a headless test.
const CHROMIUM_BINARY: &str = "/usr/lib/chromium/chromium";
/// How long any single expectation may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

// ---- chromedriver and Chromium, shared by the whole test binary -------------------------------

struct Driver {
    url: String,
    /// A scratch folder for this test binary: Chromium profiles and test files live below it.
    scratch: PathBuf,
    /// The watchdog shell reads this pipe; when the test binary exits the pipe closes, and the
    /// watchdog stops chromedriver (and the browsers it started) and removes the scratch folder.
    _lifeline: Mutex<ChildStdin>,
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();

/// Sessions not in use. Starting Chromium is the slowest step, so a session is reused by the next
/// test (after its cookies are cleared); a test that fails closes its session.
static POOL: Mutex<Vec<Client>> = Mutex::new(Vec::new());

/// Sessions outlive a single test's runtime, so their WebDriver connection tasks run here.
fn session_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("webdriver")
            .enable_all()
            .build()
            .expect("webdriver runtime")
    })
}

fn browser_installed() -> bool {
    Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn start_driver() -> Result<Driver, String> {
    let port = free_port();
    let scratch = std::env::temp_dir().join(format!("dify-bff-browser-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("scratch dir: {e}"))?;
    let mut child = Command::new("sh")
        .args([
            "-c",
            r#""$0" --port="$1" --allowed-ips=127.0.0.1 --log-level=SEVERE </dev/null >/dev/null 2>&1 &
               driver=$!
               cat >/dev/null
               for browser in $(pgrep -P "$driver"); do kill "$browser" 2>/dev/null; done
               kill "$driver" 2>/dev/null
               sleep 1
               rm -rf "$2""#,
            CHROMEDRIVER,
            &port.to_string(),
            &scratch.display().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {CHROMEDRIVER}: {e}"))?;
    let lifeline = child.stdin.take().expect("piped stdin");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{CHROMEDRIVER} did not listen on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Driver {
        url: format!("http://{addr}"),
        scratch,
        _lifeline: Mutex::new(lifeline),
    })
}

/// The shared chromedriver, or `None` (after a loud notice) when Chromium is not installed.
fn driver(test: &str) -> Option<&'static Driver> {
    if !browser_installed() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true but {CHROMEDRIVER} / {CHROMIUM} are missing: apt-get install -y chromium chromium-driver"
            );
        }
        let bar = "!".repeat(78);
        eprintln!(
            "\n{bar}\n!!! SKIPPED browser test `{test}`: {CHROMEDRIVER} or {CHROMIUM} not installed.\n\
             !!! The chat page was NOT tested. Install: apt-get install -y chromium chromium-driver\n{bar}\n"
        );
        return None;
    }
    match DRIVER.get_or_init(start_driver) {
        Ok(driver) => Some(driver),
        Err(e) => panic!("{e}"),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Viewport {
    Desktop,
    Phone,
}

/// A new Chromium session with a fresh profile and a 1280×900 viewport.
async fn new_session(driver: &Driver) -> Client {
    let profile = driver
        .scratch
        .join(format!("profile-{}", uuid::Uuid::new_v4()));
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        // Less work per browser start (each flag measured to help or to be free).
        "--no-default-browser-check",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-client-side-phishing-detection",
        "--disable-domain-reliability",
        "--disable-breakpad",
        "--disable-hang-monitor",
        "--disable-site-isolation-trials",
        "--metrics-recording-only",
        "--mute-audio",
        // Answers read aloud as they stream (TTS auto-play) start without a click of their own.
        "--autoplay-policy=no-user-gesture-required",
        // A fake microphone that needs no permission prompt (the voice tests record from it).
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--password-store=basic",
        // The omnibox popup is a hidden WebUI page that keeps a renderer busy in headless mode.
        "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup,Translate,MediaRouter,\
         OptimizationHints,IsolateOrigins,site-per-process,BackForwardCache",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--incognito",
        "--in-process-gpu",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.display()));
    let binary = if Path::new(CHROMIUM_BINARY).exists() {
        CHROMIUM_BINARY
    } else {
        CHROMIUM
    };
    args.push("--window-size=1280,900".to_owned());
    let options = json!({"binary": binary, "args": args});
    let mut caps = fantoccini::wd::Capabilities::new();
    caps.insert("browserName".to_owned(), json!("chrome"));
    caps.insert("goog:chromeOptions".to_owned(), options);
    let url = driver.url.clone();
    let c = session_runtime()
        .spawn(async move {
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await
        })
        .await
        .expect("session task")
        .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}"));
    // --window-size is the outer size; make the viewport itself 1280×900.
    let inner = c
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .expect("viewport size");
    let (w, h) = (
        inner[0].as_u64().unwrap_or(1280),
        inner[1].as_u64().unwrap_or(900),
    );
    if (w, h) != (1280, 900) {
        let (ow, oh) = c.get_window_size().await.expect("window size");
        let width = (ow + 1280).saturating_sub(w) as u32;
        let height = (oh + 900).saturating_sub(h) as u32;
        c.set_window_size(width, height).await.expect("resize");
    }
    c
}

/// A DevTools command through chromedriver's `goog/cdp/execute` endpoint.
async fn cdp(driver: &Driver, c: &Client, cmd: &str, params: Value) -> Result<Value, String> {
    let session = c
        .session_id()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no session id")?;
    let response = reqwest::Client::new()
        .post(format!("{}/session/{session}/goog/cdp/execute", driver.url))
        .json(&json!({"cmd": cmd, "params": params}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if ok {
        Ok(body)
    } else {
        Err(format!("{cmd}: {body}"))
    }
}

/// Chromium windows are at least 500 px wide, so a phone is emulated: viewport and touch.
async fn emulate_phone(driver: &Driver, c: &Client, on: bool) -> Result<(), String> {
    if on {
        cdp(
            driver,
            c,
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": true,
            }),
        )
        .await?;
        cdp(
            driver,
            c,
            "Emulation.setTouchEmulationEnabled",
            json!({"enabled": true, "maxTouchPoints": 5}),
        )
        .await?;
    } else {
        cdp(driver, c, "Emulation.clearDeviceMetricsOverride", json!({})).await?;
        cdp(
            driver,
            c,
            "Emulation.setTouchEmulationEnabled",
            json!({"enabled": false}),
        )
        .await?;
    }
    Ok(())
}

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

struct Page {
    c: Client,
    app: TestApp,
    /// A folder for the test's own files (e.g. an image to attach).
    scratch: PathBuf,
}

/// Starts the app, takes a browser session from the pool (or starts one), opens the page, runs
/// `body`, and then returns the session to the pool, or closes it when `body` panicked (the panic
/// is resumed).
async fn run(test: &str, view: Viewport, options: EmulatorOptions, body: impl AsyncFnOnce(&Page)) {
    run_on(test, view, TestApp::spawn_with(vec![], options), body).await;
}

/// `run` with these variables set on the server.
async fn run_with_env(
    test: &str,
    view: Viewport,
    vars: crate::support::Vars,
    options: EmulatorOptions,
    body: impl AsyncFnOnce(&Page),
) {
    run_on(test, view, TestApp::spawn_with(vars, options), body).await;
}

/// Like [`run`], against the server `spawn` starts (e.g. one with several apps).
async fn run_on(
    test: &str,
    view: Viewport,
    spawn: impl Future<Output = TestApp>,
    body: impl AsyncFnOnce(&Page),
) {
    let Some(driver) = driver(test) else {
        return;
    };
    let app = spawn.await;
    let pooled = POOL.lock().expect("pool").pop();
    let c = match pooled {
        Some(c) => c,
        None => new_session(driver).await,
    };
    let scratch = driver
        .scratch
        .join(format!("{test}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch).expect("test scratch dir");
    let page = Page { c, app, scratch };
    let outcome = AssertUnwindSafe(async {
        if view == Viewport::Phone {
            emulate_phone(driver, &page.c, true)
                .await
                .expect("phone emulation");
        }
        page.open().await;
        body(&page).await;
        if view == Viewport::Phone {
            emulate_phone(driver, &page.c, false)
                .await
                .expect("end phone emulation");
        }
    })
    .catch_unwind()
    .await;
    let Page { c, app, scratch } = page;
    let _ = std::fs::remove_dir_all(&scratch);
    // Cookies are per host, not per port: clear them so the next test starts as a stranger.
    if outcome.is_ok() && c.delete_all_cookies().await.is_ok() {
        POOL.lock().expect("pool").push(c);
    } else {
        let _ = c.close().await;
    }
    drop(app);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Page {
    /// Loads the page and waits until boot has applied `/info`, `/parameters` and the list.
    async fn open(&self) {
        self.c.goto(&self.app.base).await.expect("page loads");
        self.until("document.title !== 'Chat'", "the page to boot")
            .await;
    }

    async fn reload(&self) {
        self.c.refresh().await.expect("reload");
        self.until("document.title !== 'Chat'", "the page to boot again")
            .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.c
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {script}: {e}"))
    }

    /// Polls the JS expression until it is truthy.
    async fn until(&self, expr: &str, what: &str) {
        // One WebDriver command that polls inside the page: far cheaper than a command per poll.
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const end = Date.now() + {ms};
             (function tick() {{
               let ok = false;
               try {{ ok = !!({expr}); }} catch (e) {{ ok = false; }}
               if (ok || Date.now() > end) done(ok); else setTimeout(tick, 10);
             }})();",
            ms = PATIENCE.as_millis()
        );
        let ok = self
            .c
            .execute_async(&script, vec![])
            .await
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
        assert_eq!(
            ok,
            Value::Bool(true),
            "timed out waiting for {what} ({expr})"
        );
    }

    async fn find(&self, css: &str) -> Element {
        self.until(
            &format!("document.querySelector({})", json!(css)),
            &format!("an element {css}"),
        )
        .await;
        self.c
            .wait()
            .at_most(Duration::from_secs(2))
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn count(&self, css: &str) -> usize {
        self.c
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .len()
    }

    async fn text_of(&self, css: &str) -> String {
        let v = self
            .js(&format!(
                "const e = document.querySelector({}); return e ? e.textContent : null;",
                json!(css)
            ))
            .await;
        v.as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types into the message box and presses the send button.
    async fn send(&self, text: &str) {
        let composer = self.find("#composer").await;
        composer.send_keys(text).await.expect("type a message");
        self.click("#send").await;
    }

    async fn wait_idle(&self) {
        self.until(
            "document.body.dataset.state === 'idle'",
            "the answer to end",
        )
        .await;
    }

    /// The first request the emulator got (or gets) that matches.
    async fn upstream(&self, what: &str, pred: impl Fn(&Recorded) -> bool) -> Recorded {
        self.app
            .emulator
            .wait_for_request(pred, PATIENCE)
            .await
            .unwrap_or_else(|| panic!("Dify never received {what}"))
    }

    /// The ids of the conversations in the sidebar, top first.
    async fn conversation_ids(&self) -> Vec<String> {
        let v = self
            .js("return [...document.querySelectorAll('#conversation-list li.conversation')].map(li => li.dataset.id);")
            .await;
        serde_json::from_value(v).expect("ids")
    }

    /// Whether the element exists and is rendered visibly (not `display: none`, not
    /// `visibility: hidden`, not zero-sized): one command instead of WebDriver's display atom.
    async fn visible(&self, css: &str) -> bool {
        let script = format!(
            "const e = document.querySelector({});
             if (!e) return false;
             const r = e.getBoundingClientRect();
             return e.checkVisibility({{visibilityProperty: true}}) && r.width > 0 && r.height > 0;",
            json!(css)
        );
        self.js(&script).await == Value::Bool(true)
    }

    /// The conversations Dify holds for this browser's identity, asked through the proxy with the
    /// browser's own (HttpOnly) cookie.
    async fn upstream_conversations(&self) -> Vec<Value> {
        let cookies = self.c.get_all_cookies().await.expect("cookies");
        let header = cookies
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ");
        let res = reqwest::Client::new()
            .get(format!("{}/conversations?limit=100", self.app.base))
            .header("cookie", header)
            .send()
            .await
            .expect("list conversations");
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.expect("json");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.c.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

// ---- helpers ------------------------------------------------------------------------------

fn chat_request(r: &Recorded) -> bool {
    r.method == "POST" && r.path == "/v1/chat-messages"
}

fn options() -> EmulatorOptions {
    EmulatorOptions {
        token_interval: Duration::from_millis(5),
        ..EmulatorOptions::default()
    }
}

/// An SSE-B event (compact JSON, raw UTF-8), as Dify ≥ 1.8.1 writes it.
fn sse_b(v: &Value) -> String {
    format!("data: {}\n\n", serde_json::to_string(v).expect("json"))
}

/// A scripted streamed answer: `pieces` as `message` events, then `message_end` with usage.
fn scripted_answer(conversation_id: &str, pieces: &[&str]) -> String {
    let ids = json!({
        "conversation_id": conversation_id,
        "message_id": uuid::Uuid::new_v4().to_string(),
        "task_id": uuid::Uuid::new_v4().to_string(),
    });
    let with = |extra: Value| {
        let mut v = ids.clone();
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        sse_b(&v)
    };
    let mut body = String::new();
    for piece in pieces {
        body.push_str(&with(json!({"event": "message", "answer": piece})));
    }
    body.push_str(&with(json!({"event": "message_end", "metadata": {
        "usage": {"total_tokens": 128, "latency": 0.84}
    }})));
    body
}

/// Cut offsets 1, 2, 3, 1, 2, 3… bytes apart, up to `len`.
fn cuts_every_1_to_3(len: usize) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut at = 0;
    for step in [1, 2, 3].into_iter().cycle() {
        at += step;
        if at >= len {
            break;
        }
        cuts.push(at);
    }
    cuts
}

/// A small RGB PNG (a diagonal gradient), encoded with stored deflate blocks.
fn png(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend([
                (40 + x * 200 / width) as u8,
                (90 + y * 120 / height) as u8,
                230,
            ]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

// ---- tests --------------------------------------------------------------------------------

#[tokio::test]
async fn utf8_split_across_network_chunks_renders_exactly() {
    let pieces = [
        "Dify 是一个平台 🚀 — ",
        "ünïcödé ",
        "日本語のテキスト、",
        "Ελληνικά, ",
        "العربية, ",
        "👩‍👩‍👧‍👦 family ✓",
    ];
    let expected: String = pieces.concat();
    run("utf8_split", Viewport::Desktop, options(), async |p| {
        let conversation = uuid::Uuid::new_v4().to_string();
        let body = scripted_answer(&conversation, &pieces);
        let cuts = cuts_every_1_to_3(body.len());
        assert!(
            cuts.iter().any(|&c| !body.is_char_boundary(c)),
            "some cuts fall inside a UTF-8 character"
        );
        let reply = Reply::sse(vec![Bytes::from(body)]).rechunk_at(&cuts);
        p.app.emulator.script("POST", "/chat-messages", reply);

        p.send("Say something in many scripts").await;
        p.wait_idle().await;
        p.find(".message.assistant[data-message-id] .usage").await;
        let answer = p.text_of(".message.assistant .answer").await;
        assert_eq!(answer.trim(), expected, "the streamed answer differs");
        let page = p.js("return document.body.innerText;").await;
        assert!(
            !page.as_str().unwrap_or_default().contains('\u{FFFD}'),
            "a replacement character (U+FFFD) is on the page"
        );
    })
    .await;
}

#[tokio::test]
async fn answer_with_html_and_script_runs_nothing() {
    let payload = [
        "Look: <img src=x onerror=\"window.__pwned='img'\"> ",
        "and <script>window.__pwned='script'</script> ",
        "<svg onload=\"window.__pwned='svg'\"></svg> ",
        "[click](javascript:window.__pwned='link') ",
        "![pic](x\" onerror=\"window.__pwned='md-img') ",
        "<iframe src=\"javascript:parent.__pwned='iframe'\"></iframe>",
    ];
    run("html_injection", Viewport::Desktop, options(), async |p| {
        let body = scripted_answer(&uuid::Uuid::new_v4().to_string(), &payload);
        let reply = Reply::sse(vec![Bytes::from(body)]);
        p.app.emulator.script("POST", "/chat-messages", reply);
        p.send("Show me some HTML").await;
        p.wait_idle().await;
        p.find(".message.assistant[data-message-id] .usage").await;
        // Give an image error or a load handler the moment it would need to fire.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(p.js("return typeof window.__pwned;").await, "undefined");
        let injected = p
            .count(
                ".answer img, .answer script, .answer svg, .answer iframe, .answer [onerror], \
                 .answer [onload], .answer a[href^='javascript']",
            )
            .await;
        assert_eq!(injected, 0, "markup from the answer reached the DOM");
        let text = p.text_of(".message.assistant .answer").await;
        assert!(
            text.contains("<img src=x onerror=") && text.contains("<script>"),
            "the markup is shown as text: {text}"
        );
    })
    .await;
}

#[tokio::test]
async fn stop_mid_stream_returns_to_idle_and_stops_dify() {
    let opts = EmulatorOptions {
        slow_interval: Duration::from_millis(150),
        ..options()
    };
    run("stop", Viewport::Desktop, opts, async |p| {
        p.send("SLOW please").await;
        assert_eq!(
            p.js("return document.body.dataset.state;").await,
            "streaming"
        );
        p.until(
            "document.querySelector('.message.assistant .answer').textContent.includes('slow1')",
            "the first pieces",
        )
        .await;
        p.click("#stop").await;
        p.wait_idle().await;
        let stop = p
            .upstream("a stop request", |r| {
                r.method == "POST"
                    && r.path.starts_with("/v1/chat-messages/")
                    && r.path.ends_with("/stop")
            })
            .await;
        assert_eq!(stop.path.split('/').count(), 5, "{}", stop.path);
        assert!(
            p.visible(".message.assistant .note").await,
            "a stopped note"
        );
        let shown = p.text_of(".message.assistant .answer").await;
        assert!(
            !shown.contains("slow29"),
            "the answer kept streaming: {shown}"
        );
        assert!(p.visible("#send").await && !p.visible("#stop").await);
        assert_eq!(
            p.js("return document.getElementById('composer').disabled;")
                .await,
            false
        );
    })
    .await;
}

/// A TCP relay in front of the server whose `cut` drops every connection open at that moment,
/// as a network blip does; later connections pass.
struct CuttingProxy {
    base: String,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl CuttingProxy {
    async fn start(target: SocketAddr) -> CuttingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let watch = cuts.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = watch.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        CuttingProxy { base, cuts }
    }

    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn a_network_drop_mid_answer_is_resumed_without_a_lost_or_repeated_token() {
    let pieces: Vec<String> = (0..12).map(|i| format!("piece{i:02} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let expected = pieces.concat();
    let vars = crate::support::vars(&[("STREAM_RESUME_GRACE_SECS", "30")]);
    run_with_env("resume", Viewport::Desktop, vars, options(), async |p| {
        let body = scripted_answer(&uuid::Uuid::new_v4().to_string(), &pieces);
        let mut steps = Vec::new();
        for event in body.split_inclusive("\n\n") {
            steps.push(Step::Pause(Duration::from_millis(150)));
            steps.push(Step::Send(Bytes::from(event.to_owned())));
        }
        let reply = Reply {
            steps,
            ..Reply::sse(Vec::new())
        };
        p.app.emulator.script("POST", "/chat-messages", reply);
        let proxy = CuttingProxy::start(p.app.addr).await;
        p.c.goto(&proxy.base).await.expect("page loads through the proxy");
        p.until("document.title !== 'Chat'", "the page to boot").await;

        p.send("Tell me a long story").await;
        p.until(
            "document.querySelector('.message.assistant .answer').textContent.includes('piece02')",
            "the first pieces",
        )
        .await;
        proxy.cut();
        p.wait_idle().await;
        p.find(".message.assistant[data-message-id] .usage").await;
        let answer = p.text_of(".message.assistant .answer").await;
        assert_eq!(answer.trim(), expected.trim(), "every piece once, in order");
        assert_eq!(p.count(".message.assistant .reconnecting").await, 0);
        assert_eq!(p.count(".message.assistant .error").await, 0);
        let resumed = p
            .js("return performance.getEntriesByType('resource').filter((e) => e.name.includes('/chat/streams/')).length;")
            .await;
        assert!(resumed.as_u64().unwrap_or(0) >= 1, "the page resumed the stream");
        let chats = p.app.emulator.requests().into_iter().filter(chat_request).count();
        assert_eq!(chats, 1, "one generation");
        assert!(
            p.app.emulator.requests().iter().all(|r| !r.path.ends_with("/stop")),
            "Dify was not stopped"
        );
    })
    .await;
}

#[tokio::test]
async fn history_is_shown_after_reload() {
    run("history", Viewport::Desktop, options(), async |p| {
        let query = "Remember the word pineapple";
        p.send(query).await;
        p.wait_idle().await;
        let message_id = p
            .find(".message.assistant[data-message-id]")
            .await
            .attr("data-message-id")
            .await
            .unwrap()
            .unwrap();
        let answer = p.text_of(".message.assistant .answer").await;
        assert!(!answer.trim().is_empty());

        p.open().await;
        assert_eq!(
            p.count(".message").await,
            0,
            "the page's own address starts a new chat"
        );
        p.click("#conversation-list li.conversation .conversation-title")
            .await;
        p.find(&format!(
            ".message.assistant[data-message-id='{message_id}']"
        ))
        .await;
        assert_eq!(p.text_of(".message.user").await.trim(), query);
        assert_eq!(p.text_of(".message.assistant .answer").await, answer);
        assert_eq!(p.count(".message").await, 2);
    })
    .await;
}

/// Sends a first message and waits until the page has Dify's auto-generated title, so no
/// background title update races what the test does next. Returns the conversation id.
async fn conversation_with_title(p: &Page, query: &str) -> String {
    p.send(query).await;
    p.wait_idle().await;
    p.until(
        "performance.getEntriesByType('resource').some(e => e.name.endsWith('/name') && e.responseEnd > 0)",
        "the auto-title answer",
    )
    .await;
    let ids = p.conversation_ids().await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

#[tokio::test]
async fn rename_inline_updates_the_list_and_dify() {
    run("rename", Viewport::Desktop, options(), async |p| {
        let id = conversation_with_title(p, "Plan a weekend in Lisbon").await;
        let li = format!("#conversation-list li.conversation[data-id='{id}']");
        p.click(&format!("{li} .rename")).await;
        let input = p.find(&format!("{li} input.rename-input")).await;
        assert_eq!(
            p.js("return document.activeElement.classList.contains('rename-input');")
                .await,
            true,
            "the name field has focus"
        );
        input
            .send_keys(&format!("Lisbon trip{}", &*Key::Enter))
            .await
            .expect("type the name");
        p.until(
            &format!(
                "document.querySelector(\"{li} .conversation-title\")?.textContent === 'Lisbon trip'"
            ),
            "the new title in the list",
        )
        .await;
        let rename = p
            .upstream("the rename", |r| {
                r.path == format!("/v1/conversations/{id}/name")
                    && r.json().is_some_and(|b| b["name"] == "Lisbon trip")
            })
            .await;
        assert_eq!(rename.method, "POST");
        let upstream = p.upstream_conversations().await;
        assert_eq!(upstream.len(), 1);
        assert_eq!(upstream[0]["name"], "Lisbon trip", "Dify has the new name");
    })
    .await;
}

#[tokio::test]
async fn delete_after_confirm_removes_from_the_list_and_dify() {
    run("delete", Viewport::Desktop, options(), async |p| {
        let id = conversation_with_title(p, "Something to forget").await;
        p.click(&format!(
            "#conversation-list li.conversation[data-id='{id}'] .delete"
        ))
        .await;
        let question = p.c.get_alert_text().await.expect("a confirm dialog");
        assert!(question.contains("Delete"), "{question}");
        p.c.accept_alert().await.expect("accept");
        p.until(
            "!document.querySelector('#conversation-list li.conversation')",
            "the conversation to leave the list",
        )
        .await;
        assert!(
            p.visible("#conversation-empty").await,
            "the empty list says so"
        );
        p.upstream("the delete", |r| {
            r.method == "DELETE" && r.path == format!("/v1/conversations/{id}")
        })
        .await;
        assert!(
            p.upstream_conversations().await.is_empty(),
            "Dify still lists it"
        );
    })
    .await;
}

#[tokio::test]
async fn opening_statement_and_suggested_questions_start_a_chat() {
    let opts = EmulatorOptions {
        opening_statement: Some("Hi, I'm **Ada**. Ask me anything about your orders.".to_owned()),
        suggested_questions: vec![
            "Where is my order?".to_owned(),
            "How do I return an item?".to_owned(),
        ],
        ..options()
    };
    run("opening", Viewport::Desktop, opts, async |p| {
        assert!(p.visible("#opening-statement").await);
        let statement = p.text_of("#opening-statement").await;
        assert!(statement.contains("Hi, I'm Ada."), "{statement}");
        assert_eq!(p.text_of("#opening-statement strong").await, "Ada");
        let labels = p
            .js(
                "return [...document.querySelectorAll('.suggested-question')]
                   .filter(b => b.checkVisibility()).map(b => b.textContent);",
            )
            .await;
        assert_eq!(
            labels,
            json!(["Where is my order?", "How do I return an item?"])
        );

        p.click(".suggested-question:nth-of-type(2)").await;
        let chat = p.upstream("the suggested question", chat_request).await;
        assert_eq!(chat.json().unwrap()["query"], "How do I return an item?");
        assert_eq!(
            p.text_of(".message.user").await.trim(),
            "How do I return an item?"
        );
        p.wait_idle().await;
        assert!(!p.visible("#welcome").await, "the welcome hides");
    })
    .await;
}

#[tokio::test]
async fn required_input_field_blocks_sending_until_filled() {
    let opts = EmulatorOptions {
        user_input_form: json!([{"text-input": {
            "label": "Your name", "variable": "name", "required": true, "max_length": 48, "default": "",
        }}]),
        ..options()
    };
    run("required_input", Viewport::Desktop, opts, async |p| {
        let field = p.find("#inputs-form #input-name").await;
        assert!(p.visible("#input-name").await);
        p.send("Hello there").await;
        p.until(
            "document.getElementById('input-name').getAttribute('aria-invalid') === 'true'",
            "the field to be flagged",
        )
        .await;
        assert!(p.visible("#input-name-error").await, "the field says why");
        assert_eq!(
            p.js("return document.activeElement.id;").await,
            "input-name"
        );
        assert_eq!(p.count(".message").await, 0, "nothing was sent");
        assert!(
            !p.app.emulator.requests().iter().any(chat_request),
            "Dify got a chat without the required input"
        );

        field.send_keys("Ada Lovelace").await.unwrap();
        p.click("#send").await;
        let chat = p.upstream("the chat with inputs", chat_request).await;
        let body = chat.json().unwrap();
        assert_eq!(body["inputs"]["name"], "Ada Lovelace", "{body}");
        assert_eq!(body["query"], "Hello there");
        p.wait_idle().await;
        p.find(".message.assistant[data-message-id]").await;
        assert_eq!(p.count(".message.assistant .error").await, 0);
    })
    .await;
}

#[tokio::test]
async fn attached_image_is_uploaded_and_sent_as_a_file() {
    let opts = EmulatorOptions {
        file_upload: json!({"image": {
            "enabled": true,
            "number_limits": 3,
            "detail": "high",
            "transfer_methods": ["local_file", "remote_url"],
        }}),
        ..options()
    };
    run("attach", Viewport::Desktop, opts, async |p| {
        assert!(p.visible("#attach").await, "the attach button shows");
        let file = p.scratch.join("gradient.png");
        std::fs::write(&file, png(48, 32)).unwrap();
        p.find("#file-input")
            .await
            .send_keys(&file.display().to_string())
            .await
            .expect("choose the file");
        p.find(".attachment[data-state='done']").await;
        assert!(p.visible(".attachment .remove").await);
        let upload = p
            .upstream("the upload", |r| {
                r.method == "POST" && r.path == "/v1/files/upload"
            })
            .await;
        assert!(upload.body_len > 0);

        p.send("What is in this picture?").await;
        let chat = p.upstream("the chat with files", chat_request).await;
        let body = chat.json().unwrap();
        let file0 = &body["files"][0];
        assert_eq!(file0["transfer_method"], "local_file", "{body}");
        assert_eq!(file0["type"], "image", "{body}");
        let id = file0["upload_file_id"].as_str().expect("upload_file_id");
        assert!(
            p.app.emulator.uploaded_file(id).is_some(),
            "sent the uploaded file's id"
        );
        p.wait_idle().await;
        assert_eq!(p.count(".message.user .sent-thumb canvas").await, 1);
        assert_eq!(p.count(".attachment").await, 0, "the tray is cleared");
        assert_eq!(p.count(".message.assistant .error").await, 0);
    })
    .await;
}

#[tokio::test]
async fn upstream_error_is_shown_inline_with_retry() {
    run("upstream_error", Viewport::Desktop, options(), async |p| {
        p.send("FAIL500 please").await;
        p.find(".message.assistant .error .retry").await;
        p.wait_idle().await;
        assert!(p.visible(".message.assistant .error").await);
        let text = p.text_of(".message.assistant .error .error-text").await;
        assert!(text.contains("couldn’t answer"), "plain words: {text}");
        assert!(p.visible(".message.assistant .error .retry").await);
        p.screenshot("desktop-error").await;

        p.click(".message.assistant .error .retry").await;
        p.wait_idle().await;
        let deadline = Instant::now() + PATIENCE;
        while p
            .app
            .emulator
            .requests()
            .iter()
            .filter(|r| chat_request(r))
            .count()
            < 2
        {
            assert!(Instant::now() < deadline, "retry never reached Dify");
            tokio::time::sleep(POLL).await;
        }
        p.find(".message.assistant .error .retry").await;
        assert_eq!(
            p.count(".message.assistant").await,
            1,
            "retry reuses the turn"
        );
    })
    .await;
}

#[tokio::test]
async fn phone_layout_hides_sidebar_behind_menu_toggle() {
    let opts = EmulatorOptions {
        demo: true,
        ..options()
    };
    run("phone", Viewport::Phone, opts, async |p| {
        assert_eq!(
            p.js("return [innerWidth, innerHeight];").await,
            json!([360, 740])
        );
        let no_overflow = "return document.documentElement.scrollWidth <= 360;";
        assert_eq!(p.js(no_overflow).await, true, "overflow when empty");
        assert!(
            !p.visible("#sidebar").await,
            "the sidebar is a closed drawer"
        );
        assert!(p.visible("#menu-toggle").await);
        assert!(p.visible("#composer").await);
        let rect = p
            .js(
                "const r = document.getElementById('composer').getBoundingClientRect();
                 return r.left >= 0 && r.right <= 360 && r.bottom <= 740;",
            )
            .await;
        assert_eq!(rect, true, "the composer is on screen");

        p.click(".suggested-question").await;
        p.wait_idle().await;
        p.find(".message.assistant[data-message-id] .feedback-like")
            .await;
        assert_eq!(p.js(no_overflow).await, true, "overflow with a chat");
        p.screenshot("phone-chat").await;

        p.click("#menu-toggle").await;
        p.until(
            "getComputedStyle(document.getElementById('sidebar')).visibility === 'visible' \
             && document.getElementById('sidebar').getBoundingClientRect().left >= 0",
            "the drawer to open",
        )
        .await;
        assert_eq!(
            p.js("return document.getElementById('menu-toggle').getAttribute('aria-expanded');")
                .await,
            "true"
        );
        assert!(p.visible("#conversation-list li.conversation").await);
        p.screenshot("phone-drawer").await;
        p.click("#sidebar-close").await;
        p.until(
            "getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden'",
            "the drawer to close",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn markdown_answer_renders_code_lists_and_safe_links() {
    let opts = EmulatorOptions {
        demo: true,
        ..options()
    };
    let markdown = [
        "Point it at your app with two variables:\n\n",
        "```sh\nDIFY_API_KEY=app-your-key \\\n  DIFY_BASE_URL=https://api.dify.ai/v1 dify-bff\n```\n\n",
        "Then the page gives you:\n\n",
        "- **Streaming** answers you can stop and retry\n",
        "- Conversations with *history*, rename and delete\n",
        "- Uploads, feedback and your app's `inputs` form\n\n",
        "See the [Dify docs](https://docs.dify.ai) for where to find the key.",
    ];
    run("markdown", Viewport::Desktop, opts, async |p| {
        // Two earlier conversations, so the sidebar in the screenshot looks lived in.
        for q in [
            "How do I connect my own Dify app?",
            "What can I try in this demo?",
        ] {
            let status = p
                .c
                .execute_async(
                    "const [q, done] = arguments;
                     fetch('/chat', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                     body: JSON.stringify({query: q, response_mode: 'blocking'})})
                       .then(r => done(r.status), () => done(0));",
                    vec![json!(q)],
                )
                .await
                .unwrap();
            assert_eq!(status, 200);
        }
        p.reload().await;
        assert_eq!(p.conversation_ids().await.len(), 2);

        p.click(".suggested-question").await;
        p.wait_idle().await;
        let conversation = p
            .find("#conversation-list li.conversation.active")
            .await
            .attr("data-id")
            .await
            .unwrap()
            .unwrap();
        let body = scripted_answer(&conversation, &markdown);
        let reply = Reply::sse(vec![Bytes::from(body)]).rechunk_every(7);
        p.app.emulator.script("POST", "/chat-messages", reply);
        p.send("How do I run it against my own Dify?").await;
        p.wait_idle().await;
        let last = ".message.assistant:last-of-type";
        p.find(&format!("{last} .usage")).await;

        let code = p.text_of(&format!("{last} .answer pre code")).await;
        assert!(
            code.contains("DIFY_API_KEY=app-your-key \\\n  DIFY_BASE_URL"),
            "{code}"
        );
        assert_eq!(p.count(&format!("{last} .answer .copy-code")).await, 1);
        assert_eq!(p.count(&format!("{last} .answer ul > li")).await, 3);
        assert_eq!(
            p.text_of(&format!("{last} .answer li strong")).await,
            "Streaming"
        );
        assert_eq!(p.text_of(&format!("{last} .answer li code")).await, "inputs");
        let link = p
            .js(&format!(
                "const a = document.querySelector(\"{last} .answer a[href='https://docs.dify.ai']\");
                 return a && [a.rel, a.target];"
            ))
            .await;
        assert_eq!(link, json!(["noopener noreferrer", "_blank"]));
        assert_eq!(p.count(".message.assistant .feedback-like").await, 2);
        assert_eq!(
            p.js("return [innerWidth, innerHeight];").await,
            json!([1280, 900])
        );
        p.js("document.activeElement?.blur();").await;
        p.screenshot("desktop-chat").await;
    })
    .await;
}

#[tokio::test]
async fn message_sent_while_the_list_loads_stays_in_the_list() {
    run("early_send", Viewport::Desktop, options(), async |p| {
        // The page reloads with Dify slow to list conversations; the user does not wait.
        let mut slow_list = Reply::json(200, &json!({"limit": 20, "has_more": false, "data": []}));
        slow_list
            .steps
            .insert(0, Step::Pause(Duration::from_secs(4)));
        p.app.emulator.script("GET", "/conversations", slow_list);
        p.c.refresh().await.expect("reload");
        let composer = p.find("#composer").await;
        composer
            .send_keys(&format!("Early bird{}", &*Key::Enter))
            .await
            .expect("type and send");
        p.wait_idle().await;
        let listed = p.conversation_ids().await;
        assert_eq!(listed.len(), 1, "the new conversation is listed");
        assert_eq!(
            p.js("return document.title;").await,
            "Chat",
            "the test is void: the list arrived before the answer ended"
        );
        p.until("document.title !== 'Chat'", "the list to arrive")
            .await;
        assert_eq!(
            p.conversation_ids().await,
            listed,
            "the conversation stays listed when the (older) list arrives"
        );
        let upstream = p.upstream_conversations().await;
        assert_eq!(upstream.len(), 1);
        assert_eq!(upstream[0]["id"], listed[0]);
    })
    .await;
}

// ---- Markdown safety ------------------------------------------------------------------------

/// In page context: `audit(root)` lists every element, attribute, class, href or src below `root`
/// that is outside what rendered Markdown may contain (the content allow-list plus the page's own
/// code block, table and reasoning parts), and every comment node.
const AUDIT: &str = r#"
const ANY = /[\s\S]*/;
const ALIGN = /^align-(?:left|center|right)$/;
const ALLOWED = {
  p: {}, br: {}, hr: {}, h1: {}, h2: {}, h3: {}, h4: {}, h5: {}, h6: {},
  ul: {}, ol: {start: /^\d+$/}, li: {}, blockquote: {}, pre: {},
  code: {class: /^language-[\w+#.-]{1,30}$/}, em: {}, strong: {}, del: {},
  a: {href: ANY, title: ANY, target: /^_blank$/, rel: /^noopener noreferrer$/},
  img: {src: ANY, alt: ANY, title: ANY, loading: /^lazy$/},
  table: {}, thead: {}, tbody: {}, tr: {}, th: {class: ALIGN}, td: {class: ALIGN},
  div: {class: /^(?:code-block|code-head|table-wrap)$/}, span: {class: /^code-lang$/},
  button: {type: /^button$/, class: /^copy-code$/, 'aria-label': /^Copy code$/},
  details: {class: /^thinking$/, open: /^$/}, summary: {},
};
const compact = (url) => String(url ?? '').replace(/[\u0000-\u0020\u007f-\u009f]/g, '');
function hrefAllowed(url) {
  const c = compact(url).toLowerCase();
  const scheme = /^([^/?#]*?):/.exec(c);
  return c !== '' && (!scheme || ['http', 'https', 'mailto'].includes(scheme[1]));
}
function srcAllowed(url) {
  return compact(url).startsWith('/') && new URL(url, location.href).origin === location.origin;
}
function audit(root) {
  const problems = [];
  for (const el of root.querySelectorAll('*')) {
    const tag = el.localName;
    const rules = ALLOWED[tag];
    if (!rules) { problems.push(`<${tag}>`); continue; }
    for (const { name, value } of el.attributes) {
      if (!rules[name] || !rules[name].test(value)) problems.push(`<${tag} ${name}="${value}">`);
    }
    if (tag === 'a' && !hrefAllowed(el.getAttribute('href'))) problems.push(`<a href="${el.getAttribute('href')}">`);
    if (tag === 'img' && !srcAllowed(el.getAttribute('src'))) problems.push(`<img src="${el.getAttribute('src')}">`);
  }
  const comments = document.createTreeWalker(root, NodeFilter.SHOW_COMMENT);
  while (comments.nextNode()) problems.push(`<!--${comments.currentNode.data}-->`);
  return problems;
}
"#;

/// Restored inside the link's `href`, the image's quote used to end the attribute, and the rest
/// became attributes of the link.
const IMAGE_IN_LINK_URL_ADDS_A_HANDLER: &str = "[x](![a](/onmouseover=window.__pwned=1//))";
/// The same without script: the page's own full-screen `.scrim` class on a link to another site.
const IMAGE_IN_LINK_URL_ADDS_THE_SCRIM: &str =
    "[x](https://evil.example/p![ class=scrim ](/title=))";

#[tokio::test]
async fn image_inside_a_link_url_adds_no_attribute_to_the_link() {
    let pieces = [
        IMAGE_IN_LINK_URL_ADDS_A_HANDLER,
        "\n\n",
        IMAGE_IN_LINK_URL_ADDS_THE_SCRIM,
    ];
    run(
        "image_in_link_url",
        Viewport::Desktop,
        options(),
        async |p| {
            let body = scripted_answer(&uuid::Uuid::new_v4().to_string(), &pieces);
            p.app.emulator.script(
                "POST",
                "/chat-messages",
                Reply::sse(vec![Bytes::from(body)]),
            );
            p.send("Show me a link").await;
            p.wait_idle().await;
            p.find(".message.assistant[data-message-id] .usage").await;
            let report = p
                .js(&format!(
                    "{AUDIT}
                 const answer = document.querySelector('.message.assistant .answer');
                 for (const el of answer.querySelectorAll('*')) {{
                   el.dispatchEvent(new MouseEvent('mouseover', {{bubbles: true}}));
                 }}
                 const page = innerWidth * innerHeight;
                 return {{
                   problems: audit(answer),
                   scrims: document.querySelectorAll('.message .scrim, .message.scrim').length,
                   covering: [...answer.querySelectorAll('a')].filter(a => {{
                     const r = a.getBoundingClientRect();
                     return r.width * r.height > page / 4;
                   }}).length,
                   pwned: typeof window.__pwned,
                 }};"
                ))
                .await;
            assert_eq!(
                report,
                json!({"problems": [], "scrims": 0, "covering": 0, "pwned": "undefined"}),
                "answer: {}",
                p.js("return document.querySelector('.message.assistant .answer').innerHTML;")
                    .await
            );
        },
    )
    .await;
}

/// Pieces of hostile Markdown, combined at random into whole answers.
const HOSTILE: &[&str] = &[
    "[",
    "]",
    "(",
    ")",
    "](",
    "![",
    "[x](",
    "![a](",
    "\"",
    "'",
    "<",
    ">",
    "`",
    "```",
    "```js\n",
    "\n",
    "\n\n",
    " ",
    "javascript:",
    "JaVaScRiPt:",
    "java\tscript:",
    "&#106;avascript:",
    "&#x6A;&#x61;vascript:",
    "javascript&colon;",
    "vbscript:",
    "data:text/html,<script>window.__pwned=1</script>",
    "data:image/svg+xml,<svg onload=window.__pwned=1>",
    "onerror=",
    "onmouseover=window.__pwned=1//",
    "window.__pwned=1",
    " class=scrim ",
    "class=\"scrim\"",
    "style=\"position:fixed;inset:0\"",
    "id=composer",
    "<img src=x onerror=window.__pwned=1>",
    "<svg onload=window.__pwned=1>",
    "<script>window.__pwned=1</script>",
    "<iframe src=\"javascript:parent.__pwned=1\"></iframe>",
    "<a href=\"javascript:window.__pwned=1\">",
    "</a>",
    "<details open ontoggle=window.__pwned=1>",
    "<math><mi xlink:href=\"javascript:window.__pwned=1\">",
    "<form action=javascript:window.__pwned=1><button>",
    "<!-- ",
    " -->",
    "<think>",
    "</think>",
    "https://evil.example/",
    "//evil.example/x.png",
    "/\\evil.example/x.png",
    "/&#9;/evil.example/x.png",
    "/files/a.png",
    "mailto:a@example.com",
    "<https://evil.example>",
    "<javascript:window.__pwned=1>",
    " \"title\"",
    " 'title'",
    "[ref]",
    "\n[ref]: javascript:window.__pwned=1\n",
    "| a | b |\n|:-:|--:|\n",
    "- ",
    "- [ ] ",
    "1. ",
    "> ",
    "# ",
    "**",
    "_",
    "~~",
    "&lt;",
    "&quot;",
    "\\",
];

/// Link and image destinations that must not survive as they are.
const HOSTILE_URLS: &[&str] = &[
    "javascript:window.__pwned=1",
    "JaVaScRiPt:window.__pwned=1",
    "java\tscript:window.__pwned=1",
    " javascript:window.__pwned=1",
    "&#106;avascript:window.__pwned=1",
    "&#x6A;avascript:window.__pwned=1",
    "javascript&colon;window.__pwned=1",
    "<javascript:window.__pwned=1>",
    "vbscript:window.__pwned=1",
    "data:text/html,<script>window.__pwned=1</script>",
    "data:image/png;base64,iVBORw0KGgo=",
    "//evil.example/x.png",
    "/\\evil.example/x.png",
    "/&#9;/evil.example/x.png",
    "https://evil.example/p",
    "/files/a.png",
    "mailto:a@example.com",
    "x\" onerror=\"window.__pwned=1",
    "/onmouseover=window.__pwned=1//",
];

/// A xorshift generator: the same hostile answers every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// A hostile piece, a link or an image; a label, alt text or destination may hold more of them.
fn hostile_part(rng: &mut Rng, depth: u32) -> String {
    let inner = |rng: &mut Rng| {
        if depth < 2 && rng.below(3) == 0 {
            hostile_part(rng, depth + 1)
        } else {
            rng.pick(HOSTILE).to_owned()
        }
    };
    let url = |rng: &mut Rng| {
        let url = rng.pick(HOSTILE_URLS).to_owned();
        if rng.below(3) == 0 {
            url + &inner(rng)
        } else {
            url
        }
    };
    match rng.below(4) {
        0 => format!("[{}]({})", inner(rng), url(rng)),
        1 => format!("![{}]({})", inner(rng), url(rng)),
        _ => rng.pick(HOSTILE).to_owned(),
    }
}

/// The two attacks, then `count - 2` answers of 2 to 8 hostile parts.
fn hostile_markdown(count: usize) -> Vec<String> {
    let mut rng = Rng(0x5eed_0fba_5e5e);
    let mut cases = vec![
        IMAGE_IN_LINK_URL_ADDS_A_HANDLER.to_owned(),
        IMAGE_IN_LINK_URL_ADDS_THE_SCRIM.to_owned(),
    ];
    while cases.len() < count {
        let parts = 2 + rng.below(7);
        cases.push((0..parts).map(|_| hostile_part(&mut rng, 0)).collect());
    }
    cases
}

#[tokio::test]
async fn hostile_markdown_renders_only_allow_listed_markup() {
    let cases = hostile_markdown(400);
    // Each case goes through the page's own renderer into a live element, then the audit.
    let script = format!(
        "const [cases, done] = arguments;
         {AUDIT}
         import('/js/markdown.js').then(({{ renderMarkdown }}) => {{
           const sink = document.createElement('div');
           sink.className = 'markdown';
           document.body.append(sink);
           const failures = [];
           for (const markdown of cases) {{
             const holder = document.createElement('div');
             try {{
               holder.append(renderMarkdown(markdown));
             }} catch (e) {{
               failures.push({{markdown, problems: [`threw ${{e}}`]}});
               continue;
             }}
             const problems = audit(holder);
             if (problems.length) failures.push({{markdown, problems}});
             sink.append(holder);
           }}
           for (const el of sink.querySelectorAll('*')) {{
             el.dispatchEvent(new MouseEvent('mouseover', {{bubbles: true}}));
           }}
           setTimeout(() => {{
             const links = sink.querySelectorAll('a').length;
             const images = sink.querySelectorAll('img').length;
             sink.remove();
             done({{failures: failures.length, first: failures.slice(0, 3),
                    links, images, pwned: typeof window.__pwned}});
           }}, 300);
         }}, (e) => done({{error: String(e)}}));"
    );
    run(
        "hostile_markdown",
        Viewport::Desktop,
        options(),
        async |p| {
            let report =
                p.c.execute_async(&script, vec![json!(cases)])
                    .await
                    .expect("render the hostile Markdown");
            assert_eq!(report["error"], Value::Null, "{report}");
            assert_eq!(report["failures"], 0, "{report:#}");
            assert_eq!(report["pwned"], "undefined", "{report}");
            for made in ["links", "images"] {
                assert!(
                    report[made].as_u64().unwrap_or_default() > 20,
                    "too few {made} survived to test the checks on: {report}"
                );
            }
        },
    )
    .await;
}

#[tokio::test]
async fn markdown_everywhere_renders_under_trusted_types_without_a_violation() {
    let opts = EmulatorOptions {
        opening_statement: Some(
            "Hi, I'm **Ada**. See [the docs](https://docs.dify.ai).".to_owned(),
        ),
        ..options()
    };
    run("trusted_types", Viewport::Desktop, opts, async |p| {
        let driver = driver("trusted_types").expect("the driver runs this test");
        let added = cdp(
            driver,
            &p.c,
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "window.__violations = [];
                addEventListener('securitypolicyviolation', (e) =>
                  window.__violations.push(`${e.violatedDirective}: ${e.sample}`));"}),
        )
        .await
        .expect("listen for CSP violations from the start");
        p.reload().await;
        p.find("#opening-statement strong").await;

        let conversation = uuid::Uuid::new_v4().to_string();
        let ids = json!({"conversation_id": conversation, "message_id": uuid::Uuid::new_v4().to_string()});
        let mut thought = ids.clone();
        thought.as_object_mut().expect("object").extend(
            json!({"event": "agent_thought", "id": "t1", "position": 1,
                   "thought": "Looking it up with **search**.", "tool": "search",
                   "tool_input": "{\"q\": \"orders\"}", "observation": "3 results"})
            .as_object()
            .expect("object")
            .clone(),
        );
        let body = sse_b(&thought)
            + &scripted_answer(
                &conversation,
                &[
                    "<think>Which **table**?</think>",
                    "| a | b |\n|:-:|--:|\n| 1 | 2 |\n\n",
                    "```sh\necho hi\n```\n\n",
                    "![logo](/favicon.svg) and [docs](https://docs.dify.ai)",
                ],
            );
        p.app
            .emulator
            .script("POST", "/chat-messages", Reply::sse(vec![Bytes::from(body)]));
        p.send("Render everything").await;
        p.wait_idle().await;
        p.find(".message.assistant[data-message-id] .usage").await;
        let last = ".message.assistant:last-of-type";
        for css in [
            ".step .markdown strong",
            ".answer details.thinking strong",
            ".answer .table-wrap th.align-center",
            ".answer .code-block .copy-code",
            ".answer img[src='/favicon.svg']",
            ".answer a[href='https://docs.dify.ai']",
        ] {
            assert_eq!(p.count(&format!("{last} {css}")).await, 1, "{css}");
        }
        assert_eq!(p.js("return window.__violations;").await, json!([]));
        let raw_html = p
            .js("try { document.createElement('div').innerHTML = '<b>x</b>'; return 'assigned'; }
                 catch (e) { return e.name; }")
            .await;
        assert_eq!(raw_html, "TypeError", "Trusted Types are enforced");
        cdp(
            driver,
            &p.c,
            "Page.removeScriptToEvaluateOnNewDocument",
            json!({"identifier": added["value"]["identifier"]}),
        )
        .await
        .expect("stop listening");
    })
    .await;
}

/// The page's own response headers, without a browser.
async fn page_headers() -> reqwest::header::HeaderMap {
    let app = TestApp::spawn().await;
    let res = reqwest::get(format!("{}/", app.base))
        .await
        .expect("page loads");
    assert_eq!(res.status(), 200);
    res.headers().clone()
}

fn csp_directives(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .map(|d| d.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn page_may_be_framed_only_by_itself() {
    let headers = page_headers().await;
    let csp = csp_directives(&headers);
    assert!(
        csp.contains(&"frame-ancestors 'self'".to_owned()),
        "{csp:?}"
    );
    assert_eq!(
        headers.get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"SAMEORIGIN"[..])
    );
}

#[tokio::test]
async fn page_requires_trusted_types_for_scripts() {
    let csp = csp_directives(&page_headers().await);
    assert!(
        csp.contains(&"require-trusted-types-for 'script'".to_owned()),
        "{csp:?}"
    );
    assert!(
        csp.contains(&"trusted-types dompurify".to_owned()),
        "{csp:?}"
    );
}

// ---- several apps -------------------------------------------------------------------------

mod several_apps {
    use super::*;
    use crate::apps::{sales_options, serve_two_apps, start_sales, support_options};

    async fn sales_chat(sales: &dify_emulator::Emulator) -> Recorded {
        sales
            .wait_for_request(chat_request, PATIENCE)
            .await
            .expect("sales' Dify never received the chat")
    }

    #[tokio::test]
    async fn the_picker_lists_every_app_and_a_chat_works_in_the_second() {
        let sales = start_sales(sales_options()).await;
        let server = serve_two_apps(&sales, vec![], support_options(), vec![]);
        run_on("picker", Viewport::Desktop, server, async |p| {
            p.find("#picker").await;
            assert_eq!(p.js("return document.title;").await, "Choose an assistant");
            assert!(!p.visible(".layout").await, "no chat at the root");
            let cards = p
                .js("return [...document.querySelectorAll('.picker-card')].map(a => [a.querySelector('.picker-title').textContent, a.querySelector('.picker-mode')?.textContent, a.querySelector('.picker-description')?.textContent, a.getAttribute('href')]);")
                .await;
            assert_eq!(
                cards,
                json!([
                    ["Support bot", "Chatbot", "Answers product questions.", "/apps/support/"],
                    ["Sales helper", "Chatflow", "Quotes and plans.", "/apps/sales/"],
                ])
            );

            p.screenshot("apps-picker").await;
            p.click(".picker-card[data-app='sales']").await;
            p.until("document.title === 'Sales helper'", "the sales app to boot")
                .await;
            assert_eq!(p.js("return location.pathname;").await, "/apps/sales/");
            assert!(
                p.text_of("#opening-statement").await.contains("Welcome to sales!"),
                "sales' own opening statement"
            );
            p.send("Hello sales").await;
            let chat = sales_chat(&sales).await;
            assert_eq!(chat.json().unwrap()["query"], "Hello sales");
            p.wait_idle().await;
            p.find(".message.assistant[data-message-id]").await;
            assert_eq!(p.count(".message.assistant .error").await, 0);
            assert!(
                !p.app.emulator.requests().iter().any(chat_request),
                "support's Dify got the chat"
            );
            p.until(
                "document.querySelectorAll('#conversation-list li.conversation').length === 1",
                "the conversation in sales' list",
            )
            .await;
        })
        .await;
    }

    #[tokio::test]
    async fn the_header_switches_apps_and_each_keeps_its_own_history() {
        let sales = start_sales(sales_options()).await;
        let server = serve_two_apps(&sales, vec![], support_options(), vec![]);
        run_on("switcher", Viewport::Desktop, server, async |p| {
            let support_page = format!("{}/apps/support/", p.app.base);
            p.c.goto(&support_page).await.expect("support's page loads");
            p.until("document.title === 'Support bot'", "the support app to boot")
                .await;
            p.send("Hello support").await;
            p.upstream("the support chat", chat_request).await;
            p.wait_idle().await;
            p.until(
                "document.querySelectorAll('#conversation-list li.conversation').length === 1",
                "the conversation in support's list",
            )
            .await;

            p.find("#app-switch").await;
            assert_eq!(p.js("return document.getElementById('app-switch').value;").await, "support");
            p.screenshot("apps-switcher").await;
            p.js("const s = document.getElementById('app-switch'); s.value = 'sales'; s.dispatchEvent(new Event('change'));")
                .await;
            p.until("document.title === 'Sales helper'", "the sales app to boot")
                .await;
            assert_eq!(p.js("return location.pathname;").await, "/apps/sales/");
            p.find("#app-switch").await;
            assert_eq!(p.js("return document.getElementById('app-switch').value;").await, "sales");
            p.until(
                "!document.getElementById('conversation-empty').hidden",
                "sales' empty history",
            )
            .await;
            assert_eq!(p.count("#conversation-list li.conversation").await, 0);

            p.click("#all-apps").await;
            p.find("#picker").await;
            assert_eq!(p.js("return location.pathname;").await, "/");
        })
        .await;
    }
}
// ---- deep links ------------------------------------------------------------------------------

/// The conversation id in the page's URL (`#/c/{id}`), or "" when none.
async fn linked(p: &Page) -> String {
    let hash = p.js("return location.hash;").await;
    let hash = hash.as_str().unwrap_or_default();
    hash.strip_prefix("#/c/").unwrap_or(hash).to_owned()
}

async fn blocking_chat_in_page(p: &Page, query: &str) {
    let status =
        p.c.execute_async(
            "const [q, done] = arguments;
             fetch('/chat', {method: 'POST', headers: {'Content-Type': 'application/json'},
                             body: JSON.stringify({query: q, response_mode: 'blocking'})})
               .then(r => done(r.status), () => done(0));",
            vec![json!(query)],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_reload_reopens_the_conversation_in_the_url() {
    run("deep_link_reload", Viewport::Desktop, options(), async |p| {
        assert_eq!(linked(p).await, "", "a new chat has no link");
        p.send("Remember this one").await;
        p.wait_idle().await;
        let id = p.conversation_ids().await[0].clone();
        p.until(
            &format!("location.hash === '#/c/{id}'"),
            "the conversation in the URL",
        )
        .await;

        p.reload().await;
        p.find(".message.user").await;
        assert_eq!(linked(p).await, id);
        assert!(p.text_of(".message.user").await.contains("Remember this one"));
        assert!(!p.visible("#welcome").await, "not the empty state");
        let active = p
            .js("return document.querySelector('#conversation-list li.conversation.active')?.dataset.id;")
            .await;
        assert_eq!(active, json!(id));
    })
    .await;
}

#[tokio::test]
async fn back_and_forward_move_between_conversations() {
    run(
        "deep_link_history",
        Viewport::Desktop,
        options(),
        async |p| {
            blocking_chat_in_page(p, "First topic").await;
            blocking_chat_in_page(p, "Second topic").await;
            p.reload().await;
            let ids = p.conversation_ids().await;
            assert_eq!(ids.len(), 2);
            let (second, first) = (ids[0].clone(), ids[1].clone());

            p.click(&format!(
                "#conversation-list li[data-id='{first}'] .conversation-title"
            ))
            .await;
            p.until(
                "document.querySelector('.message.user')?.textContent.includes('First topic')",
                "the first conversation",
            )
            .await;
            p.click(&format!(
                "#conversation-list li[data-id='{second}'] .conversation-title"
            ))
            .await;
            p.until(
                "document.querySelector('.message.user')?.textContent.includes('Second topic')",
                "the second conversation",
            )
            .await;
            assert_eq!(linked(p).await, second);

            p.c.back().await.expect("back");
            p.until(
                "document.querySelector('.message.user')?.textContent.includes('First topic')",
                "back to the first",
            )
            .await;
            assert_eq!(linked(p).await, first);
            p.c.forward().await.expect("forward");
            p.until(
                "document.querySelector('.message.user')?.textContent.includes('Second topic')",
                "forward to the second",
            )
            .await;
            assert_eq!(linked(p).await, second);

            p.click("#new-chat").await;
            assert_eq!(linked(p).await, "", "a new chat clears the link");
            assert!(p.visible("#welcome").await);
            p.c.back().await.expect("back");
            p.until(
                "document.querySelector('.message.user')?.textContent.includes('Second topic')",
                "back from the new chat",
            )
            .await;
        },
    )
    .await;
}

#[tokio::test]
async fn an_unknown_conversation_link_shows_the_empty_state_once() {
    run(
        "deep_link_unknown",
        Viewport::Desktop,
        options(),
        async |p| {
            let unknown = "6d31eee3-c172-45bd-8d9c-fcc6fd5f8211";
            p.c.goto(&format!("{}/#/c/{unknown}", p.app.base))
                .await
                .expect("page loads");
            p.until("document.title !== 'Chat'", "the page to boot")
                .await;
            p.until(
                "!document.getElementById('welcome').hidden",
                "the empty state",
            )
            .await;
            p.until("location.hash === ''", "the dead link to be dropped")
                .await;
            assert_eq!(p.count(".message").await, 0);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let asked = p
                .app
                .emulator
                .requests()
                .iter()
                .filter(|r| r.path == "/v1/messages")
                .count();
            assert_eq!(asked, 1, "asked once, no loop");
            p.send("A fresh start").await;
            p.wait_idle().await;
            assert_eq!(p.count(".message.assistant .error").await, 0);
        },
    )
    .await;
}

// ---- errors in plain words ---------------------------------------------------------------------

#[tokio::test]
async fn a_quota_error_is_worded_for_people_with_difys_text_behind_details() {
    run("error_words", Viewport::Desktop, options(), async |p| {
        let dify_text = "Your quota for Dify Hosted OpenAI has been exhausted. Please go to Settings -> Model Provider to complete your own provider credentials.";
        let event = sse_b(&json!({
            "event": "error", "conversation_id": "", "message_id": "", "created_at": 1795662522,
            "code": "provider_quota_exceeded", "status": 400, "message": dify_text,
        }));
        p.app
            .emulator
            .script("POST", "/chat-messages", Reply::sse(vec![Bytes::from(event)]));
        p.send("Spend it all").await;
        p.wait_idle().await;
        let shown = p.text_of(".message.assistant .error .error-text").await;
        assert!(shown.contains("quota"), "{shown}");
        assert!(!shown.contains("Settings -> Model Provider"), "{shown}");
        let details = ".message.assistant .error details.error-details";
        assert_eq!(p.js(&format!("return document.querySelector(\"{details}\").open;")).await, false);
        assert!(!p.visible(&format!("{details} .error-raw")).await, "hidden until asked");
        p.click(&format!("{details} summary")).await;
        assert!(p.visible(&format!("{details} .error-raw")).await);
        let raw = p.text_of(&format!("{details} .error-raw")).await;
        assert!(raw.starts_with("provider_quota_exceeded (400): "), "{raw}");
        assert!(raw.contains(dify_text), "{raw}");
        p.screenshot("desktop-error-details").await;
    })
    .await;
}

#[tokio::test]
async fn a_failed_model_call_shows_a_sentence_and_the_provider_error_in_details() {
    run("error_model", Viewport::Desktop, options(), async |p| {
        p.send("MIDFAIL now").await;
        p.wait_idle().await;
        let shown = p.text_of(".message.assistant .error .error-text").await;
        assert!(shown.contains("AI model couldn’t answer"), "{shown}");
        assert!(!shown.contains("openai_api_compatible"), "{shown}");
        let raw = p.text_of(".message.assistant .error .error-raw").await;
        assert!(raw.contains("completion_request_error"), "{raw}");
        assert!(raw.contains("fake mid-stream failure"), "{raw}");
    })
    .await;
}

// ---- the demo ----------------------------------------------------------------------------------

fn demo_app() -> EmulatorOptions {
    EmulatorOptions {
        token_interval: Duration::from_millis(1),
        ..EmulatorOptions::demo_app()
    }
}

#[tokio::test]
async fn the_demo_shows_uploads_follow_ups_markdown_tables_and_sources() {
    run("demo_features", Viewport::Desktop, demo_app(), async |p| {
        assert!(p.visible("#attach").await, "image upload is on");
        let opening = p.text_of("#opening-statement").await;
        for (keyword, _) in dify_emulator::DEMO_KEYWORDS {
            assert!(opening.contains(keyword), "{keyword} in {opening}");
        }

        p.click("#suggested-questions .suggested-question:nth-child(3)")
            .await;
        p.wait_idle().await;
        let sources = ".message.assistant .sources";
        assert_eq!(
            p.text_of(&format!("{sources} > summary")).await,
            "2 sources"
        );
        assert_eq!(p.count(&format!("{sources} li")).await, 2);
        assert!(
            p.text_of(&format!("{sources} li .source-name"))
                .await
                .contains("README.md")
        );
        p.find(".message.assistant .suggestions .suggested-question")
            .await;

        p.send("Show me MARKDOWN").await;
        p.wait_idle().await;
        let last = ".message.assistant:last-of-type";
        p.find(&format!("{last} .answer table")).await;
        assert_eq!(p.count(&format!("{last} .answer table tbody tr")).await, 3);
        assert!(
            p.text_of(&format!("{last} .answer pre code"))
                .await
                .contains("DIFY_API_KEY")
        );

        p.js("document.querySelector('.message.assistant .sources').open = true;")
            .await;
        p.screenshot("desktop-demo").await;

        p.reload().await;
        p.find(".message.assistant .sources").await;
        assert_eq!(
            p.count(".message.assistant .sources").await,
            1,
            "sources come back with the history"
        );
    })
    .await;
}
