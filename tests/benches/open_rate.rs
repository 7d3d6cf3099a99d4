//! Share opens per second against the real server binary, each with its audit event durable
//! before the reply: 64 client threads, each doing challenge + signed open over loopback.
//!
//!   cargo build --release --workspace && cargo bench -p healthlock-tests --bench open_rate [-- OPENS]
//!
//! Uses the release binaries when built, else the debug ones. Not a test: it prints figures.

use healthlock_common::token::parse_link_or_token;
use healthlock_tests::{Server, User, open_raw};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(6_400);
    let clients = 64;
    let server = Server::start_with(&["--open-rate", "100000000"]);
    let alice = User::patient(&server, "alice");
    let rx = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
    let link = alice.share(&[&rx], "doctor", &["--expires", "1h"])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = User::provider(&server, "doc", "doctor");
    let session = Arc::new(doc.session_token());
    let url = Arc::new(server.url.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (url, session, link, next) =
                (url.clone(), session.clone(), link.clone(), next.clone());
            std::thread::spawn(move || {
                let secret = parse_link_or_token(&link).unwrap().secret;
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let (status, body) = open_raw(&url, &session, &secret, None);
                    assert_eq!(status, 200, "{body}");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "share opens: {} in {secs:.2} s = {:.0}/s with {clients} clients; latency p50 {:.1} ms, p99 {:.1} ms (challenge + open)",
        lat.len(),
        lat.len() as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    // Every open is in the patient's log.
    let events = alice.json_lines(&["audit", "--since", "1h"], None);
    let opens = events
        .iter()
        .filter(|e| e["action"] == "share.open" && e["allowed"] == true)
        .count();
    assert_eq!(opens, lat.len(), "every open was audited");
}
