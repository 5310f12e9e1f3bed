//! Privileged: STAMP sessions through the real `rookery-packetd` binary's gRPC service. The
//! daemon runs (as uid 65534 with the unit's capabilities) in the sender namespace of a veth
//! pair whose other end carries packetd's XDP reflector (loaded by this test). StartSession
//! and WatchSession follow a session to "done" with zero loss; GetSession and ListSessions
//! return it; requests over `[sessions]` limits are refused naming the limit; StopSession
//! stops a long session; after SIGTERM the sessions are in the SQLite store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::io::Read;
use std::time::{Duration, Instant};

use rookery_common::proto::packet_testing_client::PacketTestingClient;
use rookery_common::proto::{
    GetSessionRequest, ListSessionsRequest, SessionSpec, StartSessionRequest, StopSessionRequest,
    WatchSessionRequest,
};
use rookery_packetd::config::SessionsSection;
use rookery_packetd::sessions::{Sessions, State};
use rookery_packetd::xdp::{ModePolicy, Reflector};
use tokio_util::sync::CancellationToken;

mod netns;
use netns::{Pair, peer_pass, require_root};

/// GET /metrics of the daemon (this thread is in its namespace); empty on any failure.
fn metrics() -> String {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:9131".parse().unwrap(),
        Duration::from_millis(200),
    ) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn spec(dest: &str, rate_pps: u32, count: u64) -> SessionSpec {
    SessionSpec {
        destination: dest.to_owned(),
        port: 862,
        dscp: 46,
        packet_size: 100,
        rate_pps,
        count,
        ssid: 3,
        ..SessionSpec::default()
    }
}

#[test]
fn grpc_sessions_packetd_start_watch_get_list_stop_store() {
    require_root("grpc_sessions_packetd_start_watch_get_list_stop_store");
    let pair = Pair::new("grpc", 13);
    Pair::enter(&pair.refl);
    let mut refl = Reflector::load(862, 2000).unwrap();
    refl.set_allowlist(&pair.prefixes()).unwrap();
    refl.attach("vr", ModePolicy::Native).unwrap();
    let _peer = peer_pass(&pair);

    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, sock) = netns::spawn_packetd(
        &pair.send,
        dir.path(),
        "[sessions]\nmax-pps = 2000\nmax-concurrent = 1\n",
        "127.0.0.1:9131",
    );
    let state = dir.path().join("state");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dest = pair.v4(1).to_string();
    let (done_id, stopped_id) = rt.block_on(async {
        let ch = rookery_common::grpc::connect(&sock).await.unwrap();
        let mut c = PacketTestingClient::new(ch);

        let s = c
            .start_session(StartSessionRequest {
                spec: Some(spec(&dest, 1000, 600)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.state, "running");
        let mut stream = c
            .watch_session(WatchSessionRequest { id: s.id })
            .await
            .unwrap()
            .into_inner();
        let mut updates = Vec::new();
        let watched = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(m) = stream.message().await.unwrap() {
                updates.push(m);
            }
        })
        .await;
        assert!(watched.is_ok(), "WatchSession did not end within 15 s");
        assert!(
            updates.len() >= 3,
            "live progress expected, got {} messages",
            updates.len()
        );
        let sent: Vec<u64> = updates
            .iter()
            .map(|u| u.stats.as_ref().unwrap().sent)
            .collect();
        assert!(
            sent.windows(2).all(|w| w[0] <= w[1]),
            "progress goes forward: {sent:?}"
        );
        let last = updates.last().unwrap();
        assert_eq!(last.state, "done", "{last:?}");
        let st = last.stats.as_ref().unwrap();
        assert_eq!(
            (st.sent, st.received, st.lost, st.duplicates),
            (600, 600, 0, 0),
            "{st:?}"
        );
        assert!(st.rtt_p50_ns > 0 && st.rtt_p99_ns < 20_000_000, "{st:?}");
        // 600 packets at 1000/s: the achieved rate is reported, from a UDP socket.
        assert!(
            (900.0..=1100.0).contains(&st.achieved_pps) && st.backend == "udp-socket",
            "{st:?}"
        );
        // (100 + 8 + 20) bytes = 1024 bits per IP packet.
        assert!(
            (1020.0..=1028.0).contains(&(st.achieved_bps as f64 / st.achieved_pps)),
            "{st:?}"
        );
        assert!(last.finished_unix_ms >= last.started_unix_ms);

        let got = c
            .get_session(GetSessionRequest { id: s.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&got, last);
        // Watching a finished session yields its final state once, then ends.
        let mut again = c
            .watch_session(WatchSessionRequest { id: s.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.message().await.unwrap().as_ref(), Some(last));
        assert_eq!(again.message().await.unwrap(), None);

        // Limits: over max-pps, no count/duration, a bad address.
        for (bad, needle) in [
            (spec(&dest, 5000, 10), "max-pps"),
            (spec(&dest, 100, 0), "count or duration"),
            (spec("not-an-ip", 100, 10), "spec.destination"),
        ] {
            let e = c
                .start_session(StartSessionRequest { spec: Some(bad) })
                .await
                .expect_err(needle);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(needle), "{e:?}");
        }
        // max-concurrent = 1: a second session while one runs is refused.
        let long = c
            .start_session(StartSessionRequest {
                spec: Some(spec(&dest, 1000, 1_000_000)),
            })
            .await
            .unwrap()
            .into_inner();
        let e = c
            .start_session(StartSessionRequest {
                spec: Some(spec(&dest, 10, 10)),
            })
            .await
            .expect_err("over max-concurrent");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The running session shows in the metrics (refreshed every second).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if metrics().contains("rookery_packetd_sessions_running 1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sessions_running never became 1:\n{}",
                metrics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let stopped = c
            .stop_session(StopSessionRequest { id: long.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stopped.state, "stopped", "{stopped:?}");
        let st = stopped.stats.unwrap();
        assert!(st.sent > 100 && st.sent < 1_000_000, "{st:?}");

        let list = c
            .list_sessions(ListSessionsRequest { limit: 10 })
            .await
            .unwrap()
            .into_inner()
            .sessions;
        let ids: Vec<u64> = list.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![long.id, s.id], "newest first");
        let e = c
            .get_session(GetSessionRequest { id: 999 })
            .await
            .expect_err("unknown id");
        assert_eq!(e.code(), tonic::Code::NotFound);
        (s.id, long.id)
    });

    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "rookery-packetd did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The results outlive the daemon.
    let store =
        Sessions::open(&state, SessionsSection::default(), CancellationToken::new()).unwrap();
    let done = store.get(done_id).unwrap();
    assert_eq!(
        (done.state, done.stats.received, done.stats.lost),
        (State::Done, 600, 0)
    );
    assert_eq!(done.spec.dscp, 46);
    assert_eq!(store.get(stopped_id).unwrap().state, State::Stopped);
}
