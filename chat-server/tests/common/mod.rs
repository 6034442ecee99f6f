//! Test support: a real server on an ephemeral port and a real WebSocket client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use chat_server::{Config, Server, ShutdownHandle};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every wait in the tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: ShutdownHandle,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts a server with the defaults plus `flags` (e.g. `["--seed-compat"]`).
    pub async fn start(flags: &[&str]) -> TestServer {
        let mut args = vec!["chat-server", "--bind", "127.0.0.1", "--port", "0"];
        args.extend_from_slice(flags);
        let config = Config::parse_from(args);
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let shutdown = server.shutdown_handle();
        let task = tokio::spawn(server.run());
        TestServer {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A plain-text (seed format) client on `path`.
    pub async fn connect(&self, path: &str) -> Client {
        Client::connect(&self.url(path), None).await
    }

    /// A `chat.v1.json` client on `path`.
    pub async fn connect_json(&self, path: &str) -> Client {
        Client::connect(&self.url(path), Some(chat_server::JSON_PROTOCOL)).await
    }

    /// `GET path` over a raw TCP connection; returns the status code and body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path, &[]).await
    }
}

/// A minimal HTTP/1.0 GET for tests (the server's side is hyper; this only reads a reply).
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client with bounded waits.
pub struct Client {
    pub ws: Ws,
    pub protocol: Option<String>,
}

impl Client {
    pub async fn connect(url: &str, protocol: Option<&str>) -> Client {
        let mut req = url.into_client_request().unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
        }
        let (ws, resp) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")
            .expect("connect");
        let protocol = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        Client { ws, protocol }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next text frame (pings and pongs skipped); panics on close or timeout.
    pub async fn recv(&mut self) -> String {
        match self.next_event().await {
            Event::Text(t) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next JSON event.
    pub async fn recv_json(&mut self) -> serde_json::Value {
        let text = self.recv().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
    }

    /// Receives `n` text frames.
    pub async fn recv_n(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.recv().await);
        }
        out
    }

    /// The next text frame, close, or end of stream.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a frame in time");
            return match next {
                Some(Ok(Message::Text(t))) => Event::Text(t.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    Event::Close(frame.map(|f| (f.code, f.reason.to_string())))
                }
                Some(Ok(Message::Binary(b))) => Event::Binary(b.to_vec()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Event::Error(e.to_string()),
                None => Event::End,
            };
        }
    }

    /// Reads until a close frame arrives (text frames before it are returned too).
    pub async fn expect_close(&mut self) -> (Vec<String>, CloseCode, String) {
        let mut texts = Vec::new();
        loop {
            match self.next_event().await {
                Event::Text(t) => texts.push(t),
                Event::Close(Some((code, reason))) => return (texts, code, reason),
                other => panic!("expected a close frame, got {other:?} after {texts:?}"),
            }
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(wait, self.ws.next()).await {
            if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
                panic!("expected silence, got {m:?}");
            }
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<(CloseCode, String)>),
    Error(String),
    End,
}

/// Extracts the nickname from a plain-text welcome line.
pub fn nick_from_welcome(line: &str) -> String {
    line.strip_prefix(" .... you are ")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not a welcome line: {line:?}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Helpers for the limit, close-code and operations tests.

/// Like [`Client::connect`] with extra request headers, returning the handshake error (e.g.
/// `tungstenite::Error::Http` carrying a refusal's status) instead of panicking.
pub async fn try_connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (ws, _resp) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake answered in time")?;
    Ok(Client { ws, protocol: None })
}

