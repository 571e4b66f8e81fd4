//! The single writer: one thread owns every durable write. It takes every request
//! waiting, runs them one after another (each all or nothing), collects all their
//! changes into ONE sled batch, applies it, fsyncs ONCE, and only then answers each
//! waiter and runs its after-commit hooks. A webhook's 200 therefore still follows its
//! own fsync, but 64 concurrent webhooks share one fsync and one sled batch. No
//! `spawn_blocking`, no transactions: being the only writer makes read-then-write
//! race-free, and reads on the writer thread see the round's pending changes.
//!
//! After-commit hooks are how the in-memory queues learn about a durable change: they
//! run on the writer thread after the fsync whether or not anyone still waits (a
//! webhook whose client went away still wakes the agent hub), and never for a change
//! that did not reach the disk.
//!
//! A failed fsync (full disk) makes sled refuse every later operation, so the writer
//! marks the store unhealthy (`/readyz` 503, `smsgate health` non-zero), refuses
//! requests with an error (the webhook answers 503, Twilio retries), and tries to
//! reopen the store every second until a write works again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use super::{area, Store, StoreError};

/// Most requests applied under one fsync: bounds the latency of the first waiter.
const MAX_BATCH: usize = 4096;
/// How often a store that cannot write is reopened to try again.
const RECOVER_EVERY: Duration = Duration::from_secs(1);

type After = Box<dyn FnOnce() + Send>;
type Failed = Box<dyn FnOnce(&StoreError) + Send>;
type Done = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

/// Actions a request registers to run once its changes are durable.
#[derive(Default)]
pub struct Hooks {
    after: Vec<After>,
}

impl Hooks {
    /// Runs `f` on the writer thread after the fsync that made this request durable
    /// (not at all if the write or the fsync failed). Keep it short and non-blocking.
    pub fn after(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after.push(Box::new(f));
    }
}

trait Job: Send {
    /// Runs the request; `false` when it failed (its pending changes are rolled back).
    fn run(self: Box<Self>, store: &Store) -> (Done, bool);
    fn refuse(self: Box<Self>, e: StoreError);
}

struct Call<F, R> {
    f: F,
    reply: Option<oneshot::Sender<Result<R, StoreError>>>,
    /// Runs when the request's changes did not become durable, however that came.
    on_fail: Option<Failed>,
}

impl<F, R> Job for Call<F, R>
where
    F: FnOnce(&Store, &mut Hooks) -> Result<R, StoreError> + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Box<Self>, store: &Store) -> (Done, bool) {
        let mut hooks = Hooks::default();
        let result = (self.f)(store, &mut hooks);
        let ok = result.is_ok();
        let reply = self.reply;
        let on_fail = self.on_fail;
        let done: Done = Box::new(move |flushed: &Result<(), StoreError>| {
            let result = match flushed {
                Ok(()) => result,
                Err(e) => Err(e.clone()),
            };
            match &result {
                Ok(_) => hooks.after.into_iter().for_each(|f| f()),
                Err(e) => {
                    if let Some(f) = on_fail {
                        f(e);
                    }
                }
            }
            if let Some(tx) = reply {
                let _ = tx.send(result);
            }
        });
        (done, ok)
    }

    fn refuse(self: Box<Self>, e: StoreError) {
        if let Some(f) = self.on_fail {
            f(&e);
        }
        if let Some(tx) = self.reply {
            let _ = tx.send(Err(e));
        }
    }
}

struct Shared {
    flushes: AtomicU64,
    flush_micros: AtomicU64,
    requests: AtomicU64,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Fired after the store was reopened: in-memory queues resync from it.
    recovered: Notify,
}

