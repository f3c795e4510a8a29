//! Who the Dify `user` is: a signed cookie per browser; the browser never chooses it.


use crate::support::{Browser, TestApp};
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