/// The HTTP status of a refused `try_connect`, or 101 when it was accepted.
pub fn handshake_status(result: &Result<Client, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match result {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// The request headers of a valid WebSocket upgrade (version 13, a fixed key).
fn upgrade_headers(addr: SocketAddr) -> Vec<(String, String)> {
    [
        ("Host", addr.to_string()),
        ("Upgrade", "websocket".to_owned()),
        ("Connection", "Upgrade".to_owned()),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Sends a WebSocket upgrade request over raw TCP (`headers` replace the defaults of the same
/// name or are added) and reads the response head, byte by byte so that nothing after it is
/// consumed. Returns the status code, the head, and the stream positioned after the head.
pub async fn raw_upgrade(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut all = upgrade_headers(addr);
    for (k, v) in headers {
        match all
            .iter_mut()
            .find(|(name, _)| name.eq_ignore_ascii_case(k))
        {
            Some(slot) => slot.1 = (*v).to_owned(),
            None => all.push(((*k).to_owned(), (*v).to_owned())),
        }
    }
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in &all {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("TCP connect in time")
        .unwrap();
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read_u8().await {
                Ok(b) => head.push(b),
                Err(e) => panic!("connection ended inside the response head: {e}"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read_head)
        .await
        .expect("response head in time");
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, stream)
}

/// Encodes one WebSocket frame: `first` is the first header byte (FIN, RSV, opcode); the
/// payload is masked (as a client must) when `masked`.
pub fn raw_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
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
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A final, masked text frame: what a well-behaved client sends.
pub fn raw_text(text: &str) -> Vec<u8> {
    raw_frame(0x81, text.as_bytes(), true)
}

/// One frame as the server sent it.
#[derive(Debug)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A WebSocket client written against raw TCP: it sends whatever bytes a test gives it and
/// never answers pings or closes on its own.
pub struct RawWs {
    pub stream: TcpStream,
}

impl RawWs {
    /// Completes a (valid) handshake on `path`; panics unless the server answers 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let (status, head, stream) = raw_upgrade(addr, path, &[]).await;
        assert_eq!(status, 101, "{head}");
        RawWs { stream }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        tokio::time::timeout(TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("raw write in time")
            .expect("raw write");
    }

    /// The next frame from the server; `None` when the connection ended. Bounded by
    /// [`TIMEOUT`].
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut hdr = [0u8; 2];
            self.stream.read_exact(&mut hdr).await.ok()?;
            assert_eq!(hdr[1] & 0x80, 0, "the server must not mask its frames");
            let len = match hdr[1] & 0x7f {
                126 => u64::from(self.stream.read_u16().await.ok()?),
                127 => self.stream.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut payload).await.ok()?;
            Some(RawFrame {
                fin: hdr[0] & 0x80 != 0,
                opcode: hdr[0] & 0x0f,
                payload,
            })
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .expect("a frame (or the end of the connection) in time")
    }

    /// Reads (and ignores) frames until a close frame, answers it with a close frame, and
    /// returns its code and reason and the text frames seen before it. Panics if the
    /// connection ends without one.
    pub async fn expect_close(&mut self) -> (u16, String, Vec<String>) {
        let mut texts = Vec::new();
        loop {
            match self.read_frame().await {
                Some(f) if f.opcode == 0x8 => {
                    assert!(f.payload.len() >= 2, "close frame without a code: {f:?}");
                    let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    let reason = String::from_utf8_lossy(&f.payload[2..]).into_owned();
                    // Answer like a real client; the server may already be gone.
                    use tokio::io::AsyncWriteExt;
                    let reply = raw_frame(0x88, &f.payload[..2], true);
                    let _ = self.stream.write_all(&reply).await;
                    return (code, reason, texts);
                }
                Some(f) if f.opcode == 0x1 => {
                    texts.push(String::from_utf8_lossy(&f.payload).into_owned());
                }
                Some(_) => {}
                None => panic!("connection ended without a close frame after {texts:?}"),
            }
        }
    }
}

/// Reads until the peer closes the TCP connection (EOF or reset); returns what was read.
/// Panics if it stays open longer than [`TIMEOUT`].
pub async fn read_until_disconnected(stream: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("the server closes the connection in time");
    buf
}

/// The value of the metric sample `name` (with its labels, e.g.
/// `chat_rejected_handshakes_total{reason="origin"}`) in a Prometheus text exposition.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

impl TestServer {
    /// `GET /metrics`, asserting a 200.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Client {
    /// Reads until the connection ends (after a close, tungstenite flushes its close reply
    /// on this read). Panics if it stays open longer than [`TIMEOUT`].
    pub async fn expect_end(&mut self) {
        loop {
            match self.next_event().await {
                Event::End | Event::Error(_) => return,
                _ => {}
            }
        }
    }
}
