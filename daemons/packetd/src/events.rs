//! Operator-visible log events of packetd, in one place (STYLE.md §2).

use crate::allow::Allowlist;
use crate::xdp::{AttachMode, Attached, XdpError};

/// The XDP program is attached to an interface (with the reason when native mode failed), or
/// the userspace reflector serves it (with the reason when XDP could not attach).
pub fn attached(a: &Attached) {
    if a.mode == AttachMode::Userspace {
        match &a.native_error {
            None => tracing::info!(iface = %a.iface, "Userspace reflector serving the interface."),
            Some(reason) => tracing::warn!(
                iface = %a.iface,
                error = %reason,
                "XDP cannot attach, falling back to the userspace reflector."
            ),
        }
        return;
    }
    match &a.native_error {
        None => tracing::info!(iface = %a.iface, mode = a.mode.as_str(), "XDP reflector attached."),
        Some(reason) => tracing::warn!(
            iface = %a.iface,
            error = %reason,
            "Native XDP attach failed, falling back to generic (skb) mode."
        ),
    }
}

/// The clock offset or error estimate could not be written to the program.
pub fn clock_refresh_failed(err: &XdpError) {
    tracing::warn!(error = %err, "Cannot refresh the XDP reflector clock.");
}

/// The per-CPU counters could not be read.
pub fn counters_failed(err: &XdpError) {
    tracing::warn!(error = %err, "Cannot read the XDP counters.");
}

/// The allowlist changed (a reload, or addresses added to or removed from the served
/// interfaces when it follows the on-link prefixes).
pub fn allowlist_changed(now: &Allowlist) {
    let list: Vec<String> = now.0.iter().map(ToString::to_string).collect();
    tracing::info!(prefixes = %list.join(","), "Reflector allowlist updated.");
}

/// A configured interface does not exist (at start or reload): it is served when it appears.
/// Loud on purpose: the name may be mistyped.
pub fn interface_absent(iface: &str) {
    tracing::warn!(
        iface,
        "Configured interface does not exist; it is served as soon as it appears (check [xdp].interfaces if the name is mistyped)."
    );
}

/// A served interface was removed (or renamed, or replaced by another of the same name); the
/// XDP program went with it.
pub fn interface_removed(iface: &str) {
    tracing::warn!(
        iface,
        "Served interface removed; it is served again when an interface of that name appears."
    );
}

/// A configured interface that appeared (or changed) after start could not be served.
pub fn attach_later_failed(iface: &str, err: &(dyn std::error::Error + Send + Sync)) {
    tracing::warn!(
        iface,
        error = %crate::xdp::error_chain(err),
        "Cannot serve the interface that appeared; retried at its next link change."
    );
}

/// In `auto` mode no interface falls back to the userspace reflector any more: it stopped.
pub fn userspace_retired() {
    tracing::info!("No interface needs the userspace reflector any more; stopped it.");
}

/// The interfaces' addresses could not be read over netlink (the on-link allowlist is empty
/// until the next successful read).
pub fn netlink_failed(err: &rookery_common::netlink::NetlinkError) {
    tracing::warn!(error = %err, "Cannot read the interfaces' addresses over netlink.");
}

/// The subscription to address changes failed; it is opened again after a pause.
pub fn netlink_watch_failed(
    err: &rookery_common::netlink::NetlinkError,
    retry: std::time::Duration,
) {
    tracing::warn!(
        error = %err,
        retry_s = retry.as_secs(),
        "Cannot follow address changes over netlink; retrying."
    );
}

/// The allowlist could not be written to the XDP program.
pub fn allowlist_failed(err: &XdpError) {
    tracing::warn!(error = %err, "Cannot update the XDP reflector allowlist.");
}

/// A session (STAMP or raw) started.
pub fn session_started(id: u64, spec: &crate::sender::SessionSpec) {
    tracing::info!(
        session = id,
        destination = %spec.destination,
        rate_pps = spec.rate_pps,
        kind = spec.kind.as_str(),
        packets = spec.total_packets(),
        "Session started."
    );
}

/// A raw session sends through `backend` (`detail`: mode, interface, queue).
pub fn generator_backend(backend: &str, detail: &str) {
    tracing::info!(backend, detail, "Generator transmit path chosen.");
}

/// A raw session could not use AF_XDP and sends from its UDP socket instead.
pub fn generator_fallback(destination: &std::net::SocketAddr, why: &crate::afxdp::Unavailable) {
    tracing::warn!(
        destination = %destination,
        reason = %why,
        "AF_XDP cannot send this session, falling back to the socket path (sendmmsg)."
    );
}

/// A session ended.
pub fn session_ended(id: u64, state: &str, stats: &crate::measure::Stats) {
    tracing::info!(
        session = id,
        state,
        sent = stats.sent,
        received = stats.received,
        rtt_p50_ns = stats.rtt_p50_ns,
        achieved_pps = stats.achieved_pps,
        "Session ended."
    );
}

/// The final row of a session could not be written.
pub fn session_store_failed(id: u64, err: &rusqlite::Error) {
    tracing::warn!(session = id, error = %err, "Cannot store the STAMP session result.");
}
