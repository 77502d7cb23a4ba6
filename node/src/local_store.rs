//! The node's access to its storage engine, kept off the async runtime. Writes go to one
//! dedicated writer thread that drains its queue and applies everything queued in one engine
//! batch (one RocksDB WriteBatch), so a burst of replica writes costs one WAL append. Reads go
//! first to [`Engine::get_cached`], which answers from memtables and the block cache without
//! touching the disk, right on the calling task; what needs the disk goes to one reader thread,
//! which drains its queue and looks up every queued key in one [`Engine::get_many`] (a RocksDB
//! MultiGet), so a burst of reads costs one thread wake-up, not one per read. Both threads keep
//! the normal scheduling policy: every write waits for the writer, so a writer that waited for
//! a core (as `SCHED_BATCH` did) made the tail latency of writes worse (ARCHITECTURE.md,
//! Performance, item 11).

use proto::Record;
use ring::TokenRange;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::merkle::TreeSet;
use storage::{Applied, Engine, ScanCursor, StorageError, Write};
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

/// Where the outcome of a write job goes.
enum WriteReply {
    /// One write's.
    One(oneshot::Sender<Result<Applied, String>>),
    /// A slice of `n` writes' (applied in one batch, in order).
    Many(oneshot::Sender<Result<Vec<Applied>, String>>, usize),
}

impl WriteReply {
    /// Writes this reply answers for.
    fn writes(&self) -> usize {
        match self {
            WriteReply::One(_) => 1,
            WriteReply::Many(_, n) => *n,
        }
    }

    /// Sends the outcomes of this reply's writes, taken from the front of `applied`.
    fn answer(self, applied: &mut impl Iterator<Item = Applied>) {
        match self {
            WriteReply::One(done) => {
                if let Some(a) = applied.next() {
                    let _ = done.send(Ok(a));
                }
            }
            WriteReply::Many(done, n) => {
                let _ = done.send(Ok(applied.take(n).collect()));
            }
        }
    }

    fn fail(self, msg: String) {
        match self {
            WriteReply::One(done) => {
                let _ = done.send(Err(msg));
            }
            WriteReply::Many(done, _) => {
                let _ = done.send(Err(msg));
            }
        }
    }
}

impl Job {
    /// Writes in this job.
    fn writes(&self) -> usize {
        match self {
            Job::Write { .. } => 1,
            Job::Writes { writes, .. } => writes.len(),
            Job::Rebuild { .. } => 0,
        }
    }
}

enum Job {
    /// Apply one write.
    Write { write: Write, done: WriteReply },
    /// Apply several writes (in the same batch).
    Writes {
        writes: Vec<Write>,
        done: WriteReply,
    },
    /// Replace the Merkle trees by trees of these ranges, built from storage a page at a time
    /// between write batches; with `adopt`, the trees of ranges the current set has are taken
    /// over instead of scanned.
    Rebuild {
        ranges: Vec<TokenRange>,
        adopt: bool,
    },
}

/// Records scanned per rebuild step (one step runs between two write batches).
const REBUILD_PAGE: usize = 2048;
/// Records a rebuild scans per second at most. Every node of a ring rebuilds at once after a
/// topology change; unpaced, their scans took the cores from the requests (p99 of QUORUM
/// writes near 100 ms on 2 cores with 1,000,000 keys). At this rate 1,000,000 records take 5 s.
const REBUILD_RECORDS_PER_SEC: f64 = 200_000.0;

/// A Merkle tree rebuild in progress on the writer thread. The trees of ranges the old set
/// already has are taken over; the other ranges are scanned in order, a page per step; a write
/// lands in the new trees only once the scan has passed its position (it is otherwise found by
/// the scan), so the new trees equal what is stored when the scan ends, with no pause of the
/// writes. Steps are paced to [`REBUILD_RECORDS_PER_SEC`].
struct Rebuilding {
    set: TreeSet,
    /// The ranges to scan (those not taken over).
    ranges: Vec<TokenRange>,
    at: usize,
    cursor: Option<ScanCursor>,
    /// When the next step may run.
    next_step: Instant,
}

