//! Engines in one process: endpoints, connect, handlers and handles over shared
//! memory, engine mismatch, errors and clean shutdown.

mod common;

use common::shm_leftovers;

use std::time::Duration;

use comm::{Engine, Error, TransportKind};

fn engine(name: &str) -> Engine {
    Engine::builder(name)
        .cores(&[0, 1])
        .start()
        .expect("engine starts")
}

#[test]
fn a_handle_talks_to_a_handler_in_another_engine() {
    let name = format!("basics{}", std::process::id());
    let server = engine(&name);
    let addr = server
        .serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))
        .unwrap();
    let client = engine(&name);
    let ep = client.endpoint("client").unwrap();
    let peer = ep.connect(&addr).unwrap();
    assert_eq!(ep.transport(peer).unwrap(), TransportKind::Shm);
    for i in 0u32..1000 {
        let mut buf = ep.alloc(4).unwrap();
        buf.copy_from_slice(&i.to_le_bytes());
        ep.send(peer, buf).unwrap();
        let reply = ep.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(reply.data(), i.to_le_bytes());
    }
    // Counters are published by the progress thread right after its pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.stats().total_received() < 1000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = server.stats();
    assert_eq!(stats.total_received(), 1000);
    assert_eq!(stats.links.len(), 1);
    assert_eq!(stats.links[0].transport, TransportKind::Shm);
    drop(ep);
    client.shutdown().unwrap();
    server.shutdown().unwrap();
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
fn handles_talk_to_handles_both_ways() {
    let name = format!("handles{}", std::process::id());
    let a = engine(&name);
    let b = engine(&name);
    let ea = a.endpoint("a").unwrap();
    let eb = b.endpoint("b").unwrap();
    let to_b = ea.connect(&eb.addr()).unwrap();
    let mut buf = ea.alloc(5).unwrap();
    buf.copy_from_slice(b"hello");
    ea.send(to_b, buf).unwrap();
    let msg = eb.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(msg.data(), b"hello");
    let mut back = eb.alloc(5).unwrap();
    back.copy_from_slice(b"world");
    eb.send(msg.peer(), back).unwrap();
    assert_eq!(
        ea.recv_timeout(Duration::from_secs(10)).unwrap().data(),
        b"world"
    );
}

#[test]
fn engines_of_different_names_never_talk() {
    let a = engine(&format!("left{}", std::process::id()));
    let b = engine(&format!("right{}", std::process::id()));
    b.serve("x", |_, _| Ok(())).unwrap();
    let ep = a.endpoint("a").unwrap();
    let addr = format!("comm://{}/x", b.listen_addr()).parse().unwrap();
    match ep.connect(&addr) {
        Err(Error::EngineMismatch { ours, theirs }) => {
            assert!(ours.starts_with("left") && theirs.starts_with("right"));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // The refusing side counts it too.
    assert_eq!(b.stats().control_rejects, 1);
}

#[test]
fn names_are_unique_and_unknown_endpoints_are_reported() {
    let name = format!("names{}", std::process::id());
    let a = engine(&name);
    let _ep = a.endpoint("one").unwrap();
    assert!(matches!(
        a.endpoint("one"),
        Err(Error::DuplicateEndpoint { .. })
    ));
    assert!(matches!(
        a.endpoint("bad/name"),
        Err(Error::BadAddress { .. })
    ));
    let b = engine(&name);
    let ep = b.endpoint("two").unwrap();
    let missing = format!("comm://{}/nobody", a.listen_addr())
        .parse()
        .unwrap();
    assert!(matches!(
        ep.connect(&missing),
        Err(Error::UnknownEndpoint { .. })
    ));
}

#[test]
fn recv_times_out_and_fails_after_shutdown() {
    let e = engine(&format!("timeout{}", std::process::id()));
    let ep = e.endpoint("lonely").unwrap();
    assert!(matches!(
        ep.recv_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    let buf = ep.alloc(1).unwrap();
    e.shutdown().unwrap();
    assert!(matches!(ep.recv(), Err(Error::Closed)));
    assert!(matches!(
        ep.send(comm::PeerId::new(0), buf),
        Err(Error::Closed)
    ));
}

#[test]
fn backpressure_returns_the_buffer_and_loses_nothing() {
    let name = format!("full{}", std::process::id());
    let server = engine(&name);
    // A receiver that does not read yet: its queue, then the ring, then the
    // sender's submit queue fill up.
    let slow = server.endpoint("slow").unwrap();
    let client = engine(&name);
    let ep = client.endpoint("c").unwrap();
    let peer = ep.connect(&slow.addr()).unwrap();
    let mut sent = 0u64;
    let bounced = loop {
        let mut buf = ep.alloc(8).unwrap();
        buf.copy_from_slice(&sent.to_le_bytes());
        match ep.send(peer, buf) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock(buf)) => break buf,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 1_000_000, "send never pushed back");
    };
    assert_eq!(bounced.len(), 8, "the refused buffer comes back intact");
    for i in 0..sent {
        let msg = slow.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(msg.data(), i.to_le_bytes(), "in order, none lost");
    }
    assert!(matches!(
        slow.recv_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
}

#[test]
fn messages_from_empty_to_four_mebibytes_round_trip_through_a_handler() {
    let name = format!("large{}", std::process::id());
    let server = engine(&name);
    let addr = server
        .serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))
        .unwrap();
    let client = engine(&name);
    let ep = client.endpoint("c").unwrap();
    let peer = ep.connect(&addr).unwrap();
    for (round, len) in [0usize, 1, 447, 448, 449, 4096, 65_536, 1 << 20, 4 << 20]
        .into_iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        let mut buf = ep.alloc(len).unwrap();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i * 31 + round) as u8;
        }
        ep.send(peer, buf).unwrap();
        let reply = ep.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(reply.data().len(), len);
        assert!(
            reply
                .data()
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i * 31 + round) as u8),
            "corrupt {len}-byte reply"
        );
    }
    assert_eq!(
        server.stats().shards.iter().map(|s| s.errors).sum::<u64>(),
        0
    );
    assert_eq!(
        client.stats().shards.iter().map(|s| s.errors).sum::<u64>(),
        0
    );
}

