//! Limits that must hold under concurrency: `--uses N` gives exactly N successful opens, the
//! passcode lock evaluates at most 5 wrong guesses however many arrive at once, and proofs
//! checked together refuse exactly the forged ones.

use healthlock_common::audit::Checkpoint;
use healthlock_common::token::{ShareSecret, parse_link_or_token};
use healthlock_tests::{Prover, Server, User, open_raw, post_raw, raw_http};
use std::sync::{Arc, Barrier};

/// Trials of the uses test: 100 by default, `HEALTHLOCK_TRIALS` to change.
fn trials() -> usize {
    std::env::var("HEALTHLOCK_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

#[test]
fn uses_give_exactly_n_successes_under_20_concurrent_opens() {
    // 2,000 opens by one account in seconds: lift the rate limit for this test.
    let server = Server::start_with(&["--open-rate", "1000000"]);
    let alice = User::patient(&server, "alice");
    let rx = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
    let bob = User::provider(&server, "bob", "pharmacist");
    let session = Arc::new(bob.session_token());
    let url = Arc::new(server.url.clone());
    let uses = 3;
    for trial in 0..trials() {
        let share = alice.share(&[&rx], "pharmacist", &["--uses", "3"]);
        let link = share["link"].as_str().unwrap().to_owned();
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let (url, session, link) = (url.clone(), session.clone(), link.clone());
                std::thread::spawn(move || {
                    let secret = parse_link_or_token(&link).unwrap().secret;
                    open_raw(&url, &session, &secret, None)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|(s, _)| *s == 200).count();
        let used_up = results
            .iter()
            .filter(|(s, b)| *s == 410 && b["error"]["code"] == "share_used_up")
            .count();
        assert_eq!(
            (ok, used_up),
            (uses, 20 - uses),
            "trial {trial}: {results:?}"
        );
    }
}

#[test]
fn the_passcode_lock_holds_under_50_concurrent_wrong_guesses() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let rx = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
    let bob = User::provider(&server, "bob", "pharmacist");
    let share = alice.share(&[&rx], "pharmacist", &["--passcode"]);
    let link = share["link"].as_str().unwrap().to_owned();
    let passcode = share["passcode"].as_str().unwrap().to_owned();
    let wrong = if passcode == "0000-0000" {
        "1111-1111"
    } else {
        "0000-0000"
    };
    let (url, session) = (Arc::new(server.url.clone()), Arc::new(bob.session_token()));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (url, session, link) = (url.clone(), session.clone(), link.clone());
            std::thread::spawn(move || {
                let secret = parse_link_or_token(&link).unwrap().secret;
                open_raw(&url, &session, &secret, Some(wrong))
            })
        })
        .collect();
    let codes: Vec<String> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap().1["error"]["code"]
                .as_str()
                .unwrap_or("none")
                .to_owned()
        })
        .collect();
    let count = |c: &str| codes.iter().filter(|x| *x == c).count();
    assert_eq!(
        count("passcode_wrong"),
        5,
        "exactly five guesses were evaluated: {codes:?}"
    );
    assert_eq!(count("share_locked"), 45, "{codes:?}");
    // Locked for good: the right passcode no longer opens it.
    let secret = parse_link_or_token(&link).unwrap().secret;
    assert_eq!(
        open_raw(&url, &session, &secret, Some(&passcode)).1["error"]["code"],
        "share_locked"
    );
    // Every failure is in the patient's log and in her notifications.
    let audit = alice.json_lines(&["audit"], None);
    let refused = |r: &str| audit.iter().filter(|e| e["reason"] == r).count();
    assert_eq!(
        (refused("passcode_wrong"), refused("share_locked")),
        (5, 46)
    );
    let notes = alice.json(&["notifications"], None);
    assert_eq!(
        notes
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["allowed"] == false)
            .count(),
        51
    );
}

/// A server without open rate limits, patient alice with a prescription shared with doctors,
/// and doctor doc: the server, alice, the share's secret and doc's session.
fn doctor_scene() -> (Server, User, ShareSecret, Arc<String>) {
    let server = Server::start_with(&["--open-rate", "1000000"]);
    let alice = User::patient(&server, "alice");
    let rx = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
    let doc = User::provider(&server, "doc", "doctor");
    let share = alice.share(&[&rx], "doctor", &[]);
    let secret = parse_link_or_token(share["link"].as_str().unwrap())
        .unwrap()
        .secret;
    let session = Arc::new(doc.session_token());
    (server, alice, secret, session)
}

