//! The real `rookery-licensed` binary, driven like systemd drives it: `check-config` output and
//! exit codes, `READY=1` only once the socket answers, SIGHUP reload (a broken file keeps the
//! old config running and says why; a good one applies), and SIGTERM with `STOPPING=1`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rookery_common::proto::StatusRequest;
use rookery_common::proto::admin_client::AdminClient;

const BIN: &str = env!("CARGO_BIN_EXE_rookery-licensed");

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
    fn config(&self) -> PathBuf {
        self.path("licensed.toml")
    }
    /// A config that keeps everything inside the temp dir.
    fn base(&self) -> String {
        format!(
            "[grpc]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[state]\ndirectory = \"{}\"\n",
            self.path("licensed.sock").display(),
            self.path("state").display()
        )
    }
    fn write(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }
}

fn check_config(dir: &Dir, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(dir.config())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn check_config_reports_three_problems_in_two_sections_and_exits_78() {
    let dir = Dir::new();
    dir.write(&format!(
        "{}\n[licence]\nmax-attempts = \"four\"\nservr-url = \"https://x\"\n\n[metrics]\nlisten = \"0.0.0.0:9114\"\n",
        dir.base().replace("[metrics]\nlisten = \"127.0.0.1:0\"\n", "")
    ));
    let (code, out) = check_config(&dir, &[]);
    assert_eq!(code, 78, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let p = dir.config().display().to_string();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!(
            "{p}:9:16: licence.max-attempts: invalid type: string \"four\""
        )),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{p}:10:1: licence.servr-url: unknown field `servr-url`"
        )),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{p}:13:10: metrics.listen: 0.0.0.0:9114 is not a loopback address"
        )),
        "{out}"
    );
}

#[test]
fn check_config_names_the_bad_dropin_and_the_bad_env_variable() {
    let dir = Dir::new();
    dir.write(&dir.base());
    std::fs::create_dir(dir.path("licensed.d")).unwrap();
    std::fs::write(
        dir.path("licensed.d/10-ok.toml"),
        "[licence]\nproduct = \"rookery\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path("licensed.d/50-bad.toml"),
        "[licence]\nkeepalive-interval = \"5s\"\n",
    )
    .unwrap();
    let (code, out) = check_config(&dir, &[("ROOKERY_LICENSED__LICENCE__MAX_ATTEMPTS", "lots")]);
    assert_eq!(code, 78, "{out}");
    let dropin = dir.path("licensed.d/50-bad.toml").display().to_string();
    assert!(
        out.contains(
            "env ROOKERY_LICENSED__LICENCE__MAX_ATTEMPTS: licence.max-attempts: invalid type"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{dropin}:2:22: licence.keepalive-interval: 5s is too short"
        )),
        "{out}"
    );

    std::fs::remove_file(dir.path("licensed.d/50-bad.toml")).unwrap();
    let (code, out) = check_config(&dir, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with(": ok\n"), "{out}");
}

#[test]
fn invalid_config_at_start_exits_78_without_binding() {
    let dir = Dir::new();
    dir.write(&format!("{}\n[licence]\nkey = \"PENG-NOPE\"\n", dir.base()));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("licence.key"), "{err}");
    assert!(!dir.path("licensed.sock").exists());
}

/// Collects sd_notify datagrams the way systemd's NOTIFY_SOCKET does.
struct NotifySocket {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> Self {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            sock,
            seen: Vec::new(),
        }
    }

    /// Waits for a datagram containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str, child: &mut Child) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "daemon exited ({status}) while waiting for {needle}; seen {:?}",
                    self.seen
                );
            }
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.contains(needle) {
                    return msg;
                }
            }
        }
        panic!("no {needle} within 30s; seen {:?}", self.seen);
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

fn admin_status(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
) -> rookery_common::proto::StatusResponse {
    rt.block_on(async {
        let ch = rookery_common::grpc::connect(socket).await.unwrap();
        AdminClient::new(ch)
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    })
}

