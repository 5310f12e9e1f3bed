//! DNS: one query (name, type, RD bit) to the target server over UDP or TCP, built and parsed
//! with hickory-proto. Checks the response code and that every expected answer is present;
//! NXDOMAIN where NOERROR was expected is reported as `nxdomain`. A truncated UDP answer is
//! retried over TCP, as resolvers do.

use std::net::SocketAddr;
use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::{Address, DnsFacts, Failure, Phase, Run, net};
use crate::config::{DnsTransport, Module};

/// Record types a DNS module may query.
pub const SUPPORTED_TYPES: [&str; 10] = [
    "A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "CAA",
];

/// Response codes by name (RFC 1035 §4.1.1, RFC 2136).
const RCODES: [(&str, u16); 10] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
];

/// The record type named `s` (case-insensitive), if supported.
pub fn parse_type(s: &str) -> Option<RecordType> {
    let up = s.to_ascii_uppercase();
    if !SUPPORTED_TYPES.contains(&up.as_str()) {
        return None;
    }
    RecordType::from_str(&up).ok()
}

/// The response code named `s` (case-insensitive).
pub fn parse_rcode(s: &str) -> Option<u16> {
    let up = s.to_ascii_uppercase();
    RCODES.iter().find(|(n, _)| *n == up).map(|(_, c)| *c)
}

/// The name of response code `code`.
pub fn rcode_name(code: u16) -> String {
    RCODES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("RCODE{code}"), |(n, _)| (*n).to_owned())
}

/// Largest UDP answer read (EDNS payloads stay below this).
const MAX_UDP: usize = 65_535;

/// The `dns` probe.
pub async fn probe(run: &mut Run, addr: &Address, module: &Module) -> Result<(), Failure> {
    let Address::HostPort { host, port } = addr else {
        return Err(Failure::Protocol("dns probes need a server".to_owned()));
    };
    let opts = module.dns.clone().unwrap_or_default();
    let qtype = parse_type(&opts.query_type)
        .ok_or_else(|| Failure::Protocol(format!("bad query type {}", opts.query_type)))?;
    let expect_rcode = parse_rcode(&opts.expect_rcode).unwrap_or(0);
    let name = Name::from_ascii(&opts.query_name)
        .map_err(|e| Failure::Protocol(format!("bad query name: {e}")))?;
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = opts.recursion_desired;
    msg.add_query(Query::query(name, qtype));
    let wire = msg
        .to_vec()
        .map_err(|e| Failure::Protocol(format!("cannot encode query: {e}")))?;
    let id = msg.metadata.id;

    let server = net::resolve(run, host, *port, module.ip_version).await?;
    let mut answer = match opts.transport {
        DnsTransport::Udp => udp_exchange(run, server, &wire, id).await?,
        DnsTransport::Tcp => tcp_exchange(run, server, &wire).await?,
    };
    if answer.metadata.truncation && opts.transport == DnsTransport::Udp {
        answer = tcp_exchange(run, server, &wire).await?;
    }
    if answer.metadata.id != id {
        return Err(Failure::Protocol(
            "answer ID does not match the query".to_owned(),
        ));
    }
    let code = u16::from(answer.metadata.response_code);
    let facts = DnsFacts {
        rcode: rcode_name(code),
        answers: answer.answers.iter().map(|r| r.data.to_string()).collect(),
        counts: [
            answer.answers.len(),
            answer.authorities.len(),
            answer.additionals.len(),
        ],
    };
    let missing = opts
        .expect_answers
        .iter()
        .find(|want| {
            !facts
                .answers
                .iter()
                .any(|a| a.trim_end_matches('.') == want.trim_end_matches('.'))
        })
        .cloned();
    run.facts.dns = Some(Box::new(facts));
    if code != expect_rcode {
        return Err(if code == 3 {
            Failure::Nxdomain
        } else {
            Failure::DnsRcode(rcode_name(code))
        });
    }
    match missing {
        Some(m) => Err(Failure::DnsAnswerMissing(m)),
        None => Ok(()),
    }
}

fn rand_id() -> u16 {
    // Query IDs only need to differ between concurrent queries of this socket; the clock's
    // nanoseconds are plenty for a one-query socket.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16)) as u16
}

fn decode(buf: &[u8]) -> Result<Message, Failure> {
    Message::from_vec(buf).map_err(|e| Failure::Protocol(format!("cannot decode answer: {e}")))
}

async fn udp_exchange(
    run: &mut Run,
    server: SocketAddr,
    wire: &[u8],
    id: u16,
) -> Result<Message, Failure> {
    let socket = run
        .phase(Phase::Connect, async {
            let local: SocketAddr = if server.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let s = UdpSocket::bind(local)
                .await
                .map_err(|e| net::io_failure(&e))?;
            s.connect(server).await.map_err(|e| net::io_failure(&e))?;
            Ok(s)
        })
        .await?;
    run.phase(Phase::FirstByte, async {
        socket.send(wire).await.map_err(|e| net::io_failure(&e))?;
        let mut buf = vec![0u8; MAX_UDP];
        // Stray datagrams (late answers to someone else) are skipped; the deadline bounds this.
        loop {
            let n = socket
                .recv(&mut buf)
                .await
                .map_err(|e| net::io_failure(&e))?;
            if let Ok(m) = decode(&buf[..n])
                && m.metadata.id == id
                && m.metadata.message_type == MessageType::Response
            {
                return Ok(m);
            }
        }
    })
    .await
}

async fn tcp_exchange(run: &mut Run, server: SocketAddr, wire: &[u8]) -> Result<Message, Failure> {
    let mut stream = net::connect(run, server).await?;
    run.phase(Phase::FirstByte, async {
        let len = u16::try_from(wire.len())
            .map_err(|_| Failure::Protocol("query too long".to_owned()))?;
        let mut framed = Vec::with_capacity(wire.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(wire);
        stream
            .write_all(&framed)
            .await
            .map_err(|e| net::io_failure(&e))?;
        let n = stream.read_u16().await.map_err(|e| net::io_failure(&e))?;
        let mut buf = vec![0u8; usize::from(n)];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| net::io_failure(&e))?;
        decode(&buf)
    })
    .await
}
