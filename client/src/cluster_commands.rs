//! `ringkv cluster up/down/status/stop-node/start-node`: the command-line face of the
//! [`LocalCluster`] launcher. Each command prints text or one JSON object and returns its exit
//! status.

use crate::cli::{ClusterCommand, UpArgs, WaitArgs};
use crate::cluster_dir::{ClusterDir, ClusterError, CreateOptions, ENV_CLUSTER_DIR};
use crate::error::ClientError;
use crate::launcher::{find_node_binary, LocalCluster, NodeReport, Started, StopSignal};
use crate::output::Output;
use proto::membership::{Change, MembershipOp, MembershipView, Phase};
use ring::NodeId;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs one `ringkv cluster` subcommand and returns its exit status.
pub async fn run(dir: Option<&Path>, out: Output, cmd: ClusterCommand) -> i32 {
    let result = match cmd {
        ClusterCommand::Up(args) => up(dir, out, args).await,
        ClusterCommand::Down { purge } => down(dir, out, purge),
        ClusterCommand::Status => status(dir, out).await,
        ClusterCommand::StopNode { id, kill } => stop_node(dir, out, id, kill),
        ClusterCommand::StartNode {
            id,
            node_bin,
            timeout_secs,
        } => start_node(dir, out, id, node_bin, Duration::from_secs(timeout_secs)).await,
        ClusterCommand::Join { addr } => {
            stage(
                dir,
                out,
                MembershipOp::Join {
                    addr: addr.to_string(),
                },
            )
            .await
        }
        ClusterCommand::Leave { id } => stage(dir, out, MembershipOp::Leave { node: id }).await,
        ClusterCommand::Replace { dead, with } => {
            stage(
                dir,
                out,
                MembershipOp::Replace {
                    dead,
                    addr: with.to_string(),
                },
            )
            .await
        }
        ClusterCommand::Plan => stage(dir, out, MembershipOp::Show).await,
        ClusterCommand::Clear => stage(dir, out, MembershipOp::Clear).await,
        ClusterCommand::Commit(args) => commit(dir, out, &args.wait).await,
        ClusterCommand::Add {
            replace,
            no_commit,
            node_bin,
            wait,
        } => add(dir, out, replace, no_commit, node_bin, &wait).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(out, &e),
    }
}

/// Reports a failure; a node that did not become ready also shows the tail of its log.
fn report_error(out: Output, err: &ClusterError) -> i32 {
    let ClusterError::NotReady {
        node,
        log,
        log_tail,
        ..
    } = err
    else {
        return out.cluster_error(err);
    };
    if out.json {
        let mut extra = Map::new();
        extra.insert("node".into(), json!(node));
        extra.insert("log".into(), json!(log.display().to_string()));
        extra.insert("log_tail".into(), json!(log_tail));
        return out.fail(err.kind(), &err.to_string(), err.exit_code(), extra);
    }
    eprintln!("error: {err}");
    eprintln!("--- last lines of {} ---", log.display());
    eprintln!(
        "{}",
        if log_tail.is_empty() {
            "(empty)"
        } else {
            log_tail
        }
    );
    eprintln!("---");
    eprintln!("nodes that started keep running: `ringkv cluster status` shows them, `ringkv cluster down` stops them");
    err.exit_code()
}

