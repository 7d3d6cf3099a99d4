//! A server that alters what it stores is caught by the fetching CLI, which then writes nothing.
//! Each test really changes the server's data on disk, as a compromised server would.

use healthlock_tests::{Server, User, files_below, sha256_file};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const SHARES: TableDefinition<&str, &[u8]> = TableDefinition::new("shares");

/// Stops the server, rewrites one share row with `edit`, starts it again.
fn rewrite_share(server: &mut Server, share_id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    server.stop();
    {
        let db = Database::create(server.data.join("healthlock.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(SHARES).unwrap();
            let mut row: serde_json::Value =
                serde_json::from_slice(t.get(share_id).unwrap().unwrap().value()).unwrap();
            edit(&mut row);
            t.insert(share_id, serde_json::to_vec(&row).unwrap().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    server.restart();
}

fn b64(v: &serde_json::Value) -> Vec<u8> {
    data_encoding::BASE64
        .decode(v.as_str().unwrap().as_bytes())
        .unwrap()
}

fn setup(role: &str) -> (Server, User, User, String, String, String) {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let id = alice.upload(
        &alice.file("echo.pdf", b"%PDF echocardiogram, EF 60%"),
        "imaging",
        None,
    );
    let share = alice.share(&[&id], role, &[]);
    let provider = User::provider(&server, "dan", role);
    let (link, sid) = (
        share["link"].as_str().unwrap().to_owned(),
        share["id"].as_str().unwrap().to_owned(),
    );
    (server, alice, provider, id, link, sid)
}

fn assert_nothing_written(u: &User, dir: &str) {
    let d = u.dir().join(dir);
    assert!(
        files_below(&d).is_empty(),
        "files were written: {:?}",
        files_below(&d)
    );
}

#[test]
fn an_altered_body_is_refused_and_nothing_is_written() {
    let (server, _alice, dan, id, link, _) = setup("doctor");
    let blob = server.data.join("blobs").join(&id);
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();
    let r = dan.run(&["--json", "fetch", &link, "-o", "out"], None);
    assert_eq!(r.code, 14, "{r:?}");
    assert_eq!(r.error_code(), "integrity");
    assert_nothing_written(&dan, "out");

    // A truncated body too.
    std::fs::write(&blob, &bytes[..n / 2]).unwrap();
    assert_eq!(
        dan.fails(&["fetch", &link, "-o", "out"], None, 14),
        "integrity"
    );
    assert_nothing_written(&dan, "out");
}

#[test]
fn an_altered_descriptor_is_refused() {
    let (mut server, _alice, dan, _id, link, sid) = setup("diagnostics");
    rewrite_share(&mut server, &sid, |row| {
        // Claim a longer expiry than the patient signed.
        let text = String::from_utf8(b64(&row["descriptor"]["bytes"])).unwrap();
        let mut d: serde_json::Value = serde_json::from_str(&text).unwrap();
        d["expires"] = serde_json::json!(d["expires"].as_u64().unwrap() + 86_400);
        let bytes = serde_json::to_vec(&d).unwrap();
        row["descriptor"]["bytes"] = data_encoding::BASE64.encode(&bytes).into();
    });
    assert_eq!(
        dan.fails(&["fetch", &link, "-o", "out"], None, 14),
        "integrity"
    );
    assert_nothing_written(&dan, "out");
}

#[test]
fn a_swapped_record_key_is_refused() {
    let (mut server, alice, dan, _id, link, sid) = setup("doctor");
    // The server swaps in another record's envelope and title (one it also holds).
    let other = alice.upload(
        &alice.file("other.pdf", b"%PDF something else"),
        "imaging",
        None,
    );
    let other_share = alice.share(&[&other], "doctor", &[]);
    let other_sid = other_share["id"].as_str().unwrap().to_owned();
    server.stop();
    let other_keys = {
        let db = Database::create(server.data.join("healthlock.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(SHARES).unwrap();
        let row: serde_json::Value =
            serde_json::from_slice(t.get(other_sid.as_str()).unwrap().unwrap().value()).unwrap();
        row["records"][0]["keys"].clone()
    };
    server.restart();
    rewrite_share(&mut server, &sid, |row| {
        row["records"][0]["keys"]["envelope"] = other_keys["envelope"].clone();
        row["records"][0]["keys"]["meta"] = other_keys["meta"].clone();
    });
    assert_eq!(
        dan.fails(&["fetch", &link, "-o", "out"], None, 14),
        "integrity"
    );
    assert_nothing_written(&dan, "out");
}

/// Reads one share row while the server is stopped.
fn read_share(server: &mut Server, share_id: &str) -> serde_json::Value {
    server.stop();
    let row = {
        let db = Database::create(server.data.join("healthlock.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(SHARES).unwrap();
        serde_json::from_slice(t.get(share_id).unwrap().unwrap().value()).unwrap()
    };
    server.restart();
    row
}

#[test]
fn one_bad_file_means_no_file_is_written() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let good = alice.upload(&alice.file("a.pdf", b"%PDF first, intact"), "lab", None);
    let bad = alice.upload(
        &alice.file("b.pdf", b"%PDF second, to be altered"),
        "lab",
        None,
    );
    let link = alice.share(&[&good, &bad], "doctor", &[])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = server.data.join("blobs").join(&bad);
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x80;
    std::fs::write(&blob, &bytes).unwrap();
    let doc = User::provider(&server, "doc", "doctor");
    assert_eq!(
        doc.fails(&["fetch", &link, "-o", "out"], None, 14),
        "integrity"
    );
    assert_nothing_written(&doc, "out");
}

#[test]
fn records_a_role_may_not_read_are_never_keyed_to_the_share() {
    let mut server = Server::start();
    let alice = User::patient(&server, "alice");
    let rx = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
    let lab = alice.upload(&alice.file("lab.pdf", b"HbA1c"), "lab", None);
    let sid = alice.share(&[&rx, &lab], "pharmacist", &[])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let row = read_share(&mut server, &sid);
    for r in row["records"].as_array().unwrap() {
        let keyed = !r["keys"]["envelope"].as_str().unwrap().is_empty();
        assert_eq!(keyed, r["keys"]["id"] == rx.as_str(), "{r}");
    }
    // Deleting a record removes its key from every share too.
    let sid2 = alice.share(&[&rx], "doctor", &[])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.ok(&["delete", &rx], None);
    for s in [&sid, &sid2] {
        let row = read_share(&mut server, s);
        assert!(
            row["records"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["keys"]["envelope"] == ""),
            "{row}"
        );
    }
}

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// Stops the server and returns every record row by record id.
fn record_rows(
    server: &mut Server,
) -> std::collections::HashMap<String, (String, serde_json::Value)> {
    server.stop();
    let db = Database::create(server.data.join("healthlock.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(RECORDS).unwrap();
    t.iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            let row: serde_json::Value = serde_json::from_slice(v.value()).unwrap();
            let id = row["id"].as_str().unwrap().to_owned();
            (id, (k.value().to_owned(), row))
        })
        .collect()
}

/// Writes record rows (store key, row) while the server is stopped, then starts it again.
fn put_record_rows(server: &mut Server, rows: &[(String, serde_json::Value)]) {
    {
        let db = Database::create(server.data.join("healthlock.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(RECORDS).unwrap();
            for (key, row) in rows {
                t.insert(key.as_str(), serde_json::to_vec(row).unwrap().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    server.restart();
}

#[test]
fn a_record_the_server_swaps_plants_or_recategorizes_is_never_shared() {
    let mut server = Server::start();
    let alice = User::patient(&server, "alice");
    let swapped = alice.upload(
        &alice.file("a.pdf", b"%PDF what alice uploaded"),
        "lab",
        None,
    );
    let source = alice.upload(&alice.file("b.pdf", b"%PDF the server's pick"), "lab", None);
    let relabelled = alice.upload(&alice.file("c.pdf", b"%PDF a lab result"), "lab", None);
    let disguised = alice.upload(&alice.file("d.pdf", b"%PDF alice's own"), "lab", None);
    let rows = record_rows(&mut server);
    // A consistent swap: another record's body, size, hash, envelope and title under `swapped`'s
    // id and seal. Before seals, `share` signed this into a share without noticing.
    let (key_a, row_a) = rows[&swapped].clone();
    let (_, row_b) = rows[&source].clone();
    let mut swap = row_b.clone();
    swap["id"] = row_a["id"].clone();
    swap["seal"] = row_a["seal"].clone();
    std::fs::copy(
        server.data.join("blobs").join(&source),
        server.data.join("blobs").join(&swapped),
    )
    .unwrap();
    // A planted record: a copy of a real one under a new id, without a seal.
    let planted = "0123456789abcdef0123456789abcdef".to_owned();
    let mut plant = row_b.clone();
    plant["id"] = planted.clone().into();
    plant["seal"] = serde_json::Value::Null;
    std::fs::copy(
        server.data.join("blobs").join(&source),
        server.data.join("blobs").join(&planted),
    )
    .unwrap();
    let plant_key = key_a.replace(&swapped, &planted);
    // A lab result moved into the category pharmacists can read.
    let (key_c, mut relabel) = rows[&relabelled].clone();
    relabel["category"] = "prescription".into();
    // A swap dressed as a doctor's attachment (which carries no patient's seal).
    let (key_d, row_d) = rows[&disguised].clone();
    let mut disguise = row_b.clone();
    disguise["id"] = row_d["id"].clone();
    disguise["seal"] = serde_json::Value::Null;
    disguise["added_by"] = row_b["owner"].clone();
    std::fs::copy(
        server.data.join("blobs").join(&source),
        server.data.join("blobs").join(&disguised),
    )
    .unwrap();
    put_record_rows(
        &mut server,
        &[
            (key_a, swap),
            (plant_key, plant),
            (key_c, relabel),
            (key_d, disguise),
        ],
    );

    let sealed = |id: &str| alice.listed(id)["sealed"].clone();
    assert_eq!(sealed(&source), true);
    for id in [&swapped, &planted, &relabelled, &disguised] {
        assert_eq!(sealed(id), false, "{id}");
        let r = alice.run(&["--json", "share", id, "--role", "pharmacist"], None);
        assert_eq!(r.code, 14, "{id}: {r:?}");
        assert_eq!(r.error_code(), "integrity");
        assert!(r.stderr.contains("no valid seal"), "{r:?}");
        assert_eq!(
            alice.fails(&["download", id, "-o", "out.pdf"], None, 14),
            "integrity"
        );
        assert!(!alice.dir().join("out.pdf").exists());
    }
    assert!(
        alice.json(&["shares"], None).as_array().unwrap().is_empty(),
        "no share was made"
    );
    // A record changed after it was sealed cannot be sealed again.
    assert_eq!(
        alice.fails(&["download", &swapped, "-o", "x.pdf", "--seal"], None, 14),
        "integrity"
    );
    assert!(!alice.dir().join("x.pdf").exists());
    // The patient can still look at what the server holds, knowingly.
    alice.ok(
        &[
            "download",
            &swapped,
            "-o",
            "swapped.pdf",
            "--allow-unsealed",
        ],
        None,
    );
    assert_eq!(
        std::fs::read(alice.dir().join("swapped.pdf")).unwrap(),
        b"%PDF the server's pick"
    );
    // The untouched record still shares.
    alice.share(&[&source], "doctor", &[]);
    // A seal the server makes up for the planted record is refused and audited; the patient's
    // own, after a download, is what makes it shareable.
    let put_seal = |hash: &serde_json::Value| {
        let body = serde_json::json!({ "hash": hash, "seal": "00".repeat(64) }).to_string();
        healthlock_tests::raw_http(
            &server.url,
            &format!(
                "PUT /v1/records/{planted}/seal HTTP/1.1\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}",
                alice.session_token(),
                body.len()
            ),
            body.as_bytes(),
        )
    };
    // (A hash other than the stored one is refused first: the patient did not download it.)
    let (status, err) = put_seal(&format!("blake3:{}", "ab".repeat(32)).into());
    assert_eq!(status, 400);
    assert!(err.contains("hash does not match"), "{err}");
    let (status, err) = put_seal(&row_b["hash"]);
    assert_eq!(status, 400);
    assert!(err.contains("does not verify"), "{err}");
    assert!(alice.json_lines(&["audit"], None).iter().any(|e| {
        e["action"] == "record.seal" && e["record"] == planted.as_str() && e["allowed"] == false
    }));
    alice.ok(&["download", &planted, "-o", "planted.pdf", "--seal"], None);
    alice.share(&[&planted], "doctor", &[]);
}

#[test]
fn a_record_hashed_with_sha256_before_blake3_still_checks_seals_shares_and_fetches() {
    use ed25519_dalek::Signer;
    use healthlock_common::encoding::{hex, sha256_hex, unb64};
    let mut server = Server::start();
    let alice = User::patient(&server, "alice");
    let doctor = User::provider(&server, "dr-old", "doctor");
    let body = b"%PDF a scan from before BLAKE3".repeat(5000);
    let sealed = alice.upload(&alice.file("sealed.pdf", &body), "imaging", None);
    let unsealed = alice.upload(&alice.file("unsealed.pdf", &body), "imaging", None);
    let wrong = alice.upload(&alice.file("wrong.pdf", &body), "imaging", None);
    let keys = healthlock_common::keys::AccountKeys::from_secret_json(
        &std::fs::read(
            alice
                .dir()
                .join("config/healthlock/profiles/default/keys.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let rows = record_rows(&mut server);
    // Rows as an earlier version kept them: the body's SHA-256 as bare hex under `sha256`. One
    // carries a seal made as the CLI made them then, over the statement's literal bytes (not
    // built by today's code); one has no seal (stored before seals); one's hash is wrong.
    let mut legacy = Vec::new();
    for id in [&sealed, &unsealed, &wrong] {
        let (key, mut row) = rows[id].clone();
        let hash = row["hash"].as_str().unwrap().to_owned();
        assert!(hash.starts_with("blake3:") && hash.len() == 71, "{hash}");
        let mut sha = sha256_file(&server.data.join("blobs").join(id));
        if id == &wrong {
            let last = if sha.ends_with('0') { "1" } else { "0" };
            sha.replace_range(63.., last);
        }
        let seal = (id == &sealed).then(|| {
            let b64 = |field: &str| unb64(row[field].as_str().unwrap(), "row field").unwrap();
            let statement = format!(
                "healthlock/v1/record\n{{\"v\":1,\"owner\":\"{}\",\"id\":\"{id}\",\"category\":\"imaging\",\
                 \"size\":{},\"sha256\":\"{sha}\",\"envelope_sha256\":\"{}\",\"meta_sha256\":\"{}\"}}",
                row["owner"].as_str().unwrap(),
                row["size"],
                sha256_hex(&b64("envelope")),
                sha256_hex(&b64("meta")),
            );
            hex(&keys.signing.sign(statement.as_bytes()).to_bytes())
        });
        let obj = row.as_object_mut().unwrap();
        obj.remove("hash");
        obj.insert("sha256".into(), sha.into());
        obj.insert("seal".into(), seal.into());
        legacy.push((key, row));
    }
    put_record_rows(&mut server, &legacy);

    let listed = |id: &str| alice.listed(id)["sealed"].clone();
    assert_eq!(listed(&sealed), true, "a seal made before BLAKE3 verifies");
    assert_eq!(listed(&unsealed), false);
    // A SHA-256 that does not match the body is caught as such, and nothing is written or sealed.
    let r = alice.run(&["download", &wrong, "-o", "out-wrong.pdf", "--seal"], None);
    assert_eq!(r.code, 14, "{r:?}");
    assert!(r.stderr.contains("do not match"), "{r:?}");
    assert!(!alice.dir().join("out-wrong.pdf").exists());
    assert_eq!(listed(&wrong), false);
    // The right one is checked with SHA-256 and sealed as it stands (a seal over a SHA-256 hash).
    alice.ok(
        &["download", &unsealed, "-o", "out-unsealed.pdf", "--seal"],
        None,
    );
    assert_eq!(
        std::fs::read(alice.dir().join("out-unsealed.pdf")).unwrap(),
        body
    );
    assert_eq!(listed(&unsealed), true);
    // Both share, and a doctor's fetch checks each body against the descriptor's SHA-256.
    let link = alice.share(&[&sealed, &unsealed], "doctor", &[])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let fetched = doctor.json(&["fetch", &link, "-o", "in"], None);
    for name in ["sealed.pdf", "unsealed.pdf"] {
        let written = doctor.dir().join("in").join(name);
        assert_eq!(std::fs::read(&written).unwrap(), body, "{name}");
        let listed = fetched["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(name));
        assert_eq!(
            listed.unwrap()["sha256"].as_str().unwrap(),
            sha256_file(&written)
        );
    }
    // A body changed after sharing fails that check: nothing is written.
    let blob = server.data.join("blobs").join(&sealed);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let r = doctor.run(&["fetch", &link, "-o", "again"], None);
    assert_eq!(r.code, 14, "{r:?}");
    assert!(files_below(&doctor.dir().join("again")).is_empty());
    let rows = record_rows(&mut server);
    assert_eq!(
        rows[&unsealed].1["hash"].as_str().unwrap(),
        legacy[1].1["sha256"].as_str().unwrap(),
        "the seal kept the SHA-256 hash"
    );
}
