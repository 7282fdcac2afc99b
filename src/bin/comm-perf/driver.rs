//! The two sides of a measurement. The server answers on its progress thread
//! (`echo`, `sink`) or on an application thread (`echo-handle`,
//! `sink-handle`). The client drives `handler` mode from a handler on its own
//! progress thread, so each side has exactly one busy thread, and `handle`
//! mode from the main thread.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use comm::{
    Ctx, Endpoint, Engine, Error, Msg, PeerId, PoolConfig, SizeClass, TransportKind, Transports,
};

use crate::cli::{Mode, RunArgs, ServerArgs, Test, TransportArg, UdpModeArg};
use crate::clock::{Clock, Ticks};
use crate::report::{summarize, Row};

const ENGINE: &str = "comm-perf";
/// Streams of small messages are acknowledged every this many messages;
/// large ones (sent as descriptors) one by one, so buffers flow back steadily.
const ACK_EVERY: usize = 16;
const SMALL: usize = 256;
/// Most messages in flight in a stream.
const WINDOW: usize = 512;
/// Most bytes in flight in a stream (at least one message): enough to keep
/// the sockets of a link full, not so much that the sender cycles through
/// every pool buffer and sends from memory long out of cache.
const WINDOW_BYTES: usize = 8 << 20;

/// Messages of `size` bytes a stream keeps in flight.
fn window(size: usize) -> usize {
    (WINDOW_BYTES / size.max(1)).clamp(1, WINDOW)
}
static ZEROS: [u8; SMALL] = [0; SMALL];
/// Largest streamed message copied from application memory.
const MAX_SOURCE: usize = 4 << 20;

/// Enough large buffers to keep a stream of 1 MiB messages in flight over a
/// network link (they wait for the kernel's zero-copy notification).
fn pool() -> PoolConfig {
    let class = |size: usize, count: usize| SizeClass { size, count };
    PoolConfig::new([
        class(256, 4096),
        class(4096, 512),
        class(64 << 10, 256),
        class(1 << 20, 64),
        class(4 << 20, 8),
    ])
    .expect("valid pool classes")
}

fn acked_per_ack(size: usize) -> usize {
    if size > SMALL {
        1
    } else {
        ACK_EVERY
    }
}

fn wants_ack(size: usize, count: u64) -> bool {
    size > SMALL || count % ACK_EVERY as u64 == 0
}

/// Runs the server until standard input closes.
pub fn serve(args: &ServerArgs) -> Result<(), Error> {
    // The server takes whatever transport a client forces.
    let engine = Engine::builder(ENGINE)
        .pool(pool())
        .cores(&[args.core])
        .private_fd_table(args.fd_table.private())
        .listen(args.listen)
        .transports(Transports::only([
            TransportKind::Shm,
            TransportKind::Tcp,
            TransportKind::Udp,
        ]))
        .start()?;
    engine.serve("echo", |ctx, msg| {
        send_sized(ctx, msg.peer(), msg.data().len())
    })?;
    let mut count = 0u64;
    engine.serve("sink", move |ctx, msg| {
        count += 1;
        if wants_ack(msg.data().len(), count) {
            ctx.send(msg.peer(), &[])?;
        }
        Ok(())
    })?;
    // One application thread per handle endpoint, each asleep in `recv`
    // while idle, so that in handler mode nothing competes with the
    // progress thread for its core.
    let stop = Arc::new(AtomicBool::new(false));
    let apps: Vec<_> = ["echo-handle", "sink-handle"]
        .into_iter()
        .map(|name| {
            let ep = engine.endpoint(name)?;
            let stop = Arc::clone(&stop);
            let echo = name == "echo-handle";
            Ok(std::thread::spawn(move || handle_server(&ep, echo, &stop)))
        })
        .collect::<Result<_, Error>>()?;
    println!("listening {}", engine.listen_addr());
    std::io::stdout().flush()?;
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    stop.store(true, Ordering::Release);
    for app in apps {
        let _ = app.join();
    }
    engine.shutdown()
}

/// An application thread of the server for `handle` mode: answers every
/// message (`echo`) or every `ACK_EVERY`th (sink).
fn handle_server(ep: &Endpoint, echo: bool, stop: &AtomicBool) {
    let mut count = 0u64;
    while !stop.load(Ordering::Acquire) {
        let Ok(m) = ep.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        count += 1;
        if echo {
            send_retrying(ep, m.peer(), m.data().len(), stop);
        } else if wants_ack(m.data().len(), count) {
            send_retrying(ep, m.peer(), 0, stop);
        }
    }
}

fn send_retrying(ep: &Endpoint, peer: PeerId, size: usize, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let Ok(buf) = ep.alloc(size) else {
            std::thread::yield_now();
            continue;
        };
        match ep.send(peer, buf) {
            Ok(()) => return,
            Err(_) => std::thread::yield_now(),
        }
    }
}

