//! `comm-info`: prints what comm discovers on this machine (cores, node id,
//! `/dev/shm`, interfaces, locked-memory limit, verbs devices), the
//! configuration taken from `COMM_*` variables, and which transports auto
//! mode would choose for a peer on this node and for one on another node.
//!
//! ```text
//! cargo run --bin comm-info
//! ```

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Parser;
use comm::{select_transports, EnvConfig, Resources, TransportKind, Transports};

/// Print what comm discovers on this machine and what auto mode would choose.
#[derive(Parser, Debug)]
#[command(
    name = "comm-info",
    version,
    about = "Print what comm discovers on this machine (cores, node id, /dev/shm, interfaces, \
             memlock limit, verbs), the COMM_* configuration, and what auto mode would choose",
    long_about = None
)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    let resources = Resources::discover();
    let env = EnvConfig::from_env();
    print!("{}", report(&resources, &env));
    match env {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(2),
    }
}

/// The whole report as text.
fn report(r: &Resources, env: &Result<EnvConfig, comm::Error>) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "node id        {}", r.node);
    let _ = writeln!(o, "cores          {}", cores(&r.cores));
    let _ = writeln!(
        o,
        "shm            {}: {}, {} free",
        r.shm.path.display(),
        if r.shm.usable { "usable" } else { "NOT usable" },
        bytes(r.shm.free_bytes)
    );
    let _ = writeln!(
        o,
        "memlock limit  {}",
        match r.memlock_limit {
            None => "unlimited".to_owned(),
            Some(n) => bytes(n),
        }
    );
    let _ = writeln!(
        o,
        "verbs          {}",
        match &r.verbs {
            comm::VerbsInfo::NotBuilt => "not built (no `verbs` feature in this build)".to_owned(),
            comm::VerbsInfo::Devices(d) if d.is_empty() => "no devices".to_owned(),
            comm::VerbsInfo::Devices(d) => d.join(", "),
        }
    );
    let _ = writeln!(o, "interfaces");
    if r.interfaces.is_empty() {
        let _ = writeln!(o, "  (none found)");
    }
    for i in &r.interfaces {
        let mut state = vec![if i.up { "up" } else { "down" }];
        if i.loopback {
            state.push("loopback");
        }
        let addrs: Vec<String> = i.addrs.iter().map(ToString::to_string).collect();
        let addrs = if addrs.is_empty() {
            "(no IP address)".to_owned()
        } else {
            addrs.join(", ")
        };
        let _ = writeln!(o, "  {:<14} {:<14} {}", i.name, state.join(", "), addrs);
    }
    let offered = r.offered();
    let _ = writeln!(o, "offered        {}", kinds(&offered));

    let _ = writeln!(o);
    let _ = writeln!(o, "environment");
    match env {
        Ok(cfg) => {
            let unset = || "(unset)".to_owned();
            let rows = [
                ("COMM_ENGINE", cfg.engine.clone().unwrap_or_else(unset)),
                (
                    "COMM_TRANSPORTS",
                    cfg.transports.as_ref().map_or_else(unset, transports),
                ),
                ("COMM_CORES", cfg.cores.as_deref().map_or_else(unset, cores)),
                (
                    "COMM_LISTEN",
                    cfg.listen.map_or_else(unset, |a| a.to_string()),
                ),
                ("COMM_NODE_ID", cfg.node_id.clone().unwrap_or_else(unset)),
                ("COMM_LOG", cfg.log.clone().unwrap_or_else(unset)),
            ];
            for (name, value) in rows {
                let _ = writeln!(o, "  {name:<16} {value}");
            }
        }
        Err(e) => {
            let _ = writeln!(o, "  invalid: {e}");
        }
    }

    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "auto selection (a peer offering the same transports; best first)"
    );
    selection(o, &Transports::Auto, &offered);
    if let Ok(EnvConfig {
        transports: Some(only @ Transports::Only(_)),
        ..
    }) = env
    {
        let _ = writeln!(o);
        let _ = writeln!(o, "with COMM_TRANSPORTS={}", transports(only));
        selection(o, only, &offered);
    }
    out
}

/// The two rows of a selection: same node and another node.
fn selection(o: &mut String, allowed: &Transports, offered: &[TransportKind]) {
    for (label, same_node) in [("peer on this node", true), ("peer on another node", false)] {
        let chosen = match select_transports(allowed, offered, offered, same_node) {
            Ok(list) => kinds(&list),
            Err(e) => format!("none: {e}"),
        };
        let _ = writeln!(o, "  {label:<22} {chosen}");
    }
}

fn kinds(list: &[TransportKind]) -> String {
    let names: Vec<&str> = list.iter().map(|k| k.name()).collect();
    names.join(", ")
}

fn transports(t: &Transports) -> String {
    match t {
        Transports::Auto => "auto".to_owned(),
        Transports::Only(list) => {
            let names: Vec<&str> = list.iter().map(|k| k.name()).collect();
            names.join(",")
        }
    }
}

fn cores(list: &[usize]) -> String {
    if list.is_empty() {
        return "(unknown)".to_owned();
    }
    let names: Vec<String> = list.iter().map(ToString::to_string).collect();
    format!("{} ({} in all)", names.join(", "), list.len())
}

/// Bytes in binary units, e.g. `8.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
