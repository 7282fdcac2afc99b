//! Endpoint addresses parse, print and round-trip, and refuse bad text with
//! `Error::BadAddress`; `COMM_*` configuration and the node-id override are
//! read through an injected lookup.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use comm::{Addr, EnvConfig, Error, NodeId, TransportKind, Transports};
use proptest::prelude::*;

fn parse(s: &str) -> Result<Addr, Error> {
    s.parse()
}

fn reason_of(s: &str) -> &'static str {
    match parse(s) {
        Err(Error::BadAddress { addr, reason }) => {
            assert_eq!(addr, s, "the error names the whole text");
            reason
        }
        other => panic!("{s:?} should be refused, got {other:?}"),
    }
}

#[test]
fn ipv4_address_round_trips() {
    let a = parse("comm://10.0.0.5:7000/store").unwrap();
    assert_eq!(a.control(), "10.0.0.5:7000".parse().unwrap());
    assert_eq!(a.endpoint(), "store");
    assert_eq!(a.to_string(), "comm://10.0.0.5:7000/store");
    assert_eq!(parse(&a.to_string()).unwrap(), a);
}

#[test]
fn ipv6_address_round_trips_in_brackets() {
    let a = parse("comm://[fd00::2]:7000/kv.shard-0").unwrap();
    assert_eq!(a.control().ip(), IpAddr::V6("fd00::2".parse().unwrap()));
    assert_eq!(a.to_string(), "comm://[fd00::2]:7000/kv.shard-0");
    assert_eq!(parse(&a.to_string()).unwrap(), a);
}

#[test]
fn ipv6_zone_is_kept() {
    let a = parse("comm://[fe80::1%2]:7000/x").unwrap();
    match a.control() {
        SocketAddr::V6(v6) => assert_eq!(v6.scope_id(), 2),
        other => panic!("expected IPv6, got {other}"),
    }
    assert_eq!(a.to_string(), "comm://[fe80::1%2]:7000/x");
    assert_eq!(parse(&a.to_string()).unwrap(), a);
}

#[test]
fn localhost_means_ipv4_loopback() {
    let a = parse("comm://localhost:7000/echo").unwrap();
    assert_eq!(
        a.control(),
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 7000)
    );
    assert_eq!(a.to_string(), "comm://127.0.0.1:7000/echo");
    assert_eq!(a, parse("comm://127.0.0.1:7000/echo").unwrap());
}

#[test]
fn new_matches_parse_and_drops_the_flow_label() {
    let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 77, 0));
    let a = Addr::new(v6, "n").unwrap();
    assert_eq!(a, parse("comm://[::1]:9/n").unwrap());
    assert!(matches!(Addr::new(v6, ".n"), Err(Error::BadAddress { .. })));
}

#[test]
fn missing_scheme_is_refused() {
    assert!(reason_of("10.0.0.5:7000/store").contains("comm://"));
    assert!(reason_of("http://10.0.0.5:7000/store").contains("comm://"));
    assert!(reason_of("").contains("comm://"));
}

#[test]
fn missing_port_is_refused() {
    assert!(reason_of("comm://10.0.0.5/store").contains("port"));
    assert!(reason_of("comm://10.0.0.5:/store").contains("port"));
    assert!(reason_of("comm://[::1]/store").contains("port"));
    assert!(reason_of("comm://10.0.0.5:70000/store").contains("port"));
    assert!(reason_of("comm://10.0.0.5:+7/store").contains("port"));
}

#[test]
fn bad_hosts_are_refused() {
    assert!(reason_of("comm://::1:7000/store").contains("brackets"));
    assert!(reason_of("comm://example.com:7000/store").contains("not resolved"));
    assert!(reason_of("comm://:7000/store").contains("host"));
    assert!(reason_of("comm://[::1:7000/store").contains('['));
    assert!(reason_of("comm://[fe80::1%eth0]:7000/store").contains("zone"));
}

#[test]
fn bad_names_are_refused() {
    assert!(reason_of("comm://10.0.0.5:7000/.hidden").contains('.'));
    assert!(reason_of("comm://10.0.0.5:7000/a b").contains("A-Z"));
    assert!(reason_of(&format!("comm://10.0.0.5:7000/{}", "n".repeat(65))).contains("64"));
    parse(&format!("comm://10.0.0.5:7000/{}", "n".repeat(64))).unwrap();
}

#[test]
fn empty_or_missing_name_is_refused() {
    assert!(reason_of("comm://10.0.0.5:7000/").contains("name"));
    assert!(reason_of("comm://10.0.0.5:7000").contains("name"));
}

#[test]
fn trailing_garbage_is_refused() {
    for s in [
        "comm://10.0.0.5:7000/store/extra",
        "comm://10.0.0.5:7000/store?x=1",
        "comm://10.0.0.5:7000/store ",
        "comm://10.0.0.5:7000x/store",
        "comm://[::1]:7000x/store",
        "comm://[::1]x:7000/store",
    ] {
        reason_of(s);
    }
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}"
}

