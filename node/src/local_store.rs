//! The node's access to its storage engine, kept off the async runtime. Writes go to one
//! dedicated writer thread that drains its queue and applies everything queued in one engine
//! batch (one RocksDB WriteBatch), so a burst of replica writes costs one WAL append. Reads go
//! first to [`Engine::get_cached`], which answers from memtables and the block cache without
//! touching the disk, right on the calling task; what needs the disk goes to one reader thread,
//! which drains its queue and looks up every queued key in one [`Engine::get_many`] (a RocksDB
//! MultiGet), so a burst of reads costs one thread wake-up, not one per read.

use proto::Record;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use storage::merkle::TreeSet;
use storage::{Applied, Engine, StorageError, Write};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

/// Most writes applied in one batch.
const MAX_BATCH: usize = 1024;
/// Most reads looked up in one batch.
const MAX_READ_BATCH: usize = 256;

type ReadReply = oneshot::Sender<Result<Option<Record>, String>>;

struct ReadJob {
    key: Vec<u8>,
    done: ReadReply,
}

type WriteReply = oneshot::Sender<Result<Applied, String>>;

struct Job {
    write: Write,
    done: WriteReply,
}

/// A finished batch's answers, handed to the runtime in one message.
type Replies = Vec<(WriteReply, Result<Applied, String>)>;

/// Finished batches waiting for the runtime to deliver their answers.
const REPLY_BATCHES: usize = 64;

/// Counters of the writer thread and of write-ahead-log syncs (for `/metrics`).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Engine batches applied (one RocksDB WriteBatch each).
    pub batches: AtomicU64,
    /// Writes applied, over all batches.
    pub writes: AtomicU64,
    /// Times the write-ahead log was made durable: each batch in `sync` mode, each periodic
    /// fsync in `periodic` mode.
    pub wal_syncs: AtomicU64,
}

/// Handle to the engine and its writer thread.
#[derive(Clone)]
pub struct LocalStore {
    engine: Arc<dyn Engine>,
    tx: mpsc::Sender<Job>,
    reads: mpsc::Sender<ReadJob>,
    /// Counters.
    pub stats: Arc<StoreStats>,
}

/// A local storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalStoreError {
    /// The engine reported an error.
    #[error("storage: {0}")]
    Storage(String),
    /// The writer thread is gone (shutting down).
    #[error("storage writer stopped")]
    Stopped,
}

impl From<StorageError> for LocalStoreError {
    fn from(e: StorageError) -> Self {
        LocalStoreError::Storage(e.to_string())
    }
}

impl LocalStore {
    /// Starts the writer and reader threads, and the task that delivers the writer's answers
    /// (so it must be called on a tokio runtime). The queue holds at most `queue` writes;
    /// writers wait beyond that.
    /// Every applied write updates `trees` with the version it replaced and the new one.
    /// `synced` says whether the engine syncs its log on every batch (`sync` durability).
    pub fn start(
        engine: Arc<dyn Engine>,
        queue: usize,
        trees: Arc<Mutex<TreeSet>>,
        synced: bool,
    ) -> std::io::Result<(LocalStore, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(queue);
        let (reads, read_rx) = mpsc::channel(queue);
        // The writer hands each batch's answers to this task in one message, so a batch costs
        // the runtime one wake-up; waking it once per answer let the woken runtime thread
        // preempt the writer between answers, over and over.
        let (replies, replies_rx) = mpsc::channel(REPLY_BATCHES);
        tokio::spawn(deliver(replies_rx));
        // Both threads end once the last handle (holding both queues' senders) is gone. The
        // writer then waits for the reader, so joining the writer means neither holds the
        // engine any more (a restart can reopen the database at once).
        let e = engine.clone();
        let reader_thread = std::thread::Builder::new()
            .name("storage-reader".into())
            .spawn(move || reader(e, read_rx))?;
        let e = engine.clone();
        let stats = Arc::new(StoreStats::default());
        let st = stats.clone();
        let handle = std::thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || {
                writer(e, rx, replies, trees, st, synced);
                let _ = reader_thread.join();
            })?;
        Ok((
            LocalStore {
                engine,
                tx,
                reads,
                stats,
            },
            handle,
        ))
    }

    /// The engine (for blocking callers).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Applies one write (last-write-wins): [`Applied::Stored`] (with the version it replaced) if
    /// it was newer and stored, [`Applied::Ignored`] otherwise.
    pub async fn apply(&self, key: Vec<u8>, record: Record) -> Result<Applied, LocalStoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Job {
                write: Write { key, record },
                done,
            })
            .await
            .map_err(|_| LocalStoreError::Stopped)?;
        rx.await
            .map_err(|_| LocalStoreError::Stopped)?
            .map_err(LocalStoreError::Storage)
    }

    /// Reads the local record of a key, tombstones included.
    pub async fn get(&self, key: Vec<u8>) -> Result<Option<Record>, LocalStoreError> {
        // Answered here when memory has the answer (no disk read, so nothing blocks the
        // runtime); otherwise by the reader thread. This saves two thread hand-offs per read.
        if let Some(found) = self.engine.get_cached(&key)? {
            return Ok(found);
        }
        let (done, rx) = oneshot::channel();
        self.reads
            .send(ReadJob { key, done })
            .await
            .map_err(|_| LocalStoreError::Stopped)?;
        rx.await
            .map_err(|_| LocalStoreError::Stopped)?
            .map_err(LocalStoreError::Storage)
    }
}

