//! Listening sockets for configured addresses that may not exist yet.
//!
//! The daemons start at boot without waiting for `network-online.target` (DHCP can take
//! seconds, minutes on a cable that is plugged in later): the wildcard addresses they listen on
//! by default need no configured address, and an operator's specific address (`listen =
//! "192.0.2.10:443"`) is bound with `IP_FREEBIND`/`IPV6_FREEBIND`, so the socket exists before
//! DHCP or a static address brings the address up and starts answering as soon as it does.
//! This is what systemd's documentation recommends to servers instead of ordering after
//! `network-online.target`.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// The backlog of TCP listeners (tokio's `TcpListener::bind` uses the same).
const BACKLOG: i32 = 1024;

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_nonblocking(true)?;
    if !addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => s.set_freebind_v4(true)?,
            SocketAddr::V6(_) => s.set_freebind_v6(true)?,
        }
    }
    Ok(s)
}

/// A TCP listener on `addr` (`SO_REUSEADDR`, and `IP_FREEBIND` unless `addr` is a wildcard).
/// Must be called inside a tokio runtime.
pub fn tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    tokio::net::TcpListener::from_std(s.into())
}

/// A UDP socket bound to `addr` (`IP_FREEBIND` unless `addr` is a wildcard). Must be called
/// inside a tokio runtime.
pub fn udp(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    tokio::net::UdpSocket::from_std(udp_std(addr)?)
}

/// [`udp`] as a non-blocking std socket, for libraries that take one (quinn's endpoint).
pub fn udp_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    // An address no interface of the test machine has (TEST-NET-3, RFC 5737): binding it
    // works only thanks to IP_FREEBIND.
    #[tokio::test]
    async fn binds_an_address_that_is_not_up_yet() {
        let l = tcp("203.0.113.77:0".parse().unwrap()).unwrap();
        assert_eq!(
            l.local_addr().unwrap().ip().to_string(),
            "203.0.113.77",
            "TCP"
        );
        let u = udp("203.0.113.77:0".parse().unwrap()).unwrap();
        assert_eq!(u.local_addr().unwrap().ip().to_string(), "203.0.113.77");
        let l6 = tcp("[2001:db8::77]:0".parse().unwrap()).unwrap();
        assert_eq!(l6.local_addr().unwrap().ip().to_string(), "2001:db8::77");
    }

    #[tokio::test]
    async fn a_listener_accepts_and_a_taken_port_is_an_error() {
        let l = tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let (c, a) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        c.unwrap();
        a.unwrap();
        let err = tcp(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let u = udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = udp(u.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }
}
