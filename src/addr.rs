//! Endpoint addresses: `comm://host:port/name`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::str::FromStr;

use crate::Error;

/// The scheme every endpoint address starts with.
const SCHEME: &str = "comm://";

/// Longest endpoint name, in bytes.
const MAX_NAME_LEN: usize = 64;

/// The address of one endpoint: the control address of its engine (where
/// the handshake happens) and the endpoint's name, written
/// `comm://host:port/name`.
///
/// The host is a literal IPv4 address, a bracketed IPv6 address (an optional
/// numeric zone such as `[fe80::1%2]` is kept), or `localhost`, which means
/// `127.0.0.1`. Host names are not resolved: comm never blocks on DNS.
///
/// ```
/// use comm::Addr;
/// let a: Addr = "comm://10.0.0.5:7000/store".parse()?;
/// assert_eq!(a.control(), "10.0.0.5:7000".parse()?);
/// assert_eq!(a.endpoint(), "store");
/// assert_eq!(a.to_string(), "comm://10.0.0.5:7000/store");
///
/// let v6: Addr = "comm://[::1]:7000/kv.0".parse()?;
/// assert_eq!(v6.to_string(), "comm://[::1]:7000/kv.0");
///
/// let local: Addr = "comm://localhost:7000/echo".parse()?;
/// assert_eq!(local.to_string(), "comm://127.0.0.1:7000/echo");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    control: SocketAddr,
    endpoint: String,
}

impl Addr {
    /// An address from an engine's control address and an endpoint name.
    ///
    /// The name is 1 to 64 bytes of `A-Z a-z 0-9 . _ -` and does not start
    /// with `.`; anything else fails with [`Error::BadAddress`]. An IPv6 flow
    /// label is dropped (addresses do not carry it); the zone is kept.
    ///
    /// ```
    /// use comm::Addr;
    /// let a = Addr::new("127.0.0.1:7000".parse()?, "store")?;
    /// assert_eq!(a.to_string(), "comm://127.0.0.1:7000/store");
    /// assert!(Addr::new("127.0.0.1:7000".parse()?, "no/slash").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(control: SocketAddr, endpoint: &str) -> Result<Addr, Error> {
        validate_endpoint_name(endpoint)?;
        let control = match control {
            SocketAddr::V6(v6) => {
                SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, v6.scope_id()))
            }
            v4 => v4,
        };
        Ok(Addr {
            control,
            endpoint: endpoint.to_owned(),
        })
    }

    /// The control address of the engine that owns the endpoint.
    ///
    /// ```
    /// let a: comm::Addr = "comm://[::1]:9/x".parse()?;
    /// assert_eq!(a.control().port(), 9);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn control(&self) -> SocketAddr {
        self.control
    }

    /// The endpoint's name.
    ///
    /// ```
    /// let a: comm::Addr = "comm://127.0.0.1:9/store-1".parse()?;
    /// assert_eq!(a.endpoint(), "store-1");
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl fmt::Display for Addr {
    /// `comm://host:port/name`, IPv6 hosts in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SocketAddr's Display already brackets IPv6 (with `%zone` when set).
        write!(f, "{SCHEME}{}/{}", self.control, self.endpoint)
    }
}

impl FromStr for Addr {
    type Err = Error;

    /// Parses `comm://host:port/name`; see [`Addr`] for the accepted hosts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &'static str| Error::BadAddress {
            addr: s.to_owned(),
            reason,
        };
        let rest = match s.get(..SCHEME.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(SCHEME) => &s[SCHEME.len()..],
            _ => {
                return Err(bad(
                    "missing the comm:// scheme; write comm://host:port/name",
                ))
            }
        };
        let (authority, name) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing the endpoint name; write comm://host:port/name"))?;
        let control = parse_authority(authority).map_err(bad)?;
        if name.is_empty() {
            return Err(bad(
                "missing the endpoint name after the '/'; write comm://host:port/name",
            ));
        }
        name_problem(name).map_or(Ok(()), |reason| Err(bad(reason)))?;
        Addr::new(control, name)
    }
}

/// Splits and parses `host:port`, where host is IPv4, `[IPv6]` or `localhost`.
fn parse_authority(authority: &str) -> Result<SocketAddr, &'static str> {
    if authority.is_empty() {
        return Err("missing host and port; write comm://host:port/name");
    }
    let (ip, zone, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or("unclosed '[' around the IPv6 address; write comm://[::1]:port/name")?;
        let port = after
            .strip_prefix(':')
            .ok_or("missing the port after the IPv6 address; write comm://[::1]:port/name")?;
        let (ip, zone) = parse_ipv6(host)?;
        (IpAddr::V6(ip), zone, port)
    } else {
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("missing the port; write comm://host:port/name")?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else if host.contains(':') {
            return Err("IPv6 addresses must be in brackets, e.g. comm://[::1]:7000/name");
        } else if host.is_empty() {
            return Err("missing the host; write comm://host:port/name");
        } else {
            IpAddr::V4(host.parse().map_err(|_| {
                "host must be an IPv4 address, a bracketed IPv6 address or localhost \
                 (host names are not resolved)"
            })?)
        };
        (ip, 0, port)
    };
    if port.is_empty() {
        return Err("missing the port; write comm://host:port/name");
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port must be a decimal number from 0 to 65535");
    }
    let port = port
        .parse()
        .map_err(|_| "the port must be a decimal number from 0 to 65535")?;
    Ok(match ip {
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, zone)),
        v4 => SocketAddr::new(v4, port),
    })
}

/// An IPv6 address with an optional numeric zone (`fe80::1%2`); the zone is
/// 0 when absent.
fn parse_ipv6(host: &str) -> Result<(Ipv6Addr, u32), &'static str> {
    let (addr, zone) = match host.split_once('%') {
        Some((addr, zone)) => {
            if zone.is_empty() || !zone.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the IPv6 zone after '%' must be an interface index such as 2");
            }
            let zone = zone
                .parse()
                .map_err(|_| "the IPv6 zone after '%' is too large")?;
            (addr, zone)
        }
        None => (host, 0),
    };
    let ip = addr
        .parse()
        .map_err(|_| "bad IPv6 address between the brackets")?;
    Ok((ip, zone))
}

/// Checks an endpoint name: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`, not
/// starting with `.`.
pub(crate) fn validate_endpoint_name(name: &str) -> Result<(), Error> {
    match name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(Error::BadAddress {
            addr: name.to_owned(),
            reason,
        }),
    }
}

/// What is wrong with an endpoint name, if anything.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("the endpoint name is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("the endpoint name is longer than 64 bytes")
    } else if name.starts_with('.') {
        Some("the endpoint name must not start with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("the endpoint name may only hold A-Z, a-z, 0-9, '.', '_' and '-'")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_endpoint_name("a").is_ok());
        assert!(validate_endpoint_name("a.b_c-D9").is_ok());
        assert!(validate_endpoint_name(&"x".repeat(64)).is_ok());
        assert!(validate_endpoint_name(&"x".repeat(65)).is_err());
        assert!(validate_endpoint_name("").is_err());
        assert!(validate_endpoint_name(".hidden").is_err());
        assert!(validate_endpoint_name("a b").is_err());
        assert!(validate_endpoint_name("é").is_err());
    }
}
