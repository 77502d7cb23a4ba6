//! `ringkv put`, `get` and `delete`: check the request locally (sizes, level), build a client
//! configuration from the cluster directory or explicit flags, send one request, and print the
//! outcome as text or JSON with the documented exit status.

use crate::cli::{ConnectArgs, KeyArgs, PutArgs, SessionArgs};
use crate::client::{check_key, check_value, Client, ClientConfig, ReadOutcome, WriteOutcome};
use crate::cluster_dir::ClusterDir;
use crate::error::ClientError;
use crate::output::Output;
use crate::session::{Session, DEFAULT_SESSION_KEYS};
use proto::limits::MAX_VALUE_BYTES;
use proto::message::Receipt;
use proto::tls::TlsMaterial;
use proto::{Consistency, Version};
use serde_json::{json, Map, Value};
use std::ffi::OsStr;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `ringkv put KEY [VALUE] [--file PATH]`.
pub async fn put(dir: Option<&Path>, out: Output, args: PutArgs) -> i32 {
    let key = args.key.as_bytes();
    let result = async {
        check_key(key)?;
        let value = read_value(args.value.as_deref(), args.file.as_deref())?;
        check_value(&value)?;
        let session = SessionScope::open(dir, &args.connect, &args.session)?;
        let client = session.connect(dir, &args.connect, &args.session).await?;
        let res = client.put(key, &value, args.connect.consistency).await;
        session.save(&client);
        res
    }
    .await;
    report_write(out, "put", key, result)
}

/// `ringkv delete KEY`.
pub async fn delete(dir: Option<&Path>, out: Output, args: KeyArgs) -> i32 {
    let key = args.key.as_bytes();
    let result = async {
        check_key(key)?;
        let session = SessionScope::open(dir, &args.connect, &args.session)?;
        let client = session.connect(dir, &args.connect, &args.session).await?;
        let res = client.delete(key, args.connect.consistency).await;
        session.save(&client);
        res
    }
    .await;
    report_write(out, "delete", key, result)
}

/// The session one data command continues: by default kept in `session.json` of the cluster
/// directory, so successive commands read their own writes at any level.
struct SessionScope {
    /// Where the session is kept between commands (`None`: it lasts this command).
    file: Option<PathBuf>,
    /// What the file held when the command started.
    saved: Option<Session>,
}

impl SessionScope {
    /// Finds and reads the session file; a file that cannot be read is a configuration error
    /// (nothing is sent).
    fn open(
        dir: Option<&Path>,
        connect: &ConnectArgs,
        args: &SessionArgs,
    ) -> Result<SessionScope, ClientError> {
        let explicit_tls = connect.tls_ca.is_some() && !connect.nodes.is_empty();
        let file = match (&args.session, args.no_session) {
            (_, true) => None,
            (Some(path), false) => Some(path.clone()),
            (None, false) if explicit_tls => None,
            (None, false) => ClusterDir::resolve(dir)
                .ok()
                .filter(|c| c.root().is_dir())
                .map(|c| c.root().join(SESSION_FILE)),
        };
        let saved = match &file {
            Some(path) => Some(
                Session::load(path, DEFAULT_SESSION_KEYS)
                    .map_err(|e| ClientError::Config(format!("session file {e}")))?,
            ),
            None => None,
        };
        Ok(SessionScope { file, saved })
    }

    /// Connects with the session (or without, with --no-session) and receipts as asked.
    async fn connect(
        &self,
        dir: Option<&Path>,
        connect: &ConnectArgs,
        args: &SessionArgs,
    ) -> Result<Client, ClientError> {
        let mut cfg = client_config(dir, connect)?;
        cfg.receipts = args.receipt;
        if args.no_session {
            cfg.session_keys = 0;
        }
        let client = Client::connect(cfg).await?;
        if let Some(saved) = &self.saved {
            client.resume_session(saved.clone());
        }
        Ok(client)
    }

