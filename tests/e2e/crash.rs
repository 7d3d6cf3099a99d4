//! The crash harness: concurrent uploads, shares and fetches while the server is killed with
//! SIGKILL at random moments. After every restart, each upload the CLI reported as done is
//! there and downloads with the right hash, no partial record is listed, no temp file or
//! orphaned blob is left after the startup sweep, and the audit chain still verifies.
//!
//! `HEALTHLOCK_CRASH_CYCLES` sets the number of cycles (default 20); `HEALTHLOCK_CRASH_SEED`
//! replays a run (the seed is printed).

use healthlock_tests::{Server, User, files_below, sha256_file};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// xorshift64*: a small reproducible generator for sizes and kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An acknowledged upload: the record id and the SHA-256 of the file.
type Acked = (String, String);

#[test]
fn acknowledged_uploads_survive_sigkill_at_random_moments() {
    let cycles: usize = std::env::var("HEALTHLOCK_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("HEALTHLOCK_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash harness: {cycles} cycles, HEALTHLOCK_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let mut server = Server::start_with(&["--open-rate", "1000000", "--login-rate", "1000000"]);
    let alice = Arc::new(User::patient(&server, "alice"));
    let doc = Arc::new(User::provider(&server, "doc", "doctor"));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    // Shares the CLI reported as made (their commits go through the group commit).
    let acked_shares: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut total_attempts = 0usize;
    let mut checked_downloads = 0usize;

    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(0usize));
        let mut workers = Vec::new();
        for w in 0..2 {
            let (alice, acked, stop, attempts) =
                (alice.clone(), acked.clone(), stop.clone(), attempts.clone());
            let mut local = Rng(rng.next() | 1);
            workers.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let size = local.below(3 * 1024 * 1024) as usize + 1;
                    let data: Vec<u8> = (0..size).map(|_| local.next() as u8).collect();
                    let path = alice.file(&format!("c{cycle}-w{w}-{n}.bin"), &data);
                    *attempts.lock().unwrap() += 1;
                    let r = alice.run(
                        &[
                            "--json",
                            "upload",
                            path.to_str().unwrap(),
                            "--category",
                            "lab",
                        ],
                        None,
                    );
                    if r.code == 0 {
                        let id = r.json()[0]["id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().push((id, sha256_file(&path)));
                    }
                    let _ = std::fs::remove_file(&path);
                }
            }));
        }
        {
            // Shares and fetches of what is already acknowledged, racing the uploads.
            let (alice, doc, acked, stop) =
                (alice.clone(), doc.clone(), acked.clone(), stop.clone());
            let acked_shares = acked_shares.clone();
            workers.push(std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Some((id, _)) = acked.lock().unwrap().last().cloned() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    k += 1;
                    let r = alice.run(&["--json", "share", &id, "--role", "doctor"], None);
                    if r.code == 0 {
                        let share = r.json();
                        acked_shares
                            .lock()
                            .unwrap()
                            .push(share["id"].as_str().unwrap().to_owned());
                        let link = share["link"].as_str().unwrap().to_owned();
                        let out = format!("fetch-{cycle}-{k}");
                        let _ = doc.run(&["fetch", &link, "-o", &out], None);
                        let _ = std::fs::remove_dir_all(doc.dir().join(out));
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(100 + rng.below(700)));
        server.stop(); // SIGKILL, mid-flight
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        total_attempts += *attempts.lock().unwrap();
        server.restart();

        // The startup sweep left no temp file and no blob without a record.
        assert!(
            files_below(&server.data.join("tmp")).is_empty(),
            "cycle {cycle}: temp files left"
        );
        let records = alice.json(&["records"], None);
        let listed: Vec<&str> = records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            files_below(&server.data.join("blobs")).len(),
            listed.len(),
            "cycle {cycle}: blobs match records"
        );
        // No partial record: every listed record's key and title open.
        assert!(
            records
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["title"] != "<cannot decrypt>"),
            "cycle {cycle}"
        );
        // Every acknowledged upload is there; those of this cycle download intact.
        let acked_now = acked.lock().unwrap().clone();
        for (id, _) in &acked_now {
            assert!(
                listed.contains(&id.as_str()),
                "cycle {cycle}: acknowledged record {id} lost (seed {seed})"
            );
        }
        for (id, sha) in acked_now.iter().rev().take(3) {
            let out = alice.json(&["download", id, "-o", "check.bin", "--force"], None);
            assert!(out["size"].as_u64().unwrap() > 0);
            assert_eq!(
                &sha256_file(&alice.dir().join("check.bin")),
                sha,
                "cycle {cycle}: record {id} corrupted"
            );
            checked_downloads += 1;
        }
        // Every acknowledged share survived too.
        let shares = alice.json(&["shares"], None);
        let listed_shares: Vec<&str> = shares
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        for id in acked_shares.lock().unwrap().iter() {
            assert!(
                listed_shares.contains(&id.as_str()),
                "cycle {cycle}: acknowledged share {id} lost (seed {seed})"
            );
        }
        // The audit chain still verifies and extends what was verified before the crash.
        alice.ok(&["audit", "--verify"], None);
    }

    // At the end, every acknowledged upload downloads with its hash.
    let acked = acked.lock().unwrap().clone();
    for (id, sha) in &acked {
        alice.ok(&["download", id, "-o", "final.bin", "--force"], None);
        assert_eq!(
            &sha256_file(&alice.dir().join("final.bin")),
            sha,
            "record {id}"
        );
    }
    alice.ok(&["audit", "--verify", "--full"], None);
    eprintln!(
        "crash harness: {cycles} SIGKILL cycles, {total_attempts} upload attempts, {} acknowledged, \
         0 lost; {} acknowledged shares, 0 lost; {} spot checks + {} final downloads verified",
        acked.len(),
        acked_shares.lock().unwrap().len(),
        checked_downloads,
        acked.len()
    );
    assert!(
        acked.len() >= cycles,
        "the harness acknowledged too few uploads to mean anything"
    );
}
