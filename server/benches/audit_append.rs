//! Durable audit appends per second: each event in its own write transaction, fsynced by redb
//! before the next starts — the way the server commits an access before releasing data.
//!
//!   cargo bench -p healthlock-server --bench audit_append [-- EVENTS]
//!
//! Not a test: it prints a figure (docs/audit.md and the README quote it).

use healthlock_common::{Role, ShareId, UserId};
use healthlock_server::store::{NewEvent, Store};
use std::time::Instant;

fn main() {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.redb")).expect("store");
    let (patient, doctor) = (UserId::random(), UserId::random());
    let share = ShareId::random();
    let mut latencies = Vec::with_capacity(events as usize);
    let start = Instant::now();
    for _ in 0..events {
        let t = Instant::now();
        store
            .write(|tx| {
                tx.append_audit(
                    &patient,
                    NewEvent {
                        actor: Some((doctor.clone(), Role::Doctor)),
                        action: "share.open",
                        share: Some(share.clone()),
                        record: None,
                        refused: None,
                        client: Some("127.0.0.1".into()),
                    },
                )
            })
            .expect("append");
        latencies.push(t.elapsed());
    }
    let total = start.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "durable audit appends: {events} in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms",
        total.as_secs_f64(),
        events as f64 / total.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
}
