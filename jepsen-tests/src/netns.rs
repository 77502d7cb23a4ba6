//! One network host per node: a Linux network namespace per node, joined to a bridge in the root
//! namespace by a veth pair, with addresses the harness assigns (10.77.X.0/24; the bridge is .1,
//! node `id` is .(10 + id)). The harness (and its clients) stay in the root namespace and reach the
//! nodes through the bridge. Partitions are nftables drop rules inside the node namespaces.
//!
//! Every name starts with [`NAME_PREFIX`] followed by the harness's pid, so parallel runs do not
//! collide and leftovers of a dead harness can be recognised and removed
//! ([`remove_stale`]). [`Network`] removes what it made when dropped, also on panic.

use ring::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use tracing::{debug, info, warn};

/// Prefix of every namespace, bridge and veth the harness creates.
pub const NAME_PREFIX: &str = "rkj";
/// The nftables table holding partition rules inside a node namespace.
const NFT_TABLE: &str = "ringkv_jepsen";
/// First two octets of the subnets the harness uses.
const SUBNET: [u8; 2] = [10, 77];
/// Host part of node `id`'s address is `HOST_OFFSET + id`.
const HOST_OFFSET: u32 = 10;
/// Networks made by this process so far (part of their names).
static NETWORKS_MADE: AtomicUsize = AtomicUsize::new(0);

/// Why the network could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The process lacks CAP_NET_ADMIN.
    #[error("network namespaces need root (CAP_NET_ADMIN), which this process does not have; run as root, or use only process faults (kill, pause, clock-skew) on loopback")]
    NoPrivilege,
    /// A required tool is missing.
    #[error("`{0}` is not installed (on Debian: apt-get install -y {1}, or run scripts/setup.sh)")]
    MissingTool(&'static str, &'static str),
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard error (or the spawn error).
        stderr: String,
    },
    /// Every candidate subnet is in use.
    #[error("no free 10.77.X.0/24 subnet for the cluster network")]
    NoSubnet,
    /// Too many nodes for the naming scheme or the subnet.
    #[error("{0}")]
    TooLarge(String),
}

/// Checks that namespaces, bridges and nftables can be used: CAP_NET_ADMIN, `ip` and `nft`.
pub fn check_capability() -> Result<(), NetError> {
    if !has_net_admin() {
        return Err(NetError::NoPrivilege);
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !on_path(tool) {
            return Err(NetError::MissingTool(tool, package));
        }
    }
    Ok(())
}

/// Whether the effective capabilities include CAP_NET_ADMIN (bit 12 of `CapEff`).
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Whether an executable named `tool` is on `PATH` (or in the sbin directories root uses).
pub fn on_path(tool: &str) -> bool {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into));
    dirs.iter().any(|d| d.join(tool).is_file())
}

/// One node's host.
#[derive(Debug)]
struct Host {
    id: NodeId,
    namespace: String,
    /// The veth end on the bridge.
    veth: String,
    addr: Ipv4Addr,
}

/// The cluster network: a bridge with an address, and a namespace per node. Removed on drop.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    gateway: Ipv4Addr,
    hosts: Vec<Host>,
    torn_down: bool,
}

