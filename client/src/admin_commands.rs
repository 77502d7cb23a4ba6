//! Administrative commands: `ringkv repair` (run anti-entropy rounds now and report what they
//! repaired) and `ringkv get KEY --replica ID` (what one replica alone holds for a key).

use crate::cli::{KeyArgs, RepairArgs};
use crate::data_commands::{base, connect, hex, insert_version, print_value};
use crate::error::ClientError;
use crate::output::Output;
use crate::ReadOutcome;
use proto::message::RepairReport;
use ring::NodeId;
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// `ringkv get KEY --replica ID`.
pub async fn get_replica(dir: Option<&Path>, out: Output, args: &KeyArgs, node: NodeId) -> i32 {
    let key = args.key.as_bytes();
    let result = async {
        let client = connect(dir, &args.connect).await?;
        client.inspect(node, key).await
    }
    .await;
    let mut obj = base("get", key);
    obj.insert("replica".into(), json!(node));
    match result {
        Ok(Some(record)) if out.json => {
            obj.insert("ok".into(), json!(!record.is_tombstone()));
            obj.insert("tombstone".into(), json!(record.is_tombstone()));
            if let Some(v) = &record.value {
                match std::str::from_utf8(v) {
                    Ok(text) => obj.insert("value".into(), json!(text)),
                    Err(_) => obj.insert("value_hex".into(), json!(hex(v))),
                };
            }
            insert_version(&mut obj, record.version, node);
            out.print_json(&Value::Object(obj));
            if record.is_tombstone() {
                ClientError::NotFound.exit_code()
            } else {
                0
            }
        }
        Ok(Some(proto::Record {
            version,
            value: Some(value),
        })) => print_value(&ReadOutcome {
            value,
            version,
            coordinator: node,
            receipt: None,
        }),
        Ok(_) => out.client_error(&ClientError::NotFound, obj),
        Err(e) => out.client_error(&e, obj),
    }
}

/// `ringkv repair [--node ID] [--wait]`.
pub async fn repair(dir: Option<&Path>, out: Output, args: RepairArgs) -> i32 {
    let connect_args = crate::cli::ConnectArgs {
        consistency: proto::Consistency::One,
        timeout_ms: 5000,
        datacenter: None,
        nodes: vec![],
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
    };
    let client = match connect(dir, &connect_args).await {
        Ok(c) => c,
        Err(e) => return out.client_error(&e, Default::default()),
    };
    let nodes: Vec<NodeId> = match args.node {
        Some(id) => vec![id],
        None => client
            .topology()
            .members
            .iter()
            .map(|m| m.member.id)
            .collect(),
    };
    let bar = (args.wait && !out.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(nodes.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("repair {bar:30} {pos}/{len} nodes {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut reports: Vec<(NodeId, RepairReport)> = Vec::new();
    let mut failed: Vec<(NodeId, ClientError)> = Vec::new();
    for &node in &nodes {
        if let Some(b) = &bar {
            b.set_message(format!("node {node}: comparing trees"));
        }
        match client.repair(node, args.wait, timeout).await {
            Ok(r) => reports.push((node, r)),
            Err(e) => failed.push((node, e)),
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let exit = failed.first().map_or(0, |(_, e)| e.exit_code());
    if out.json {
        let nodes: Vec<Value> = reports
            .iter()
            .map(|(n, r)| json!({"node": n, "report": r}))
            .chain(
                failed
                    .iter()
                    .map(|(n, e)| json!({"node": n, "error": e.kind(), "message": e.to_string()})),
            )
            .collect();
        out.print_json(&json!({"ok": failed.is_empty(), "waited": args.wait, "nodes": nodes}));
        return exit;
    }
    if !args.wait {
        for (n, _) in &reports {
            println!("node {n}: anti-entropy round started");
        }
    } else {
        for (n, r) in &reports {
            println!(
                "node {n}: {} range/peer pairs compared, {} differed, {} leaves exchanged, {} keys pulled, {} pushed, {} bytes, {} ms{}",
                r.pairs_compared,
                r.pairs_differing,
                r.leaves_exchanged,
                r.keys_pulled,
                r.keys_pushed,
                r.bytes_exchanged,
                r.millis,
                if r.failures > 0 { format!(", {} pairs failed (peer down?)", r.failures) } else { String::new() }
            );
        }
        let repaired: u64 = reports
            .iter()
            .map(|(_, r)| r.keys_pulled + r.keys_pushed)
            .sum();
        println!("repaired {repaired} keys");
    }
    for (n, e) in &failed {
        eprintln!("error: node {n}: {e}");
    }
    exit
}
