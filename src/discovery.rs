//! What this machine offers the engine: cores, node identity, `/dev/shm`,
//! network interfaces, verbs devices and the locked-memory limit.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::{NodeId, TransportKind};

/// Where shared-memory segments live.
const SHM_DIR: &str = "/dev/shm";

/// The local resources the engine and auto transport selection work with.
/// `comm-info` prints them.
///
/// ```
/// use comm::{NodeId, Resources, ShmInfo, TransportKind::*, VerbsInfo};
/// let found = Resources::discover();
/// assert!(found.offered().contains(&Tcp));
///
/// // Built by hand, e.g. to describe a peer:
/// let peer = Resources {
///     cores: vec![0, 1],
///     node: NodeId::new("n1"),
///     shm: ShmInfo { path: "/dev/shm".into(), usable: true, free_bytes: 1 << 30 },
///     interfaces: vec![],
///     verbs: VerbsInfo::NotBuilt,
///     memlock_limit: None,
/// };
/// assert_eq!(peer.offered(), vec![Shm, Tcp, Udp]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// The cores this process may run on (its affinity mask); empty when unknown.
    pub cores: Vec<usize>,
    /// This node's identity (see [`NodeId::discover`]).
    pub node: NodeId,
    /// The shared-memory file system.
    pub shm: ShmInfo,
    /// Network interfaces with their addresses, in the order the kernel lists them.
    pub interfaces: Vec<Interface>,
    /// InfiniBand verbs devices.
    pub verbs: VerbsInfo,
    /// `RLIMIT_MEMLOCK` soft limit in bytes (what verbs may register);
    /// `None` when unlimited, `Some(0)` when it could not be read.
    pub memlock_limit: Option<u64>,
}

/// The shared-memory file system (`/dev/shm`).
///
/// ```
/// let shm = comm::Resources::discover().shm;
/// assert_eq!(shm.path, std::path::Path::new("/dev/shm"));
/// if !shm.usable { println!("no shared memory: same-node peers use TCP"); }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmInfo {
    /// Its mount point.
    pub path: PathBuf,
    /// Whether segments can be created there: it exists, is writable and has free space.
    pub usable: bool,
    /// Bytes free for unprivileged users (0 when unknown).
    pub free_bytes: u64,
}

/// One network interface and its IP addresses.
///
/// ```
/// let ifs = comm::Resources::discover().interfaces;
/// for i in ifs.iter().filter(|i| i.up && !i.loopback) {
///     println!("{}: {:?}", i.name, i.addrs);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name, e.g. `eth0`.
    pub name: String,
    /// Its IPv4 and IPv6 addresses (possibly none).
    pub addrs: Vec<IpAddr>,
    /// Whether it is administratively up (`IFF_UP`).
    pub up: bool,
    /// Whether it is a loopback interface (`IFF_LOOPBACK`).
    pub loopback: bool,
}

/// InfiniBand verbs devices.
///
/// ```
/// use comm::VerbsInfo;
/// assert!(VerbsInfo::NotBuilt.devices().is_empty());
/// assert_eq!(VerbsInfo::Devices(vec!["mlx5_0".into()]).devices(), ["mlx5_0"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerbsInfo {
    /// This build has no verbs support (the `verbs` feature is off).
    NotBuilt,
    /// The devices found (possibly none).
    Devices(Vec<String>),
}

impl VerbsInfo {
    /// The device names; empty when verbs is not built or no device was found.
    ///
    /// ```
    /// assert!(comm::VerbsInfo::Devices(vec![]).devices().is_empty());
    /// ```
    pub fn devices(&self) -> &[String] {
        match self {
            VerbsInfo::NotBuilt => &[],
            VerbsInfo::Devices(devices) => devices,
        }
    }
}

impl Resources {
    /// Looks at this machine. Never panics: whatever cannot be read is
    /// reported as absent (no cores, shm not usable, no interfaces).
    ///
    /// ```
    /// let r = comm::Resources::discover();
    /// assert_eq!(r.node, comm::NodeId::discover());
    /// ```
    pub fn discover() -> Resources {
        let cores = core_affinity::get_core_ids()
            .map(|ids| ids.into_iter().map(|c| c.id).collect())
            .unwrap_or_default();
        Resources {
            cores,
            node: NodeId::discover(),
            shm: shm_info(Path::new(SHM_DIR)),
            interfaces: interfaces(),
            verbs: verbs(),
            memlock_limit: memlock_limit(),
        }
    }