fn control() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip.into(), port)),
        (any::<[u8; 16]>(), any::<u16>(), 0u32..4).prop_map(|(ip, port, zone)| SocketAddr::V6(
            SocketAddrV6::new(ip.into(), port, 0, zone)
        )),
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = parse(&s);
        let _ = parse(&format!("comm://{s}"));
    }

    #[test]
    fn address_shaped_text_never_panics(s in "comm://[\\[\\]0-9a-f:.%]{0,40}/[ -~]{0,70}") {
        if let Ok(a) = parse(&s) {
            prop_assert_eq!(parse(&a.to_string()).unwrap(), a);
        }
    }

    #[test]
    fn valid_addresses_round_trip(ctl in control(), n in name()) {
        let a = Addr::new(ctl, &n).unwrap();
        let text = a.to_string();
        let back = parse(&text).unwrap();
        prop_assert_eq!(back.control(), ctl);
        prop_assert_eq!(back.endpoint(), n.as_str());
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(back.to_string(), text);
    }
}

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |key| map.get(key).cloned()
}

#[test]
fn env_config_reads_every_variable() {
    let cfg = EnvConfig::from_lookup(lookup(&[
        ("COMM_ENGINE", "kv"),
        ("COMM_TRANSPORTS", "shm,tcp"),
        ("COMM_CORES", "2, 3"),
        ("COMM_LISTEN", "0.0.0.0:7000"),
        ("COMM_NODE_ID", "node-7"),
        ("COMM_LOG", "comm=debug"),
    ]))
    .unwrap();
    assert_eq!(
        cfg,
        EnvConfig {
            engine: Some("kv".into()),
            transports: Some(Transports::only([TransportKind::Shm, TransportKind::Tcp])),
            cores: Some(vec![2, 3]),
            listen: Some("0.0.0.0:7000".parse().unwrap()),
            node_id: Some("node-7".into()),
            log: Some("comm=debug".into()),
        }
    );
}

#[test]
fn env_config_unset_and_empty_values_are_none() {
    assert_eq!(
        EnvConfig::from_lookup(|_| None).unwrap(),
        EnvConfig::default()
    );
    let all_empty = EnvConfig::from_lookup(|_| Some("  ".into())).unwrap();
    assert_eq!(all_empty, EnvConfig::default());
}

#[test]
fn env_config_accepts_auto_ipv6_and_localhost() {
    let cfg = EnvConfig::from_lookup(lookup(&[
        ("COMM_TRANSPORTS", "auto"),
        ("COMM_LISTEN", "[::1]:7000"),
    ]))
    .unwrap();
    assert_eq!(cfg.transports, Some(Transports::Auto));
    assert_eq!(cfg.listen, Some("[::1]:7000".parse().unwrap()));
    let cfg = EnvConfig::from_lookup(lookup(&[("COMM_LISTEN", "localhost:0")])).unwrap();
    assert_eq!(cfg.listen, Some("127.0.0.1:0".parse().unwrap()));
}

#[test]
fn env_config_bad_listen_names_the_value() {
    for bad in ["7000", "host:7000", "1.2.3.4", "1.2.3.4:99999"] {
        match EnvConfig::from_lookup(lookup(&[("COMM_LISTEN", bad)])) {
            Err(Error::BadAddress { addr, reason }) => {
                assert_eq!(addr, bad);
                assert!(reason.contains("COMM_LISTEN"));
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn env_config_bad_transports_names_the_value() {
    for bad in ["shm,ib", "shm,,tcp", "fast"] {
        match EnvConfig::from_lookup(lookup(&[("COMM_TRANSPORTS", bad)])) {
            Err(Error::BadAddress { addr, reason }) => {
                assert_eq!(addr, bad);
                assert!(reason.contains("COMM_TRANSPORTS"));
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn env_config_bad_cores_is_a_config_error() {
    for bad in ["a", "0,,1", "-1", "0;1", "1,1"] {
        match EnvConfig::from_lookup(lookup(&[("COMM_CORES", bad)])) {
            Err(Error::Config(reason)) => assert!(reason.contains("COMM_CORES")),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn node_id_override_wins_and_is_trimmed() {
    let id = NodeId::discover_with(lookup(&[("COMM_NODE_ID", " rack3-node7\n")]));
    assert_eq!(id, NodeId::new("rack3-node7"));
    assert_eq!(id.to_string(), "rack3-node7");
}

#[test]
fn node_id_without_override_comes_from_the_machine() {
    let machine = NodeId::discover_with(|_| None);
    assert!(!machine.as_str().is_empty());
    assert!(machine.as_str().len() <= 256);
    assert_eq!(
        machine,
        NodeId::discover_with(lookup(&[("COMM_NODE_ID", "")]))
    );
    assert_eq!(
        machine,
        NodeId::discover_with(|_| None),
        "stable within a boot"
    );
}

#[test]
fn node_id_is_capped_at_256_bytes() {
    let id = NodeId::discover_with(lookup(&[("COMM_NODE_ID", &"n".repeat(1000))]));
    assert_eq!(id.as_str().len(), 256);
}

#[test]
fn a_wildcard_listener_advertises_a_concrete_address() {
    let engine = comm::Engine::builder(&format!("wild{}", std::process::id()))
        .cores(&[0])
        .listen("0.0.0.0:0".parse().unwrap())
        .start()
        .unwrap();
    let ep = engine.endpoint("here").unwrap();
    let addr = ep.addr().to_string();
    assert!(!addr.contains("0.0.0.0"), "{addr}");
    // And peers can use it.
    let other = comm::Engine::builder(&format!("wild{}", std::process::id()))
        .cores(&[1])
        .start()
        .unwrap();
    let tx = other.endpoint("there").unwrap();
    tx.connect(&ep.addr()).unwrap();
    drop((ep, tx));
    other.shutdown().unwrap();
    engine.shutdown().unwrap();
}
