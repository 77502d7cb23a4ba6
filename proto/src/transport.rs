//! QUIC transport on quinn. One long-lived connection per peer pair; on it, a [`Channel`]
//! multiplexes many requests over one bidirectional stream, matching replies by request id.
//! Writers coalesce: they drain every frame queued so far into one buffer and write it at once,
//! so a burst of requests costs one stream write, never a timer wait.
//!
//! The server side ([`serve`]) accepts connections, learns each peer's [`Role`] from its verified
//! certificate, reads frames from every stream the peer opens and hands requests to a [`Service`].

use crate::codec::{decode_body, encode_into, read_frame, CodecError};
use crate::error::{ErrorCode, ErrorReply};
use crate::message::{Request, RequestFrame, Response, ResponseFrame};
use crate::tls::{role_of, Role, TlsError, TlsMaterial, NODE_SERVER_NAME};
use futures::future::BoxFuture;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{debug, warn};

/// Frames queued for one stream writer before senders wait.
const WRITE_QUEUE_FRAMES: usize = 1024;
/// Buffer a stream's frames are read from.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A coalesced write stops growing at this many bytes.
const COALESCE_BYTES: usize = 256 * 1024;
/// Requests one channel may have awaiting replies.
const CHANNEL_IN_FLIGHT: usize = 4096;
/// After a failed connect, further connects to the same address fail fast for this long; each
/// further failure doubles it, up to [`RECONNECT_BACKOFF_MAX`]. A success resets it.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);
/// Longest fail-fast period after repeated connect failures.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The reason a node gives when it closes its endpoint at shutdown. For
/// [`RECONNECT_BACKOFF_MAX`] after a peer was seen saying so (and until a new connection to it
/// is made), [`Pool::is_backing_off`] reports it, so callers choosing between nodes try the
/// others first instead of waiting for a handshake to a port nobody may listen on any more. A
/// direct call still reconnects (the node may have restarted).
pub const SHUTDOWN_REASON: &[u8] = b"shutting down";

/// Transport failures (as opposed to error replies from the peer).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The QUIC endpoint could not be created.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// TLS material was unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connecting to a peer failed (refused, unreachable, handshake or certificate rejected).
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The connection or stream closed before the reply arrived.
    #[error("connection to {0} closed")]
    Closed(SocketAddr),
    /// No reply within the request's timeout.
    #[error("no reply from {0} in time")]
    Timeout(SocketAddr),
    /// The request could not be encoded (too large).
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The builder of the async runtime that nodes and clients run the transport on, with
/// `threads` worker threads. With one (or 0), tokio's current-thread scheduler, run by the
/// thread that calls `block_on`: a multi-thread scheduler with one worker still pays for work
/// stealing (the worker's searching and parking states, its LIFO slot, a second thread parked
/// in `block_on`) with nothing to steal from. Measured in ARCHITECTURE, Performance, item 15.
pub fn runtime_builder(threads: usize) -> tokio::runtime::Builder {
    if threads <= 1 {
        return tokio::runtime::Builder::new_current_thread();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads);
    builder
}

