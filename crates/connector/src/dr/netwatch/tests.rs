#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

fn addr(interface: u32, a: &str, prefix: u8) -> IfAddr {
    IfAddr {
        interface,
        addr: a.parse().unwrap(),
        prefix,
    }
}

fn route(dest: Option<&str>, prefix: u8, via: Option<&str>, oif: u32) -> RouteEntry {
    RouteEntry {
        table: MAIN_TABLE,
        destination: dest.map(|d| d.parse().unwrap()),
        prefix,
        gateway: via.map(|g| g.parse().unwrap()),
        interface: Some(oif),
    }
}

fn home() -> NetState {
    NetState {
        addresses: [
            addr(1, "127.0.0.1", 8),
            addr(1, "::1", 128),
            addr(2, "192.168.1.20", 24),
        ]
        .into(),
        routes: [
            route(None, 0, Some("192.168.1.1"), 2),
            route(Some("192.168.1.0"), 24, None, 2),
        ]
        .into(),
    }
}

#[test]
fn the_same_network_is_no_change() {
    assert_eq!(network_change(&home(), &home()), None);
    assert_eq!(
        network_change(&NetState::default(), &NetState::default()),
        None
    );
}

#[test]
fn an_address_added_or_removed_is_a_change() {
    let mut after = home();
    after.addresses.insert(addr(1, "10.77.0.1", 32));
    let c = network_change(&home(), &after).unwrap();
    assert_eq!(c.added, [addr(1, "10.77.0.1", 32)]);
    assert!(c.removed.is_empty() && c.routes_added.is_empty() && c.routes_removed.is_empty());
    assert_eq!(c.to_string(), "address 10.77.0.1/32 on interface 1 added");

    let c = network_change(&after, &home()).unwrap();
    assert_eq!(c.removed, [addr(1, "10.77.0.1", 32)]);
    assert!(c.added.is_empty());
}

#[test]
fn moving_to_another_network_names_both_sides() {
    // Wi-Fi at home to a phone's hotspot: another address, another default route.
    let mut away = home();
    away.addresses.remove(&addr(2, "192.168.1.20", 24));
    away.addresses.insert(addr(2, "172.20.10.3", 28));
    away.routes = [
        route(None, 0, Some("172.20.10.1"), 2),
        route(Some("172.20.10.0"), 28, None, 2),
    ]
    .into();
    let c = network_change(&home(), &away).unwrap();
    assert_eq!(c.added, [addr(2, "172.20.10.3", 28)]);
    assert_eq!(c.removed, [addr(2, "192.168.1.20", 24)]);
    assert_eq!(c.routes_added.len(), 2);
    assert_eq!(c.routes_removed.len(), 2);
    let text = c.to_string();
    assert!(
        text.contains("route default via 172.20.10.1 on interface 2 added"),
        "{text}"
    );
    assert!(
        text.contains("address 192.168.1.20/24 on interface 2 removed"),
        "{text}"
    );
}

#[test]
fn a_route_alone_is_a_change() {
    // A VPN comes up: same addresses, a new default route in another table.
    let mut vpn = home();
    vpn.routes.insert(RouteEntry {
        table: 51820,
        destination: None,
        prefix: 0,
        gateway: None,
        interface: Some(7),
    });
    let c = network_change(&home(), &vpn).unwrap();
    assert!(c.added.is_empty() && c.removed.is_empty());
    assert_eq!(
        c.to_string(),
        "route default on interface 7 (table 51820) added"
    );
}

#[test]
fn the_same_address_with_another_prefix_or_interface_is_a_change() {
    let mut after = home();
    after.addresses.remove(&addr(2, "192.168.1.20", 24));
    after.addresses.insert(addr(3, "192.168.1.20", 24));
    assert!(network_change(&home(), &after).is_some());
    let mut after = home();
    after.addresses.remove(&addr(2, "192.168.1.20", 24));
    after.addresses.insert(addr(2, "192.168.1.20", 16));
    assert!(network_change(&home(), &after).is_some());
}

#[test]
fn long_changes_are_shortened_with_a_count() {
    let after = NetState {
        addresses: (1..=5).map(|i| addr(i, "10.0.0.1", 8)).collect(),
        routes: Default::default(),
    };
    let text = network_change(&NetState::default(), &after)
        .unwrap()
        .to_string();
    assert!(text.ends_with("; 2 more addresses added"), "{text}");
    assert_eq!(text.matches("address 10.0.0.1/8").count(), 3, "{text}");
}
