//! Where the state's own long-lived tasks run (the resume expiry, the Redis mirror's writer):
//! on the runtime that built the state, the main thread's, rather than on whichever worker
//! happened to need them first, so that they live as long as the state does.

use std::future::Future;

use tokio::runtime::Handle;

#[derive(Clone, Debug)]
pub struct Background(Option<Handle>);

impl Background {
    /// The current runtime, if any (a state built outside one spawns where it is used).
    pub fn here() -> Background {
        Background(Handle::try_current().ok())
    }

    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.0 {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}