/// Limits of a QUIC endpoint.
fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(64u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.keep_alive_interval(Some(Duration::from_millis(1000)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(5)) {
        t.max_idle_timeout(Some(idle));
    }
    // RFC 9002's initial RTT of 333 ms puts the first retransmission of a lost handshake
    // packet about 1 s after the first, as late as the 1 s that clients and nodes wait for a
    // handshake: one datagram dropped by a full socket buffer (a burst, or a flood of garbage)
    // failed the connection. Clusters live on one network, where 100 ms is already generous;
    // it gives two retransmissions within that second. The estimate follows the measured RTT
    // from the first acknowledgement on.
    t.initial_rtt(Duration::from_millis(100));
    t.stream_receive_window((8u32 * 1024 * 1024).into());
    t.receive_window((16u32 * 1024 * 1024).into());
    t.send_window(16 * 1024 * 1024);
    // Start at QUIC's safe 1200 bytes and probe upwards: on loopback (a local cluster) the path
    // takes datagrams far larger than Ethernet's, so one datagram carries a whole coalesced
    // burst of frames; on real networks discovery settles at the path's MTU.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    // Ask peers to acknowledge every 8 ack-eliciting packets (or after 5 ms) instead of every
    // other one: replies and requests carry acknowledgements anyway, and the datagrams that
    // carry nothing else are pure overhead (measured: about a quarter fewer datagrams per
    // QUORUM write, 6% less CPU).
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(8u32.into());
    ack.max_ack_delay(Some(Duration::from_millis(5)));
    t.ack_frequency_config(Some(ack));
    t
}

/// Largest UDP payload an endpoint sends (after MTU discovery) or accepts.
const MAX_UDP_PAYLOAD: u16 = 16 * 1024;

/// Receive and send buffer asked for every endpoint's UDP socket: a burst of about 3,000
/// datagrams of 1,400 bytes. With the kernel's default (208 KiB), a node's socket dropped 498
/// to 950 of 1,000 datagrams sent to it at once.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Asks for [`SOCKET_BUFFER_BYTES`] of receive and send buffer; where the system's limits
/// (`net.core.rmem_max`, `wmem_max`) are lower, a process with `CAP_NET_ADMIN` is given it
/// anyway, others keep what the limits allow. Returns the sizes the kernel reports (twice what
/// it grants, for its bookkeeping).
pub fn size_socket_buffers(socket: &std::net::UdpSocket) -> (usize, usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let want = SOCKET_BUFFER_BYTES;
    // Failures leave the buffers as they were: a smaller buffer only drops more of a burst.
    let _ = setsockopt(socket, sockopt::RcvBuf, &want);
    let _ = setsockopt(socket, sockopt::SndBuf, &want);
    #[cfg(target_os = "linux")]
    {
        if getsockopt(socket, sockopt::RcvBuf).unwrap_or(0) < want {
            let _ = setsockopt(socket, sockopt::RcvBufForce, &want);
        }
        if getsockopt(socket, sockopt::SndBuf).unwrap_or(0) < want {
            let _ = setsockopt(socket, sockopt::SndBufForce, &want);
        }
    }
    (
        getsockopt(socket, sockopt::RcvBuf).unwrap_or(0),
        getsockopt(socket, sockopt::SndBuf).unwrap_or(0),
    )
}

/// A node's QUIC stateless-reset key (RFC 9000, 10.3), derived from its private key, so that it
/// is the same in every process the node runs as. A connection's peer keeps a reset token per
/// connection id the node issued (a keyed hash of the id); when the node is killed and starts
/// again on its address, the new process computes the same token for the old connection's next
/// packet and sends it back as a stateless reset, and the peer drops the connection at once.
/// With quinn's defaults (random keys per process) the new process dropped such packets (their
/// connection ids fail its check) and the peer kept sending on the dead connection until a
/// call's timeout or the idle timeout (measured: a call to a node killed and restarted waited
/// out its 3 s timeout).
struct ResetKey([u8; blake3::KEY_LEN]);

impl ResetKey {
    fn for_node(tls: &TlsMaterial) -> ResetKey {
        ResetKey(blake3::derive_key(
            "ringkv 2026-11-25 QUIC stateless reset key",
            tls.key_pem.as_bytes(),
        ))
    }

    /// The key of the node's connection-id check: quinn gives each connection id a short keyed
    /// signature and answers only packets whose id passes it, so a restarted process must
    /// check with the same key to recognise (and reset) its predecessor's connections.
    fn cid_key(&self) -> u64 {
        let key = blake3::keyed_hash(&self.0, b"connection id signature key");
        let mut first = [0u8; 8];
        first.copy_from_slice(&key.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mac = blake3::keyed_hash(&self.0, data);
        let n = signature_out.len().min(blake3::OUT_LEN);
        signature_out[..n].copy_from_slice(&mac.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        blake3::OUT_LEN
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        // `blake3::Hash` compares in constant time.
        match <[u8; blake3::OUT_LEN]>::try_from(signature) {
            Ok(sig) if blake3::keyed_hash(&self.0, data) == blake3::Hash::from(sig) => Ok(()),
            _ => Err(quinn::crypto::CryptoError),
        }
    }
}

/// A QUIC endpoint on a socket bound to `addr`, accepting datagrams up to [`MAX_UDP_PAYLOAD`];
/// a node's endpoint (`server`) resets connections with its [`ResetKey`].
fn endpoint(
    addr: SocketAddr,
    server: Option<(quinn::ServerConfig, ResetKey)>,
) -> Result<quinn::Endpoint, TransportError> {
    let bind = |source| TransportError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind)?;
    let (recv, send) = size_socket_buffers(&socket);
    debug!(%addr, recv, send, wanted = SOCKET_BUFFER_BYTES, "UDP socket buffers");
    let runtime = quinn::default_runtime().ok_or_else(|| {
        bind(std::io::Error::other(
            "no async runtime to run the endpoint on",
        ))
    })?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| bind(std::io::Error::other(e.to_string())))?;
    let server = server.map(|(server, key)| {
        let cid_key = key.cid_key();
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        config.reset_key(Arc::new(key));
        server
    });
    quinn::Endpoint::new(config, server, socket, runtime).map_err(bind)
}

fn client_config(tls: &TlsMaterial) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(tls.client_config()?)
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}

