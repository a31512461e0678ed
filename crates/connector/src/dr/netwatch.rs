//! Network changes, for the DR watcher (issue 5 item 2: "look the record up on every network
//! change"). A device that moves to another network (Wi-Fi to tethering, VPN up, cable in) may
//! now reach a DNS server that carries the DR record, or may be in a disaster it could not see
//! before: the record is looked up at once instead of at the next interval.
//!
//! - The decision is pure: [`network_change`] compares two [`NetState`]s (the host's interface
//!   addresses and its routes outside the kernel's `local` table) and says what changed, if
//!   anything. Events that change neither (IPv6 lifetime refreshes, duplicate notifications)
//!   trigger nothing.
//! - The IO shell (Linux): a route-netlink socket subscribed to `RTMGRP_IPV4_IFADDR`,
//!   `RTMGRP_IPV6_IFADDR`, `RTMGRP_IPV4_ROUTE` and `RTMGRP_IPV6_ROUTE` (through `rtnetlink`),
//!   which the kernel notifies at once; on a notification it waits [`SETTLE`] for the burst that
//!   usually follows, dumps addresses and routes, and calls back when [`network_change`] says
//!   something changed, at most once per [`MIN_GAP`]. No polling: between changes it costs
//!   nothing. On other systems it is not available and the interval alone applies.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

#[cfg(test)]
mod tests;

/// An address on an interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfAddr {
    /// The interface's index.
    pub interface: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} on interface {}",
            self.addr, self.prefix, self.interface
        )
    }
}

/// A route, as far as where traffic goes is concerned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteEntry {
    pub table: u32,
    /// `None`: the default route of its family.
    pub destination: Option<IpAddr>,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub interface: Option<u32>,
}

impl fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.destination {
            Some(d) => write!(f, "{d}/{}", self.prefix)?,
            None => write!(f, "default")?,
        }
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(i) = self.interface {
            write!(f, " on interface {i}")?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " (table {})", self.table)?;
        }
        Ok(())
    }
}

/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;
/// The kernel's `local` table: it follows the addresses, so it adds nothing.
pub const LOCAL_TABLE: u32 = 255;

/// What the host's network looks like: its addresses and routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetState {
    pub addresses: BTreeSet<IfAddr>,
    pub routes: BTreeSet<RouteEntry>,
}

/// What changed between two [`NetState`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetChange {
    pub added: Vec<IfAddr>,
    pub removed: Vec<IfAddr>,
    pub routes_added: Vec<RouteEntry>,
    pub routes_removed: Vec<RouteEntry>,
}

impl fmt::Display for NetChange {
    /// `address 10.0.0.7/24 on interface 2 added; route default via 10.0.0.1 on interface 2
    /// added`, at most three items of each kind, then a count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        fn list<T: fmt::Display>(
            parts: &mut Vec<String>,
            (one, many): (&str, &str),
            how: &str,
            items: &[T],
        ) {
            for i in items.iter().take(3) {
                parts.push(format!("{one} {i} {how}"));
            }
            if items.len() > 3 {
                parts.push(format!("{} more {many} {how}", items.len() - 3));
            }
        }
        let (address, route) = (("address", "addresses"), ("route", "routes"));
        list(&mut parts, address, "added", &self.added);
        list(&mut parts, address, "removed", &self.removed);
        list(&mut parts, route, "added", &self.routes_added);
        list(&mut parts, route, "removed", &self.routes_removed);
        write!(f, "{}", parts.join("; "))
    }
}

/// What changed from `before` to `after`; `None` when nothing did. Pure.
pub fn network_change(before: &NetState, after: &NetState) -> Option<NetChange> {
    let c = NetChange {
        added: after
            .addresses
            .difference(&before.addresses)
            .cloned()
            .collect(),
        removed: before
            .addresses
            .difference(&after.addresses)
            .cloned()
            .collect(),
        routes_added: after.routes.difference(&before.routes).cloned().collect(),
        routes_removed: before.routes.difference(&after.routes).cloned().collect(),
    };
    let none = c.added.is_empty()
        && c.removed.is_empty()
        && c.routes_added.is_empty()
        && c.routes_removed.is_empty();
    (!none).then_some(c)
}