fn reader(engine: Arc<dyn Engine>, mut rx: mpsc::Receiver<ReadJob>) {
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(MAX_READ_BATCH);
    let mut dones: Vec<ReadReply> = Vec::with_capacity(MAX_READ_BATCH);
    while let Some(first) = rx.blocking_recv() {
        keys.push(first.key);
        dones.push(first.done);
        while keys.len() < MAX_READ_BATCH {
            match rx.try_recv() {
                Ok(j) => {
                    keys.push(j.key);
                    dones.push(j.done);
                }
                Err(_) => break,
            }
        }
        match engine.get_many(&keys) {
            Ok(records) => {
                for (done, r) in dones.drain(..).zip(records) {
                    let _ = done.send(Ok(r));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for done in dones.drain(..) {
                    let _ = done.send(Err(msg.clone()));
                }
            }
        }
        keys.clear();
    }
}

/// Answers every write of each finished batch (on the runtime: waking the callers is cheap).
async fn deliver(mut rx: mpsc::Receiver<Replies>) {
    while let Some(batch) = rx.recv().await {
        for (done, result) in batch {
            let _ = done.send(result);
        }
    }
}

fn writer(
    engine: Arc<dyn Engine>,
    mut rx: mpsc::Receiver<Job>,
    replies: mpsc::Sender<Replies>,
    trees: Arc<Mutex<TreeSet>>,
    stats: Arc<StoreStats>,
    synced: bool,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut writes: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut dones = Vec::with_capacity(jobs.len());
        for j in jobs.drain(..) {
            writes.push(j.write);
            dones.push(j.done);
        }
        match engine.apply(&writes) {
            Ok(applied) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .writes
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                if synced {
                    stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
                }
                {
                    let mut trees = trees.lock().unwrap_or_else(|p| p.into_inner());
                    for (w, a) in writes.iter().zip(&applied) {
                        if let Applied::Stored { previous } = a {
                            trees.update(&w.key, *previous, Some(w.record.version));
                        }
                    }
                }
                let answers = dones.into_iter().zip(applied.into_iter().map(Ok)).collect();
                // The runtime is gone only at shutdown; the callers then see `Stopped`.
                let _ = replies.blocking_send(answers);
            }
            Err(e) => {
                error!(error = %e, batch = writes.len(), "storage batch failed");
                let msg = e.to_string();
                let answers = dones.into_iter().map(|d| (d, Err(msg.clone()))).collect();
                let _ = replies.blocking_send(answers);
            }
        }
        writes.clear();
    }
    if let Err(e) = engine.flush() {
        error!(error = %e, "final storage flush failed");
    }
}