/// Sends `size` bytes to `peer` from a handler: small ones inline, large ones
/// as a fresh pool buffer (no copy; its contents are whatever the pool held).
fn send_sized(ctx: &mut Ctx<'_>, peer: PeerId, size: usize) -> Result<(), Error> {
    if size <= SMALL {
        ctx.send(peer, &ZEROS[..size])
    } else {
        let buf = ctx.alloc(size)?;
        ctx.send_buf(peer, buf)
    }
}

struct Job {
    test: Test,
    size: usize,
    total: usize,
    warmup: usize,
    target: PeerId,
    me: PeerId,
    /// Streams copy their payload into each message (the copy path). Over
    /// shared memory a pool buffer would cross by reference, so streams
    /// copy there; over a network the bytes are copied onto the wire
    /// anyway, so streams send pool buffers as they are, the way
    /// `ucx_perftest` sends one user buffer over and over.
    copy: bool,
}

struct Outcome {
    /// Round trips (lat), in nanoseconds.
    samples: Vec<u64>,
    elapsed: Duration,
}

struct Active {
    job: Job,
    /// Where streamed messages are copied from (the copy path of `bw`).
    source: Arc<Vec<u8>>,
    sent: usize,
    delivered: usize,
    samples: Vec<u64>,
    last: Ticks,
    started: Instant,
    poked: bool,
}

/// The client's handler: takes a job when kicked, then runs it to the end.
fn driver(
    jobs: mpsc::Receiver<Job>,
    done: mpsc::Sender<Outcome>,
    clock: Clock,
) -> impl FnMut(&mut Ctx<'_>, &Msg) -> Result<(), Error> + Send {
    let mut active: Option<Active> = None;
    let source: Arc<Vec<u8>> = Arc::new((0..MAX_SOURCE).map(|i| i as u8).collect());
    move |ctx, msg| {
        let from_target = active.as_ref().is_some_and(|a| msg.peer() == a.job.target);
        if active.is_none() {
            let Ok(job) = jobs.try_recv() else {
                return Ok(());
            };
            active = Some(Active {
                source: Arc::clone(&source),
                samples: Vec::with_capacity(job.total + job.warmup),
                job,
                sent: 0,
                delivered: 0,
                last: clock.now(),
                started: Instant::now(),
                poked: false,
            });
        }
        let a = active.as_mut().expect("set above");
        if from_target {
            match a.job.test {
                Test::Lat => {
                    // One clock read per round trip: this reply's arrival is
                    // also the next request's departure.
                    let now = clock.now();
                    a.samples.push(clock.nanos(a.last, now));
                    a.last = now;
                    a.delivered += 1;
                }
                Test::Bw | Test::Rate => a.delivered += acked_per_ack(a.job.size),
            }
        } else {
            a.poked = false;
        }
        let finished = match a.job.test {
            Test::Lat => a.delivered == a.job.total + a.job.warmup,
            Test::Bw | Test::Rate => a.delivered >= a.job.total,
        };
        if finished {
            let a = active.take().expect("active");
            let warm = if a.job.test == Test::Lat {
                a.job.warmup
            } else {
                0
            };
            let _ = done.send(Outcome {
                samples: a.samples[warm.min(a.samples.len())..].to_vec(),
                elapsed: a.started.elapsed(),
            });
            return Ok(());
        }
        pump(ctx, a, &clock)
    }
}

