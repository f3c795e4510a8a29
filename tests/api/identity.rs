//! Who the Dify `user` is: a signed cookie per browser; the browser never chooses it.

use crate::support::raw::raw;
use crate::support::{Browser, TestApp, assert_nothing_reached_dify, blocking, preflight, vars};
use reqwest::Method;
use serde_json::json;

fn set_cookie(res: &crate::support::TestResponse) -> Option<String> {
    res.header("set-cookie").map(str::to_owned)
}

fn users_sent(app: &TestApp) -> Vec<String> {
    app.emulator
        .requests()
        .iter()
        .filter_map(|r| r.user())
        .collect()
}

#[tokio::test]
async fn a_first_request_gets_a_signed_http_only_lax_cookie() {
    let app = TestApp::spawn().await;
    let res = app.browser.get("/conversations").await;
    assert_eq!(res.status, 200);
    let cookie = set_cookie(&res).expect("a cookie is issued");
    assert!(cookie.starts_with("dify_bff_uid="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: no Secure flag: {cookie}"
    );
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_request_came_over_https() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(reqwest::Method::GET, "/conversations")
                .header("x-forwarded-proto", "https"),
        )
        .await;
    assert!(set_cookie(&res).unwrap().contains("Secure"));
}

#[tokio::test]
async fn same_site_none_forces_secure() {
    let app = TestApp::spawn_with_env(vec![("COOKIE_SAMESITE", "None".into())]).await;
    let res = app.browser.get("/conversations").await;
    let cookie = set_cookie(&res).unwrap();
    assert!(
        cookie.contains("SameSite=None") && cookie.contains("Secure"),
        "{cookie}"
    );
}

#[tokio::test]
async fn the_same_cookie_maps_to_the_same_dify_user() {
    let app = TestApp::spawn().await;
    let first = app.browser.get("/conversations").await;
    assert!(set_cookie(&first).is_some());
    let second = app.browser.get("/conversations").await;
    assert!(
        set_cookie(&second).is_none(),
        "a valid cookie is not replaced"
    );
    let users = users_sent(&app);
    assert_eq!(users.len(), 2);
    assert_eq!(users[0], users[1]);
}

#[tokio::test]
async fn a_tampered_cookie_gets_a_fresh_identity() {
    let app = TestApp::spawn().await;
    let first = app.browser.get("/conversations").await;
    let cookie = set_cookie(&first).unwrap();
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("dify_bff_uid=");
    // Flip one character of the id part (after the signature).
    let mut tampered: Vec<char> = value.chars().collect();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == 'a' { 'b' } else { 'a' };
    let tampered: String = tampered.into_iter().collect();
    let res = app
        .browser
        .send(
            reqwest::Client::new()
                .get(app.browser.url("/conversations"))
                .header("cookie", format!("dify_bff_uid={tampered}")),
        )
        .await;
    assert!(
        set_cookie(&res).is_some(),
        "a fresh cookie replaces the tampered one"
    );
    let users = users_sent(&app);
    assert_ne!(users[0], users[1]);
}

#[tokio::test]
async fn a_cookie_signed_with_another_secret_is_treated_as_absent() {
    let other = TestApp::spawn_with_env(vec![(
        "SESSION_SECRET",
        "another-secret-of-at-least-thirty-two-bytes!!".into(),
    )])
    .await;
    let foreign = set_cookie(&other.browser.get("/conversations").await).unwrap();
    let foreign_pair = foreign.split(';').next().unwrap().to_owned();

    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            reqwest::Client::new()
                .get(app.browser.url("/conversations"))
                .header("cookie", foreign_pair),
        )
        .await;
    assert!(set_cookie(&res).is_some());
    let foreign_user = users_sent(&other)[0].clone();
    assert_ne!(users_sent(&app)[0], foreign_user);
}

#[tokio::test]
async fn two_browsers_never_see_each_others_conversations_or_messages() {
    let app = TestApp::spawn().await;
    let alice = app.new_browser();
    let bob = app.new_browser();
    let answer = alice.chat_blocking("hello from alice", "").await;
    let conversation = answer["conversation_id"].as_str().unwrap().to_owned();

    let alices = alice.get("/conversations").await.json();
    assert_eq!(alices["data"].as_array().unwrap().len(), 1);
    let bobs = bob.get("/conversations").await.json();
    assert_eq!(bobs["data"].as_array().unwrap().len(), 0);

    let path = format!("/messages?conversation_id={conversation}");
    assert_eq!(alice.get(&path).await.status, 200);
    bob.get(&path).await.assert_error(404, "not_found");

    let res = bob
        .chat(&json!({"query": "let me in", "conversation_id": conversation, "response_mode": "blocking"}))
        .await;
    res.assert_error(404, "not_found");
}

