//! Removal of segments whose creator died without unlinking them.
//!
//! Only regular files of this user are considered, opened without following
//! links or blocking (a FIFO planted under a comm name cannot hang us), and a
//! file that cannot be removed is skipped rather than failing the whole scan.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::mem::size_of;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::SegmentHeader;
use crate::{liveness, name, ShmError};

pub(super) fn reap_stale(dir: &Path, prefix: &str) -> Result<Vec<String>, ShmError> {
    if prefix.contains('/') {
        return Err(ShmError::InvalidName {
            name: prefix.to_owned(),
            reason: "a prefix must not contain '/'",
        });
    }
    let entries = fs::read_dir(dir).map_err(|e| ShmError::io("list", dir, e))?;
    let our_ns = liveness::pid_namespace();
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        if !file_name.starts_with(prefix) || !is_ours(&entry) {
            continue;
        }
        let path = entry.path();
        let stale = match name::init_owner(&file_name) {
            Some(pid) => !liveness::is_alive(pid, 0),
            None => match read_identity(&path) {
                // A pid of another namespace says nothing about liveness here.
                Some(h) if h.owner_pid_ns != 0 && our_ns != 0 && h.owner_pid_ns != our_ns => false,
                Some(h) => !liveness::is_alive(h.owner_pid, h.owner_start_ticks),
                None => false,
            },
        };
        // A file we cannot remove, or that another reaper removed first, is skipped.
        if stale && fs::remove_file(&path).is_ok() {
            reaped.push(file_name);
        }
    }
    Ok(reaped)
}

/// A regular file (not followed through a link) owned by this user.
fn is_ours(entry: &fs::DirEntry) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    entry
        .metadata()
        .is_ok_and(|m| m.file_type().is_file() && m.uid() == me)
}

/// The header of a comm segment at `path`, or `None` for anything else.
fn read_identity(path: &Path) -> Option<SegmentHeader> {
    let mut bytes = [0u8; size_of::<SegmentHeader>()];
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    file.read_exact(&mut bytes).ok()?;
    SegmentHeader::decode_identity(&bytes).ok()
}
