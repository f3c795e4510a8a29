//! Voice in and out, when the app's `/parameters` enable them: the microphone (Chromium's fake
//! device) fills the message box through `/audio-to-text`; the play button fetches the
//! answer's audio through `/text-to-audio`.

use super::*;

fn voice_parameters() -> Value {
    json!({
        "opening_statement": "", "suggested_questions": [],
        "suggested_questions_after_answer": {"enabled": false},
        "speech_to_text": {"enabled": true}, "text_to_speech": {"enabled": true, "voice": "alloy"},
        "retriever_resource": {"enabled": true}, "annotation_reply": {"enabled": false},
        "more_like_this": {"enabled": false}, "user_input_form": [], "sensitive_word_avoidance": {"enabled": false},
        "file_upload": {"image": {"enabled": false, "number_limits": 3, "transfer_methods": ["local_file"]}},
        "system_parameters": {"image_file_size_limit": 10, "file_size_limit": 15, "audio_file_size_limit": 50,
            "video_file_size_limit": 100, "workflow_file_upload_limit": 10}
    })
}

/// Like `run`, with Dify's `/parameters` enabling voice from the first page load.
async fn run_with_voice(test: &str, body: impl AsyncFnOnce(&Page)) {
    let Some(driver) = driver(test) else {
        return;
    };
    let app = TestApp::spawn_with(vec![], options()).await;
    // The page and voice.js may both ask before the proxy has cached the answer.
    for _ in 0..2 {
        app.emulator
            .script("GET", "/parameters", Reply::json(200, &voice_parameters()));
    }
    let c = new_session(driver).await;
    let page = Page {
        c,
        app,
        scratch: driver.scratch.join(test),
    };
    let outcome = AssertUnwindSafe(async {
        page.open().await;
        body(&page).await;
    })
    .catch_unwind()
    .await;
    let _ = page.c.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn the_microphone_records_and_puts_the_text_in_the_box() {
    run_with_voice("voice-mic", async |p| {
        p.app.emulator.script(
            "POST",
            "/audio-to-text",
            Reply::json(200, &json!({"text": "Where is my order?"})),
        );
        p.click("#mic").await;
        p.until(
            "document.querySelector('#mic').getAttribute('aria-pressed') === 'true'",
            "recording to start",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        p.click("#mic").await;
        p.until(
            "document.querySelector('#composer').value === 'Where is my order?'",
            "the transcript in the box",
        )
        .await;
        let sent = p
            .upstream("the recording", |r| r.path == "/v1/audio-to-text")
            .await;
        assert!(
            String::from_utf8_lossy(&sent.body).contains("Content-Type: audio/"),
            "an audio part reached Dify"
        );
        assert!(sent.body_len > 200, "the recording has sound in it");
        assert!(
            p.js("return !document.querySelector('#send').disabled")
                .await
                == json!(true),
            "the transcript can be sent"
        );
    })
    .await;
}

#[tokio::test]
async fn the_play_button_fetches_the_answers_audio() {
    run_with_voice("voice-play", async |p| {
        p.send("Hello").await;
        p.wait_idle().await;
        let message_id = p
            .find(".message.assistant[data-message-id]")
            .await
            .attr("data-message-id")
            .await
            .unwrap()
            .unwrap();
        p.app.emulator.script(
            "POST",
            "/text-to-audio",
            Reply {
                status: 200,
                headers: vec![("Content-Type".into(), "audio/mpeg".into())],
                steps: vec![Step::Send(Bytes::from_static(&[
                    0xff, 0xfb, 0x90, 0x64, 0, 0,
                ]))],
            },
        );
        p.click(".message.assistant .play-answer").await;
        let sent = p
            .upstream("the text-to-audio call", |r| r.path == "/v1/text-to-audio")
            .await;
        let body = sent.json().expect("json");
        assert_eq!(body["message_id"], json!(message_id));
        p.until(
            "document.querySelector('.play-answer').hasAttribute('data-played')",
            "the audio to be fetched and played",
        )
        .await;
    })
    .await;
}
