//! Hostile clients (issue 6, item 1): peers on raw TCP sockets that do what a WebSocket
//! library refuses to do — garbage and oversized HTTP, bad handshakes, malformed and
//! protocol-violating frames, resets mid-frame, ping floods, slowloris, connection churn and a
//! client that never reads.
//!
//! Every case asserts the server's exact answer (the HTTP status line, or the code of the close
//! frame parsed from the raw bytes the server sent) and that two well-behaved clients in the
//! same room (real WebSocket clients, [`Good`]) keep exchanging numbered messages, every one
//! delivered to both in order, before, during and after the attack.
//!
//! Every wait is bounded ([`TIMEOUT`]); sleeps only pace traffic, they never stand in for an
//! assertion.
//!
//! The tests run in parallel, except the one that measures the process's memory (the servers
//! run in this process), which waits for the others and runs alone ([`MEMORY_TURN`]).

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{metric, Client, TestServer, TIMEOUT};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;

// ---------------------------------------------------------------------------------------------
// The server.

/// Flags every server here starts with: no rate limit (the good clients send in bursts) and no
/// history (a joiner's first line is its welcome).
const BASE_FLAGS: [&str; 4] = ["--rate-per-second", "0", "--history", "0"];

/// A server with [`BASE_FLAGS`] plus `flags`.
async fn start(flags: &[&str]) -> TestServer {
    let mut all = BASE_FLAGS.to_vec();
    all.extend_from_slice(flags);
    TestServer::start(&all).await
}