/// A server endpoint bound to `addr` that also makes outgoing connections with the same identity
/// (a node talks to its peers from its own endpoint).
pub fn server_endpoint(
    addr: SocketAddr,
    tls: &TlsMaterial,
) -> Result<quinn::Endpoint, TransportError> {
    let crypto = QuicServerConfig::try_from(tls.server_config()?)
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config()));
    let mut ep = endpoint(addr, Some((server, ResetKey::for_node(tls))))?;
    ep.set_default_client_config(client_config(tls)?);
    Ok(ep)
}

/// A client-only endpoint on an ephemeral local port.
pub fn client_endpoint(tls: &TlsMaterial) -> Result<quinn::Endpoint, TransportError> {
    let addr: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut ep = endpoint(addr, None)?;
    ep.set_default_client_config(client_config(tls)?);
    Ok(ep)
}

/// Calls awaiting their response, by request id (foldhash: hashed on every call and response).
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>, foldhash::fast::RandomState>>>;

/// One multiplexed request stream on a connection to a peer.
pub struct Channel {
    addr: SocketAddr,
    conn: quinn::Connection,
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    in_flight: Semaphore,
}

impl Channel {
    /// Connects to `addr` (handshake bounded by `timeout`) and opens the request stream.
    pub async fn open(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Channel, TransportError> {
        let err = |reason: String| TransportError::Connect { addr, reason };
        let connecting = endpoint
            .connect(addr, NODE_SERVER_NAME)
            .map_err(|e| err(e.to_string()))?;
        let conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| err("handshake timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        let (send, recv) = conn.open_bi().await.map_err(|e| err(e.to_string()))?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_FRAMES);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_loop(send, rx, closed.clone()));
        tokio::spawn(read_replies(addr, recv, pending.clone(), closed.clone()));
        Ok(Channel {
            addr,
            conn,
            tx,
            pending,
            next_id: AtomicU64::new(1),
            closed,
            in_flight: Semaphore::new(CHANNEL_IN_FLIGHT),
        })
    }

    /// Whether the connection is gone (a new channel must be opened).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.conn.close_reason().is_some()
    }

    /// Whether the peer closed the connection because it is shutting down.
    pub fn peer_shut_down(&self) -> bool {
        // The flag first: it is set when the connection is lost, and reading it takes no lock
        // (this is asked on the client's hot path).
        self.closed.load(Ordering::Relaxed)
            && matches!(
                self.conn.close_reason(),
                Some(quinn::ConnectionError::ApplicationClosed(ref c)) if c.reason.as_ref() == SHUTDOWN_REASON
            )
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request and waits up to `timeout` for its reply.
    pub async fn call(&self, body: Request, timeout: Duration) -> Result<Response, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = tokio::time::timeout_at(deadline, self.in_flight.acquire())
            .await
            .map_err(|_| TransportError::Timeout(self.addr))?
            .map_err(|_| TransportError::Closed(self.addr))?;
        if self.is_closed() {
            return Err(self.closed_error().await);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let mut frame = Vec::new();
        encode_into(
            &RequestFrame {
                id,
                timeout_ms,
                body,
            },
            &mut frame,
        )?;
        let (reply_tx, reply_rx) = oneshot::channel();
        lock(&self.pending).insert(id, reply_tx);
        let guard = PendingGuard {
            pending: &self.pending,
            id,
        };
        if tokio::time::timeout_at(deadline, self.tx.send(frame))
            .await
            .is_err()
        {
            return Err(TransportError::Timeout(self.addr));
        }
        let result = match tokio::time::timeout_at(deadline, reply_rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(self.closed_error().await),
            Err(_) => Err(TransportError::Timeout(self.addr)),
        };
        drop(guard);
        result
    }

    /// Why the connection closed. A peer that refused our certificate closes the connection
    /// just after the handshake completed on our side (QUIC finishes the client's side first), so
    /// that refusal is reported as a failed connect naming the certificate, not as a lost reply.
    async fn closed_error(&self) -> TransportError {
        let reason = match self.conn.close_reason() {
            Some(r) => Some(r),
            // The stream can end a moment before the connection records why.
            None => tokio::time::timeout(Duration::from_millis(100), self.conn.closed())
                .await
                .ok(),
        };
        match reason {
            Some(quinn::ConnectionError::ConnectionClosed(c)) if is_crypto(c.error_code.into()) => {
                TransportError::Connect {
                    addr: self.addr,
                    reason: format!("the peer refused our certificate: {c}"),
                }
            }
            Some(quinn::ConnectionError::TransportError(e)) if is_crypto(e.code.into()) => {
                TransportError::Connect {
                    addr: self.addr,
                    reason: format!("certificate refused: {e}"),
                }
            }
            _ => TransportError::Closed(self.addr),
        }
    }
}

/// QUIC transport error codes 0x100..=0x1ff carry a TLS alert: the handshake's certificate checks.
fn is_crypto(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

/// Removes a request's reply slot however the call ends (reply, timeout, or cancellation).
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drains queued frames into one buffer per write: no timer, just whatever is already queued.
async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    closed: Arc<AtomicBool>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        // Let the tasks that are ready right now (other requests being answered, other replies
        // being decoded) run first, so their frames join this write: no timer, one trip through
        // the run queue.
        tokio::task::yield_now().await;
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < COALESCE_BYTES {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = send.write_all(&buf).await {
            debug!(error = %e, "stream write failed");
            break;
        }
    }
    closed.store(true, Ordering::Relaxed);
    let _ = send.finish();
}

async fn read_replies(
    addr: SocketAddr,
    recv: quinn::RecvStream,
    pending: Pending,
    closed: Arc<AtomicBool>,
) {
    // Frames are read out of a buffer filled from the stream as far as data is available, so a
    // burst of small frames costs one read from quinn (one connection lock), not two per frame.
    let mut recv = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, recv);
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut recv, &mut buf).await {
            Ok(true) => match decode_body::<ResponseFrame>(&buf) {
                Ok(frame) => {
                    if let Some(tx) = lock(&pending).remove(&frame.id) {
                        let _ = tx.send(frame.body);
                    }
                }
                Err(e) => {
                    warn!(%addr, error = %e, "undecodable reply; closing channel");
                    break;
                }
            },
            Ok(false) => break,
            Err(e) => {
                debug!(%addr, error = %e, "reply stream ended");
                break;
            }
        }
    }
    closed.store(true, Ordering::Relaxed);
    // Dropping the senders wakes every waiting caller with `Closed`.
    lock(&pending).clear();
}

