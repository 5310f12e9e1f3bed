//! Interface discovery and change notifications over rtnetlink, in network namespaces the
//! test creates: a veth pair between two namespaces with 10.91.N.0/24 and fd00:91:N::/64,
//! listed with kind, MAC, MTU, state, counters and addresses; link down/up, address add/remove
//! (v4 and v6) and link creation/removal each seen by a [`Watch`]. Needs root (CI runs as
//! root): a non-root run fails, naming this test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::net::IpAddr;
use std::time::Duration;

use rookery_common::netlink::{self, Change, Interface, OperState, Scope, Watch};
use rookery_common::netns::NetNs;

/// How long one expected notification may take; the kernel sends them within microseconds.
const WAIT: Duration = Duration::from_secs(5);

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "netlink_netns needs root to create network namespaces; run it as root"
    );
}

/// Namespaces `a` (veth end `va`, .1) and `b` (`vb`, .2) joined by a veth pair, both up.
fn pair(tag: &str, n: u8) -> (NetNs, NetNs) {
    require_root();
    let a = NetNs::new(&format!("{tag}-a")).unwrap();
    let b = NetNs::new(&format!("{tag}-b")).unwrap();
    a.ip(&[
        "link",
        "add",
        "va",
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "netns",
        b.name(),
    ])
    .unwrap();
    for (ns, dev, host) in [(&a, "va", 1), (&b, "vb", 2)] {
        ns.ip(&["addr", "add", &format!("10.91.{n}.{host}/24"), "dev", dev])
            .unwrap();
        ns.ip(&[
            "addr",
            "add",
            &format!("fd00:91:{n}::{host}/64"),
            "dev",
            dev,
            "nodad",
        ])
        .unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    (a, b)
}

fn find<'a>(all: &'a [Interface], name: &str) -> &'a Interface {
    all.iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no {name} in {all:#?}"))
}

