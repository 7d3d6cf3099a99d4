//! Webhooks: signed deliveries a receiver can verify with the published key, retried with
//! backoff across a server restart, and refused for internal addresses unless allowed.

use healthlock_tests::{Server, User};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

/// What a receiver got: the headers (lowercase names) and the body.
type Request = (Vec<(String, String)>, Vec<u8>);

/// A minimal HTTP receiver on a loopback port that answers 200 to every POST.
fn receiver(listener: TcpListener) -> mpsc::Receiver<Request> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            if tx.send((headers, body)).is_err() {
                break;
            }
        }
    });
    rx
}

fn header<'a>(req: &'a Request, name: &str) -> &'a str {
    &req.0
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .1
}

/// Checks the signature with the key the patient's CLI pinned, and returns the body as JSON.
fn verified(req: &Request, key_hex: &str) -> serde_json::Value {
    let key: [u8; 32] = data_encoding::HEXLOWER
        .decode(key_hex.as_bytes())
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
    let sig = data_encoding::BASE64
        .decode(header(req, "x-healthlock-signature").as_bytes())
        .unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    let mut signed = format!(
        "healthlock/v1/webhook\n{}\n",
        header(req, "x-healthlock-timestamp")
    )
    .into_bytes();
    signed.extend_from_slice(&req.1);
    key.verify_strict(&signed, &sig)
        .expect("the signature verifies with the published key");
    let mut tampered = signed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(key.verify_strict(&tampered, &sig).is_err());
    serde_json::from_slice(&req.1).unwrap()
}

fn action(body: &serde_json::Value) -> String {
    let entry: serde_json::Value =
        serde_json::from_str(body["event"]["entry"].as_str().unwrap()).unwrap();
    entry["action"].as_str().unwrap().to_owned()
}

fn setup(server: &Server) -> (User, User, String, String) {
    let s = healthlock_tests::PharmacyScene::new(server);
    let key = s.alice.json(&["whoami"], None)["server_key"]
        .as_str()
        .unwrap()
        .to_owned();
    (s.alice, s.bob, s.link, key)
}

#[test]
fn deliveries_are_signed_with_the_published_key() {
    let server = Server::start_with(&["--allow-private-webhooks"]);
    let (alice, bob, link, key) = setup(&server);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = receiver(listener);
    alice.ok(&["webhook", "set", &url], None);

    alice.ok(&["webhook", "test"], None);
    let test = verified(&got.recv_timeout(Duration::from_secs(10)).unwrap(), &key);
    assert_eq!(test["test"], true);

    bob.ok(&["fetch", &link], None);
    let open = verified(&got.recv_timeout(Duration::from_secs(10)).unwrap(), &key);
    assert_eq!(action(&open), "share.open");
    assert_eq!(open["event"]["actor_name"], "bob");
    assert_eq!(open["origin"], server.url.as_str());
    let fetched = verified(&got.recv_timeout(Duration::from_secs(10)).unwrap(), &key);
    assert_eq!(action(&fetched), "share.fetch");
    let status = alice.json(&["webhook", "status"], None);
    assert!(
        status["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["ok"] == true),
        "{status}"
    );

    alice.ok(&["webhook", "remove"], None);
    bob.ok(&["fetch", &link, "-o", "again"], None);
    assert!(
        got.recv_timeout(Duration::from_millis(1500)).is_err(),
        "nothing after removal"
    );
}

#[test]
fn failed_deliveries_are_retried_across_a_restart() {
    let mut server = Server::start_with(&["--allow-private-webhooks"]);
    let (alice, bob, link, key) = setup(&server);
    // A port nobody listens on yet.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    alice.ok(&["webhook", "set", &format!("http://{addr}/hook")], None);
    bob.ok(&["fetch", &link], None);
    // Wait (bounded) until the failures are on record.
    let mut failed = 0;
    for _ in 0..50 {
        failed = alice.json(&["webhook", "status"], None)["failed_attempts"]
            .as_u64()
            .unwrap();
        if failed >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(failed >= 2, "attempts were made and failed");
    server.restart();
    let got = receiver(TcpListener::bind(addr).unwrap());
    let first = verified(&got.recv_timeout(Duration::from_secs(20)).unwrap(), &key);
    assert_eq!(
        action(&first),
        "share.open",
        "the event that failed comes first, after the restart"
    );
    let second = verified(&got.recv_timeout(Duration::from_secs(10)).unwrap(), &key);
    assert_eq!(action(&second), "share.fetch");
    let log = alice.json(&["webhook", "status"], None);
    let deliveries = log["deliveries"].as_array().unwrap();
    assert!(
        deliveries
            .iter()
            .any(|d| d["ok"] == false && d["error"].as_str().unwrap().contains("refused")),
        "{log}"
    );
    assert!(
        deliveries
            .iter()
            .any(|d| d["ok"] == true && d["attempt"].as_u64().unwrap() >= 3),
        "{log}"
    );
}

#[test]
fn internal_targets_are_refused_unless_the_operator_allows_them() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
    ] {
        let r = alice.run(&["--json", "webhook", "set", url], None);
        assert_eq!(r.code, 15, "{url}: {r:?}");
        assert_eq!(r.error_code(), "bad_request");
    }
    let r = alice.run(&["webhook", "set", "http://127.0.0.1:9/hook"], None);
    assert!(r.stderr.contains("--allow-private-webhooks"), "{r:?}");
    assert_eq!(alice.fails(&["webhook", "status"], None, 7), "not_found");
}