/// Position of a token in the scan order of `range` (ascending from just after its start).
fn position(range: &TokenRange, token: ring::Token) -> u64 {
    token.wrapping_sub(range.start).wrapping_sub(1)
}

impl Rebuilding {
    /// A rebuild of the trees of `ranges`, taking over those `current` has.
    fn new(ranges: Vec<TokenRange>, current: &TreeSet) -> Self {
        let mut set = TreeSet::new(ranges);
        let mut ranges = set.adopt_from(current);
        ranges.sort_by_key(|r| (r.end, r.start));
        Rebuilding {
            set,
            ranges,
            at: 0,
            cursor: None,
            next_step: Instant::now(),
        }
    }

    /// Whether a write to `key` must be applied to the new trees: the scan has passed it, or
    /// its range is not scanned (its tree was taken over; or no new tree holds it, and the
    /// update is ignored).
    fn passed(&self, key: &[u8]) -> bool {
        let token = ring::token_of(key);
        let Some(i) = self.ranges.iter().position(|r| r.contains(token)) else {
            return true;
        };
        match i.cmp(&self.at) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => self.cursor.as_ref().is_some_and(|c| {
                let r = &self.ranges[i];
                (position(r, token), key) <= (position(r, c.token), c.key.as_slice())
            }),
        }
    }

    /// Scans one page; true when every range is done.
    fn step(&mut self, engine: &dyn Engine) -> Result<bool, StorageError> {
        let Some(range) = self.ranges.get(self.at).copied() else {
            return Ok(true);
        };
        let page = engine.scan(range, self.cursor.as_ref(), REBUILD_PAGE)?;
        for (key, record) in &page {
            self.set.update(key, None, Some(record.version));
        }
        self.next_step = Instant::now()
            + Duration::from_secs_f64(page.len().max(1) as f64 / REBUILD_RECORDS_PER_SEC);
        match page.last() {
            Some((key, _)) if page.len() >= REBUILD_PAGE => {
                self.cursor = Some(ScanCursor::after(key))
            }
            _ => {
                self.at += 1;
                self.cursor = None;
            }
        }
        Ok(self.at >= self.ranges.len())
    }
}

