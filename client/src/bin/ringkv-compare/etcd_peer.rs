//! etcd: a 3-member cluster on loopback, and the benchmark's [`Store`] over the `etcd-client`
//! crate (gRPC; one client balanced over the three members, shared by every task).

use crate::procs::{free_tcp_ports, wait_ready, Procs};
use anyhow::Context;
use client::bench::{OpResult, Outcome, Store};
use etcd_client::{Client, ConnectOptions, Error, KvClient};
use std::path::Path;
use std::time::Duration;

/// Members of the cluster.
pub const MEMBERS: usize = 3;

/// A running etcd cluster (stopped when dropped).
pub struct EtcdCluster {
    /// The member processes.
    pub procs: Procs,
    /// Client URLs, one per member.
    pub endpoints: Vec<String>,
}

/// Starts `MEMBERS` etcd members with data under `dir` and waits until every member knows the
/// leader and a write commits.
pub async fn start(bin: &Path, work: &Path, dir: &Path) -> anyhow::Result<EtcdCluster> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ports = free_tcp_ports(2 * MEMBERS)?;
    let (client_ports, peer_ports) = ports.split_at(MEMBERS);
    let name = |i: usize| format!("m{}", i + 1);
    let peer_url = |i: usize| format!("http://127.0.0.1:{}", peer_ports[i]);
    let initial: Vec<String> = (0..MEMBERS)
        .map(|i| format!("{}={}", name(i), peer_url(i)))
        .collect();
    let endpoints: Vec<String> = client_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut procs = Procs::new(work);
    for (i, endpoint) in endpoints.iter().enumerate() {
        let data = dir.join(name(i));
        let args: Vec<String> = vec![
            "--name".into(),
            name(i),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client-urls".into(),
            endpoint.clone(),
            "--advertise-client-urls".into(),
            endpoint.clone(),
            "--listen-peer-urls".into(),
            peer_url(i),
            "--initial-advertise-peer-urls".into(),
            peer_url(i),
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-token".into(),
            format!("ringkv-compare-{}", std::process::id()),
            "--initial-cluster-state".into(),
            "new".into(),
            "--logger".into(),
            "zap".into(),
            "--log-outputs".into(),
            "stderr".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        let log = dir.join(format!("{}.log", name(i)));
        procs.spawn(&format!("etcd member {}", name(i)), bin, &args, &log)?;
    }
    let eps = endpoints.clone();
    wait_ready(
        "the etcd cluster",
        &mut procs,
        Duration::from_secs(30),
        || {
            let eps = eps.clone();
            async move {
                // Every member answers and knows a leader...
                for ep in &eps {
                    let mut c =
                        Client::connect([ep], Some(options(Duration::from_secs(2)))).await?;
                    let status = c.status().await?;
                    anyhow::ensure!(
                        status.raft_index() > 0 && status.leader() != 0,
                        "{ep} knows no leader yet"
                    );
                }
                // ...and a write commits.
                let mut c = Client::connect(&eps, Some(options(Duration::from_secs(2)))).await?;
                c.put("ringkv-compare-ready", "1", None).await?;
                Ok(())
            }
        },
    )
    .await?;
    Ok(EtcdCluster { procs, endpoints })
}

fn options(timeout: Duration) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(timeout)
}

/// etcd through `etcd-client`: puts, and linearizable gets (the default: the member serving
/// the read confirms with the leader that it has every committed write).
pub struct EtcdStore {
    kv: KvClient,
    timeout: Duration,
}

impl EtcdStore {
    /// One client over every member, each request bounded by `timeout`.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> anyhow::Result<EtcdStore> {
        let client = Client::connect(endpoints, Some(options(timeout)))
            .await
            .context("cannot connect to etcd")?;
        Ok(EtcdStore {
            kv: client.kv_client(),
            timeout,
        })
    }
}

impl Store for EtcdStore {
    async fn put(&self, key: &[u8], value: &[u8]) -> OpResult {
        let mut kv = self.kv.clone();
        match tokio::time::timeout(self.timeout, kv.put(key, value, None)).await {
            Ok(Ok(_)) => Ok(Outcome::Done),
            Ok(Err(e)) => Err(error_kind(&e)),
            Err(_) => Err("Timeout"),
        }
    }

    async fn get(&self, key: &[u8]) -> OpResult {
        let mut kv = self.kv.clone();
        match tokio::time::timeout(self.timeout, kv.get(key, None)).await {
            Ok(Ok(r)) if r.kvs().is_empty() => Ok(Outcome::NotFound),
            Ok(Ok(_)) => Ok(Outcome::Done),
            Ok(Err(e)) => Err(error_kind(&e)),
            Err(_) => Err("Timeout"),
        }
    }
}

/// A short, stable name for an etcd client error (gRPC status codes by their names).
fn error_kind(e: &Error) -> &'static str {
    const CODES: [&str; 17] = [
        "Ok",
        "Cancelled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    match e {
        Error::GRpcStatus(status) => {
            let code: i32 = status.code().into();
            usize::try_from(code)
                .ok()
                .and_then(|c| CODES.get(c).copied())
                .unwrap_or("GrpcStatus")
        }
        Error::TransportError(_) => "Transport",
        Error::IoError(_) => "Io",
        _ => "EtcdClient",
    }
}
