//! An automated accessibility check: axe-core (npm, installed by `.ci/run` into
//! `target/axe/`, or `AXE_CORE_JS` naming `axe.min.js`) run in the page, in light and dark,
//! with a streamed answer, its sources and an agent step on screen. No serious or critical
//! violation may remain.

use super::*;

fn axe_source(test: &str) -> Option<String> {
    let path = std::env::var("AXE_CORE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/axe/node_modules/axe-core/axe.min.js")
        });
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI=true but {} is missing: npm install --prefix target/axe axe-core@4",
                path.display()
            )
        }
        Err(_) => {
            let bar = "!".repeat(78);
            eprintln!(
                "\n{bar}\n!!! SKIPPED `{test}`: {} not found.\n\
                 !!! Install: npm install --prefix target/axe axe-core@4\n{bar}\n",
                path.display()
            );
            None
        }
    }
}

/// The serious and critical violations axe finds in the page as it is now.
async fn violations(p: &Page, axe: &str) -> Vec<String> {
    let script = format!(
        "{axe}\n;const done = arguments[arguments.length - 1];
         axe.run(document, {{resultTypes: ['violations']}}).then((r) => done(
           r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
             .flatMap((v) => v.nodes.map((n) => `${{v.id}} (${{v.impact}}): ${{n.target.join(' ')}}: ${{n.failureSummary}}`))),
           (e) => done([`axe failed: ${{e}}`]));"
    );
    let found = p.c.execute_async(&script, vec![]).await.expect("axe runs");
    serde_json::from_value(found).expect("a list")
}

#[tokio::test]
async fn axe_finds_no_serious_violation_in_light_or_dark() {
    let test = "accessibility";
    let Some(axe) = axe_source(test) else {
        return;
    };
    let Some(driver) = driver(test) else {
        return;
    };
    let app = TestApp::spawn_with(vec![], options()).await;
    let c = new_session(driver).await;
    let page = Page {
        c,
        app,
        scratch: driver.scratch.join(test),
    };
    let outcome = AssertUnwindSafe(async {
        let p = &page;
        // axe builds its own nodes: let it run under the page's Trusted Types policy.
        cdp(driver, &p.c, "Page.setBypassCSP", json!({"enabled": true}))
            .await
            .expect("bypass CSP for the checker");
        p.open().await;
        let ids = json!({
            "conversation_id": uuid::Uuid::new_v4().to_string(),
            "message_id": uuid::Uuid::new_v4().to_string(),
            "task_id": uuid::Uuid::new_v4().to_string(),
        });
        let event = |extra: Value| {
            let mut v = ids.clone();
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            sse_b(&v)
        };
        let body = event(json!({"event": "agent_thought", "id": "t1", "position": 1,
                "thought": "", "tool": "search", "tool_input": "{\"q\": \"shipping\"}",
                "observation": "24 hours"}))
            + &event(json!({"event": "agent_message", "answer": "Orders **ship** within a day."}))
            + &event(json!({"event": "message_end", "metadata": {
                "usage": {"total_tokens": 10, "latency": 0.2},
                "retriever_resources": [{"position": 1, "document_name": "Shipping.pdf",
                    "score": 0.9, "content": "Orders ship within 24 hours."}]}}));
        p.app
            .emulator
            .script("POST", "/chat-messages", Reply::sse(vec![Bytes::from(body)]));
        p.send("When will my order ship?").await;
        p.wait_idle().await;
        p.find(".message.assistant .sources").await;
        p.js("document.querySelector('.sources').open = true; document.querySelector('.step').open = true;")
            .await;

        for scheme in ["light", "dark"] {
            cdp(
                driver,
                &p.c,
                "Emulation.setEmulatedMedia",
                json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
            )
            .await
            .expect("colour scheme");
            let found = violations(p, &axe).await;
            assert!(found.is_empty(), "{scheme}: {found:#?}");
        }
    })
    .catch_unwind()
    .await;
    let _ = page.c.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