/// Waits (bounded) until `/metrics` reports `n` open WebSocket connections: nothing an attack
/// opened is left behind.
async fn expect_connections(server: &TestServer, n: f64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let body = server.metrics().await;
        let open = metric(&body, "chat_connections");
        if open == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open:?} WebSocket connections still open, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bounds `fut` by [`TIMEOUT`], naming what was awaited in the panic.
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// The start of a (long) line or buffer, for assertion messages.
fn short(bytes: &[u8]) -> String {
    let end = bytes.len().min(60);
    let mut s = String::from_utf8_lossy(&bytes[..end]).into_owned();
    if bytes.len() > end {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

/// This process's resident set size (the server runs in-process), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a VmRSS line in /proc/self/status");
    kib * 1024
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP.

/// The RFC 6455 §1.3 example key, and the accept value a server must answer it with.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A WebSocket upgrade request for `path`. Each of `changes` replaces (`Some`) or removes
/// (`None`) the default header of that name, or adds a header.
fn upgrade_request(path: &str, changes: &[(&str, Option<&str>)]) -> String {
    let mut headers: Vec<(String, String)> = [
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (name, value) in changes {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in &headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// A plain GET that asks the server to close the connection after answering.
fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// The status code of a response head (0 when there is none).
fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The value of header `name` in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket frames.

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// A fresh masking key for every frame (RFC 6455 §5.3), so that a server ignoring the mask
/// would read garbage.
fn next_mask() -> [u8; 4] {
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9e37_79b9)
        .to_be_bytes()
}

/// One frame: `first` is the first header byte (FIN, RSV1-3, opcode); the payload is masked
/// with `mask` when given.
fn encode(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked frame, as a client must send it.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    encode(first, payload, Some(next_mask()))
}

/// A final, masked text frame: what a well-behaved client sends.
fn text(s: &str) -> Vec<u8> {
    frame(FIN | TEXT, s.as_bytes())
}

/// A masked close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(FIN | CLOSE, &payload)
}

/// A frame as the server sent it.
#[derive(Debug)]
struct Frame {
    /// The first header byte: FIN, RSV1-3, opcode.
    first: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn opcode(&self) -> u8 {
        self.first & 0x0f
    }
}

/// How the server ended a raw connection.
#[derive(Debug, PartialEq)]
enum End {
    /// A FIN: the server closed its side.
    Eof,
    /// A reset or another read error.
    Error(io::ErrorKind),
}

/// A close frame from the server, and the text frames before it.
#[derive(Debug)]
struct Closed {
    code: u16,
    reason: String,
    texts: Vec<String>,
}

/// A client on a raw TCP socket: it writes whatever bytes a test gives it, never answers pings
/// or closes on its own, and parses the server's frames by hand.
struct Raw {
    stream: TcpStream,
    /// Read from the socket, not yet consumed.
    buf: Vec<u8>,
    /// For assertion messages.
    name: String,
}

impl Raw {
    async fn connect(addr: SocketAddr, name: &str) -> Raw {
        let stream = within("a TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        Raw {
            stream,
            buf: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Like [`connect`](Self::connect) with a small receive buffer (so a client that does
    /// not read fills its socket quickly).
    async fn connect_small_receive_buffer(addr: SocketAddr, name: &str, bytes: u32) -> Raw {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let stream = within("a TCP connect", socket.connect(addr))
            .await
            .expect("TCP connect");
        Raw {
            stream,
            buf: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Completes a valid handshake into `room` as `nick`, checking the 101 and the accept key.
    async fn handshake(mut self, room: &str, nick: &str) -> Raw {
        let req = upgrade_request(&format!("/chat/{room}?nick={nick}"), &[]);
        self.send(req.as_bytes()).await;
        let head = self.read_head().await;
        assert_eq!(status(&head), 101, "{}: {head}", self.name);
        assert_eq!(
            header(&head, "Sec-WebSocket-Accept"),
            Some(ACCEPT),
            "{head}"
        );
        self
    }

    /// A new member `nick` of `room`.
    async fn join(addr: SocketAddr, room: &str, nick: &str) -> Raw {
        Raw::connect(addr, nick).await.handshake(room, nick).await
    }

    async fn try_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        within("a write", self.stream.write_all(bytes)).await
    }

    async fn send(&mut self, bytes: &[u8]) {
        let name = self.name.clone();
        self.try_write(bytes)
            .await
            .unwrap_or_else(|e| panic!("{name}: write failed: {e}"));
    }

    /// Reads more bytes into the buffer.
    async fn fill(&mut self) -> Result<(), End> {
        let mut chunk = [0u8; 16 * 1024];
        match within("bytes from the server", self.stream.read(&mut chunk)).await {
            Ok(0) => Err(End::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(End::Error(e.kind())),
        }
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>, End> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// The HTTP response head (status line and headers); what follows stays unread.
    async fn read_head(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..at + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            if let Err(end) = self.fill().await {
                panic!(
                    "{}: connection ended ({end:?}) inside the response head {:?}",
                    self.name,
                    short(&self.buf)
                );
            }
        }
    }

    /// The next frame from the server, or how the connection ended.
    async fn read_frame(&mut self) -> Result<Frame, End> {
        let hdr = self.take(2).await?;
        assert_eq!(hdr[1] & 0x80, 0, "server frames must not be masked");
        let len = match hdr[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes(self.take(2).await?.try_into().unwrap())),
            127 => u64::from_be_bytes(self.take(8).await?.try_into().unwrap()),
            n => u64::from(n),
        };
        assert!(
            len <= 1 << 24,
            "{}: implausible frame length {len} (header {hdr:02x?}): the stream is corrupt",
            self.name
        );
        let payload = self.take(len as usize).await?;
        Ok(Frame {
            first: hdr[0],
            payload,
        })
    }

    /// Reads frames up to the server's close frame; text frames before it are kept, pings and
    /// pongs skipped. Panics on any other frame or if the connection ends first.
    async fn expect_close(&mut self) -> Closed {
        let mut texts = Vec::new();
        loop {
            let frame = match self.read_frame().await {
                Ok(frame) => frame,
                Err(end) => panic!(
                    "{}: connection ended ({end:?}) without a close frame, after {} text frames",
                    self.name,
                    texts.len()
                ),
            };
            match frame.opcode() {
                TEXT => {
                    assert_eq!(frame.first, FIN | TEXT, "{}: {frame:?}", self.name);
                    let line = String::from_utf8(frame.payload)
                        .unwrap_or_else(|e| panic!("{}: text frame is not UTF-8: {e}", self.name));
                    texts.push(line);
                }
                PING | PONG => {}
                CLOSE => {
                    assert_eq!(frame.first, FIN | CLOSE, "{}: {frame:?}", self.name);
                    assert!(
                        frame.payload.len() >= 2,
                        "{}: close frame without a code: {frame:?}",
                        self.name
                    );
                    return Closed {
                        code: u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
                        reason: String::from_utf8_lossy(&frame.payload[2..]).into_owned(),
                        texts,
                    };
                }
                other => panic!(
                    "{}: unexpected opcode {other:#x} from the server: {}",
                    self.name,
                    short(&frame.payload)
                ),
            }
        }
    }

    /// Reads until `payload` comes back in a pong (text frames and other pongs skipped).
    async fn expect_pong(&mut self, payload: &[u8]) {
        loop {
            match self.read_frame().await {
                Ok(f) if f.opcode() == PONG && f.payload == payload => return,
                Ok(f) if matches!(f.opcode(), TEXT | PING | PONG) => {}
                other => panic!("{}: expected a pong, got {other:?}", self.name),
            }
        }
    }

    /// Everything until the server closes the connection (bounded by [`TIMEOUT`]).
    async fn read_to_end(&mut self) -> (Vec<u8>, End) {
        let mut all = std::mem::take(&mut self.buf);
        let stream = &mut self.stream;
        let end = within("the server to close the connection", async {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) => break End::Eof,
                    Ok(n) => all.extend_from_slice(&chunk[..n]),
                    Err(e) => break End::Error(e.kind()),
                }
            }
        })
        .await;
        (all, end)
    }

    /// Writes `request` while reading the answer until the server closes the connection
    /// (write errors are ignored: the server may stop reading and close first).
    async fn exchange(&mut self, request: &[u8]) -> (Vec<u8>, End) {
        let (mut rd, mut wr) = self.stream.split();
        let write = async {
            let _ = wr.write_all(request).await;
        };
        let read = async {
            let mut all = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            let end = loop {
                match rd.read(&mut chunk).await {
                    Ok(0) => break End::Eof,
                    Ok(n) => all.extend_from_slice(&chunk[..n]),
                    Err(e) => break End::Error(e.kind()),
                }
            };
            (all, end)
        };
        let ((), answer) = within("the server to answer and close", async {
            tokio::join!(write, read)
        })
        .await;
        answer
    }

    /// After the close frame: answers it with `reply` (when the server started the closing
    /// handshake), then reads until the server closes the TCP connection, asserting that
    /// nothing followed the close frame (RFC 6455 §5.5.1) and that the server closed cleanly
    /// (a FIN, RFC 6455 §7.1.1: the server closes the TCP connection first).
    async fn expect_end_after_close(&mut self, reply: Option<u16>) {
        if let Some(code) = reply {
            // The server may already be gone; what it sent is what matters.
            let _ = self.try_write(&close_frame(code, b"")).await;
        }
        let (rest, end) = self.read_to_end().await;
        assert!(
            rest.is_empty(),
            "{}: {} bytes after the close frame: {:?}",
            self.name,
            rest.len(),
            short(&rest)
        );
        assert_eq!(end, End::Eof, "{}: how the server ended it", self.name);
    }
}

// ---------------------------------------------------------------------------------------------
// The well-behaved clients.

/// Messages the sender may have in flight before it waits for the oldest to arrive.
const WINDOW: usize = 16;

/// How often [`Good::chat_during`] sends while an attack runs.
const PACE: Duration = Duration::from_millis(10);

/// A well-behaved member: a real WebSocket client, plus the lines it received that were not
/// the sender's messages (notices, other members' lines), kept for later expectations.
struct Member {
    name: &'static str,
    client: Client,
    other: Vec<String>,
}

impl Member {
    async fn join(server: &TestServer, room: &str, name: &'static str) -> Member {
        let mut client = server.connect(&format!("/chat/{room}?nick={name}")).await;
        let welcome = client.recv().await;
        assert!(
            welcome.starts_with(&format!(" .... you are {name};")),
            "{welcome:?}"
        );
        Member {
            name,
            client,
            other: Vec::new(),
        }
    }

    /// The sender's next message; other lines before it are kept in `other`.
    async fn next_from_sender(&mut self) -> String {
        loop {
            let line = self.client.recv().await;
            if line.starts_with("sender: ") {
                return line;
            }
            self.other.push(line);
        }
    }

    /// Waits until `line` (not one of the sender's) has arrived, and forgets it.
    async fn expect_line(&mut self, line: &str) {
        loop {
            if let Some(at) = self.other.iter().position(|l| l == line) {
                self.other.remove(at);
                return;
            }
            let next = self.client.recv().await;
            assert!(
                !next.starts_with("sender: "),
                "{}: sender's line {:?} while waiting for {line:?} (all messages were received)",
                self.name,
                short(next.as_bytes())
            );
            self.other.push(next);
        }
    }

    /// Reads until `other` holds at least `n` lines that satisfy `pred`.
    async fn collect(&mut self, n: usize, pred: impl Fn(&str) -> bool) {
        while self.other.iter().filter(|l| pred(l.as_str())).count() < n {
            let next = self.client.recv().await;
            assert!(
                !next.starts_with("sender: "),
                "{}: unexpected sender's line {next:?}",
                self.name
            );
            self.other.push(next);
        }
    }
}

/// Two well-behaved members of the attacked room: `sender` sends numbered messages and both
/// (every member gets every message, the sender included) must receive all, in order.
struct Good {
    listener: Member,
    sender: Member,
    /// Appended to every message (to make them big).
    pad: String,
    /// The test's turn (see [`MEMORY_TURN`]), held as long as the test runs.
    _turn: Option<Box<dyn std::any::Any + Send>>,
}

impl Good {
    async fn join(server: &TestServer, room: &str) -> Good {
        let mut listener = Member::join(server, room, "listener").await;
        let sender = Member::join(server, room, "sender").await;
        listener.expect_line(" .... sender has joined.").await;
        Good {
            listener,
            sender,
            pad: String::new(),
            _turn: None,
        }
    }

    fn line(&self, tag: &str, i: usize) -> String {
        format!("{tag} #{i:05}{}", self.pad)
    }

    async fn send(&mut self, tag: &str, i: usize) {
        let line = self.line(tag, i);
        self.sender.client.send(&line).await;
    }

    /// Both members' next message from the sender is message `i` of `tag`.
    async fn receive(&mut self, tag: &str, i: usize) {
        let want = format!("sender: {}", self.line(tag, i));
        for member in [&mut self.listener, &mut self.sender] {
            let got = member.next_from_sender().await;
            assert!(
                got == want,
                "{}: message {i} of {tag:?} (every message, in order): expected {:?}, got {:?}",
                member.name,
                short(want.as_bytes()),
                short(got.as_bytes())
            );
        }
    }

    /// Sends `n` messages (at most [`WINDOW`] unreceived) and checks both members get them all,
    /// in order.
    async fn chat(&mut self, tag: &str, n: usize) {
        let mut received = 0;
        for i in 0..n {
            self.send(tag, i).await;
            if i + 1 - received >= WINDOW {
                self.receive(tag, received).await;
                received += 1;
            }
        }
        while received < n {
            self.receive(tag, received).await;
            received += 1;
        }
    }

    /// Runs `attack` in its own task and chats (one message at a time, every [`PACE`]) until
    /// it is done; returns its result (re-raising its panic). At least one message goes
    /// through while the attack runs.
    async fn chat_during<T: Send + 'static>(
        &mut self,
        tag: &str,
        attack: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let mut task = tokio::spawn(attack);
        let mut i = 0;
        loop {
            self.send(tag, i).await;
            self.receive(tag, i).await;
            i += 1;
            tokio::select! {
                done = &mut task => match done {
                    Ok(out) => return out,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => panic!("attack task failed: {e}"),
                },
                () = tokio::time::sleep(PACE) => {}
            }
        }
    }

    /// Both members receive `line` (a notice or another member's line).
    async fn expect_line(&mut self, line: &str) {
        self.listener.expect_line(line).await;
        self.sender.expect_line(line).await;
    }

    /// Whether both members have received `line` (not forgotten yet).
    fn both_saw(&self, line: &str) -> bool {
        [&self.listener, &self.sender]
            .iter()
            .all(|m| m.other.iter().any(|l| l == line))
    }

    /// The end of a test: besides joins and leaves, every line was expected (no error lines,
    /// nothing from an attacker that should not have got through).
    fn finish(&self) {
        for member in [&self.listener, &self.sender] {
            for line in &member.other {
                assert!(
                    line.ends_with(" has joined.") || line.ends_with(" has left."),
                    "{}: unexpected line {line:?}",
                    member.name
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frame attacks: a raw member sends bytes after a valid handshake.

/// A raw client `nick` joins the good pair's room and proves it is a working member.
async fn join_bad(server: &TestServer, good: &mut Good, room: &str, nick: &str) -> Raw {
    let mut bad = Raw::join(server.addr, room, nick).await;
    good.expect_line(&format!(" .... {nick} has joined.")).await;
    bad.send(&text("hello")).await;
    good.expect_line(&format!("{nick}: hello")).await;
    bad
}

/// `bad` sends `attack` while the good pair chats; returns the server's close frame after the
/// closing handshake completed (nothing after the close frame, a clean TCP close) and the good
/// pair saw `bad` leave. `client_closes`: the attack is itself a close frame, so the server's
/// close is the reply and is not answered.
async fn attack(good: &mut Good, mut bad: Raw, bytes: Vec<u8>, client_closes: bool) -> Closed {
    let nick = bad.name.clone();
    let (mut bad, closed) = good
        .chat_during(&format!("during {nick}"), async move {
            bad.send(&bytes).await;
            let closed = bad.expect_close().await;
            (bad, closed)
        })
        .await;
    let reply = (!client_closes).then_some(closed.code);
    bad.expect_end_after_close(reply).await;
    good.expect_line(&format!(" .... {nick} has left.")).await;
    closed
}

/// The tests of this file run in parallel in one process; the one that measures the
/// process's memory runs alone: it holds this for writing, every other test for reading.
static MEMORY_TURN: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// How long a test may wait for its turn: a whole other test, on a slow machine.
const TURN_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits for `turn`, bounded by [`TURN_TIMEOUT`].
async fn take_turn<G>(what: &str, turn: impl Future<Output = G>) -> G {
    tokio::time::timeout(TURN_TIMEOUT, turn)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A server with `flags` and a good pair in `room` that has chatted a little (in parallel with
/// other tests).
async fn setup(flags: &[&str], room: &str) -> (TestServer, Good) {
    let turn = take_turn("the memory test to finish", MEMORY_TURN.read()).await;
    setup_with(flags, room, Box::new(turn)).await
}

/// Like [`setup`], while no other test runs.
async fn setup_alone(flags: &[&str], room: &str) -> (TestServer, Good) {
    let turn = take_turn("the other tests to finish", MEMORY_TURN.write()).await;
    setup_with(flags, room, Box::new(turn)).await
}

async fn setup_with(
    flags: &[&str],
    room: &str,
    turn: Box<dyn std::any::Any + Send>,
) -> (TestServer, Good) {
    let server = start(flags).await;
    let mut good = Good::join(&server, room).await;
    good._turn = Some(turn);
    good.chat("before", 20).await;
    (server, good)
}

/// Each attack in `cases` (a name and the bytes) from its own raw member of `room` must be
/// answered with a close frame with `code`; the good pair chats on.
async fn frames_close_with(flags: &[&str], room: &str, cases: Vec<(&str, Vec<u8>)>, code: u16) {
    let (server, mut good) = setup(flags, room).await;
    let mut wrong = Vec::new();
    for (name, bytes) in cases {
        let bad = join_bad(&server, &mut good, room, name).await;
        let closed = attack(&mut good, bad, bytes, false).await;
        if closed.code != code {
            wrong.push(format!("{name}: {} {:?}", closed.code, closed.reason));
        }
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
    assert!(
        wrong.is_empty(),
        "expected close code {code}, got: {wrong:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP attacks.

/// Bytes that are not HTTP: hyper answers its own 400 and closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_the_handshake_gets_400_and_the_connection_closed() {
    let (server, mut good) = setup(&[], "garbage").await;
    let addr = server.addr;
    let valid = upgrade_request("/chat/garbage?nick=intruder", &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "binary junk",
            [
                &[0x00, 0xff, 0x13, 0x37, 0x80, 0xfe][..],
                b"\r\n",
                valid.as_bytes(),
            ]
            .concat(),
        ),
        (
            "a TLS ClientHello",
            [
                &[
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ][..],
                &[0xaa; 64],
            ]
            .concat(),
        ),
        (
            "words",
            [b"HELLO THERE\r\n".as_slice(), valid.as_bytes()].concat(),
        ),
        (
            "junk in a header",
            b"GET /chat/garbage HTTP/1.1\r\nHost: x\r\n\x01\x02junk\r\n\r\n".to_vec(),
        ),
    ];
    let answers = good
        .chat_during("during", async move {
            let mut answers = Vec::new();
            for (name, bytes) in cases {
                let mut raw = Raw::connect(addr, name).await;
                answers.push((name, raw.exchange(&bytes).await));
            }
            answers
        })
        .await;
    for (name, (answer, end)) in answers {
        assert!(
            answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
            "{name}: {:?} then {end:?}",
            short(&answer)
        );
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// A request head too big for hyper (too many headers, or more than its buffer): hyper answers
/// its own 431 and closes the connection, without reading the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_the_connection_closed() {
    let (server, mut good) = setup(&[], "big-headers").await;
    let addr = server.addr;
    // 100 KB over 1000 header lines: beyond hyper's 100 headers.
    let mut many = upgrade_request("/chat/big-headers?nick=many", &[]);
    many.truncate(many.len() - 2);
    for i in 0..1000 {
        many.push_str(&format!("X-Filler-{i:04}: {}\r\n", "f".repeat(80)));
    }
    many.push_str("\r\n");
    // One 600 KB header: beyond hyper's read buffer (about 408 KiB) for a request head.
    let huge = upgrade_request(
        "/chat/big-headers?nick=huge",
        &[("X-Huge", Some(&"h".repeat(600 * 1024)))],
    );
    let answers = good
        .chat_during("during", async move {
            let mut answers = Vec::new();
            for (name, req) in [("1000 header lines", many), ("one 600 KB header", huge)] {
                let mut raw = Raw::connect(addr, name).await;
                answers.push((name, raw.exchange(req.as_bytes()).await));
            }
            answers
        })
        .await;
    for (name, (answer, end)) in answers {
        assert!(
            answer.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{name}: {:?} then {end:?}",
            short(&answer)
        );
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// `GET /` and `GET /chat/{room}` without an `Upgrade` header serve the browser client (an
/// invalid room name gets 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_get_without_upgrade_headers_serves_the_html_client() {
    let (server, mut good) = setup(&[], "plain").await;
    let addr = server.addr;
    let answers = good
        .chat_during("during", async move {
            let mut answers = Vec::new();
            for path in [
                "/",
                "/chat",
                "/chat/plain",
                "/chat/plain?nick=x",
                "/chat/bad.room",
            ] {
                let mut raw = Raw::connect(addr, path).await;
                answers.push((path, raw.exchange(get_request(path).as_bytes()).await));
            }
            answers
        })
        .await;
    for (path, (answer, end)) in answers {
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert_eq!(end, End::Eof, "{path}: Connection: close is honoured");
        if path == "/chat/bad.room" {
            assert_eq!(status(head), 404, "{path}: {head}");
            continue;
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {head}");
        assert!(
            header(head, "Content-Type").is_some_and(|t| t.starts_with("text/html")),
            "{path}: {head}"
        );
        assert!(
            body.starts_with("<!doctype html>"),
            "{path}: {}",
            short(body.as_bytes())
        );
        assert!(header(head, "Upgrade").is_none(), "{path}: {head}");
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// RFC 6455 §4.2.1: a key that is not the base64 of 16 bytes is a bad request (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sec_websocket_key_gets_400() {
    let (server, mut good) = setup(&[], "bad-key").await;
    let addr = server.addr;
    // RFC 6455 §4.1/§4.2.1: the key is the base64 encoding of 16 bytes (24 characters, the
    // last two "=="); anything else is a bad request.
    let keys: Vec<(&str, Option<&str>)> = vec![
        ("missing", None),
        ("empty", Some("")),
        ("short", Some("abc")),
        (
            "24 characters, not base64",
            Some("!!!!!!!!!!!!!!!!!!!!!!!!"),
        ),
        ("base64 of 18 bytes", Some("AAAAAAAAAAAAAAAAAAAAAAAA")),
        ("base64 of 20 bytes", Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
    ];
    let answers = good
        .chat_during("during", async move {
            let mut answers = Vec::new();
            for (i, (name, key)) in keys.into_iter().enumerate() {
                let req = upgrade_request(
                    &format!("/chat/bad-key?nick=key-{i}"),
                    &[("Sec-WebSocket-Key", key)],
                );
                let mut raw = Raw::connect(addr, name).await;
                raw.send(req.as_bytes()).await;
                answers.push((name, raw.read_head().await));
                // Dropping `raw` here ends it, whatever the answer.
            }
            answers
        })
        .await;
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(_, head)| status(head) != 400 || header(head, "Sec-WebSocket-Accept").is_some())
        .map(|(name, head)| format!("{name}: {}", head.lines().next().unwrap_or_default()))
        .collect();
    good.chat("after", 20).await;
    // (A wrongly accepted connection joined the room and left again.)
    expect_connections(&server, 2.0).await;
    good.finish();
    assert!(
        wrong.is_empty(),
        "expected 400 for every bad key, got: {wrong:#?}"
    );
}

/// RFC 6455 §4.2.2: an unsupported version gets 426 and `Sec-WebSocket-Version: 13`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sec_websocket_version_gets_426_naming_version_13() {
    let (server, mut good) = setup(&[], "bad-version").await;
    let addr = server.addr;
    let answers = good
        .chat_during("during", async move {
            let mut answers = Vec::new();
            for version in ["12", "8", "14", "1.3"] {
                let req = upgrade_request(
                    "/chat/bad-version?nick=old",
                    &[("Sec-WebSocket-Version", Some(version))],
                );
                let mut raw = Raw::connect(addr, version).await;
                raw.send(req.as_bytes()).await;
                answers.push((version, raw.read_head().await));
            }
            answers
        })
        .await;
    for (version, head) in answers {
        assert!(
            head.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{version}: {head}"
        );
        assert_eq!(
            header(&head, "Sec-WebSocket-Version"),
            Some("13"),
            "{version}: {head}"
        );
        assert!(
            header(&head, "Sec-WebSocket-Accept").is_none(),
            "{version}: {head}"
        );
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

// ---------------------------------------------------------------------------------------------
// Frame attacks.

/// RFC 6455 §5.1: a server must close on an unmasked client frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_client_frame_closes_with_1002() {
    let unmasked = encode(FIN | TEXT, b"not masked", None);
    frames_close_with(&[], "unmasked", vec![("unmasked", unmasked)], 1002).await;
}

/// RFC 6455 §5.2: RSV1-3 must be 0 without an extension (none is negotiated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_close_with_1002() {
    let cases = vec![
        ("rsv1", frame(FIN | RSV1 | TEXT, b"rsv1")),
        ("rsv2", frame(FIN | RSV2 | TEXT, b"rsv2")),
        ("rsv3", frame(FIN | RSV3 | PING, b"rsv3")),
    ];
    frames_close_with(&[], "rsv", cases, 1002).await;
}

/// RFC 6455 §5.2: opcodes 0x3-0x7 (data) and 0xB-0xF (control) are reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_opcodes_close_with_1002() {
    let cases = vec![
        ("data-0x3", frame(FIN | 0x3, b"opcode 3")),
        ("control-0xb", frame(FIN | 0xb, b"opcode 11")),
    ];
    frames_close_with(&[], "opcodes", cases, 1002).await;
}

/// RFC 6455 §5.5: control frames carry at most 125 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_with_more_than_125_bytes_closes_with_1002() {
    let (server, mut good) = setup(&[], "bigping").await;
    let mut bad = join_bad(&server, &mut good, "bigping", "pinger").await;
    // Control: 125 bytes is the most a control frame may carry, and is answered.
    let most = [b'm'; 125];
    bad.send(&frame(FIN | PING, &most)).await;
    bad.expect_pong(&most).await;
    let closed = attack(&mut good, bad, frame(FIN | PING, &[b'p'; 126]), false).await;
    assert_eq!(closed.code, 1002, "{closed:?}");
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// RFC 6455 §5.5: control frames must not be fragmented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_ping_closes_with_1002() {
    let (server, mut good) = setup(&[], "fragping").await;
    let mut bad = join_bad(&server, &mut good, "fragping", "pinger").await;
    // Control: a ping between the fragments of a message is legal (RFC 6455 §5.4).
    let mut legal = frame(TEXT, b"frag");
    legal.extend(frame(FIN | PING, b"in between"));
    legal.extend(frame(FIN | CONTINUATION, b"mented"));
    bad.send(&legal).await;
    bad.expect_pong(b"in between").await;
    good.expect_line("pinger: fragmented").await;
    // A ping without FIN.
    let closed = attack(&mut good, bad, frame(PING, b"not final"), false).await;
    assert_eq!(closed.code, 1002, "{closed:?}");
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// RFC 6455 §5.4: a continuation needs a message to continue, and a new message cannot start
/// before the last one ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fragment_sequences_close_with_1002() {
    let mut two_starts = frame(TEXT, b"first ");
    two_starts.extend(frame(FIN | TEXT, b"a new message before the first ended"));
    let cases = vec![
        (
            "orphan-continuation",
            frame(FIN | CONTINUATION, b"nothing to continue"),
        ),
        ("two-starts", two_starts),
    ];
    frames_close_with(&[], "fragments", cases, 1002).await;
}

/// RFC 6455 §8.1: a text message must be UTF-8 as a whole, checked across fragments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_split_across_fragments_closes_with_1007() {
    let (server, mut good) = setup(&[], "utf8").await;
    let mut bad = join_bad(&server, &mut good, "utf8", "splitter").await;
    // Control: a character split across two fragments is fine ("é" is C3 A9).
    let mut valid = frame(TEXT, b"caf\xc3");
    valid.extend(frame(FIN | CONTINUATION, b"\xa9!"));
    bad.send(&valid).await;
    good.expect_line("splitter: café!").await;
    // The first fragment ends inside a character; the next byte cannot continue it.
    let mut invalid = frame(TEXT, b"caf\xc3");
    invalid.extend(frame(FIN | CONTINUATION, b"(oops"));
    let closed = attack(&mut good, bad, invalid, false).await;
    assert_eq!(closed.code, 1007, "{closed:?}");
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// `--max-frame-bytes` bounds the assembled message, not only each frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_assembled_over_max_frame_bytes_closes_with_1009() {
    let (server, mut good) = setup(&["--max-frame-bytes", "1024"], "assembled").await;
    let mut bad = join_bad(&server, &mut good, "assembled", "builder").await;
    let fragments = |n: usize| {
        let mut bytes = Vec::new();
        for i in 0..n {
            let fin = if i + 1 == n { FIN } else { 0 };
            let opcode = if i == 0 { TEXT } else { CONTINUATION };
            bytes.extend(frame(fin | opcode, &[b'x'; 250]));
        }
        bytes
    };
    // Control: 4 x 250 = 1000 bytes fit.
    bad.send(&fragments(4)).await;
    good.expect_line(&format!("builder: {}", "x".repeat(1000)))
        .await;
    // 6 x 250 = 1500 bytes do not, though every fragment does.
    let closed = attack(&mut good, bad, fragments(6), false).await;
    assert_eq!(closed.code, 1009, "{closed:?}");
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// Binary messages are not part of the protocol (README: close codes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frame_closes_with_1003() {
    let mut fragmented = frame(BINARY, &[1, 2]);
    fragmented.extend(frame(FIN | CONTINUATION, &[3]));
    let cases = vec![
        ("binary", frame(FIN | BINARY, &[0xde, 0xad, 0xbe, 0xef])),
        ("fragmented-binary", fragmented),
    ];
    frames_close_with(&[], "binary", cases, 1003).await;
}

/// A client's close frame with a code it may not send is answered with 1002; valid codes are
/// echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_frame_with_an_invalid_code_is_answered_with_1002() {
    let (server, mut good) = setup(&[], "closecodes").await;
    let mut wrong = Vec::new();
    // RFC 6455 §7.4: 0-999 are unused, 1004-1006 and 1015 must not be sent, 1016-2999 are
    // reserved for the RFC's extensions, 5000+ do not exist. tungstenite answers with 1002.
    let mut cases: Vec<(String, Vec<u8>, u16)> =
        [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
            .into_iter()
            .map(|code| (format!("code-{code}"), close_frame(code, b"bye"), 1002))
            .collect();
    cases.push(("one-byte".into(), frame(FIN | CLOSE, &[0x03]), 1002));
    // A reason that is not UTF-8 is invalid data (§5.5.1, §8.1).
    cases.push(("bad-reason".into(), close_frame(1000, b"\xff\xfe"), 1007));
    // Controls: valid codes are echoed back (§5.5.1).
    for code in [1000, 1001, 1003, 3000, 4999] {
        cases.push((format!("valid-{code}"), close_frame(code, b"bye"), code));
    }
    for (nick, bytes, want) in cases {
        let bad = join_bad(&server, &mut good, "closecodes", &nick).await;
        let closed = attack(&mut good, bad, bytes, true).await;
        if closed.code != want {
            wrong.push(format!(
                "{nick}: expected {want}, got {} {:?}",
                closed.code, closed.reason
            ));
        }
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// RFC 6455 §5.5.1: after its close frame (here the reply to the client's) the server sends no
/// more data frames, even while the room keeps queueing messages for the closing client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_handshake_in_a_busy_room_sends_nothing_after_the_close_frame() {
    const CLOSERS: usize = 20;
    const FRAGMENTS: usize = 30_000;
    let (server, mut good) = setup(&["--max-frame-bytes", "1048576"], "busy").await;
    let mut closers = Vec::new();
    for k in 0..CLOSERS {
        closers.push(join_bad(&server, &mut good, "busy", &format!("closer-{k}")).await);
    }
    let tasks: Vec<_> = closers
        .into_iter()
        .enumerate()
        .map(|(k, mut raw)| {
            tokio::spawn(async move {
                // Wait until the room is busy, then close while messages keep coming.
                let mut seen = 0;
                while seen < 10 + k * 2 {
                    let f = raw.read_frame().await.expect("a frame");
                    if f.opcode() == TEXT && f.payload.starts_with(b"sender: busy") {
                        seen += 1;
                    }
                }
                // The close comes after many fragments of a message it abandons (legal: a
                // control frame may come between fragments), which the server reads in one go:
                // meanwhile the busy room queues more messages for this client.
                let mut bytes = frame(TEXT, b"a");
                for _ in 0..FRAGMENTS {
                    bytes.extend(frame(CONTINUATION, b"b"));
                }
                bytes.extend(close_frame(1000, b""));
                raw.send(&bytes).await;
                let closed = raw.expect_close().await;
                assert_eq!(closed.code, 1000, "{closed:?}");
                raw.expect_end_after_close(None).await;
            })
        })
        .collect();
    good.chat("busy", 2000).await;
    for task in tasks {
        task.await.unwrap();
    }
    for k in 0..CLOSERS {
        good.expect_line(&format!(" .... closer-{k} has left."))
            .await;
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

// ---------------------------------------------------------------------------------------------
// Transport and volume attacks.

/// A reset in the middle of a frame is a plain leave (the half frame is never delivered); a
/// reset in the middle of the HTTP request never becomes a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_reset_mid_frame_is_a_leave_and_nothing_else() {
    let (server, mut good) = setup(&[], "reset").await;
    let addr = server.addr;
    let bad = join_bad(&server, &mut good, "reset", "rst").await;
    good.chat_during("during", async move {
        let mut bad = bad;
        // Half of a text frame, then a reset (SO_LINGER 0).
        let whole = frame(FIN | TEXT, &[b'r'; 100]);
        bad.send(&whole[..whole.len() / 2]).await;
        bad.stream.set_zero_linger().unwrap();
        drop(bad);
        // Half of an HTTP request, then a reset: it never becomes a member.
        let mut early = Raw::connect(addr, "early").await;
        let req = upgrade_request("/chat/reset?nick=early", &[]);
        early.send(&req.as_bytes()[..req.len() / 2]).await;
        early.stream.set_zero_linger().unwrap();
        drop(early);
    })
    .await;
    good.expect_line(" .... rst has left.").await;
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// 10 000 pings in one burst. Pings are legal and must be answered (RFC 6455 §5.5.2; a backlog
/// may be answered for the latest ping only, §5.5.3), and the server limits chat messages, not
/// control frames: so the right answer is pongs, the flooder stays a member, and tungstenite
/// holds at most one pending pong, so the flood costs the server no memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_answered_with_pongs_and_the_flooder_stays_a_member() {
    const PINGS: u32 = 10_000;
    let (server, mut good) = setup(&[], "flood").await;
    let flooder = join_bad(&server, &mut good, "flood", "flooder").await;
    let (mut flooder, pongs) = good
        .chat_during("during", async move {
            let mut flooder = flooder;
            let mut burst = Vec::with_capacity(PINGS as usize * 10);
            for i in 0..PINGS {
                burst.extend(frame(FIN | PING, &i.to_be_bytes()));
            }
            flooder.send(&burst).await;
            flooder.send(&text("done")).await;
            // Pongs carry the ping's number and come in order. The server may answer a backlog
            // with one pong for the latest ping (RFC 6455 §5.5.3), but the last ping is answered.
            let mut last: Option<u32> = None;
            let mut pongs = 0;
            let mut done = false;
            while !(done && last == Some(PINGS - 1)) {
                let f = match flooder.read_frame().await {
                    Ok(f) => f,
                    Err(end) => {
                        panic!("the flooder was disconnected ({end:?}) after {pongs} pongs")
                    }
                };
                match f.opcode() {
                    PONG => {
                        let n =
                            u32::from_be_bytes(f.payload[..].try_into().expect("a 4-byte pong"));
                        assert!(
                            n < PINGS && last.is_none_or(|l| l < n),
                            "pong {n} after {last:?}"
                        );
                        last = Some(n);
                        pongs += 1;
                    }
                    TEXT => done |= f.payload == b"flooder: done",
                    PING => {}
                    _ => panic!("the flooder got {f:?} after {pongs} pongs"),
                }
            }
            (flooder, pongs)
        })
        .await;
    assert!((1..=PINGS).contains(&pongs));
    good.expect_line("flooder: done").await;
    // Still a member in good standing: it chats, then leaves with a normal close.
    flooder.send(&text("after the flood")).await;
    good.expect_line("flooder: after the flood").await;
    flooder.send(&close_frame(1000, b"")).await;
    let closed = flooder.expect_close().await;
    assert_eq!(closed.code, 1000, "{closed:?}");
    flooder.expect_end_after_close(None).await;
    good.expect_line(" .... flooder has left.").await;
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
    println!("10000 pings were answered with {pongs} pongs");
}

/// A slowloris connection: the upgrade request one byte every 100 ms (it would take about
/// 35 s) while reading. Returns how long until the server ended it, what it answered, how.
async fn slowloris(addr: SocketAddr, k: usize) -> (Duration, Vec<u8>, End, usize) {
    let req = upgrade_request(
        &format!("/chat/loris?nick=loris-{k}"),
        &[("X-Padding", Some(&"p".repeat(200)))],
    );
    let mut stream = within("a TCP connect", TcpStream::connect(addr))
        .await
        .expect("TCP connect");
    let started = Instant::now();
    let (mut rd, mut wr) = stream.split();
    let mut answer = Vec::new();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let end = within("the server to cut a slowloris connection", async {
        let mut chunk = [0u8; 1024];
        loop {
            tokio::select! {
                read = rd.read(&mut chunk) => match read {
                    Ok(0) => break End::Eof,
                    Ok(n) => answer.extend_from_slice(&chunk[..n]),
                    Err(e) => break End::Error(e.kind()),
                },
                _ = tick.tick(), if sent < req.len() => {
                    // A failed write means the server is gone; the read says how.
                    if wr.write_all(&req.as_bytes()[sent..=sent]).await.is_ok() {
                        sent += 1;
                    }
                }
            }
        }
    })
    .await;
    (started.elapsed(), answer, end, sent)
}

/// 20 connections trickle their upgrade request; `--handshake-timeout 1s` (hyper's header read
/// timeout, a deadline for the whole head) cuts each at about 1 s, while a new client connects
/// and chats meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_handshakes_are_cut_off_at_the_handshake_timeout() {
    let (server, mut good) = setup(&["--handshake-timeout", "1s"], "loris").await;
    let addr = server.addr;
    let url = server.url("/chat/loris?nick=latecomer");
    let (cut, latecomer_line) = good
        .chat_during("during", async move {
            let lorises: Vec<_> = (0..20).map(|k| tokio::spawn(slowloris(addr, k))).collect();
            // Meanwhile a good client connects and chats.
            let mut late = Client::connect(&url, None).await;
            assert!(late.recv().await.starts_with(" .... you are latecomer;"));
            late.send("hi").await;
            // (The good pair's messages arrive too.)
            let line = loop {
                let line = late.recv().await;
                if !line.starts_with("sender: ") {
                    break line;
                }
            };
            late.ws.close(None).await.unwrap();
            late.expect_end().await;
            let mut cut = Vec::new();
            for loris in lorises {
                cut.push(loris.await.unwrap());
            }
            (cut, line)
        })
        .await;
    assert_eq!(latecomer_line, "latecomer: hi");
    good.expect_line(" .... latecomer has joined.").await;
    good.expect_line("latecomer: hi").await;
    good.expect_line(" .... latecomer has left.").await;
    let times: Vec<Duration> = cut.iter().map(|c| c.0).collect();
    println!(
        "20 slowloris connections cut after {:?} to {:?}",
        times.iter().min().unwrap(),
        times.iter().max().unwrap()
    );
    for (k, (elapsed, answer, end, sent)) in cut.into_iter().enumerate() {
        // Cut at the timeout (hyper's header read timeout; it sends no 408), not before.
        assert!(
            elapsed >= Duration::from_millis(900),
            "slowloris {k} cut after {elapsed:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408 "),
            "slowloris {k}: {:?} then {end:?}",
            short(&answer)
        );
        assert!(
            sent < 100,
            "slowloris {k} sent {sent} bytes before it was cut"
        );
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
}

/// A churner connects as `nick` with a real client and leaves in one of four ways.
async fn churn_once(url: String, way: usize) {
    let (mut ws, _) = within(
        "a churner's handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("churner connects");
    match way % 4 {
        // A close handshake.
        0 => {
            ws.close(None).await.unwrap();
            within("the end of a closed churner", async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        // Gone without a close frame (FIN).
        1 => drop(ws),
        // Gone with a reset.
        2 => {
            if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                s.set_zero_linger().unwrap();
            }
            drop(ws);
        }
        // Reads its welcome, then goes without a close frame.
        _ => {
            let first = within("a churner's welcome", ws.next()).await;
            assert!(matches!(first, Some(Ok(_))), "{first:?}");
            drop(ws);
        }
    }
}

/// 1000 real clients connect and leave (close handshake, FIN, reset, after reading the welcome),
/// 10 at a time, in the good pair's room: each join and leave is announced exactly once, join
/// first, and no connection is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_churn_every_join_and_leave_is_announced_once_in_order() {
    const WORKERS: usize = 10;
    const EACH: usize = 100;
    let (server, mut good) = setup(&[], "churn").await;
    let base = server.url("/chat/churn");
    let started = Instant::now();
    good.chat_during("during", async move {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let base = base.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        churn_once(format!("{base}?nick=churn-{w}-{i}"), w + i).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
    })
    .await;
    let took = started.elapsed();
    let total = WORKERS * EACH;
    let is_churn = |l: &str| l.starts_with(" .... churn-");
    for member in [&mut good.listener, &mut good.sender] {
        member.collect(2 * total, is_churn).await;
        let lines: Vec<String> = member
            .other
            .iter()
            .filter(|l| is_churn(l.as_str()))
            .cloned()
            .collect();
        member.other.retain(|l| !is_churn(l.as_str()));
        assert_eq!(lines.len(), 2 * total, "{}: {lines:#?}", member.name);
        for w in 0..WORKERS {
            for i in 0..EACH {
                let joined = format!(" .... churn-{w}-{i} has joined.");
                let left = format!(" .... churn-{w}-{i} has left.");
                let at = |want: &str| {
                    let all: Vec<usize> = (0..lines.len()).filter(|&k| lines[k] == want).collect();
                    assert_eq!(
                        all.len(),
                        1,
                        "{}: {want:?} seen {} times",
                        member.name,
                        all.len()
                    );
                    all[0]
                };
                assert!(
                    at(&joined) < at(&left),
                    "{}: churn-{w}-{i} left before joining",
                    member.name
                );
            }
        }
    }
    good.chat("after", 20).await;
    expect_connections(&server, 2.0).await;
    good.finish();
    println!("{total} connections churned in {took:?}");
}

/// With `--queue-capacity 64`, a client that stops reading is closed with 1008 "too slow": when
/// it finally reads it finds the messages queued for it, complete and in order, then the close
/// frame. The room carries on, and the process's memory grows by less than 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_closed_with_1008_and_memory_stays_bounded() {
    const TOTAL: usize = 3_000;
    const LIMIT: usize = 20_000;
    // Alone: the server runs in this process, so its memory is this process's memory.
    let (server, mut good) = setup_alone(&["--queue-capacity", "64"], "stall").await;
    let rss_before = rss_bytes();
    // A small receive buffer fills sooner; the client does not read until it has been dropped.
    let stalled = Raw::connect_small_receive_buffer(server.addr, "stalled", 4096)
        .await
        .handshake("stall", "stalled")
        .await;
    good.expect_line(" .... stalled has joined.").await;
    let mut stalled = Some(stalled);

    // 2 KB messages, at most WINDOW unreceived by the good pair, at least TOTAL of them and
    // until both saw the stalled client leave.
    good.pad = format!(" {}", "p".repeat(2000));
    let left = " .... stalled has left.";
    let (mut sent, mut received) = (0, 0);
    let mut reader = None;
    let mut rss_at_close = 0;
    while sent < TOTAL || reader.is_none() {
        if let Some(mut stalled) = stalled.take_if(|_| good.both_saw(left)) {
            rss_at_close = rss_bytes();
            // Only now does it read: what was queued for it, in order, then the close frame.
            reader = Some(tokio::spawn(async move {
                let closed = stalled.expect_close().await;
                stalled.expect_end_after_close(Some(closed.code)).await;
                closed
            }));
        }
        assert!(sent < LIMIT, "the stalled client was never disconnected");
        good.send("big", sent).await;
        sent += 1;
        if sent - received >= WINDOW {
            good.receive("big", received).await;
            received += 1;
        }
    }
    while received < sent {
        good.receive("big", received).await;
        received += 1;
    }
    good.expect_line(left).await;
    let closed = within("the stalled client to read its close", reader.unwrap())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    good.pad.clear();
    good.chat("after", 100).await;
    let rss_after = rss_bytes();

    assert_eq!((closed.code, closed.reason.as_str()), (1008, "too slow"));
    let (welcome, messages) = closed.texts.split_first().expect("at least the welcome");
    assert!(welcome.starts_with(" .... you are stalled;"), "{welcome:?}");
    let pad = format!(" {}", "p".repeat(2000));
    for (i, got) in messages.iter().enumerate() {
        let want = format!("sender: big #{i:05}{pad}");
        assert!(
            got == &want,
            "stalled client's message {i}: {:?}",
            short(got.as_bytes())
        );
    }
    assert!(messages.len() < sent, "it cannot have received all {sent}");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let growth = rss_at_close.max(rss_after).saturating_sub(rss_before);
    assert!(
        growth < 64 << 20,
        "RSS grew by {:.1} MiB ({:.1} -> {:.1} at the close -> {:.1})",
        mib(growth),
        mib(rss_before),
        mib(rss_at_close),
        mib(rss_after)
    );
    let body = server.metrics().await;
    assert_eq!(
        metric(&body, "chat_slow_consumer_disconnects_total"),
        Some(1.0),
        "{body}"
    );
    expect_connections(&server, 2.0).await;
    good.finish();
    println!(
        "stalled after {} of {sent} messages; RSS {:.1} -> {:.1} -> {:.1} MiB",
        messages.len(),
        mib(rss_before),
        mib(rss_at_close),
        mib(rss_after)
    );
}
