//! Captures every log line of the test process so the suite can prove no secret is logged.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

static LINES: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn buffer() -> &'static Mutex<Vec<u8>> {
    LINES.get_or_init(|| Mutex::new(Vec::new()))
}

#[derive(Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = buffer().lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        Capture
    }
}

/// Installs the capturing subscriber at debug level (once per test binary). The test
/// client's own cookie store is left out: it logs the cookies it keeps, as a browser would.
pub fn install() {
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(EnvFilter::new("debug,cookie_store=off"))
        .with_writer(Capture)
        .try_init();
}

/// Everything logged so far in this test binary.
pub fn captured() -> String {
    buffer()
        .lock()
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .unwrap_or_default()
}

pub fn assert_no_secret() {
    let lines = captured();
    super::assert_no_secret("the logs", lines.as_bytes());
}
