//! `POST /files/upload` streamed to Dify with our `user`, its limits and errors; and the
//! pass-through of the signed file URLs Dify puts into messages, which reaches only those paths.

use std::time::Duration;

use crate::support::{TestApp, TestResponse};
use bytes::Bytes;
use dify_emulator::{Recorded, Reply};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUNDARY: &str = "----dify-bff-test-boundary-7MA4YWxkTrZu0gW";
const UPLOAD: &str = "/v1/files/upload";
const LIMIT: usize = 65_536;
const ONE_MB: usize = 1024 * 1024;
const UNKNOWN_ID: &str = "6d31eee3-c172-45bd-8d9c-fcc6fd5f8211";
/// A liveness bound for things that happen "at once".
const SOON: Duration = Duration::from_secs(2);

/// The 73-byte PNG of capture 35.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x44, 0x0c, 0x0c, 0x00, 0x1f, 0xf4, 0x03, 0xfd, 0x5f, 0xd6, 0xcd, 0x36, 0x00, 0x00, 0x00, 0x00,
    0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82, 0x00,
];

/// One multipart part: a text field, or a file when it has a filename.
struct Part<'a> {
    name: &'a str,
    filename: Option<&'a str>,
    content_type: Option<&'a str>,
    body: &'a [u8],
}

fn text<'a>(name: &'a str, value: &'a str) -> Part<'a> {
    Part {
        name,
        filename: None,
        content_type: None,
        body: value.as_bytes(),
    }
}

fn file<'a>(name: &'a str, filename: &'a str, content_type: &'a str, body: &'a [u8]) -> Part<'a> {
    Part {
        name,
        filename: Some(filename),
        content_type: Some(content_type),
        body,
    }
}

fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(filename) = part.filename {
            disposition.push_str(&format!("; filename=\"{filename}\""));
        }
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = part.content_type {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

async fn upload(app: &TestApp, body: Vec<u8>) -> TestResponse {
    app.browser
        .send(
            app.browser
                .request(Method::POST, "/files/upload")
                .header("content-type", multipart_type())
                .body(body),
        )
        .await
}

/// A file part whose `Content-Disposition` is written as given.
fn disposed(disposition: &str) -> Vec<u8> {
    let mut out = format!("--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n").into_bytes();
    out.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhello\r\n");
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// Werkzeug reads `filename*` (RFC 5987) and parameter names in any case; such a part is the
/// file, not a text field.
#[tokio::test]
async fn a_file_named_by_filename_star_or_in_capitals_is_uploaded() {
    let app = TestApp::spawn().await;
    for disposition in [
        "form-data; name=\"file\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt",
        "form-data; name=\"file\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt; filename=\"resume.txt\"",
        "form-data; name=\"file\"; FILENAME=\"a.txt\"",
    ] {
        let res = upload(&app, disposed(disposition)).await;
        assert_eq!(res.status, 201, "{disposition}: {}", res.text());
    }
    assert_eq!(app.upstream_requests(UPLOAD).len(), 3);
}

/// Uploads a file through the proxy and returns Dify's id for it.
async fn uploaded(app: &TestApp, filename: &str, content_type: &str, bytes: &[u8]) -> String {
    let res = upload(
        app,
        multipart(&[file("file", filename, content_type, bytes)]),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()["id"].as_str().unwrap().to_owned()
}

/// The Dify `user` of the default browser, learnt from a harmless call.
async fn our_user(app: &TestApp) -> String {
    assert_eq!(app.browser.get("/conversations").await.status, 200);
    app.upstream_requests("/v1/conversations")
        .last()
        .and_then(Recorded::user)
        .expect("a user")
}

/// The upload the emulator received, once its body has ended (completely or not), if any.
async fn upload_received(app: &TestApp) -> Option<Recorded> {
    if app.upstream_requests(UPLOAD).is_empty() {
        return None;
    }
    let received = app
        .emulator
        .wait_for_request(|r| r.path == UPLOAD, SOON)
        .await
        .expect("the upstream upload ends at once");
    Some(received)
}

/// A `GET` written byte for byte on the socket, so that no client tidies the path first.
async fn raw_get(app: &TestApp, target: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// Upload

#[tokio::test]
async fn an_upload_is_relayed_with_our_user_part_and_difys_201() {
    let app = TestApp::spawn().await;
    let body = multipart(&[
        text("user", "someone-else"),
        file("file", "red-2x2.png", "image/png", PNG),
        text("note", "not for Dify"),
    ]);
    let res = upload(&app, body).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/json"));
    let answer = res.json();
    assert_eq!(answer["name"], "red-2x2.png");
    assert_eq!(answer["size"], PNG.len());
    assert_eq!(answer["extension"], "png");
    assert_eq!(answer["mime_type"], "image/png");

    let ours = our_user(&app).await;
    let stored = app
        .emulator
        .uploaded_file(answer["id"].as_str().unwrap())
        .expect("Dify has the file");
    assert_eq!(stored.bytes.as_ref(), PNG, "the file arrives unchanged");
    assert_eq!(stored.user, ours);

    let sent = &app.upstream_requests(UPLOAD)[0];
    assert_eq!(sent.user().as_deref(), Some(ours.as_str()));
    let sent_body = String::from_utf8_lossy(&sent.body);
    assert_eq!(
        sent_body.matches("name=\"user\"").count(),
        1,
        "exactly one user part, ours"
    );
    assert!(!sent_body.contains("someone-else"));
    assert!(
        !sent_body.contains("not for Dify"),
        "other parts are not forwarded"
    );
    assert!(
        sent.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer ")),
        "the upload is made with our key"
    );
}

#[tokio::test]
async fn a_non_ascii_file_name_arrives_unchanged() {
    let app = TestApp::spawn().await;
    let id = uploaded(&app, "会话 ✨ notes.txt", "text/plain", b"hi").await;
    let stored = app.emulator.uploaded_file(&id).unwrap();
    assert_eq!(stored.name, "会话 ✨ notes.txt");
    assert_eq!(stored.mime_type, "text/plain");
}

#[tokio::test]
async fn an_upload_larger_than_axums_default_body_limit_arrives_whole() {
    let app = TestApp::spawn().await;
    let content: Vec<u8> = (0..3 * ONE_MB).map(|i| (i % 251) as u8).collect();
    let res = upload(
        &app,
        multipart(&[file(
            "file",
            "data.bin",
            "application/octet-stream",
            &content,
        )]),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.json()["size"], content.len());
    let id = res.json()["id"].as_str().unwrap().to_owned();
    assert!(app.emulator.uploaded_file(&id).unwrap().bytes == content);
}

#[tokio::test]
async fn an_upload_reaches_dify_while_the_browser_is_still_sending() {
    let app = TestApp::spawn().await;
    let content = vec![b'a'; 200_000];
    let body = multipart(&[file("file", "big.txt", "text/plain", &content)]);
    let (first, rest) = body.split_at(100_000);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let request = app
        .browser
        .request(Method::POST, "/files/upload")
        .header("content-type", multipart_type())
        .body(reqwest::Body::wrap_stream(stream));
    let sending = tokio::spawn(request.send());
    tx.send(Bytes::copy_from_slice(first)).await.unwrap();

    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let received = app
            .upstream_requests(UPLOAD)
            .first()
            .map_or(0, |r| r.body_len);
        if received >= 50_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Dify got {received} bytes while the browser holds back the rest: the upload is buffered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(Bytes::copy_from_slice(rest)).await.unwrap();
    drop(tx);
    let res = TestResponse::read(sending.await.unwrap().unwrap()).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(app.emulator.uploaded_file(&id).unwrap().bytes, content);
}

#[tokio::test]
async fn an_upload_over_the_limit_with_content_length_is_413_before_dify_gets_it() {
    let app = TestApp::spawn_with_env(vec![("MAX_UPLOAD_BYTES", LIMIT.to_string())]).await;
    let content = vec![b'x'; ONE_MB];
    let body = multipart(&[file(
        "file",
        "big.bin",
        "application/octet-stream",
        &content,
    )]);
    let res = upload(&app, body).await;
    res.assert_error(413, "payload_too_large");
    if let Some(received) = upload_received(&app).await {
        assert!(received.body_len < content.len(), "{}", received.body_len);
    }
}

#[tokio::test]
async fn a_chunked_upload_over_the_limit_is_413_while_dify_gets_less_than_the_file() {
    let app = TestApp::spawn_with_env(vec![("MAX_UPLOAD_BYTES", LIMIT.to_string())]).await;
    let content = vec![b'x'; ONE_MB];
    let body = multipart(&[file(
        "file",
        "big.bin",
        "application/octet-stream",
        &content,
    )]);
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(16 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/files/upload")
                .header("content-type", multipart_type())
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                ))),
        )
        .await;
    res.assert_error(413, "payload_too_large");
    let received = upload_received(&app)
        .await
        .expect("the upload was streaming to Dify when the limit was hit");
    assert!(
        received.body_len < LIMIT + 16 * 1024,
        "Dify got {} bytes of a {} byte upload",
        received.body_len,
        content.len()
    );
}

#[tokio::test]
async fn an_upload_without_a_file_part_is_400_without_an_upstream_call() {
    let app = TestApp::spawn().await;
    for body in [
        multipart(&[text("user", "me"), text("note", "no file here")]),
        multipart(&[file("files", "a.png", "image/png", PNG)]),
        multipart(&[]),
    ] {
        upload(&app, body).await.assert_error(400, "invalid_param");
    }
    assert_eq!(app.upstream_count(), 0, "{:?}", app.emulator.requests());
}

#[tokio::test]
async fn a_malformed_multipart_body_is_400() {
    let app = TestApp::spawn().await;
    upload(&app, b"this is not multipart at all".to_vec())
        .await
        .assert_error(400, "invalid_param");
    assert_eq!(app.upstream_count(), 0);
}

#[tokio::test]
async fn an_upload_that_is_not_multipart_is_415_without_an_upstream_call() {
    let app = TestApp::spawn().await;
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = app
            .browser
            .request(Method::POST, "/files/upload")
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        app.browser.send(request)
    };
    send(Some("application/json"), "{\"file\": \"x\"}")
        .await
        .assert_error(415, "unsupported_media_type");
    send(Some("text/plain"), "x")
        .await
        .assert_error(415, "unsupported_media_type");
    send(Some("multipart/form-data"), "x")
        .await
        .assert_error(415, "unsupported_media_type");
    send(None, "x")
        .await
        .assert_error(415, "unsupported_media_type");
    assert_eq!(app.upstream_count(), 0);
}

