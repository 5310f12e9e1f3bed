//! Accuracy and failure reasons on a real path: network namespaces created by the test,
//! joined by veth pairs (10.201.0.0/24, fd00:201::/64; a routed chain for path traces). 20 ms
//! added delay must be reported within ±2 ms, 10 % loss exactly as dropped and within a
//! statistically sound band, an absent host or network with a specific reason, and a path
//! trace must name each hop. Delay and loss come from `tc netem` where the kernel has it
//! (those tests are ignored here: this CI kernel lacks sch_netem) and otherwise from a
//! userspace echo responder in the far namespace. The netem tests run inside the appliance
//! VM, whose kernel has sch_netem (`tests/qemu/run.sh`, scenario `hosttests`). Needs root (CI
//! runs as root): a non-root run fails, naming this test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::process::Command;
use std::time::Duration;

use rookery_probed::probe::{Failure, Outcome};

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces `a` and `b` joined by a veth pair; removed on drop.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new(tag: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "probe_netem_netns needs root to create network namespaces"
        );
        let id = std::process::id();
        let pair = Self {
            a: format!("probed-{tag}-a-{id}"),
            b: format!("probed-{tag}-b-{id}"),
        };
        let (a, b) = (pair.a.as_str(), pair.b.as_str());
        for ns in [a, b] {
            sh(&["ip", "netns", "add", ns]);
            // No duplicate address detection: addresses are usable at once.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad && echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad",
            ]);
        }
        const MAC_A: &str = "02:00:00:00:01:01";
        const MAC_B: &str = "02:00:00:00:01:02";
        sh(&[
            "ip", "-n", a, "link", "add", "va", "address", MAC_A, "type", "veth", "peer", "name",
            "vb", "address", MAC_B, "netns", b,
        ]);
        for (ns, dev, v4, v6) in [
            (a, "va", "10.201.0.1/24", "fd00:201::1/64"),
            (b, "vb", "10.201.0.2/24", "fd00:201::2/64"),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            sh(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // Static neighbours: no ARP or neighbour discovery inside the measurements.
        for (ns, dev, peer, mac) in [
            (a, "va", "10.201.0.2", MAC_B),
            (a, "va", "fd00:201::2", MAC_B),
            (b, "vb", "10.201.0.1", MAC_A),
            (b, "vb", "fd00:201::1", MAC_A),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                peer,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        pair
    }

    fn netem(&self, op: &str, spec: &[&str]) {
        let mut args = vec![
            "tc", "-n", &self.a, "qdisc", op, "dev", "va", "root", "netem",
        ];
        args.extend_from_slice(spec);
        sh(&args);
    }

    /// Runs one probe per address with `module` from inside namespace `a` (a thread that
    /// joins it).
    fn probe_in_a(&self, module: &str, addresses: &[&str]) -> Vec<Outcome> {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.a)).unwrap();
        let module = module.to_owned();
        let addresses: Vec<String> = addresses.iter().map(|s| (*s).to_owned()).collect();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut out = Vec::new();
                for a in &addresses {
                    out.push(support::probe(&module, a).await);
                }
                out
            })
        })
        .join()
        .unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

const PING: &str = "prober = \"icmp\"\ntimeout = \"3s\"\n[icmp]\ncount = 20\ninterval = \"20ms\"\nsocket = \"raw\"\n";

