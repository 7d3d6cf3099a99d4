//! Drives a store through kill -9 cycles and counts acknowledged writes that were lost.
//!
//!   cargo run --release -p storecrash -- redb|sled [CYCLES=50]
//!
//! A child process writes 1 KiB values under increasing keys, committing each durably the way
//! the store's API offers (redb: a commit; sled: insert + `flush()`), and prints each key once
//! its commit returned. The parent kills it with SIGKILL after 20–200 ms, reopens the store and
//! checks that every printed key is there. Data persists across cycles, as a server's would.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");

trait Store {
    fn next_key(&self) -> u64;
    fn put(&self, k: u64, v: &[u8]);
    fn has(&self, k: u64) -> bool;
}

struct Redb(redb::Database);
struct Sled(sled::Db);

impl Store for Redb {
    fn next_key(&self) -> u64 {
        use redb::{ReadableDatabase, ReadableTable};
        let txn = self.0.begin_read().unwrap();
        match txn.open_table(TABLE) {
            Ok(t) => t.last().unwrap().map_or(0, |(k, _)| k.value() + 1),
            Err(_) => 0,
        }
    }
    fn put(&self, k: u64, v: &[u8]) {
        let txn = self.0.begin_write().unwrap();
        txn.open_table(TABLE).unwrap().insert(k, v).unwrap();
        txn.commit().unwrap();
    }
    fn has(&self, k: u64) -> bool {
        use redb::{ReadableDatabase, ReadableTable};
        let txn = self.0.begin_read().unwrap();
        txn.open_table(TABLE)
            .is_ok_and(|t| t.get(k).unwrap().is_some())
    }
}

impl Store for Sled {
    fn next_key(&self) -> u64 {
        self.0.last().unwrap().map_or(0, |(k, _)| {
            u64::from_be_bytes(k.as_ref().try_into().unwrap()) + 1
        })
    }
    fn put(&self, k: u64, v: &[u8]) {
        self.0.insert(k.to_be_bytes(), v).unwrap();
        self.0.flush().unwrap();
    }
    fn has(&self, k: u64) -> bool {
        self.0.get(k.to_be_bytes()).unwrap().is_some()
    }
}

fn open(kind: &str, dir: &Path) -> Result<Box<dyn Store>, String> {
    match kind {
        "redb" => redb::Database::create(dir.join("db.redb"))
            .map(|d| Box::new(Redb(d)) as Box<dyn Store>)
            .map_err(|e| e.to_string()),
        "sled" => sled::open(dir.join("db.sled"))
            .map(|d| Box::new(Sled(d)) as Box<dyn Store>)
            .map_err(|e| e.to_string()),
        _ => Err("the store is redb or sled".into()),
    }
}

fn writer(kind: &str, dir: &Path) {
    let store = open(kind, dir).expect("open");
    let value = vec![0x5a_u8; 1024];
    let mut out = std::io::stdout().lock();
    let mut k = store.next_key();
    loop {
        store.put(k, &value);
        writeln!(out, "{k}").unwrap();
        out.flush().unwrap();
        k += 1;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--writer") {
        return writer(&args[2], Path::new(&args[3]));
    }
    let kind = args.get(1).cloned().unwrap_or_else(|| "redb".into());
    let cycles: u32 = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("storecrash-{kind}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = Instant::now().elapsed().as_nanos() as u64 | 0x9e37_79b9;
    let (mut acked_total, mut lost, mut open_failures) = (0u64, 0u64, 0u32);
    let mut busy = Duration::ZERO;
    for _ in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["--writer", &kind, dir.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.parse::<u64>().ok())
                .collect::<Vec<u64>>()
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(20 + seed % 180);
        std::thread::sleep(wait);
        busy += wait;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        acked_total += acked.len() as u64;
        match open(&kind, &dir) {
            Ok(store) => lost += acked.iter().filter(|k| !store.has(**k)).count() as u64,
            Err(e) => {
                open_failures += 1;
                eprintln!("the store does not open after a kill: {e}");
                break;
            }
        }
    }
    let size: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| dir_size(&e.path()))
        .sum();
    println!(
        "{kind}: {cycles} kill -9 cycles, {acked_total} acknowledged durable writes ({:.0}/s while running), \
         {lost} lost, {open_failures} failed reopens, {:.1} MiB on disk for {:.1} MiB of values",
        acked_total as f64 / busy.as_secs_f64(),
        size as f64 / 1_048_576.0,
        acked_total as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn dir_size(p: &Path) -> u64 {
    if p.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| dir_size(&e.path()))
            .sum()
    } else {
        p.metadata().map(|m| m.len()).unwrap_or(0)
    }
}
