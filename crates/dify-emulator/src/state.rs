//! The emulator's shared state: options, data, journal, scripts, running answers and streams.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, watch};

use super::EmulatorOptions;
use super::record::Journal;
use super::script::Reply;
use super::sign::Signer;
use super::store::Store;

/// Locks a mutex; a panic elsewhere while it was held does not make the data unusable here.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Shared {
    pub opts: EmulatorOptions,
    pub store: Mutex<Store>,
    pub journal: Journal,
    scripts: Mutex<HashMap<(String, String), VecDeque<Reply>>>,
    tasks: Mutex<HashMap<String, Task>>,
    open_streams: AtomicUsize,
    dropped_streams: Mutex<Vec<String>>,
    shutdown: watch::Sender<bool>,
    pub signer: Signer,
}

struct Task {
    user: String,
    stop: Arc<StopFlag>,
}

impl Shared {
    pub(crate) fn new(opts: EmulatorOptions) -> Shared {
        Shared {
            opts,
            store: Mutex::default(),
            journal: Journal::default(),
            scripts: Mutex::default(),
            tasks: Mutex::default(),
            open_streams: AtomicUsize::new(0),
            dropped_streams: Mutex::default(),
            shutdown: watch::channel(false).0,
            signer: Signer::random(),
        }
    }

    pub(crate) fn push_script(&self, method: &str, path: &str, reply: Reply) {
        lock(&self.scripts)
            .entry((method.to_ascii_uppercase(), path.to_owned()))
            .or_default()
            .push_back(reply);
    }

    pub(crate) fn has_script(&self, method: &str, path: &str) -> bool {
        lock(&self.scripts)
            .get(&(method.to_owned(), path.to_owned()))
            .is_some_and(|q| !q.is_empty())
    }

    pub(crate) fn take_script(&self, method: &str, path: &str) -> Option<Reply> {
        lock(&self.scripts)
            .get_mut(&(method.to_owned(), path.to_owned()))
            .and_then(VecDeque::pop_front)
    }

    /// Registers a running answer so that its user can stop it.
    pub(crate) fn register_task(&self, task_id: &str, user: &str) -> Arc<StopFlag> {
        let stop = Arc::new(StopFlag::default());
        let task = Task {
            user: user.to_owned(),
            stop: stop.clone(),
        };
        lock(&self.tasks).insert(task_id.to_owned(), task);
        stop
    }

    pub(crate) fn unregister_task(&self, task_id: &str) {
        lock(&self.tasks).remove(task_id);
    }

    /// Dify's stop flag: set only when the task belongs to this user.
    pub(crate) fn stop_task(&self, task_id: &str, user: &str) {
        if let Some(task) = lock(&self.tasks).get(task_id).filter(|t| t.user == user) {
            task.stop.stop();
        }
    }

    pub(crate) fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::SeqCst)
    }

    pub(crate) fn dropped_streams(&self) -> Vec<String> {
        lock(&self.dropped_streams).clone()
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Completes once the emulator is shutting down.
    pub(crate) fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}

#[derive(Default)]
pub(crate) struct StopFlag {
    stopped: AtomicBool,
    notify: Notify,
}

impl StopFlag {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) async fn stopped(&self) {
        while !self.is_stopped() {
            self.notify.notified().await;
        }
    }
}

/// Counts an SSE body as open while it lives; one dropped before its end is recorded under its
/// task id (`""` for scripted streams).
pub(crate) struct StreamGuard {
    shared: Arc<Shared>,
    task_id: String,
    ended: bool,
}

impl StreamGuard {
    pub(crate) fn open(shared: Arc<Shared>, task_id: &str) -> StreamGuard {
        shared.open_streams.fetch_add(1, Ordering::SeqCst);
        StreamGuard {
            shared,
            task_id: task_id.to_owned(),
            ended: false,
        }
    }

    /// The body reached its end (or the server ended it on purpose).
    pub(crate) fn end(&mut self) {
        self.ended = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.ended {
            lock(&self.shared.dropped_streams).push(std::mem::take(&mut self.task_id));
        }
        self.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}