#[test]
#[ignore = "needs sch_netem (absent from this CI kernel); tests/qemu runs it in the appliance VM"]
fn netem_delay_of_20ms_is_reported_within_2ms() {
    let pair = Pair::new("delay");
    let addrs = ["10.201.0.2", "fd00:201::2"];
    // The added delay is what the prober reports with netem minus what it reports without:
    // the path's own RTT is tens of microseconds on hardware but about a millisecond inside
    // the QEMU (TCG) appliance VM where this test runs (tests/qemu, hosttests). Each
    // measurement follows one throw-away probe: under TCG the first passes through the
    // network and netem code are emulated slowly (first pings seen at 34-42 ms, later ones at
    // 21-26 ms). Under TCG on a loaded machine the added median still came out at 23.1-23.6
    // ms (docs/image.md): the tolerance is the and stays.
    pair.probe_in_a(PING, &addrs);
    let base = pair.probe_in_a(PING, &addrs);
    pair.netem("add", &["delay", "20ms"]);
    pair.probe_in_a(PING, &addrs);
    let outs = pair.probe_in_a(PING, &addrs);
    for ((b, out), dest) in base.iter().zip(&outs).zip(addrs) {
        assert!(b.success, "{dest} baseline: {b:?}");
        assert!(out.success, "{dest}: {out:?}");
        let (bi, icmp) = (
            b.facts.icmp.as_ref().unwrap(),
            out.facts.icmp.as_ref().unwrap(),
        );
        assert_eq!(icmp.received, 20, "{dest}: {icmp:?}");
        let (bmin, bavg, _, _) = bi.stats().unwrap();
        let bmed = bi.median().unwrap();
        let (min, avg, max, _) = icmp.stats().unwrap();
        let med = icmp.median().unwrap();
        eprintln!(
            "netem delay 20ms: {dest} added median {:.5} s, added mean {:.5} s (rtt min {min:.5} median {med:.5} avg {avg:.5} max {max:.5} s; baseline min {bmin:.5} median {bmed:.5} avg {bavg:.5} s)",
            med - bmed,
            avg - bavg
        );
        // The reported added delay (median): 20 ms within 2 ms.
        assert!(
            (med - bmed - 0.020).abs() <= 0.002,
            "{dest}: added median {} s: {icmp:?} baseline {bi:?}",
            med - bmed
        );
        // netem never delivers early.
        assert!(min >= 0.0195, "{dest}: min {min} s: {icmp:?}");
        // The mean also counts scheduling hiccups of an emulated guest (single pings at
        // 40 ms seen), hence 4 ms.
        assert!(
            (avg - bavg - 0.020).abs() <= 0.004,
            "{dest}: added mean {} s: {icmp:?} baseline {bi:?}",
            avg - bavg
        );
    }
}

#[test]
#[ignore = "needs sch_netem (absent from this CI kernel); tests/qemu runs it in the appliance VM"]
fn netem_loss_of_10_percent_is_reported_within_a_sound_band() {
    let pair = Pair::new("loss");
    pair.netem("add", &["loss", "10%"]);
    let m = "prober = \"icmp\"\ntimeout = \"2s\"\n[icmp]\ncount = 100\ninterval = \"5ms\"\nsocket = \"raw\"\n";
    let outs = pair.probe_in_a(m, &["10.201.0.2", "10.201.0.2", "10.201.0.2"]);
    let (sent, received) = outs.iter().fold((0, 0), |(s, r), o| {
        let i = o.facts.icmp.as_ref().unwrap();
        (s + i.sent, r + i.received)
    });
    assert_eq!(sent, 300);
    let loss = 1.0 - f64::from(received) / f64::from(sent);
    eprintln!("netem loss 10%: {received} of {sent} answered, loss {loss:.3}");
    // Binomial(300, 0.1): sigma = 1.7 %; [4 %, 17 %] is more than 3.5 sigma on each side.
    assert!((0.04..=0.17).contains(&loss), "loss {loss}: {outs:?}");
    for o in &outs {
        let l = o.facts.icmp.as_ref().unwrap().loss();
        assert!(l > 0.0 && l < 0.5, "per-probe loss {l}");
    }
}

#[test]
fn absent_hosts_and_networks_fail_with_specific_reasons_within_the_timeout() {
    let pair = Pair::new("absent");
    let m = "prober = \"icmp\"\ntimeout = \"500ms\"\n[icmp]\ncount = 2\ninterval = \"50ms\"\nsocket = \"raw\"\n";
    let t0 = std::time::Instant::now();
    let outs = pair.probe_in_a(m, &["10.201.0.99", "10.99.0.1"]);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(outs[0].failure, Some(Failure::PacketLoss), "{:?}", outs[0]);
    assert_eq!(outs[0].facts.icmp.as_ref().unwrap().sent, 2);
    assert_eq!(outs[1].failure, Some(Failure::Unreachable), "{:?}", outs[1]);

    let tcp = pair.probe_in_a(
        "prober = \"tcp\"\ntimeout = \"500ms\"\n",
        &["10.201.0.2:9", "10.99.0.1:80"],
    );
    assert_eq!(tcp[0].failure, Some(Failure::Refused), "{:?}", tcp[0]);
    assert_eq!(tcp[1].failure, Some(Failure::Unreachable), "{:?}", tcp[1]);
}

/// Runs the future made by `f` on a thread inside network namespace `ns`.
fn in_ns<T, F, Fut>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .unwrap()
}

/// Namespaces a — b — c, with b routing between 10.203.0.0/24 (fd00:203::/64) and
/// 10.204.0.0/24 (fd00:204::/64); removed on drop.
struct Chain(Vec<String>);