#[test]
fn sighup_keeps_old_config_on_error_and_applies_a_good_one() {
    use nix::sys::signal::Signal;
    let dir = Dir::new();
    dir.write(&dir.base());
    let mut notify = NotifySocket::bind(&dir.path("notify.sock"));
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(dir.config())
        .env("NOTIFY_SOCKET", dir.path("notify.sock"))
        .env("ROOKERY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = dir.path("licensed.sock");

    let ready = notify.wait_for("READY=1", &mut child);
    assert!(ready.contains("STATUS="), "{ready}");
    // READY=1 came after the socket was bound: it answers right away.
    let before = admin_status(&rt, &socket);
    assert_eq!(before.daemon, "licensed");
    assert_eq!(before.state, "ready");
    assert_eq!(before.version, rookery_common::VERSION);

    // A broken file: rejected, old config keeps running, and the status says why.
    dir.write(&format!(
        "{}\n[licence]\nkeepalive-intervall = \"2h\"\n",
        dir.base()
    ));
    signal(&child, Signal::SIGHUP);
    notify.wait_for("RELOADING=1", &mut child);
    let after_bad = notify.wait_for("READY=1", &mut child);
    assert!(after_bad.contains("last reload rejected"), "{after_bad}");
    assert!(
        after_bad.contains("licence.keepalive-intervall"),
        "{after_bad}"
    );
    let st = admin_status(&rt, &socket);
    assert_eq!(
        st.config_digest, before.config_digest,
        "old config must keep running"
    );
    assert!(
        st.last_reload_error.contains("unknown field"),
        "{}",
        st.last_reload_error
    );

    // A good file: applied.
    dir.write(&format!(
        "{}\n[licence]\nkeepalive-interval = \"2h\"\n",
        dir.base()
    ));
    signal(&child, Signal::SIGHUP);
    notify.wait_for("RELOADING=1", &mut child);
    let after_good = notify.wait_for("READY=1", &mut child);
    assert!(!after_good.contains("rejected"), "{after_good}");
    let st = admin_status(&rt, &socket);
    assert_ne!(
        st.config_digest, before.config_digest,
        "new config must be applied"
    );
    assert!(st.last_reload_error.is_empty());

    signal(&child, Signal::SIGTERM);
    notify.wait_for("STOPPING=1", &mut child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "socket removed at exit");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("Reload rejected, the previous configuration keeps running."),
        "{stderr}"
    );
    assert!(
        stderr.contains("keepalive-intervall"),
        "the log says why: {stderr}"
    );
    assert!(stderr.contains("Configuration reloaded."), "{stderr}");
}

#[test]
fn watchdog_pings_when_systemd_asks_for_them() {
    use nix::sys::signal::Signal;
    let dir = Dir::new();
    dir.write(&dir.base());
    let mut notify = NotifySocket::bind(&dir.path("notify.sock"));
    // What systemd sets for WatchdogSec=1s (pings due every 0.5 s): WATCHDOG_USEC, and
    // WATCHDOG_PID naming the main process ($$ survives the exec).
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" --config "$1""#)
        .arg(BIN)
        .arg(dir.config())
        .env("NOTIFY_SOCKET", dir.path("notify.sock"))
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    notify.wait_for("READY=1", &mut child);
    notify.wait_for("WATCHDOG=1", &mut child);
    notify.wait_for("WATCHDOG=1", &mut child);
    signal(&child, Signal::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // Without WatchdogSec= there are no pings.
    let mut quiet = NotifySocket::bind(&dir.path("notify2.sock"));
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(dir.config())
        .env("NOTIFY_SOCKET", dir.path("notify2.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    quiet.wait_for("READY=1", &mut child);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, Signal::SIGTERM);
    quiet.wait_for("STOPPING=1", &mut child);
    child.wait().unwrap();
    assert!(
        !quiet.seen.iter().any(|m| m.contains("WATCHDOG=1")),
        "{:?}",
        quiet.seen
    );
}
