//! The authorization matrix: every route × every kind of caller. No caller gets a 2xx for
//! something that is not theirs; self-scoped routes answer only with the caller's own data.

use healthlock_common::token::parse_link_or_token;
use healthlock_tests::{Server, User, open_raw, raw_http};

/// A caller: a name and a session token (`None`: anonymous).
struct Caller {
    name: &'static str,
    token: Option<String>,
}

fn request(server: &Server, c: &Caller, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let auth = c
        .token
        .as_ref()
        .map(|t| format!("\r\nAuthorization: Bearer {t}"))
        .unwrap_or_default();
    let ctype = if body.is_empty() {
        String::new()
    } else {
        "\r\nContent-Type: application/json".to_owned()
    };
    raw_http(
        &server.url,
        &format!(
            "{method} {path} HTTP/1.1{auth}{ctype}\r\nContent-Length: {}",
            body.len()
        ),
        body,
    )
}

#[test]
fn no_caller_gets_what_is_not_theirs() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let rid = alice.upload(&alice.file("rx.pdf", b"Rx secret"), "prescription", None);
    let lab = alice.upload(&alice.file("lab.pdf", b"lab secret"), "lab", None);
    let doctor_share = alice.share(&[&rid, &lab], "doctor", &[]);
    let sid = doctor_share["id"].as_str().unwrap().to_owned();
    let secret = parse_link_or_token(doctor_share["link"].as_str().unwrap())
        .unwrap()
        .secret;
    let pharm_share = alice.share(&[&rid, &lab], "pharmacist", &[]);
    let psid = pharm_share["id"].as_str().unwrap().to_owned();
    let psecret = parse_link_or_token(pharm_share["link"].as_str().unwrap())
        .unwrap()
        .secret;

    let mallory = User::patient(&server, "mallory");
    let doc = User::provider(&server, "doc", "doctor");
    let pharm = User::provider(&server, "pharm", "pharmacist");
    let diag = User::provider(&server, "diag", "diagnostics");
    // The rightful holders open their shares, so download grants exist for them.
    assert_eq!(
        open_raw(&server.url, &doc.session_token(), &secret, None).0,
        200
    );
    assert_eq!(
        open_raw(&server.url, &pharm.session_token(), &psecret, None).0,
        200
    );

    let callers = [
        Caller {
            name: "owner",
            token: Some(alice.session_token()),
        },
        Caller {
            name: "other patient",
            token: Some(mallory.session_token()),
        },
        Caller {
            name: "doctor",
            token: Some(doc.session_token()),
        },
        Caller {
            name: "pharmacist",
            token: Some(pharm.session_token()),
        },
        Caller {
            name: "diagnostics",
            token: Some(diag.session_token()),
        },
        Caller {
            name: "anonymous",
            token: None,
        },
        Caller {
            name: "forged session",
            token: Some(format!("hls_{}", "ab".repeat(32))),
        },
    ];
    // (method, path, body, who may get a 2xx)
    let routes: Vec<(&str, String, &[u8], &[&str])> = vec![
        ("GET", format!("/v1/records/{rid}"), b"", &["owner"]),
        ("GET", format!("/v1/records/{rid}/body"), b"", &["owner"]),
        ("POST", format!("/v1/shares/{sid}/revoke"), b"{}", &[]), // tried last, see below
        (
            "GET",
            format!("/v1/shares/{sid}/records/{rid}"),
            b"",
            &["doctor"],
        ),
        (
            "GET",
            format!("/v1/shares/{sid}/records/{lab}"),
            b"",
            &["doctor"],
        ),
        (
            "GET",
            format!("/v1/shares/{psid}/records/{rid}"),
            b"",
            &["pharmacist"],
        ),
        ("GET", format!("/v1/shares/{psid}/records/{lab}"), b"", &[]),
        ("POST", format!("/v1/shares/{psid}/records"), b"", &[]),
        (
            "POST",
            format!("/v1/shares/{sid}/open"),
            br#"{"nonce":"00","origin":"x","signature":"AAAA"}"#,
            &[],
        ),
        ("DELETE", format!("/v1/records/{lab}"), b"", &[]), // the owner's delete is exercised elsewhere
    ];
    for (method, path, body, allowed) in &routes {
        for c in &callers {
            if c.name == "owner" && (*method == "DELETE" || path.ends_with("/revoke")) {
                continue; // would change the fixture; the owner's own rights are tested in flow.rs
            }
            let (status, text) = request(&server, c, method, path, body);
            let ok = (200..300).contains(&status);
            assert_eq!(
                ok,
                allowed.contains(&c.name),
                "{} {method} {path} → {status} {text}",
                c.name
            );
            assert!(status < 500, "{} {method} {path} → {status} {text}", c.name);
            if !ok {
                assert!(
                    !text.contains("Rx secret") && !text.contains("age-encryption"),
                    "{text}"
                );
            }
        }
    }
    // Self-scoped routes: 2xx for any logged-in account, never with someone else's data.
    for path in [
        "/v1/records",
        "/v1/shares",
        "/v1/audit",
        "/v1/notifications",
        "/v1/me",
    ] {
        for c in &callers {
            let (status, text) = request(&server, c, "GET", path, b"");
            if c.name == "owner" {
                assert!((200..300).contains(&status), "{path}: {status}");
                continue;
            }
            if (200..300).contains(&status) {
                assert!(
                    !text.contains(&rid) && !text.contains(&sid),
                    "{} sees alice's ids at {path}: {text}",
                    c.name
                );
            } else {
                assert!(matches!(status, 401 | 403), "{} {path} → {status}", c.name);
            }
        }
    }
    // The records still exist and the share still works for its holder.
    assert_eq!(alice.json(&["records"], None).as_array().unwrap().len(), 2);
    assert_eq!(alice.json(&["shares"], None)[0]["status"], "active");
}