    /// Keeps what the command saw for the next one. A session that cannot be saved costs only
    /// the guarantee across commands: a warning, not a failure.
    fn save(&self, client: &Client) {
        if let (Some(path), Some(session)) = (&self.file, client.session()) {
            if let Err(e) = session.save(path) {
                eprintln!(
                    "warning: cannot save the session to {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// The session file's name in the cluster directory.
pub const SESSION_FILE: &str = "session.json";

/// `ringkv get KEY`.
pub async fn get(dir: Option<&Path>, out: Output, args: KeyArgs) -> i32 {
    let key = args.key.as_bytes();
    let level = args.connect.consistency;
    if let Some(node) = args.replica {
        return crate::admin_commands::get_replica(dir, out, &args, node).await;
    }
    let result = async {
        check_key(key)?;
        check_read_level(level)?;
        let session = SessionScope::open(dir, &args.connect, &args.session)?;
        let client = session.connect(dir, &args.connect, &args.session).await?;
        let res = client.get(key, level).await;
        session.save(&client);
        res
    }
    .await;
    match result {
        Ok(read) if out.json => {
            let mut obj = base("get", key);
            obj.insert("ok".into(), json!(true));
            match std::str::from_utf8(&read.value) {
                Ok(text) => obj.insert("value".into(), json!(text)),
                Err(_) => obj.insert("value_hex".into(), json!(hex(&read.value))),
            };
            insert_version(&mut obj, read.version, read.coordinator);
            if let Some(r) = &read.receipt {
                obj.insert("receipt".into(), receipt_json(r));
            }
            out.print_json(&Value::Object(obj));
            0
        }
        Ok(read) => {
            // The value goes to stdout untouched; the receipt to stderr.
            if let Some(r) = &read.receipt {
                eprintln!("receipt: {}", receipt_text(r));
            }
            print_value(&read)
        }
        Err(e) => report_error(out, "get", key, &e),
    }
}

/// Reports a failed data command, with the receipt a timeout carries.
fn report_error(out: Output, op: &str, key: &[u8], e: &ClientError) -> i32 {
    let mut obj = base(op, key);
    if let ClientError::Timeout {
        receipt: Some(r), ..
    } = e
    {
        if out.json {
            obj.insert("receipt".into(), receipt_json(r));
        } else {
            eprintln!("receipt: {}", receipt_text(r));
        }
    }
    out.client_error(e, obj)
}

fn ids(nodes: &[ring::NodeId]) -> String {
    if nodes.is_empty() {
        "-".into()
    } else {
        nodes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One line: the version, then who acked, was hinted, failed, was stale and was repaired.
pub fn receipt_text(r: &Receipt) -> String {
    let mut parts = vec![format!(
        "version {}",
        r.version.map_or("none".to_string(), |v| v.to_string())
    )];
    parts.push(format!("acked {}", ids(&r.acked)));
    parts.push(format!("hinted {}", ids(&r.hinted)));
    parts.push(format!("failed {}", ids(&r.failed)));
    if !r.stale.is_empty() || !r.repaired.is_empty() {
        parts.push(format!("stale {}", ids(&r.stale)));
        parts.push(format!("repaired {}", ids(&r.repaired)));
    }
    if !r.version_from.is_empty() {
        parts.push(format!("version asked of {}", ids(&r.version_from)));
    }
    if r.reused_op {
        parts.push("version reused from an earlier attempt of this op".into());
    }
    parts.join("; ")
}

/// The receipt as a JSON object.
pub fn receipt_json(r: &Receipt) -> Value {
    json!({
        "version": r.version.map(|v| v.to_string()),
        "acked": r.acked,
        "hinted": r.hinted,
        "failed": r.failed,
        "stale": r.stale,
        "repaired": r.repaired,
        "version_from": r.version_from,
        "reused_op": r.reused_op,
    })
}

/// Refuses a level reads cannot use, before connecting.
pub fn check_read_level(level: Consistency) -> Result<(), ClientError> {
    if level.valid_for_reads() {
        Ok(())
    } else {
        Err(ClientError::InvalidRequest(format!(
            "consistency {level} is for writes only; read with ONE or stronger"
        )))
    }
}

/// Builds the client configuration: seeds from `--node` or the cluster directory, TLS from
/// `--ca/--cert/--key` or the cluster directory. The directory is only read when needed.
pub fn client_config(dir: Option<&Path>, args: &ConnectArgs) -> Result<ClientConfig, ClientError> {
    let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(ca), Some(cert), Some(key)) => {
            Some(TlsMaterial::load(ca, cert, key).map_err(|e| ClientError::Config(e.to_string()))?)
        }
        _ => None,
    };
    let (seeds, tls) = match tls {
        Some(tls) if !args.nodes.is_empty() => (args.nodes.clone(), tls),
        tls => {
            let cluster = ClusterDir::resolve(dir)?;
            let file = cluster.load()?;
            let tls = match tls {
                Some(tls) => tls,
                None => cluster.client_tls(&file)?,
            };
            let seeds = if args.nodes.is_empty() {
                file.addresses()
            } else {
                args.nodes.clone()
            };
            (seeds, tls)
        }
    };
    let mut cfg = ClientConfig::new(seeds, tls, Duration::from_millis(args.timeout_ms));
    cfg.datacenter = args.datacenter.clone();
    // One command sends one request: there is nothing to coalesce, and the key's first
    // replica keeps the coordinator predictable.
    cfg.coordinator_window = Duration::ZERO;
    Ok(cfg)
}

/// Connects a client as the flags say.
pub async fn connect(dir: Option<&Path>, args: &ConnectArgs) -> Result<Client, ClientError> {
    Client::connect(client_config(dir, args)?).await
}

/// The value of `put`: the argument, else the file, else standard input (also for `-`).
/// Reads at most one byte past the limit, so an oversized input is refused without being
/// held in memory whole.
fn read_value(arg: Option<&OsStr>, file: Option<&Path>) -> Result<Vec<u8>, ClientError> {
    let limited = |r: &mut dyn Read, what: &str| {
        let mut buf = Vec::new();
        r.take(MAX_VALUE_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| {
                ClientError::InvalidRequest(format!("cannot read the value from {what}: {e}"))
            })?;
        Ok(buf)
    };
    match (arg, file) {
        (Some(v), _) if v != "-" => Ok(v.as_bytes().to_vec()),
        (_, Some(path)) => {
            let mut f = std::fs::File::open(path).map_err(|e| {
                ClientError::InvalidRequest(format!("cannot read --file {}: {e}", path.display()))
            })?;
            limited(&mut f, &path.display().to_string())
        }
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("reading the value from standard input (end it with Ctrl-D)");
            }
            limited(&mut stdin.lock(), "standard input")
        }
    }
}

fn report_write(
    out: Output,
    op: &str,
    key: &[u8],
    result: Result<WriteOutcome, ClientError>,
) -> i32 {
    match result {
        Ok(w) if out.json => {
            let mut obj = base(op, key);
            obj.insert("ok".into(), json!(true));
            obj.insert("acks".into(), json!(w.acks));
            obj.insert("attempts".into(), json!(w.attempts));
            insert_version(&mut obj, w.version, w.coordinator);
            if let Some(r) = &w.receipt {
                obj.insert("receipt".into(), receipt_json(r));
            }
            out.print_json(&Value::Object(obj));
            0
        }
        Ok(w) => {
            println!(
                "OK (version {}, {} acks, coordinator node {})",
                w.version, w.acks, w.coordinator
            );
            if let Some(r) = &w.receipt {
                println!("receipt: {}", receipt_text(r));
            }
            0
        }
        Err(e) => report_error(out, op, key, &e),
    }
}

pub(crate) fn print_value(read: &ReadOutcome) -> i32 {
    let mut stdout = std::io::stdout().lock();
    let newline = if stdout.is_terminal() {
        &b"\n"[..]
    } else {
        &b""[..]
    };
    let written = stdout
        .write_all(&read.value)
        .and_then(|()| stdout.write_all(newline))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => 0,
        // A closed pipe (`ringkv get k | head -c 1`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write the value to stdout: {e}");
            1
        }
    }
}

pub(crate) fn base(op: &str, key: &[u8]) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("op".into(), json!(op));
    obj.insert("key".into(), json!(String::from_utf8_lossy(key)));
    obj
}

