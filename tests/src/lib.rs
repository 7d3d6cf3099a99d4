//! Harness for end-to-end tests: the real `healthlock-server` binary on a loopback port with a
//! temporary data directory, and the real `healthlock` binary run as several users, each with
//! its own config directory and a clean environment.
//!
//! The binaries are found beside the test executable (`target/<profile>/`). `cargo test
//! --workspace` builds them, because `cli` and `server` each have an integration test.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use tempfile::TempDir;

/// The path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A running server. Killed on drop.
pub struct Server {
    child: Option<Child>,
    /// Its origin, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Where its log (stderr) goes.
    pub log: PathBuf,
    port: u16,
    extra: Vec<String>,
    log_level: Option<&'static str>,
    _dir: TempDir,
}

impl Server {
    /// Starts a server on a free loopback port with a fresh data directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        Self::start_in(dir, data, extra, Some("debug"))
    }

    /// Starts a server that logs as an operator's does by default (no `RUST_LOG`), for
    /// benchmarks: tests run servers at `debug` so they can check what reaches the log, and
    /// writing two debug lines per request would otherwise be part of what a benchmark times.
    pub fn start_for_bench(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        Self::start_in(dir, data, extra, None)
    }

    /// Starts a server on a given data directory (e.g. a small mounted file system).
    pub fn start_with_data(data: &Path, extra: &[&str]) -> Self {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            data.to_owned(),
            extra,
            Some("debug"),
        )
    }

    fn start_in(
        dir: TempDir,
        data: PathBuf,
        extra: &[&str],
        log_level: Option<&'static str>,
    ) -> Self {
        let log = dir.path().join("server.log");
        let (child, url, port) = spawn_server(&data, 0, &log, extra, log_level);
        Server {
            child: Some(child),
            url,
            data,
            log,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log_level,
            _dir: dir,
        }
    }

    /// Stops the server (SIGKILL: nothing gets a chance to tidy up) and starts it again on the
    /// same port and data directory, with the same flags.
    pub fn restart(&mut self) {
        self.stop();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (child, url, _) =
            spawn_server(&self.data, self.port, &self.log, &extra, self.log_level);
        assert_eq!(url, self.url, "the restarted server must keep its origin");
        self.child = Some(child);
    }

    /// The running server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Makes an invite with `healthlock-server invite` while the server runs.
    pub fn invite(&self, role: &str) -> String {
        let out = Command::new(bin("healthlock-server"))
            .args(["invite", "--json", "--role", role, "--data"])
            .arg(&self.data)
            .output()
            .expect("run healthlock-server invite");
        assert!(
            out.status.success(),
            "invite failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("invite JSON");
        v["invite"].as_str().expect("invite code").to_owned()
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_server(
    data: &Path,
    port: u16,
    log: &Path,
    extra: &[&str],
    log_level: Option<&str>,
) -> (Child, String, u16) {
    let mut cmd = Command::new(bin("healthlock-server"));
    cmd.arg("--data")
        .arg(data)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    if let Some(level) = log_level {
        cmd.env("RUST_LOG", level);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start healthlock-server");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr"));
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("server log");
    let url = loop {
        let mut line = String::new();
        let n = lines.read_line(&mut line).expect("read server stderr");
        assert!(
            n > 0,
            "the server exited before listening; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        log_file.write_all(line.as_bytes()).expect("log");
        if let Some(rest) = line.strip_prefix("healthlock-server listening on ") {
            break rest.split_whitespace().next().expect("url").to_owned();
        }
    };
    std::thread::spawn(move || {
        let mut rest = lines;
        let _ = std::io::copy(&mut rest, &mut log_file);
    });
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in url");
    (child, url, port)
}

/// What a CLI run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The `--json` error's code from stderr.
    pub fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not a JSON error ({e}): {self:?}"));
        v["error"]["code"].as_str().expect("error.code").to_owned()
    }
}

/// A person using the CLI on their own machine: their own config directory and working directory.
pub struct User {
    /// Their name (also the username).
    pub name: String,
    /// Their password.
    pub password: String,
    /// The server's origin.
    pub server: String,
    home: TempDir,
}

