//! Hostile input to the server, and what a stolen data directory or log would reveal.

use healthlock_tests::{Server, User, contains, files_below, raw_http};

#[test]
fn garbage_gets_4xx_never_5xx() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    alice.upload(&alice.file("a.txt", b"a"), "lab", None);
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 9".into(), b"{not json".to_vec()),
        ("POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 30".into(), br#"{"username":"x","auth":"!!!"}  "#.to_vec()),
        ("POST /v1/auth/register HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2".into(), b"{}".to_vec()),
        ("POST /v1/auth/prelogin HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 21".into(), br#"{"username":"../../"}"#.to_vec()),
        ("GET /v1/records/..%2F..%2Fetc%2Fpasswd/body HTTP/1.1\r\nAuthorization: Bearer nope".into(), vec![]),
        ("GET /v1/records HTTP/1.1\r\nAuthorization: Bearer hls_00".into(), vec![]),
        ("POST /v1/shares/zzzz/open HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2".into(), b"{}".to_vec()),
        ("POST /v1/records HTTP/1.1\r\nContent-Length: 3".into(), b"abc".to_vec()),
        ("GET /v1/nothing-here HTTP/1.1".into(), vec![]),
        ("GET /v1/audit?after=-1&limit=abc HTTP/1.1".into(), vec![]),
    ];
    for (head, body) in cases {
        let (status, text) = raw_http(&server.url, &head, &body);
        assert!((400..500).contains(&status), "{head:?} → {status} {text}");
        let err: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{head:?}: not a JSON error ({e}): {text}"));
        assert!(err["error"]["code"].is_string(), "{text}");
    }
    let (status, _) = raw_http(&server.url, "DELETE /v1/info HTTP/1.1", b"");
    assert_eq!(status, 405);
    // Still alive and well.
    assert_eq!(alice.json(&["records"], None).as_array().unwrap().len(), 1);
}

#[test]
fn oversized_uploads_are_refused_and_leave_nothing() {
    let server = Server::start_with(&["--max-upload", "64KiB"]);
    let alice = User::patient(&server, "alice");
    let big = alice.file("big.bin", &vec![7u8; 200 * 1024]);
    let r = alice.run(&["--json", "upload", big.to_str().unwrap()], None);
    assert_eq!(r.code, 18, "{r:?}");
    assert_eq!(r.error_code(), "payload_too_large");
    assert_eq!(alice.json(&["records"], None), serde_json::json!([]));
    assert!(
        files_below(&server.data.join("tmp")).is_empty(),
        "no temp file left"
    );
    assert!(
        files_below(&server.data.join("blobs")).is_empty(),
        "no blob left"
    );
}

#[test]
fn the_data_directory_and_log_hold_no_plaintext_titles_passwords_or_tokens() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let secret_body = b"CANARY-BODY-7f3a HIV test: negative";
    let f = alice.file("CANARY-FILENAME-91c2.pdf", secret_body);
    let id = alice.upload(&f, "lab", Some("CANARY-TITLE-5d8e HIV test"));
    let share = alice.share(&[&id], "doctor", &["--passcode"]);
    let doc = User::provider(&server, "doc", "doctor");
    let mut cmd = doc.command(&["fetch", share["link"].as_str().unwrap()]);
    cmd.env("HEALTHLOCK_PASSCODE", share["passcode"].as_str().unwrap());
    let fetched = doc.run_with(cmd, None);
    assert_eq!(fetched.code, 0);
    // A failed fetch's error names no secret either.
    let bad = doc.run(
        &["fetch", share["link"].as_str().unwrap(), "--passcode-stdin"],
        Some("9999-9999\n"),
    );
    let laptop = User::new(&server, "alice");
    let wrong_login = laptop.run(
        &["login", "--username", "alice", "--password-stdin"],
        Some("CANARY-WRONG-PASSWORD\n"),
    );
    let cli_output = [fetched, bad, wrong_login]
        .iter()
        .map(|r| format!("{}{}", r.stdout, r.stderr))
        .collect::<String>();
    server.invite("doctor");

    let token = share["token"].as_str().unwrap();
    let passcode = share["passcode"].as_str().unwrap();
    let canaries: Vec<&[u8]> = vec![
        b"CANARY-BODY-7f3a",
        b"CANARY-FILENAME-91c2",
        b"CANARY-TITLE-5d8e",
        b"HIV test",
        alice.password.as_bytes(),
        doc.password.as_bytes(),
        token.as_bytes(),
        &token.as_bytes()[3..],
        passcode.as_bytes(),
    ];
    let mut scanned = 0;
    for path in files_below(&server.data) {
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for c in &canaries {
            assert!(
                !contains(&bytes, c),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(c)
            );
        }
    }
    assert!(
        scanned > secret_body.len(),
        "the scan read the store and blobs"
    );
    let log = server.log_text();
    assert!(log.contains("request"), "the log was captured");
    let not_in_output: [&[u8]; 6] = [
        alice.password.as_bytes(),
        doc.password.as_bytes(),
        token.as_bytes(),
        &token.as_bytes()[3..],
        passcode.as_bytes(),
        b"CANARY-WRONG-PASSWORD",
    ];
    for c in canaries.iter().chain(&not_in_output) {
        assert!(
            !contains(log.as_bytes(), c),
            "the server log contains {:?}",
            String::from_utf8_lossy(c)
        );
    }
    // The provider's output names the files it wrote; never a password, token or passcode.
    for c in &not_in_output {
        assert!(
            !contains(cli_output.as_bytes(), c),
            "the CLI output contains {:?}",
            String::from_utf8_lossy(c)
        );
    }
}

