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
