//! Starts the real `rookery-ingestd` binary on loopback with a temp config and queries it over
//! its gRPC socket, the way apid does.
#![allow(
    dead_code,
    reason = "each test file uses a different part of this helper"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rookery_common::proto::admin_client::AdminClient;
use rookery_common::proto::logs_client::LogsClient;
use rookery_common::proto::{LogRecord, QueryLogsRequest, StatusRequest};

pub const BIN: &str = env!("CARGO_BIN_EXE_rookery-ingestd");

pub struct Ingestd {
    pub dir: PathBuf,
    pub child: Child,
    pub addrs: BTreeMap<String, String>,
}

/// A loopback port for the metrics listener (whose bound address the daemon does not report),
/// which no port-0 bind or outgoing connection takes meanwhile.
pub fn free_port() -> u16 {
    rookery_pgtest::free_port()
}

/// Writes `ingestd.toml` in `dir`: every listener on a loopback ephemeral port, plus `extra`
/// (TOML appended inside the sections it names).
pub fn write_config(dir: &Path, syslog_extra: &str, store_extra: &str) {
    let text = format!(
        "[syslog]\nudp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\n{syslog_extra}\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [otlp]\ngrpc = [\"127.0.0.1:0\"]\nhttp = [\"127.0.0.1:0\"]\n\n\
         [scrape]\ninterval = \"1s\"\ntimeout = \"1s\"\ntargets = []\n\n\
         [store]\n{store_extra}\n\
         [grpc]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{}\"\n\n[state]\ndirectory = \"{}\"\n",
        dir.join("ingestd.sock").display(),
        free_port(),
        dir.join("state").display()
    );
    std::fs::write(dir.join("ingestd.toml"), text).unwrap();
}

impl Ingestd {
    /// Starts the binary on the config in `dir` and waits until it reports ready.
    pub async fn start(dir: &Path) -> Self {
        Self::start_env(dir, &[]).await
    }

    /// [`Ingestd::start`] with extra environment variables (e.g. `SSL_CERT_FILE`).
    pub async fn start_env(dir: &Path, env: &[(&str, &str)]) -> Self {
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(dir.join("ingestd.toml"))
            .env("ROOKERY_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut me = Self {
            dir: dir.to_path_buf(),
            child,
            addrs: BTreeMap::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = me.child.try_wait().unwrap() {
                panic!("rookery-ingestd exited before it was ready: {status}");
            }
            if let Ok(ch) = rookery_common::grpc::connect(&me.socket()).await
                && let Ok(st) = AdminClient::new(ch).status(StatusRequest {}).await
            {
                let st = st.into_inner();
                if st.state == "ready" {
                    me.addrs = st.details.into_iter().collect();
                    let text = std::fs::read_to_string(dir.join("ingestd.toml")).unwrap();
                    let cfg: toml::Table = toml::from_str(&text).unwrap();
                    let listen = cfg["metrics"]["listen"].as_str().unwrap().to_owned();
                    me.addrs.insert("metrics".into(), listen);
                    return me;
                }
            }
            assert!(
                Instant::now() < deadline,
                "rookery-ingestd not ready in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("ingestd.sock")
    }

    pub fn addr(&self, key: &str) -> std::net::SocketAddr {
        self.addrs
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.addrs))
            .parse()
            .unwrap()
    }

    pub async fn query(&self, req: QueryLogsRequest) -> Vec<LogRecord> {
        let ch = rookery_common::grpc::connect(&self.socket()).await.unwrap();
        LogsClient::new(ch)
            .query_logs(req)
            .await
            .unwrap()
            .into_inner()
            .records
    }

    /// Polls `req` until it returns `n` records (at most 10 s).
    pub async fn wait_for(&self, req: QueryLogsRequest, n: usize) -> Vec<LogRecord> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.query(req.clone()).await;
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} records after 10 s: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The loopback /metrics text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let addr = self.addrs.get("metrics").cloned();
        let addr = addr.unwrap_or_default();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn stop(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no exit 20 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ingestd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 POST; returns (status, body).
pub fn post(addr: std::net::SocketAddr, path: &str, ctype: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: ingestd\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A server that rejects early (413) may close before reading the whole body: the rest of
    // the write and the read can then see a reset after the response arrived.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the HTTP response: {e}"),
        }
    }
    let out = String::from_utf8_lossy(&raw).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The real licensed, in-process, answering on `<dir>/licensed.sock`.
pub struct Licensed {
    pub socket: PathBuf,
    pub control: rookery_common::daemon::Control,
    task: tokio::task::JoinHandle<Result<(), rookery_common::daemon::RunError>>,
}

impl Licensed {
    /// Starts licensed with `release-mode = release` (no key: enterprise features are off
    /// with release mode on, every feature is on with it off) and waits for its socket.
    pub async fn start(dir: &Path, release: bool) -> Self {
        let socket = dir.join("licensed.sock");
        let ldir = dir.join("licensed");
        std::fs::create_dir_all(&ldir).unwrap();
        std::fs::write(
            ldir.join("licensed.toml"),
            format!(
                "[licence]\nrelease-mode = {release}\n[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[state]\ndirectory = \"{}\"\n",
                socket.display(),
                ldir.join("state").display()
            ),
        )
        .unwrap();
        let control = rookery_common::daemon::Control::default();
        let task = tokio::spawn(rookery_licensed::run(
            rookery_common::config::Sources::new(
                "licensed",
                Some(&ldir.join("licensed.toml")),
                Vec::new(),
            ),
            control.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "licensed not up in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            socket,
            control,
            task,
        }
    }

    /// Stops licensed and checks it exited cleanly.
    pub async fn stop(self) {
        self.control.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Distinct (series, time) of the series named `name` in the store under `dir`, merged into
/// the chunks or still in the head.
pub fn samples_named(dir: &Path, name: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("state/logs.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let ids: std::collections::HashSet<i64> = conn
        .prepare("SELECT id FROM series WHERE name = ?1")
        .unwrap()
        .query_map([name], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut samples = rookery_ingestd::store::merged_samples(&conn).unwrap();
    samples.extend(rookery_ingestd::store::head_samples(&conn).unwrap());
    let keys: std::collections::HashSet<(i64, i64)> = samples
        .into_iter()
        .filter(|s| ids.contains(&s.0))
        .map(|s| (s.0, s.1))
        .collect();
    i64::try_from(keys.len()).unwrap()
}
