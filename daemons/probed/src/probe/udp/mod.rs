//! UDP send/expect: one datagram out, one reply back that must match a regular expression
//! (DNS-less services, packetd's echo on UDP 2000). An ICMP port-unreachable answer surfaces
//! as `refused` on the connected socket.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::{Address, Failure, Phase, Prepared, Run, net};
use crate::config::Module;

/// Largest reply read: any UDP datagram fits.
const MAX_DATAGRAM: usize = 65_535;

/// The `udp` probe.
pub async fn probe(
    run: &mut Run,
    addr: &Address,
    module: &Module,
    prepared: &Prepared,
) -> Result<(), Failure> {
    let Address::HostPort { host, port } = addr else {
        return Err(Failure::Protocol("udp probes need host:port".to_owned()));
    };
    let opts = module.udp.clone().unwrap_or_default();
    let sa = net::resolve(run, host, *port, module.ip_version).await?;
    let socket = run
        .phase(Phase::Connect, async {
            let local: SocketAddr = if sa.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let s = UdpSocket::bind(local)
                .await
                .map_err(|e| net::io_failure(&e))?;
            s.connect(sa).await.map_err(|e| net::io_failure(&e))?;
            Ok(s)
        })
        .await?;
    let expect = prepared.expect.as_ref();
    run.phase(Phase::FirstByte, async {
        socket
            .send(opts.send.as_bytes())
            .await
            .map_err(|e| net::io_failure(&e))?;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| net::io_failure(&e))?;
        match expect {
            Some(re) if !re.is_match(&buf[..n]) => Err(Failure::BodyMismatch),
            _ => Ok(()),
        }
    })
    .await
}
