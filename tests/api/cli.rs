//! The binary itself: flags, configuration errors, `--demo`, `healthcheck`, JSON logs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dify-bff");

pub(crate) fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    cmd
}

pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub(crate) struct Running(pub(crate) Child);

/// SIGTERM, as a container runtime stops it, and the exit that follows.
fn stop_gracefully(mut running: Running) {
    let pid = running.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the server exits on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ok = command()
            .arg("healthcheck")
            .env("PORT", port.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server on {port} did not become healthy");
}

#[test]
fn help_and_version_work() {
    let help = command().arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--demo"));
    let version = command().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_missing_key_stops_start_up_with_exit_2_naming_the_variable() {
    let out = command().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("DIFY_API_KEY"));
}

#[test]
fn a_bad_value_stops_start_up_with_exit_2_naming_the_variable() {
    for (var, value) in [
        ("DIFY_BASE_URL", "not a url"),
        ("PORT", "http"),
        ("SESSION_SECRET", "too-short"),
        ("ALLOWED_ORIGINS", "*"),
        ("TRUSTED_PROXIES", "everyone"),
        ("COOKIE_SAMESITE", "Maybe"),
        ("STATIC_DIR", "/no/such/folder"),
    ] {
        let out = command()
            .env("DIFY_API_KEY", "app-abcdefghijklmnopqrstuvwx")
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(var), "{var}");
    }
}

#[test]
fn a_metrics_address_in_use_stops_start_up_with_exit_2_naming_the_variable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = command()
        .env("DIFY_API_KEY", "app-abcdefghijklmnopqrstuvwx")
        .env("PORT", free_port().to_string())
        .env("METRICS_ADDR", taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("METRICS_ADDR"));
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let status = command()
        .arg("healthcheck")
        .env("PORT", free_port().to_string())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn demo_serves_two_apps_and_answers_chat_with_json_logs() {
    let port = free_port();
    let mut child = command()
        .arg("--demo")
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    wait_healthy(port);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (page, answer, apps) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let page = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let answer = client
            .post(format!("http://127.0.0.1:{port}/apps/chat/chat"))
            .json(&serde_json::json!({"query": "hello"}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let apps: serde_json::Value = client
            .get(format!("http://127.0.0.1:{port}/apps"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (page, answer, apps)
    });
    let names: Vec<&str> = apps["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["chat", "helper"],
        "the demo's picker lists two apps"
    );
    assert!(page.contains("<html"), "the page is served");
    assert!(answer.contains("\"event\": \"message_end\""), "{answer}");
    let text: String = answer
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|e| e["answer"].as_str().map(str::to_owned))
        .collect();
    assert!(
        text.to_lowercase().contains("demo"),
        "demo answers say so: {text}"
    );

    stop_gracefully(running);
    let lines: Vec<serde_json::Value> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    assert!(!lines.is_empty(), "LOG_FORMAT=json writes JSON lines");
    let chat = lines
        .iter()
        .find(|l| l["message"] == "request" && l["route"] == "/apps/{name}/chat")
        .expect("a request line for /apps/chat/chat");
    assert_eq!(chat["app"], "chat", "the line names the app: {chat}");
    for field in ["method", "status", "latency_ms", "identity", "request_id"] {
        assert!(!chat[field].is_null(), "{field} in {chat}");
    }
}

#[test]
fn the_example_files_placeholder_key_stops_start_up_naming_the_variable() {
    let out = command()
        .env("DIFY_API_KEY", "app-xxxxxxxxxxxxxxxxxxxxxxxx")
        .env("PORT", free_port().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DIFY_API_KEY") && err.contains("placeholder"),
        "{err}"
    );
}

#[test]
fn help_lists_the_environment_variables_with_defaults() {
    let help = command().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for name in [
        "DIFY_API_KEY",
        "DIFY_BASE_URL",
        "TRUSTED_PROXIES",
        "LOG_FORMAT",
    ] {
        assert!(text.contains(name), "{name} missing from --help:\n{text}");
    }
    assert!(text.contains("[default: 3000]"), "{text}");
}

#[test]
fn host_localhost_listens_on_the_loopback_address() {
    let port = free_port();
    let _server = Running(
        command()
            .arg("--demo")
            .env("HOST", "localhost")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(port);
}

#[test]
fn access_log_lines_reach_stdout_while_the_server_runs() {
    let port = free_port();
    let mut child = command()
        .arg("--demo")
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let (lines, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    wait_healthy(port);
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut http,
        b"GET /apps/chat/parameters HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut http, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match arrived.recv_timeout(left) {
            Ok(line) if line.contains("request") && line.contains("/apps/{name}/parameters") => {
                break;
            }
            Ok(_) => {}
            Err(_) => panic!("no access-log line within 3 s of the request"),
        }
    }
}
