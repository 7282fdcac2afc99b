//! Results: the fixed CSV columns of DESIGN.md section 5, or a table.

use crate::cli::{Format, Mode, Test};

pub struct Row {
    pub transport: String,
    pub mode: Mode,
    pub test: Test,
    pub size: usize,
    pub iters: usize,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub mean_ns: f64,
    pub msg_per_s: f64,
    pub bytes_per_s: f64,
}

fn name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_owned())
}

pub fn print(rows: &[Row], format: Format) {
    match format {
        Format::Csv => {
            println!("transport,mode,test,size,iters,p50_ns,p99_ns,mean_ns,msg_per_s,bytes_per_s");
            for r in rows {
                println!(
                    "{},{},{},{},{},{:.1},{:.1},{:.1},{:.0},{:.0}",
                    r.transport,
                    name(&r.mode),
                    name(&r.test),
                    r.size,
                    r.iters,
                    r.p50_ns,
                    r.p99_ns,
                    r.mean_ns,
                    r.msg_per_s,
                    r.bytes_per_s
                );
            }
        }
        Format::Table => {
            println!(
                "{:<9} {:<8} {:<5} {:>9} {:>8} {:>11} {:>11} {:>11} {:>12} {:>12}",
                "transport",
                "mode",
                "test",
                "size",
                "iters",
                "p50",
                "p99",
                "mean",
                "msg/s",
                "bytes/s"
            );
            for r in rows {
                println!(
                    "{:<9} {:<8} {:<5} {:>9} {:>8} {:>11} {:>11} {:>11} {:>12} {:>12}",
                    r.transport,
                    name(&r.mode),
                    name(&r.test),
                    size(r.size),
                    r.iters,
                    ns(r.p50_ns),
                    ns(r.p99_ns),
                    ns(r.mean_ns),
                    si(r.msg_per_s, ""),
                    si(r.bytes_per_s, "B"),
                );
            }
        }
    }
}

fn size(b: usize) -> String {
    match b {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

fn ns(v: f64) -> String {
    if v == 0.0 {
        "-".into()
    } else if v >= 10_000.0 {
        format!("{:.2} us", v / 1000.0)
    } else {
        format!("{v:.0} ns")
    }
}

fn si(v: f64, unit: &str) -> String {
    if v == 0.0 {
        "-".into()
    } else if v >= 1e9 {
        format!("{:.2} G{unit}", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M{unit}", v / 1e6)
    } else {
        format!("{:.1} k{unit}", v / 1e3)
    }
}

/// p50, p99 and mean of one-way samples in nanoseconds.
pub fn summarize(samples: &mut [u64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64;
    let mean = samples.iter().map(|&s| s as f64).sum::<f64>() / samples.len() as f64;
    (at(0.5), at(0.99), mean)
}