#[tokio::test]
async fn difys_upload_errors_are_relayed_in_our_shape() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        "/files/upload",
        Reply::json(
            413,
            &json!({"code": "file_too_large", "message": "File size exceeded. {message}", "status": 413}),
        ),
    );
    app.emulator.script(
        "POST",
        "/files/upload",
        Reply::json(
            415,
            &json!({"code": "unsupported_file_type", "message": "File type not allowed.", "status": 415}),
        ),
    );
    let body = || multipart(&[file("file", "red.png", "image/png", PNG)]);
    upload(&app, body())
        .await
        .assert_error(413, "file_too_large");
    upload(&app, body())
        .await
        .assert_error(415, "unsupported_file_type");
}

// ---------------------------------------------------------------------------------------------
// Signed file URLs

#[tokio::test]
async fn a_file_preview_passes_through_with_the_signed_query_byte_for_byte() {
    let app = TestApp::spawn().await;
    let id = uploaded(&app, "notes 2026.txt", "text/plain", b"hello file").await;
    // Characters a re-encoding would change: %20, `~`, `*` and the signature's `=` padding.
    let url = format!(
        "{}&as_attachment=true&x=a%20b~c*",
        app.emulator.signed_file_url(&id)
    );
    let query = url.split_once('?').unwrap().1.to_owned();

    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, &url)
                .header("authorization", "Bearer browser-token")
                .header("cookie", "other=1"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.body.as_ref(), b"hello file");
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename*=UTF-8''notes%202026.txt")
    );

    let sent = &app.upstream_requests(&format!("/files/{id}/file-preview"))[0];
    assert_eq!(sent.query.as_deref(), Some(query.as_str()), "byte for byte");
    for header in ["authorization", "cookie", "x-trace-id"] {
        assert_eq!(
            sent.header(header),
            None,
            "{header} sent to Dify's file route"
        );
    }
    assert_eq!(sent.query_param("user"), None);
}

#[tokio::test]
async fn an_image_preview_passes_through_without_key_cookie_or_user() {
    let app = TestApp::spawn().await;
    let id = uploaded(&app, "red.png", "image/png", PNG).await;
    let url = app.emulator.signed_image_url(&id);
    let res = app.browser.get(&url).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.body.as_ref(), PNG);
    assert_eq!(res.header("content-type"), Some("image/png"));
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));

    let sent = &app.upstream_requests(&format!("/files/{id}/image-preview"))[0];
    assert_eq!(sent.query.as_deref(), url.split_once('?').map(|(_, q)| q));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.header("cookie"), None);
    assert_eq!(sent.user(), None);
}

