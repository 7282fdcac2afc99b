//! Command line of `comm-perf` (flags as in DESIGN.md section 5).

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plot::PlotFile;

#[derive(Parser, Debug)]
#[command(
    name = "comm-perf",
    version,
    about = "comm benchmarks: latency, bandwidth, message rate"
)]
pub struct Cli {
    #[command(subcommand)]
    pub role: Option<Role>,
    /// After the run, chart the results into FILE: .svg, or .png (needs a
    /// TrueType font); with pair, client or no subcommand.
    #[arg(long, global = true, value_name = "FILE", value_parser = PlotFile::parse)]
    pub plot: Option<PlotFile>,
}

#[derive(Subcommand, Debug)]
pub enum Role {
    /// Spawn a server process and measure against it (the default).
    Pair(RunArgs),
    /// Serve measurements until standard input closes.
    Server(ServerArgs),
    /// Measure against a running server.
    Client(ClientArgs),
    /// CPU used by idle engines (progress threads parked), in % of a core.
    Idle {
        /// Measurement window in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Control address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Core for the progress thread.
    #[arg(long, default_value_t = 1)]
    pub core: usize,
    /// The progress thread's descriptor table.
    #[arg(long, value_enum, default_value = "private")]
    pub fd_table: FdTable,
}

/// Whether progress threads get a descriptor table of their own
/// (`EngineBuilder::private_fd_table`). comm-perf's handlers use no
/// descriptors, so it runs with private tables unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FdTable {
    /// A table of its own: socket calls skip the file's reference count.
    Private,
    /// The process's table (the engine's default).
    Shared,
}

impl FdTable {
    /// The engine setting for this choice.
    pub fn private(self) -> bool {
        self == FdTable::Private
    }

    /// The value as the command line spells it.
    pub fn arg(self) -> &'static str {
        match self {
            FdTable::Private => "private",
            FdTable::Shared => "shared",
        }
    }
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The server's control address (host:port).
    pub server: String,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Test {
    /// One-way latency: half of a ping-pong round trip.
    Lat,
    /// Bandwidth: a stream of messages, bytes per second.
    Bw,
    /// Message rate: a stream of messages, messages per second.
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The exchange runs in handlers on the progress threads.
    Handler,
    /// Application threads use endpoint handles.
    Handle,
}

/// Which transport a measurement forces (`auto`: the engine chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    Auto,
    Shm,
    Tcp,
    Udp,
    Verbs,
}

impl TransportArg {
    /// The engine setting for this choice.
    pub fn transports(self) -> comm::Transports {
        use comm::{TransportKind as K, Transports};
        match self {
            TransportArg::Auto => Transports::Auto,
            TransportArg::Shm => Transports::only([K::Shm]),
            TransportArg::Tcp => Transports::only([K::Tcp]),
            TransportArg::Udp => Transports::only([K::Udp]),
            TransportArg::Verbs => Transports::only([K::Verbs]),
        }
    }
}

/// How UDP links carry messages (the client, which sets links up, picks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UdpModeArg {
    /// Ordered, exactly once, any size: comm's reliable protocol.
    Reliable,
    /// Plain datagrams, like `sockperf`: one message per datagram, no
    /// retransmission.
    Datagram,
}

impl UdpModeArg {
    /// The engine setting for this choice.
    pub fn mode(self) -> comm::UdpMode {
        match self {
            UdpModeArg::Reliable => comm::UdpMode::Reliable,
            UdpModeArg::Datagram => comm::UdpMode::Datagram,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Tests to run.
    #[arg(long = "test", value_delimiter = ',', default_value = "lat")]
    pub tests: Vec<Test>,
    /// Message sizes, e.g. 8,1k,64k,1m.
    #[arg(long = "size", value_delimiter = ',', value_parser = parse_size, default_value = "8")]
    pub sizes: Vec<usize>,
    /// Modes to run.
    #[arg(long = "mode", value_delimiter = ',', default_value = "handler")]
    pub modes: Vec<Mode>,
    /// Transports to measure over, e.g. shm,tcp,udp (auto: the engine's choice).
    #[arg(long = "transport", value_delimiter = ',', default_value = "auto")]
    pub transports: Vec<TransportArg>,
    /// How UDP links carry messages; rows of datagram mode read `udp-datagram`.
    #[arg(long, value_enum, default_value = "reliable")]
    pub udp_mode: UdpModeArg,
    /// Measured iterations per test (default depends on the size).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Core for the client's progress thread.
    #[arg(long, default_value_t = 0)]
    pub core: usize,
    /// The progress threads' descriptor tables (the spawned server's too).
    #[arg(long, value_enum, default_value = "private")]
    pub fd_table: FdTable,
    #[arg(skip)]
    pub suite: bool,
}

impl RunArgs {
    /// The short default suite of `cargo run --release --bin comm-perf`.
    pub fn default_suite() -> Self {
        RunArgs {
            tests: Vec::new(),
            sizes: Vec::new(),
            modes: Vec::new(),
            transports: Vec::new(),
            udp_mode: UdpModeArg::Reliable,
            iters: None,
            format: Format::Table,
            core: 0,
            fd_table: FdTable::Private,
            suite: true,
        }
    }

    /// Every (transport, mode, test, size) to measure, in order.
    pub fn plan(&self) -> Vec<(TransportArg, Mode, Test, usize)> {
        if self.suite {
            let mut plan = Vec::new();
            for mode in [Mode::Handler, Mode::Handle] {
                for size in [8, 1 << 10, 64 << 10, 1 << 20] {
                    plan.push((TransportArg::Shm, mode, Test::Lat, size));
                }
                plan.push((TransportArg::Shm, mode, Test::Rate, 8));
                plan.push((TransportArg::Shm, mode, Test::Bw, 64 << 10));
                plan.push((TransportArg::Shm, mode, Test::Bw, 1 << 20));
            }
            for size in [8, 1 << 10] {
                plan.push((TransportArg::Tcp, Mode::Handler, Test::Lat, size));
            }
            plan.push((TransportArg::Tcp, Mode::Handler, Test::Rate, 8));
            plan.push((TransportArg::Tcp, Mode::Handler, Test::Bw, 1 << 20));
            plan.push((TransportArg::Udp, Mode::Handler, Test::Lat, 64));
            plan.push((TransportArg::Udp, Mode::Handler, Test::Rate, 64));
            return plan;
        }
        let mut plan = Vec::new();
        for &transport in &self.transports {
            for &mode in &self.modes {
                for &test in &self.tests {
                    for &size in &self.sizes {
                        plan.push((transport, mode, test, size));
                    }
                }
            }
        }
        plan
    }

    /// Iterations for a test of `size` bytes.
    pub fn iters_for(&self, test: Test, size: usize) -> usize {
        if let Some(n) = self.iters {
            return n.max(1);
        }
        let base = match test {
            Test::Lat => 20_000,
            Test::Rate | Test::Bw => 200_000,
        };
        let scaled = base / (1 + size / 4096);
        if self.suite { scaled / 4 } else { scaled }.max(200)
    }
}

/// `8`, `1k`, `64K`, `1m`, `4M`: bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}
