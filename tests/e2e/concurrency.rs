//! Limits that must hold under concurrency: `--uses N` gives exactly N successful opens, the
//! passcode lock evaluates at most 5 wrong guesses however many arrive at once, and proofs
//! checked together refuse exactly the forged ones.

use healthlock_common::token::parse_link_or_token;
use healthlock_tests::{Prover, Server, User, open_raw, post_raw};
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

#[test]
fn opens_arriving_together_refuse_exactly_the_forged_proofs() {
    let server = Server::start_with(&["--open-rate", "1000000"]);
    let alice = User::patient(&server, "alice");
    let rx = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
    let doc = User::provider(&server, "doc", "doctor");
    let share = alice.share(&[&rx], "doctor", &[]);
    let secret = parse_link_or_token(share["link"].as_str().unwrap())
        .unwrap()
        .secret;
    let (url, session) = (Arc::new(server.url.clone()), Arc::new(doc.session_token()));
    let (real, forger) = (
        Arc::new(Prover::new(&secret)),
        Arc::new(Prover::forger(secret.share_id())),
    );
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
}
