//! Where log lines go: standard output, through one buffer. The access log writes a line per
//! request, and one `write` per line cost about a sixth of a relayed JSON request's CPU here
//! (bench/RESULTS.md, "final4"). Lines now leave together: when [`FLUSH_EVERY`] has passed,
//! when [`FLUSH_AT`] bytes are waiting, or at once with a warning or an error (and everything
//! before it). What is waiting is written when the process ends or panics; a process killed
//! outright loses at most the last [`FLUSH_EVERY`] of INFO lines.

use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const FLUSH_AT: usize = 32 * 1024;

static WAITING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn waiting() -> MutexGuard<'static, Vec<u8>> {
    WAITING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write_out(waiting: &mut Vec<u8>) {
    if waiting.is_empty() {
        return;
    }
    let mut out = io::stdout().lock();
    // Nowhere to report a failed log write; the lines are dropped, as tracing itself would.
    let _ = out.write_all(waiting).and_then(|()| out.flush());
    waiting.clear();
}

/// Writes out whatever is waiting.
pub fn flush() {
    write_out(&mut waiting());
}

/// The subscriber's writer: starts the flushing thread and the panic hook on first use.
pub struct Buffered;

impl Buffered {
    pub fn start() -> Buffered {
        static START: Once = Once::new();
        START.call_once(|| {
            let flusher = std::thread::Builder::new()
                .name("dify-bff-log".to_owned())
                .spawn(|| {
                    loop {
                        std::thread::sleep(FLUSH_EVERY);
                        flush();
                    }
                });
            if let Err(e) = flusher {
                eprintln!("dify-bff: no log flushing thread ({e}); log lines leave one by one");
            }
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                flush();
                previous(info);
            }));
        });
        Buffered
    }
}

/// One formatted line (tracing writes each event with one `write_all`).
pub struct Line {
    at_once: bool,
}

/// Adds an INFO line, written straight into the buffer by `write` (the lock is held meanwhile).
pub fn append(write: impl FnOnce(&mut Vec<u8>)) {
    append_line(false, write);
}

fn append_line(at_once: bool, write: impl FnOnce(&mut Vec<u8>)) {
    let mut waiting = waiting();
    write(&mut waiting);
    if at_once || waiting.len() >= FLUSH_AT {
        write_out(&mut waiting);
    }
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        append_line(self.at_once, |waiting| waiting.extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { at_once: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            at_once: *meta.level() <= Level::WARN,
        }
    }
}