impl User {
    /// A user with an empty config directory (a fresh machine).
    pub fn new(server: &Server, name: &str) -> Self {
        User {
            name: name.to_owned(),
            password: format!("correct horse battery staple {name}"),
            server: server.url.clone(),
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// This user's working directory.
    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    /// The CLI with a clean environment: only PATH, HOME, XDG_CONFIG_HOME and the server.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("healthlock"));
        c.args(args)
            .current_dir(self.home.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("HEALTHLOCK_SERVER", &self.server);
        c
    }

    /// Runs the CLI with `stdin` piped in (or nothing).
    pub fn run_with(&self, mut cmd: Command, stdin: Option<&str>) -> Run {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start healthlock");
        {
            let mut input = child.stdin.take().expect("stdin");
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).expect("write stdin");
            }
        }
        Run::from(child.wait_with_output().expect("wait for healthlock"))
    }

    /// Runs the CLI.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        self.run_with(self.command(args), stdin)
    }

    /// Runs the CLI and asserts success.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let r = self.run(args, stdin);
        assert_eq!(r.code, 0, "healthlock {args:?} failed: {r:?}");
        r
    }

    /// Runs the CLI with `--json`, asserts success and parses stdout.
    pub fn json(&self, args: &[&str], stdin: Option<&str>) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ok(&all, stdin).json()
    }

    /// Runs the CLI with `--json`, asserts success and parses each stdout line as JSON.
    pub fn json_lines(&self, args: &[&str], stdin: Option<&str>) -> Vec<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let r = self.ok(&all, stdin);
        r.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Runs the CLI with `--json`, asserts failure with `exit` and returns the error code.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>, exit: i32) -> String {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let r = self.run(&all, stdin);
        assert_eq!(
            r.code, exit,
            "healthlock {args:?} should exit {exit}: {r:?}"
        );
        assert!(
            r.stdout.is_empty(),
            "a failure prints nothing on stdout: {r:?}"
        );
        r.error_code()
    }

    /// Registers a patient (password on stdin).
    pub fn patient(server: &Server, name: &str) -> Self {
        let u = User::new(server, name);
        let pw = format!("{}\n", u.password);
        u.ok(
            &["register", "--username", name, "--password-stdin"],
            Some(&pw),
        );
        u
    }

    /// Registers a provider with an invite made by the operator.
    pub fn provider(server: &Server, name: &str, role: &str) -> Self {
        let u = User::new(server, name);
        let code = server.invite(role);
        let pw = format!("{}\n", u.password);
        u.ok(
            &[
                "register",
                "--username",
                name,
                "--role",
                role,
                "--invite",
                &code,
                "--password-stdin",
            ],
            Some(&pw),
        );
        u
    }

    /// Writes a file in the user's directory and returns its path.
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.home.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }

    /// Uploads a file and returns its record id.
    pub fn upload(&self, path: &Path, category: &str, title: Option<&str>) -> String {
        let p = path.to_str().expect("utf-8 path");
        let mut args = vec!["upload", p, "--category", category];
        if let Some(t) = title {
            args.extend(["--title", t]);
        }
        let v = self.json(&args, None);
        v[0]["id"].as_str().expect("record id").to_owned()
    }

    /// This user's `records --json` entry for `id`; panics if the vault does not list it.
    pub fn listed(&self, id: &str) -> serde_json::Value {
        let records = self.json(&["records"], None);
        records
            .as_array()
            .expect("records is a list")
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed"))
            .clone()
    }

    /// Shares records and returns the `--json` result.
    pub fn share(&self, records: &[&str], role: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["share"];
        args.extend_from_slice(records);
        args.extend(["--role", role]);
        args.extend_from_slice(extra);
        self.json(&args, None)
    }
}

/// SHA-256 of a file's contents, hex.
pub fn sha256_file(path: &Path) -> String {
    healthlock_common::encoding::sha256_hex(&std::fs::read(path).expect("read file"))
}

/// Copies a directory tree (a server's data directory, while the server is stopped).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy file");
        }
    }
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A raw HTTP/1.1 exchange over TCP, for feeding the server input no real client would send.
/// Returns the status code and the body.
pub fn raw_http(url: &str, request_head: &str, body: &[u8]) -> (u16, String) {
    let (status, _, body) = raw_http_full(url, request_head, body);
    (status, body)
}

/// [`raw_http`], with the response headers (lowercase names).
pub fn raw_http_full(
    url: &str,
    request_head: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::Read;
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let head = format!("{request_head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

impl User {
    /// The bearer token of this user's session (from the profile, as the CLI keeps it).
    pub fn session_token(&self) -> String {
        let p = self
            .dir()
            .join("config/healthlock/profiles/default/session.json");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p).expect("session.json")).expect("JSON");
        v["token"].as_str().expect("token").to_owned()
    }
}

