//! Network namespaces and veth pairs for the privileged packetd tests.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use rookery_packetd::allow::Allowlist;
use rookery_packetd::xdp::{ModePolicy, Reflector};

pub fn require_root(test: &str) {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "{test}: needs root (network namespaces, veth, XDP); run the packetd tests as root"
    );
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip(8) runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn in_ns(ns: &str, cmd: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .expect("ip netns exec runs");
    assert!(
        out.status.success(),
        "{cmd:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair: `vr` (10.77.N.1, fd00:77:N::1) in the reflector
/// namespace, `vs` (10.77.N.2, fd00:77:N::2) in the sender namespace. Removed on drop.
pub struct Pair {
    pub refl: String,
    pub send: String,
    pub n: u8,
}

impl Pair {
    pub fn new(tag: &str, n: u8) -> Self {
        let pair = Self::without_link(tag, n);
        pair.link();
        pair
    }

    /// The two namespaces without the veth pair (a test creates it later with [`Pair::link`]).
    pub fn without_link(tag: &str, n: u8) -> Self {
        let pid = std::process::id();
        let refl = format!("pkd-{tag}-r-{pid}");
        let send = format!("pkd-{tag}-s-{pid}");
        let _ = Command::new("ip").args(["netns", "del", &refl]).status();
        let _ = Command::new("ip").args(["netns", "del", &send]).status();
        ip(&["netns", "add", &refl]);
        let pair = Self { refl, send, n };
        ip(&["netns", "add", &pair.send]);
        for ns in [&pair.refl, &pair.send] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Creates the veth pair (2 queues each way) with its addresses, up; also used to re-create
    /// it after a test removed it.
    pub fn link(&self) {
        let n = self.n;
        ip(&[
            "-n",
            &self.refl,
            "link",
            "add",
            "vr",
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            "vs",
            "netns",
            &self.send,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ]);
        for (ns, dev, host) in [(&self.refl, "vr", 1), (&self.send, "vs", 2)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.77.{n}.{host}/24"),
                "dev",
                dev,
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd00:77:{n}::{host}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // The sender sends full checksums, as a real NIC delivers them to the reflector.
        tx_checksum_off(&self.send, "vs");
    }

    pub fn enter(ns: &str) {
        let f = File::open(format!("/var/run/netns/{ns}")).expect("netns file exists");
        setns(f, CloneFlags::CLONE_NEWNET).expect("setns works as root");
    }

    pub fn v4(&self, host: u8) -> IpAddr {
        format!("10.77.{}.{host}", self.n).parse().unwrap()
    }

    /// The pair's /24 and /64 as an allowlist.
    pub fn prefixes(&self) -> Allowlist {
        Allowlist(
            [
                format!("10.77.{}.0/24", self.n),
                format!("fd00:77:{}::/64", self.n),
            ]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect(),
        )
    }

    pub fn v6(&self, host: u8) -> IpAddr {
        format!("fd00:77:{}::{host}", self.n).parse().unwrap()
    }
}

/// `ethtool -K DEV tx off` in namespace `ns` without ethtool(8), which the appliance image
/// (where the netem tests run, `tests/qemu`) does not ship: the SIOCETHTOOL request
/// ETHTOOL_STXCSUM with 0 clears every TX checksum feature of the device, as ethtool does.
fn tx_checksum_off(ns: &str, dev: &str) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// `struct ethtool_value` of <linux/ethtool.h>.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let (ns, dev) = (ns.to_owned(), dev.to_owned());
    std::thread::spawn(move || {
        Pair::enter(&ns);
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a freshly opened descriptor owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        assert!(
            dev.len() < ifr.ifr_name.len(),
            "interface name {dev} too long"
        );
        for (d, s) in ifr.ifr_name.iter_mut().zip(dev.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
        // SAFETY: SIOCETHTOOL reads the NUL-terminated name and the ethtool_value that
        // ifru_data points to, both alive for the duration of the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &raw mut ifr) };
        assert_eq!(
            rc,
            0,
            "ETHTOOL_STXCSUM off on {dev} in {ns}: {}",
            std::io::Error::last_os_error()
        );
    })
    .join()
    .expect("TX checksum offload turned off");
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.refl])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.send])
            .status();
    }
}

/// Enters the sender namespace and attaches the program with both ports off (pass-all) to
/// `vs`: a veth only takes XDP_TX frames from its peer when it runs NAPI, which an XDP program
/// guarantees (GRO alone did not deliver them on this kernel).
pub fn peer_pass(pair: &Pair) -> Reflector {
    Pair::enter(&pair.send);
    let mut pass = Reflector::load(0, 0).expect("XDP object loads");
    pass.attach("vs", ModePolicy::Native)
        .expect("native XDP attaches on veth");
    pass
}

/// The capabilities of packetd's unit, for a daemon the tests start as uid 65534.
pub const UNIT_CAPS: &str = "-all,+bpf,+net_admin,+net_bind_service,+net_raw";

/// A `rookery-packetd run` the test started; killed on drop.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real `rookery-packetd` in namespace `ns` as uid 65534 with [`UNIT_CAPS`], with
/// `sections` (the test's own TOML) plus `[grpc]`, `[state]` and `[metrics]` in `dir` (made
/// world-writable for that user); returns once its gRPC socket exists, with the socket's path.
/// A daemon that exits first fails the test with its stderr.
pub fn spawn_packetd(ns: &str, dir: &Path, sections: &str, metrics: &str) -> (Daemon, PathBuf) {
    spawn_packetd_caps(ns, dir, sections, metrics, UNIT_CAPS)
}

/// [`spawn_packetd`] with the capabilities `caps` (setpriv syntax) instead of the unit's.
pub fn spawn_packetd_caps(
    ns: &str,
    dir: &Path,
    sections: &str,
    metrics: &str,
    caps: &str,
) -> (Daemon, PathBuf) {
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let sock = dir.join("packetd.sock");
    let cfg = dir.join("packetd.toml");
    std::fs::write(
        &cfg,
        format!(
            "{sections}\n[grpc]\nsocket = \"{}\"\n\n[state]\ndirectory = \"{}\"\n\n[metrics]\nlisten = \"{metrics}\"\n",
            sock.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
            ])
            .args(["--clear-groups", &format!("--inh-caps={caps}")])
            .args([
                format!("--ambient-caps={caps}"),
                format!("--bounding-set={caps}"),
            ])
            .args([env!("CARGO_BIN_EXE_rookery-packetd"), "run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            let mut err = String::new();
            let _ = daemon.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("rookery-packetd exited {status}:\n{err}");
        }
        assert!(Instant::now() < deadline, "no gRPC socket within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    (daemon, sock)
}
