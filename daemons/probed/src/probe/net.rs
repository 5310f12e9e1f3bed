//! Shared network steps of the probes: timed name resolution and TCP connect, and the mapping
//! of OS errors to [`Failure`] reasons.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Failure, Phase, Run};
use crate::config::IpVersion;

/// A byte stream a probe talks over: plain TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Maps an I/O error to a probe failure reason.
pub fn io_failure(err: &io::Error) -> Failure {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Failure::Unreachable,
        io::ErrorKind::TimedOut => Failure::Timeout(None),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Failure::Reset,
        io::ErrorKind::PermissionDenied => Failure::Permission(err.to_string()),
        _ => Failure::Io(err.to_string()),
    }
}

/// Maps a resolver (getaddrinfo) error. The standard library only passes the text of
/// `gai_strerror`, so the two outcomes operators care about are told apart by it:
/// `EAI_NONAME` is "Name or service not known", `EAI_NODATA` "No address associated …".
fn resolve_failure(err: &io::Error) -> Failure {
    let text = err.to_string();
    if text.contains("Name or service not known") || text.contains("No address associated") {
        Failure::Nxdomain
    } else {
        Failure::Resolve(text)
    }
}

fn family_ok(ip: IpAddr, want: IpVersion) -> bool {
    match want {
        IpVersion::Any => true,
        IpVersion::Ip4 => ip.is_ipv4(),
        IpVersion::Ip6 => ip.is_ipv6(),
    }
}

/// Resolves `host` (an IP literal needs no lookup) as the `resolve` phase and records the
/// chosen address in the run's facts.
pub async fn resolve(
    run: &mut Run,
    host: &str,
    port: u16,
    want: IpVersion,
) -> Result<SocketAddr, Failure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !family_ok(ip, want) {
            return Err(Failure::Resolve(format!(
                "{ip} is not of the wanted address family"
            )));
        }
        run.add(Phase::Resolve, std::time::Duration::ZERO);
        run.facts.ip = Some(ip);
        return Ok(SocketAddr::new(ip, port));
    }
    let host = host.to_owned();
    let addr = run
        .phase(Phase::Resolve, async move {
            let addrs = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| resolve_failure(&e))?;
            let mut addrs = addrs.filter(|a| family_ok(a.ip(), want));
            addrs.next().ok_or_else(|| {
                Failure::Resolve(format!("{host} has no address of the wanted family"))
            })
        })
        .await?;
    run.facts.ip = Some(addr.ip());
    Ok(addr)
}

/// Connects to `addr` as the `connect` phase.
pub async fn connect(run: &mut Run, addr: SocketAddr) -> Result<TcpStream, Failure> {
    run.phase(Phase::Connect, async move {
        let s = TcpStream::connect(addr).await.map_err(|e| io_failure(&e))?;
        let _ = s.set_nodelay(true);
        Ok(s)
    })
    .await
}
