//! Privileged: the real `rookery-packetd` binary run inside a network namespace with
//! `[xdp] interfaces = ["vr"]` reflects STAMP packets sent from the peer namespace, exports the
//! count as `rookery_packetd_xdp_packets_total{result="reflected"}`, shows the attachment in
//! `rookery_packetd_xdp_attached`, and detaches on SIGTERM (exit 0, nothing answered after).
//! It runs as uid/gid 65534 with exactly the unit's capabilities (CAP_BPF, CAP_NET_ADMIN,
//! CAP_NET_BIND_SERVICE), so a privilege the unit lacks makes this test fail. The same daemon in
//! `mode = "userspace"` answers an on-link source and counts an off-link one as denied. The
//! on-link allowlist follows an address added to and removed from `vr` within 300 ms, and a
//! deleted and re-created `vr` gets the XDP program again without a reload. A `vr` that does
//! not exist at start is no startup error in any mode: it is logged and shown as absent, then
//! served as soon as it is created (in `auto` by XDP, no userspace fallback), and again after
//! it is deleted and re-created or renamed away and back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod netns;
use netns::{Pair, peer_pass, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_rookery-packetd");

/// Kills the daemon if the test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET /metrics on the daemon's loopback listener (the caller is in the daemon's namespace).
fn metrics() -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &"127.0.0.1:9111".parse().unwrap(),
        Duration::from_millis(200),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

fn stamp(seq: u32) -> [u8; 44] {
    let mut p = [0_u8; 44];
    p[0..4].copy_from_slice(&seq.to_be_bytes());
    p
}

const CAPS: &str = "-all,+bpf,+net_admin,+net_bind_service,+net_raw";

/// Starts the daemon as uid 65534 with the unit's capabilities in the reflector namespace with
/// `[xdp] interfaces = ["vr"]` and `mode`, and waits for its first /metrics page.
fn spawn(pair: &Pair, dir: &tempfile::TempDir, mode: &str) -> (Daemon, String) {
    spawn_with(pair, dir, mode, CAPS)
}

/// [`spawn`] with other capabilities than the unit's.
fn spawn_with(pair: &Pair, dir: &tempfile::TempDir, mode: &str, caps: &str) -> (Daemon, String) {
    spawn_cfg(pair, dir, mode, caps, r#"["vr"]"#)
}

/// [`spawn_with`] with another `[xdp] interfaces` list (TOML).
fn spawn_cfg(
    pair: &Pair,
    dir: &tempfile::TempDir,
    mode: &str,
    caps: &str,
    interfaces: &str,
) -> (Daemon, String) {
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let cfg = dir.path().join("packetd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[xdp]\ninterfaces = {interfaces}\nmode = \"{mode}\"\n\n[grpc]\nsocket = \"{}\"\n\n[state]\ndirectory = \"{}\"\n",
            dir.path().join("packetd.sock").display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &pair.refl,
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
            ])
            .args(["--clear-groups", &format!("--inh-caps={caps}")])
            .args([
                format!("--ambient-caps={caps}"),
                format!("--bounding-set={caps}"),
            ])
            .args([BIN, "run", "--config"])
            .arg(&cfg)
            .env("ROOKERY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    Pair::enter(&pair.refl);
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(m) = metrics() {
            break m;
        }
        if let Some(status) = daemon.0.try_wait().unwrap() {
            let mut err = String::new();
            daemon
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("rookery-packetd exited {status} before serving /metrics:\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "rookery-packetd did not serve /metrics within 20s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    (daemon, first)
}

#[test]
fn daemon_packetd_userspace_mode_reflects_on_link_sources() {
    require_root("daemon_packetd_userspace_mode_reflects_on_link_sources");
    let pair = Pair::new("dus", 10);
    let dir = tempfile::tempdir().unwrap();
    let (daemon, first) = spawn(&pair, &dir, "userspace");
    assert!(
        first.contains("rookery_packetd_xdp_attached{interface=\"vr\",mode=\"userspace\"} 1"),
        "{first}"
    );
    // The default allowlist is the on-link /24: .2 is answered, a source off the link is not.
    Pair::enter(&pair.send);
    netns::in_ns(
        &pair.send,
        &["ip", "addr", "add", "10.99.0.2/32", "dev", "vs"],
    );
    netns::in_ns(
        &pair.refl,
        &["ip", "route", "add", "10.99.0.2/32", "dev", "vr"],
    );
    let sock = UdpSocket::bind(SocketAddr::new(pair.v4(2), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = SocketAddr::new(pair.v4(1), 862);
    let mut buf = [0_u8; 128];
    sock.send_to(&stamp(5), to).unwrap();
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("the userspace reflector answers");
    assert_eq!((n, from), (44, to));
    assert_eq!(&buf[24..28], &5_u32.to_be_bytes());
    let off = UdpSocket::bind("10.99.0.2:0").unwrap();
    off.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    off.send_to(&stamp(6), to).unwrap();
    assert!(
        off.recv_from(&mut buf).is_err(),
        "an off-link source must not be answered"
    );
    Pair::enter(&pair.refl);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics().unwrap_or_default();
        if m.contains("rookery_packetd_xdp_packets_total{result=\"reflected\"} 1")
            && m.contains("rookery_packetd_xdp_packets_total{result=\"denied\"} 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters never showed 1 reflected, 1 denied:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Reload with an explicit allowlist: now only the off-link host is answered, in place.
    let cfg = dir.path().join("packetd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "mode = \"userspace\"\n",
        "mode = \"userspace\"\nallow-sources = [\"10.99.0.2/32\"]\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    Pair::enter(&pair.send);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 100;
    loop {
        seq += 1;
        off.send_to(&stamp(seq), to).unwrap();
        if off.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reloaded allowlist never took effect"
        );
    }
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.send_to(&stamp(7), to).unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "10.77.10.2 is no longer allowed"
    );
}

#[test]
fn daemon_packetd_auto_falls_back_to_userspace_with_the_reason() {
    require_root("daemon_packetd_auto_falls_back_to_userspace_with_the_reason");
    let pair = Pair::new("dfb", 16);
    let dir = tempfile::tempdir().unwrap();
    // Without CAP_BPF the XDP program cannot even be loaded.
    let (mut daemon, first) = spawn_with(&pair, &dir, "auto", "-all,+net_admin,+net_bind_service");
    assert!(
        first.contains("rookery_packetd_xdp_attached{interface=\"vr\",mode=\"userspace\"} 1"),
        "{first}"
    );
    Pair::enter(&pair.send);
    let sock = UdpSocket::bind(SocketAddr::new(pair.v4(2), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = SocketAddr::new(pair.v4(1), 862);
    let mut buf = [0_u8; 128];
    sock.send_to(&stamp(11), to).unwrap();
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("the fallback reflector answers");
    assert_eq!((n, from), (44, to));
    assert_eq!(&buf[24..28], &11_u32.to_be_bytes());
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    let mut err = String::new();
    daemon
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("falling back to the userspace reflector") && err.contains("vr"),
        "the fallback and its reason are logged:\n{err}"
    );
}

#[test]
fn daemon_packetd_reflects_counts_and_detaches() {
    require_root("daemon_packetd_reflects_counts_and_detaches");
    let pair = Pair::new("daemon", 3);
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = spawn(&pair, &dir, "auto");
    assert!(
        first.contains("rookery_packetd_xdp_attached{interface=\"vr\",mode=\"native\"} 1"),
        "{first}"
    );

    let _peer = peer_pass(&pair);
    let sock = UdpSocket::bind(SocketAddr::new(pair.v4(2), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = SocketAddr::new(pair.v4(1), 862);
    let mut buf = [0_u8; 128];
    for seq in 1..=3 {
        sock.send_to(&stamp(seq), to).unwrap();
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("the daemon's XDP program answers");
        assert_eq!((n, from), (44, to));
        assert_eq!(&buf[0..4], &seq.to_be_bytes());
        assert_eq!(&buf[24..28], &seq.to_be_bytes());
    }

    Pair::enter(&pair.refl);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics().unwrap_or_default();
        if m.contains("rookery_packetd_xdp_packets_total{result=\"reflected\"} 3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reflected counter never reached 3:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "rookery-packetd did not stop within 10s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");

    Pair::enter(&pair.send);
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.send_to(&stamp(9), to).unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a stopped daemon must leave nothing attached"
    );
}

/// Milliseconds from now until `sock`'s STAMP probes to `to` are answered (`want = true`) or
/// stop being answered (`want = false`), probing every 10 ms; panics after 5 s.
fn ms_until_answered(sock: &UdpSocket, to: SocketAddr, want: bool, seq: &mut u32) -> u128 {
    let start = Instant::now();
    let mut buf = [0_u8; 128];
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    loop {
        *seq += 1;
        sock.send_to(&stamp(*seq), to).unwrap();
        // A reply to this probe (older replies are drained and ignored).
        let mut answered = false;
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            answered |= n == 44 && buf[24..28] == seq.to_be_bytes();
        }
        if answered == want {
            return start.elapsed().as_millis();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "probes never became {}",
            if want { "answered" } else { "unanswered" }
        );
    }
}

#[test]
fn daemon_packetd_follows_addresses_over_netlink() {
    require_root("daemon_packetd_follows_addresses_over_netlink");
    let pair = Pair::new("dnl", 17);
    let dir = tempfile::tempdir().unwrap();
    // No allow-sources: the allowlist is vr's on-link prefixes.
    let (daemon, first) = spawn(&pair, &dir, "native");
    assert!(
        first.contains("rookery_packetd_xdp_attached{interface=\"vr\",mode=\"native\"} 1"),
        "{first}"
    );
    let _peer = peer_pass(&pair);
    // A source outside vr's subnets: 10.98.17.2 on the sender's side.
    netns::in_ns(
        &pair.send,
        &["ip", "addr", "add", "10.98.17.2/24", "dev", "vs"],
    );
    let sock = UdpSocket::bind("10.98.17.2:0").unwrap();
    let to = SocketAddr::new(pair.v4(1), 862);
    let mut seq = 0;
    // The first probe (10 ms) already goes unanswered.
    let first = ms_until_answered(&sock, to, false, &mut seq);
    assert!(first < 100, "10.98.17.2 is not on-link yet ({first} ms)");
    // Adding 10.98.17.1/24 to vr puts the source on-link; removing it takes it off again.
    // The change must take effect at once (the kernel's notification), not at a poll: packetd
    // used to re-read the addresses every second, so six transitions each well under that
    // would be a coincidence of odds below 1 in 1000.
    for round in 0..3 {
        netns::in_ns(
            &pair.refl,
            &["ip", "addr", "add", "10.98.17.1/24", "dev", "vr"],
        );
        let on = ms_until_answered(&sock, to, true, &mut seq);
        netns::in_ns(
            &pair.refl,
            &["ip", "addr", "del", "10.98.17.1/24", "dev", "vr"],
        );
        let off = ms_until_answered(&sock, to, false, &mut seq);
        assert!(
            on < 300 && off < 300,
            "round {round}: answered {on} ms after the address was added, unanswered {off} ms after it was removed"
        );
    }
    drop(daemon);
}

#[test]
fn daemon_packetd_attaches_again_to_a_recreated_interface() {
    require_root("daemon_packetd_attaches_again_to_a_recreated_interface");
    let pair = Pair::new("dre", 18);
    let dir = tempfile::tempdir().unwrap();
    let (daemon, first) = spawn(&pair, &dir, "native");
    assert!(
        first.contains("rookery_packetd_xdp_attached{interface=\"vr\",mode=\"native\"} 1"),
        "{first}"
    );
    let to = SocketAddr::new(pair.v4(1), 862);
    let mut seq = 0;
    {
        let _peer = peer_pass(&pair);
        let sock = UdpSocket::bind(SocketAddr::new(pair.v4(2), 0)).unwrap();
        ms_until_answered(&sock, to, true, &mut seq);
    }
    // The pair goes away (the kernel detaches the program with it) and comes back: packetd
    // hears of both over netlink and attaches to the new vr without a reload.
    netns::in_ns(&pair.refl, &["ip", "link", "del", "vr"]);
    Pair::enter(&pair.refl);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics()
        .unwrap_or_default()
        .contains("rookery_packetd_xdp_attached{interface=\"vr\"")
    {
        assert!(
            Instant::now() < deadline,
            "the removed interface is still shown as attached"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pair.link();
    let _peer = peer_pass(&pair);
    let sock = UdpSocket::bind(SocketAddr::new(pair.v4(2), 0)).unwrap();
    let ms = ms_until_answered(&sock, to, true, &mut seq);
    assert!(ms < 2000, "answered {ms} ms after vr came back");
    Pair::enter(&pair.refl);
    let m = metrics().unwrap_or_default();
    assert!(
        m.contains("rookery_packetd_xdp_attached{interface=\"vr\",mode=\"native\"} 1"),
        "{m}"
    );
    drop(daemon);
}

/// The value of `rookery_packetd_xdp_packets_total{result="reflected"}` in a /metrics page.
fn reflected(m: &str) -> u64 {
    m.lines()
        .find_map(|l| l.strip_prefix("rookery_packetd_xdp_packets_total{result=\"reflected\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Polls /metrics (the caller is in the daemon's namespace) until `ok` holds; panics naming
/// `what` with the last page after 5 s.
fn wait_metrics(what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics().unwrap_or_default();
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the daemon and returns what it logged.
fn stop_and_log(mut daemon: Daemon) -> String {
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    let mut err = String::new();
    daemon
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

const VR_ABSENT: &str = "rookery_packetd_xdp_unserved{interface=\"vr\",reason=\"absent\"} 1";
const VR_NATIVE: &str = "rookery_packetd_xdp_attached{interface=\"vr\",mode=\"native\"} 1";
const ABSENT_LOG: &str = "Configured interface does not exist";

/// `vr` is created (with the peer's pass program), answered within 2 s, then checked in the
/// daemon's namespace: `want` attached, not shown as absent, and the reflected counter above
/// `before`. Returns the counter.
fn create_and_check_answered(pair: &Pair, seq: &mut u32, want: &str, before: u64) -> u64 {
    pair.link();
    {
        let _peer = peer_pass(pair);
        let sock = UdpSocket::bind(SocketAddr::new(pair.v4(2), 0)).unwrap();
        let ms = ms_until_answered(&sock, SocketAddr::new(pair.v4(1), 862), true, seq);
        assert!(ms < 2000, "answered {ms} ms after vr appeared");
    }
    Pair::enter(&pair.refl);
    let m = wait_metrics("showed vr served and the replies counted", |m| {
        m.contains(want) && !m.contains(VR_ABSENT) && reflected(m) > before
    });
    reflected(&m)
}

/// Deletes `vr` and waits until the daemon shows it absent and no longer attached.
fn delete_and_check_absent(pair: &Pair) {
    netns::in_ns(&pair.refl, &["ip", "link", "del", "vr"]);
    Pair::enter(&pair.refl);
    wait_metrics("showed the deleted vr as absent", |m| {
        m.contains(VR_ABSENT) && !m.contains("rookery_packetd_xdp_attached{interface=\"vr\"")
    });
}

#[test]
fn daemon_packetd_auto_serves_an_interface_created_after_start_with_xdp() {
    require_root("daemon_packetd_auto_serves_an_interface_created_after_start_with_xdp");
    let pair = Pair::without_link("dla", 19);
    let dir = tempfile::tempdir().unwrap();
    // vr does not exist yet: packetd starts anyway, says so, and serves nothing.
    let (daemon, first) = spawn(&pair, &dir, "auto");
    assert!(first.contains(VR_ABSENT), "{first}");
    assert!(
        !first.contains("rookery_packetd_xdp_attached{interface=\"vr\""),
        "{first}"
    );
    let mut seq = 0;
    let mut count = 0;
    // Created, deleted and created again: each time the XDP program answers.
    for round in 0..2 {
        count = create_and_check_answered(&pair, &mut seq, VR_NATIVE, count);
        // XDP answered, not a userspace fallback: nothing in packetd holds the STAMP port.
        assert!(
            UdpSocket::bind("0.0.0.0:862").is_ok(),
            "round {round}: UDP 862 is bound, so the userspace reflector was started"
        );
        delete_and_check_absent(&pair);
    }
    let log = stop_and_log(daemon);
    assert!(
        log.contains(ABSENT_LOG) && log.contains("vr") && !log.contains("falling back"),
        "the absent interface is logged, and no fallback:\n{log}"
    );
}

#[test]
fn daemon_packetd_native_mode_waits_for_a_missing_interface() {
    require_root("daemon_packetd_native_mode_waits_for_a_missing_interface");
    let pair = Pair::without_link("dln", 20);
    let dir = tempfile::tempdir().unwrap();
    // A missing interface is not a startup error in native mode either; a mistyped one stays
    // visible in the log and the metrics.
    let (daemon, first) = spawn_cfg(&pair, &dir, "native", CAPS, r#"["vr", "vrtypo"]"#);
    let typo = "rookery_packetd_xdp_unserved{interface=\"vrtypo\",reason=\"absent\"} 1";
    assert!(first.contains(VR_ABSENT) && first.contains(typo), "{first}");
    let mut seq = 0;
    create_and_check_answered(&pair, &mut seq, VR_NATIVE, 0);
    let m = metrics().unwrap();
    assert!(m.contains(typo), "{m}");
    // Renamed away from "vr", the interface is no longer served and the program comes off it;
    // renamed back, it is served again.
    let rename = |from: &str, to: &str| {
        for args in [
            vec!["ip", "link", "set", from, "down"],
            vec!["ip", "link", "set", from, "name", to],
            vec!["ip", "link", "set", to, "up"],
        ] {
            netns::in_ns(&pair.refl, &args);
        }
    };
    let link_show = |name: &str| {
        let out = Command::new("ip")
            .args(["-n", &pair.refl, "link", "show", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let show = link_show("vr");
    assert!(show.contains("prog/xdp"), "no program on vr:\n{show}");
    rename("vr", "vrold");
    Pair::enter(&pair.refl);
    wait_metrics("showed the renamed vr as absent", |m| {
        m.contains(VR_ABSENT) && !m.contains("rookery_packetd_xdp_attached{interface=\"vr\"")
    });
    let show = link_show("vrold");
    assert!(
        !show.contains("prog/xdp"),
        "the program is still on vrold:\n{show}"
    );
    rename("vrold", "vr");
    let _peer = peer_pass(&pair);
    let sock = UdpSocket::bind(SocketAddr::new(pair.v4(2), 0)).unwrap();
    let ms = ms_until_answered(&sock, SocketAddr::new(pair.v4(1), 862), true, &mut seq);
    assert!(ms < 2000, "answered {ms} ms after vr was renamed back");
    Pair::enter(&pair.refl);
    wait_metrics("showed vr attached again", |m| m.contains(VR_NATIVE));
    let log = stop_and_log(daemon);
    assert!(
        log.lines()
            .any(|l| l.contains(ABSENT_LOG) && l.contains("vrtypo")),
        "the mistyped interface is named in a warning:\n{log}"
    );
}

#[test]
fn daemon_packetd_userspace_mode_serves_an_interface_created_after_start() {
    require_root("daemon_packetd_userspace_mode_serves_an_interface_created_after_start");
    let pair = Pair::without_link("dlu", 21);
    let dir = tempfile::tempdir().unwrap();
    let (daemon, first) = spawn(&pair, &dir, "userspace");
    assert!(first.contains(VR_ABSENT), "{first}");
    let want = "rookery_packetd_xdp_attached{interface=\"vr\",mode=\"userspace\"} 1";
    let mut seq = 0;
    let mut count = 0;
    // The re-created vr has another interface index: it must be answered all the same.
    for _ in 0..2 {
        count = create_and_check_answered(&pair, &mut seq, want, count);
        delete_and_check_absent(&pair);
    }
    drop(daemon);
}