#[tokio::test]
async fn a_user_query_parameter_or_body_field_is_ignored() {
    let app = TestApp::spawn().await;
    let victim = app.new_browser();
    victim.chat_blocking("victim's secret plan", "").await;
    let victim_user = users_sent(&app)[0].clone();

    let attacker: Browser = app.new_browser();
    let res = attacker
        .get(&format!("/conversations?user={victim_user}"))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["data"].as_array().unwrap().len(), 0);
    let sent = app.upstream_requests("/v1/conversations");
    let sent = sent.last().unwrap();
    assert_ne!(
        sent.query_param("user").as_deref(),
        Some(victim_user.as_str())
    );
    let users_in_query = sent
        .query
        .as_deref()
        .unwrap_or_default()
        .matches("user=")
        .count();
    assert_eq!(
        users_in_query, 1,
        "exactly one user parameter: {:?}",
        sent.query
    );

    attacker
        .chat(&json!({"query": "hi", "user": victim_user, "response_mode": "blocking"}))
        .await;
    let sent = app.upstream_requests("/v1/chat-messages");
    assert_ne!(sent.last().unwrap().user().unwrap(), victim_user);
}

#[tokio::test]
async fn unknown_body_fields_are_not_forwarded() {
    let app = TestApp::spawn().await;
    app.browser
        .chat(&json!({"query": "hi", "response_mode": "blocking", "evil": "x", "retriever_from": "dev", "inputs": {"topic": "kept"}}))
        .await;
    let sent = app.upstream_requests("/v1/chat-messages");
    let body = sent.last().unwrap().json().unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "conversation_id",
            "inputs",
            "query",
            "response_mode",
            "user"
        ]
    );
    assert_eq!(body["inputs"], json!({"topic": "kept"}));
}

// ---------------------------------------------------------------------------------------------
// Trusted-header identity (USER_HEADER, behind an authenticating proxy)

const USER_HEADER: &str = "X-Forwarded-User";
const FRIEND: &str = "https://app.example";

