//! Several Dify apps behind one server (API.md §5): each app's routes under `/apps/{name}`
//! call its own Dify with its own key, one identity spans them all, Dify keeps their data
//! apart, limits count per identity across apps, and operators see each app by name.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::cli::{Running, command, free_port, wait_healthy};
use crate::support::{
    API_KEY, Browser, SECOND_API_KEY, TestApp, TestResponse, Vars, blocking, logs, no_site_row,
    read_stream, sse_events, vars,
};
use dify_bff::config::{AppConfig, AppsConfig};
use dify_emulator::{AppInfo, Emulator, EmulatorOptions, Recorded, Reply};
use reqwest::Method;
use serde_json::{Value, json};

/// The server with two named apps: `support` on `app.emulator` (key [`API_KEY`]) and `sales`
/// on `sales` (key [`SECOND_API_KEY`]), each on its own Dify.
pub struct TwoApps {
    pub app: TestApp,
    pub sales: Emulator,
}

pub fn info(name: &str, description: &str, mode: &str) -> Option<AppInfo> {
    Some(AppInfo {
        name: name.to_owned(),
        description: description.to_owned(),
        mode: mode.to_owned(),
    })
}

pub fn support_options() -> EmulatorOptions {
    EmulatorOptions {
        info: info("Support bot", "Answers product questions.", "chat"),
        token_interval: Duration::from_millis(5),
        ..EmulatorOptions::default()
    }
}

pub fn sales_options() -> EmulatorOptions {
    EmulatorOptions {
        info: info("Sales helper", "Quotes and plans.", "advanced-chat"),
        opening_statement: Some("Welcome to sales!".to_owned()),
        token_interval: Duration::from_millis(5),
        ..EmulatorOptions::default()
    }
}

fn app(name: &str, key: &str, base: &str) -> AppConfig {
    AppConfig {
        name: name.to_owned(),
        api_key: key.to_owned().into(),
        base_url: reqwest::Url::parse(&format!("{base}/")).unwrap(),
    }
}

impl TwoApps {
    pub async fn spawn() -> TwoApps {
        Self::spawn_with(vec![], support_options(), sales_options()).await
    }

    pub async fn spawn_with(
        env: Vars,
        support: EmulatorOptions,
        sales: EmulatorOptions,
    ) -> TwoApps {
        Self::spawn_adding(env, support, sales, vec![]).await
    }

    /// With `more` apps after the two.
    pub async fn spawn_adding(
        env: Vars,
        support: EmulatorOptions,
        sales: EmulatorOptions,
        more: Vec<AppConfig>,
    ) -> TwoApps {
        let sales = start_sales(sales).await;
        let app = serve_two_apps(&sales, env, support, more).await;
        TwoApps { app, sales }
    }

    pub fn browser(&self) -> &Browser {
        &self.app.browser
    }

    pub fn support_requests(&self, path: &str) -> Vec<Recorded> {
        self.app.upstream_requests(path)
    }

