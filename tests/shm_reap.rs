//! Segments of a process killed with SIGKILL are removed by `reap_stale`;
//! segments of live processes and files that are not comm segments are not.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use comm::shm::Segment;
use common::{is_role, spawn_role, unique_name};

const NAME_ENV: &str = "COMM_TEST_SEGMENT";

#[test]
fn a_killed_owners_segment_is_reaped_and_live_ones_are_kept() {
    let prefix = unique_name("reap");
    let dead_name = format!("{prefix}-dead");
    let mut child = spawn_role("role_hold", &[(NAME_ENV, &dead_name)], Stdio::piped());
    // The test harness prints its own lines first; keep the pipe open until the
    // child is killed so that it never writes into a closed pipe.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("segment-ready") {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited without creating its segment");
    }
    let dead_path = Path::new("/dev/shm").join(&dead_name);
    assert!(dead_path.exists());

    let live = Segment::create(&format!("{prefix}-live"), 4096).unwrap();
    live.mark_ready();
    // A file with the prefix that is not a comm segment must survive.
    let foreign = Path::new("/dev/shm").join(format!("{prefix}-foreign"));
    std::fs::File::create(&foreign)
        .unwrap()
        .write_all(b"not a segment")
        .unwrap();
    // A half-built segment of a dead process (as if it crashed mid-create).
    let dead_pid = child.id();
    let half = Path::new("/dev/shm").join(format!("{prefix}-half.{dead_pid}.0.init"));
    std::fs::File::create(&half).unwrap();

    assert_eq!(
        Segment::reap_stale(&prefix).unwrap(),
        Vec::<String>::new(),
        "nothing is stale while its owner lives"
    );
    assert!(dead_path.exists());

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(out);
    let mut reaped = Segment::reap_stale(&prefix).unwrap();
    reaped.sort();
    assert_eq!(
        reaped,
        vec![
            dead_name.clone(),
            format!("{prefix}-half.{dead_pid}.0.init")
        ]
    );
    assert!(!dead_path.exists());
    assert!(!half.exists());
    assert!(live.path().exists(), "a live segment was reaped");
    assert!(foreign.exists(), "a foreign file was reaped");
    std::fs::remove_file(&foreign).unwrap();
    assert!(Segment::reap_stale(&prefix).unwrap().is_empty());
}

#[test]
#[ignore = "child process role of a_killed_owners_segment_is_reaped_and_live_ones_are_kept"]
fn role_hold() {
    if !is_role("role_hold") {
        return;
    }
    let seg = Segment::create(&std::env::var(NAME_ENV).unwrap(), 4096).unwrap();
    seg.mark_ready();
    println!("segment-ready");
    std::io::stdout().flush().unwrap();
    // Wait to be killed; bounded so an orphan cannot linger.
    std::thread::sleep(Duration::from_secs(120));
}