/// After the first notification, how long to wait for the rest of its burst (an interface
/// coming up brings addresses, then routes) before looking.
pub const SETTLE: Duration = Duration::from_millis(50);
/// At most one call back per this long, so that a flapping interface does not turn into a
/// stream of DNS lookups (changes in between are seen at the next look).
pub const MIN_GAP: Duration = Duration::from_millis(500);

/// Why network changes cannot be watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetWatchError {
    #[error(
        "cannot open a route-netlink socket to watch network changes: {0}; the DR record is looked up on its interval only"
    )]
    Socket(#[source] std::io::Error),
    #[error(
        "watching network changes is supported on Linux only; the DR record is looked up on its interval only"
    )]
    Unsupported,
}

/// Watches the host's network and calls `on_change` after every change (see the module
/// documentation). The task runs until aborted.
#[cfg(target_os = "linux")]
pub fn spawn(
    on_change: impl Fn(&NetChange) + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, NetWatchError> {
    linux::spawn(on_change)
}

/// Watches the host's network: not available on this system.
#[cfg(not(target_os = "linux"))]
pub fn spawn(
    _on_change: impl Fn(&NetChange) + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, NetWatchError> {
    Err(NetWatchError::Unsupported)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::IpAddr;

    use futures_util::{FutureExt as _, StreamExt as _, TryStreamExt as _};
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
    use rtnetlink::{Handle, MulticastGroup};

    use super::{
        IfAddr, LOCAL_TABLE, MIN_GAP, NetChange, NetState, NetWatchError, RouteEntry, SETTLE,
        network_change,
    };

    /// Aborts a task when dropped.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    pub(super) fn spawn(
        on_change: impl Fn(&NetChange) + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, NetWatchError> {
        // Subscribed before the first dump, so that no change falls between the two.
        let (conn, handle, mut events) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ])
        .map_err(NetWatchError::Socket)?;
        let conn = tokio::spawn(conn);
        Ok(tokio::spawn(async move {
            let _conn = AbortOnDrop(conn);
            let mut known = match state(&handle).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the network's addresses and routes; every change will count");
                    NetState::default()
                }
            };
            tracing::debug!(
                addresses = known.addresses.len(),
                routes = known.routes.len(),
                "watching network changes"
            );
            loop {
                if events.next().await.is_none() {
                    tracing::warn!(
                        "the route-netlink socket closed; network changes are no longer watched"
                    );
                    return;
                }
                tokio::time::sleep(SETTLE).await;
                while let Some(Some(_)) = events.next().now_or_never() {}
                let now = match state(&handle).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the network's addresses and routes after a change");
                        continue;
                    }
                };
                if let Some(change) = network_change(&known, &now) {
                    known = now;
                    on_change(&change);
                    tokio::time::sleep(MIN_GAP).await;
                }
            }
        }))
    }

    /// Dumps the addresses and routes.
    async fn state(handle: &Handle) -> Result<NetState, rtnetlink::Error> {
        let mut s = NetState::default();
        let mut addrs = handle.address().get().execute();
        while let Some(m) = addrs.try_next().await? {
            if let Some(a) = if_addr(&m) {
                s.addresses.insert(a);
            }
        }
        let mut routes = handle.route().get(RouteMessage::default()).execute();
        while let Some(r) = routes.try_next().await? {
            if let Some(e) = route_entry(&r) {
                s.routes.insert(e);
            }
        }
        Ok(s)
    }

    fn if_addr(m: &AddressMessage) -> Option<IfAddr> {
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on a
        // point-to-point link); IPv6 has only IFA_ADDRESS.
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        Some(IfAddr {
            interface: m.header.index,
            addr: local.or(address)?,
            prefix: m.header.prefix_len,
        })
    }

    fn ip(a: &RouteAddress) -> Option<IpAddr> {
        match a {
            RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
            RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        }
    }

    fn route_entry(r: &RouteMessage) -> Option<RouteEntry> {
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        if table == LOCAL_TABLE
            || matches!(
                r.header.kind,
                RouteType::Local | RouteType::Broadcast | RouteType::Multicast | RouteType::Anycast
            )
        {
            return None;
        }
        let mut e = RouteEntry {
            table,
            destination: None,
            prefix: r.header.destination_prefix_length,
            gateway: None,
            interface: None,
        };
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(d) => e.destination = ip(d),
                RouteAttribute::Gateway(g) => e.gateway = ip(g),
                RouteAttribute::Oif(i) => e.interface = Some(*i),
                _ => {}
            }
        }
        Some(e)
    }
}