/// Sends what the job allows now; when a send cannot go out (ring full, no
/// buffer free), pokes the driver itself so it runs again soon.
fn pump(ctx: &mut Ctx<'_>, a: &mut Active, clock: &Clock) -> Result<(), Error> {
    loop {
        let may_send = match a.job.test {
            Test::Lat => a.sent == a.delivered,
            Test::Bw | Test::Rate => {
                a.sent < a.job.total && a.sent - a.delivered < window(a.job.size)
            }
        };
        if !may_send {
            return Ok(());
        }
        if a.sent == 0 {
            a.last = clock.now();
        }
        let sent = match a.job.test {
            // Latency: the zero-copy path (a pool buffer goes out as it is).
            Test::Lat => send_sized(ctx, a.job.target, a.job.size),
            // Streams: the copy path, as an application sending its own data.
            Test::Bw | Test::Rate => match a.source.get(..a.job.size) {
                Some(data) if a.job.copy => ctx.send(a.job.target, data),
                _ => send_sized(ctx, a.job.target, a.job.size),
            },
        };
        match sent {
            Ok(()) => a.sent += 1,
            Err(Error::Full | Error::NoBuffers { .. }) => {
                if !a.poked {
                    a.poked = true;
                    ctx.send(a.job.me, &[])?;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs every planned measurement, one client engine per transport, and
/// reports one row each.
pub fn client(server: &str, run: &RunArgs) -> Result<Vec<Row>, Error> {
    let plan = run.plan();
    let mut transports: Vec<TransportArg> = Vec::new();
    for &(t, ..) in &plan {
        if !transports.contains(&t) {
            transports.push(t);
        }
    }
    if transports.contains(&TransportArg::Verbs) {
        return Err(Error::Config(
            "verbs is not built into this comm-perf (it needs the verbs feature and an HCA); use shm, tcp or udp",
        ));
    }
    let mut rows = Vec::new();
    for t in transports {
        let items: Vec<(Mode, Test, usize)> = plan
            .iter()
            .filter(|p| p.0 == t)
            .map(|&(_, m, test, size)| (m, test, size))
            .collect();
        rows.extend(client_over(server, run, t, &items)?);
    }
    Ok(rows)
}

/// Connects over transport `t` and runs `items`.
fn client_over(
    server: &str,
    run: &RunArgs,
    t: TransportArg,
    items: &[(Mode, Test, usize)],
) -> Result<Vec<Row>, Error> {
    let engine = Engine::builder(ENGINE)
        .pool(pool())
        .cores(&[run.core])
        .private_fd_table(run.fd_table.private())
        .transports(t.transports())
        .udp_mode(run.udp_mode.mode())
        .start()?;
    let (job_tx, job_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let clock = Clock::calibrate();
    let driver_addr = engine.serve("driver", driver(job_rx, done_tx, clock))?;
    let kick = engine.endpoint("kick")?;
    let me = kick.connect(&driver_addr)?;
    let at = |name: &str| -> Result<PeerId, Error> {
        kick.connect(&format!("comm://{server}/{name}").parse()?)
    };
    let (echo, sink) = (at("echo")?, at("sink")?);
    let (echo_h, sink_h) = (at("echo-handle")?, at("sink-handle")?);
    let mut transport = kick.transport(echo)?.to_string();
    if transport == "udp" && run.udp_mode == UdpModeArg::Datagram {
        transport.push_str("-datagram");
    }
    let mut rows = Vec::new();
    for &(mode, test, size) in items {
        let iters = run.iters_for(test, size);
        let total = match test {
            Test::Lat => iters,
            Test::Bw | Test::Rate => iters.next_multiple_of(acked_per_ack(size)),
        };
        let outcome = match mode {
            Mode::Handler => {
                let target = if test == Test::Lat { echo } else { sink };
                let job = Job {
                    test,
                    size,
                    total,
                    warmup: total / 10,
                    target,
                    me,
                    copy: transport == "shm",
                };
                job_tx.send(job).map_err(|_| Error::Closed)?;
                kick.send(me, kick.alloc(0)?)?;
                done_rx
                    .recv_timeout(Duration::from_secs(300))
                    .map_err(|_| Error::Timeout)?
            }
            Mode::Handle => {
                let target = if test == Test::Lat { echo_h } else { sink_h };
                let copy = transport == "shm";
                by_handle(&kick, target, test, size, total, copy, &clock)?
            }
        };
        rows.push(row(&transport, mode, test, size, total, outcome));
    }
    drop(kick);
    engine.shutdown()?;
    Ok(rows)
}

/// `handle` mode: the main thread sends and receives through an endpoint.
fn by_handle(
    ep: &Endpoint,
    target: PeerId,
    test: Test,
    size: usize,
    total: usize,
    copy: bool,
    clock: &Clock,
) -> Result<Outcome, Error> {
    let warmup = if test == Test::Lat { total / 10 } else { 0 };
    let source: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut samples = Vec::with_capacity(total + warmup);
    let started = Instant::now();
    let (mut sent, mut delivered) = (0usize, 0usize);
    while delivered < total + warmup {
        let window = if test == Test::Lat { 1 } else { window(size) };
        while sent < total + warmup && sent - delivered < window {
            let Ok(mut buf) = ep.alloc(size) else { break };
            if test != Test::Lat && copy {
                // Streams take the copy path, as in handler mode.
                buf.copy_from_slice(&source[..size]);
            }
            let t = clock.now();
            match ep.send(target, buf) {
                Ok(()) => sent += 1,
                Err(Error::WouldBlock(_)) => break,
                Err(e) => return Err(e),
            }
            if test == Test::Lat {
                ep.recv_timeout(Duration::from_secs(30))?;
                samples.push(clock.nanos(t, clock.now()));
                delivered += 1;
            }
        }
        if test != Test::Lat {
            if let Ok(_ack) = ep.recv_timeout(Duration::from_secs(30)) {
                delivered += acked_per_ack(size);
            }
        }
    }
    Ok(Outcome {
        samples: samples.split_off(warmup.min(samples.len())),
        elapsed: started.elapsed(),
    })
}

fn row(transport: &str, mode: Mode, test: Test, size: usize, iters: usize, mut o: Outcome) -> Row {
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let (p50, p99, mean) = summarize(&mut o.samples);
    let (msg_per_s, bytes_per_s) = match test {
        Test::Lat => (0.0, 0.0),
        Test::Bw | Test::Rate => (iters as f64 / secs, (iters * size) as f64 / secs),
    };
    Row {
        transport: transport.to_owned(),
        mode,
        test,
        size,
        iters,
        // One-way latency is half the round trip.
        p50_ns: p50 / 2.0,
        p99_ns: p99 / 2.0,
        mean_ns: mean / 2.0,
        msg_per_s,
        bytes_per_s,
    }
}
