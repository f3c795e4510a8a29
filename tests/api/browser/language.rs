//! The page in the user's language: Dify's `/site` `default_language` first, else the
//! browser's; numbers through Intl.

use super::*;

async fn in_chinese(p: &Page) {
    p.until(
        "document.documentElement.lang === 'zh-CN'",
        "the page to switch to Chinese",
    )
    .await;
    assert_eq!(
        p.js("return document.querySelector('#composer').placeholder")
            .await,
        json!("输入消息…")
    );
    assert_eq!(p.text_of("#new-chat span").await, "新对话");
    assert_eq!(
        p.js("return document.querySelector('#send').getAttribute('aria-label')")
            .await,
        json!("发送消息")
    );
}

#[tokio::test]
async fn the_page_speaks_the_apps_default_language_from_site() {
    run("language-site", Viewport::Desktop, options(), async |p| {
        assert_eq!(
            p.js("return document.documentElement.lang").await,
            json!("en"),
            "Dify 0.15 has no /site: the browser's English"
        );
        p.app.emulator.script(
            "GET",
            "/site",
            Reply::json(
                200,
                &json!({"title": "客服", "default_language": "zh-Hans"}),
            ),
        );
        p.reload().await;
        in_chinese(p).await;
        p.send("你好").await;
        p.wait_idle().await;
        assert_eq!(
            p.js("return document.querySelector('.message.assistant').getAttribute('aria-label')")
                .await,
            json!("助手")
        );
        let usage = p.text_of(".message.assistant .usage").await;
        assert!(usage.contains("个 token"), "{usage}");
    })
    .await;
}

#[tokio::test]
async fn the_page_follows_a_zh_cn_browser() {
    run(
        "language-browser",
        Viewport::Desktop,
        options(),
        async |p| {
            let driver = driver("language-browser").expect("driver");
            let agent = p.js("return navigator.userAgent").await;
            // What a browser set to Chinese sends and shows: navigator.language and Intl.
            let emulate = async |language: &str, locale: &str| {
                cdp(
                    driver,
                    &p.c,
                    "Emulation.setUserAgentOverride",
                    json!({"userAgent": agent, "acceptLanguage": language}),
                )
                .await
                .expect("language override");
                cdp(
                    driver,
                    &p.c,
                    "Emulation.setLocaleOverride",
                    json!({"locale": locale}),
                )
                .await
                .expect("locale override");
            };
            emulate("zh-CN", "zh-CN").await;
            p.reload().await;
            let result = AssertUnwindSafe(in_chinese(p)).catch_unwind().await;
            emulate("en-US", "en-US").await;
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_failed_answer_is_explained_in_chinese() {
    run("language-error", Viewport::Desktop, options(), async |p| {
        p.app.emulator.script(
            "GET",
            "/site",
            Reply::json(
                200,
                &json!({"title": "客服", "default_language": "zh-Hans"}),
            ),
        );
        p.reload().await;
        in_chinese(p).await;
        let error = sse_b(&json!({
            "event": "error", "code": "provider_quota_exceeded", "status": 400,
            "message": "Your quota for Dify Hosted Model Provider has been exhausted."
        }));
        p.app.emulator.script(
            "POST",
            "/chat-messages",
            Reply::sse(vec![Bytes::from(error)]),
        );
        p.send("你好").await;
        p.wait_idle().await;
        assert_eq!(
            p.text_of(".message.assistant .error-text").await,
            "助手在模型供应商处的额度已用完。请告知网站管理员。"
        );
        assert_eq!(
            p.text_of(".message.assistant .error-details > summary")
                .await,
            "详情"
        );
    })
    .await;
}
