//! Transport selection: auto mode (shared memory on the same node, TCP
//! otherwise, UDP only when asked for), explicit lists through the builder
//! and `COMM_TRANSPORTS`, `Error::NoTransport` for an impossible choice,
//! `Endpoint::transport` reporting the choice, one endpoint reaching several
//! peers over different transports at once, and the fall-back to the next
//! transport when the preferred one fails to set a link up (provoked for real:
//! a peer with the same node id but its own private `/dev/shm`).

mod common;

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use comm::{
    Addr, Endpoint, Engine, Error, LinkStats, NodeId, PeerId, PoolConfig, SizeClass,
    TransportKind::{self, Shm, Tcp, Udp},
    Transports,
};
use common::{
    check_message, is_role, role_command_under, shm_leftovers, write_message, ChildGuard, Lines,
};

const ADDR_ENV: &str = "COMM_TEST_ADDR";
const ENGINE_ENV: &str = "COMM_TEST_ENGINE";
/// Set to `tcp` to make the child's builder ask for TCP only.
const BUILDER_ENV: &str = "COMM_TEST_BUILDER";
const PATIENCE: Duration = Duration::from_secs(30);
const SALT: u64 = 0x5e1e_c7ed;

/// A small pool: these tests send small messages, and many engines run at once.
fn pool() -> PoolConfig {
    PoolConfig::new(vec![
        SizeClass {
            size: 256,
            count: 256,
        },
        SizeClass {
            size: 4096,
            count: 32,
        },
    ])
    .unwrap()
}

fn engine(name: &str, core: usize, node: &str, transports: Transports) -> Engine {
    Engine::builder(name)
        .cores(&[core])
        .node_id(NodeId::new(node))
        .transports(transports)
        .pool(pool())
        .start()
        .unwrap()
}

fn name(tag: &str) -> String {
    format!("sel-{tag}-{}", std::process::id())
}

fn node(tag: &str) -> String {
    format!("node-{tag}-{}", std::process::id())
}

fn echo(engine: &Engine) -> Addr {
    engine
        .serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))
        .unwrap()
}

fn send(ep: &Endpoint, peer: PeerId, seq: u64) {
    let len = 16 + (seq as usize * 37) % 200;
    let mut buf = ep.alloc(len).unwrap();
    write_message(seq, SALT, &mut buf, len);
    let deadline = Instant::now() + PATIENCE;
    let mut buf = buf;
    loop {
        match ep.send(peer, buf) {
            Ok(()) => return,
            Err(Error::WouldBlock(b)) => buf = b,
            Err(e) => panic!("send: {e}"),
        }
        assert!(Instant::now() < deadline, "send stalled");
        std::thread::yield_now();
    }
}

/// One checksummed message to an echo endpoint and back.
fn round_trip(ep: &Endpoint, peer: PeerId, seq: u64) {
    send(ep, peer, seq);
    let reply = ep.recv_timeout(PATIENCE).expect("the echo comes back");
    assert_eq!(reply.peer(), peer);
    check_message(reply.data(), seq);
}