/// Channels to many peers, opened on first use and reopened after a failure.
pub struct Pool {
    endpoint: quinn::Endpoint,
    connect_timeout: Duration,
    slots: Mutex<HashMap<SocketAddr, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    channel: tokio::sync::Mutex<Option<Arc<Channel>>>,
    /// When the last connect failed, and how long to fail fast after it.
    failed: Mutex<Option<(Instant, Duration)>>,
    /// When the peer was last seen closing its connection because it was shutting down
    /// (cleared by a successful connect). Callers choosing between nodes avoid it for
    /// [`RECONNECT_BACKOFF_MAX`] after that; direct calls still reconnect.
    shut_down: Mutex<Option<Instant>>,
}

impl Slot {
    /// Notes that `ch`'s peer closed it because it was shutting down, if it did.
    fn note_shut_down(&self, ch: &Channel) {
        if ch.peer_shut_down() {
            *lock(&self.shut_down) = Some(Instant::now());
        }
    }
}

impl Pool {
    /// A pool making connections from `endpoint`.
    pub fn new(endpoint: quinn::Endpoint, connect_timeout: Duration) -> Self {
        Pool {
            endpoint,
            connect_timeout,
            slots: Mutex::default(),
        }
    }

    /// The endpoint connections are made from.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// A live channel to `addr`, connecting if needed. Fails fast for a short while after a
    /// failed connect, so requests to a dead peer do not each wait for a handshake timeout.
    pub async fn channel(&self, addr: SocketAddr) -> Result<Arc<Channel>, TransportError> {
        let slot = lock(&self.slots).entry(addr).or_default().clone();
        if let Some((at, backoff)) = *lock(&slot.failed) {
            if at.elapsed() < backoff {
                return Err(TransportError::Connect {
                    addr,
                    reason: "recent connect failed".into(),
                });
            }
        }
        let mut guard = slot.channel.lock().await;
        if let Some(ch) = guard.as_ref() {
            if !ch.is_closed() {
                return Ok(ch.clone());
            }
            slot.note_shut_down(ch);
        }
        // Callers queued behind a connect that just failed fail fast too, instead of each
        // waiting for its own handshake timeout.
        if let Some((at, backoff)) = *lock(&slot.failed) {
            if at.elapsed() < backoff {
                return Err(TransportError::Connect {
                    addr,
                    reason: "recent connect failed".into(),
                });
            }
        }
        match Channel::open(&self.endpoint, addr, self.connect_timeout).await {
            Ok(ch) => {
                let ch = Arc::new(ch);
                *guard = Some(ch.clone());
                *lock(&slot.failed) = None;
                *lock(&slot.shut_down) = None;
                Ok(ch)
            }
            Err(e) => {
                *guard = None;
                let mut failed = lock(&slot.failed);
                let backoff = failed.map_or(RECONNECT_BACKOFF, |(_, b)| {
                    (b * 2).min(RECONNECT_BACKOFF_MAX)
                });
                *failed = Some((Instant::now(), backoff));
                Err(e)
            }
        }
    }