impl Chain {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "probe_netem_netns needs root to create network namespaces"
        );
        let id = std::process::id();
        let names: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|n| format!("probed-trace-{n}-{id}"))
            .collect();
        let chain = Self(names.clone());
        let (a, b, c) = (names[0].as_str(), names[1].as_str(), names[2].as_str());
        for ns in [a, b, c] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            // No duplicate address detection: link-local addresses are usable at once, so
            // neighbour discovery and ICMPv6 errors work from the first packet.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad && echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad",
            ]);
        }
        sh(&[
            "ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b,
        ]);
        sh(&[
            "ip", "-n", b, "link", "add", "vc", "type", "veth", "peer", "name", "vd", "netns", c,
        ]);
        for (ns, dev, v4, v6) in [
            (a, "va", "10.203.0.1/24", "fd00:203::1/64"),
            (b, "vb", "10.203.0.2/24", "fd00:203::2/64"),
            (b, "vc", "10.204.0.1/24", "fd00:204::1/64"),
            (c, "vd", "10.204.0.2/24", "fd00:204::2/64"),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            sh(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sh(&[
            "ip",
            "-n",
            a,
            "route",
            "add",
            "default",
            "via",
            "10.203.0.2",
        ]);
        sh(&[
            "ip",
            "-n",
            a,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:203::2",
        ]);
        sh(&[
            "ip",
            "-n",
            c,
            "route",
            "add",
            "default",
            "via",
            "10.204.0.1",
        ]);
        sh(&[
            "ip",
            "-n",
            c,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:204::1",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            b,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        ]);
        chain
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn path_trace_names_each_hop_with_loss_and_latency_v4_and_v6() {
    use std::net::IpAddr;
    let chain = Chain::new();
    for (dest, router) in [("10.204.0.2", "10.203.0.2"), ("fd00:204::2", "fd00:203::2")] {
        let dest_ip: IpAddr = dest.parse().unwrap();
        // In brand-new namespaces the router answers the very first IPv6 packets late (about
        // a second, while neighbour discovery settles); one throw-away trace warms it up, as
        // any long-running network is.
        in_ns(&chain.0[0], move || async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            let _ = rookery_probed::probe::trace::trace(
                dest_ip,
                2,
                1,
                Duration::from_millis(1500),
                deadline,
            )
            .await;
        });
        let t0 = std::time::Instant::now();
        let hops = in_ns(&chain.0[0], move || async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            rookery_probed::probe::trace::trace(dest_ip, 8, 2, Duration::from_millis(500), deadline)
                .await
                .unwrap()
        });
        assert!(t0.elapsed() < Duration::from_secs(6));
        assert_eq!(hops.len(), 2, "{dest}: {hops:?}");
        assert_eq!(
            hops[0].addr,
            Some(router.parse().unwrap()),
            "{dest}: {hops:?}"
        );
        assert_eq!(hops[1].addr, Some(dest_ip), "{dest}: {hops:?}");
        for h in &hops {
            assert_eq!((h.sent, h.received), (2, 2), "{dest}: {hops:?}");
            assert!(h.avg_ms().unwrap() < 100.0, "{dest}: {hops:?}");
        }
        let summary = rookery_probed::probe::trace::summary(&hops);
        assert!(summary.starts_with(&format!("1 {router} 0% ")), "{summary}");
    }

    // Beyond the last router nothing answers: the hop shows 100% loss and the trace stops
    // at its bound.
    let hops = in_ns(&chain.0[0], || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        rookery_probed::probe::trace::trace(
            "10.204.0.99".parse().unwrap(),
            3,
            1,
            Duration::from_millis(200),
            deadline,
        )
        .await
        .unwrap()
    });
    assert_eq!(
        hops[0].addr,
        Some("10.203.0.2".parse().unwrap()),
        "{hops:?}"
    );
    assert!(hops.len() <= 3, "{hops:?}");
    assert!(
        hops[1..]
            .iter()
            .all(|h| h.received == 0 || h.addr.is_some()),
        "{hops:?}"
    );
}

/// An ICMP echo responder in userspace, standing in for `tc netem` where the kernel lacks
/// it: in namespace `ns` (whose kernel is told to ignore echo requests) it answers each
/// request after `delay`, dropping every request for which `lose` says so. Returns the
/// stop flag and a handle yielding (requests seen, requests dropped).
fn slow_responder(
    ns: &str,
    v6: bool,
    delay: Duration,
    lose: fn(u64) -> bool,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<(u64, u64)>,
) {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::sync::atomic::Ordering;
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let sock = Socket::new(domain, Type::RAW, Some(proto)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let out = sock.try_clone().unwrap();
        let (tx, rx) =
            std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>, socket2::SockAddr)>();
        // Replies leave in order after the delay (constant delay keeps the queue FIFO).
        let sender = std::thread::spawn(move || {
            for (due, reply, to) in rx {
                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                let _ = out.send_to(&reply, &to);
            }
        });
        ready_tx.send(()).unwrap();
        let (mut seen, mut dropped) = (0u64, 0u64);
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 2048];
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        while !stop2.load(Ordering::SeqCst) && std::time::Instant::now() < give_up {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            // SAFETY: recv_from initialised the first `n` bytes of `buf`.
            let pkt = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
            let icmp = if v6 {
                pkt
            } else {
                &pkt[usize::from(pkt[0] & 0x0f) * 4..]
            };
            let request = if v6 { 128 } else { 8 };
            if icmp.len() < 8 || icmp[0] != request {
                continue;
            }
            seen += 1;
            if lose(seen) {
                dropped += 1;
                continue;
            }
            let mut reply = icmp.to_vec();
            reply[0] = if v6 { 129 } else { 0 };
            reply[2] = 0;
            reply[3] = 0;
            if !v6 {
                let c = rookery_probed::probe::icmp::checksum(&reply);
                reply[2..4].copy_from_slice(&c.to_be_bytes());
            }
            tx.send((std::time::Instant::now() + delay, reply, from))
                .unwrap();
        }
        drop(tx);
        sender.join().unwrap();
        (seen, dropped)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    (stop, handle)
}

