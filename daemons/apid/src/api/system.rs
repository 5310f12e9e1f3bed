//! `/api/v1/system`: version and uptime of the API, every daemon's health and status, and the
//! appliance's network interfaces with their addresses (over rtnetlink,
//! [`rookery_common::netlink`]).

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use rookery_common::netlink;
use serde::Serialize;

use super::Api;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SystemView {
    version: &'static str,
    started_at: String,
    uptime_seconds: u64,
    /// Each daemon's `Admin.Status` over its socket, or why it is unavailable.
    daemons: Vec<super::daemons::DaemonView>,
    /// The network interfaces of the appliance, by index.
    interfaces: Vec<InterfaceView>,
    /// Why `interfaces` is empty when the kernel could not be asked; `null` otherwise.
    interfaces_error: Option<String>,
}

/// A network interface (a link) and its addresses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InterfaceView {
    /// The kernel's interface index.
    index: u32,
    name: String,
    /// Link-layer address, `aa:bb:cc:dd:ee:ff`.
    mac: Option<String>,
    mtu: Option<u32>,
    oper_state: OperStateView,
    flags: FlagsView,
    /// Driver kind of a virtual link (`veth`, `bridge`, `vlan`, …); `null` for physical NICs.
    kind: Option<String>,
    /// Traffic counters since the link was created.
    counters: Option<CountersView>,
    /// IPv4 addresses first, then IPv6.
    addresses: Vec<AddressView>,
}

/// RFC 2863 operational state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperStateView {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

/// Interface flags (`IFF_*`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlagsView {
    /// Administratively up.
    up: bool,
    /// Operationally up.
    running: bool,
    /// Carrier up.
    lower_up: bool,
    loopback: bool,
    point_to_point: bool,
    broadcast: bool,
    multicast: bool,
    promiscuous: bool,
    no_arp: bool,
}

/// Traffic counters of an interface.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CountersView {
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
    rx_errors: u64,
    tx_errors: u64,
    rx_dropped: u64,
    tx_dropped: u64,
}

/// An address of an interface.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AddressView {
    #[schema(value_type = String, example = "192.0.2.10")]
    address: IpAddr,
    /// On-link prefix length.
    prefix_len: u8,
    scope: ScopeView,
}

/// The scope of an address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeView {
    Global,
    Site,
    Link,
    Host,
    Other,
}

impl From<netlink::Interface> for InterfaceView {
    fn from(i: netlink::Interface) -> Self {
        let f = i.flags;
        Self {
            index: i.index,
            name: i.name,
            mac: i.mac,
            mtu: i.mtu,
            oper_state: match i.oper_state {
                netlink::OperState::NotPresent => OperStateView::NotPresent,
                netlink::OperState::Down => OperStateView::Down,
                netlink::OperState::LowerLayerDown => OperStateView::LowerLayerDown,
                netlink::OperState::Testing => OperStateView::Testing,
                netlink::OperState::Dormant => OperStateView::Dormant,
                netlink::OperState::Up => OperStateView::Up,
                netlink::OperState::Unknown => OperStateView::Unknown,
            },
            flags: FlagsView {
                up: f.up,
                running: f.running,
                lower_up: f.lower_up,
                loopback: f.loopback,
                point_to_point: f.point_to_point,
                broadcast: f.broadcast,
                multicast: f.multicast,
                promiscuous: f.promiscuous,
                no_arp: f.no_arp,
            },
            kind: i.kind,
            counters: i.counters.map(|c| CountersView {
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                rx_errors: c.rx_errors,
                tx_errors: c.tx_errors,
                rx_dropped: c.rx_dropped,
                tx_dropped: c.tx_dropped,
            }),
            addresses: i
                .addresses
                .into_iter()
                .map(|a| AddressView {
                    address: a.address,
                    prefix_len: a.prefix_len,
                    scope: match a.scope {
                        netlink::Scope::Global => ScopeView::Global,
                        netlink::Scope::Site => ScopeView::Site,
                        netlink::Scope::Link => ScopeView::Link,
                        netlink::Scope::Host => ScopeView::Host,
                        netlink::Scope::Other => ScopeView::Other,
                    },
                })
                .collect(),
        }
    }
}

/// The interfaces, or why the kernel could not be asked.
async fn interfaces() -> (Vec<InterfaceView>, Option<String>) {
    let found = tokio::task::spawn_blocking(netlink::interfaces).await;
    match found {
        Ok(Ok(all)) => (all.into_iter().map(InterfaceView::from).collect(), None),
        Ok(Err(err)) => {
            let err = rookery_common::error_chain(&err);
            tracing::warn!(error = %err, "Listing the network interfaces failed.");
            (Vec::new(), Some(err))
        }
        Err(join) => (
            Vec::new(),
            Some(format!("interface listing failed: {join}")),
        ),
    }
}

/// `GET /api/v1/system`.
pub async fn system(State(api): State<Arc<Api>>) -> Json<SystemView> {
    let ((interfaces, interfaces_error), daemons) =
        tokio::join!(interfaces(), super::daemons::daemon_views(&api));
    Json(SystemView {
        version: rookery_common::VERSION,
        started_at: chrono::DateTime::<chrono::Utc>::from(api.started_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        uptime_seconds: api.started.elapsed().as_secs(),
        daemons,
        interfaces,
        interfaces_error,
    })
}
