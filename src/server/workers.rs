//! One runtime per CPU (`WORKER_THREADS`): the main thread's `current_thread` runtime accepts
//! and serves connections like every other worker, and each further worker is a thread with a
//! `current_thread` runtime of its own. An accepted connection goes to the worker with the
//! fewest open connections and stays there, with every task its requests spawn; each worker
//! calls Dify through its own connection pool (see [`current`]). No work stealing and no
//! cross-thread wake-ups per request: tokio's multi-thread scheduler cost 20–34 % more CPU per
//! relayed request here (bench/RESULTS.md, run "floor2"). Connections are handed over rather
//! than accepted by each worker on its own `SO_REUSEPORT` socket, because SSE connections are
//! long and uneven: the kernel's hash would balance connections, not load.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::peers::PeerSlot;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker running on this thread: 0 on the main thread (and on any thread not a worker).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// An accepted connection on its way to a worker.
pub struct Handover {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub slot: Option<PeerSlot>,
    pub open: Open,
}

/// Counts a connection on its worker while it lives.
pub struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What became of an accepted connection.
pub enum Dispatched {
    /// To be served on the runtime that accepted it.
    Here {
        stream: TcpStream,
        slot: Option<PeerSlot>,
        open: Open,
    },
    /// Another worker has it.
    Sent,
    /// It could not be handed over and is closed.
    Dropped,
}

pub struct Workers {
    /// Open connections per worker; index 0 is the accepting runtime.
    open: Vec<Arc<AtomicUsize>>,
    /// Queues of workers 1.., in order.
    queues: Vec<mpsc::UnboundedSender<Handover>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count - 1` worker threads, each running `serve(index, queue)` to its end on a
    /// `current_thread` runtime of its own. A worker whose runtime cannot start is skipped.
    pub fn start<F, Fut>(count: usize, serve: F) -> Workers
    where
        F: Fn(mpsc::UnboundedReceiver<Handover>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()>,
    {
        let mut workers = Workers {
            open: vec![Arc::new(AtomicUsize::new(0))],
            queues: Vec::new(),
            threads: Vec::new(),
        };
        for index in 1..count {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::warn!(worker = index, error = %e, "cannot start a worker runtime; serving with fewer");
                    continue;
                }
            };
            let (queue, receiver) = mpsc::unbounded_channel();
            let serve = serve.clone();
            let thread = std::thread::Builder::new()
                .name(format!("dify-bff-worker-{index}"))
                .spawn(move || {
                    WORKER.set(index);
                    runtime.block_on(serve(receiver));
                });
            match thread {
                Ok(thread) => {
                    workers.open.push(Arc::new(AtomicUsize::new(0)));
                    workers.queues.push(queue);
                    workers.threads.push(thread);
                }
                Err(e) => {
                    tracing::warn!(worker = index, error = %e, "cannot start a worker thread; serving with fewer");
                }
            }
        }
        workers
    }

    /// Hands `stream` to the worker with the fewest open connections (this one on a tie).
    pub fn dispatch(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Option<PeerSlot>,
    ) -> Dispatched {
        let least = (0..self.open.len())
            .min_by_key(|&i| self.open[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        if least == 0 {
            let open = self.count(0);
            return Dispatched::Here { stream, slot, open };
        }
        // A tokio stream belongs to the runtime that accepted it; the worker registers it anew.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "could not hand a connection over; closed");
                return Dispatched::Dropped;
            }
        };
        let open = self.count(least);
        let handover = Handover {
            stream,
            peer,
            slot,
            open,
        };
        match self.queues[least - 1].send(handover) {
            Ok(()) => Dispatched::Sent,
            // That worker is gone: serve the connection here.
            Err(mpsc::error::SendError(back)) => match TcpStream::from_std(back.stream) {
                Ok(stream) => Dispatched::Here {
                    stream,
                    slot: back.slot,
                    open: self.count(0),
                },
                Err(_) => Dispatched::Dropped,
            },
        }
    }

    fn count(&self, worker: usize) -> Open {
        let open = Arc::clone(&self.open[worker]);
        open.fetch_add(1, Ordering::Relaxed);
        Open(open)
    }

    /// Closes the queues and waits for every worker to finish its connections.
    pub async fn join(self) {
        drop(self.queues);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        });
        if let Err(e) = joined.await {
            tracing::error!(error = %e, "waiting for the workers failed");
        }
    }
}

/// Registers a handed-over connection with this worker's runtime.
pub fn receive(handover: Handover) -> Option<(TcpStream, SocketAddr, Option<PeerSlot>, Open)> {
    match TcpStream::from_std(handover.stream) {
        Ok(stream) => Some((stream, handover.peer, handover.slot, handover.open)),
        Err(e) => {
            tracing::debug!(error = %e, peer = %handover.peer, "could not take a connection over; closed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connection(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream, SocketAddr) {
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (server, peer) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        (client, server, peer)
    }

    #[tokio::test]
    async fn a_connection_goes_to_the_worker_with_the_fewest_and_counts_there_while_open() {
        let (seen, arrivals) = std::sync::mpsc::channel();
        let workers = Workers::start(3, move |mut queue: mpsc::UnboundedReceiver<Handover>| {
            let seen = seen.clone();
            async move {
                while let Some(handover) = queue.recv().await {
                    let _ = seen.send((current(), handover));
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        let (_c0, s0, p0) = connection(&listener).await;
        let Dispatched::Here { open: here, .. } = workers.dispatch(s0, p0, None) else {
            panic!("the first connection is served where it was accepted");
        };
        let (_c1, s1, p1) = connection(&listener).await;
        assert!(matches!(workers.dispatch(s1, p1, None), Dispatched::Sent));
        let (_c2, s2, p2) = connection(&listener).await;
        assert!(matches!(workers.dispatch(s2, p2, None), Dispatched::Sent));
        let handed: Vec<(usize, Handover)> = (0..2).filter_map(|_| arrivals.recv().ok()).collect();
        let mut served_by: Vec<usize> = handed.iter().map(|(worker, _)| *worker).collect();
        served_by.sort_unstable();
        assert_eq!(served_by, [1, 2], "one each, on their own threads");

        drop(here);
        let (_c3, s3, p3) = connection(&listener).await;
        assert!(
            matches!(workers.dispatch(s3, p3, None), Dispatched::Here { .. }),
            "a closed connection frees its worker's place"
        );
    }
}
