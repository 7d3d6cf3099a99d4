//! CLI checks that need no server. (Their presence also makes `cargo test --workspace` build the
//! `healthlock` binary that the end-to-end tests in `tests/` drive.)

use std::process::Command;

fn healthlock(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_healthlock"))
        .args(args)
        .env_clear()
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap()
}

#[test]
fn help_teaches_and_names_every_command() {
    let out = healthlock(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "register",
        "login",
        "logout",
        "whoami",
        "upload",
        "records",
        "download",
        "delete",
        "share",
        "shares",
        "revoke",
        "fetch",
        "attach",
        "audit",
        "notifications",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}");
    }
    assert!(text.contains("HEALTHLOCK_PASSWORD"));
}

#[test]
fn passwords_are_never_arguments() {
    let out = healthlock(&["login", "--username", "a", "--password", "secret"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses the unknown flag");
}

#[test]
fn a_malformed_link_fails_before_any_network_use() {
    let out = healthlock(&["--json", "fetch", "https://example.invalid/s#hl1zzzz"]);
    assert_eq!(out.status.code(), Some(15));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["code"], "invalid_input");
}
