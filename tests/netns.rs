//! Two "nodes" on one machine: two network namespaces joined by a veth pair,
//! one engine process in each with its own `COMM_NODE_ID`. In auto mode they
//! link over TCP (different nodes, so no shared memory); forced to UDP with
//! `COMM_TRANSPORTS=udp` on both sides, the same pair links over UDP. Either
//! way checksummed messages of many sizes come back in order, exactly once.
//!
//! Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and `ip`; without them the
//! test prints why and passes. The namespaces (and with them the veth pair)
//! are removed on the way out, also when the test fails.

mod common;

use std::collections::VecDeque;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use comm::{Addr, Buf, Endpoint, Engine, Error, PeerId, TransportKind};
use common::{check_message, is_role, role_command_under, write_message, ChildGuard, Lines};

const SERVER: &str = "role_netns_echo_server";
const CLIENT: &str = "role_netns_client";
/// The server's address, for the client.
const ADDR_ENV: &str = "COMM_TEST_ADDR";
/// Messages the client sends (and the server must see).
const COUNT_ENV: &str = "COMM_TEST_COUNT";
/// The largest message the client sends.
const MAX_ENV: &str = "COMM_TEST_MAX";
/// The transport the client must get.
const EXPECT_ENV: &str = "COMM_TEST_EXPECT";
/// Prefix of this test's namespace names: `commt-<pid>-<a|b>`.
const NS_PREFIX: &str = "commt-";
const SALT: u64 = 0x6e65_746e;
/// How long a child may take for anything (the machine is noisy; this is
/// not a timing assertion, only a bound on a hang).
const PATIENCE: Duration = Duration::from_secs(60);

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"))
}

/// Runs `ip` with `args`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Keeps a variable out of a child's environment unless the test sets it:
/// whatever the test runner's environment holds must not leak in.
trait EnvRemoveUnless {
    fn env_remove_unless(&mut self, key: &str, set: bool) -> &mut Self;
}

impl EnvRemoveUnless for Command {
    fn env_remove_unless(&mut self, key: &str, set: bool) -> &mut Self {
        if set {
            self
        } else {
            self.env_remove(key)
        }
    }
}

/// Two network namespaces joined by a veth pair, `10.X.Y.1/24` in the first
/// and `10.X.Y.2/24` in the second. Dropping it deletes both namespaces,
/// which destroys the veth pair with them.
struct Namespaces {
    names: Vec<String>,
    veths: [String; 2],
    ips: [String; 2],
}

impl Namespaces {
    /// Creates the pair, or says why this machine cannot (the test is then
    /// skipped). A failure after the namespaces exist is a test failure.
    fn create() -> Result<Namespaces, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root: creating network namespaces needs it".into());
        }
        if Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Err("the `ip` command (iproute2) is not installed".into());
        }
        remove_stale();
        let pid = std::process::id();
        let (x, y) = (100 + (pid >> 8) % 100, pid % 256);
        let mut nets = Namespaces {
            names: Vec::new(),
            veths: [format!("cv{pid}a"), format!("cv{pid}b")],
            ips: [format!("10.{x}.{y}.1"), format!("10.{x}.{y}.2")],
        };
        for side in ["a", "b"] {
            let name = format!("{NS_PREFIX}{pid}-{side}");
            ip(&["netns", "add", &name])
                .map_err(|e| format!("cannot create a network namespace: {e}"))?;
            nets.names.push(name);
        }
        let (ns, veth) = (&nets.names, &nets.veths);
        ip(&[
            "link", "add", &veth[0], "netns", &ns[0], "type", "veth", "peer", "name", &veth[1],
            "netns", &ns[1],
        ])
        .map_err(|e| format!("cannot create a veth pair: {e}"))?;
        for i in 0..2 {
            let cidr = format!("{}/24", nets.ips[i]);
            let steps: [&[&str]; 3] = [
                &["-n", &ns[i], "addr", "add", &cidr, "dev", &veth[i]],
                &["-n", &ns[i], "link", "set", "lo", "up"],
                &["-n", &ns[i], "link", "set", &veth[i], "up"],
            ];
            for step in steps {
                if let Err(e) = ip(step) {
                    panic!("setting up namespace {}: {e}", ns[i]);
                }
            }
        }
        Ok(nets)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("cleanup: {e}");
            }
        }
        // Only there if creating it in the namespaces half worked.
        for veth in &self.veths {
            let _ = ip(&["link", "del", veth]);
        }
    }
}