pub(crate) fn insert_version(
    obj: &mut Map<String, Value>,
    version: Version,
    coordinator: ring::NodeId,
) {
    obj.insert("version".into(), json!(version.to_string()));
    obj.insert("hlc".into(), json!(version.hlc));
    obj.insert("coordinator".into(), json!(coordinator));
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn values_come_from_the_argument_or_a_file_and_are_bounded() {
        assert_eq!(
            read_value(Some(&OsString::from("v")), None).expect("arg"),
            b"v"
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("v.bin");
        std::fs::write(&p, [0u8, 255, 10]).expect("write");
        assert_eq!(read_value(None, Some(&p)).expect("file"), [0u8, 255, 10]);
        assert_eq!(
            read_value(Some(&OsString::from("-")), Some(&p)).expect("file"),
            [0u8, 255, 10]
        );
        std::fs::write(&p, vec![7u8; MAX_VALUE_BYTES + 10]).expect("write");
        let big = read_value(None, Some(&p)).expect("bounded read");
        assert_eq!(big.len(), MAX_VALUE_BYTES + 1);
        assert!(matches!(
            check_value(&big),
            Err(ClientError::InvalidRequest(_))
        ));
        let missing = read_value(None, Some(&tmp.path().join("nope"))).expect_err("missing file");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn any_is_refused_for_reads() {
        assert_eq!(
            check_read_level(Consistency::Any)
                .expect_err("ANY")
                .exit_code(),
            6
        );
        assert!(check_read_level(Consistency::One).is_ok());
    }

    #[test]
    fn binary_values_are_hex_in_json() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