async fn header_mode(extra: &[(&'static str, &str)]) -> TestApp {
    let mut all = vars(&[
        ("USER_HEADER", USER_HEADER),
        ("TRUSTED_PROXIES", "127.0.0.1/32,::1/128"),
    ]);
    all.extend(vars(extra));
    TestApp::spawn_with_env(all).await
}

#[tokio::test]
async fn header_mode_makes_the_header_value_the_dify_user() {
    let app = header_mode(&[]).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header(USER_HEADER, "alice@example.com"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = app.upstream_requests("/v1/conversations");
    assert_eq!(sent[0].user().as_deref(), Some("alice@example.com"));
}

#[tokio::test]
async fn header_mode_without_the_header_is_401_and_reaches_no_upstream() {
    let app = header_mode(&[]).await;
    app.browser
        .get("/conversations")
        .await
        .assert_error(401, "unauthorized");
    app.browser
        .chat(&blocking("hi"))
        .await
        .assert_error(401, "unauthorized");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn header_mode_accepts_1_to_255_printable_characters() {
    let app = header_mode(&[]).await;
    let max_ascii = "a".repeat(255);
    let max_unicode = "é".repeat(255);
    for user in [
        "x",
        max_ascii.as_str(),
        max_unicode.as_str(),
        "Jane Doe (SSO)",
    ] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::GET, "/conversations")
                    .header(USER_HEADER, user),
            )
            .await;
        assert_eq!(
            res.status,
            200,
            "{} chars: {}",
            user.chars().count(),
            res.text()
        );
    }
    let users: Vec<String> = app
        .upstream_requests("/v1/conversations")
        .iter()
        .filter_map(|r| r.user())
        .collect();
    assert_eq!(users[2], max_unicode);
}

#[tokio::test]
async fn header_mode_refuses_over_long_unprintable_or_non_utf8_identities() {
    let app = header_mode(&[]).await;
    let too_long = "a".repeat(256);
    let bad: [&[u8]; 6] = [
        too_long.as_bytes(),
        b"alice\tbob",
        b"\xff\xfe alice",
        "al\u{200B}ice".as_bytes(),
        "\u{202E}ecila".as_bytes(),
        "alice\u{2028}bob".as_bytes(),
    ];
    for value in bad {
        let header = reqwest::header::HeaderValue::from_bytes(value).expect("a header value");
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::GET, "/conversations")
                    .header(USER_HEADER, header),
            )
            .await;
        res.assert_error(401, "unauthorized");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn header_mode_refuses_a_repeated_identity_header() {
    let app = header_mode(&[]).await;
    let res = raw(
        &app,
        "GET",
        "/conversations",
        &format!("{USER_HEADER}: alice\r\n{USER_HEADER}: bob\r\n"),
    )
    .await;
    res.assert_error(401, "unauthorized");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn header_mode_issues_no_cookie() {
    let app = header_mode(&[]).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header(USER_HEADER, "alice"),
        )
        .await;
    assert_eq!(res.status, 200);
    assert!(res.header("set-cookie").is_none(), "{:?}", res.headers);
    let refused = app.browser.get("/conversations").await;
    assert!(refused.header("set-cookie").is_none());
}

#[tokio::test]
async fn header_mode_refuses_every_request_from_an_untrusted_peer() {
    let app = header_mode(&[("TRUSTED_PROXIES", "10.0.0.0/8")]).await;
    for (method, path) in [
        (Method::GET, "/conversations"),
        (Method::GET, "/parameters"),
        (Method::POST, "/chat"),
    ] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(method, path)
                    .header(USER_HEADER, "alice")
                    .json(&blocking("hi")),
            )
            .await;
        res.assert_error(401, "unauthorized");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn header_mode_believes_a_trusted_peer() {
    let app = header_mode(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.0/8")]).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header(USER_HEADER, "alice")
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = app.upstream_requests("/v1/chat-messages");
    assert_eq!(sent[0].user().as_deref(), Some("alice"));
}

#[tokio::test]
async fn header_mode_answers_no_preflight_from_an_untrusted_peer() {
    let app = header_mode(&[
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ("ALLOWED_ORIGINS", FRIEND),
    ])
    .await;
    let res = app.browser.send(preflight(&app, FRIEND)).await;
    res.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn header_mode_probes_still_answer_an_untrusted_peer() {
    let app = header_mode(&[("TRUSTED_PROXIES", "10.0.0.0/8")]).await;
    assert_eq!(app.browser.get("/healthz").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Forged identities

/// A `dify_bff_uid` cookie carrying `id`, signed with a key made from `secret` as the proxy does.
fn signed_cookie(id: &str, secret: &str) -> String {
    use sha2::{Digest, Sha512};
    let key = cookie::Key::from(&Sha512::digest(secret.as_bytes()));
    let mut jar = cookie::CookieJar::new();
    jar.signed_mut(&key)
        .add(cookie::Cookie::new("dify_bff_uid", id.to_owned()));
    let value = jar
        .get("dify_bff_uid")
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    format!("dify_bff_uid={value}")
}

#[tokio::test]
async fn a_cookie_not_signed_with_our_secret_never_maps_to_the_id_it_names() {
    let app = TestApp::spawn().await;
    app.browser.chat_blocking("the victim's chat", "").await;
    let victim = app.upstream_requests("/v1/chat-messages")[0]
        .user()
        .unwrap_or_default();

    // The harness secret really is what signs our cookies: a cookie made with it is accepted.
    let genuine = signed_cookie(&victim, crate::support::SESSION_SECRET);
    let res = app
        .browser
        .send(
            reqwest::Client::new()
                .get(app.browser.url("/conversations"))
                .header("cookie", genuine),
        )
        .await;
    assert!(res.header("set-cookie").is_none());
    assert_eq!(res.json()["data"].as_array().map(Vec::len), Some(1));

    for forged in [
        signed_cookie(&victim, "another-secret-of-at-least-thirty-two-bytes!!"),
        format!("dify_bff_uid={victim}"),
        signed_cookie(&victim, "").replace("dify_bff_uid=", "dify_bff_uid=AAAA"),
    ] {
        let res = app
            .browser
            .send(
                reqwest::Client::new()
                    .get(app.browser.url("/conversations"))
                    .header("cookie", forged),
            )
            .await;
        assert_eq!(res.status, 200);
        assert!(res.header("set-cookie").is_some(), "a fresh identity");
        assert_eq!(
            res.json()["data"].as_array().map(Vec::len),
            Some(0),
            "nothing of the victim's"
        );
        let sent = app.upstream_requests("/v1/conversations");
        assert_ne!(sent.last().and_then(|r| r.user()), Some(victim.clone()));
    }
}