/// The engine's links once their counters have caught up with `sent`
/// messages each way (published by the progress threads once per pass).
fn links_after(engine: &Engine, sent: u64) -> Vec<LinkStats> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let links = engine.stats().links;
        let done = links
            .iter()
            .all(|l| l.sent_msgs >= sent && l.recv_msgs >= sent);
        if done || Instant::now() > deadline {
            return links;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The transports of an engine's links, sorted.
fn transports_of(links: &[LinkStats]) -> Vec<TransportKind> {
    let mut kinds: Vec<_> = links.iter().map(|l| l.transport).collect();
    kinds.sort();
    kinds
}

#[test]
fn auto_mode_picks_shm_on_the_same_node_and_tcp_across_nodes() {
    let name = name("auto");
    let a = engine(&name, 0, &node("a"), Transports::Auto);
    let b = engine(&name, 1, &node("a"), Transports::Auto);
    let c = engine(&name, 1, &node("c"), Transports::Auto);
    let (to_b, to_c) = (echo(&b), echo(&c));
    let ep = a.endpoint("a").unwrap();
    let pb = ep.connect(&to_b).unwrap();
    let pc = ep.connect(&to_c).unwrap();
    assert_eq!(
        ep.transport(pb).unwrap(),
        Shm,
        "same node id: shared memory"
    );
    assert_eq!(ep.transport(pc).unwrap(), Tcp, "another node: TCP");
    for seq in 0..50 {
        round_trip(&ep, pb, seq);
        round_trip(&ep, pc, seq);
    }
    assert_eq!(transports_of(&links_after(&a, 50)), [Shm, Tcp]);
    // The accepting sides agree.
    assert_eq!(transports_of(&links_after(&b, 50)), [Shm]);
    assert_eq!(transports_of(&links_after(&c, 50)), [Tcp]);
    drop(ep);
    for e in [a, b, c] {
        e.shutdown().unwrap();
    }
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
fn one_endpoint_reaches_peers_over_shm_tcp_and_udp_at_once() {
    const ROUNDS: u64 = 200;
    let name = name("three");
    let hub = engine(&name, 0, &node("hub"), Transports::only([Shm, Tcp, Udp]));
    // B: same node; C: another node, auto; D: another node, UDP only.
    let b = engine(&name, 1, &node("hub"), Transports::Auto);
    let c = engine(&name, 0, &node("c"), Transports::Auto);
    let d = engine(&name, 1, &node("d"), Transports::only([Udp]));
    let ep = hub.endpoint("hub").unwrap();
    let peers = [
        ep.connect(&echo(&b)).unwrap(),
        ep.connect(&echo(&c)).unwrap(),
        ep.connect(&echo(&d)).unwrap(),
    ];
    let kinds: Vec<_> = peers.iter().map(|&p| ep.transport(p).unwrap()).collect();
    assert_eq!(kinds, [Shm, Tcp, Udp]);
    // All three links carry traffic at the same time: each round sends to
    // every peer before collecting the three echoes (in any order).
    for seq in 0..ROUNDS {
        for &p in &peers {
            send(&ep, p, seq);
        }
        let mut seen = [false; 3];
        for _ in 0..3 {
            let reply = ep.recv_timeout(PATIENCE).expect("every echo comes back");
            let i = peers
                .iter()
                .position(|&p| p == reply.peer())
                .expect("an echo from one of the three peers");
            assert!(!seen[i], "two echoes from peer {i} in round {seq}");
            seen[i] = true;
            check_message(reply.data(), seq);
        }
    }
    assert!(
        ep.recv_timeout(Duration::from_millis(100)).is_err(),
        "an extra echo"
    );
    // One link per peer engine, each on its own transport, all live.
    let links = links_after(&hub, ROUNDS);
    assert_eq!(transports_of(&links), [Shm, Tcp, Udp], "{links:?}");
    for l in &links {
        assert!(!l.lost, "{l:?}");
        assert_eq!((l.sent_msgs, l.recv_msgs), (ROUNDS, ROUNDS), "{l:?}");
    }
    let mut instances: Vec<_> = links.iter().map(|l| l.peer_instance).collect();
    instances.sort_unstable();
    instances.dedup();
    assert_eq!(instances.len(), 3, "three distinct peer engines");
    for (e, kind) in [(&b, Shm), (&c, Tcp), (&d, Udp)] {
        assert_eq!(transports_of(&links_after(e, ROUNDS)), [kind]);
    }
    drop(ep);
    for e in [hub, b, c, d] {
        e.shutdown().unwrap();
    }
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
fn auto_mode_never_picks_udp_even_when_the_peer_prefers_it() {
    assert!(!Transports::Auto.candidates().contains(&Udp));
    assert!(!Transports::Auto.allows(Udp));
    let name = name("noudp");
    let auto = engine(&name, 0, &node("auto"), Transports::Auto);
    let keen = engine(&name, 1, &node("keen"), Transports::only([Udp, Tcp]));
    // Auto initiating toward a peer that would rather use UDP: TCP.
    let ep = auto.endpoint("auto").unwrap();
    let to_keen = ep.connect(&echo(&keen)).unwrap();
    assert_eq!(ep.transport(to_keen).unwrap(), Tcp);
    round_trip(&ep, to_keen, 1);
    // The UDP-first side initiating toward auto: auto does not offer UDP.
    let keen2 = engine(&name, 1, &node("keen2"), Transports::only([Udp, Tcp]));
    let ep2 = keen2.endpoint("keen2").unwrap();
    let to_auto = ep2.connect(&echo(&auto)).unwrap();
    assert_eq!(ep2.transport(to_auto).unwrap(), Tcp);
    round_trip(&ep2, to_auto, 2);
    assert_eq!(transports_of(&links_after(&auto, 1)), [Tcp, Tcp]);
    // And a peer that offers nothing but UDP cannot be reached in auto mode.
    let udp_only = engine(&name, 0, &node("udp"), Transports::only([Udp]));
    match ep.connect(&echo(&udp_only)) {
        Err(Error::NoTransport { wanted, available }) => {
            assert!(!wanted.contains(&Udp), "{wanted:?}");
            assert_eq!(available, [Udp]);
        }
        other => panic!("expected NoTransport, got {other:?}"),
    }
    drop((ep, ep2));
    for e in [auto, keen, keen2, udp_only] {
        e.shutdown().unwrap();
    }
}

#[test]
fn explicit_lists_are_tried_in_the_initiators_order() {
    let name = name("order");
    let udp_first = engine(&name, 0, &node("x"), Transports::only([Udp, Tcp]));
    let tcp_first = engine(&name, 1, &node("y"), Transports::only([Tcp, Udp]));
    let other = engine(&name, 1, &node("z"), Transports::only([Udp, Tcp]));
    let target = echo(&other);
    let ex = udp_first.endpoint("x").unwrap();
    let px = ex.connect(&target).unwrap();
    assert_eq!(ex.transport(px).unwrap(), Udp, "UDP when asked for");
    round_trip(&ex, px, 1);
    let ey = tcp_first.endpoint("y").unwrap();
    let py = ey.connect(&target).unwrap();
    assert_eq!(
        ey.transport(py).unwrap(),
        Tcp,
        "the initiator's first choice"
    );
    round_trip(&ey, py, 2);
    assert_eq!(transports_of(&links_after(&other, 1)), [Tcp, Udp]);
    drop((ex, ey));
    for e in [udp_first, tcp_first, other] {
        e.shutdown().unwrap();
    }
}

#[test]
fn an_impossible_choice_fails_with_no_transport_naming_both_offers() {
    let name = name("none");
    // Shared memory only, toward another node.
    let shm_only = engine(&name, 0, &node("a"), Transports::only([Shm]));
    let elsewhere = engine(&name, 1, &node("c"), Transports::Auto);
    let ep = shm_only.endpoint("a").unwrap();
    let err = ep.connect(&echo(&elsewhere)).unwrap_err();
    let text = err.to_string();
    match err {
        Error::NoTransport { wanted, available } => {
            assert_eq!(wanted, [Shm]);
            assert!(
                available.contains(&Shm) && available.contains(&Tcp) && !available.contains(&Udp),
                "the peer offers what auto mode runs: {available:?}"
            );
        }
        other => panic!("expected NoTransport, got {other:?}"),
    }
    assert!(text.contains("Shm") && text.contains("Tcp"), "{text}");

    // UDP only against TCP only (same node), both ways round.
    let udp = engine(&name, 0, &node("b"), Transports::only([Udp]));
    let tcp = engine(&name, 1, &node("b"), Transports::only([Tcp]));
    let eu = udp.endpoint("u").unwrap();
    let et = tcp.endpoint("t").unwrap();
    for (ep, target, ours, theirs) in [(&eu, et.addr(), Udp, Tcp), (&et, eu.addr(), Tcp, Udp)] {
        let err = ep.connect(&target).unwrap_err();
        let text = err.to_string();
        match err {
            Error::NoTransport { wanted, available } => {
                assert_eq!((wanted, available), (vec![ours], vec![theirs]));
            }
            other => panic!("expected NoTransport, got {other:?}"),
        }
        assert!(
            text.contains(&format!("{ours:?}")) && text.contains(&format!("{theirs:?}")),
            "{text}"
        );
    }
    // Nothing was half set up on either side.
    for e in [&shm_only, &elsewhere, &udp, &tcp] {
        assert!(e.stats().links.is_empty(), "{:?}", e.stats().links);
    }
    drop((ep, eu, et));
    for e in [shm_only, elsewhere, udp, tcp] {
        e.shutdown().unwrap();
    }
}

#[test]
fn comm_transports_is_honoured_and_the_builder_wins() {
    let name = name("env");
    let node_id = node("env");
    // The parent runs in auto mode; each child shares its node id.
    let parent = engine(&name, 0, &node_id, Transports::Auto);
    let addr = echo(&parent).to_string();
    let cases: [(Option<&str>, Option<&str>, &str); 5] = [
        (None, None, "transport shm"),
        (Some("tcp"), None, "transport tcp"),
        (Some("udp"), Some("tcp"), "transport tcp"),
        (
            Some("udp"),
            None,
            "no-transport wanted=[Udp] available=[Shm, Tcp]",
        ),
        (Some("auto"), None, "transport shm"),
    ];
    for (env_transports, builder, expect) in cases {
        let mut env = vec![
            (ENGINE_ENV, name.as_str()),
            (ADDR_ENV, addr.as_str()),
            ("COMM_NODE_ID", node_id.as_str()),
        ];
        if let Some(t) = env_transports {
            env.push(("COMM_TRANSPORTS", t));
        }
        if let Some(b) = builder {
            env.push((BUILDER_ENV, b));
        }
        let mut cmd = role_command_under(&[], "role_env_client", &env);
        if env_transports.is_none() {
            cmd.env_remove("COMM_TRANSPORTS");
        }
        let mut child = ChildGuard(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn the child"),
        );
        let mut out = Lines::new(child.0.stdout.take().unwrap());
        let got = out.expect("result: ", PATIENCE);
        assert_eq!(
            got, expect,
            "COMM_TRANSPORTS={env_transports:?}, builder {builder:?}"
        );
        let status = child.wait_timeout(PATIENCE).expect("the child exits");
        assert!(status.success(), "child: {status}");
    }
    // The parent's side of the four links the children made.
    let links = parent.stats().links;
    let kinds: Vec<_> = links.iter().map(|l| l.transport).collect();
    assert_eq!(kinds, [Shm, Tcp, Tcp, Shm], "{links:?}");
    parent.shutdown().unwrap();
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
#[ignore = "child process role of comm_transports_is_honoured_and_the_builder_wins"]
fn role_env_client() {
    if !is_role("role_env_client") {
        return;
    }
    let mut builder = Engine::builder(&std::env::var(ENGINE_ENV).unwrap())
        .cores(&[1])
        .pool(pool());
    if std::env::var(BUILDER_ENV).is_ok_and(|b| b == "tcp") {
        builder = builder.transports(Transports::only([Tcp]));
    }
    let engine = builder.start().unwrap();
    let ep = engine.endpoint("child").unwrap();
    let addr: Addr = std::env::var(ADDR_ENV).unwrap().parse().unwrap();
    match ep.connect(&addr) {
        Ok(peer) => {
            let kind = ep.transport(peer).unwrap();
            round_trip(&ep, peer, 7);
            assert_eq!(transports_of(&links_after(&engine, 1)), [kind]);
            println!("result: transport {kind}");
        }
        Err(Error::NoTransport { wanted, available }) => {
            println!("result: no-transport wanted={wanted:?} available={available:?}");
        }
        Err(e) => panic!("connect: {e}"),
    }
    drop(ep);
    engine.shutdown().unwrap();
}

// ---- Fall-back when the preferred transport fails to set up ----

/// Log lines this test binary's engines write (warnings and up).
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("comm=info"))
            .with_ansi(false)
            .with_writer(move || SharedWriter(Arc::clone(&sink)))
            .try_init();
        log
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A line that reports a shm set-up failing and the engine falling back.
fn says_it_fell_back(log: &str) -> bool {
    log.lines().any(|l| {
        let l = l.to_lowercase();
        l.contains("shm") && (l.contains("falling back") || l.contains("fell back"))
    })
}

/// The wrapper that gives a child its own, empty `/dev/shm`: a private
/// mount namespace with a fresh tmpfs. `None` (with the reason) when this
/// machine cannot do that.
fn private_shm_wrapper() -> Result<Vec<&'static str>, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root: a private /dev/shm needs a mount namespace".into());
    }
    let wrapper = vec![
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount -t tmpfs -o mode=1777 tmpfs /dev/shm && exec "$0" "$@""#,
    ];
    let probe = std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg("true")
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.success() => Ok(wrapper),
        Ok(out) => Err(format!(
            "cannot give a child a private /dev/shm: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `unshare` (util-linux): {e}")),
    }
}

