//! Removal of segments whose creator died without unlinking them.

use std::fs::{self, File};
use std::io::{self, Read};
use std::mem::size_of;
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
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        if !file_name.starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let stale = match name::init_owner(&file_name) {
            Some(pid) => !liveness::is_alive(pid, 0),
            None => match read_identity(&path) {
                Some(h) => !liveness::is_alive(h.owner_pid, h.owner_start_ticks),
                None => false,
            },
        };
        if stale {
            match fs::remove_file(&path) {
                Ok(()) => reaped.push(file_name),
                // Another reaper got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ShmError::io("reap", &path, e)),
            }
        }
    }
    Ok(reaped)
}

/// The header of a comm segment at `path`, or `None` for anything else.
fn read_identity(path: &Path) -> Option<SegmentHeader> {
    let mut bytes = [0u8; size_of::<SegmentHeader>()];
    File::open(path).ok()?.read_exact(&mut bytes).ok()?;
    SegmentHeader::decode_identity(&bytes).ok()
}
