//! Privileged: raw rate generator sessions through the real `rookery-packetd` binary's gRPC
//! service, across a veth pair between two namespaces this test creates. The daemon (as uid
//! 65534 with the unit's capabilities) runs in the sender namespace; a UDP socket in the
//! other namespace receives. Checked: a count session at 5000 packets/s delivers every packet,
//! numbered 0.. in order, with the requested size and DSCP, paced (its achieved rate never
//! more than 5 % over the asked one; whether it reaches the rate on a loaded machine is
//! `make bench`'s question), from the requested source address; a bit-rate session for a
//! duration sends exactly what that duration and rate allow, and no faster; requests over
//! `[sessions].max-pps` or with a bad port or size are refused with INVALID_ARGUMENT naming
//! the field or limit; the sessions are stored as raw.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use rookery_common::proto::packet_testing_client::PacketTestingClient;
use rookery_common::proto::{
    ListSessionsRequest, SessionKind, SessionSpec, StartSessionRequest, WatchSessionRequest,
};

mod netns;
use netns::{Pair, require_root};

const PORT: u16 = 9000;

fn raw(dest: &str, port: u32) -> SessionSpec {
    SessionSpec {
        kind: SessionKind::Raw.into(),
        destination: dest.to_owned(),
        port,
        dscp: 46,
        ..SessionSpec::default()
    }
}

/// One received datagram: payload, the IPv4 TOS it arrived with and its source.
struct Got {
    payload: Vec<u8>,
    tos: u8,
    from: Option<std::net::SocketAddrV4>,
}

/// Receives on `sock` until `n` datagrams arrived or nothing came for 3 s.
fn receive(sock: &std::net::UdpSocket, n: usize) -> Vec<Got> {
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0_u8; 2048];
    let mut cmsg = nix::cmsg_space!(u8);
    while out.len() < n {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<nix::sys::socket::SockaddrIn>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) else {
            break;
        };
        let mut tos = 0;
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::Ipv4Tos(t) = c {
                tos = t;
            }
        }
        let len = msg.bytes;
        let from = msg.address.map(std::net::SocketAddrV4::from);
        out.push(Got {
            payload: buf[..len].to_vec(),
            tos,
            from,
        });
    }
    out
}

