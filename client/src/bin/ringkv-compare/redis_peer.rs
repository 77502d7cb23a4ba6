//! Redis: a primary and two replicas on loopback, each with `appendonly yes` and
//! `appendfsync everysec`, and the benchmark's [`Store`] over the `redis` crate.
//!
//! Plain SET/GET share one multiplexed connection to the primary (the crate's idiom: the tasks'
//! commands are pipelined on it). With `WAIT n`, each SET is followed by `WAIT n <timeout>` and
//! acknowledged once `n` replicas confirmed it; WAIT blocks its connection until then, so that
//! store gives every task a connection of its own.

use crate::procs::{free_tcp_ports, wait_ready, Procs};
use anyhow::Context;
use client::bench::{OpResult, Outcome, Store};
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Replicas of the primary.
pub const REPLICAS: usize = 2;

/// A running primary and its replicas (stopped when dropped).
pub struct RedisSet {
    /// The server processes.
    pub procs: Procs,
    /// The primary's URL.
    pub primary: String,
}

/// Starts the primary and [`REPLICAS`] replicas with data under `dir`, and waits until both
/// replicas are online.
pub async fn start(bin: &Path, work: &Path, dir: &Path) -> anyhow::Result<RedisSet> {
    let ports = free_tcp_ports(1 + REPLICAS)?;
    let mut procs = Procs::new(work);
    for (i, port) in ports.iter().enumerate() {
        let name = if i == 0 {
            "primary".to_string()
        } else {
            format!("replica{i}")
        };
        let data = dir.join(&name);
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--dir",
            &data.display().to_string(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            // No RDB snapshots: the append-only file is the persistence being compared.
            "--save",
            "",
            "--daemonize",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if i > 0 {
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                ports[0].to_string(),
            ]);
        }
        let log = dir.join(format!("{name}.log"));
        procs.spawn(&format!("redis {name}"), bin, &args, &log)?;
    }
    let primary = format!("redis://127.0.0.1:{}/", ports[0]);
    let url = primary.clone();
    wait_ready(
        "the Redis primary and replicas",
        &mut procs,
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                let mut conn = Client::open(url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await?;
                let online = info
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count();
                anyhow::ensure!(online == REPLICAS, "{online} of {REPLICAS} replicas online");
                Ok(())
            }
        },
    )
    .await?;
    Ok(RedisSet { procs, primary })
}

/// Redis through the `redis` crate, against the primary.
pub struct RedisStore {
    shared: MultiplexedConnection,
    /// With WAIT: replicas that must confirm each SET, and a connection per task.
    wait: Option<(u32, Mutex<Vec<MultiplexedConnection>>)>,
    timeout: Duration,
}

impl RedisStore {
    /// SET and GET on one shared connection.
    pub async fn connect(url: &str, timeout: Duration) -> anyhow::Result<RedisStore> {
        let client = Client::open(url)?;
        let shared = client
            .get_multiplexed_async_connection()
            .await
            .context("cannot connect to the Redis primary")?;
        Ok(RedisStore {
            shared,
            wait: None,
            timeout,
        })
    }

    /// SET followed by `WAIT replicas`, on `connections` connections of their own.
    pub async fn connect_wait(
        url: &str,
        timeout: Duration,
        replicas: u32,
        connections: usize,
    ) -> anyhow::Result<RedisStore> {
        let mut store = RedisStore::connect(url, timeout).await?;
        let client = Client::open(url)?;
        let mut pool = Vec::with_capacity(connections);
        for _ in 0..connections {
            pool.push(client.get_multiplexed_async_connection().await?);
        }
        store.wait = Some((replicas, Mutex::new(pool)));
        Ok(store)
    }

    async fn set_and_wait(&self, key: &[u8], value: &[u8], replicas: u32) -> OpResult {
        let Some((_, pool)) = &self.wait else {
            return Err("NoPool");
        };
        let taken = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        // Never empty with one connection per task; if it were, share one rather than fail.
        let mut conn = taken.clone().unwrap_or_else(|| self.shared.clone());
        let wait_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(key)
            .arg(value)
            .ignore()
            .cmd("WAIT")
            .arg(replicas)
            .arg(wait_ms);
        let op = pipe.query_async::<(u32,)>(&mut conn);
        let result = match tokio::time::timeout(self.timeout + Duration::from_secs(1), op).await {
            Ok(Ok((acked,))) if acked >= replicas => Ok(Outcome::Done),
            Ok(Ok(_)) => Err("NotReplicated"),
            Ok(Err(e)) => Err(error_kind(&e)),
            Err(_) => Err("Timeout"),
        };
        // A connection whose request timed out may still be blocked in WAIT: not reused.
        if let (Some(conn), true) = (taken, result != Err("Timeout")) {
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
        result
    }
}

impl Store for RedisStore {
    async fn put(&self, key: &[u8], value: &[u8]) -> OpResult {
        if let Some((replicas, _)) = &self.wait {
            return self.set_and_wait(key, value, *replicas).await;
        }
        let mut conn = self.shared.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        let op = cmd.query_async::<()>(&mut conn);
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(())) => Ok(Outcome::Done),
            Ok(Err(e)) => Err(error_kind(&e)),
            Err(_) => Err("Timeout"),
        }
    }

    async fn get(&self, key: &[u8]) -> OpResult {
        let mut conn = self.shared.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let op = cmd.query_async::<Option<Vec<u8>>>(&mut conn);
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(Some(_))) => Ok(Outcome::Done),
            Ok(Ok(None)) => Ok(Outcome::NotFound),
            Ok(Err(e)) => Err(error_kind(&e)),
            Err(_) => Err("Timeout"),
        }
    }
}

fn error_kind(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "Timeout"
    } else if e.is_connection_dropped() || e.is_connection_refusal() || e.is_io_error() {
        "Io"
    } else {
        "RedisError"
    }
}
