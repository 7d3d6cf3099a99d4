//! The audit log is tamper-evident: `audit --verify` passes on an honest server and fails on each
//! kind of tampering, done for real to the server's data directory.

use healthlock_tests::{Server, User, copy_dir};
use redb::{Database, ReadableTable, TableDefinition};

const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// A patient whose log has a few events, one of them a pharmacist's access.
fn busy_patient(server: &Server) -> (User, User, String) {
    let s = healthlock_tests::PharmacyScene::new(server);
    s.bob.ok(&["fetch", &s.link], None);
    (s.alice, s.bob, s.rx)
}

fn user_id(u: &User) -> String {
    u.json(&["whoami"], None)["id"].as_str().unwrap().to_owned()
}

/// Stops the server, edits the patient's audit rows, starts it again.
fn edit_log(
    server: &mut Server,
    log: &str,
    edit: impl FnOnce(&mut redb::Table<(&str, u64), &[u8]>),
) {
    server.stop();
    {
        let db = Database::create(server.data.join("healthlock.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(AUDIT).unwrap();
            edit(&mut t);
        }
        txn.commit().unwrap();
    }
    let _ = log;
    server.restart();
}

fn row(t: &redb::Table<(&str, u64), &[u8]>, log: &str, seq: u64) -> Vec<u8> {
    t.get((log, seq)).unwrap().unwrap().value().to_vec()
}

fn verify_fails(u: &User, args: &[&str], words: &str) {
    let mut all = vec!["audit", "--verify"];
    all.extend_from_slice(args);
    let r = u.run(&all, None);
    assert_eq!(r.code, 14, "{r:?}");
    assert!(r.stderr.contains(words), "expected {words:?}: {r:?}");
}

#[test]
fn an_honest_log_verifies_and_extends() {
    let server = Server::start();
    let (alice, _, _) = busy_patient(&server);
    let first = alice.json(&["audit", "--verify"], None);
    assert_eq!(first["verified"], true);
    assert!(first["size"].as_u64().unwrap() >= 5, "{first}");
    assert_eq!(first["new"], first["size"]);
    // More events; only the new ones are checked, and they extend the old head.
    alice.json(&["records"], None);
    alice.upload(&alice.file("more.pdf", b"more"), "lab", None);
    let second = alice.json(&["audit", "--verify"], None);
    assert_eq!(
        second["new"].as_u64().unwrap(),
        second["size"].as_u64().unwrap() - first["size"].as_u64().unwrap()
    );
    assert!(second["new"].as_u64().unwrap() >= 1);
    alice.ok(&["audit", "--verify", "--full"], None);
    // The pinned key is the one whoami shows.
    assert_eq!(
        alice.json(&["whoami"], None)["server_key"],
        second["server_key"]
    );
    // … and the one published at the well-known route.
    let (status, body) = healthlock_tests::raw_http(
        &server.url,
        "GET /.well-known/healthlock/server-key HTTP/1.1",
        b"",
    );
    assert_eq!(status, 200);
    let published: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(published["key"], second["server_key"]);
    // Listing works in pages and from a time.
    let lines = alice.json_lines(&["audit", "--since", "1h"], None);
    assert_eq!(lines.len() as u64, second["size"].as_u64().unwrap());
    assert_eq!(
        alice.json_lines(&["audit", "--after", "3"], None)[0]["seq"],
        4
    );
}

#[test]
fn an_altered_event_is_caught() {
    let mut server = Server::start();
    let (alice, _, _) = busy_patient(&server);
    alice.ok(&["audit", "--verify"], None);
    let log = user_id(&alice);
    // Rewrite the pharmacist's access as refused, keeping the stored chain values.
    edit_log(&mut server, &log, |t| {
        let last = t
            .range((log.as_str(), 0)..=(log.as_str(), u64::MAX))
            .unwrap()
            .count() as u64;
        for seq in 1..=last {
            let text = String::from_utf8(row(t, &log, seq)).unwrap();
            if text.contains(r#"share.open"#) {
                let forged = text.replace(r#"\"allowed\":true"#, r#"\"allowed\":false"#);
                assert_ne!(forged, text);
                t.insert((log.as_str(), seq), forged.as_bytes()).unwrap();
            }
        }
    });
    verify_fails(&alice, &["--full"], "altered");
    let laptop = User::new(&server, "alice");
    laptop.ok(
        &["login", "--username", "alice", "--password-stdin"],
        Some(&format!("{}\n", laptop.password)),
    );
    verify_fails(&laptop, &[], "altered");
}

#[test]
fn removed_and_reordered_events_are_caught() {
    let mut server = Server::start();
    let (alice, _, _) = busy_patient(&server);
    let log = user_id(&alice);
    edit_log(&mut server, &log, |t| {
        let (a, b) = (row(t, &log, 2), row(t, &log, 3));
        t.insert((log.as_str(), 2), b.as_slice()).unwrap();
        t.insert((log.as_str(), 3), a.as_slice()).unwrap();
    });
    verify_fails(&alice, &[], "removed or reordered");
    edit_log(&mut server, &log, |t| {
        t.remove((log.as_str(), 2)).unwrap();
    });
    verify_fails(&alice, &[], "removed or reordered");
}

/// Copies the data directory, runs `later` (which the device verifies), then restarts the
/// server on the older copy — as an operator restoring a backup, or an attacker, would.
fn back_to_an_older_copy(server: &mut Server, later: impl FnOnce()) {
    let old = tempfile::tempdir().unwrap();
    server.stop();
    copy_dir(&server.data, old.path());
    server.restart();
    later();
    server.stop();
    std::fs::remove_dir_all(&server.data).unwrap();
    copy_dir(old.path(), &server.data);
    server.restart();
}

#[test]
fn a_rolled_back_log_is_caught() {
    let mut server = Server::start();
    let (alice, _, rx) = busy_patient(&server);
    back_to_an_older_copy(&mut server, || {
        alice.ok(&["share", &rx, "--role", "doctor"], None);
        alice.ok(&["audit", "--verify"], None);
    });
    verify_fails(&alice, &[], "rolled back");
}

#[test]
fn a_forked_log_is_caught() {
    let mut server = Server::start();
    let (alice, _, rx) = busy_patient(&server);
    back_to_an_older_copy(&mut server, || {
        alice.ok(&["share", &rx, "--role", "doctor"], None);
        alice.ok(&["audit", "--verify"], None);
    });
    // A different history grows past what the device verified.
    for _ in 0..3 {
        alice.ok(&["share", &rx, "--role", "diagnostics"], None);
    }
    verify_fails(&alice, &[], "forked");
}

#[test]
fn a_changed_server_key_is_refused_by_fetch_and_verify() {
    let mut server = Server::start();
    let (alice, bob, rx) = busy_patient(&server);
    let link = alice.share(&[&rx], "pharmacist", &[])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    server.stop();
    {
        let db = Database::create(server.data.join("healthlock.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("audit_key", &[42u8; 32][..])
            .unwrap();
        txn.commit().unwrap();
    }
    server.restart();
    // bob pinned the key when he registered: his fetch is refused before any file is written.
    let r = bob.run(&["fetch", &link, "-o", "after"], None);
    assert_eq!(r.code, 14, "{r:?}");
    assert!(r.stderr.contains("audit key changed"), "{r:?}");
    assert!(healthlock_tests::files_below(&bob.dir().join("after")).is_empty());
    verify_fails(&alice, &[], "audit key changed");
}
