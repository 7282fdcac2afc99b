//! An echo server and its client in two processes, over shared memory.
//!
//! ```text
//! cargo run --example echo -- server            # prints its address, Ctrl-D to stop
//! cargo run --example echo -- client comm://127.0.0.1:PORT/echo
//! ```
//! With no arguments it runs both: it starts the server as a child process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use comm::{Addr, Engine, Error};

fn server() -> Result<(), Error> {
    let engine = Engine::builder("echo-example").cores(&[1]).start()?;
    // The handler runs on the progress thread and replies in place.
    let addr = engine.serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))?;
    println!("{addr}");
    // Serve until standard input closes.
    for _ in std::io::stdin().lock().lines() {}
    engine.shutdown()
}

fn client(addr: &Addr) -> Result<(), Error> {
    let engine = Engine::builder("echo-example").cores(&[0]).start()?;
    let ep = engine.endpoint("client")?;
    let peer = ep.connect(addr)?;
    println!("connected to {addr} over {}", ep.transport(peer)?);
    let start = Instant::now();
    for i in 0u32..10_000 {
        let mut buf = ep.alloc(4)?;
        buf.copy_from_slice(&i.to_le_bytes());
        ep.send(peer, buf)?;
        let reply = ep.recv_timeout(Duration::from_secs(5))?;
        assert_eq!(reply.data(), i.to_le_bytes());
    }
    println!("10000 round trips in {:?}", start.elapsed());
    drop(ep);
    engine.shutdown()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server()?,
        Some("client") => client(&args.get(1).ok_or("usage: echo client ADDR")?.parse()?)?,
        _ => {
            let mut child = Command::new(std::env::current_exe()?)
                .arg("server")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
            let result = client(&line.trim().parse()?);
            drop(child.stdin.take()); // the server stops when its stdin closes
            child.wait()?;
            result?;
        }
    }
    Ok(())
}
