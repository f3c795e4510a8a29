//! Sources and agent steps under an answer, the same live and from history.

use super::*;

fn resources() -> Value {
    json!([
        {"position": 1, "dataset_id": "d1", "dataset_name": "Help centre",
         "document_id": "doc1", "document_name": "Shipping policy.pdf", "segment_id": "s1",
         "score": 0.8731, "content": "Orders ship within 24 hours on weekdays."},
        {"position": 2, "dataset_id": "d1", "dataset_name": "Help centre",
         "document_id": "doc2", "document_name": "Returns.md", "segment_id": "s2",
         "score": 0.5, "content": "Returns are free for 30 days."}
    ])
}

/// The citations under the last answer: [name, score, snippet] per source, opened.
async fn citations(p: &Page) -> Value {
    p.js("const s = [...document.querySelectorAll('.message.assistant:last-of-type .sources, .message.assistant .sources')].pop();
          if (!s) return null;
          s.open = true;
          return [...s.querySelectorAll('.source')].map(li => [
            li.querySelector('.source-name').textContent,
            li.querySelector('.source-score').textContent,
            li.querySelector('.source-snippet').textContent]);")
        .await
}

#[tokio::test]
async fn retrieved_sources_are_cited_under_a_streamed_answer() {
    run("sources-live", Viewport::Desktop, options(), async |p| {
        let ids = json!({
            "conversation_id": uuid::Uuid::new_v4().to_string(),
            "message_id": uuid::Uuid::new_v4().to_string(),
            "task_id": uuid::Uuid::new_v4().to_string(),
        });
        let event = |extra: Value| {
            let mut v = ids.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            sse_b(&v)
        };
        let body = event(json!({"event": "message", "answer": "Orders ship within a day."}))
            + &event(json!({"event": "message_end", "metadata": {
                "usage": {"total_tokens": 10, "latency": 0.2},
                "retriever_resources": resources()}}));
        p.app.emulator.script(
            "POST",
            "/chat-messages",
            Reply::sse(vec![Bytes::from(body)]),
        );
        p.send("When will my order ship?").await;
        p.wait_idle().await;
        p.find(".message.assistant .sources").await;
        assert_eq!(
            p.text_of(".message.assistant .sources > summary").await,
            "2 sources"
        );
        assert_eq!(
            citations(p).await,
            json!([
                [
                    "1. Shipping policy.pdf",
                    "score 0.87",
                    "Orders ship within 24 hours on weekdays."
                ],
                [
                    "2. Returns.md",
                    "score 0.50",
                    "Returns are free for 30 days."
                ]
            ])
        );
    })
    .await;
}

#[tokio::test]
async fn agent_steps_sources_and_a_free_text_ending_render_from_history() {
    run("sources-history", Viewport::Desktop, options(), async |p| {
        p.send("Hello").await;
        p.wait_idle().await;
        let conversation = p.conversation_ids().await[0].clone();
        let message = json!({
            "id": uuid::Uuid::new_v4().to_string(), "conversation_id": conversation,
            "parent_message_id": null, "inputs": {}, "query": "Weather in Lisbon?",
            // Dify 0.15.3 when a ReAct run ends in free text: no answer, the text in a thought.
            "answer": "",
            "message_files": [], "feedback": null, "status": "normal", "error": null,
            "created_at": 1_765_000_000,
            "retriever_resources": [resources()[0].clone()],
            "agent_thoughts": [
                {"id": "t1", "chain_id": null, "message_id": "m", "position": 1,
                 "thought": "", "tool": "weather", "tool_input": "{\"weather\": {\"city\": \"Lisbon\"}}",
                 "observation": "{\"weather\": \"sunny, 24°C\"}", "files": [], "created_at": 1_765_000_000},
                {"id": "t2", "chain_id": null, "message_id": "m", "position": 2,
                 "thought": "It is sunny in Lisbon, 24°C.", "tool": "", "tool_input": "",
                 "observation": "", "files": [], "created_at": 1_765_000_001}
            ]
        });
        p.app.emulator.script(
            "GET",
            "/messages",
            Reply::json(200, &json!({"limit": 20, "has_more": false, "data": [message]})),
        );
        p.reload().await;
        p.click("#conversation-list li.conversation .conversation-title")
            .await;
        p.find(".message.assistant .step").await;
        assert!(
            p.text_of(".message.assistant .step summary").await.contains("weather"),
            "the tool step is shown"
        );
        assert_eq!(
            p.text_of(".message.assistant .answer").await.trim(),
            "It is sunny in Lisbon, 24°C.",
            "the thought's text is the answer"
        );
        assert_eq!(
            citations(p).await,
            json!([["1. Shipping policy.pdf", "score 0.87", "Orders ship within 24 hours on weekdays."]])
        );
    })
    .await;
}