    /// Treats `addr` as failed just now (for example: another node reports it down), so calls
    /// fail fast and callers try other nodes first until the back-off expires.
    pub fn mark_failed(&self, addr: SocketAddr) {
        let slot = lock(&self.slots).entry(addr).or_default().clone();
        *lock(&slot.failed) = Some((Instant::now(), RECONNECT_BACKOFF_MAX));
    }

    /// Whether `addr` is best avoided: calls fail fast after a failed connect, or its last
    /// connection was closed by the peer because it was shutting down (see [`SHUTDOWN_REASON`]).
    pub fn is_backing_off(&self, addr: SocketAddr) -> bool {
        let Some(slot) = lock(&self.slots).get(&addr).cloned() else {
            return false;
        };
        if lock(&slot.failed).is_some_and(|(at, backoff)| at.elapsed() < backoff) {
            return true;
        }
        // A channel still in the slot whose peer said it is shutting down (busy slot: a
        // connect or a call is using it; the note below covers that case).
        if let Ok(ch) = slot.channel.try_lock() {
            if let Some(c) = ch.as_ref() {
                slot.note_shut_down(c);
            }
        }
        let shut_down = *lock(&slot.shut_down);
        shut_down.is_some_and(|at| at.elapsed() < RECONNECT_BACKOFF_MAX)
    }

    /// Ends the fail-fast period after a failed connect to `addr`: call it when the peer is
    /// evidently alive (it just sent us a request), so the next call connects at once.
    pub fn forgive(&self, addr: SocketAddr) {
        if let Some(slot) = lock(&self.slots).get(&addr) {
            *lock(&slot.failed) = None;
        }
    }

    /// Closes and forgets the channel to `addr` (for example after a heartbeat went
    /// unanswered): the next call opens a new connection instead of waiting on a dead one.
    pub async fn reset(&self, addr: SocketAddr) {
        let slot = lock(&self.slots).get(&addr).cloned();
        if let Some(slot) = slot {
            if let Some(ch) = slot.channel.lock().await.take() {
                slot.note_shut_down(&ch);
                ch.conn.close(0u32.into(), b"reset");
            }
        }
    }

    /// Sends one request to `addr` over its pooled channel.
    pub async fn call(
        &self,
        addr: SocketAddr,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let ch = tokio::time::timeout(timeout, self.channel(addr))
            .await
            .map_err(|_| TransportError::Timeout(addr))??;
        ch.call(body, timeout).await
    }
}

/// Who sent a request, as its certificate says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The caller's role.
    pub role: Role,
    /// The caller's address.
    pub addr: SocketAddr,
}

/// What answers requests on a server endpoint.
pub trait Service: Send + Sync + 'static {
    /// Answers one request. `deadline` is when the caller stops waiting.
    fn handle(
        &self,
        caller: Caller,
        request: Request,
        deadline: Instant,
    ) -> BoxFuture<'static, Response>;
}

/// Bounds on the work a server accepts at once.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Client requests being coordinated at once; more are refused with `Overloaded`.
    pub max_client_requests: usize,
    /// Replica-internal requests being served at once; more are refused with `Overloaded`.
    pub max_internal_requests: usize,
}

struct ServerShared<S> {
    service: Arc<S>,
    client_permits: Arc<Semaphore>,
    internal_permits: Arc<Semaphore>,
}

