//! Operator-visible log events of packetd, in one place (STYLE.md §2).

use crate::xdp::{Attached, XdpError};

/// The XDP program is attached to an interface (with the reason when native mode failed).
pub fn attached(a: &Attached) {
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
