//! The flows a patient and providers live through.

use healthlock_tests::{Server, User, sha256_file};

#[test]
fn patient_to_pharmacist_flow() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let rx = alice.file(
        "amoxicillin.pdf",
        b"%PDF-1.4 Rx amoxicillin 500 mg, 3x daily",
    );
    let lab = alice.file("blood.pdf", b"%PDF-1.4 full blood count");
    let rx_id = alice.upload(&rx, "prescription", Some("Amoxicillin"));
    let lab_id = alice.upload(&lab, "lab", None);

    let records = alice.json(&["records"], None);
    let titles: Vec<_> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles.len(), 2);
    assert!(titles.contains(&"Amoxicillin".to_owned()) && titles.contains(&"blood.pdf".to_owned()));

    // The CLI warns that the lab result will be invisible to a pharmacist, but shares.
    let r = alice.ok(
        &[
            "--json",
            "share",
            &rx_id,
            &lab_id,
            "--role",
            "pharmacist",
            "--expires",
            "2h",
        ],
        None,
    );
    assert!(r.stderr.contains("invisible to a pharmacist"), "{r:?}");
    let share = r.json();
    let link = share["link"].as_str().unwrap();
    assert!(link.starts_with(&format!("{}/s#hl1", server.url)), "{link}");
    assert_eq!(
        share["token"].as_str().unwrap(),
        link.split('#').nth(1).unwrap()
    );

    let bob = User::provider(&server, "bob", "pharmacist");
    let fetched = bob.json(&["fetch", link, "-o", "out"], None);
    let files = fetched["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{fetched}");
    assert_eq!(files[0]["record"], rx_id.as_str());
    assert_eq!(fetched["withheld"][0], lab_id.as_str());
    let written = bob.dir().join("out/amoxicillin.pdf");
    assert_eq!(
        std::fs::read(&written).unwrap(),
        std::fs::read(&rx).unwrap()
    );
    assert_eq!(files[0]["sha256"].as_str().unwrap(), sha256_file(&written));
    assert_eq!(
        std::fs::read_dir(bob.dir().join("out")).unwrap().count(),
        1,
        "nothing but the prescription"
    );

    // Alice sees the access in her audit log and as a notification, once.
    let audit = alice.json_lines(&["audit"], None);
    let opened = audit
        .iter()
        .find(|e| e["action"] == "share.open")
        .expect("share.open event");
    assert_eq!(opened["actor_name"], "bob");
    assert_eq!(opened["actor_role"], "pharmacist");
    assert_eq!(opened["allowed"], true);
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "share.fetch" && e["record"] == rx_id.as_str())
    );
    let first = alice.json(&["notifications"], None);
    assert!(
        first
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "share.open" && e["actor_name"] == "bob")
    );
    assert!(
        first
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor_name"] != "alice"),
        "own actions are not notifications"
    );
    assert_eq!(
        alice.json(&["notifications"], None),
        serde_json::json!([]),
        "marked read"
    );

    let shares = alice.json(&["shares"], None);
    assert_eq!(shares[0]["uses"], 1);
    assert_eq!(shares[0]["status"], "active");
}

#[test]
fn doctor_reads_everything_and_attaches_a_note() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let mri = alice.file("mri.jpg", &[0xFFu8, 0xD8, 0xFF, 0xE0, 1, 2, 3]);
    let lab = alice.file("lab.pdf", b"%PDF lipids");
    let a = alice.upload(&mri, "imaging", Some("Knee MRI"));
    let b = alice.upload(&lab, "lab", None);
    let share = alice.share(&[&a, &b], "doctor", &[]);
    let link = share["link"].as_str().unwrap();

    let carol = User::provider(&server, "carol", "doctor");
    let fetched = carol.json(&["fetch", link, "-o", "in"], None);
    assert_eq!(fetched["files"].as_array().unwrap().len(), 2);
    assert_eq!(
        std::fs::read(carol.dir().join("in/mri.jpg")).unwrap(),
        std::fs::read(&mri).unwrap()
    );

    let note = carol.file("referral.txt", b"Refer to orthopaedics. -- Dr Carol");
    let attached = carol.json(
        &[
            "attach",
            link,
            note.to_str().unwrap(),
            "--category",
            "note",
            "--title",
            "Referral",
        ],
        None,
    );
    let note_id = attached["record"].as_str().unwrap();

    let listed = || alice.listed(note_id);
    let rec = listed();
    assert_eq!(rec["title"], "Referral");
    assert_eq!(rec["added_by"], "carol");
    assert_eq!(rec["sealed"], false);
    // Only the server vouches for an attachment until alice has checked and sealed it.
    assert_eq!(
        alice.fails(&["share", note_id, "--role", "doctor"], None, 14),
        "integrity"
    );
    assert_eq!(
        alice.fails(&["download", note_id, "-o", "referral-copy.txt"], None, 14),
        "integrity"
    );
    let out = alice.json(
        &["download", note_id, "-o", "referral-copy.txt", "--seal"],
        None,
    );
    assert_eq!(
        std::fs::read(alice.dir().join("referral-copy.txt")).unwrap(),
        std::fs::read(&note).unwrap()
    );
    assert_eq!(out["sha256"].as_str().unwrap(), sha256_file(&note));
    let rec = listed();
    assert_eq!(rec["sealed"], true);
    assert_eq!(rec["added_by"], "carol");
    let audit = alice.json_lines(&["audit"], None);
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "record.seal" && e["record"] == note_id),
        "{audit:?}"
    );
    // Now it is alice's to share, and sealing twice is refused.
    alice.share(&[note_id], "doctor", &[]);
    assert_eq!(
        alice.fails(
            &["download", note_id, "-o", "again.txt", "--seal"],
            None,
            15
        ),
        "invalid_input"
    );
}