#[test]
fn a_failed_shm_set_up_falls_back_to_tcp_and_says_so() {
    let wrapper = match private_shm_wrapper() {
        Ok(w) => w,
        Err(reason) => {
            eprintln!("SKIPPED a_failed_shm_set_up_falls_back_to_tcp_and_says_so: {reason}");
            return;
        }
    };
    let log = captured_log();
    let name = name("fallback");
    let node_id = node("shared");
    // The child: same node id, so auto mode tries shared memory first; but
    // it cannot see our segments, so that set-up fails on its side.
    let env = [
        (ENGINE_ENV, name.as_str()),
        ("COMM_NODE_ID", node_id.as_str()),
    ];
    let mut child = ChildGuard(
        role_command_under(&wrapper, "role_private_shm_server", &env)
            .env_remove("COMM_TRANSPORTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child"),
    );
    let mut out = Lines::new(child.0.stdout.take().unwrap());
    assert_eq!(
        out.expect("private-shm-files ", PATIENCE),
        "0",
        "the child has an empty /dev/shm of its own"
    );
    let addr: Addr = out.expect("listening ", PATIENCE).parse().unwrap();

    let parent = engine(&name, 0, &node_id, Transports::Auto);
    let ep = parent.endpoint("parent").unwrap();
    let peer = ep
        .connect(&addr)
        .expect("the link comes up on the next transport");
    assert_eq!(ep.transport(peer).unwrap(), Tcp);
    for seq in 0..100 {
        round_trip(&ep, peer, seq);
    }
    let links = links_after(&parent, 100);
    assert_eq!(links.len(), 1, "one link, no half-built shm one: {links:?}");
    assert_eq!(links[0].transport, Tcp);
    assert!(!links[0].lost);
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        says_it_fell_back(&text),
        "the log says that shm failed and the engine fell back; it holds:\n{text}"
    );

    drop(child.0.stdin.take());
    assert_eq!(
        out.expect("server-link ", PATIENCE),
        "links=1 tcp recv=100 sent=100"
    );
    let status = child.wait_timeout(PATIENCE).expect("the child exits");
    assert!(status.success(), "child: {status}");
    drop(ep);
    parent.shutdown().unwrap();
    // The segment built for the failed shm attempt is gone too.
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
#[ignore = "child process role of a_failed_shm_set_up_falls_back_to_tcp_and_says_so"]
fn role_private_shm_server() {
    if !is_role("role_private_shm_server") {
        return;
    }
    let files = std::fs::read_dir("/dev/shm").unwrap().count();
    println!("private-shm-files {files}");
    let engine = Engine::builder(&std::env::var(ENGINE_ENV).unwrap())
        .cores(&[1])
        .pool(pool())
        .start()
        .unwrap();
    println!("listening {}", echo(&engine));
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    let links = links_after(&engine, 100);
    let l = links.first().expect("a link");
    println!(
        "server-link links={} {} recv={} sent={}",
        links.len(),
        l.transport,
        l.recv_msgs,
        l.sent_msgs
    );
    engine.shutdown().unwrap();
}

