//! `comm-info` runs, exits 0 and reports the node id and the transports.

use std::process::{Command, Output};

fn comm_info(vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comm-info"));
    for var in [
        "COMM_ENGINE",
        "COMM_TRANSPORTS",
        "COMM_CORES",
        "COMM_LISTEN",
        "COMM_NODE_ID",
        "COMM_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().copied());
    cmd.output().expect("run comm-info")
}

#[test]
fn prints_node_id_shm_and_tcp() {
    let out = comm_info(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    let node = comm::NodeId::discover_with(|_| None);
    assert!(
        stdout.contains(node.as_str()),
        "no node id {node} in:\n{stdout}"
    );
    assert!(stdout.contains("shm"), "{stdout}");
    assert!(stdout.contains("tcp"), "{stdout}");
    assert!(stdout.contains("peer on this node"), "{stdout}");
    assert!(stdout.contains("peer on another node"), "{stdout}");
}

#[test]
fn reports_the_node_id_override_and_environment() {
    let out = comm_info(&[
        ("COMM_NODE_ID", "test-node-42"),
        ("COMM_TRANSPORTS", "tcp,udp"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    assert!(stdout.contains("test-node-42"), "{stdout}");
    assert!(stdout.contains("COMM_TRANSPORTS=tcp,udp"), "{stdout}");
}

#[test]
fn bad_environment_is_reported_and_fails() {
    let out = comm_info(&[("COMM_CORES", "zero")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("COMM_CORES"), "{stdout}");
}

#[test]
fn help_works() {
    let out = Command::new(env!("CARGO_BIN_EXE_comm-info"))
        .arg("--help")
        .output()
        .expect("run comm-info --help");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}