#[test]
fn login_on_a_fresh_machine_restores_the_vault_and_logout_ends_the_session() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let scan = alice.file("scan.pdf", b"%PDF thyroid ultrasound");
    let id = alice.upload(&scan, "imaging", Some("Thyroid"));

    let laptop = User::new(&server, "alice");
    assert_eq!(laptop.run(&["records"], None).code, 4, "not logged in yet");
    laptop.ok(
        &["login", "--username", "alice", "--password-stdin"],
        Some(&format!("{}\n", laptop.password)),
    );
    let records = laptop.json(&["records"], None);
    assert_eq!(records[0]["title"], "Thyroid");
    laptop.ok(&["download", &id[..8]], None);
    assert_eq!(
        std::fs::read(laptop.dir().join("scan.pdf")).unwrap(),
        std::fs::read(&scan).unwrap()
    );

    // The profile's files are private.
    #[cfg(unix)]
    for f in ["session.json", "keys.json"] {
        use std::os::unix::fs::PermissionsExt;
        let p = laptop
            .dir()
            .join("config/healthlock/profiles/default")
            .join(f);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o077,
            0,
            "{f} is private"
        );
    }

    // Logout revokes the session on the server: a copy of the session file no longer works.
    let session_file = laptop
        .dir()
        .join("config/healthlock/profiles/default/session.json");
    let keys_file = laptop
        .dir()
        .join("config/healthlock/profiles/default/keys.json");
    let (saved_session, saved_keys) = (
        std::fs::read(&session_file).unwrap(),
        std::fs::read(&keys_file).unwrap(),
    );
    laptop.ok(&["logout"], None);
    assert_eq!(laptop.run(&["whoami"], None).code, 4);
    std::fs::write(&session_file, saved_session).unwrap();
    std::fs::write(&keys_file, saved_keys).unwrap();
    assert_eq!(laptop.fails(&["whoami"], None, 4), "unauthenticated");
    // The other machine's session is unaffected.
    assert_eq!(alice.json(&["whoami"], None)["username"], "alice");
}

#[test]
fn download_refuses_to_overwrite_without_force() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let f = alice.file("x.txt", b"original");
    let id = alice.upload(&f, "note", None);
    alice.file("copy.txt", b"do not clobber");
    assert_eq!(
        alice.fails(&["download", &id, "-o", "copy.txt"], None, 16),
        "exists"
    );
    assert_eq!(
        std::fs::read(alice.dir().join("copy.txt")).unwrap(),
        b"do not clobber"
    );
    alice.ok(&["download", &id, "-o", "copy.txt", "--force"], None);
    assert_eq!(
        std::fs::read(alice.dir().join("copy.txt")).unwrap(),
        b"original"
    );
}

#[test]
fn deleted_records_are_reported_missing_to_the_provider() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let a = alice.upload(&alice.file("a.txt", b"a"), "lab", None);
    let b = alice.upload(&alice.file("b.txt", b"b"), "lab", None);
    let link = alice.share(&[&a, &b], "diagnostics", &[])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.ok(&["delete", &b], None);
    assert_eq!(alice.json(&["records"], None).as_array().unwrap().len(), 1);
    assert!(
        !server.data.join("blobs").join(&b).exists(),
        "the body is gone from disk"
    );
    let lab = User::provider(&server, "lab", "diagnostics");
    let v = lab.json(&["fetch", &link], None);
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
    assert_eq!(v["missing"][0], b.as_str());
}

