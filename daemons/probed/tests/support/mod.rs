//! Shared helpers of probed's integration tests: modules from TOML, free loopback ports,
//! and real servers (nginx, unbound) started in temp directories and killed on drop.
//! A missing server binary fails the test, naming the script that installs it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test code: a panic is the failure report; not every test uses every helper"
)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rookery_probed::config::Module;
use rookery_probed::probe::{self, Outcome, Prepared};

/// A module parsed from the TOML of one `[modules.<name>]` table (without the header).
pub fn module(toml_text: &str) -> Module {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("bad test module: {e}\n{toml_text}"))
}

/// Runs one probe of `address` with the module written in `toml_text`.
pub async fn probe(toml_text: &str, address: &str) -> Outcome {
    let m = module(toml_text);
    let timeout = m.timeout;
    let prepared = Prepared::new(&m).unwrap();
    probe::run(&prepared, address, timeout).await
}

/// A loopback port nobody listens on right now, which no port-0 bind or outgoing connection
/// takes meanwhile.
pub fn free_port() -> u16 {
    rookery_pgtest::free_port()
}

/// Waits (bounded: 10 s) until `addr` accepts TCP connections.
pub fn wait_tcp(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr} after 10 s");
}

/// Path of a server binary, or a failure naming the installer.
pub fn binary(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: run scripts/install-probed-test-deps.sh (as root)"
    );
    p
}

/// A child process killed on drop.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to `dir/name`, returning the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts nginx with the `http { … }` body `http_body` (paths may use `{dir}`), and waits
/// for `wait_port` on 127.0.0.1.
pub fn nginx(dir: tempfile::TempDir, http_body: &str, wait_port: u16) -> Server {
    let bin = binary("/usr/sbin/nginx");
    let d = dir.path().display().to_string();
    let conf = format!(
        "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n{}\n}}\n",
        http_body.replace("{dir}", &d)
    );
    let conf_path = write(dir.path(), "nginx.conf", &conf);
    let child = Command::new(bin)
        .args(["-p", &d, "-c"])
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let server = Server { child, dir };
    wait_tcp(SocketAddr::from(([127, 0, 0, 1], wait_port)));
    server
}

/// Starts unbound on 127.0.0.1:`port` (UDP and TCP) serving `local_data` records, e.g.
/// `"www.rookery.test. A 192.0.2.10"`, authoritative for zone `rookery.test.`.
pub fn unbound(port: u16, local_data: &[&str]) -> Server {
    let bin = binary("/usr/sbin/unbound");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  chroot: \"\"\n\
         username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n\
         logfile: \"\"\n  verbosity: 0\n  do-ip6: no\n  do-tcp: yes\n  access-control: 127.0.0.0/8 allow\n\
         local-zone: \"rookery.test.\" static\n"
    );
    for rr in local_data {
        conf.push_str(&format!("  local-data: \"{rr}\"\n"));
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    let conf_path = write(dir.path(), "unbound.conf", &conf);
    let check = Command::new("/usr/sbin/unbound-checkconf")
        .arg(&conf_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "unbound config rejected: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(bin)
        .args(["-d", "-c"])
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let server = Server { child, dir };
    wait_tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    server
}

/// Starts OpenSSH's sshd on 127.0.0.1:`port` with a fresh ed25519 host key; returns the
/// server and the key's fingerprint as `ssh-keygen -lf` prints it (`SHA256:…`).
pub fn sshd(port: u16) -> (Server, String) {
    let bin = binary("/usr/sbin/sshd");
    let keygen = binary("/usr/bin/ssh-keygen");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let key = format!("{d}/host_ed25519");
    let out = Command::new(&keygen)
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rookery-test",
            "-f",
            &key,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&keygen)
        .args(["-l", "-f", &format!("{key}.pub")])
        .output()
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l prints bits, fingerprint, comment")
        .to_owned();
    // sshd refuses to start without its privilege separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let conf = write(
        dir.path(),
        "sshd_config",
        &format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {d}/sshd.pid\nUsePAM no\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        ),
    );
    let child = Command::new(bin)
        .args(["-D", "-e", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, dir };
    wait_tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    (server, fingerprint)
}
