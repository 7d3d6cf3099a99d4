//! Share opens per second against the real server binary, each with its audit event durable
//! before the reply: 64 client threads, each doing challenge + signed open over loopback.
//!
//!   cargo build --release --workspace && cargo bench -p healthlock-tests --bench open_rate [-- OPENS] [-- --close]
//!
//! Each client keeps its connection open, as the CLI does between challenge and open; `--close`
//! makes a new connection per request instead. Uses the release binaries when built, else the
//! debug ones. Not a test: it prints figures.

use healthlock_common::token::parse_link_or_token;
use healthlock_tests::{Server, User, open_over, open_raw};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(6_400);
    let close = args.iter().any(|a| a == "--close");
    let clients = 64;
    let server = Server::start_for_bench(&["--open-rate", "100000000"]);
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
    let server_pid = server.pid().expect("server running").to_string();
    let cpu_before = (cpu_seconds(&server_pid), cpu_seconds("self"));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (url, session, link, next) =
                (url.clone(), session.clone(), link.clone(), next.clone());
            std::thread::spawn(move || {
                let secret = parse_link_or_token(&link).unwrap().secret;
                let mut conn = (!close).then(|| Conn::new(&url));
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let status = match &mut conn {
                        Some(c) => {
                            open_over(
                                |path, body| c.post(&path, &session, body),
                                &url,
                                &secret,
                                None,
                            )
                            .0
                        }
                        None => open_raw(&url, &session, &secret, None).0,
                    };
                    assert_eq!(status, 200);
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

/// One kept-alive HTTP/1.1 connection: just enough client for JSON requests and answers.
struct Conn {
    host: String,
    stream: BufReader<TcpStream>,
}

impl Conn {
    fn new(url: &str) -> Self {
        let host = url.trim_start_matches("http://").to_owned();
        let stream = TcpStream::connect(&host).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            host,
            stream: BufReader::new(stream),
        }
    }

    fn post(&mut self, path: &str, session: &str, body: &[u8]) -> (u16, String) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {session}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(&[head.as_bytes(), body].concat())
            .expect("write");
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let mut len = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).expect("header");
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
        self.stream.read_exact(&mut body).expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}
