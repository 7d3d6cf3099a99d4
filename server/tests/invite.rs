//! `healthlock-server invite` writes only the hash of the code. (This test also makes
//! `cargo test --workspace` build the server binary that the end-to-end tests start.)

use std::process::Command;

#[test]
fn invite_spools_only_a_hash() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_healthlock-server"))
        .args(["invite", "--role", "doctor", "--json", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let code = v["invite"].as_str().unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path().join("invites"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().into_string().unwrap();
    assert_eq!(
        name,
        format!("{}.json", healthlock_server::invite::code_hash(code))
    );
    assert!(
        !std::fs::read_to_string(files[0].path())
            .unwrap()
            .contains(code)
    );
}

#[test]
fn invites_are_only_for_providers() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_healthlock-server"))
        .args(["invite", "--role", "patient", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
