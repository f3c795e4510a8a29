//! The chat in another site's page through `embed.js`: the embedding sites are served on other
//! origins (`localhost` on other ports, another site than the proxy's `127.0.0.1`).

use super::*;

/// A site at `http://localhost:{port}` whose page holds the one script tag.
struct Site {
    origin: String,
    _server: tokio::task::JoinHandle<()>,
}

fn site_listener() -> (tokio::net::TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the site");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("site addr").port();
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    (listener, format!("http://localhost:{port}"))
}

fn serve_site(listener: tokio::net::TcpListener, origin: String, chat_base: &str) -> Site {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Example shop</title></head><body><h1>Example shop</h1>\
         <p>Everything you need, shipped tomorrow.</p><button id=\"buy\">Buy</button>\
         <script src=\"{chat_base}/embed.js\" data-position=\"bottom-right\" \
         data-color=\"#0f766e\" async></script></body></html>"
    );
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Site {
        origin,
        _server: server,
    }
}

/// Like `run`, with the proxy's `EMBED_ORIGINS` naming one site and `body` given that site
/// and a second one that is not listed.
async fn run_embedded(test: &str, body: impl AsyncFnOnce(&Page, &Site, &Site)) {
    let Some(driver) = driver(test) else {
        return;
    };
    let (listed, listed_origin) = site_listener();
    let (other, other_origin) = site_listener();
    let app = TestApp::spawn_with(
        crate::support::vars(&[("EMBED_ORIGINS", &listed_origin)]),
        options(),
    )
    .await;
    let listed = serve_site(listed, listed_origin, &app.base);
    let other = serve_site(other, other_origin, &app.base);
    let c = new_session(driver).await;
    let page = Page {
        c,
        app,
        scratch: driver.scratch.join(test),
    };
    let outcome = AssertUnwindSafe(body(&page, &listed, &other))
        .catch_unwind()
        .await;
    let _ = page.c.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Page {
    async fn open_site(&self, site: &Site) {
        self.c.goto(&site.origin).await.expect("the site loads");
        self.until(
            "document.querySelector('.dify-bff-bubble')",
            "the chat bubble",
        )
        .await;
    }

    /// Into the chat panel's iframe, once its page has booted (the only frame of the site).
    async fn enter_chat(&self) {
        self.c.enter_frame(0).await.expect("enter the chat frame");
        self.until("document.title !== 'Chat'", "the framed page to boot")
            .await;
    }
}

#[tokio::test]
async fn the_bubble_opens_a_chat_that_streams_inside_the_frame() {
    run_embedded("embed-chat", async |p, site, _| {
        p.open_site(site).await;
        assert!(!p.visible(".dify-bff-panel").await, "closed at first");
        assert_eq!(p.count("iframe").await, 0, "no frame until it is opened");
        p.click(".dify-bff-bubble").await;
        assert!(p.visible(".dify-bff-panel").await);
        let src = p
            .js("return document.querySelector('.dify-bff-panel iframe').src")
            .await;
        assert_eq!(src, json!(format!("{}/", p.app.base)));
        p.screenshot("embed-open-desktop").await;

        p.enter_chat().await;
        p.app.emulator.script(
            "POST",
            "/chat-messages",
            Reply::sse(vec![Bytes::from(scripted_answer(
                "",
                &["Your order ", "ships ", "tomorrow."],
            ))]),
        );
        p.send("Where is my order?").await;
        p.wait_idle().await;
        assert_eq!(
            p.text_of(".message.assistant .answer").await.trim(),
            "Your order ships tomorrow."
        );
        // The embedding page sees none of it: the frame is another origin.
        p.c.enter_parent_frame().await.expect("back to the site");
        let peek = p
            .js("try { return document.querySelector('iframe').contentDocument === null; } catch (e) { return true; }")
            .await;
        assert_eq!(peek, json!(true), "the site cannot read the chat");
        assert_eq!(
            p.js("return document.cookie").await,
            json!(""),
            "no identity reaches the site"
        );
    })
    .await;
}

#[tokio::test]
async fn escape_closes_the_panel_focus_returns_to_the_bubble_and_reopening_keeps_the_chat() {
    run_embedded("embed-escape", async |p, site, _| {
        p.open_site(site).await;
        p.click(".dify-bff-bubble").await;
        p.enter_chat().await;
        p.send("Hello there").await;
        p.wait_idle().await;
        let composer = p.find("#composer").await;
        composer
            .send_keys(&Key::Escape.to_string())
            .await
            .expect("press Escape in the chat");
        p.c.enter_parent_frame().await.expect("back to the site");
        p.until(
            "document.querySelector('.dify-bff-panel').hidden",
            "the panel to close",
        )
        .await;
        p.until(
            "document.activeElement === document.querySelector('.dify-bff-bubble')",
            "focus back on the bubble",
        )
        .await;
        assert_eq!(
            p.js("return document.querySelector('.dify-bff-bubble').getAttribute('aria-expanded')")
                .await,
            json!("false")
        );

        // Enter on the focused bubble opens it again, with the same chat.
        p.c.active_element()
            .await
            .expect("focused")
            .send_keys(&Key::Enter.to_string())
            .await
            .expect("press Enter on the bubble");
        assert!(p.visible(".dify-bff-panel").await);
        assert_eq!(p.count("iframe").await, 1, "the same frame, not a new one");
        p.c.enter_frame(0).await.expect("enter the chat frame");
        assert_eq!(
            p.count(".message").await,
            2,
            "the conversation is still there"
        );
    })
    .await;
}

#[tokio::test]
async fn on_a_phone_the_panel_fills_the_screen() {
    run_embedded("embed-phone", async |p, site, _| {
        let driver = driver("embed-phone").expect("driver");
        emulate_phone(driver, &p.c, true).await.expect("phone");
        p.open_site(site).await;
        p.click(".dify-bff-bubble").await;
        let rect = p
            .js("const r = document.querySelector('.dify-bff-panel').getBoundingClientRect(); return [r.left, r.top, r.width, r.height];")
            .await;
        assert_eq!(rect, json!([0, 0, 360, 740]));
        p.enter_chat().await;
        p.c.enter_parent_frame().await.expect("back to the site");
        p.screenshot("embed-open-phone").await;
    })
    .await;
}

#[tokio::test]
async fn a_site_not_in_embed_origins_cannot_frame_the_chat() {
    run_embedded("embed-refused", async |p, _, other| {
        p.open_site(other).await;
        p.click(".dify-bff-bubble").await;
        p.c.enter_frame(0).await.expect("enter the frame");
        // Chromium replaces a frame refused by frame-ancestors with its own error page.
        p.until(
            "location.href.startsWith('chrome-error:')",
            "the frame to be refused",
        )
        .await;
        assert_eq!(p.count("#composer").await, 0);
    })
    .await;
}

#[tokio::test]
async fn the_identity_survives_a_reload_of_the_embedding_site() {
    run_embedded("embed-reload", async |p, site, _| {
        p.open_site(site).await;
        p.click(".dify-bff-bubble").await;
        p.enter_chat().await;
        p.send("Remember the word pineapple").await;
        p.wait_idle().await;
        p.c.enter_parent_frame().await.expect("back to the site");

        p.open_site(site).await;
        p.click(".dify-bff-bubble").await;
        p.enter_chat().await;
        p.until(
            "document.querySelectorAll('#conversation-list li.conversation').length === 1",
            "the earlier conversation in the list (the partitioned cookie was kept)",
        )
        .await;
    })
    .await;
}
