//! The app's branding from Dify's WebApp settings (`/site`, Dify ≥ 1.4): title, icon, accent
//! colour, copyright, privacy link and disclaimer, each checked before the page uses it.

use super::*;

/// Scripts `/site` (Dify 0.15 has none, so the first load had the defaults) and reloads.
async fn with_site(p: &Page, site: Value) {
    p.app
        .emulator
        .script("GET", "/site", Reply::json(200, &site));
    p.reload().await;
}

/// The accent the page paints with (the skip link's background is always `--accent`).
async fn accent(p: &Page) -> Value {
    p.js("return getComputedStyle(document.querySelector('.skip-link')).backgroundColor")
        .await
}

#[tokio::test]
async fn the_page_wears_the_apps_branding_from_site() {
    run("branding-site", Viewport::Desktop, options(), async |p| {
        assert_eq!(
            accent(p).await,
            json!("rgb(21, 94, 239)"),
            "the default accent"
        );
        with_site(
            p,
            json!({
                "title": "Acme Support", "icon_type": "emoji", "icon": "🦊",
                "icon_background": "#FFEAD5", "chat_color_theme": "#0E9F6E",
                "chat_color_theme_inverted": false, "copyright": "Acme Ltd",
                "privacy_policy": "https://acme.example/privacy",
                "custom_disclaimer": "Answers may be wrong; check anything important.",
                "default_language": "en-US"
            }),
        )
        .await;
        p.until("document.title === 'Acme Support'", "the site's title")
            .await;
        assert_eq!(p.text_of("#app-name").await, "Acme Support");
        assert_eq!(p.text_of(".topbar #app-icon").await, "🦊");
        assert_eq!(accent(p).await, json!("rgb(14, 159, 110)"));
        let footer = p.text_of("#site-footer").await;
        assert!(footer.contains("Acme Ltd"), "{footer}");
        assert!(p.visible("#site-footer").await);
        assert_eq!(
            p.js("const a = document.querySelector('#site-footer a');
                  return [a.href, a.target, a.rel, a.textContent];")
                .await,
            json!([
                "https://acme.example/privacy",
                "_blank",
                "noopener noreferrer",
                "Privacy policy"
            ])
        );
        assert_eq!(
            p.text_of("#disclaimer").await,
            "Answers may be wrong; check anything important."
        );
        assert!(p.visible("#disclaimer").await);
        // The disclaimer is under the message box.
        assert_eq!(
            p.js(
                "return !!(document.querySelector('#composer-form').compareDocumentPosition(
                    document.querySelector('#disclaimer')) & Node.DOCUMENT_POSITION_FOLLOWING)"
            )
            .await,
            json!(true)
        );
    })
    .await;
}

#[tokio::test]
async fn an_image_icon_is_shown_from_its_url() {
    run("branding-image", Viewport::Desktop, options(), async |p| {
        with_site(
            p,
            json!({"title": "Acme", "icon_type": "image", "icon": "f3c1",
                   "icon_url": "https://cdn.acme.example/logo.png"}),
        )
        .await;
        p.until("document.title === 'Acme'", "the site's title")
            .await;
        assert_eq!(
            p.js("const i = document.querySelector('img#app-icon'); return i && i.src;")
                .await,
            json!("https://cdn.acme.example/logo.png")
        );
    })
    .await;
}

#[tokio::test]
async fn a_script_link_and_a_non_colour_theme_are_ignored() {
    run(
        "branding-hostile",
        Viewport::Desktop,
        options(),
        async |p| {
            with_site(
                p,
                json!({
                    "title": "Acme", "icon_type": "image",
                    "icon_url": "javascript:alert(document.domain)",
                    "chat_color_theme": "red; background: url(https://evil.example/x)",
                    "copyright": "<b>Acme</b>",
                    "privacy_policy": "javascript:alert(document.cookie)",
                    "custom_disclaimer": "<img src=x onerror=alert(1)>"
                }),
            )
            .await;
            p.until("document.title === 'Acme'", "the site's title")
                .await;
            assert_eq!(
                accent(p).await,
                json!("rgb(21, 94, 239)"),
                "the accent is unchanged"
            );
            assert_eq!(
                p.js("return document.documentElement.hasAttribute('data-brand')")
                    .await,
                json!(false)
            );
            assert_eq!(p.count("#site-footer a").await, 0, "no link");
            assert_eq!(p.count("#app-icon").await, 0, "no icon");
            assert!(
                p.text_of("#site-footer").await.contains("<b>Acme</b>"),
                "text stays text"
            );
            assert_eq!(p.count("#site-footer b, #disclaimer img").await, 0);
            assert_eq!(
                p.text_of("#disclaimer").await,
                "<img src=x onerror=alert(1)>"
            );
        },
    )
    .await;
}