/// The handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Box<dyn Job>>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the writer thread for `store`. It ends when every handle is dropped.
    pub fn start(store: Arc<Store>) -> Self {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let shared = Arc::new(Shared {
            flushes: AtomicU64::new(0),
            flush_micros: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            recovered: Notify::new(),
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&store, &rx, &s));
        if let Err(e) = spawned {
            // Without the thread every write is refused with an error: loud, not lost.
            tracing::error!("cannot start the store writer thread: {e}");
        }
        Self { tx, shared }
    }

    /// Runs `f` on the writer thread and returns its result once its changes are on
    /// disk. `f` must make its changes as one batch (or none on error).
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Store, &mut Hooks) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(Call {
                f,
                reply: Some(tx),
                on_fail: None,
            }))
            .map_err(|_| StoreError::Io("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Io("the store writer has stopped".into()))?
    }

    /// Like [`Writer::write`] without waiting: for changes whose follow-up is their
    /// after-commit hooks (an agent's ack). `on_fail` runs, and the error is logged,
    /// when the changes did not become durable.
    pub fn submit<F, G>(&self, what: &'static str, f: F, on_fail: G)
    where
        F: FnOnce(&Store, &mut Hooks) -> Result<(), StoreError> + Send + 'static,
        G: FnOnce(&StoreError) + Send + 'static,
    {
        let job = Call {
            f: move |s: &Store, h: &mut Hooks| {
                let r = f(s, h);
                if let Err(e) = &r {
                    tracing::error!("cannot record {what}: {e}");
                }
                r
            },
            reply: None::<oneshot::Sender<Result<(), StoreError>>>,
            on_fail: Some(Box::new(on_fail)),
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(Box::new(job)) {
            tracing::error!("cannot record {what}: the store writer has stopped");
            job.refuse(StoreError::Io("the store writer has stopped".into()));
        }
    }

    /// `Err(reason)` while the store cannot write.
    pub fn health(&self) -> Result<(), String> {
        if self.shared.healthy.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Err(format!("the store cannot write: {why}"))
    }

    /// Resolves after the store was reopened following a write error.
    pub async fn recovered(&self) {
        self.shared.recovered.notified().await;
    }

    /// (fsyncs, microseconds in them, requests applied).
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.shared.flushes.load(Ordering::Relaxed),
            self.shared.flush_micros.load(Ordering::Relaxed),
            self.shared.requests.load(Ordering::Relaxed),
        )
    }
}

fn writer_loop(store: &Store, rx: &mpsc::Receiver<Box<dyn Job>>, shared: &Shared) {
    let mut last_try = Instant::now();
    let mut healthy = true;
    loop {
        let first = if healthy {
            match rx.recv() {
                Ok(j) => Some(j),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(RECOVER_EVERY) {
                Ok(j) => Some(j),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        if !healthy && last_try.elapsed() >= RECOVER_EVERY {
            last_try = Instant::now();
            match store.reopen() {
                Ok(()) => {
                    healthy = true;
                    shared.healthy.store(true, Ordering::Release);
                    tracing::warn!("the store can write again: accepting webhooks");
                    shared.recovered.notify_one();
                }
                Err(e) => tracing::debug!("the store still cannot write: {e}"),
            }
        }
        let Some(first) = first else { continue };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if !healthy {
            let why = shared
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            for j in jobs {
                j.refuse(StoreError::Io(format!(
                    "{why} (the store is retrying; nothing was written)"
                )));
            }
            continue;
        }
        shared
            .requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        // Every request's changes go into one pending batch (area.rs explains why),
        // applied once and flushed once; a request that fails leaves nothing in it.
        area::pending_begin();
        let done: Vec<Done> = jobs
            .into_iter()
            .map(|j| {
                let mark = area::pending_mark();
                let (done, ok) = j.run(store);
                if !ok {
                    area::pending_rollback(mark);
                }
                done
            })
            .collect();
        let batch = area::pending_take();
        let started = Instant::now();
        let flushed = store.apply_now(batch).and_then(|()| store.flush());
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        shared
            .flush_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::trace!(
            requests = done.len(),
            micros = started.elapsed().as_micros() as u64,
            "store commit"
        );
        if let Err(e) = &flushed {
            healthy = false;
            last_try = Instant::now();
            *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            shared.healthy.store(false, Ordering::Release);
            tracing::error!(
                "the store cannot write: {e}; answering 503 and retrying every second until it can"
            );
        }
        for d in done {
            d(&flushed);
        }
    }
}
