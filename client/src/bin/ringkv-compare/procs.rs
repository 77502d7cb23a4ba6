//! The peer server processes this run starts (etcd members, Redis servers): spawned in their own
//! process group with their output in a log file, listed in the work directory's `pids` file (so
//! `scripts/compare.sh` can kill exactly them should this process itself be killed), and stopped
//! when the [`Procs`] holding them is dropped: SIGTERM, then SIGKILL for any still running after
//! a bounded wait. Only the processes spawned here are ever signalled, through their `Child`
//! handles (an unreaped child's pid cannot be reused).

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long stopped processes get to exit on SIGTERM before SIGKILL.
const TERM_WAIT: Duration = Duration::from_secs(10);
/// How long a SIGKILLed process gets to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// One spawned server.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The servers of one system, stopped on drop.
pub struct Procs {
    pid_file: PathBuf,
    procs: Vec<Proc>,
}

impl Procs {
    /// No processes yet; spawned ones are appended to `work/pids`.
    pub fn new(work: &Path) -> Procs {
        Procs {
            pid_file: work.join("pids"),
            procs: Vec::new(),
        }
    }

    /// Starts `program args` with output appended to `log`, as `name` in messages.
    pub fn spawn<I, S>(
        &mut self,
        name: &str,
        program: &Path,
        args: I,
        log: &Path,
    ) -> anyhow::Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone().context("cannot duplicate the log file")?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C at the terminal reaches this process, which then
            // stops the servers in order, instead of killing them under a running benchmark.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        });
        record_pid(&self.pid_file, pid, name);
        Ok(())
    }

    /// The pids of the servers, for CPU accounting.
    pub fn pids(&self) -> Vec<i32> {
        self.procs
            .iter()
            .filter_map(|p| i32::try_from(p.child.id()).ok())
            .collect()
    }

    /// Fails, with the end of its log, if a server has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!(
                    "{} exited ({status}); last lines of {}:\n{}",
                    p.name,
                    p.log.display(),
                    client::launcher::tail(&p.log, 20).unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    /// Stops every server: SIGTERM to all, up to [`TERM_WAIT`] in total for them to exit, then
    /// SIGKILL for the rest. Idempotent.
    pub fn stop(&mut self) {
        for p in &mut self.procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                signal(&p.child, Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + TERM_WAIT;
        for p in &mut self.procs {
            if !wait_until(&mut p.child, deadline) {
                eprintln!(
                    "ringkv-compare: {} (pid {}) ignored SIGTERM; sending SIGKILL",
                    p.name,
                    p.child.id()
                );
                signal(&p.child, Signal::SIGKILL);
                if !wait_until(&mut p.child, Instant::now() + KILL_WAIT) {
                    eprintln!(
                        "ringkv-compare: {} (pid {}) is still running after SIGKILL",
                        p.name,
                        p.child.id()
                    );
                }
            }
        }
        self.procs.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `sig` to a child that has not been reaped (so its pid is still its own).
fn signal(child: &Child, sig: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        if pid > 1 {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

/// Waits (reaping) until the child exits or `deadline` passes; true when it exited.
fn wait_until(child: &mut Child, deadline: Instant) -> bool {
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Appends `pid name` to the pid file (best effort: it is only the script's safety net).
pub fn record_pid(pid_file: &Path, pid: u32, name: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(pid_file)
    {
        let _ = writeln!(f, "{pid} {name}");
    }
}

/// `n` distinct free TCP ports on 127.0.0.1 (bound together, then released: another process
/// could take one before the server binds it, a small race a failed start reports).
pub fn free_tcp_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot pick free ports on 127.0.0.1")?;
    Ok(listeners
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect())
}

/// Polls `ready` every 200 ms until it succeeds, `procs` fail, or `timeout` passes (then the
/// last failure is returned).
pub async fn wait_ready<F, Fut>(
    what: &str,
    procs: &mut Procs,
    timeout: Duration,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        procs.check_running()?;
        let attempt = tokio::time::timeout(Duration::from_secs(5), ready()).await;
        let err = match attempt {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("a readiness check took over 5 s"),
        };
        if Instant::now() >= deadline {
            return Err(err.context(format!("{what} did not become ready in {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
