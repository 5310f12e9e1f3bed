//! Target addresses: what each prober accepts in `targets[].address` (and `/probe?target=`).
//! Pure parsing, no I/O; checked at config validation and again before each probe.

use std::net::IpAddr;

use crate::config::Prober;

/// A parsed target address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port` (tcp, udp, tls, dns).
    HostPort {
        /// Name or IP literal (no brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// A host without port (icmp).
    Host(String),
    /// An `http://` or `https://` URL (http).
    Url(http::Uri),
}

impl Address {
    /// The host part.
    pub fn host(&self) -> &str {
        match self {
            Self::HostPort { host, .. } | Self::Host(host) => host,
            Self::Url(uri) => uri_host(uri),
        }
    }
}

/// The host of `uri` without IPv6 brackets.
pub fn uri_host(uri: &http::Uri) -> &str {
    let h = uri.host().unwrap_or("");
    h.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h)
}

/// An address a prober cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{address}\" {problem}")]
pub struct AddressError {
    /// The address as written.
    pub address: String,
    /// What is wrong, with what was expected.
    pub problem: String,
}

fn err(address: &str, problem: &str) -> AddressError {
    AddressError {
        address: address.to_owned(),
        problem: problem.to_owned(),
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && (host.parse::<IpAddr>().is_ok()
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host.to_owned(), None)),
            p => Some((host.to_owned(), Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((s.to_owned(), None));
    }
    match s.split_once(':') {
        None => Some((s.to_owned(), None)),
        Some((h, p)) => Some((h.to_owned(), Some(p.parse().ok()?))),
    }
}

/// Parses `address` for `prober`.
pub fn parse(prober: Prober, address: &str) -> Result<Address, AddressError> {
    match prober {
        Prober::Http | Prober::Http3 => {
            let uri: http::Uri = address.parse().map_err(|_| {
                err(
                    address,
                    "is not a URL (expected e.g. \"https://example.com/health\")",
                )
            })?;
            match uri.scheme_str() {
                Some("http" | "https") => {}
                _ => {
                    return Err(err(
                        address,
                        "is not an http(s) URL (expected e.g. \"https://example.com/health\")",
                    ));
                }
            }
            if !valid_host(uri_host(&uri)) {
                return Err(err(address, "has no valid host"));
            }
            Ok(Address::Url(uri))
        }
        Prober::Icmp => {
            let (host, port) = split_host_port(address)
                .ok_or_else(|| err(address, "is not a host (expected a name or an IP)"))?;
            if port.is_some() || !valid_host(&host) {
                return Err(err(
                    address,
                    "is not a host (expected a name or an IP, without port)",
                ));
            }
            Ok(Address::Host(host))
        }
        Prober::Tcp | Prober::Udp | Prober::Tls | Prober::Ssh | Prober::Dns | Prober::Grpc => {
            let default_port = match prober {
                Prober::Dns => Some(53),
                Prober::Ssh => Some(22),
                _ => None,
            };
            let (host, port) = split_host_port(address).ok_or_else(|| {
                err(
                    address,
                    "is not host:port (expected e.g. \"example.com:443\" or \"[2001:db8::1]:443\")",
                )
            })?;
            let port = port.or(default_port).ok_or_else(|| {
                err(
                    address,
                    "has no port (expected host:port, e.g. \"example.com:443\")",
                )
            })?;
            if !valid_host(&host) || port == 0 {
                return Err(err(
                    address,
                    "is not host:port (expected e.g. \"example.com:443\" or \"[2001:db8::1]:443\")",
                ));
            }
            Ok(Address::HostPort { host, port })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse(Prober::Tcp, "example.com:443").unwrap(),
            Address::HostPort {
                host: "example.com".into(),
                port: 443
            }
        );
        assert_eq!(
            parse(Prober::Tcp, "[::1]:22").unwrap(),
            Address::HostPort {
                host: "::1".into(),
                port: 22
            }
        );
        assert!(parse(Prober::Tcp, "example.com").is_err());
        assert!(parse(Prober::Tcp, "example.com:0").is_err());
        assert!(parse(Prober::Tcp, "exa mple.com:1").is_err());
        assert_eq!(
            parse(Prober::Dns, "127.0.0.1").unwrap(),
            Address::HostPort {
                host: "127.0.0.1".into(),
                port: 53
            }
        );
        assert_eq!(
            parse(Prober::Icmp, "::1").unwrap(),
            Address::Host("::1".into())
        );
        assert!(parse(Prober::Icmp, "10.0.0.1:80").is_err());
        assert!(parse(Prober::Http, "ftp://x/").is_err());
        assert_eq!(
            parse(Prober::Http, "https://[::1]:8443/x").unwrap().host(),
            "::1"
        );
    }
}