async fn up(dir: Option<&Path>, out: Output, args: UpArgs) -> Result<i32, ClusterError> {
    let cluster_dir = ClusterDir::resolve(dir)?;
    let defaults = CreateOptions::default();
    let opts = CreateOptions {
        name: args.name.clone().unwrap_or(defaults.name),
        nodes: args.nodes.unwrap_or(defaults.nodes),
        datacenters: args.datacenters.unwrap_or(defaults.datacenters),
        rf: args.rf.unwrap_or(defaults.rf),
        vnodes: args.vnodes.unwrap_or(defaults.vnodes),
        base_port: args.base_port.unwrap_or(defaults.base_port),
        durability: args.durability.unwrap_or(defaults.durability),
    };
    // Resolved first, so a missing binary does not leave a fresh cluster directory behind.
    let node_bin = find_node_binary(args.node_bin.as_deref())?;
    let (cluster, created) = LocalCluster::open_or_create(cluster_dir, &opts)?;
    let cluster = cluster.with_node_bin(node_bin);
    let ignored = layout_flags(&args);
    if !created && !ignored.is_empty() {
        eprintln!(
            "note: a cluster already exists in {}; ignoring {} (`ringkv cluster down --purge` removes it)",
            cluster.dir().root().display(),
            ignored.join(", ")
        );
    }
    let started = cluster.start_all()?;
    if !out.json {
        for (id, s) in &started {
            match s {
                Started::Spawned(pid) => println!("node {id}: started (pid {pid})"),
                Started::AlreadyRunning(pid) => println!("node {id}: already running (pid {pid})"),
            }
        }
        println!(
            "waiting up to {} s for every node to see every other node up...",
            args.timeout_secs
        );
    }
    cluster
        .wait_ready(Duration::from_secs(args.timeout_secs))
        .await?;
    if out.json {
        let nodes: Vec<Value> = started
            .iter()
            .map(|(id, s)| json!({"id": id, "pid": s.pid(), "started": matches!(s, Started::Spawned(_))}))
            .collect();
        out.print_json(&json!({
            "ok": true,
            "op": "cluster up",
            "dir": cluster.dir().root().display().to_string(),
            "created": created,
            "nodes": nodes,
        }));
    } else {
        print_ready(&cluster, created);
    }
    Ok(0)
}

/// The names of the layout flags given on the command line.
fn layout_flags(args: &UpArgs) -> Vec<&'static str> {
    let given = [
        ("--nodes", args.nodes.is_some()),
        ("--datacenters", args.datacenters.is_some()),
        ("--rf", args.rf.is_some()),
        ("--vnodes", args.vnodes.is_some()),
        ("--base-port", args.base_port.is_some()),
        ("--name", args.name.is_some()),
        ("--durability", args.durability.is_some()),
    ];
    given
        .into_iter()
        .filter(|(_, g)| *g)
        .map(|(name, _)| name)
        .collect()
}

fn print_ready(cluster: &LocalCluster, created: bool) {
    let file = cluster.file();
    let root = cluster.dir().root();
    println!(
        "cluster {:?} is ready ({}): {} node(s), replication {}, durability {}",
        file.name,
        if created { "created" } else { "existing" },
        file.nodes.len(),
        file.replication,
        file.durability.mode
    );
    for n in &file.nodes {
        println!(
            "  node {}  {}  {}/{}",
            n.id, n.address, n.datacenter, n.rack
        );
    }
    println!("directory: {}", root.display());
    let is_default = ClusterDir::resolve(None).is_ok_and(|d| d.root() == root);
    if !is_default {
        println!("use it from other commands with:");
        println!(
            "  export {ENV_CLUSTER_DIR}={}    (or pass --cluster-dir to each command)",
            root.display()
        );
    }
    println!("try:");
    println!("  ringkv put greeting hello");
    println!("  ringkv get greeting --consistency ALL");
    println!("  ringkv cluster status");
    println!("  ringkv cluster stop-node 2 --kill; ringkv cluster start-node 2");
    println!(
        "  ringkv cluster down            (--purge also deletes the directory, data included)"
    );
}