#[tokio::test]
async fn an_uploaded_html_or_svg_file_cannot_run_script_on_our_origin() {
    let app = TestApp::spawn().await;
    let page =
        b"<html><script>fetch('/conversations').then(r => r.text()).then(steal)</script></html>";
    let svg =
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>steal(document.cookie)</script></svg>";
    for (name, content_type, bytes) in [
        ("page.html", "text/html", &page[..]),
        ("page.xhtml", "application/xhtml+xml", &page[..]),
        ("logo.svg", "image/svg+xml", &svg[..]),
    ] {
        let id = uploaded(&app, name, content_type, bytes).await;
        let mut urls = vec![app.emulator.signed_file_url(&id)];
        // Dify serves image-preview for image extensions only (svg is one).
        if name.ends_with(".svg") {
            urls.push(app.emulator.signed_image_url(&id));
        }
        for url in urls {
            let res = app.browser.get(&url).await;
            assert_eq!(res.status, 200, "{name}");
            assert_eq!(
                res.body.as_ref(),
                bytes,
                "{name}: the file itself is unchanged"
            );
            let csp = res.header("content-security-policy").unwrap_or_default();
            assert!(
                csp.contains("sandbox") && csp.contains("default-src 'none'"),
                "{name} served on our origin without a sandbox: {csp:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_tool_file_passes_through() {
    let app = TestApp::spawn().await;
    let url = app
        .emulator
        .add_tool_file(Bytes::from_static(PNG), "image/png", "png");
    let res = app.browser.get(&url).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.body.as_ref(), PNG);
    assert_eq!(res.header("content-type"), Some("image/png"));
    let path = url.split_once('?').unwrap().0;
    let sent = &app.upstream_requests(path)[0];
    assert_eq!(sent.query.as_deref(), url.split_once('?').map(|(_, q)| q));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.user(), None);
}

#[tokio::test]
async fn a_bad_signature_is_relayed_as_difys_403_in_our_shape() {
    let app = TestApp::spawn().await;
    let url = app
        .emulator
        .add_tool_file(Bytes::from_static(PNG), "image/png", "png")
        .replace("sign=", "sign=x");
    let res = app.browser.get(&url).await;
    res.assert_error(403, "forbidden");
    assert_eq!(res.json()["message"], "Invalid request.");
}

#[tokio::test]
async fn an_unknown_file_is_relayed_as_difys_404_in_our_shape() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .get(&app.emulator.signed_file_url(UNKNOWN_ID))
        .await;
    res.assert_error(404, "not_found");
    assert_eq!(
        res.json()["message"],
        "File not found or signature is invalid"
    );
}

#[tokio::test]
async fn an_html_error_page_from_the_file_route_becomes_json_in_our_shape() {
    let app = TestApp::spawn().await;
    let path = format!("/files/{UNKNOWN_ID}/file-preview");
    app.emulator.script(
        "GET",
        &path,
        Reply::html(404, "<!doctype html><title>404 Not Found</title>"),
    );
    app.browser
        .get(&format!("{path}?timestamp=1&nonce=2&sign=3"))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn difys_codeless_400_for_a_link_without_its_signature_becomes_invalid_param() {
    let app = TestApp::spawn().await;
    let path = format!("/files/{UNKNOWN_ID}/image-preview");
    // Dify 0.15.3's image-preview answers a missing signature with this ad-hoc body.
    app.emulator.script(
        "GET",
        &path,
        Reply::json(400, &json!({"content": "Invalid request."})),
    );
    app.browser
        .get(&path)
        .await
        .assert_error(400, "invalid_param");
}

#[tokio::test]
async fn no_other_path_reaches_dify() {
    let app = TestApp::spawn().await;
    let id = UNKNOWN_ID;
    let targets = [
        "/files/../v1/conversations".to_owned(),
        "/files/%2e%2e/v1/conversations".to_owned(),
        "/files/..%2fv1%2fconversations/file-preview".to_owned(),
        "/files/%2e%2e%2fv1%2fconversations/file-preview".to_owned(),
        format!("/files/{id}/other"),
        format!("/files/{id}/file-preview/extra"),
        format!("/files/{id}/../../v1/conversations"),
        format!("/files/{id}"),
        "/files/not-a-uuid/file-preview".to_owned(),
        format!("/files/tools/{id}"),
        format!("/files/tools/{id}."),
        format!("/files/tools/{id}.png/../../../v1/info"),
        format!("/files/tools/{id}.png%2f..%2f..%2fv1%2finfo"),
        "/files/tools/..%2f..%2fv1%2finfo.png".to_owned(),
        "/files/tools/../../v1/info".to_owned(),
        "/files/upload".to_owned(),
        // `/v1/…` is the Dify-compatible gateway (tests in gateway.rs); a GET of the upload is
        // still no way through.
        "/v1/files/upload".to_owned(),
    ];
    for target in &targets {
        let (status, body) = raw_get(&app, target).await;
        assert!((400..500).contains(&status), "{target}: {status} {body}");
        let error: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{target}: not JSON: {body}"));
        assert_eq!(error["status"], status, "{target}");
    }
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, &format!("/files/{id}/file-preview")),
        )
        .await;
    res.assert_error(405, "method_not_allowed");
    assert_eq!(
        app.emulator.requests(),
        vec![],
        "none of these reached Dify"
    );
}