impl Network {
    /// Makes the bridge and one namespace per node id. On failure, removes what it made.
    pub fn create(ids: &[NodeId]) -> Result<Network, NetError> {
        check_capability()?;
        if let Some(&big) = ids.iter().find(|&&id| id > 200) {
            return Err(NetError::TooLarge(format!(
                "node id {big}: the network harness supports ids up to 200"
            )));
        }
        let pid = std::process::id();
        let serial = NETWORKS_MADE.fetch_add(1, Ordering::Relaxed);
        let letter = char::from(b'a' + (serial % 26) as u8);
        let tag = format!("{NAME_PREFIX}{pid}{letter}");
        let octet = free_subnet(pid as usize + serial)?;
        let gateway = Ipv4Addr::new(SUBNET[0], SUBNET[1], octet, 1);
        let mut net = Network {
            bridge: format!("{tag}b"),
            gateway,
            hosts: Vec::new(),
            torn_down: false,
        };
        // From here on, dropping `net` removes whatever was made.
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for &id in ids {
            let namespace = format!("{tag}-n{id}");
            let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], octet, (HOST_OFFSET + id) as u8);
            let (outside, inside) = (format!("{tag}h{id}"), format!("{tag}p{id}"));
            ip(&["netns", "add", &namespace])?;
            net.hosts.push(Host {
                id,
                namespace: namespace.clone(),
                veth: outside.clone(),
                addr,
            });
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &outside, "master", &net.bridge, "up"])?;
            ip(&["link", "set", &inside, "netns", &namespace])?;
            let ns = ["-n", namespace.as_str()];
            ip(&[&ns[..], &["link", "set", &inside, "name", "eth0"]].concat())?;
            ip(&[
                &ns[..],
                &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            ]
            .concat())?;
            ip(&[&ns[..], &["link", "set", "eth0", "up"]].concat())?;
            ip(&[&ns[..], &["link", "set", "lo", "up"]].concat())?;
        }
        info!(bridge = %net.bridge, %gateway, nodes = ids.len(), "cluster network created");
        Ok(net)
    }

    /// The address of node `id`'s host.
    pub fn addr(&self, id: NodeId) -> Option<Ipv4Addr> {
        self.host(id).map(|h| h.addr)
    }

    /// The namespace of node `id`.
    pub fn namespace(&self, id: NodeId) -> Option<&str> {
        self.host(id).map(|h| h.namespace.as_str())
    }

    /// The bridge's address (where the harness's clients come from).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    fn host(&self, id: NodeId) -> Option<&Host> {
        self.hosts.iter().find(|h| h.id == id)
    }

    /// Replaces the partition rules: in each node's namespace, drops packets from and to the
    /// nodes it is cut from (an empty map heals). Client traffic from the bridge stays allowed.
    pub fn apply_cuts(&self, cuts: &BTreeMap<NodeId, BTreeSet<NodeId>>) -> Result<(), NetError> {
        for host in &self.hosts {
            let peers: Vec<String> = cuts
                .get(&host.id)
                .into_iter()
                .flatten()
                .filter_map(|&p| self.addr(p))
                .map(|a| a.to_string())
                .collect();
            // Declaring the table first makes the delete succeed when it does not exist yet;
            // the whole script is applied atomically.
            let mut script = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
            if !peers.is_empty() {
                let set = peers.join(", ");
                script.push_str(&format!(
                    "table inet {NFT_TABLE} {{\n\
                     \tchain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
                     \tchain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
                     }}\n"
                ));
            }
            nft(&host.namespace, &script)?;
        }
        debug!(?cuts, "partition rules applied");
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal(&self) -> Result<(), NetError> {
        self.apply_cuts(&BTreeMap::new())
    }

    /// Removes the namespaces and the bridge (idempotent; errors are logged, not returned).
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for host in &self.hosts {
            // Deleting the bridge-side end removes the pair at once; a deleted namespace would
            // take its end with it only when the kernel gets round to destroying it.
            let _ = ip(&["link", "del", &host.veth]);
            if let Err(e) = ip(&["netns", "del", &host.namespace]) {
                warn!(namespace = %host.namespace, error = %e, "cannot remove namespace");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            warn!(bridge = %self.bridge, error = %e, "cannot remove bridge");
        }
        debug!(bridge = %self.bridge, "cluster network removed");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Picks a subnet octet X such that no interface has an address in 10.77.X.0/24, starting from
/// a value derived from `seed` so parallel harnesses tend to pick different ones.
fn free_subnet(seed: usize) -> Result<u8, NetError> {
    let used = run(Command::new("ip").args(["-o", "-4", "addr", "show"]))?;
    (0..250)
        .map(|i| ((seed + i) % 250 + 1) as u8)
        .find(|x| !used.contains(&format!(" {}.{}.{x}.", SUBNET[0], SUBNET[1])))
        .ok_or(NetError::NoSubnet)
}

/// Removes namespaces and links of harnesses that are no longer running (their pid, embedded
/// in the name, is gone). Processes still running inside such a namespace are node processes a
/// dead harness started; they are killed by pid before the namespace goes. Returns what was
/// removed.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    if check_capability().is_err() {
        return removed;
    }
    let namespaces = run(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for name in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if owner_is_gone(name) {
            let pids = run(Command::new("ip").args(["netns", "pids", name])).unwrap_or_default();
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                if pid > 1 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if ip(&["netns", "del", name]).is_ok() {
                removed.push(format!("namespace {name}"));
            }
        }
    }
    let links = run(Command::new("ip").args(["-o", "link", "show"])).unwrap_or_default();
    for link in links.lines().filter_map(link_name) {
        if owner_is_gone(&link) && ip(&["link", "del", &link]).is_ok() {
            removed.push(format!("link {link}"));
        }
    }
    if !removed.is_empty() {
        info!(?removed, "removed leftovers of earlier runs");
    }
    removed
}

/// The interface name of an `ip -o link show` line (`3: name@peer: <...>`).
fn link_name(line: &str) -> Option<String> {
    let name = line.split(':').nth(1)?.trim();
    Some(name.split('@').next()?.to_string())
}

/// Whether `name` is one of ours and the harness pid in it no longer runs.
fn owner_is_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(pid) = digits.parse::<i32>() else {
        return false;
    };
    pid > 1 && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn ip(args: &[&str]) -> Result<String, NetError> {
    run(Command::new("ip").args(args))
}

/// Runs `nft -f -` inside a namespace with `script` on standard input.
fn nft(namespace: &str, script: &str) -> Result<(), NetError> {
    let command = format!("ip netns exec {namespace} nft -f -");
    let fail = |stderr: String| NetError::Command {
        command: command.clone(),
        stderr,
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{}\nscript:\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn run(cmd: &mut Command) -> Result<String, NetError> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::Command {
            command: command.clone(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_with_a_dead_pid_are_stale() {
        assert!(!owner_is_gone("docker0"));
        assert!(!owner_is_gone("rkjx"));
        let me = std::process::id();
        assert!(!owner_is_gone(&format!("rkj{me}a-n1")), "we are alive");
        // Pids are below 2^22 on Linux; this one cannot exist.
        assert!(owner_is_gone("rkj99999999a-n1"));
    }

    #[test]
    fn link_names_are_parsed_from_ip_output() {
        assert_eq!(
            link_name("5: rkj12ah1@if4: <BROADCAST,MULTICAST,UP> mtu 1500").as_deref(),
            Some("rkj12ah1")
        );
        assert_eq!(link_name("garbage"), None);
    }
}