#[test]
fn a_peer_whose_shm_set_up_fails_when_it_connects_falls_back_to_tcp() {
    let wrapper = match private_shm_wrapper() {
        Ok(w) => w,
        Err(reason) => {
            eprintln!("SKIPPED a_peer_whose_shm_set_up_fails_...: {reason}");
            return;
        }
    };
    let name = name("fallback2");
    let node_id = node("shared2");
    let parent = engine(&name, 0, &node_id, Transports::Auto);
    let addr = echo(&parent).to_string();
    // This time the child (in its private /dev/shm) initiates: it builds the
    // pair segment where we cannot open it, and logs its fall-back to stderr.
    let env = [
        (ENGINE_ENV, name.as_str()),
        ("COMM_NODE_ID", node_id.as_str()),
        (ADDR_ENV, addr.as_str()),
        ("COMM_LOG", "comm=info"),
    ];
    let mut child = ChildGuard(
        role_command_under(&wrapper, "role_private_shm_client", &env)
            .env_remove("COMM_TRANSPORTS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child"),
    );
    let mut out = Lines::new(child.0.stdout.take().unwrap());
    let mut err = Lines::new(child.0.stderr.take().unwrap());
    assert_eq!(out.expect("result: ", PATIENCE), "transport tcp");
    let status = child.wait_timeout(PATIENCE).expect("the child exits");
    let stderr = err.all(Duration::from_secs(5)).join("\n");
    assert!(status.success(), "child: {status}; stderr:\n{stderr}");
    assert!(
        says_it_fell_back(&stderr),
        "the child's log says shm failed and it fell back; it holds:\n{stderr}"
    );
    let links = parent.stats().links;
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].transport, Tcp);
    parent.shutdown().unwrap();
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
#[ignore = "child process role of a_peer_whose_shm_set_up_fails_when_it_connects_falls_back_to_tcp"]
fn role_private_shm_client() {
    if !is_role("role_private_shm_client") {
        return;
    }
    let filter = std::env::var("COMM_LOG").unwrap_or_else(|_| "comm=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let engine = Engine::builder(&std::env::var(ENGINE_ENV).unwrap())
        .cores(&[1])
        .pool(pool())
        .start()
        .unwrap();
    let ep = engine.endpoint("child").unwrap();
    let addr: Addr = std::env::var(ADDR_ENV).unwrap().parse().unwrap();
    let peer = ep.connect(&addr).unwrap();
    let kind = ep.transport(peer).unwrap();
    for seq in 0..100 {
        round_trip(&ep, peer, seq);
    }
    println!("result: transport {kind}");
    drop(ep);
    engine.shutdown().unwrap();
}