    pub fn sales_requests(&self, path: &str) -> Vec<Recorded> {
        self.sales
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// The `sales` app's Dify, accepting [`SECOND_API_KEY`] only.
pub async fn start_sales(options: EmulatorOptions) -> Emulator {
    Emulator::start(EmulatorOptions {
        api_key: SECOND_API_KEY.to_owned(),
        ..options
    })
    .await
    .expect("second emulator starts")
}

/// The server with `support` (on the harness's own emulator, started with `support`) and
/// `sales` on `sales`, then `more`.
pub async fn serve_two_apps(
    sales: &Emulator,
    env: Vars,
    support: EmulatorOptions,
    more: Vec<AppConfig>,
) -> TestApp {
    let sales_base = sales.base_url();
    TestApp::spawn_with_config(env, support, |config| {
        let support_base = config
            .dify_base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let mut apps = vec![
            app("support", API_KEY, &support_base),
            app("sales", SECOND_API_KEY, &sales_base),
        ];
        apps.extend(more);
        config.apps = AppsConfig { apps, named: true };
    })
    .await
}

fn blocking_in(conversation_id: &str) -> Value {
    json!({"query": "and then?", "conversation_id": conversation_id, "response_mode": "blocking"})
}

// ---------------------------------------------------------------------------------------------
// Each app its own Dify and key; nothing of one app reaches another

#[tokio::test]
async fn each_app_calls_its_own_dify_with_its_own_key() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    assert_eq!(
        b.post_json("/apps/support/chat", &blocking("hi"))
            .await
            .status,
        200
    );
    assert_eq!(
        b.post_json("/apps/sales/chat", &blocking("hi"))
            .await
            .status,
        200
    );
    assert_eq!(
        b.post_json("/apps/sales/chat", &blocking("hi"))
            .await
            .status,
        200
    );

    let support = apps.support_requests("/v1/chat-messages");
    let sales = apps.sales_requests("/v1/chat-messages");
    assert_eq!((support.len(), sales.len()), (1, 2));
    let bearer = |r: &Recorded| r.header("authorization").map(str::to_owned);
    assert_eq!(bearer(&support[0]), Some(format!("Bearer {API_KEY}")));
    for r in &sales {
        assert_eq!(bearer(r), Some(format!("Bearer {SECOND_API_KEY}")));
    }
    let keys_at_support: Vec<_> = apps
        .app
        .emulator
        .requests()
        .iter()
        .filter_map(bearer)
        .collect();
    assert!(
        keys_at_support.iter().all(|k| !k.contains(SECOND_API_KEY)),
        "sales' key reached support's Dify"
    );
    let keys_at_sales: Vec<_> = apps.sales.requests().iter().filter_map(bearer).collect();
    assert!(
        keys_at_sales.iter().all(|k| !k.contains(API_KEY)),
        "support's key reached sales' Dify"
    );
}

#[tokio::test]
async fn a_conversation_of_one_app_is_not_found_through_another_for_the_same_identity() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    let answer = b
        .post_json("/apps/support/chat", &blocking("hi"))
        .await
        .json();
    let conversation = answer["conversation_id"].as_str().unwrap().to_owned();

    b.get(&format!(
        "/apps/sales/messages?conversation_id={conversation}"
    ))
    .await
    .assert_error(404, "not_found");
    b.post_json("/apps/sales/chat", &blocking_in(&conversation))
        .await
        .assert_error(404, "not_found");
    b.delete(&format!("/apps/sales/conversations/{conversation}"))
        .await
        .assert_error(404, "not_found");
    let listed = b.get("/apps/sales/conversations").await.json();
    assert_eq!(listed["data"], json!([]), "sales lists none of support's");

