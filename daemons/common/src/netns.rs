//! Named network namespaces for the privileged tests of every daemon.
//!
//! A test makes a [`NetNs`] (`ip netns add`), configures it with [`NetNs::ip`] (`ip -n NAME …`)
//! and runs code inside it with [`NetNs::run`], which enters the namespace on a fresh thread
//! (`setns` changes only the calling thread, and sockets keep the namespace they were opened
//! in). Dropping it deletes the namespace, with every veth end and address in it. Needs root
//! (`CAP_SYS_ADMIN`); the daemons themselves never create namespaces.

use std::fs::File;
use std::io;
use std::process::Command;

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

/// Runs `ip ARGS`, failing with its stderr when it exits non-zero.
///
/// # Errors
/// `ip` cannot be run or reports an error.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetNs {
    /// Creates namespace `rk-TAG-PID` (a leftover of the same name is removed first), with
    /// `lo` up and IPv6 duplicate address detection off, so addresses are usable at once.
    ///
    /// # Errors
    /// Not root, or `ip` fails.
    pub fn new(tag: &str) -> io::Result<Self> {
        let name = format!("rk-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.run(|| {
            for conf in ["all", "default"] {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/accept_dad"), "0")?;
            }
            Ok::<(), io::Error>(())
        })??;
        Ok(ns)
    }

    /// The namespace's name (for `ip -n`, `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    ///
    /// # Errors
    /// `ip` cannot be run or reports an error.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a new thread inside the namespace and returns its result.
    ///
    /// # Errors
    /// The namespace cannot be entered. A panic of `f` is resumed on the caller's thread.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let file = File::open(format!("/run/netns/{}", self.name))?;
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                Ok(f())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
