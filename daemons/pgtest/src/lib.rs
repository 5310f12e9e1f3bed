//! A throw-away PostgreSQL server for tests: `initdb` into a temporary directory, `postgres`
//! listening on a free loopback TCP port (and a Unix socket in that directory), stopped and
//! deleted when the [`PgServer`] is dropped.
//!
//! It uses Debian's server binaries (`/usr/lib/postgresql/<version>/bin`, installed by
//! `scripts/install-postgres-test-deps.sh`). PostgreSQL refuses to run as root: when the
//! tests run as root the server runs as the `postgres` system user (else `nobody`), with
//! the directory handed to that user; otherwise it runs as the caller.
//!
//! [`free_port`] gives any other server a test starts a loopback port that no port-0 bind or
//! outgoing connection takes meanwhile.
//!
//! ```no_run
//! let pg = rookery_pgtest::PgServer::start().expect("postgres");
//! let url = pg.url(); // postgres://rookery:…@127.0.0.1:PORT/rookery
//! ```

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User, chown};

mod ports;
pub use ports::free_port;

/// Role (a superuser) and database the server is created with.
pub const USER: &str = "rookery";
/// Its password (scram-sha-256 over TCP, as a fleet server would ask).
pub const PASSWORD: &str = "rookery-test-password";
/// The database created for the tests.
pub const DATABASE: &str = "rookery";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Ports tried when another process takes the chosen one first.
const PORT_ATTEMPTS: usize = 5;

/// A running PostgreSQL server owned by the test.
#[derive(Debug)]
pub struct PgServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<(Uid, Gid)>,
    options: Options,
}

/// How the server is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// TLS: the server's PEM certificate chain and PEM private key (`ssl = on`; clients may
    /// still connect without TLS).
    pub tls: Option<(String, String)>,
}

/// The newest Debian server binary directory (`/usr/lib/postgresql/<N>/bin`).
pub fn bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| {
            format!(
                "{}: {e} (install Debian's postgresql: scripts/install-postgres-test-deps.sh)",
                root.display()
            )
        })?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "no /usr/lib/postgresql/<N>/bin/postgres under {}",
            root.display()
        )
    })
}

fn unprivileged_user() -> Result<Option<(Uid, Gid)>, String> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(u)) = User::from_name(name) {
            return Ok(Some((u.uid, u.gid)));
        }
    }
    Err("running as root and neither a `postgres` nor a `nobody` user exists".to_owned())
}

impl PgServer {
    /// Creates a cluster in a new temporary directory and starts the server; returns once it
    /// accepts connections and the test database exists.
    pub fn start() -> Result<Self, String> {
        Self::start_with(Options::default())
    }

    /// [`PgServer::start`] with `options`.
    pub fn start_with(options: Options) -> Result<Self, String> {
        let bin = bin_dir()?;
        let run_as = unprivileged_user()?;
        let dir = tempfile::Builder::new()
            .prefix("rookery-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod {}: {e}", dir.path().display()))?;
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            bin,
            run_as,
            options,
        };
        server.initdb()?;
        server.write_tls()?;
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match server.launch(free_port()) {
                Ok(()) => {
                    server.create_database()?;
                    return Ok(server);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn initdb(&self) -> Result<(), String> {
        let pwfile = self.dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).map_err(|e| format!("pwfile: {e}"))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&pwfile, Some(uid), Some(gid)).map_err(|e| format!("chown pwfile: {e}"))?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "--no-locale",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--no-sync", "--no-instructions"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Writes the certificate and key (the key readable by the server's user only, as
    /// PostgreSQL demands).
    fn write_tls(&self) -> Result<(), String> {
        let Some((cert, key)) = &self.options.tls else {
            return Ok(());
        };
        for (name, text) in [("server.crt", cert), ("server.key", key)] {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).map_err(|e| format!("{name}: {e}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("chmod {name}: {e}"))?;
            if let Some((uid, gid)) = self.run_as {
                chown(&path, Some(uid), Some(gid)).map_err(|e| format!("chown {name}: {e}"))?;
            }
        }
        Ok(())
    }

    fn launch(&mut self, port: u16) -> Result<(), String> {
        let log = std::fs::File::create(self.log()).map_err(|e| format!("log file: {e}"))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&self.log(), Some(uid), Some(gid)).map_err(|e| format!("chown log: {e}"))?;
        }
        let err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut tls = Vec::new();
        if self.options.tls.is_some() {
            tls.extend([
                "-c".to_owned(),
                "ssl=on".to_owned(),
                "-c".to_owned(),
                format!(
                    "ssl_cert_file={}",
                    self.dir.path().join("server.crt").display()
                ),
                "-c".to_owned(),
                format!(
                    "ssl_key_file={}",
                    self.dir.path().join("server.key").display()
                ),
            ]);
        }
        let mut child = self
            .command("postgres")
            .args(&tls)
            .arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // A test server: durability of the host's disk is not under test, the
                // client-visible commit is (and stays synchronous).
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
                "-c",
                "shared_buffers=16MB",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if let Some(status) = child.try_wait().map_err(|e| format!("postgres: {e}"))? {
                return Err(format!(
                    "postgres exited ({status}) on port {port}: {}",
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let ready = self
                    .command("pg_isready")
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                if ready {
                    self.child = Some(child);
                    self.port = port;
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "postgres did not accept connections within {START_TIMEOUT:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_database(&self) -> Result<(), String> {
        let out = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                DATABASE,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .map_err(|e| format!("createdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "createdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for l in &lines[lines.len().saturating_sub(20)..] {
            let _ = writeln!(out, "{l}");
        }
        out
    }

    /// The loopback TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's directory (data, Unix socket `.s.PGSQL.<port>`, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connection URL of the test database as the superuser `rookery`, password included.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// Connection URL of `database` (create it with [`PgServer::create`]).
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates another database (a test that needs two stores on one server).
    pub fn create(&self, database: &str) -> Result<(), String> {
        let out = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                database,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .map_err(|e| format!("createdb: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "createdb {database}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs `sql` with `psql` on the test database and returns its unaligned, tuples-only
    /// output (tests use it to look at the tables directly).
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args([
                "-d",
                DATABASE,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Stops the server (fast shutdown, killed after a bound); also done on drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
    use super::*;

    #[test]
    fn starts_answers_sql_and_stops() {
        let mut pg = PgServer::start().expect("start postgres");
        assert_eq!(pg.psql("SELECT 40 + 2").unwrap(), "42");
        assert_eq!(pg.psql("SELECT current_user").unwrap(), USER);
        let dir = pg.dir().to_path_buf();
        let port = pg.port();
        pg.stop();
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the port is closed after stop"
        );
        drop(pg);
        assert!(!dir.exists(), "the directory is removed");
    }
}