    /// The transports this side can run, in preference order: `Shm` when
    /// `/dev/shm` is usable, `Verbs` when a device was found, then `Tcp` and
    /// `Udp`, which are always available. This is the offer given to
    /// [`select_transports`](crate::select_transports).
    ///
    /// ```
    /// use comm::TransportKind::*;
    /// let offered = comm::Resources::discover().offered();
    /// assert!(offered.ends_with(&[Tcp, Udp]));
    /// ```
    pub fn offered(&self) -> Vec<TransportKind> {
        let mut kinds = Vec::with_capacity(4);
        if self.shm.usable {
            kinds.push(TransportKind::Shm);
        }
        if !self.verbs.devices().is_empty() {
            kinds.push(TransportKind::Verbs);
        }
        kinds.push(TransportKind::Tcp);
        kinds.push(TransportKind::Udp);
        kinds
    }
}

/// Free space and writability of the shared-memory file system at `path`.
fn shm_info(path: &Path) -> ShmInfo {
    let unusable = ShmInfo {
        path: path.to_owned(),
        usable: false,
        free_bytes: 0,
    };
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return unusable;
    };
    // SAFETY: statvfs is plain old data; all-zero bytes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `st` a valid, writable
    // statvfs, both alive for the whole call.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return unusable;
    }
    let free_bytes = widen(st.f_bavail).saturating_mul(widen(st.f_frsize));
    // SAFETY: `c_path` is a NUL-terminated string alive for the call.
    let writable = unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    ShmInfo {
        path: path.to_owned(),
        usable: writable && free_bytes > 0,
        free_bytes,
    }
}

/// The network interfaces from `getifaddrs(3)`, grouped by name; empty on failure.
fn interfaces() -> Vec<Interface> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid place for getifaddrs to store the list head.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut found: Vec<Interface> = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned,
        // which stays valid until freeifaddrs below.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a non-null, NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `ifa_addr` is null or points to a socket address of the
        // family it names, owned by the list.
        let addr = unsafe { ip_of(ifa.ifa_addr) };
        let flags = ifa.ifa_flags;
        let up = flags & libc::IFF_UP as libc::c_uint != 0;
        let loopback = flags & libc::IFF_LOOPBACK as libc::c_uint != 0;
        let entry = match found.iter_mut().position(|i| i.name == name) {
            Some(at) => &mut found[at],
            None => {
                found.push(Interface {
                    name,
                    addrs: Vec::new(),
                    up: false,
                    loopback: false,
                });
                let last = found.len() - 1;
                &mut found[last]
            }
        };
        entry.up |= up;
        entry.loopback |= loopback;
        if let Some(addr) = addr {
            if !entry.addrs.contains(&addr) {
                entry.addrs.push(addr);
            }
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once;
    // no reference into the list outlives this point (names were copied).
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The IP address in a socket address, if it is IPv4 or IPv6.
///
/// # Safety
///
/// `sa` is null or points to a readable socket address whose `sa_family`
/// matches its actual type.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: `sa` is non-null and readable (the caller's contract); every
    // socket address starts with its family.
    let family = unsafe { (*sa).sa_family };
    match i32::from(family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in; the read copes
            // with any alignment.
            let sin = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in>()) };
            // s_addr is in network byte order, i.e. its bytes are the octets.
            Some(IpAddr::V4(Ipv4Addr::from(
                sin.sin_addr.s_addr.to_ne_bytes(),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6; the read copes
            // with any alignment.
            let sin6 = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in6>()) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// An unsigned C integer (whose width differs between targets) as a `u64`.
fn widen<T: Into<u64>>(v: T) -> u64 {
    v.into()
}

/// Verbs devices. The `verbs` feature (comm-verbs) does not exist yet, so
/// this build never has verbs support; once it does, this lists the HCAs
/// under `cfg(feature = "verbs")`.
fn verbs() -> VerbsInfo {
    VerbsInfo::NotBuilt
}

/// The `RLIMIT_MEMLOCK` soft limit: `None` when unlimited, `Some(0)` when
/// it cannot be read (the safe assumption for registering memory).
fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Some(0);
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(widen(lim.rlim_cur))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        let ifs = interfaces();
        let lo = ifs.iter().find(|i| i.loopback);
        if let Some(lo) = lo {
            assert!(lo
                .addrs
                .iter()
                .all(|a| a.is_loopback() || matches!(a, IpAddr::V6(_))));
        }
    }

    #[test]
    fn missing_shm_dir_is_unusable() {
        let shm = shm_info(Path::new("/nonexistent/comm-shm"));
        assert!(!shm.usable);
        assert_eq!(shm.free_bytes, 0);
    }

    #[test]
    fn discover_does_not_panic() {
        let r = Resources::discover();
        assert!(r.offered().contains(&TransportKind::Tcp));
    }
}
