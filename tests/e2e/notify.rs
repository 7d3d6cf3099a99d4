//! Live notifications: `notifications --watch` sees accesses as they happen and resumes after
//! dropped connections and server restarts with nothing missed and nothing repeated.

use healthlock_tests::{Server, User};
use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `healthlock --json notifications --watch`, its stdout lines timestamped on arrival.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<(Instant, serde_json::Value)>,
}

impl Watcher {
    fn start(u: &User, extra: &[&str]) -> Self {
        let mut args = vec!["--json", "notifications", "--watch"];
        args.extend_from_slice(extra);
        let mut child = u
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send((Instant::now(), v)).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines }
    }

    /// The next event, waiting at most `secs`.
    fn next(&self, secs: u64) -> (Instant, serde_json::Value) {
        self.lines
            .recv_timeout(Duration::from_secs(secs))
            .expect("an event within the time limit")
    }

    /// Events until one with `action` arrives.
    fn until(&self, action: &str, secs: u64) -> Vec<(Instant, serde_json::Value)> {
        let mut got = Vec::new();
        loop {
            let e = self.next(secs);
            let done = e.1["action"] == action;
            got.push(e);
            if done {
                return got;
            }
        }
    }

    fn nothing_more(&self, millis: u64) {
        if let Ok(e) = self.lines.recv_timeout(Duration::from_millis(millis)) {
            panic!("unexpected event: {e:?}");
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup(server: &Server) -> (User, User, String) {
    let s = healthlock_tests::PharmacyScene::new(server);
    (s.alice, s.bob, s.link)
}

#[test]
fn watch_shows_a_fetch_within_a_second() {
    let server = Server::start();
    let (alice, bob, link) = setup(&server);
    let w = Watcher::start(&alice, &[]);
    bob.ok(&["fetch", &link], None);
    let done = Instant::now();
    let (at, open) = w.next(10);
    assert_eq!(open["action"], "share.open");
    assert_eq!(open["actor_name"], "bob");
    assert!(
        at.saturating_duration_since(done) < Duration::from_secs(1),
        "took {:?}",
        at - done
    );
    let (_, fetched) = w.next(10);
    assert_eq!(fetched["action"], "share.fetch");
    // Refused accesses come too, marked as refused.
    let doc = User::provider(&server, "doc", "doctor");
    assert_eq!(doc.run(&["fetch", &link], None).code, 8);
    let (_, refused) = w.next(10);
    assert_eq!(
        (refused["allowed"].as_bool(), refused["reason"].as_str()),
        (Some(false), Some("wrong_role"))
    );
    // The inbox knows they were seen: the watcher acknowledges each event just after it shows
    // it (shown first, so that none is lost), so the last ack may trail the line read above.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inbox = alice.json(&["notifications"], None);
        if inbox == serde_json::json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "never acknowledged: {inbox}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watch_resumes_after_restarts_with_nothing_missed_or_repeated() {
    let mut server = Server::start();
    let (alice, bob, link) = setup(&server);
    let mut seen = Vec::new();
    {
        let w = Watcher::start(&alice, &[]);
        bob.ok(&["fetch", &link, "-o", "1"], None);
        seen.extend(w.until("share.fetch", 10));
        // The server dies (SIGKILL) and comes back; an access happens at once, likely before
        // the watcher has reconnected.
        server.restart();
        bob.ok(&["fetch", &link, "-o", "2"], None);
        seen.extend(w.until("share.fetch", 15));
        w.nothing_more(300);
    }
    // The watcher itself restarts: it resumes after the last event it showed.
    bob.ok(&["fetch", &link, "-o", "3"], None);
    let w = Watcher::start(&alice, &[]);
    seen.extend(w.until("share.fetch", 10));
    w.nothing_more(300);

    let seqs: Vec<u64> = seen
        .iter()
        .map(|(_, e)| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]),
        "in order, no repeats: {seqs:?}"
    );
    let opens = seen
        .iter()
        .filter(|(_, e)| e["action"] == "share.open")
        .count();
    assert_eq!(opens, 3, "{seen:?}");
}

#[test]
fn exec_runs_a_command_per_access() {
    let server = Server::start();
    let (alice, bob, link) = setup(&server);
    let log = alice.dir().join("events.log");
    let w = Watcher::start(&alice, &["--exec", "cat >> events.log; echo >> events.log"]);
    bob.ok(&["fetch", &link], None);
    w.until("share.fetch", 10);
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["action"], "share.open");
    assert_eq!(events[1]["action"], "share.fetch");
}
