//! `comm-perf`: comm's benchmark tool, modelled on `ucx_perftest`.
//!
//! ```text
//! cargo run --release --bin comm-perf                  # short default suite, table
//! comm-perf pair --test lat --size 8,1k,64k,1m --mode handler --format csv
//! comm-perf server --listen 127.0.0.1:7000 &  comm-perf client 127.0.0.1:7000 --test rate
//! ```
//!
//! Latency is one-way (half the round trip), p50/p99/mean over the measured
//! iterations. Each side runs one busy progress thread on its own core; in
//! `handler` mode the whole exchange runs in handlers on those threads.

mod cli;
mod clock;
mod driver;
mod idle;
mod report;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use comm::Error;

use cli::{Cli, Role, RunArgs};

fn main() {
    // COMM_LOG (a tracing filter such as "warn") turns on engine logging to
    // stderr. Off by default: an installed subscriber measurably slows the
    // data path even when nothing is logged.
    if let Ok(filter) = std::env::var("COMM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("comm-perf: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.role.unwrap_or(Role::Pair(RunArgs::default_suite())) {
        Role::Server(s) => driver::serve(&s),
        Role::Client(c) => {
            let rows = driver::client(&c.server, &c.run)?;
            report::print(&rows, c.run.format);
            Ok(())
        }
        Role::Idle { seconds } => {
            print_idle(Duration::from_secs_f64(seconds))?;
            Ok(())
        }
        Role::Pair(run) => {
            let mut server = spawn_server()?;
            let addr = read_addr(&mut server)?;
            let rows = driver::client(&addr, &run);
            // Closing its stdin makes the server shut down cleanly.
            drop(server.stdin.take());
            let _ = server.wait();
            report::print(&rows?, run.format);
            if run.suite {
                print_idle(Duration::from_secs(1))?;
            }
            Ok(())
        }
    }
}

fn print_idle(window: Duration) -> Result<(), Error> {
    let (threads, percent) = idle::measure(window)?;
    println!("idle: {percent:.2}% of one core per progress thread ({threads} threads, {window:?} window)");
    Ok(())
}

/// Starts `comm-perf server` on core 1 as a child process; it runs until its
/// standard input closes.
fn spawn_server() -> Result<Child, Error> {
    let exe = std::env::current_exe()?;
    Ok(Command::new(exe)
        .args(["server", "--listen", "127.0.0.1:0", "--core", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// The server prints its control address on its first line.
fn read_addr(server: &mut Child) -> Result<String, Error> {
    let out = server
        .stdout
        .take()
        .ok_or(Error::Config("server has no stdout"))?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or("")
        .to_owned();
    if addr.is_empty() {
        return Err(Error::Config("the server did not report its address"));
    }
    Ok(addr)
}
