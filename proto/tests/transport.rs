//! The QUIC transport end to end on loopback: multiplexed calls, mutual TLS refusing foreign
//! certificates, role checks, and a server that survives garbage.

use futures::future::BoxFuture;
use proto::tls::{generate_ca, issue, Role, TlsMaterial};
use proto::transport::{
    client_endpoint, serve, server_endpoint, Caller, Pool, ServerLimits, Service, TransportError,
};
use proto::{ErrorCode, Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers Status with a fixed error naming the caller's role, and echoes reads.
struct Echo;

impl Service for Echo {
    fn handle(
        &self,
        caller: Caller,
        request: Request,
        _deadline: Instant,
    ) -> BoxFuture<'static, Response> {
        Box::pin(async move {
            match request {
                Request::ReplicaRead { key } => Response::Value {
                    value: Some(key),
                    version: None,
                    replies: 1,
                    receipt: None,
                },
                Request::Get { key, .. } => {
                    // Answer out of order: longer keys answer sooner.
                    tokio::time::sleep(Duration::from_millis(
                        50u64.saturating_sub(key.len() as u64 * 10),
                    ))
                    .await;
                    Response::Value {
                        value: Some(key),
                        version: None,
                        replies: 1,
                        receipt: None,
                    }
                }
                _ => Response::Error(proto::ErrorReply::new(
                    ErrorCode::Internal,
                    format!("{:?}", caller.role),
                )),
            }
        })
    }
}

const LIMITS: ServerLimits = ServerLimits {
    max_client_requests: 512,
    max_internal_requests: 64,
};

fn start(node: &TlsMaterial) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    start_with(node, LIMITS)
}

fn start_with(
    node: &TlsMaterial,
    limits: ServerLimits,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let ep = server_endpoint("127.0.0.1:0".parse().expect("addr"), node).expect("endpoint");
    let addr = ep.local_addr().expect("local addr");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(ep, Arc::new(Echo), limits, rx));
    (addr, tx)
}

fn get(key: &[u8]) -> Request {
    Request::Get {
        key: key.to_vec(),
        consistency: proto::Consistency::One,
        opts: proto::message::ReadOpts::default(),
    }
}

#[tokio::test]
async fn many_calls_share_one_channel_and_match_replies() {
    let ca = generate_ca("t").expect("ca");
    let (addr, _stop) = start(&issue(&ca, "t", Role::Node, "n1").expect("cert"));
    let client = issue(&ca, "t", Role::Client, "c").expect("cert");
    let pool = Arc::new(Pool::new(
        client_endpoint(&client).expect("endpoint"),
        Duration::from_secs(2),
    ));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{}", i % 5).into_bytes();
            let resp = pool
                .call(addr, get(&key), Duration::from_secs(5))
                .await
                .expect("call");
            assert_eq!(
                resp,
                Response::Value {
                    value: Some(key),
                    version: None,
                    replies: 1,
                    receipt: None,
                }
            );
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test]
async fn client_certificates_cannot_send_replica_requests() {
    let ca = generate_ca("t").expect("ca");
    let (addr, _stop) = start(&issue(&ca, "t", Role::Node, "n1").expect("cert"));
    let client = issue(&ca, "t", Role::Client, "c").expect("cert");
    let pool = Pool::new(
        client_endpoint(&client).expect("endpoint"),
        Duration::from_secs(2),
    );
    let resp = pool
        .call(
            addr,
            Request::ReplicaRead { key: b"k".to_vec() },
            Duration::from_secs(2),
        )
        .await
        .expect("call");
    assert!(matches!(resp, Response::Error(e) if e.code == ErrorCode::Unauthorized));
    // A node certificate may.
    let peer = issue(&ca, "t", Role::Node, "n2").expect("cert");
    let pool = Pool::new(
        client_endpoint(&peer).expect("endpoint"),
        Duration::from_secs(2),
    );
    let resp = pool
        .call(
            addr,
            Request::ReplicaRead { key: b"k".to_vec() },
            Duration::from_secs(2),
        )
        .await
        .expect("call");
    assert!(matches!(resp, Response::Value { .. }));
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused_both_ways() {
    let ca = generate_ca("t").expect("ca");
    let (addr, _stop) = start(&issue(&ca, "t", Role::Node, "n1").expect("cert"));
    let other = generate_ca("t").expect("other ca");
    // A client whose certificate the cluster CA did not sign.
    let mut foreign = issue(&other, "t", Role::Client, "intruder").expect("cert");
    foreign.ca_pem = ca.cert_pem.clone();
    let pool = Pool::new(
        client_endpoint(&foreign).expect("endpoint"),
        Duration::from_secs(2),
    );
    let res = pool.call(addr, get(b"k"), Duration::from_secs(2)).await;
    assert!(res.is_err(), "foreign client accepted: {res:?}");
    // A client that trusts another CA refuses the node.
    let mut distrustful = issue(&ca, "t", Role::Client, "c").expect("cert");
    distrustful.ca_pem = other.cert_pem.clone();
    let pool = Pool::new(
        client_endpoint(&distrustful).expect("endpoint"),
        Duration::from_secs(2),
    );
    let res = pool.call(addr, get(b"k"), Duration::from_secs(2)).await;
    assert!(
        matches!(res, Err(TransportError::Connect { .. })),
        "{res:?}"
    );
}

#[tokio::test]
async fn garbage_datagrams_and_frames_do_not_stop_the_server() {
    let ca = generate_ca("t").expect("ca");
    let (addr, _stop) = start(&issue(&ca, "t", Role::Node, "n1").expect("cert"));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..1200u32)
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect();
        sock.send_to(&junk, addr).await.expect("send");
    }
    let client = issue(&ca, "t", Role::Client, "c").expect("cert");
    let ep = client_endpoint(&client).expect("endpoint");
    // A raw stream carrying an absurd length prefix, then one carrying undecodable bytes.
    let conn = ep
        .connect(addr, proto::tls::NODE_SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    for junk in [
        &[0xffu8, 0xff, 0xff, 0xff][..],
        &[0, 0, 0, 3, 1, 0xff, 0xff][..],
    ] {
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        send.write_all(junk).await.expect("write");
        let mut buf = Vec::new();
        // The server answers Malformed and closes the stream.
        assert!(proto::codec::read_frame(&mut recv, &mut buf)
            .await
            .expect("reply"));
        let reply: proto::message::ResponseFrame = proto::codec::decode_body(&buf).expect("decode");
        assert!(matches!(reply.body, Response::Error(e) if e.code == ErrorCode::Malformed));
    }
    let pool = Pool::new(ep, Duration::from_secs(2));
    let resp = pool
        .call(addr, get(b"still"), Duration::from_secs(2))
        .await
        .expect("server still serves");
    assert!(matches!(resp, Response::Value { .. }));
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_as_overloaded() {
    let ca = generate_ca("t").expect("ca");
    let limits = ServerLimits {
        max_client_requests: 4,
        max_internal_requests: 4,
    };
    let (addr, _stop) = start_with(&issue(&ca, "t", Role::Node, "n1").expect("cert"), limits);
    let client = issue(&ca, "t", Role::Client, "c").expect("cert");
    let pool = Arc::new(Pool::new(
        client_endpoint(&client).expect("endpoint"),
        Duration::from_secs(2),
    ));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            pool.call(addr, get(b"k"), Duration::from_secs(5))
                .await
                .expect("call")
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Response::Value { .. } => ok += 1,
            Response::Error(e) if e.code == ErrorCode::Overloaded => shed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ok >= 4 && shed > 0, "ok {ok}, shed {shed}");
}

