//! Whether the process that created a segment still runs. A pid alone can be
//! reused, so the process start time (in clock ticks since boot, field 22 of
//! `/proc/<pid>/stat`) is recorded with it.

use std::fs;

/// Start time of `pid` in clock ticks since boot, `None` if it is gone or a zombie.
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); start time is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// True while the process `pid` that started at `ticks` (0 = unknown) runs.
/// Our own pid counts as alive only with our own start time: a restarted
/// process that got the same pid must still reap its predecessor's segments.
pub(crate) fn is_alive(pid: u32, ticks: u64) -> bool {
    match start_ticks(pid) {
        Some(now) => ticks == 0 || now == ticks,
        None => false,
    }
}

/// Inode of this process's pid namespace, 0 if unknown.
pub(crate) fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = std::process::id();
        let ticks = start_ticks(me).expect("own /proc entry");
        assert!(is_alive(me, ticks));
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!is_alive(pid, 0));
    }

    #[test]
    fn a_reused_pid_with_another_start_time_is_dead() {
        // pid 1 exists in every namespace; a start tick it never had means "another process".
        if let Some(t) = start_ticks(1) {
            assert!(!is_alive(1, t + 1));
        }
    }
}
