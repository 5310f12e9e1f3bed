//! One log record as every input produces it and the store keeps it.

/// Where a record came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Syslog over UDP.
    Udp,
    /// Syslog over TCP.
    Tcp,
    /// Syslog over TLS.
    Tls,
    /// HTTP JSON/NDJSON push.
    Http,
}

impl Input {
    /// Lowercase name, used in metrics labels and stored with the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Http => "http",
        }
    }
}

/// A log record ready to be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRecord {
    /// When ingestd received it, ns since the Unix epoch.
    pub received_ns: i64,
    /// The sender's timestamp (ns since the Unix epoch), when it had a usable one.
    pub timestamp_ns: Option<i64>,
    /// Originating host (the sender's HOSTNAME, else its address).
    pub host: String,
    /// Application (APP-NAME / TAG).
    pub app: String,
    /// Process ID as sent.
    pub procid: String,
    /// RFC 5424 MSGID.
    pub msgid: String,
    /// Syslog facility 0..=23.
    pub facility: Option<u8>,
    /// Syslog severity 0 (emergency) ..= 7 (debug).
    pub severity: Option<u8>,
    /// The message text.
    pub message: String,
    /// RFC 5424 structured data as sent, or the attributes of an HTTP record as JSON.
    pub structured_data: String,
    /// `rfc5424`, `rfc3164`, `json` or `raw` (did not parse).
    pub format: String,
    /// Why the message did not parse; the raw text is then in `message`.
    pub parse_error: Option<String>,
    /// `udp`, `tcp`, `tls`, `http`.
    pub input: String,
    /// Sender address.
    pub peer: String,
}