/// Deletes namespaces an earlier run of this test left behind when it was
/// killed (their names carry the pid of a process that no longer exists).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The length of message `seq`: the first is the smallest (16 bytes), the
/// second the largest (`max`); then mostly small ones, some medium, and one
/// in thirty-two large (an eighth of `max` up to `max`).
fn size_of(seq: u64, max: usize) -> usize {
    let mut h = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    let pick = |lo: usize, hi: usize| lo + ((h >> 8) % (hi - lo + 1) as u64) as usize;
    match (seq, h % 32) {
        (0, _) => 16,
        (1, _) => max,
        (_, 0) => pick(max / 8, max),
        (_, 1..=5) => pick(1024, 64 << 10).min(max),
        _ => pick(16, 1024),
    }
}

/// Sends `count` checksummed messages to the echo endpoint `peer` with a
/// bounded number (and volume) in flight, and checks every reply: from
/// `peer`, in order, the right length and checksum, and no extra one.
fn echo_stream(ep: &Endpoint, peer: PeerId, count: u64, max: usize) {
    const WINDOW_MSGS: usize = 16;
    // Below the engine's per-connection send backlog, so the echo handler's
    // replies always fit (a reply that does not fit would be dropped).
    const WINDOW_BYTES: usize = 2 << 20;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
    let mut bytes = 0usize;
    let mut next = 0u64;
    let mut pending: Option<(u64, usize, Buf)> = None;
    let mut received = 0u64;
    while received < count {
        assert!(
            Instant::now() < deadline,
            "stalled after {received} replies"
        );
        loop {
            let (seq, len, buf) = match pending.take() {
                Some(p) => p,
                None => {
                    let len = size_of(next, max);
                    let full = in_flight.len() >= WINDOW_MSGS
                        || (!in_flight.is_empty() && bytes + len > WINDOW_BYTES);
                    if next == count || full {
                        break;
                    }
                    let mut buf = match ep.alloc(len) {
                        Ok(b) => b,
                        Err(Error::NoBuffers { .. }) => break,
                        Err(e) => panic!("alloc({len}): {e}"),
                    };
                    assert_eq!(write_message(next, SALT, &mut buf, len), len);
                    next += 1;
                    (next - 1, len, buf)
                }
            };
            match ep.send(peer, buf) {
                Ok(()) => {
                    in_flight.push_back((seq, len));
                    bytes += len;
                }
                Err(Error::WouldBlock(buf)) => {
                    pending = Some((seq, len, buf));
                    break;
                }
                Err(e) => panic!("send of message {seq}: {e}"),
            }
        }
        match ep.recv_timeout(Duration::from_millis(20)) {
            Ok(msg) => {
                assert_eq!(msg.peer(), peer, "a reply from someone else");
                let (seq, len) = in_flight
                    .pop_front()
                    .unwrap_or_else(|| panic!("a reply nobody asked for after {received}"));
                assert_eq!(msg.data().len(), len, "length of reply {seq}");
                check_message(msg.data(), seq);
                bytes -= len;
                received += 1;
            }
            Err(Error::Timeout) => {}
            Err(e) => panic!("recv after {received} replies: {e}"),
        }
    }
    // Exactly once: nothing more comes.
    match ep.recv_timeout(Duration::from_millis(200)) {
        Err(Error::Timeout) => {}
        Ok(msg) => panic!("an extra reply of {} bytes", msg.data().len()),
        Err(e) => panic!("recv: {e}"),
    }
}