/// A finished batch's answers, handed to the runtime in one message: the replies in job order
/// and every write's outcome in the same order (or why the batch failed).
type Replies = (Vec<WriteReply>, Result<Vec<Applied>, String>);

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
    rebuilding: Arc<std::sync::atomic::AtomicBool>,
    rebuilds: Arc<AtomicU64>,
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
        let rebuilding = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rb = rebuilding.clone();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let handle = std::thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || {
                writer(e, rx, replies, trees, st, synced, rb, runtime);
                let _ = reader_thread.join();
            })?;
        Ok((
            LocalStore {
                engine,
                tx,
                reads,
                stats,
                rebuilding,
                rebuilds: Arc::new(AtomicU64::new(0)),
            },
            handle,
        ))
    }

    /// The engine (for blocking callers).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Rebuilds the Merkle trees for `ranges` on the writer thread, a page between write
    /// batches; the new trees replace the old ones when done. A later call replaces a rebuild
    /// in progress.
    pub fn rebuild_trees(&self, ranges: Vec<TokenRange>) {
        self.start_rebuild(ranges, true);
    }

    /// Like [`LocalStore::rebuild_trees`], but every range is scanned from storage (nothing is
    /// taken over): after trees may have missed a change made outside the writer thread.
    pub fn rebuild_trees_from_storage(&self, ranges: Vec<TokenRange>) {
        self.start_rebuild(ranges, false);
    }

    fn start_rebuild(&self, ranges: Vec<TokenRange>, adopt: bool) {
        self.rebuilding.store(true, Ordering::Release);
        self.rebuilds.fetch_add(1, Ordering::AcqRel);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Job::Rebuild { ranges, adopt }).await;
        });
    }

    /// How many rebuilds were started so far (a caller compares it before and after work done
    /// outside the writer thread to learn whether a rebuild started meanwhile).
    pub fn rebuilds_started(&self) -> u64 {
        self.rebuilds.load(Ordering::Acquire)
    }

    /// Whether a Merkle tree rebuild is in progress (anti-entropy waits for it).
    pub fn rebuilding_trees(&self) -> bool {
        self.rebuilding.load(Ordering::Acquire)
    }

    /// Applies one write (last-write-wins): [`Applied::Stored`] (with the version it replaced) if
    /// it was newer and stored, [`Applied::Ignored`] otherwise.
    pub async fn apply(&self, key: Vec<u8>, record: Record) -> Result<Applied, LocalStoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Job::Write {
                write: Write { key, record },
                done: WriteReply::One(done),
            })
            .await
            .map_err(|_| LocalStoreError::Stopped)?;
        rx.await
            .map_err(|_| LocalStoreError::Stopped)?
            .map_err(LocalStoreError::Storage)
    }

    /// Applies several writes (each as [`LocalStore::apply`]) in as few batches of the writer
    /// thread as [`MAX_BATCH`] allows; their outcomes in order.
    pub async fn apply_many(&self, writes: Vec<Write>) -> Result<Vec<Applied>, LocalStoreError> {
        let mut out = Vec::with_capacity(writes.len());
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            let chunk: Vec<Write> = writes.by_ref().take(MAX_BATCH).collect();
            let (done, rx) = oneshot::channel();
            let n = chunk.len();
            self.tx
                .send(Job::Writes {
                    writes: chunk,
                    done: WriteReply::Many(done, n),
                })
                .await
                .map_err(|_| LocalStoreError::Stopped)?;
            out.extend(
                rx.await
                    .map_err(|_| LocalStoreError::Stopped)?
                    .map_err(LocalStoreError::Storage)?,
            );
        }
        Ok(out)
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
    while let Some((dones, result)) = rx.recv().await {
        match result {
            Ok(applied) => {
                let mut applied = applied.into_iter();
                for done in dones {
                    done.answer(&mut applied);
                }
            }
            Err(msg) => {
                for done in dones {
                    done.fail(msg.clone());
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn writer(
    engine: Arc<dyn Engine>,
    mut rx: mpsc::Receiver<Job>,
    replies: mpsc::Sender<Replies>,
    trees: Arc<Mutex<TreeSet>>,
    stats: Arc<StoreStats>,
    synced: bool,
    rebuilding_flag: Arc<std::sync::atomic::AtomicBool>,
    runtime: Option<tokio::runtime::Handle>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut writes: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    let mut rebuilding: Option<Rebuilding> = None;
    loop {
        // With a rebuild in progress, wait for a write only until its next step is due.
        let first = if let Some(rb) = rebuilding.as_ref() {
            match recv_until(&mut rx, rb.next_step, runtime.as_ref()) {
                Received::Job(j) => Some(j),
                Received::Nothing => None,
                Received::Closed => break,
            }
        } else {
            match rx.blocking_recv() {
                Some(j) => Some(j),
                None => break,
            }
        };
        if let Some(first) = first {
            let mut queued = first.writes();
            jobs.push(first);
            // A job of several writes may take the batch past MAX_BATCH once, never further.
            while queued < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => {
                        queued += j.writes();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
        }
        let mut dones = Vec::with_capacity(jobs.len());
        for j in jobs.drain(..) {
            match j {
                Job::Write { write, done } => {
                    writes.push(write);
                    dones.push(done);
                }
                Job::Writes { writes: w, done } => {
                    writes.extend(w);
                    dones.push(done);
                }
                Job::Rebuild { ranges, adopt } => {
                    let current = trees.lock().unwrap_or_else(|p| p.into_inner());
                    let from = if adopt {
                        &*current
                    } else {
                        &TreeSet::default()
                    };
                    rebuilding = Some(Rebuilding::new(ranges, from));
                }
            }
        }
        if !writes.is_empty() {
            apply_batch(
                engine.as_ref(),
                &writes,
                dones,
                &replies,
                &trees,
                &stats,
                synced,
                rebuilding.as_mut(),
            );
            writes.clear();
        }
        if let Some(rb) = rebuilding
            .as_mut()
            .filter(|rb| Instant::now() >= rb.next_step)
        {
            match rb.step(engine.as_ref()) {
                Ok(false) => {}
                Ok(true) => {
                    if let Some(done) = rebuilding.take() {
                        *trees.lock().unwrap_or_else(|p| p.into_inner()) = done.set;
                        rebuilding_flag.store(false, Ordering::Release);
                    }
                }
                Err(e) => {
                    error!(error = %e, "Merkle tree rebuild failed; keeping the old trees");
                    rebuilding = None;
                    rebuilding_flag.store(false, Ordering::Release);
                }
            }
        }
    }
    if let Err(e) = engine.flush() {
        error!(error = %e, "final storage flush failed");
    }
}

/// What waiting for a write job gave.
enum Received {
    Job(Job),
    /// Nothing came before the deadline.
    Nothing,
    /// Every sender is gone.
    Closed,
}

/// Waits for the next job until `deadline`: on the runtime's timer when there is one, else
/// in sleeps of at most 200 µs.
fn recv_until(
    rx: &mut mpsc::Receiver<Job>,
    deadline: Instant,
    runtime: Option<&tokio::runtime::Handle>,
) -> Received {
    match rx.try_recv() {
        Ok(j) => return Received::Job(j),
        Err(mpsc::error::TryRecvError::Disconnected) => return Received::Closed,
        Err(mpsc::error::TryRecvError::Empty) => {}
    }
    let wait = deadline.saturating_duration_since(Instant::now());
    if wait.is_zero() {
        return Received::Nothing;
    }
    match runtime {
        // The timer is made inside `block_on`, where the runtime's context is set.
        Some(rt) => match rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
            Ok(Some(j)) => Received::Job(j),
            Ok(None) => Received::Closed,
            Err(_) => Received::Nothing,
        },
        None => {
            std::thread::sleep(wait.min(Duration::from_micros(200)));
            match rx.try_recv() {
                Ok(j) => Received::Job(j),
                Err(mpsc::error::TryRecvError::Disconnected) => Received::Closed,
                Err(mpsc::error::TryRecvError::Empty) => Received::Nothing,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_batch(
    engine: &dyn Engine,
    writes: &[Write],
    dones: Vec<WriteReply>,
    replies: &mpsc::Sender<Replies>,
    trees: &Mutex<TreeSet>,
    stats: &StoreStats,
    synced: bool,
    mut rebuilding: Option<&mut Rebuilding>,
) {
    match engine.apply(writes) {
        Ok(applied) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats
                .writes
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
            if synced {
                stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
            }
            // Answer first, then hash the writes into the trees (a blake3 hash each), so the
            // callers do not wait for it. The trees stay locked from before the answers go
            // out, so whoever reads them after seeing an answer sees that write in them.
            let stored = applied.clone();
            debug_assert_eq!(
                dones.iter().map(WriteReply::writes).sum::<usize>(),
                writes.len()
            );
            let mut trees = trees.lock().unwrap_or_else(|p| p.into_inner());
            // The runtime is gone only at shutdown; the callers then see `Stopped`.
            let _ = replies.blocking_send((dones, Ok(applied)));
            for (w, a) in writes.iter().zip(stored) {
                if let Applied::Stored { previous } = a {
                    trees.update(&w.key, previous, Some(w.record.version));
                    if let Some(rb) = rebuilding.as_deref_mut() {
                        if rb.passed(&w.key) {
                            rb.set.update(&w.key, previous, Some(w.record.version));
                        }
                    }
                }
            }
        }
        Err(e) => {
            error!(error = %e, batch = writes.len(), "storage batch failed");
            let _ = replies.blocking_send((dones, Err(e.to_string())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Version;
    use storage::memory::MemEngine;

    fn r(start: u64, end: u64) -> TokenRange {
        TokenRange { start, end }
    }

    fn roots(set: &TreeSet) -> Vec<(TokenRange, storage::merkle::Digest)> {
        set.ranges()
            .map(|r| (*r, set.tree(r).expect("tree").root()))
            .collect()
    }

    /// A ring change: the trees of ranges kept are taken over, new ranges are scanned, and
    /// writes made during the (paced) rebuild land in both; the result equals trees built from
    /// scratch from what is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuild_takes_over_kept_ranges_scans_new_ones_and_misses_no_write() {
        let q = u64::MAX / 4;
        let first = vec![r(0, q), r(q, 2 * q)];
        // Keeps (0, q], drops (q, 2q], adds (2q, 3q] and (3q, 0].
        let second = vec![r(0, q), r(2 * q, 3 * q), r(3 * q, 0)];
        let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
        let trees = Arc::new(Mutex::new(TreeSet::new(first.clone())));
        let (store, _thread) =
            LocalStore::start(engine.clone(), 1024, trees.clone(), false).expect("start");
        let put = |i: u64| {
            let store = store.clone();
            async move {
                let record = Record::value(
                    Version {
                        hlc: 1_000 + i,
                        node: 1,
                    },
                    b"v".to_vec(),
                );
                store
                    .apply(format!("key-{i}").into_bytes(), record)
                    .await
                    .expect("apply");
            }
        };
        for i in 0..20_000 {
            put(i).await;
        }
        let kept_before = trees.lock().unwrap().tree(&r(0, q)).expect("tree").root();
        store.rebuild_trees(second.clone());
        // Writes while the rebuild runs (it is paced, so it is still running for most of them).
        for i in 20_000..30_000 {
            put(i).await;
        }
        let until = Instant::now() + Duration::from_secs(20);
        while store.rebuilding_trees() {
            assert!(Instant::now() < until, "rebuild did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let built = trees.lock().unwrap().clone();
        let expected = TreeSet::rebuild(engine.as_ref(), second, 1000).expect("rebuild");
        assert_eq!(roots(&built), roots(&expected));
        // The kept range's tree went on counting the writes made during the rebuild.
        assert_ne!(built.tree(&r(0, q)).expect("kept").root(), kept_before);
    }

    /// Several writes given at once come back with one outcome each, in their order, also
    /// when single writes share their batch and when there are more than one batch holds; the
    /// trees count every stored one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_writes_at_once_are_answered_in_order() {
        let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
        let trees = Arc::new(Mutex::new(TreeSet::new(vec![r(0, 0)])));
        let (store, _thread) =
            LocalStore::start(engine.clone(), 1024, trees.clone(), false).expect("start");
        let record = |hlc: u64| Record::value(Version { hlc, node: 1 }, hlc.to_be_bytes().to_vec());
        let write = |i: u64, hlc: u64| Write {
            key: format!("key-{i}").into_bytes(),
            record: record(hlc),
        };
        // Keys 0..10 are stored at version 100 first; the batch then brings 0..10 older (10)
        // and 10..2500 new, more than one writer batch holds.
        let first: Vec<Write> = (0..10).map(|i| write(i, 100)).collect();
        store.apply_many(first).await.expect("first");
        let batch: Vec<Write> = (0..2_500).map(|i| write(i, 10)).collect();
        let single = store.apply(b"single".to_vec(), record(5));
        let (many, single) = tokio::join!(store.apply_many(batch), single);
        let many = many.expect("many");
        assert_eq!(many.len(), 2_500);
        for (i, a) in many.iter().enumerate() {
            if i < 10 {
                assert_eq!(a, &Applied::Ignored, "key-{i} is older than what is stored");
            } else {
                assert_eq!(a, &Applied::Stored { previous: None }, "key-{i}");
            }
        }
        assert_eq!(single.expect("single"), Applied::Stored { previous: None });
        assert_eq!(
            store.apply_many(Vec::new()).await.expect("none"),
            Vec::new()
        );
        let stored = engine.get(b"key-3").expect("get").expect("record");
        assert_eq!(stored.version.hlc, 100);
        let expected = TreeSet::rebuild(engine.as_ref(), vec![r(0, 0)], 1000).expect("rebuild");
        assert_eq!(roots(&trees.lock().unwrap()), roots(&expected));
        assert_ne!(
            roots(&expected),
            roots(&TreeSet::new(vec![r(0, 0)])),
            "the trees hold the writes"
        );
    }
}
