//! The node identity that decides whether two engines share a machine.

use std::fmt;

/// Longest node id, in bytes; longer ids are cut (at a character boundary).
const MAX_LEN: usize = 256;

/// The environment variable that overrides the discovered node identity.
const OVERRIDE_VAR: &str = "COMM_NODE_ID";

/// The identity of a node (one booted operating system). Two engines with
/// equal node ids are on the same node and may use shared memory.
///
/// [`NodeId::discover`] takes `COMM_NODE_ID` when set, else
/// `/etc/machine-id` and the kernel's boot id (`machine-id:boot-id`), else
/// the host name and the boot id. Ids are at most 256 bytes.
///
/// ```
/// use comm::NodeId;
/// let id = NodeId::new("rack3-node7");
/// assert_eq!(id.as_str(), "rack3-node7");
/// assert_eq!(id.to_string(), "rack3-node7");
/// assert!(!NodeId::discover().as_str().is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// A node id from any string, cut to 256 bytes.
    ///
    /// ```
    /// let id = comm::NodeId::new("x".repeat(300));
    /// assert_eq!(id.as_str().len(), 256);
    /// ```
    pub fn new(id: impl Into<String>) -> NodeId {
        let mut id = id.into();
        truncate_at_char_boundary(&mut id, MAX_LEN);
        NodeId(id)
    }

    /// The id of the node this process runs on, from the process
    /// environment (`COMM_NODE_ID`) and the machine; see [`NodeId`]. Never
    /// fails: when nothing identifies the machine, the id is unique to this
    /// process, so no peer is taken for a same-node one by mistake.
    ///
    /// ```
    /// let a = comm::NodeId::discover();
    /// let b = comm::NodeId::discover();
    /// assert_eq!(a, b); // stable within a boot
    /// ```
    pub fn discover() -> NodeId {
        NodeId::discover_with(|key| std::env::var(key).ok())
    }

    /// Like [`NodeId::discover`], but reads `COMM_NODE_ID` through `lookup`
    /// instead of the process environment (an empty value counts as unset).
    ///
    /// ```
    /// use comm::NodeId;
    /// let id = NodeId::discover_with(|key| (key == "COMM_NODE_ID").then(|| "n1".to_string()));
    /// assert_eq!(id, NodeId::new("n1"));
    /// let machine = NodeId::discover_with(|_| None);
    /// assert_eq!(machine, NodeId::discover_with(|_| Some(String::new())));
    /// ```
    pub fn discover_with(lookup: impl Fn(&str) -> Option<String>) -> NodeId {
        if let Some(id) = lookup(OVERRIDE_VAR) {
            let id = id.trim();
            if !id.is_empty() {
                return NodeId::new(id);
            }
        }
        let boot_id = read_trimmed("/proc/sys/kernel/random/boot_id");
        let host = read_trimmed("/etc/machine-id").or_else(hostname);
        let id = match (host, boot_id) {
            (Some(host), Some(boot)) => format!("{host}:{boot}"),
            (Some(host), None) => host,
            (None, Some(boot)) => boot,
            // Nothing identifies the machine: be unique to this process so
            // that no other engine believes it shares our node.
            (None, None) => format!("unknown-node-pid{}", std::process::id()),
        };
        NodeId::new(id)
    }

    /// The id as text.
    ///
    /// ```
    /// assert_eq!(comm::NodeId::new("n1").as_str(), "n1");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A small file's content, trimmed; `None` when missing, unreadable or blank.
fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The host name from `gethostname(2)`.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves termination unspecified on truncation: stop at the first
    // NUL or at the end of the buffer.
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// Cuts `s` to at most `max` bytes without splitting a character.
fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        let id = NodeId::new("é".repeat(200)); // 400 bytes
        assert!(id.as_str().len() <= MAX_LEN);
        assert!(id.as_str().len() >= MAX_LEN - 1);
    }

    #[test]
    fn hostname_is_never_blank() {
        if let Some(name) = hostname() {
            assert!(!name.is_empty() && !name.contains('\0'));
        }
    }
}
