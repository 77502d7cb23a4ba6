//! `ringkv put`, `get` and `delete`: check the request locally (sizes, level), build a client
//! configuration from the cluster directory or explicit flags, send one request, and print the
//! outcome as text or JSON with the documented exit status.

use crate::cli::{ConnectArgs, KeyArgs, PutArgs};
use crate::client::{check_key, check_value, Client, ClientConfig, ReadOutcome, WriteOutcome};
use crate::cluster_dir::ClusterDir;
use crate::error::ClientError;
use crate::output::Output;
use proto::limits::MAX_VALUE_BYTES;
use proto::tls::TlsMaterial;
use proto::{Consistency, Version};
use serde_json::{json, Map, Value};
use std::ffi::OsStr;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// `ringkv put KEY [VALUE] [--file PATH]`.
pub async fn put(dir: Option<&Path>, out: Output, args: PutArgs) -> i32 {
    let key = args.key.as_bytes();
    let result = async {
        check_key(key)?;
        let value = read_value(args.value.as_deref(), args.file.as_deref())?;
        check_value(&value)?;
        let client = connect(dir, &args.connect).await?;
        client.put(key, &value, args.connect.consistency).await
    }
    .await;
    report_write(out, "put", key, result)
}

/// `ringkv delete KEY`.
pub async fn delete(dir: Option<&Path>, out: Output, args: KeyArgs) -> i32 {
    let key = args.key.as_bytes();
    let result = async {
        check_key(key)?;
        let client = connect(dir, &args.connect).await?;
        client.delete(key, args.connect.consistency).await
    }
    .await;
    report_write(out, "delete", key, result)
}

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
        let client = connect(dir, &args.connect).await?;
        client.get(key, level).await
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
            out.print_json(&Value::Object(obj));
            0
        }
        Ok(read) => print_value(&read),
        Err(e) => out.client_error(&e, base("get", key)),
    }
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
    let timeout = Duration::from_millis(args.timeout_ms);
    let datacenter = args.datacenter.clone();
    let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(ca), Some(cert), Some(key)) => {
            Some(TlsMaterial::load(ca, cert, key).map_err(|e| ClientError::Config(e.to_string()))?)
        }
        _ => None,
    };
    if let (Some(tls), false) = (&tls, args.nodes.is_empty()) {
        return Ok(ClientConfig {
            seeds: args.nodes.clone(),
            tls: tls.clone(),
            timeout,
            datacenter,
        });
    }
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
    Ok(ClientConfig {
        seeds,
        tls,
        timeout,
        datacenter,
    })
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
            insert_version(&mut obj, w.version, w.coordinator);
            out.print_json(&Value::Object(obj));
            0
        }
        Ok(w) => {
            println!(
                "OK (version {}, {} acks, coordinator node {})",
                w.version, w.acks, w.coordinator
            );
            0
        }
        Err(e) => out.client_error(&e, base(op, key)),
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