#[test]
fn large_messages_stream_between_handles_without_leaking_buffers() {
    let name = format!("stream{}", std::process::id());
    let a = engine(&name);
    let b = engine(&name);
    let rx = b.endpoint("rx").unwrap();
    let tx = a.endpoint("tx").unwrap();
    let peer = tx.connect(&rx.addr()).unwrap();
    let producer = std::thread::spawn(move || {
        for i in 0u32..200 {
            let mut buf = loop {
                match tx.alloc(100_000) {
                    Ok(buf) => break buf,
                    // All 64 KiB+ buffers are lent out: wait for releases.
                    Err(Error::NoBuffers { .. }) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            buf[..4].copy_from_slice(&i.to_le_bytes());
            let mut pending = buf;
            loop {
                match tx.send(peer, pending) {
                    Ok(()) => break,
                    Err(Error::WouldBlock(back)) => pending = back,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        tx
    });
    for i in 0u32..200 {
        let msg = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(msg.data().len(), 100_000);
        assert_eq!(msg.data()[..4], i.to_le_bytes());
    }
    let _tx = producer.join().unwrap();
}

#[test]
fn garbage_and_oversized_handshakes_are_refused_without_harm() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let name = format!("garbage{}", std::process::id());
    let server = engine(&name);
    let addr = server
        .serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))
        .unwrap();
    let hostile: [&[u8]; 4] = [
        &u32::MAX.to_le_bytes(),                // announces 4 GiB
        &[12, 0, 0, 0, 1, 0, 1, 0, 0xff, 0xff], // truncated Hello
        &[4, 0, 0, 0, 9, 9, 9, 9],              // unknown version
        b"GET / HTTP/1.1\r\n\r\n",              // not comm at all
    ];
    for bytes in hostile {
        let mut s = TcpStream::connect(server.listen_addr()).unwrap();
        s.write_all(bytes).unwrap();
        drop(s.shutdown(std::net::Shutdown::Write));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = Vec::new();
        // The server closes the connection (possibly with an error reply).
        let _ = s.read_to_end(&mut sink);
    }
    assert_eq!(server.stats().control_rejects, hostile.len() as u64);
    // The engine still serves well-behaved peers.
    let client = engine(&name);
    let ep = client.endpoint("c").unwrap();
    let peer = ep.connect(&addr).unwrap();
    ep.send(peer, ep.alloc(3).unwrap()).unwrap();
    assert_eq!(
        ep.recv_timeout(Duration::from_secs(10))
            .unwrap()
            .data()
            .len(),
        3
    );
}

#[test]
fn what_was_accepted_is_delivered_even_if_the_sender_stops_at_once() {
    let name = format!("flush{}", std::process::id());
    let server = engine(&name);
    let rx = server.endpoint("rx").unwrap();
    let client = engine(&name);
    let ep = client.endpoint("tx").unwrap();
    let peer = ep.connect(&rx.addr()).unwrap();
    for i in 0u32..500 {
        let mut buf = ep.alloc(4).unwrap();
        buf.copy_from_slice(&i.to_le_bytes());
        ep.send(peer, buf).unwrap();
    }
    // Dropping the endpoint and stopping the engine right away loses nothing.
    drop(ep);
    client.shutdown().unwrap();
    for i in 0u32..500 {
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap().data(),
            i.to_le_bytes()
        );
    }
}

#[test]
fn shutdown_unlinks_segments_even_while_endpoints_live() {
    let name = format!("unlink{}", std::process::id());
    let e = engine(&name);
    let ep = e.endpoint("still-here").unwrap();
    let _buf = ep.alloc(100).unwrap();
    e.shutdown().unwrap();
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
    drop(ep);
}

#[test]
fn a_panicking_handler_does_not_stop_its_shard() {
    let name = format!("panic{}", std::process::id());
    let server = engine(&name);
    let addr = server
        .serve("moody", |ctx, msg| {
            if msg.data() == b"boom" {
                panic!("handler panics on purpose");
            }
            ctx.reply(msg, msg.data())
        })
        .unwrap();
    let client = engine(&name);
    let ep = client.endpoint("c").unwrap();
    let peer = ep.connect(&addr).unwrap();
    for word in [&b"boom"[..], b"fine"] {
        let mut buf = ep.alloc(4).unwrap();
        buf.copy_from_slice(word);
        ep.send(peer, buf).unwrap();
    }
    assert_eq!(
        ep.recv_timeout(Duration::from_secs(10)).unwrap().data(),
        b"fine"
    );
}
