//! Which names are acceptable for files under `/dev/shm`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ShmError;

/// Suffix of the temporary file a segment is built in before it is published.
pub(crate) const INIT_SUFFIX: &str = ".init";

pub(crate) fn validate(name: &str) -> Result<(), ShmError> {
    let reject = |reason| {
        Err(ShmError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 200 {
        return reject("length must be 1 to 200 bytes");
    }
    if name.starts_with('.') {
        return reject("must not start with a dot");
    }
    if name.ends_with(INIT_SUFFIX) {
        return reject("the .init suffix is reserved for segments under construction");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return reject("only [A-Za-z0-9._-] are allowed");
    }
    Ok(())
}

/// Name of the file a segment is built in: `<name>.<pid>.<n>.init`, with `n`
/// unique per call so that concurrent creates in one process never share it.
pub(crate) fn init_name(name: &str, pid: u32) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{name}.{pid}.{n}{INIT_SUFFIX}")
}

/// The creator pid of a `<name>.<pid>.<n>.init` file, if `file` is one.
pub(crate) fn init_owner(file: &str) -> Option<u32> {
    let stem = file.strip_suffix(INIT_SUFFIX)?;
    let (rest, n) = stem.rsplit_once('.')?;
    n.parse::<u64>().ok()?;
    let (_, pid) = rest.rsplit_once('.')?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_paths_and_reserved_suffixes() {
        assert!(validate("comm-kv-12-34").is_ok());
        assert!(validate("a/b").is_err());
        assert!(validate("").is_err());
        assert!(validate(".hidden").is_err());
        assert!(validate("x.7.init").is_err());
        assert!(validate(&"x".repeat(201)).is_err());
    }

    #[test]
    fn init_names_round_trip_their_owner() {
        assert_eq!(init_owner(&init_name("comm-a.b", 42)), Some(42));
        assert_ne!(init_name("comm-a", 1), init_name("comm-a", 1));
        assert_eq!(init_owner("comm-a"), None);
        assert_eq!(init_owner("comm-a.x.0.init"), None);
        assert_eq!(init_owner("comm-a.7.init"), None);
    }
}
