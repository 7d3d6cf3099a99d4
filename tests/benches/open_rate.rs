//! Share opens per second against the real server binary, each with its audit event durable
//! before the reply: 64 concurrent clients, each doing challenge + signed open over loopback.
//!
//!   cargo build --release --workspace && cargo bench -p healthlock-tests --bench open_rate [-- OPENS] [-- --close]
//!
//! Each client keeps its connection open, as the CLI does between challenge and open; `--close`
//! makes a new connection per request instead. The clients are tasks on one thread, so the load
//! generator, which shares the server's cores here, takes as little of them as it can (64
//! threads took about a quarter more CPU per open, most of it switching between them). Uses the
//! release binaries when built, else the debug ones. Not a test: it prints figures.

use healthlock_common::token::parse_link_or_token;
use healthlock_tests::{Prover, Server, User};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(6_400);
    let close = args.iter().any(|a| a == "--close");
    let clients = 64;
    // This machine's speed this minute: its cores vary by a third from one hour to the next, so
    // figures from different runs compare only alongside it.
    println!(
        "this machine: Ed25519 sign {:.0} µs, verify_strict {:.0} µs (one core)",
        ed25519_micros(false),
        ed25519_micros(true)
    );
    let server = Server::start_for_bench(&["--open-rate", "100000000"]);
    let alice = User::patient(&server, "alice");
    let rx = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
    let link = alice.share(&[&rx], "doctor", &["--expires", "1h"])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = User::provider(&server, "doc", "doctor");
    // Each client opens the same link again and again: like one `healthlock fetch`, it derives
    // the key once, and pays per open for the signature and the two requests.
    let prover = Rc::new(Prover::new(&parse_link_or_token(&link).unwrap().secret));
    let session = Rc::new(doc.session_token());
    let url = Rc::new(server.url.clone());
    let next = Rc::new(AtomicUsize::new(0));
    let server_pid = server.pid().expect("server running").to_string();
    let cpu_before = (cpu_seconds(&server_pid), cpu_seconds("self"));
    let start = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let mut lat: Vec<Duration> = runtime.block_on(async {
        let tasks = tokio::task::LocalSet::new();
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (prover, session, url, next) =
                    (prover.clone(), session.clone(), url.clone(), next.clone());
                tasks.spawn_local(async move {
                    let mut conn = Conn::new(&url, &session, close);
                    let mut lat = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < total {
                        let t = Instant::now();
                        let (status, challenge) = conn.post(&prover.challenge_path(), b"{}").await;
                        assert_eq!(status, 200, "{challenge}");
                        let (path, body) = prover.open_request(&url, &challenge, None);
                        let (status, body) = conn.post(&path, &body).await;
                        assert_eq!(status, 200, "{body}");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        tasks
            .run_until(async {
                let mut all = Vec::new();
                for h in handles {
                    all.extend(h.await.expect("client"));
                }
                all
            })
            .await
    });
    let secs = start.elapsed().as_secs_f64();
    let cpu_after = (cpu_seconds(&server_pid), cpu_seconds("self"));
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "share opens: {} in {secs:.2} s = {:.0}/s with {clients} clients ({}); latency p50 {:.1} ms, p99 {:.1} ms (challenge + open)",
        lat.len(),
        lat.len() as f64 / secs,
        if close {
            "a connection per request"
        } else {
            "keep-alive"
        },
        pct(0.5),
        pct(0.99)
    );
    // Where the cores went: what limits the rate when the clients share the server's cores.
    if let ((Some(s0), Some(c0)), (Some(s1), Some(c1))) = (cpu_before, cpu_after) {
        let per_open = |cpu: f64| cpu / lat.len() as f64 * 1e6;
        println!(
            "CPU: server {:.2} core-s ({:.0} µs per open), clients {:.2} core-s ({:.0} µs per open), of {:.2} core-s on {} cores",
            s1 - s0,
            per_open(s1 - s0),
            c1 - c0,
            per_open(c1 - c0),
            secs * cores() as f64,
            cores()
        );
    }
    // Every open is in the patient's log.
    let events = alice.json_lines(&["audit", "--since", "1h"], None);
    let opens = events
        .iter()
        .filter(|e| e["action"] == "share.open" && e["allowed"] == true)
        .count();
    assert_eq!(opens, lat.len(), "every open was audited");
}

/// Microseconds per Ed25519 signature, or per `verify_strict` check, over 2,000 in a row.
fn ed25519_micros(verify: bool) -> f64 {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    let message = b"healthlock/v1/open calibration";
    let signature = key.sign(message);
    let n = 2_000;
    let start = Instant::now();
    for _ in 0..n {
        if verify {
            std::hint::black_box(public.verify_strict(std::hint::black_box(message), &signature))
                .expect("verifies");
        } else {
            std::hint::black_box(key.sign(std::hint::black_box(message)));
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// CPU seconds (user + system, all threads) a process has used so far, from `/proc/PID/stat`
/// (`PID` may be `self`); `None` where there is no such file.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: count fields from after its closing parenthesis, where
    // field 3 (state) begins; utime and stime are fields 14 and 15, in USER_HZ ticks (100/s).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) / 100.0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One HTTP/1.1 client connection: just enough client for JSON requests and answers. With
/// `close`, a new connection for every request.
struct Conn {
    host: String,
    session: String,
    close: bool,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(url: &str, session: &str, close: bool) -> Self {
        Self {
            host: url.trim_start_matches("http://").to_owned(),
            session: session.to_owned(),
            close,
            stream: None,
        }
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> (u16, String) {
        if self.close || self.stream.is_none() {
            let stream = TcpStream::connect(&self.host).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().expect("connected");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}{}\r\n\r\n",
            self.host,
            self.session,
            body.len(),
            if self.close {
                "\r\nConnection: close"
            } else {
                ""
            },
        );
        stream
            .get_mut()
            .write_all(&[head.as_bytes(), body].concat())
            .await
            .expect("write");
        let mut line = String::new();
        stream.read_line(&mut line).await.expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let mut len = 0;
        loop {
            line.clear();
            stream.read_line(&mut line).await.expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}