    let history = b
        .get(&format!(
            "/apps/support/messages?conversation_id={conversation}"
        ))
        .await;
    assert_eq!(history.status, 200, "still there in support");
    assert_eq!(history.json()["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn one_identity_is_the_same_dify_user_in_every_app() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    assert_eq!(b.get("/apps/support/conversations").await.status, 200);
    assert_eq!(b.get("/apps/sales/conversations").await.status, 200);
    let user_at = |requests: Vec<Recorded>| requests.last().and_then(Recorded::user);
    let support_user = user_at(apps.support_requests("/v1/conversations")).expect("a user");
    let sales_user = user_at(apps.sales_requests("/v1/conversations")).expect("a user");
    assert_eq!(support_user, sales_user, "one cookie, one identity");

    let other = apps.app.new_browser();
    assert_eq!(other.get("/apps/sales/conversations").await.status, 200);
    let stranger = user_at(apps.sales_requests("/v1/conversations")).expect("a user");
    assert_ne!(stranger, sales_user);
}

#[tokio::test]
async fn an_unknown_app_is_not_found_and_reaches_no_dify() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    b.post_json("/apps/billing/chat", &blocking("hi"))
        .await
        .assert_error(404, "not_found");
    for path in [
        "/apps/billing/conversations",
        "/apps/billing/parameters",
        "/apps/billing/",
        "/apps/Support/info",
        "/apps/support%2F..%2Fsales/info",
    ] {
        b.get(path).await.assert_error(404, "not_found");
    }
    assert!(
        apps.app.emulator.requests().is_empty(),
        "support's Dify was called"
    );
    assert!(apps.sales.requests().is_empty(), "sales' Dify was called");
}

#[tokio::test]
async fn with_named_apps_the_root_api_routes_do_not_exist() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    b.post_json("/chat", &blocking("hi"))
        .await
        .assert_error(404, "not_found");
    b.get("/conversations").await.assert_error(404, "not_found");
    assert!(apps.app.emulator.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Limits count per identity across apps

#[tokio::test]
async fn the_rate_limit_counts_one_identity_across_apps() {
    let apps = TwoApps::spawn_with(
        vars(&[("RATE_LIMIT_PER_MINUTE", "2")]),
        support_options(),
        sales_options(),
    )
    .await;
    let b = apps.browser();
    assert_eq!(
        b.post_json("/apps/support/chat", &blocking("1"))
            .await
            .status,
        200
    );
    assert_eq!(
        b.post_json("/apps/sales/chat", &blocking("2")).await.status,
        200
    );
    b.post_json("/apps/sales/chat", &blocking("3"))
        .await
        .assert_error(429, "rate_limited");
    b.post_json("/apps/support/chat", &blocking("3"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(apps.sales_requests("/v1/chat-messages").len(), 1);
    let other = apps.app.new_browser();
    assert_eq!(
        other
            .post_json("/apps/sales/chat", &blocking("hi"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_stream_limit_counts_one_identity_across_apps() {
    let slow = |o: EmulatorOptions| EmulatorOptions {
        slow_interval: Duration::from_millis(500),
        ..o
    };
    let apps = TwoApps::spawn_with(
        vars(&[("MAX_STREAMS_PER_IDENTITY", "1")]),
        slow(support_options()),
        slow(sales_options()),
    )
    .await;
    let b = apps.browser();
    let held = b
        .request(Method::POST, "/apps/support/chat")
        .json(&json!({"query": "SLOW please"}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    b.post_json("/apps/sales/chat", &json!({"query": "SLOW too"}))
        .await
        .assert_error(429, "rate_limited");
    assert!(apps.sales_requests("/v1/chat-messages").is_empty());
    drop(held);
}

// ---------------------------------------------------------------------------------------------
// The app list, the page and the files

#[tokio::test]
async fn get_apps_lists_each_app_with_the_title_description_and_mode_of_its_info() {
    let apps = TwoApps::spawn().await;
    let res = apps.browser().get("/apps").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        json!({"data": [
            {"name": "support", "title": "Support bot", "description": "Answers product questions.", "mode": "chat"},
            {"name": "sales", "title": "Sales helper", "description": "Quotes and plans.", "mode": "advanced-chat"},
        ]})
    );
    // Cached like the settings, and asked for a user like every browser's call.
    apps.browser().get("/apps").await;
    let asked = apps.sales_requests("/v1/info");
    assert_eq!(asked.len(), 1, "the info is cached");
    assert!(asked[0].user().is_some(), "the call carries the user");
}

#[tokio::test]
async fn an_app_whose_info_fails_is_still_listed_by_its_name() {
    let apps = TwoApps::spawn().await;
    apps.sales.script(
        "GET",
        "/info",
        Reply::json(
            500,
            &json!({"code": "internal_server_error", "message": "boom", "status": 500}),
        ),
    );
    let res = apps.browser().get("/apps").await;
    assert_eq!(res.status, 200);
    let data = res.json()["data"].clone();
    assert_eq!(data[0]["title"], "Support bot");
    assert_eq!(
        data[1],
        json!({"name": "sales", "title": "sales", "description": "", "mode": null})
    );
}

#[tokio::test]
async fn each_apps_settings_come_from_its_own_dify() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    let support = b.get("/apps/support/parameters").await.json();
    let sales = b.get("/apps/sales/parameters").await.json();
    assert_eq!(support["opening_statement"], Value::Null);
    assert_eq!(sales["opening_statement"], "Welcome to sales!");
    assert_eq!(
        b.get("/apps/sales/info").await.json()["name"],
        "Sales helper"
    );
}

#[tokio::test]
async fn each_apps_page_is_served_under_its_path() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    let root = b.get("/").await;
    let page = b.get("/apps/sales/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.body, root.body,
        "the same page, which finds its app in its address"
    );
    assert!(page.header("content-security-policy").is_some());
    let script = b.get("/apps/sales/js/api.js").await;
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .unwrap()
            .contains("javascript")
    );

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bare = no_redirects.get(b.url("/apps/sales")).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/apps/sales/");
}

#[tokio::test]
async fn the_redirect_to_an_apps_page_keeps_the_query() {
    let apps = TwoApps::spawn().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bare = no_redirects
        .get(apps.browser().url("/apps/sales?x=1&lang=zh-Hans"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/apps/sales/?x=1&lang=zh-Hans");
}

#[tokio::test]
async fn site_of_an_app_without_webapp_settings_is_404_not_found_under_its_path() {
    let apps = TwoApps::spawn().await;
    apps.sales.script("GET", "/v1/site", no_site_row());
    apps.browser()
        .get("/apps/sales/site")
        .await
        .assert_error(404, "not_found");
    assert_eq!(apps.sales_requests("/v1/site").len(), 1);
}

async fn upload_to(b: &Browser, path: &str, bytes: &'static [u8]) -> String {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes)
            .file_name("notes.txt")
            .mime_str("text/plain")
            .unwrap(),
    );
    let res = b.send(b.request(Method::POST, path).multipart(form)).await;
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn signed_file_urls_load_from_the_apps_own_dify_under_its_path() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    let id = upload_to(b, "/apps/sales/files/upload", b"sales notes").await;
    assert_eq!(apps.sales_requests("/v1/files/upload").len(), 1);
    let signed = apps.sales.signed_file_url(&id);

    let res = b.get(&format!("/apps/sales{signed}")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.body.as_ref(), b"sales notes");
    let sent = &apps.sales_requests(&format!("/files/{id}/file-preview"))[0];
    assert_eq!(sent.header("authorization"), None, "no key on file URLs");

    // Support's Dify does not have it; the root has no files when the origins differ.
    b.get(&format!("/apps/support{signed}"))
        .await
        .assert_error(404, "not_found");
    b.get(&signed).await.assert_error(404, "not_found");
    assert_eq!(
        apps.sales_requests(&format!("/files/{id}/file-preview"))
            .len(),
        1
    );
}

#[tokio::test]
async fn the_root_file_route_serves_named_apps_that_share_one_dify_origin() {
    let app = TestApp::spawn_with_config(vec![], support_options(), |config| {
        let base = config
            .dify_base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        config.apps = AppsConfig {
            apps: vec![
                app("support", API_KEY, &base),
                app("helpdesk", API_KEY, &base),
            ],
            named: true,
        };
    })
    .await;
    let id = upload_to(&app.browser, "/apps/helpdesk/files/upload", b"shared").await;
    let res = app.browser.get(&app.emulator.signed_file_url(&id)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.body.as_ref(), b"shared");
}

// ---------------------------------------------------------------------------------------------
// Operations: readiness, metrics, logs

#[tokio::test]
async fn readyz_names_the_apps_whose_key_is_refused_or_whose_dify_is_down() {
    let closed = free_port();
    let down = app(
        "archive",
        "app-ArchiveKey0000000000000",
        &format!("http://127.0.0.1:{closed}/v1"),
    );
    let apps = TwoApps::spawn_adding(vec![], support_options(), sales_options(), vec![down]).await;
    apps.sales.script(
        "GET",
        "/info",
        Reply::json(
            401,
            &json!({"code": "unauthorized", "message": "Access token is invalid", "status": 401}),
        ),
    );
    let res = apps.browser().get("/readyz").await;
    res.assert_error(503, "not_ready");
    let body = res.json();
    assert_eq!(body["apps"], json!(["sales", "archive"]), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("sales") && message.contains("archive"),
        "{message}"
    );
    assert!(!message.contains("support"), "{message}");
    assert!(!message.contains("127.0.0.1"), "names only: {message}");
}

#[tokio::test]
async fn readyz_is_200_when_every_app_is_ready() {
    let apps = TwoApps::spawn().await;
    let res = apps.browser().get("/readyz").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(apps.support_requests("/v1/info").len(), 1);
    assert_eq!(apps.sales_requests("/v1/info").len(), 1);
}

#[tokio::test]
async fn metrics_label_requests_streams_and_upstream_calls_with_the_app() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    let body = read_stream(
        b.request(Method::POST, "/apps/sales/chat")
            .json(&json!({"query": "count me"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(sse_events(&body).last().unwrap()["event"], "message_end");
    b.post_json("/apps/nobody/chat", &blocking("hi")).await;
    let text = b.get("/metrics").await.text();
    for needle in [
        "difybff_http_requests_total{method=\"POST\",route=\"/apps/{name}/chat\",app=\"sales\",status=\"200\"}",
        "difybff_app_streams_total{app=\"sales\"}",
        "difybff_upstream_calls_total{app=\"sales\",outcome=\"2xx\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(!text.contains("nobody"), "an unknown name adds no series");
}

/// The access log line of the request `res` answers.
fn access_line(res: &TestResponse) -> Value {
    let request_id = res.header("x-request-id").expect("a request id");
    logs::captured()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "request" && l["request_id"] == request_id)
        .expect("the request's log line")
}

#[tokio::test]
async fn the_access_log_line_names_the_app() {
    let apps = TwoApps::spawn().await;
    let res = apps.browser().get("/apps/sales/conversations").await;
    assert_eq!(res.status, 200);
    let line = access_line(&res);
    assert_eq!(line["app"], "sales", "{line}");
    assert_eq!(line["route"], "/apps/{name}/conversations", "{line}");
}

#[tokio::test]
async fn no_key_shows_in_any_response_or_log_line_of_either_app() {
    let apps = TwoApps::spawn().await;
    apps.sales.script(
        "GET",
        "/conversations",
        Reply::json(
            401,
            &json!({"code": "unauthorized", "message": "Access token is invalid", "status": 401}),
        ),
    );
    let b = apps.browser();
    for name in ["support", "sales"] {
        // Every response is scanned for both keys as it is read (support::TestResponse).
        b.post_json(&format!("/apps/{name}/chat"), &blocking("hi"))
            .await;
        read_stream(
            b.request(Method::POST, &format!("/apps/{name}/chat"))
                .json(&json!({"query": "stream"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        b.get(&format!("/apps/{name}/conversations")).await;
        b.get(&format!("/apps/{name}/parameters")).await;
        b.get(&format!("/apps/{name}/info")).await;
        b.get(&format!("/apps/{name}/meta")).await;
    }
    b.get("/apps").await;
    b.get("/readyz").await;
    b.get("/metrics").await;
    let log = logs::captured();
    for key in [API_KEY, SECOND_API_KEY] {
        assert!(!log.contains(key), "a key in the logs");
    }
}

#[tokio::test]
async fn one_app_keeps_the_root_routes_and_has_no_app_list() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.browser.post_json("/chat", &blocking("hi")).await.status,
        200
    );
    app.browser
        .get("/apps")
        .await
        .assert_error(404, "not_found");
    app.browser
        .get("/apps/default/conversations")
        .await
        .assert_error(404, "not_found");
}

// ---------------------------------------------------------------------------------------------
// The binary: configuration errors and the start-up log

#[test]
fn each_bad_apps_configuration_exits_2_naming_the_variable_and_entry_never_the_key() {
    let key = "app-NeverEchoedKey0123456789";
    let apps_file = std::env::temp_dir().join(format!("dify-bff-apps-{}", uuid::Uuid::new_v4()));
    std::fs::write(
        &apps_file,
        format!("# team\nsupport={key}\nsupport={key}\n"),
    )
    .unwrap();
    let apps_file = apps_file.display().to_string();
    // The environment, the variable the line names, and the entry (or cause) it names.
    type Case = (Vec<(&'static str, String)>, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![("DIFY_APPS", format!("={key}"))],
            "DIFY_APPS",
            "entry 1",
        ),
        (
            vec![("DIFY_APPS", format!("ok={key},Bad={key}"))],
            "DIFY_APPS",
            "entry 2",
        ),
        (
            vec![("DIFY_APPS", format!("a={key},a={key}"))],
            "DIFY_APPS",
            "\"a\"",
        ),
        (vec![("DIFY_APPS", "a=".to_owned())], "DIFY_APPS", "\"a\""),
        (
            vec![("DIFY_APPS", format!("a={key}@nope"))],
            "DIFY_APPS",
            "\"a\"",
        ),
        (vec![("DIFY_APPS", key.to_owned())], "DIFY_APPS", "entry 1"),
        (
            vec![("DIFY_APPS_FILE", apps_file.clone())],
            "DIFY_APPS_FILE",
            "line 3",
        ),
        (
            vec![("DIFY_APPS_FILE", "/no/such/file".to_owned())],
            "DIFY_APPS_FILE",
            "read",
        ),
        (
            vec![("DIFY_API_KEY_FILE", "/no/such/file".to_owned())],
            "DIFY_API_KEY_FILE",
            "read",
        ),
        (
            vec![
                ("DIFY_API_KEY", key.to_owned()),
                ("DIFY_APPS", format!("a={key}")),
            ],
            "DIFY_APPS",
            "DIFY_API_KEY",
        ),
    ];
    for (env, var, names) in cases {
        let mut cmd = command();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(var) && err.contains(names), "{env:?}: {err}");
        assert!(!err.contains(key), "the key was echoed: {err}");
        assert!(out.stdout.is_empty());
    }
    let _ = std::fs::remove_file(&apps_file);
}

#[test]
fn start_up_logs_each_app_with_its_redacted_base_url_never_a_key() {
    let port = free_port();
    let key_a = "app-StartupKeyAAAAAAAAAAAAAAAA";
    let key_b = "app-StartupKeyBBBBBBBBBBBBBBBB";
    let mut child = command()
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env(
            "DIFY_APPS",
            format!("support={key_a},sales={key_b}@https://ops:hunter2@dify.example.com/v1"),
        )
        .env("DIFY_BASE_URL", "http://127.0.0.1:9/v1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    wait_healthy(port);
    drop(running);
    let text: String = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>()
        .join("\n");
    let served: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "serving a Dify app")
        .collect();
    assert_eq!(served.len(), 2, "{text}");
    assert_eq!(served[0]["app"], "support");
    assert_eq!(served[0]["upstream"], "http://127.0.0.1:9/v1/");
    assert_eq!(served[1]["app"], "sales");
    assert_eq!(served[1]["upstream"], "https://***@dify.example.com/v1/");
    for secret in [key_a, key_b, "hunter2"] {
        assert!(!text.contains(secret), "a secret in the start-up log");
    }
}

// ---------------------------------------------------------------------------------------------
// The Dify-compatible gateway with several apps (API.md §6)

async fn gateway_info(
    b: &Browser,
    path: &str,
    bearer: Option<&str>,
) -> crate::support::TestResponse {
    let mut request = b.request(Method::GET, path);
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    b.send(request).await
}

#[tokio::test]
async fn the_gateway_under_an_apps_path_calls_that_apps_dify_with_its_key() {
    let apps = TwoApps::spawn().await;
    let res = gateway_info(apps.browser(), "/apps/sales/v1/info", Some("anything")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["name"], "Sales helper");
    let sales = apps.sales_requests("/v1/info");
    assert_eq!(sales.len(), 1);
    assert_eq!(
        sales[0].header("authorization"),
        Some(format!("Bearer {SECOND_API_KEY}").as_str())
    );
    assert!(apps.support_requests("/v1/info").is_empty());
}

#[tokio::test]
async fn the_plain_gateway_picks_the_app_named_by_the_bearer_token() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    let res = gateway_info(b, "/v1/info", Some("support")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["name"], "Support bot");
    let res = gateway_info(b, "/v1/info", Some("sales")).await;
    assert_eq!(res.json()["name"], "Sales helper");
}

#[tokio::test]
async fn the_plain_gateway_refuses_an_unknown_or_missing_app_name_with_401() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    gateway_info(b, "/v1/info", Some("marketing"))
        .await
        .assert_error(401, "unauthorized");
    gateway_info(b, "/v1/info", None)
        .await
        .assert_error(401, "unauthorized");
    assert!(apps.support_requests("/v1/info").is_empty());
    assert!(apps.sales_requests("/v1/info").is_empty());
}

#[tokio::test]
async fn the_plain_gateway_labels_request_metrics_with_the_app_the_bearer_token_names() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    assert_eq!(gateway_info(b, "/v1/info", Some("sales")).await.status, 200);
    let streamed = b
        .request(Method::POST, "/v1/chat-messages")
        .bearer_auth("sales")
        .json(&json!({"inputs": {}, "query": "count me", "response_mode": "streaming"}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let body = read_stream(streamed).await;
    assert_eq!(sse_events(&body).last().unwrap()["event"], "message_end");
    let text = b.get("/metrics").await.text();
    for needle in [
        "difybff_http_requests_total{method=\"GET\",route=\"/v1/{*path}\",app=\"sales\",status=\"200\"}",
        "difybff_http_requests_total{method=\"POST\",route=\"/v1/{*path}\",app=\"sales\",status=\"200\"}",
        "difybff_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/{*path}\",app=\"sales\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[tokio::test]
async fn a_gateway_stream_counts_among_its_apps_streams() {
    // An app no other test streams on: the metrics are the process's, shared by every test.
    let ledger = TestApp::spawn_with_config(vec![], EmulatorOptions::default(), |config| {
        let base = config
            .dify_base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        config.apps = AppsConfig {
            apps: vec![app("ledger", API_KEY, &base)],
            named: true,
        };
    })
    .await;
    let b = &ledger.browser;
    let streamed = b
        .request(Method::POST, "/apps/ledger/v1/chat-messages")
        .json(&json!({"inputs": {}, "query": "count me", "response_mode": "streaming"}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let body = read_stream(streamed).await;
    assert_eq!(sse_events(&body).last().unwrap()["event"], "message_end");
    let text = b.get("/metrics").await.text();
    assert!(
        text.contains("difybff_app_streams_total{app=\"ledger\"} 1"),
        "no stream counted for the app in:\n{text}"
    );
}

#[tokio::test]
async fn the_plain_gateway_access_log_line_names_the_app_the_bearer_token_names() {
    let apps = TwoApps::spawn().await;
    let res = gateway_info(apps.browser(), "/v1/info", Some("sales")).await;
    assert_eq!(res.status, 200);
    let line = access_line(&res);
    assert_eq!(line["app"], "sales", "{line}");
    assert_eq!(line["route"], "/v1/{*path}", "{line}");
}

#[tokio::test]
async fn unknown_bearer_names_add_no_label_values_and_count_under_the_empty_app() {
    let apps = TwoApps::spawn().await;
    let b = apps.browser();
    let names = ["intruder-a1", "intruder-b2", "intruder-c3"];
    for name in names {
        gateway_info(b, "/v1/info", Some(name))
            .await
            .assert_error(401, "unauthorized");
    }
    let text = b.get("/metrics").await.text();
    for name in names {
        assert!(!text.contains(name), "{name} became a label in:\n{text}");
    }
    let refused =
        "difybff_http_requests_total{method=\"GET\",route=\"/v1/{*path}\",app=\"\",status=\"401\"}";
    assert!(text.contains(refused), "missing {refused} in:\n{text}");
}
