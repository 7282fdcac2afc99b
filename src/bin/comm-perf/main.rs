//! `comm-perf`: comm's benchmark tool, modelled on `ucx_perftest`.
//!
//! ```text
//! cargo run --release --bin comm-perf                  # short default suite, table
//! comm-perf pair --test lat --size 8,1k,64k,1m --mode handler --format csv
//! comm-perf server --listen 127.0.0.1:7000 &  comm-perf client 127.0.0.1:7000 --test rate
//! comm-perf pair --test lat,bw,rate --size 8,1k,64k,1m --plot results.svg
//! ```
//!
//! Latency is one-way (half the round trip), p50/p99/mean over the measured
//! iterations. Each side runs one busy progress thread on its own core; in
//! `handler` mode the whole exchange runs in handlers on those threads.
//!
//! `--plot FILE` (with `pair`, `client` or no subcommand) also draws the rows
//! as charts, one panel per test and one line per transport and mode, against
//! message size on a log axis. `FILE.svg` needs no font; `FILE.png` needs a
//! TrueType font at run time (DejaVu Sans, any `*.ttf` under
//! `/usr/share/fonts`, or the file named by `COMM_PERF_FONT`) and fails
//! before the run when there is none.

mod cli;
mod clock;
mod driver;
mod idle;
mod plot;
mod report;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use comm::Error;

use cli::{Cli, Role, RunArgs};
use plot::PlotFile;
use report::Row;

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

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let role = cli.role.unwrap_or(Role::Pair(RunArgs::default_suite()));
    if let Some(plot) = &cli.plot {
        if matches!(role, Role::Server(_) | Role::Idle { .. }) {
            return Err(
                "--plot charts result rows: use it with pair, client or no subcommand".into(),
            );
        }
        plot.prepare()?;
    }
    match role {
        Role::Server(s) => driver::serve(&s)?,
        Role::Client(c) => {
            let rows = driver::client(&c.server, &c.run)?;
            report::print(&rows, c.run.format);
            write_plot(cli.plot.as_ref(), &rows)?;
        }
        Role::Idle { seconds } => print_idle(Duration::from_secs_f64(seconds))?,
        Role::Pair(run) => {
            let mut server = spawn_server(run.fd_table)?;
            let addr = read_addr(&mut server)?;
            let rows = driver::client(&addr, &run);
            // Closing its stdin makes the server shut down cleanly.
            drop(server.stdin.take());
            let _ = server.wait();
            let rows = rows?;
            report::print(&rows, run.format);
            write_plot(cli.plot.as_ref(), &rows)?;
            if run.suite {
                print_idle(Duration::from_secs(1))?;
            }
        }
    }
    Ok(())
}

/// Reported on stderr: stdout carries the table or CSV.
fn write_plot(plot: Option<&PlotFile>, rows: &[Row]) -> Result<(), plot::PlotError> {
    if let Some(plot) = plot {
        plot.write(rows)?;
        eprintln!("comm-perf: chart written to {}", plot.path().display());
    }
    Ok(())
}

fn print_idle(window: Duration) -> Result<(), Error> {
    let (threads, percent) = idle::measure(window)?;
    println!("idle: {percent:.2}% of one core per progress thread ({threads} threads, {window:?} window)");
    Ok(())
}

/// Starts `comm-perf server` on core 1 as a child process; it runs until its
/// standard input closes.
fn spawn_server(fd_table: cli::FdTable) -> Result<Child, Error> {
    let exe = std::env::current_exe()?;
    Ok(Command::new(exe)
        .args(["server", "--listen", "127.0.0.1:0", "--core", "1"])
        .args(["--fd-table", fd_table.arg()])
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