/// Opens a share over raw HTTP as the CLI would (challenge, proof of possession, optional
/// passcode proof), so tests can fire many opens at once. Returns the status and JSON body.
pub fn open_raw(
    url: &str,
    session: &str,
    secret: &healthlock_common::token::ShareSecret,
    passcode: Option<&str>,
) -> (u16, serde_json::Value) {
    let prover = Prover::new(secret);
    let passcode = passcode.map(|p| secret.passcode_proof(p));
    let post = |path: String, body: &[u8]| post_raw(url, session, &path, body);
    let (status, body) = prover.open(post, url, passcode.as_ref());
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// POSTs JSON with a session over a new connection, as [`raw_http`].
pub fn post_raw(url: &str, session: &str, path: &str, body: &[u8]) -> (u16, String) {
    raw_http(
        url,
        &format!(
            "POST {path} HTTP/1.1\r\nAuthorization: Bearer {session}\r\nContent-Type: application/json\r\nContent-Length: {}",
            body.len()
        ),
        body,
    )
}

/// What a token holder keeps between opens: the share id and the proof-of-possession key, both
/// derived from the secret once (as one `healthlock fetch` does), so a client that opens again
/// and again pays per open only for what each open needs — one signature.
pub struct Prover {
    id: healthlock_common::ShareId,
    key: ed25519_dalek::SigningKey,
}

impl Prover {
    /// Derives the share id and key from the token's secret.
    pub fn new(secret: &healthlock_common::token::ShareSecret) -> Self {
        Self {
            id: secret.share_id(),
            key: secret.signing_key(),
        }
    }

    /// One open — challenge, then the signed open (with a passcode proof if given) — over any
    /// way of POSTing JSON. Returns the open's status and body, unparsed.
    pub fn open(
        &self,
        mut post: impl FnMut(String, &[u8]) -> (u16, String),
        url: &str,
        passcode_proof: Option<&[u8; 32]>,
    ) -> (u16, String) {
        let (status, challenge) = post(self.challenge_path(), b"{}");
        assert_eq!(status, 200, "{challenge}");
        let (path, body) = self.open_request(url, &challenge, passcode_proof);
        post(path, &body)
    }

    /// A prover for share `id` that holds some other key: every proof it makes is forged.
    pub fn forger(id: healthlock_common::ShareId) -> Self {
        Self {
            id,
            key: healthlock_common::token::ShareSecret::generate().signing_key(),
        }
    }

    /// Where the challenge is asked for (POST, body `{}`).
    pub fn challenge_path(&self) -> String {
        format!("/v1/shares/{}/challenge", self.id)
    }

    /// The signed open for the challenge answered with `challenge` (JSON): its path and body.
    pub fn open_request(
        &self,
        url: &str,
        challenge: &str,
        passcode_proof: Option<&[u8; 32]>,
    ) -> (String, Vec<u8>) {
        use ed25519_dalek::Signer;
        let challenge: serde_json::Value = serde_json::from_str(challenge).expect("challenge JSON");
        let nonce = challenge["nonce"].as_str().expect("nonce");
        let b64 = healthlock_common::encoding::b64;
        let message = healthlock_common::token::open_message(url, &self.id, nonce);
        let mut req = serde_json::json!({
            "nonce": nonce,
            "origin": url,
            "signature": b64(&self.key.sign(&message).to_bytes()),
        });
        if let Some(p) = passcode_proof {
            req["passcode_proof"] = b64(p).into();
        }
        (
            format!("/v1/shares/{}/open", self.id),
            serde_json::to_vec(&req).expect("JSON"),
        )
    }
}

/// The common scene: patient `alice` with one prescription shared with pharmacists, and
/// pharmacist `bob` registered (who has not fetched yet).
pub struct PharmacyScene {
    /// The patient.
    pub alice: User,
    /// The pharmacist.
    pub bob: User,
    /// The prescription's record id.
    pub rx: String,
    /// The share's link.
    pub link: String,
}

impl PharmacyScene {
    /// Sets the scene up on `server`.
    pub fn new(server: &Server) -> Self {
        let alice = User::patient(server, "alice");
        let rx = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
        let link = alice.share(&[&rx], "pharmacist", &[])["link"]
            .as_str()
            .expect("link")
            .to_owned();
        let bob = User::provider(server, "bob", "pharmacist");
        PharmacyScene {
            alice,
            bob,
            rx,
            link,
        }
    }
}
