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
    run_with_parameters(test, voice_parameters(), body).await;
}

/// Like `run`, with these `/parameters` from the first page load.
async fn run_with_parameters(test: &str, parameters: Value, body: impl AsyncFnOnce(&Page)) {
    let Some(driver) = driver(test) else {
        return;
    };
    let app = TestApp::spawn_with(vec![], options()).await;
    // The page and voice.js may both ask before the proxy has cached the answer.
    for _ in 0..2 {
        app.emulator
            .script("GET", "/parameters", Reply::json(200, &parameters));
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

/// `n` MPEG-1 Layer III frames of silence (128 kbit/s, 44.1 kHz: 417 bytes each).
fn silent_mp3(n: usize) -> Vec<u8> {
    let mut frame = vec![0u8; 417];
    frame[..4].copy_from_slice(&[0xff, 0xfb, 0x90, 0x64]);
    frame.repeat(n)
}

/// Standard base64, as Dify writes `tts_message`'s `audio`.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn with_auto_play_the_answer_speaks_as_it_streams() {
    let mut parameters = voice_parameters();
    parameters["text_to_speech"] =
        json!({"enabled": true, "voice": "alloy", "autoPlay": "enabled"});
    run_with_parameters("voice-autoplay", parameters, async |p| {
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
        let body = event(json!({"event": "message", "answer": "Your order ships today."}))
            + &event(json!({"event": "tts_message", "audio": base64(&silent_mp3(12))}))
            + &event(json!({"event": "tts_message", "audio": base64(&silent_mp3(12))}))
            + &event(json!({"event": "message_end", "metadata": {"usage": {"total_tokens": 9, "latency": 0.2}}}))
            + &event(json!({"event": "tts_message_end", "audio": ""}));
        p.app
            .emulator
            .script("POST", "/chat-messages", Reply::sse(vec![Bytes::from(body)]));
        p.send("Where is my order?").await;
        p.wait_idle().await;
        p.until(
            "document.querySelector('audio#tts-audio')?.src.startsWith('blob:')",
            "the streamed audio in an <audio> element",
        )
        .await;
        p.until(
            "document.querySelector('#tts-audio').hasAttribute('data-played')",
            "the audio to play",
        )
        .await;
        p.until(
            "(a => a.ended || a.currentTime > 0)(document.querySelector('#tts-audio'))",
            "the audio to advance",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn without_auto_play_nothing_plays_by_itself() {
    run_with_voice("voice-no-autoplay", async |p| {
        p.send("Hello").await;
        p.wait_idle().await;
        p.find(".message.assistant .play-answer").await;
        assert_eq!(
            p.js("return document.querySelector('#tts-audio')").await,
            Value::Null
        );
    })
    .await;
}