#[test]
fn veth_pair_is_listed_with_addresses_state_and_counters() {
    let (a, b) = pair("list", 1);
    // One datagram from a to b: the ARP exchange and the datagram pass the veth pair.
    a.run(|| {
        let s = std::net::UdpSocket::bind("10.91.1.1:0").unwrap();
        s.send_to(b"x", "10.91.1.2:9").unwrap();
    })
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let (all_a, all_b) = loop {
        let all_a = a.run(netlink::interfaces).unwrap().unwrap();
        let all_b = b.run(netlink::interfaces).unwrap().unwrap();
        // The operational state follows the carrier a moment after `link set up`.
        let va = find(&all_a, "va");
        let settled = va.counters.unwrap().tx_packets >= 2
            && va.oper_state == OperState::Up
            && find(&all_b, "vb").oper_state == OperState::Up;
        if settled || std::time::Instant::now() > deadline {
            break (all_a, all_b);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(all_a.len(), 2, "lo and va only: {all_a:#?}");
    let lo = find(&all_a, "lo");
    assert!(lo.flags.loopback && lo.flags.up, "{lo:?}");
    assert_eq!(
        lo.addresses.first().map(|x| x.address),
        Some(IpAddr::from([127, 0, 0, 1]))
    );

    let va = find(&all_a, "va");
    let vb = find(&all_b, "vb");
    for (v, host) in [(va, 1), (vb, 2)] {
        assert_eq!(v.kind.as_deref(), Some("veth"), "{v:?}");
        assert_eq!(v.mtu, Some(1500), "{v:?}");
        assert_eq!(v.oper_state, OperState::Up, "{v:?}");
        assert!(v.flags.up && v.flags.running && v.flags.lower_up, "{v:?}");
        assert!(
            !v.flags.loopback && v.flags.broadcast && v.flags.multicast,
            "{v:?}"
        );
        let mac = v.mac.as_deref().unwrap();
        assert_eq!(mac.len(), 17, "{mac}");
        assert!(
            mac.bytes().all(|c| c == b':' || c.is_ascii_hexdigit()),
            "{mac}"
        );
        // The v4 address first, then the global v6, then the kernel's fe80:: one.
        let v4 = &v.addresses[0];
        assert_eq!(v4.address, IpAddr::from([10, 91, 1, host]), "{v:?}");
        assert_eq!((v4.prefix_len, v4.scope), (24, Scope::Global), "{v:?}");
        let v6: IpAddr = format!("fd00:91:1::{host}").parse().unwrap();
        assert!(
            v.addresses
                .iter()
                .any(|x| x.address == v6 && x.prefix_len == 64 && x.scope == Scope::Global),
            "{v:?}"
        );
        assert!(
            v.addresses
                .iter()
                .all(|x| x.address.is_ipv6() || x.address == IpAddr::from([10, 91, 1, host])),
            "{v:?}"
        );
    }
    assert_ne!(va.mac, vb.mac);
    let (ca, cb) = (va.counters.unwrap(), vb.counters.unwrap());
    assert!(ca.tx_packets >= 2 && ca.tx_bytes > ca.tx_packets, "{ca:?}");
    assert!(cb.rx_packets >= 2 && cb.rx_bytes > cb.rx_packets, "{cb:?}");
    assert_eq!((ca.tx_errors, cb.rx_errors), (0, 0));
}

/// Waits for the first change `want` accepts, naming everything seen when none comes.
async fn expect(w: &mut Watch, what: &str, want: impl Fn(&Change) -> bool) -> Change {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let c = w.next().await.unwrap();
            if want(&c) {
                return c;
            }
            seen.push(c);
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within {WAIT:?}; saw {seen:#?}"))
}

#[test]
fn watch_sees_link_state_addresses_and_links_come_and_go() {
    let (a, _b) = pair("watch", 2);
    let index = find(&a.run(netlink::interfaces).unwrap().unwrap(), "va").index;
    a.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut w = Watch::new().unwrap();

            a.ip(&["link", "set", "va", "down"]).unwrap();
            let c = expect(&mut w, "va down", |c| {
                matches!(c, Change::Link(i) if i.name == "va" && !i.flags.up)
            })
            .await;
            let Change::Link(i) = c else { unreachable!() };
            assert_eq!((i.index, i.oper_state), (index, OperState::Down));
            a.ip(&["link", "set", "va", "up"]).unwrap();
            expect(&mut w, "va up", |c| {
                matches!(c, Change::Link(i) if i.index == index && i.flags.up)
            })
            .await;

            for (addr, len) in [("10.91.20.5", 24_u8), ("fd00:91:20::5", 64)] {
                let ip: IpAddr = addr.parse().unwrap();
                let cidr = format!("{addr}/{len}");
                a.ip(&["addr", "add", &cidr, "dev", "va", "nodad"]).unwrap();
                expect(&mut w, &format!("{cidr} added"), |c| {
                    matches!(c, Change::AddressAdded { index: x, address }
                        if *x == index && address.address == ip && address.prefix_len == len)
                })
                .await;
                a.ip(&["addr", "del", &cidr, "dev", "va"]).unwrap();
                expect(&mut w, &format!("{cidr} removed"), |c| {
                    matches!(c, Change::AddressRemoved { index: x, address }
                        if *x == index && address.address == ip && address.prefix_len == len)
                })
                .await;
            }

            a.ip(&["link", "add", "vx", "type", "veth", "peer", "name", "vy"])
                .unwrap();
            let c = expect(&mut w, "vx created", |c| {
                matches!(c, Change::Link(i) if i.name == "vx")
            })
            .await;
            let Change::Link(vx) = c else { unreachable!() };
            assert_eq!(vx.kind.as_deref(), Some("veth"), "{vx:?}");
            assert!(vx.addresses.is_empty(), "{vx:?}");
            a.ip(&["link", "del", "vx"]).unwrap();
            expect(&mut w, "vx removed", |c| {
                matches!(c, Change::LinkRemoved { index: x, name } if *x == vx.index && name == "vx")
            })
            .await;
        });
    })
    .unwrap();
}
