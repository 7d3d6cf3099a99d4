//! The OpenAPI document served at /openapi.json stays true to the router: every route is
//! documented with its methods, and every documented operation is served.

use healthlock_tests::{Server, raw_http};
use std::collections::BTreeSet;

/// (path, method) pairs routed in server/src/lib.rs, read from its source.
fn routed() -> BTreeSet<(String, String)> {
    let src = include_str!("../../server/src/lib.rs");
    let mut out = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).expect("route path");
        // The route's own call: up to whatever the builder chain does next.
        let call = [
            ".layer(",
            ".merge(",
            ".fallback(",
            "Router::new()",
            ".with_state(",
        ]
        .iter()
        .fold(chunk, |c, stop| c.split(stop).next().unwrap_or_default());
        for method in ["get", "post", "put", "delete"] {
            if call.contains(&format!("{method}(")) {
                out.insert((path.to_owned(), method.to_owned()));
            }
        }
    }
    out
}

#[test]
fn the_document_matches_the_router() {
    let server = Server::start();
    let (status, body) = raw_http(&server.url, "GET /openapi.json HTTP/1.1", b"");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    let routed = routed();
    assert!(routed.len() > 20, "the router was read: {routed:?}");
    assert_eq!(documented, routed, "documented vs routed");

    // Every documented operation is served (not the fallback, not a wrong method).
    for (path, method) in &documented {
        let concrete = path
            .replace("{id}", &"0".repeat(32))
            .replace("{record}", &"0".repeat(32));
        let (status, text) = raw_http(
            &server.url,
            &format!(
                "{} {concrete} HTTP/1.1\r\nContent-Length: 0",
                method.to_uppercase()
            ),
            b"",
        );
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !(status == 404 && text.contains("no such route")),
            "{method} {path} is not served"
        );
    }
}
