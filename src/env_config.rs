//! Implicit configuration from `COMM_*` environment variables.

use std::net::{Ipv4Addr, SocketAddr};

use crate::{Error, Transports};

/// The configuration read from the environment once, when an engine starts;
/// settings made on the engine builder win over these.
///
/// | variable | field | syntax |
/// |---|---|---|
/// | `COMM_ENGINE` | `engine` | the engine (domain) name |
/// | `COMM_TRANSPORTS` | `transports` | `auto` or a list such as `shm,tcp` |
/// | `COMM_CORES` | `cores` | core numbers such as `0,1` |
/// | `COMM_LISTEN` | `listen` | `ip:port`, `[ipv6]:port` or `localhost:port` |
/// | `COMM_NODE_ID` | `node_id` | overrides the discovered [`NodeId`](crate::NodeId) |
/// | `COMM_LOG` | `log` | a `tracing` filter such as `comm=debug` |
///
/// Values are trimmed; empty values count as unset (`None`).
///
/// ```
/// use comm::{EnvConfig, TransportKind, Transports};
/// let env = [("COMM_TRANSPORTS", "shm,tcp"), ("COMM_CORES", "2,3"), ("COMM_ENGINE", "")];
/// let cfg = EnvConfig::from_lookup(|key| {
///     env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
/// })?;
/// assert_eq!(cfg.transports, Some(Transports::only([TransportKind::Shm, TransportKind::Tcp])));
/// assert_eq!(cfg.cores, Some(vec![2, 3]));
/// assert_eq!(cfg.engine, None); // empty = unset
/// assert_eq!(cfg.listen, None);
/// # Ok::<(), comm::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvConfig {
    /// `COMM_ENGINE`: the engine (domain) name.
    pub engine: Option<String>,
    /// `COMM_TRANSPORTS`: allowed transports.
    pub transports: Option<Transports>,
    /// `COMM_CORES`: the cores to run progress threads on, in order.
    pub cores: Option<Vec<usize>>,
    /// `COMM_LISTEN`: the control address to listen on.
    pub listen: Option<SocketAddr>,
    /// `COMM_NODE_ID`: override of the node identity.
    pub node_id: Option<String>,
    /// `COMM_LOG`: the tracing filter.
    pub log: Option<String>,
}

impl EnvConfig {
    /// Reads the process environment. A variable that is not valid UTF-8
    /// counts as unset.
    ///
    /// ```
    /// let cfg = comm::EnvConfig::from_env();
    /// // Fails only when a COMM_* variable holds a bad value.
    /// if let Err(e) = cfg { eprintln!("{e}"); }
    /// ```
    pub fn from_env() -> Result<EnvConfig, Error> {
        EnvConfig::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the variables through `lookup` (called with each variable name)
    /// instead of the process environment. Fails with
    /// [`Error::BadAddress`] on a bad `COMM_LISTEN` or `COMM_TRANSPORTS` and
    /// with [`Error::Config`] on a bad `COMM_CORES`.
    ///
    /// ```
    /// use comm::{EnvConfig, Error};
    /// let cfg = EnvConfig::from_lookup(|k| (k == "COMM_LISTEN").then(|| "localhost:7000".into()))?;
    /// assert_eq!(cfg.listen, Some("127.0.0.1:7000".parse()?));
    ///
    /// let bad = EnvConfig::from_lookup(|k| (k == "COMM_LISTEN").then(|| "nowhere".into()));
    /// assert!(matches!(bad, Err(Error::BadAddress { addr, .. }) if addr == "nowhere"));
    /// assert_eq!(EnvConfig::from_lookup(|_| None)?, EnvConfig::default());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<EnvConfig, Error> {
        let get = |key: &str| {
            lookup(key).and_then(|v| {
                let v = v.trim();
                (!v.is_empty()).then(|| v.to_owned())
            })
        };
        Ok(EnvConfig {
            engine: get("COMM_ENGINE"),
            transports: get("COMM_TRANSPORTS")
                .map(|v| parse_transports(&v))
                .transpose()?,
            cores: get("COMM_CORES").map(|v| parse_cores(&v)).transpose()?,
            listen: get("COMM_LISTEN").map(|v| parse_listen(&v)).transpose()?,
            node_id: get("COMM_NODE_ID"),
            log: get("COMM_LOG"),
        })
    }
}

/// `auto` or a comma-separated list of transport names.
fn parse_transports(value: &str) -> Result<Transports, Error> {
    value.parse().map_err(|_| Error::BadAddress {
        addr: value.to_owned(),
        reason: "COMM_TRANSPORTS must be auto or a comma-separated list of shm, verbs, tcp, udp",
    })
}

/// A comma-separated list of distinct core numbers.
fn parse_cores(value: &str) -> Result<Vec<usize>, Error> {
    let mut cores = Vec::new();
    for part in value.split(',') {
        let core: usize = part.trim().parse().map_err(|_| {
            Error::Config("COMM_CORES must be a comma-separated list of core numbers, e.g. 0,1")
        })?;
        if cores.contains(&core) {
            return Err(Error::Config("COMM_CORES names a core twice"));
        }
        cores.push(core);
    }
    Ok(cores)
}

/// `ip:port`, `[ipv6]:port` or `localhost:port`.
fn parse_listen(value: &str) -> Result<SocketAddr, Error> {
    let parsed = match value.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => port
            .parse::<u16>()
            .ok()
            .filter(|_| port.bytes().all(|b| b.is_ascii_digit()))
            .map(|port| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)),
        _ => value.parse().ok(),
    };
    parsed.ok_or_else(|| Error::BadAddress {
        addr: value.to_owned(),
        reason: "COMM_LISTEN must be ip:port, e.g. 0.0.0.0:7000, [::1]:7000 or localhost:7000",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores() {
        assert_eq!(parse_cores("0").unwrap(), vec![0]);
        assert_eq!(parse_cores(" 3 , 1").unwrap(), vec![3, 1]);
        assert!(parse_cores("0,,1").is_err());
        assert!(parse_cores("0,0").is_err());
        assert!(parse_cores("-1").is_err());
    }

    #[test]
    fn listen() {
        assert_eq!(
            parse_listen("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_listen("localhost:+80").is_err());
        assert!(parse_listen("localhost").is_err());
        assert!(parse_listen("example.com:80").is_err());
    }
}