fn down(dir: Option<&Path>, out: Output, purge: bool) -> Result<i32, ClusterError> {
    let cluster_dir = ClusterDir::resolve(dir)?;
    let root = cluster_dir.root().to_path_buf();
    if !cluster_dir.exists() {
        if out.json {
            out.print_json(
                &json!({"ok": true, "op": "cluster down", "stopped": [], "purged": false}),
            );
        } else {
            println!("no cluster in {}; nothing to stop", root.display());
        }
        return Ok(0);
    }
    let stopped = match LocalCluster::open(cluster_dir) {
        Ok(cluster) => cluster.stop_all()?,
        // A broken cluster.toml names no nodes; --purge still removes the directory it is in.
        Err(e) if purge => {
            eprintln!(
                "warning: {e}; no node processes can be identified, removing the directory anyway"
            );
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    if purge {
        std::fs::remove_dir_all(&root).map_err(ClusterError::io(&root))?;
    }
    if out.json {
        let nodes: Vec<Value> = stopped
            .iter()
            .map(|(id, pid)| json!({"id": id, "pid": pid}))
            .collect();
        out.print_json(
            &json!({"ok": true, "op": "cluster down", "stopped": nodes, "purged": purge}),
        );
    } else {
        for (id, pid) in &stopped {
            println!("node {id}: stopped (pid {pid})");
        }
        if stopped.is_empty() {
            println!("no node was running");
        }
        if purge {
            println!("removed {}", root.display());
        }
    }
    Ok(0)
}

async fn status(dir: Option<&Path>, out: Output) -> Result<i32, ClusterError> {
    let cluster = LocalCluster::open(ClusterDir::resolve(dir)?)?;
    let reports = cluster.status().await?;
    let all_reachable = reports.iter().all(|r| r.reachable);
    if out.json {
        out.print_json(&json!({
            "ok": true,
            "op": "cluster status",
            "cluster": cluster.file().name,
            "dir": cluster.dir().root().display().to_string(),
            "replication": cluster.file().replication.to_string(),
            "durability": cluster.file().durability.mode.name(),
            "all_reachable": all_reachable,
            "nodes": reports,
        }));
    } else {
        print_status_table(&cluster, &reports);
    }
    Ok(if all_reachable { 0 } else { 4 })
}

fn print_status_table(cluster: &LocalCluster, reports: &[NodeReport]) {
    println!(
        "cluster {:?} in {} (replication {}, durability {})",
        cluster.file().name,
        cluster.dir().root().display(),
        cluster.file().replication,
        cluster.file().durability.mode
    );
    print_row([
        "ID",
        "ADDRESS",
        "DC",
        "RACK",
        "PID",
        "REACHABLE",
        "MEMBERS UP",
        "PEERS DOWN",
        "RECORDS",
        "UPTIME",
    ]);
    for r in reports {
        let pid = r.pid.map_or("-".to_string(), |p| p.to_string());
        let up = r
            .members_up()
            .map_or("-".to_string(), |(up, all)| format!("{up}/{all}"));
        let down = match (&r.status, r.peers_down()) {
            (None, _) => "-".to_string(),
            (Some(_), d) if d.is_empty() => "none".to_string(),
            (Some(_), d) => d
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        let records = r
            .status
            .as_ref()
            .map_or("-".to_string(), |s| s.records.to_string());
        let uptime = r
            .status
            .as_ref()
            .map_or("-".to_string(), |s| human_duration(s.uptime_s));
        print_row([
            &r.id.to_string(),
            &r.address.to_string(),
            &r.datacenter,
            &r.rack,
            &pid,
            if r.reachable { "yes" } else { "no" },
            &up,
            &down,
            &records,
            &uptime,
        ]);
    }
    for r in reports.iter().filter(|r| !r.reachable) {
        let why = r.error.as_deref().unwrap_or("no answer");
        let process = if r.pid.is_some() {
            "its process runs"
        } else {
            "its process is not running"
        };
        println!("node {} unreachable ({process}): {why}", r.id);
    }
    println!();
    println!("self-healing:");
    for r in reports {
        let Some(s) = &r.status else { continue };
        let hints = if s.hints_pending.is_empty() {
            "none".to_string()
        } else {
            s.hints_pending
                .iter()
                .map(|(t, n)| format!("{n} for node {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let last = match &s.last_repair {
            Some((ago, rep)) => format!(
                "{} ago ({} keys repaired, {} bytes, {} ms)",
                human_duration(*ago),
                rep.keys_pulled + rep.keys_pushed,
                rep.bytes_exchanged,
                rep.millis
            ),
            None => "never".to_string(),
        };
        println!(
            "  node {}: hints pending {hints}; hints replayed {}, dropped {}; read repairs {}; anti-entropy last round {last}, keys repaired since start {}",
            r.id, s.hints_replayed, s.hints_dropped, s.read_repairs, s.keys_repaired
        );
    }
}

fn print_row(cols: [&str; 10]) {
    let [id, addr, dc, rack, pid, reachable, up, down, records, uptime] = cols;
    println!("{id:<4} {addr:<21} {dc:<6} {rack:<7} {pid:<8} {reachable:<9} {up:<10} {down:<10} {records:<9} {uptime}");
}

fn stop_node(dir: Option<&Path>, out: Output, id: NodeId, kill: bool) -> Result<i32, ClusterError> {
    let cluster = LocalCluster::open(ClusterDir::resolve(dir)?)?;
    let signal = if kill {
        StopSignal::Kill
    } else {
        StopSignal::Term
    };
    let stopped = cluster.stop_node(id, signal)?;
    if out.json {
        out.print_json(&json!({"ok": true, "op": "cluster stop-node", "id": id, "pid": stopped, "was_running": stopped.is_some()}));
    } else {
        match stopped {
            Some(pid) => println!(
                "node {id}: stopped (pid {pid}, {})",
                if kill { "SIGKILL" } else { "SIGTERM" }
            ),
            None => println!("node {id}: was not running"),
        }
    }
    Ok(0)
}

async fn start_node(
    dir: Option<&Path>,
    out: Output,
    id: NodeId,
    node_bin: Option<PathBuf>,
    timeout: Duration,
) -> Result<i32, ClusterError> {
    let mut cluster = LocalCluster::open(ClusterDir::resolve(dir)?)?;
    if let Some(bin) = &node_bin {
        cluster = cluster.with_node_bin(find_node_binary(Some(bin))?);
    }
    let started = cluster.start_node(id)?;
    cluster.wait_nodes_ready(&[id], timeout).await?;
    if out.json {
        out.print_json(&json!({
            "ok": true,
            "op": "cluster start-node",
            "id": id,
            "pid": started.pid(),
            "started": matches!(started, Started::Spawned(_)),
        }));
    } else {
        match started {
            Started::Spawned(pid) => println!("node {id}: started (pid {pid}) and answering"),
            Started::AlreadyRunning(pid) => println!("node {id}: already running (pid {pid})"),
        }
    }
    Ok(0)
}

/// `3d04h`, `2h05m`, `4m09s`, `12s`.
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// Longest one membership request may take (a join or replace first reaches the new node).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(20);

fn change_text(c: &Change) -> String {
    match c {
        Change::Join { member } => format!(
            "join node {} at {} ({}/{}, {} tokens)",
            member.member.id,
            member.addr,
            member.member.datacenter,
            member.member.rack,
            member.member.tokens.len()
        ),
        Change::Leave { node } => format!("leave node {node}"),
        Change::Replace { dead, with } => format!(
            "replace dead node {dead} by node {} at {}",
            with.member.id, with.addr
        ),
    }
}

/// Prints a membership view: members, staged changes, the transition, what moves.
fn print_view(v: &MembershipView) {
    let r = &v.ring;
    let ids: Vec<String> = r.members.iter().map(|m| m.member.id.to_string()).collect();
    println!(
        "ring epoch {}: members {} ({:?})",
        r.epoch,
        ids.join(", "),
        r.strategy
    );
    for (e, up) in &v.endpoints {
        let role = if r.members.iter().any(|m| m.member.id == e.id) {
            "member"
        } else if r.member(e.id).is_some() {
            "joining"
        } else {
            "not a member"
        };
        println!(
            "  node {} at {}: {}, {}, runs epoch {}",
            e.id,
            e.addr,
            if *up { "up" } else { "down" },
            role,
            e.ring_epoch
        );
    }
    if r.staged.is_empty() {
        println!("staged: nothing");
    } else {
        println!(
            "staged ({}; `ringkv cluster commit` applies them):",
            r.staged.len()
        );
        for c in &r.staged {
            println!("  {}", change_text(c));
        }
    }
    if let Some(t) = &r.transition {
        println!(
            "transition {} in progress: phase {:?}, nodes still streaming: {:?}",
            t.id, t.phase, t.pending
        );
        for c in &t.changes {
            println!("  {}", change_text(c));
        }
    }
    if !v.movements.is_empty() {
        println!("what moves:");
        for m in &v.movements {
            let sources: std::collections::BTreeSet<NodeId> = m
                .ranges
                .iter()
                .flat_map(|(_, s)| s.iter().copied())
                .collect();
            println!(
                "  node {} gains {} range(s), {:.1}% of the ring, about {} records, from nodes {:?}",
                m.node,
                m.ranges.len(),
                m.share * 100.0,
                m.estimated_records,
                sources
            );
        }
    }
}

fn view_json(op: &str, v: &MembershipView) -> Value {
    json!({"ok": true, "op": op, "ring": v.ring, "endpoints": v.endpoints, "movements": v.movements})
}

async fn stage(dir: Option<&Path>, out: Output, op: MembershipOp) -> Result<i32, ClusterError> {
    let cluster = LocalCluster::open(ClusterDir::resolve(dir)?)?;
    let name = match &op {
        MembershipOp::Show => "cluster plan",
        MembershipOp::Join { .. } => "cluster join",
        MembershipOp::Leave { .. } => "cluster leave",
        MembershipOp::Replace { .. } => "cluster replace",
        MembershipOp::Clear => "cluster clear",
        MembershipOp::Commit => "cluster commit",
    };
    let v = cluster.membership(op, MEMBERSHIP_TIMEOUT).await?;
    if out.json {
        out.print_json(&view_json(name, &v));
    } else {
        print_view(&v);
    }
    Ok(0)
}

async fn commit(dir: Option<&Path>, out: Output, wait: &WaitArgs) -> Result<i32, ClusterError> {
    let mut cluster = LocalCluster::open(ClusterDir::resolve(dir)?)?;
    commit_and_follow(&mut cluster, out, wait).await
}

/// Commits, then (unless `--no-wait`) follows the transition with a progress bar until it ends,
/// and afterwards stops local nodes that left and drops them from `cluster.toml`.
async fn commit_and_follow(
    cluster: &mut LocalCluster,
    out: Output,
    wait: &WaitArgs,
) -> Result<i32, ClusterError> {
    let v = cluster
        .membership(MembershipOp::Commit, MEMBERSHIP_TIMEOUT)
        .await?;
    let Some(t) = v.ring.transition.clone() else {
        return Err(ClusterError::Layout(
            "the commit started no transition".into(),
        ));
    };
    if !out.json {
        print_view(&v);
    }
    if wait.no_wait {
        if out.json {
            out.print_json(&view_json("cluster commit", &v));
        }
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(wait.timeout_secs);
    let bar = if out.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(1)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:40}] {pos}/{len} parts {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last_line = std::time::Instant::now();
    let mut streamed = (0u64, 0u64);
    loop {
        let now = cluster
            .membership(MembershipOp::Show, MEMBERSHIP_TIMEOUT)
            .await;
        let phase = match &now {
            Ok(v) => match &v.ring.transition {
                Some(x) if x.id == t.id => Some((x.phase, x.pending.clone())),
                _ => None,
            },
            Err(_) => Some((Phase::Streaming, t.pending.clone())),
        };
        let Some((phase, pending)) = phase else {
            break;
        };
        // Progress of every gaining node (those still pending and those done).
        let (mut done, mut total, mut records, mut bytes) = (0, 0, 0, 0);
        for id in &t.pending {
            if let Ok(s) = cluster.node_status(*id).await {
                if let Some(p) = s.streaming.filter(|p| p.transition == t.id) {
                    done += p.parts_done;
                    total += p.parts_total;
                    records += p.records;
                    bytes += p.bytes;
                }
            }
        }
        streamed = (records, bytes);
        bar.set_length(total.max(1));
        bar.set_position(done);
        let msg = format!(
            "{phase:?}, {records} records, {:.1} MB, waiting for {:?}",
            bytes as f64 / 1e6,
            pending
        );
        bar.set_message(msg.clone());
        if bar.is_hidden() && !out.json && last_line.elapsed() >= Duration::from_secs(5) {
            last_line = std::time::Instant::now();
            println!("  {done}/{total} parts, {msg}");
        }
        if std::time::Instant::now() >= deadline {
            bar.abandon();
            return Err(ClientError::Timeout {
                message: format!(
                    "transition {} still in progress after {} s; it goes on in the cluster (`ringkv cluster plan` shows it)",
                    t.id, wait.timeout_secs
                ),
                acks: 0,
                required: 0,
                receipt: None,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    // The final figures, from the gaining nodes themselves.
    let mut total = (0u64, 0u64);
    for id in &t.pending {
        if let Ok(s) = cluster.node_status(*id).await {
            if let Some(p) = s.streaming.filter(|p| p.transition == t.id) {
                total.0 += p.records;
                total.1 += p.bytes;
            }
        }
    }
    if total.0 > 0 {
        streamed = total;
    }
    // Nodes that are out of the ring now: stop those that left, forget them and dead ones.
    let mut forgotten = Vec::new();
    for c in &t.changes {
        let (id, stop) = match c {
            Change::Leave { node } => (*node, true),
            Change::Replace { dead, .. } => (*dead, true),
            Change::Join { .. } => continue,
        };
        if cluster.file().nodes.iter().any(|n| n.id == id) {
            if stop {
                let _ = cluster.stop_node(id, StopSignal::Term);
            }
            cluster.forget_node(id)?;
            forgotten.push(id);
        }
    }
    if out.json {
        out.print_json(&json!({
            "ok": true, "op": "cluster commit", "transition": t.id,
            "seconds": secs, "records_streamed": streamed.0, "bytes_streamed": streamed.1,
            "stopped_and_forgotten": forgotten,
        }));
    } else {
        println!(
            "transition {} complete in {secs:.1} s: {} records, {:.1} MB streamed",
            t.id,
            streamed.0,
            streamed.1 as f64 / 1e6
        );
        for id in forgotten {
            println!("node {id} is out of the ring: stopped and removed from cluster.toml");
        }
    }
    Ok(0)
}

async fn add(
    dir: Option<&Path>,
    out: Output,
    replace: Option<NodeId>,
    no_commit: bool,
    node_bin: Option<PathBuf>,
    wait: &WaitArgs,
) -> Result<i32, ClusterError> {
    let mut cluster = LocalCluster::open(ClusterDir::resolve(dir)?)?;
    if let Some(bin) = &node_bin {
        cluster = cluster.with_node_bin(find_node_binary(Some(bin))?);
    }
    let entry = cluster.add_node()?;
    let started = cluster.start_node(entry.id)?;
    if !out.json {
        println!(
            "node {}: started at {} (pid {}), learning the ring from the running nodes",
            entry.id,
            entry.address,
            started.pid()
        );
    }
    // The new node answers once it has learned the ring from a seed.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match cluster.node_status(entry.id).await {
            Ok(s) if s.ring_epoch > 0 => break,
            _ if std::time::Instant::now() >= until => {
                return Err(ClusterError::NotReady {
                    node: entry.id,
                    reason: "it did not learn the ring from its seeds in 30 s".into(),
                    log: cluster.dir().node_log(entry.id),
                    log_tail: cluster.log_tail(entry.id, 20),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let addr = entry.address.to_string();
    let op = match replace {
        Some(dead) => MembershipOp::Replace { dead, addr },
        None => MembershipOp::Join { addr },
    };
    let v = cluster.membership(op, MEMBERSHIP_TIMEOUT).await?;
    if no_commit {
        if out.json {
            out.print_json(&view_json("cluster add", &v));
        } else {
            print_view(&v);
        }
        return Ok(0);
    }
    commit_and_follow(&mut cluster, out, wait).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_uptime() {
        assert_eq!(human_duration(12), "12s");
        assert_eq!(human_duration(249), "4m09s");
        assert_eq!(human_duration(7500), "2h05m");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600), "3d04h");
    }
}