/// Waits (bounded) until the engine's only link has counted `count` messages
/// each way: counters are published by the progress thread once per pass.
fn settled_link(engine: &Engine, count: u64) -> comm::LinkStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = engine.stats();
        assert_eq!(stats.links.len(), 1, "one link per peer engine: {stats:?}");
        let link = stats.links[0].clone();
        if (link.sent_msgs >= count && link.recv_msgs >= count) || Instant::now() > deadline {
            return link;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One round: an echo server in the first namespace, a client in the
/// second, both configured through the environment only.
fn round(
    nets: &Namespaces,
    transports: Option<&str>,
    expect: TransportKind,
    count: u64,
    max: usize,
) {
    let pid = std::process::id();
    let engine = format!("netns{pid}");
    let count_s = count.to_string();
    let max_s = max.to_string();
    let expect_s = expect.to_string();
    let server_node = format!("node-server-{pid}");
    let client_node = format!("node-client-{pid}");
    let server_listen = format!("{}:0", nets.ips[0]);
    let client_listen = format!("{}:0", nets.ips[1]);
    let mut common_env = vec![
        ("COMM_ENGINE", engine.as_str()),
        (COUNT_ENV, count_s.as_str()),
        (EXPECT_ENV, expect_s.as_str()),
    ];
    if let Some(t) = transports {
        common_env.push(("COMM_TRANSPORTS", t));
    }

    let mut server_env = common_env.clone();
    server_env.extend([
        ("COMM_NODE_ID", server_node.as_str()),
        ("COMM_LISTEN", server_listen.as_str()),
    ]);
    let mut server = ChildGuard(
        role_command_under(
            &["ip", "netns", "exec", &nets.names[0]],
            SERVER,
            &server_env,
        )
        .env_remove_unless("COMM_TRANSPORTS", transports.is_some())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the server"),
    );
    let mut server_out = Lines::new(server.0.stdout.take().unwrap());
    let addr = server_out.expect("listening ", PATIENCE);
    let parsed: Addr = addr.parse().expect("the server prints its address");
    assert_eq!(
        parsed.control().ip().to_string(),
        nets.ips[0],
        "the server listens on its veth address (COMM_LISTEN)"
    );

    let mut client_env = common_env.clone();
    client_env.extend([
        ("COMM_NODE_ID", client_node.as_str()),
        ("COMM_LISTEN", client_listen.as_str()),
        (ADDR_ENV, addr.as_str()),
        (MAX_ENV, max_s.as_str()),
    ]);
    let mut client = ChildGuard(
        role_command_under(
            &["ip", "netns", "exec", &nets.names[1]],
            CLIENT,
            &client_env,
        )
        .env_remove_unless("COMM_TRANSPORTS", transports.is_some())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the client"),
    );
    let mut client_out = Lines::new(client.0.stdout.take().unwrap());
    assert_eq!(client_out.expect("transport ", PATIENCE), expect_s);
    assert_eq!(
        client_out.expect("done ", Duration::from_secs(180)),
        count_s
    );
    let status = client.wait_timeout(PATIENCE).expect("the client exits");
    assert!(status.success(), "client: {status}");

    // Closing its stdin tells the server to report and stop.
    drop(server.0.stdin.take());
    let link = server_out.expect("server-link ", PATIENCE);
    assert_eq!(
        link,
        format!("{expect_s} recv={count} sent={count} errors=0"),
        "the server saw every message once and answered each"
    );
    let status = server.wait_timeout(PATIENCE).expect("the server exits");
    assert!(status.success(), "server: {status}");
}

#[test]
fn two_nodes_in_network_namespaces_link_over_tcp_in_auto_mode_and_over_udp_when_forced() {
    let nets = match Namespaces::create() {
        Ok(n) => n,
        Err(reason) => {
            eprintln!("SKIPPED two_nodes_in_network_namespaces_...: {reason}");
            return;
        }
    };
    // Auto mode, different node ids: TCP; messages up to 1 MiB.
    round(&nets, None, TransportKind::Tcp, 1000, 1 << 20);
    // The same pair forced to UDP on both sides; messages up to 256 KiB.
    round(&nets, Some("udp"), TransportKind::Udp, 1000, 256 << 10);
    // Both engines shut down cleanly: nothing of theirs is left in /dev/shm
    // (which the namespaces share with us).
    let prefix = format!("comm-netns{}-", std::process::id());
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

#[test]
#[ignore = "child process role of two_nodes_in_network_namespaces_..."]
fn role_netns_echo_server() {
    if !is_role(SERVER) {
        return;
    }
    // Name, node id, listen address and transports come from COMM_*.
    let engine = Engine::start(&[1]).unwrap();
    let addr = engine
        .serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))
        .unwrap();
    println!("listening {addr}");
    // Runs until the test closes our stdin (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let count: u64 = env(COUNT_ENV).parse().unwrap();
    let link = settled_link(&engine, count);
    println!(
        "server-link {} recv={} sent={} errors={}",
        link.transport, link.recv_msgs, link.sent_msgs, link.errors
    );
    engine.shutdown().unwrap();
}

#[test]
#[ignore = "child process role of two_nodes_in_network_namespaces_..."]
fn role_netns_client() {
    if !is_role(CLIENT) {
        return;
    }
    let engine = Engine::start(&[0]).unwrap();
    let ep = engine.endpoint("client").unwrap();
    let addr: Addr = env(ADDR_ENV).parse().unwrap();
    let peer = ep.connect(&addr).unwrap();
    let kind = ep.transport(peer).unwrap();
    println!("transport {kind}");
    let expect: TransportKind = env(EXPECT_ENV).parse().unwrap();
    assert_eq!(kind, expect, "the transport chosen");
    let count: u64 = env(COUNT_ENV).parse().unwrap();
    let max: usize = env(MAX_ENV).parse().unwrap();
    echo_stream(&ep, peer, count, max);
    let link = settled_link(&engine, count);
    assert_eq!(link.transport, expect);
    assert!(!link.lost, "{link:?}");
    assert_eq!((link.sent_msgs, link.recv_msgs), (count, count), "{link:?}");
    assert_eq!(link.errors, 0, "{link:?}");
    println!("done {count}");
    drop(ep);
    engine.shutdown().unwrap();
}