#[test]
fn sockets_get_the_buffers_asked_for_where_the_system_allows() {
    use proto::transport::{size_socket_buffers, SOCKET_BUFFER_BYTES};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (recv, send) = size_socket_buffers(&socket);
    // A process with CAP_NET_ADMIN (root here) gets the size whatever net.core.rmem_max says;
    // the kernel reports twice what it grants.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if root {
        assert!(recv >= SOCKET_BUFFER_BYTES, "receive buffer {recv}");
        assert!(send >= SOCKET_BUFFER_BYTES, "send buffer {send}");
    } else {
        assert!(recv > 0 && send > 0, "{recv} {send}");
    }
}

/// A server endpoint for `node` on `addr`, served on its own runtime in its own thread until
/// `crash` is sent: then the runtime is dropped with everything on it, so the process's
/// connections end without a word to their peers, as when a process is killed.
fn start_crashable(
    addr: SocketAddr,
    node: &TlsMaterial,
) -> (
    SocketAddr,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let node = node.clone();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (crash, crash_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let ep = server_endpoint(addr, &node).expect("endpoint");
            addr_tx
                .send(ep.local_addr().expect("addr"))
                .expect("send addr");
            let (_stop, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(serve(ep, Arc::new(Echo), LIMITS, rx));
            // Serve until told to crash (polling, so the runtime keeps running meanwhile).
            while crash_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        // Dropping the runtime drops its tasks unpolled: nothing more is sent.
        drop(rt);
    });
    let bound = addr_rx.recv().expect("server address");
    (bound, crash, thread)
}

/// A node killed and started again on the same address answers the old connection's next
/// packet with a stateless reset (RFC 9000, 10.3): its reset key is derived from its private
/// key, so the new process can compute the tokens the old one handed out. The caller learns at
/// once that the connection is gone instead of waiting out the call's timeout, and its next
/// call connects afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_its_address_resets_its_old_connections() {
    let ca = generate_ca("t").expect("ca");
    let node = issue(&ca, "t", Role::Node, "n1").expect("cert");
    let (addr, crash, thread) = start_crashable("127.0.0.1:0".parse().expect("addr"), &node);
    let client = issue(&ca, "t", Role::Client, "c").expect("cert");
    let pool = Pool::new(
        client_endpoint(&client).expect("endpoint"),
        Duration::from_secs(2),
    );
    pool.call(addr, get(b"before"), Duration::from_secs(5))
        .await
        .expect("a call before the crash");
    crash.send(()).expect("crash");
    thread.join().expect("server thread");
    let (again, _crash_again, _thread_again) = start_crashable(addr, &node);
    assert_eq!(again, addr);
    // The pool still holds the connection to the killed process. The call's timeout is
    // shorter than the connection's idle timeout (5 s), which would otherwise end it.
    let err = pool
        .call(addr, get(b"during"), Duration::from_secs(3))
        .await
        .expect_err("the old connection is gone");
    assert!(
        !matches!(err, TransportError::Timeout(_)),
        "the call waited out its timeout instead of being reset: {err}"
    );
    assert!(pool
        .call(addr, get(b"after"), Duration::from_secs(5))
        .await
        .is_ok());
}
