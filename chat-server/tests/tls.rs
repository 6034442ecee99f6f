//! TLS: `--tls-cert` / `--tls-key` serve `https://` and `wss://` on one port. The certificate
//! is made at test time (rcgen) and the client is rustls-based.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{TestServer, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A self-signed certificate for `localhost`, written as PEM files for the server.
struct Cert {
    der: CertificateDer<'static>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Cert {
    fn new(tag: &str) -> Cert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("generate a certificate");
        let dir = std::env::temp_dir();
        let id = std::process::id();
        let cert_path = dir.join(format!("chat-tls-{id}-{tag}.crt"));
        let key_path = dir.join(format!("chat-tls-{id}-{tag}.key"));
        std::fs::write(&cert_path, made.cert.pem()).unwrap();
        std::fs::write(&key_path, made.signing_key.serialize_pem()).unwrap();
        Cert {
            der: made.cert.der().clone(),
            cert_path,
            key_path,
        }
    }

    async fn start_server(&self, extra: &[&str]) -> TestServer {
        let mut flags = vec![
            "--tls-cert",
            self.cert_path.to_str().unwrap(),
            "--tls-key",
            self.key_path.to_str().unwrap(),
        ];
        flags.extend_from_slice(extra);
        TestServer::start(&flags).await
    }

    /// A TLS connection to the server that trusts only this certificate.
    async fn connect(&self, server: &TestServer) -> TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(
            TIMEOUT,
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake succeeds")
    }

    async fn wss(&self, server: &TestServer, path: &str) -> WebSocketStream<TlsStream<TcpStream>> {
        let tls = self.connect(server).await;
        let url = format!("wss://localhost{path}");
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(url, tls))
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket handshake over TLS");
        ws
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert_path);
        let _ = std::fs::remove_file(&self.key_path);
    }
}

async fn recv(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> String {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn wss_clients_chat_over_tls() {
    let cert = Cert::new("chat");
    let server = cert.start_server(&["--history", "0"]).await;
    let mut alice = cert.wss(&server, "/chat/secure?nick=alice").await;
    assert!(recv(&mut alice).await.starts_with(" .... you are alice;"));
    let mut bob = cert.wss(&server, "/chat/secure?nick=bob").await;
    assert!(recv(&mut bob).await.starts_with(" .... you are bob;"));
    assert_eq!(recv(&mut alice).await, " .... bob has joined.");

    alice.send(Message::text("over tls")).await.unwrap();
    assert_eq!(recv(&mut alice).await, "alice: over tls");
    assert_eq!(recv(&mut bob).await, "alice: over tls");

    bob.close(None).await.unwrap();
    assert_eq!(recv(&mut alice).await, " .... bob has left.");
}

#[tokio::test]
async fn https_serves_the_page_that_picks_wss() {
    let cert = Cert::new("page");
    let server = cert.start_server(&[]).await;
    let mut tls = cert.connect(&server).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut body))
        .await
        .expect("the page in time")
        .ok();
    let page = String::from_utf8_lossy(&body);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // The bundled client derives the WebSocket scheme from the page's.
    assert!(
        page.contains("location.protocol === 'https:' ? 'wss:' : 'ws:'"),
        "{page}"
    );

    let mut tls = cert.connect(&server).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut body)).await;
    assert!(String::from_utf8_lossy(&body).ends_with("ok\n"));
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_dropped_and_others_are_unaffected() {
    let cert = Cert::new("plain");
    let server = cert.start_server(&["--history", "0"]).await;
    let mut alice = cert.wss(&server, "/chat/mixed?nick=alice").await;
    assert!(recv(&mut alice).await.starts_with(" .... you are alice;"));

    // Plain text where a TLS ClientHello belongs: the handshake fails and the server closes.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /chat/mixed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection in time");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
        "no HTTP answer without TLS: {buf:?}"
    );

    alice.send(Message::text("still fine")).await.unwrap();
    assert_eq!(recv(&mut alice).await, "alice: still fine");
}

#[tokio::test]
async fn missing_or_bad_key_files_fail_at_startup_with_the_path() {
    let cert = Cert::new("bad");
    let mut config = chat_server::Config::defaults();
    config.tls_cert = Some(cert.cert_path.clone());
    config.tls_key = Some(PathBuf::from("/nonexistent/key.pem"));
    let err = chat_server::Server::bind(config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("/nonexistent/key.pem"), "{err}");

    let mut config = chat_server::Config::defaults();
    config.tls_cert = Some(cert.key_path.clone()); // a key where the certificate belongs
    config.tls_key = Some(cert.key_path.clone());
    let err = chat_server::Server::bind(config)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains(cert.key_path.to_str().unwrap()),
        "{err}"
    );
}