#[test]
fn generator_packetd_rate_count_dscp_and_limits() {
    require_root("generator_packetd_rate_count_dscp_and_limits");
    let pair = Pair::new("gen", 14);
    // The receiver lives in the reflector namespace (sockets keep the namespace they were
    // created in); the receiving thread can then run anywhere.
    Pair::enter(&pair.refl);
    let rx = std::net::UdpSocket::bind((pair.v4(1), PORT)).unwrap();
    setsockopt(&rx, sockopt::IpRecvTos, &true).unwrap();
    let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(8 << 20);

    let dir = tempfile::tempdir().unwrap();
    let (_daemon, sock) = netns::spawn_packetd(
        &pair.send,
        dir.path(),
        "[sessions]\nmax-pps = 20000\n",
        "127.0.0.1:9132",
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dest = pair.v4(1).to_string();
    rt.block_on(async {
        let ch = rookery_common::grpc::connect(&sock).await.unwrap();
        let mut c = PacketTestingClient::new(ch);

        // 1. A count session: 10,000 packets at 5000/s, default size (18 bytes: 60-byte frames).
        let rx1 = rx.try_clone().unwrap();
        let reader = std::thread::spawn(move || receive(&rx1, 10_000));
        // The sender side has .2 and a second address, .3: the session sends from .3.
        netns::in_ns(
            &pair.send,
            &["ip", "addr", "add", "10.77.14.3/24", "dev", "vs"],
        );
        let mut spec = raw(&dest, u32::from(PORT));
        spec.rate_pps = 5000;
        spec.count = 10_000;
        spec.source = "10.77.14.3".to_owned();
        let s = c
            .start_session(StartSessionRequest { spec: Some(spec) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.spec.as_ref().unwrap().packet_size, 18);
        let mut stream = c
            .watch_session(WatchSessionRequest { id: s.id })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        let watched = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(m) = stream.message().await.unwrap() {
                last = Some(m);
            }
        })
        .await;
        assert!(watched.is_ok(), "the session did not end within 20 s");
        let last = last.unwrap();
        assert_eq!(last.state, "done", "{last:?}");
        assert_eq!(
            last.spec.as_ref().unwrap().kind,
            i32::from(SessionKind::Raw)
        );
        let st = last.stats.clone().unwrap();
        assert_eq!((st.sent, st.send_errors), (10_000, 0), "{st:?}");
        // The unit grants CAP_NET_RAW: the veth takes AF_XDP (afxdp_generator_packetd.rs).
        assert_eq!(st.backend, "af-xdp", "{st:?}");
        // Paced, never faster than asked. (Whether it reaches the rate is a matter of CPU:
        // `make bench` measures that; a loaded test machine may starve the sender.)
        assert!(
            (500.0..=5250.0).contains(&st.achieved_pps),
            "achieved {} packets/s for 5000 asked",
            st.achieved_pps
        );
        // (18 + 8 + 20) bytes = 368 bits per IP packet.
        let per_packet = st.achieved_bps as f64 / st.achieved_pps;
        assert!((367.0..=369.0).contains(&per_packet), "{st:?}");
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 10_000, "every packet crosses the veth");
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.payload.len(), 18);
            assert_eq!(g.payload[..8], (i as u64).to_be_bytes(), "packet {i}");
            assert_eq!(g.tos, 46 << 2, "DSCP 46 on packet {i}");
            assert_eq!(
                g.from.map(|a| a.ip().to_string()).as_deref(),
                Some("10.77.14.3"),
                "source of packet {i}"
            );
        }

        // 2. A bit-rate session for a duration: 1 Mbit/s of 128-byte IP packets for 1.5 s.
        let rx2 = rx.try_clone().unwrap();
        let reader = std::thread::spawn(move || receive(&rx2, 100_000));
        let mut spec = raw(&dest, u32::from(PORT));
        spec.rate_bps = 1_000_000;
        spec.packet_size = 100;
        spec.duration_ms = 1500;
        let s = c
            .start_session(StartSessionRequest { spec: Some(spec) })
            .await
            .unwrap()
            .into_inner();
        // 1,000,000 / 1024 bits = 976 packets/s, for 1.5 s = 1464 packets.
        assert_eq!(s.spec.as_ref().unwrap().rate_pps, 976);
        let t = Instant::now();
        let done = loop {
            let g = c
                .get_session(rookery_common::proto::GetSessionRequest { id: s.id })
                .await
                .unwrap()
                .into_inner();
            if g.state != "running" {
                break g;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "still running: {g:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let st = done.stats.unwrap();
        assert_eq!((done.state.as_str(), st.sent), ("done", 1464), "{st:?}");
        assert!(
            (100_000..=1_050_000).contains(&st.achieved_bps),
            "achieved {} bit/s for 1,000,000 asked",
            st.achieved_bps
        );
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 1464);
        assert!(got.iter().all(|g| g.payload.len() == 100));

        // 3. Limits and bad fields are refused, naming what was wrong.
        let mut over = raw(&dest, u32::from(PORT));
        over.rate_pps = 50_000;
        over.count = 10;
        let mut over_bps = raw(&dest, u32::from(PORT));
        over_bps.rate_bps = 1_000_000_000;
        over_bps.count = 10;
        let mut no_port = raw(&dest, 0);
        no_port.rate_pps = 10;
        no_port.count = 10;
        let mut tiny = raw(&dest, u32::from(PORT));
        tiny.rate_pps = 10;
        tiny.count = 10;
        tiny.packet_size = 4;
        let mut bad_kind = raw(&dest, u32::from(PORT));
        bad_kind.kind = 7;
        for (bad, needle) in [
            (
                over,
                "rate_pps 50000 must be 1 to 20000 ([sessions].max-pps)",
            ),
            (over_bps, "[sessions].max-pps"),
            (no_port, "spec.port is required"),
            (
                tiny,
                "packet_size 4 must be 8 to 8972 bytes for a raw session",
            ),
            (bad_kind, "spec.kind 7"),
        ] {
            let e = c
                .start_session(StartSessionRequest { spec: Some(bad) })
                .await
                .expect_err(needle);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(needle), "{needle}: {e:?}");
        }

        let list = c
            .list_sessions(ListSessionsRequest { limit: 10 })
            .await
            .unwrap()
            .into_inner()
            .sessions;
        assert_eq!(list.len(), 2);
        assert!(
            list.iter()
                .all(|s| s.spec.as_ref().unwrap().kind == i32::from(SessionKind::Raw))
        );
    });
}
