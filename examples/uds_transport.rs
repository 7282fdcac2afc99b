//! A transport the application brings: comm over Unix-domain stream sockets
//! (abstract addresses, so nothing is left in the file system), registered
//! with `EngineBuilder::transport` and chosen with
//! `Transports::only([TransportKind::Custom("uds")])`.
//!
//! ```text
//! cargo run --example uds_transport
//! ```
//!
//! The tests run comm's transport conformance suite over it
//! (`tests/conformance.rs` includes this file).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use comm::{Connection, Transport};

/// Bytes a connection queues for sending before it pushes back.
const SEND_LIMIT: usize = 4 << 20;

/// Unix-domain sockets in the abstract namespace, one listener per engine.
#[derive(Default)]
pub struct UdsTransport {
    listener: Mutex<Option<UnixListener>>,
}

impl UdsTransport {
    /// A transport that listens once the engine starts.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Transport for UdsTransport {
    fn name(&self) -> &'static str {
        "uds"
    }

    fn listen(&self) -> io::Result<String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "comm-uds-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name)?)?;
        listener.set_nonblocking(true)?;
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
        Ok(name)
    }

    fn connect(&self, addr: &str) -> io::Result<Box<dyn Connection>> {
        let stream = UnixStream::connect_addr(&SocketAddr::from_abstract_name(addr)?)?;
        Ok(Box::new(UdsConnection::new(stream)?))
    }

    fn accept(&self) -> io::Result<Option<Box<dyn Connection>>> {
        let guard = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        let Some(listener) = guard.as_ref() else {
            return Ok(None);
        };
        match listener.accept() {
            Ok((stream, _)) => Ok(Some(Box::new(UdsConnection::new(stream)?))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One stream carrying frames as a 4-byte little-endian length, then the
/// frame. Non-blocking: what the socket does not take waits in `out`.
pub struct UdsConnection {
    stream: UnixStream,
    out: VecDeque<u8>,
    input: Vec<u8>,
    /// Where the next unread frame starts in `input`.
    read: usize,
}

impl UdsConnection {
    fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(UdsConnection {
            stream,
            out: VecDeque::new(),
            input: Vec::new(),
            read: 0,
        })
    }

    /// Writes what the socket takes now.
    fn flush_out(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let (head, _) = self.out.as_slices();
            match self.stream.write(head) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Connection for UdsConnection {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.flush_out()?;
        if !self.out.is_empty() && self.out.len() + frame.len() > SEND_LIMIT {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let len = u32::try_from(frame.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.out.extend(len.to_le_bytes());
        self.out.extend(frame);
        self.flush_out()
    }

    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        // Sending progresses here too: nobody else calls us while idle.
        self.flush_out()?;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let mut frames = 0;
        while let Some(len) = self.input.get(self.read..self.read + 4) {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let start = self.read + 4;
            let Some(frame) = self.input.get(start..start + len) else {
                break;
            };
            f(frame);
            frames += 1;
            self.read = start + len;
        }
        // Keep only the unread tail (memory is reused, not freed).
        self.input.drain(..self.read);
        self.read = 0;
        Ok(frames)
    }
}

#[allow(dead_code)]
fn main() -> Result<(), comm::Error> {
    use comm::{Engine, TransportKind, Transports};
    use std::time::Duration;

    let uds = || Transports::only([TransportKind::Custom("uds")]);
    let server = Engine::builder("uds-demo")
        .cores(&[1])
        .transport(Arc::new(UdsTransport::new()))
        .transports(uds())
        .start()?;
    let addr = server.serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))?;
    let client = Engine::builder("uds-demo")
        .cores(&[0])
        .transport(Arc::new(UdsTransport::new()))
        .transports(uds())
        .start()?;
    let ep = client.endpoint("client")?;
    let peer = ep.connect(&addr)?;
    println!("connected over {}", ep.transport(peer)?);
    for i in 0..5u8 {
        let mut buf = ep.alloc(100_000)?;
        buf.fill(i);
        ep.send(peer, buf)?;
        let reply = ep.recv_timeout(Duration::from_secs(5))?;
        assert!(reply.data().iter().all(|&b| b == i));
        println!("echo {i}: {} bytes", reply.data().len());
    }
    drop(ep);
    client.shutdown()?;
    server.shutdown()
}
