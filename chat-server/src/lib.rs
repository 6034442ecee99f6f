//! `chat-server`: a WebSocket chat server, a thin tokio + tokio-tungstenite shell around
//! [`chat_core`].
//!
//! The shell moves bytes and time into the core and the core's outputs out to sockets; it
//! decides nothing about chat semantics. One port serves the bundled browser client (`GET /`),
//! WebSocket rooms (`/`, `/chat`, `/chat/{room}`), `/healthz` and `/metrics`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = chat_server::Server::bind(chat_server::Config::defaults()).await?;
//! println!("listening on http://{}", server.local_addr()?);
//! server.run().await
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cluster;
mod config;
mod connection;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod hub;
mod metrics;
mod outbox;
mod server;
mod wire;

pub use config::Config;
pub use http::{is_valid_room, DEFAULT_ROOM};
pub use server::{Server, ShutdownHandle};
pub use wire::JSON_PROTOCOL;