#[test]
fn opens_arriving_together_refuse_exactly_the_forged_proofs() {
    let (server, alice, secret, session) = doctor_scene();
    let url = Arc::new(server.url.clone());
    let (real, forger) = (
        Arc::new(Prover::new(&secret)),
        Arc::new(Prover::forger(secret.share_id())),
    );
    let server_key = server_key(&server.url);
    let mut batched = 0;
    let (rounds, per_round) = (4, 32);
    for round in 0..rounds {
        // Every client holds its challenge before any sends its open, so the opens reach the
        // server together and their proofs are checked in batches with forged ones among them.
        let barrier = Arc::new(Barrier::new(per_round));
        let handles: Vec<_> = (0..per_round)
            .map(|i| {
                let prover = if i % 2 == 0 { &real } else { &forger }.clone();
                let (url, session, barrier) = (url.clone(), session.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let post = |path: &str, body: &[u8]| post_raw(&url, &session, path, body);
                    let (status, challenge) = post(&prover.challenge_path(), b"{}");
                    assert_eq!(status, 200, "{challenge}");
                    let (path, body) = prover.open_request(&url, &challenge, None);
                    barrier.wait();
                    (i % 2 == 0, post(&path, &body))
                })
            })
            .collect();
        for h in handles {
            let (genuine, (status, body)) = h.join().unwrap();
            let code: serde_json::Value = serde_json::from_str(&body).unwrap();
            if genuine {
                assert_eq!(
                    status, 200,
                    "round {round}: a genuine proof was refused: {body}"
                );
                // Opens committed together get their checkpoints signed together: each
                // verifies with the published key through its own path.
                let checkpoint: Checkpoint =
                    serde_json::from_value(code["audit"]["checkpoint"].clone()).unwrap();
                checkpoint
                    .verify(&server_key)
                    .expect("the checkpoint verifies");
                batched += usize::from(checkpoint.batch.is_some());
            } else {
                assert_eq!(
                    (status, code["error"]["code"].as_str()),
                    (404, Some("not_found")),
                    "round {round}: a forged proof was not refused as unknown: {body}"
                );
            }
        }
    }
    // Each open, genuine or forged, is in the patient's log, the forged ones as refused.
    let audit = alice.json_lines(&["audit"], None);
    let opens = |allowed: bool| {
        audit
            .iter()
            .filter(|e| e["action"] == "share.open" && e["allowed"] == allowed)
            .count()
    };
    let half = rounds * per_round / 2;
    assert_eq!((opens(true), opens(false)), (half, half));
    assert!(batched > 0, "no checkpoint of {half} was signed in a batch");
}

/// The server's audit key, as `GET /v1/server-key` publishes it.
fn server_key(url: &str) -> ed25519_dalek::VerifyingKey {
    let (status, body) = raw_http(url, "GET /v1/server-key HTTP/1.1", b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    healthlock_common::keys::parse_verifying_key(v["key"].as_str().unwrap()).unwrap()
}

#[test]
fn a_spent_nonce_is_always_audited_even_when_its_client_hangs_up() {
    let (server, alice, secret, session) = doctor_scene();
    let url = Arc::new(server.url.clone());
    let forger = Arc::new(Prover::forger(secret.share_id()));
    let (rounds, n) = (3, 32);
    let mut spent_by_hangups = 0;
    for _ in 0..rounds {
        let barrier = Arc::new(Barrier::new(n));
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (url, session, forger, barrier) = (
                    url.clone(),
                    session.clone(),
                    forger.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || hang_up_then_retry(&url, &session, &forger, &barrier))
            })
            .collect();
        spent_by_hangups += handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|spent| *spent)
            .count();
    }
    // Each nonce was evaluated exactly once, by the request that hung up or by the retry, and
    // every evaluation is in the patient's log (a hung-up request's may still be on its way).
    let refused = || {
        alice
            .json_lines(&["audit"], None)
            .iter()
            .filter(|e| e["action"] == "share.open" && e["reason"] == "not_found")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while refused() < rounds * n && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        refused(),
        rounds * n,
        "{spent_by_hangups} nonces were spent by requests whose clients hung up"
    );
}

/// Sends a forged open and hangs up without reading the answer (all clients at once, after the
/// barrier), then sends the same open again and waits: returns whether the nonce had been spent
/// by the request that hung up (the server may drop such a request before it looks at it).
fn hang_up_then_retry(url: &str, session: &str, forger: &Prover, barrier: &Barrier) -> bool {
    use std::io::Write;
    let (status, challenge) = post_raw(url, session, &forger.challenge_path(), b"{}");
    assert_eq!(status, 200, "{challenge}");
    let (path, body) = forger.open_request(url, &challenge, None);
    let host = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {session}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    barrier.wait();
    conn.write_all(&[head.as_bytes(), &body].concat()).unwrap();
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (status, answer) = post_raw(url, session, &path, &body);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    match (status, answer["error"]["code"].as_str()) {
        (404, Some("not_found")) => false,
        (401, Some("challenge_invalid")) => true,
        _ => panic!("{status} {answer}"),
    }
}