/// Accepts connections on `endpoint` and serves them until `shutdown` turns true.
pub async fn serve<S: Service>(
    endpoint: quinn::Endpoint,
    service: Arc<S>,
    limits: ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(ServerShared {
        service,
        client_permits: Arc::new(Semaphore::new(limits.max_client_requests)),
        internal_permits: Arc::new(Semaphore::new(limits.max_internal_requests)),
    });
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(serve_connection(incoming, shared.clone()));
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
}

async fn serve_connection<S: Service>(incoming: quinn::Incoming, shared: Arc<ServerShared<S>>) {
    let addr = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Wrong or missing certificates end here: the handshake refused the peer.
            warn!(%addr, error = %e, "refused connection");
            return;
        }
    };
    let role = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .map(|chain| role_of(&chain))
        .unwrap_or(Role::Client);
    let caller = Caller { role, addr };
    debug!(%addr, ?role, "connection accepted");
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(caller, send, recv, shared.clone()));
    }
}

async fn serve_stream<S: Service>(
    caller: Caller,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    shared: Arc<ServerShared<S>>,
) {
    let closed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE_FRAMES);
    tokio::spawn(write_loop(send, rx, closed));
    // Frames are read out of a buffer filled from the stream as far as data is available, so a
    // burst of small frames costs one read from quinn (one connection lock), not two per frame.
    let mut recv = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, recv);
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut recv, &mut buf).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                warn!(addr = %caller.addr, error = %e, "bad frame; closing stream");
                let _ = reply(&tx, 0, malformed(&e)).await;
                break;
            }
        }
        let frame = match decode_body::<RequestFrame>(&buf) {
            Ok(f) => f,
            Err(e) => {
                warn!(addr = %caller.addr, error = %e, "undecodable request; closing stream");
                let _ = reply(&tx, 0, malformed(&e)).await;
                break;
            }
        };
        dispatch(caller, frame, &shared, &tx).await;
    }
}

fn malformed(e: &CodecError) -> Response {
    Response::Error(ErrorReply::new(ErrorCode::Malformed, e.to_string()))
}

async fn dispatch<S: Service>(
    caller: Caller,
    frame: RequestFrame,
    shared: &Arc<ServerShared<S>>,
    tx: &mpsc::Sender<Vec<u8>>,
) {
    let RequestFrame {
        id,
        timeout_ms,
        body,
    } = frame;
    if body.is_internal() && caller.role != Role::Node {
        let err = ErrorReply::new(
            ErrorCode::Unauthorized,
            "replica requests need a node certificate",
        );
        let _ = reply(tx, id, Response::Error(err)).await;
        return;
    }
    let permits = if body.is_internal() {
        &shared.internal_permits
    } else {
        &shared.client_permits
    };
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        let err = ErrorReply::new(
            ErrorCode::Overloaded,
            "too many requests in flight on this node",
        );
        let _ = reply(tx, id, Response::Error(err)).await;
        return;
    };
    let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
    let fut = shared.service.handle(caller, body, deadline);
    let tx = tx.clone();
    tokio::spawn(async move {
        let resp = fut.await;
        drop(permit);
        if Instant::now() < deadline {
            let _ = reply(&tx, id, resp).await;
        }
    });
}

async fn reply(tx: &mpsc::Sender<Vec<u8>>, id: u64, body: Response) -> Result<(), ()> {
    let mut out = Vec::new();
    if let Err(e) = encode_into(&ResponseFrame { id, body }, &mut out) {
        warn!(error = %e, "reply could not be encoded");
        let err = ErrorReply::new(
            ErrorCode::Internal,
            format!("reply could not be encoded: {e}"),
        );
        out.clear();
        encode_into(
            &ResponseFrame {
                id,
                body: Response::Error(err),
            },
            &mut out,
        )
        .map_err(|_| ())?;
    }
    tx.send(out).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::runtime_builder;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_runtime_thread_is_a_current_thread_runtime_and_more_are_multi_thread() {
        let flavor = |threads| {
            let rt = runtime_builder(threads)
                .enable_all()
                .build()
                .expect("runtime");
            // A task spawned on it runs (the flavour is a working runtime, not just a label).
            let ran = rt.block_on(async { tokio::spawn(async { 7 }).await.expect("task") });
            assert_eq!(ran, 7);
            rt.handle().runtime_flavor()
        };
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::MultiThread);
    }
}