#[test]
fn every_response_carries_the_security_headers_and_an_exact_type() {
    let server = Server::start();
    let cases = [
        ("GET /v1/info HTTP/1.1", "application/json"),
        ("GET /v1/records HTTP/1.1", "application/json"),
        ("GET /nope HTTP/1.1", "application/json"),
        ("PATCH /v1/info HTTP/1.1", "application/json"),
    ];
    for (head, ctype) in cases {
        let (_, headers, _) = healthlock_tests::raw_http_full(&server.url, head, b"");
        let get = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-content-type-options"), Some("nosniff"), "{head}");
        assert_eq!(get("cache-control"), Some("no-store"), "{head}");
        assert!(
            get("content-security-policy").is_some_and(|v| v.contains("frame-ancestors 'none'")),
            "{head}"
        );
        assert_eq!(get("referrer-policy"), Some("no-referrer"), "{head}");
        assert_eq!(get("content-type"), Some(ctype), "{head}");
    }
}

#[test]
fn password_guessing_and_share_probing_are_rate_limited() {
    let server = Server::start_with(&["--login-rate", "3", "--open-rate", "4"]);
    let alice = User::patient(&server, "alice");
    let laptop = User::new(&server, "alice");
    for _ in 0..3 {
        assert_eq!(
            laptop.fails(
                &["login", "--username", "alice", "--password-stdin"],
                Some("wrong guess\n"),
                5
            ),
            "invalid_credentials"
        );
    }
    let r = laptop.run(
        &["--json", "login", "--username", "alice", "--password-stdin"],
        Some("wrong guess\n"),
    );
    assert_eq!(r.code, 20, "{r:?}");
    assert_eq!(r.error_code(), "rate_limited");
    assert!(r.stderr.contains("try again in"), "{r:?}");
    // Even the right password waits: the limit is per account, before any password work.
    let right = format!("{}\n", laptop.password);
    assert_eq!(
        laptop.fails(
            &["login", "--username", "alice", "--password-stdin"],
            Some(&right),
            20
        ),
        "rate_limited"
    );
    let (status, headers, _) = healthlock_tests::raw_http_full(
        &server.url,
        "POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 46",
        br#"{"username":"alice","auth":"AAAAAAAAAAAAAAA="}"#,
    );
    assert_eq!(status, 429);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v.parse::<u64>().is_ok())
    );
    // Probing for shares is throttled per account.
    let bob = User::provider(&server, "bob", "doctor");
    let mut codes = Vec::new();
    for _ in 0..6 {
        let stranger = healthlock_common::token::ShareSecret::generate().to_link(&server.url);
        codes.push(bob.run(&["fetch", &stranger], None).code);
    }
    assert_eq!(codes, [7, 7, 7, 7, 20, 20]);
    let _ = alice;
}

#[test]
fn a_full_vault_refuses_uploads_until_records_are_deleted() {
    let server = Server::start_with(&["--quota", "100KiB"]);
    let alice = User::patient(&server, "alice");
    let a = alice.upload(&alice.file("a.bin", &vec![1u8; 60 * 1024]), "lab", None);
    let b = alice.file("b.bin", &vec![2u8; 60 * 1024]);
    let r = alice.run(&["--json", "upload", b.to_str().unwrap()], None);
    assert_eq!(r.code, 18, "{r:?}");
    assert!(r.stderr.contains("vault is full"), "{r:?}");
    assert!(files_below(&server.data.join("tmp")).is_empty());
    assert_eq!(files_below(&server.data.join("blobs")).len(), 1);
    alice.ok(&["delete", &a], None);
    alice.upload(&b, "lab", None);
}

/// A failed login for alice sent straight over HTTP with an `X-Forwarded-For` header; returns
/// the client address her audit log recorded for it.
fn recorded_client(server: &Server, alice: &User) -> String {
    let body = br#"{"username":"alice","auth":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#;
    let (status, _) = raw_http(
        &server.url,
        &format!(
            "POST /v1/auth/login HTTP/1.1\r\nX-Forwarded-For: 198.51.100.7, 203.0.113.9\r\nContent-Type: application/json\r\nContent-Length: {}",
            body.len()
        ),
        body,
    );
    assert_eq!(status, 401);
    let events = alice.json_lines(&["audit"], None);
    let e = events
        .iter()
        .rev()
        .find(|e| e["action"] == "account.login" && e["allowed"] == false)
        .expect("the failed login");
    e["client"].as_str().unwrap().to_owned()
}

#[test]
fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    let direct = Server::start();
    let alice = User::patient(&direct, "alice");
    assert_eq!(
        recorded_client(&direct, &alice),
        "127.0.0.1",
        "a client cannot claim another address"
    );
    let proxied = Server::start_with(&["--trusted-proxy", "127.0.0.1"]);
    let alice = User::patient(&proxied, "alice");
    // The right-most entry the proxy added is the client; the left one is the client's claim.
    assert_eq!(recorded_client(&proxied, &alice), "203.0.113.9");
}