#[test]
fn a_multi_megabyte_file_streams_through_intact() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    // Not a multiple of age's 64 KiB chunk, so the last chunk is partial.
    let data: Vec<u8> = (0..(6 * 1024 * 1024 + 12_345))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let f = alice.file("ct-series.dcm", &data);
    let id = alice.upload(&f, "imaging", None);
    let link = alice.share(&[&id], "diagnostics", &[])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let rad = User::provider(&server, "rad", "diagnostics");
    rad.ok(&["fetch", &link, "-o", "study"], None);
    assert_eq!(
        sha256_file(&rad.dir().join("study/ct-series.dcm")),
        sha256_file(&f)
    );
    // The server holds a standard age file, not the plaintext.
    let blob = std::fs::read(server.data.join("blobs").join(&id)).unwrap();
    assert!(blob.starts_with(b"age-encryption.org/v1\n"));
    assert!(blob.len() > data.len());
}

/// Decrypts an age file with the reference `age` CLI when it is installed (CI installs Debian's
/// `age`), else with the `age` crate, and returns the plaintext.
fn reference_decrypt(identity: &str, ciphertext: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (id_file, ct_file) = (dir.path().join("id"), dir.path().join("ct.age"));
    std::fs::write(&id_file, identity).unwrap();
    std::fs::write(&ct_file, ciphertext).unwrap();
    match std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id_file)
        .arg(&ct_file)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "age -d failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
        Err(_) => {
            eprintln!(
                "note: the reference `age` CLI is not installed; checking with the age crate"
            );
            let id: age::x25519::Identity = identity.trim().parse().unwrap();
            age::decrypt(&id, ciphertext).unwrap()
        }
    }
}

#[test]
fn stored_bodies_and_envelopes_are_standard_age_files() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let content = b"%PDF-1.7 interoperability check";
    let id = alice.upload(&alice.file("doc.pdf", content), "lab", None);
    // Exactly three of age's 64 KiB chunks: the last chunk is full, and flagged as the last.
    let scan: Vec<u8> = (0..3 * 65_536u32).map(|i| (i % 253) as u8).collect();
    let scan_id = alice.upload(&alice.file("scan.dcm", &scan), "imaging", None);
    let profile = alice.dir().join("config/healthlock/profiles/default");
    let keys: serde_json::Value =
        serde_json::from_slice(&std::fs::read(profile.join("keys.json")).unwrap()).unwrap();
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(profile.join("session.json")).unwrap()).unwrap();
    // The record key from the vault's envelope, then the stored body with that key.
    let stored_plaintext = |id: &str| {
        let head = format!(
            "GET /v1/records/{id} HTTP/1.1\r\nAuthorization: Bearer {}",
            session["token"].as_str().unwrap()
        );
        let (status, body) = healthlock_tests::raw_http(&server.url, &head, b"");
        assert_eq!(status, 200, "{body}");
        let info: serde_json::Value = serde_json::from_str(&body).unwrap();
        let envelope = data_encoding::BASE64
            .decode(info["envelope"].as_str().unwrap().as_bytes())
            .unwrap();
        let record_key = reference_decrypt(keys["age"].as_str().unwrap(), &envelope);
        let blob = std::fs::read(server.data.join("blobs").join(id)).unwrap();
        reference_decrypt(std::str::from_utf8(&record_key).unwrap(), &blob)
    };
    assert_eq!(stored_plaintext(&id), content);
    assert!(
        stored_plaintext(&scan_id) == scan,
        "the reference decrypts a different scan"
    );
}

#[test]
fn several_files_upload_in_one_command_and_refuse_a_shared_title() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let a = alice.file("one.pdf", b"1");
    let b = alice.file("two.pdf", b"22");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let v = alice.json(&["upload", a, b, "--category", "lab"], None);
    let names: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one.pdf", "two.pdf"]);
    assert_eq!(v[1]["size"], 2);
    assert_eq!(
        alice.fails(&["upload", a, b, "--title", "x"], None, 15),
        "invalid_input"
    );
    assert_eq!(
        alice.fails(&["upload", "no-such-file.pdf"], None, 15),
        "invalid_input"
    );
    assert_eq!(alice.json(&["records"], None).as_array().unwrap().len(), 2);
}