/// A veth pair whose far side does not answer pings itself (a userspace responder does).
fn quiet_pair(tag: &str) -> Pair {
    let pair = Pair::new(tag);
    sh(&[
        "ip",
        "netns",
        "exec",
        &pair.b,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all && echo 1 > /proc/sys/net/ipv6/icmp/echo_ignore_all",
    ]);
    pair
}

#[test]
fn added_delay_of_20ms_is_reported_within_2ms_v4_and_v6() {
    let pair = quiet_pair("delay-u");
    for (v6, dest) in [(false, "10.201.0.2"), (true, "fd00:201::2")] {
        let (stop, responder) = slow_responder(&pair.b, v6, Duration::from_millis(20), |_| false);
        let out = pair.probe_in_a(PING, &[dest]).remove(0);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (seen, _) = responder.join().unwrap();
        assert!(out.success, "{dest}: {out:?}");
        let icmp = out.facts.icmp.as_ref().unwrap();
        assert_eq!((icmp.sent, icmp.received), (20, 20), "{dest}: {icmp:?}");
        assert_eq!(seen, 20, "{dest}: responder saw {seen}");
        let (min, avg, _, _) = icmp.stats().unwrap();
        let median = icmp.median().unwrap();
        assert!(
            (median - 0.020).abs() <= 0.002,
            "{dest}: median {median} s: {icmp:?}"
        );
        assert!(min >= 0.0199, "{dest}: min {min} s: {icmp:?}");
        // The mean also counts scheduling hiccups of a loaded CI machine.
        assert!(
            (avg - 0.020).abs() <= 0.004,
            "{dest}: avg {avg} s: {icmp:?}"
        );
    }
}

#[test]
fn ten_percent_loss_is_reported_exactly_and_within_a_sound_band() {
    let pair = quiet_pair("loss-u");
    // Pseudo-random 10 % loss (splitmix64 of the request number): reproducible, unbiased.
    fn lossy(n: u64) -> bool {
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).is_multiple_of(10)
    }
    let (stop, responder) = slow_responder(&pair.b, false, Duration::from_millis(1), lossy);
    let m = "prober = \"icmp\"\ntimeout = \"2s\"\n[icmp]\ncount = 100\ninterval = \"5ms\"\nsocket = \"raw\"\n";
    let outs = pair.probe_in_a(m, &["10.201.0.2", "10.201.0.2", "10.201.0.2"]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seen, dropped) = responder.join().unwrap();
    let (sent, received) = outs.iter().fold((0u64, 0u64), |(s, r), o| {
        let i = o.facts.icmp.as_ref().unwrap();
        (s + u64::from(i.sent), r + u64::from(i.received))
    });
    assert_eq!(sent, 300);
    assert_eq!(seen, 300, "every request reached the responder");
    // What the prober reports is exactly what was dropped...
    assert_eq!(sent - received, dropped, "{outs:?}");
    // ...and, for 10 % loss over 300 requests (sigma 1.7 %), inside [4 %, 17 %].
    let loss = dropped as f64 / sent as f64;
    assert!((0.04..=0.17).contains(&loss), "loss {loss}");
}
