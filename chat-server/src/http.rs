//! HTTP routes (axum) and the WebSocket upgrade. Everything that can be refused is refused
//! here, before the handshake completes: bad requests (400), unsupported versions (426), other
//! origins (403) and a full server (503).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::connection::{self, Handshake};
use crate::server::Shared;
use crate::wire::{Format, JSON_PROTOCOL};

/// The bundled browser client, embedded at build time.
const INDEX_HTML: &str = include_str!("../static/index.html");

/// The room of `/` and `/chat`.
pub const DEFAULT_ROOM: &str = "lobby";

/// All routes of the server.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/chat", get(root))
        .route("/chat/{room}", get(room))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// `true` for 1-64 of `[A-Za-z0-9_-]`.
pub fn is_valid_room(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `?nick=...&since=...`, or why it could not be parsed.
type JoinParams = Result<Query<JoinQuery>, QueryRejection>;

async fn root(State(shared): State<Arc<Shared>>, query: JoinParams, req: Request) -> Response {
    page_or_upgrade(shared, DEFAULT_ROOM.to_owned(), query, req)
}

async fn room(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    query: JoinParams,
    req: Request,
) -> Response {
    if !is_valid_room(&room) {
        let msg = "room names are 1-64 of A-Z a-z 0-9 _ -\n";
        return (StatusCode::NOT_FOUND, msg).into_response();
    }
    page_or_upgrade(shared, room, query, req)
}

/// `ok`, or 503 while a replicated node cannot reach Redis (so a load balancer sends new
/// clients to a node that can serve them).
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.hub.cluster() {
        Some(cluster) if !cluster.is_healthy() => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("redis unavailable (node {})\n", cluster.name),
        )
            .into_response(),
        _ => "ok\n".into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        shared.metrics.render(),
    )
        .into_response()
}

/// The browser client for a plain GET, the WebSocket handshake for an upgrade request.
fn page_or_upgrade(shared: Arc<Shared>, room: String, query: JoinParams, req: Request) -> Response {
    if req.headers().contains_key(header::UPGRADE) {
        upgrade(shared, room, query, req)
    } else {
        Html(INDEX_HTML).into_response()
    }
}

/// Join options from the query string: `?nick=NAME&since=SEQ`.
#[derive(Deserialize, Default)]
struct JoinQuery {
    nick: Option<String>,
    since: Option<u64>,
}

fn refuse(
    shared: &Shared,
    status: StatusCode,
    reason: &'static str,
    msg: &'static str,
) -> Response {
    shared.metrics.reject(reason);
    tracing::debug!(%status, reason, "handshake refused");
    (status, msg).into_response()
}

/// RFC 6455 §4.2.1: the key must be the base64 encoding of 16 bytes.
fn is_valid_key(key: &HeaderValue) -> bool {
    data_encoding::BASE64
        .decode(key.as_bytes())
        .is_ok_and(|raw| raw.len() == 16)
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn upgrade(shared: Arc<Shared>, room: String, query: JoinParams, mut req: Request) -> Response {
    let headers = req.headers();
    let key = headers.get(header::SEC_WEBSOCKET_KEY);
    if !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
        || !key.is_some_and(is_valid_key)
    {
        return refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "bad WebSocket upgrade request\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut resp = refuse(
            &shared,
            StatusCode::UPGRADE_REQUIRED,
            "version",
            "WebSocket version 13 required\n",
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    }
    if !shared.config.allowed_origins.is_empty() {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let allowed = origin
                .to_str()
                .is_ok_and(|o| shared.config.allowed_origins.iter().any(|a| a == o));
            if !allowed {
                return refuse(
                    &shared,
                    StatusCode::FORBIDDEN,
                    "origin",
                    "origin not allowed\n",
                );
            }
        }
    }
    let query = match query {
        Ok(Query(q)) => q,
        Err(_) => {
            let msg = "bad query: use ?nick=NAME&since=SEQ (SEQ a non-negative integer)\n";
            return refuse(&shared, StatusCode::BAD_REQUEST, "bad_request", msg);
        }
    };
    let format = if header_has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, JSON_PROTOCOL) {
        Format::Json
    } else {
        Format::Plain
    };
    let peer_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let ip_slot = match peer_ip {
        Some(ip) => match shared.try_acquire_ip(ip) {
            Some(slot) => Some(slot),
            None => {
                return refuse(
                    &shared,
                    StatusCode::TOO_MANY_REQUESTS,
                    "max_connections_per_ip",
                    "too many connections from your address\n",
                )
            }
        },
        None => None,
    };
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        return refuse(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "max_connections",
            "server full, try again later\n",
        );
    };
    let accept = derive_accept_key(key.map(HeaderValue::as_bytes).unwrap_or_default());
    let on_upgrade = hyper::upgrade::on(&mut req);

    let conn = shared.conn_id();
    let handshake = Handshake {
        room,
        nick: query.nick,
        since: query.since,
        format,
    };
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        let _permit = permit;
        let _ip_slot = ip_slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                task_shared.metrics.connections.inc();
                connection::run(upgraded, task_shared.clone(), conn, handshake).await;
                task_shared.metrics.connections.dec();
            }
            Err(err) => tracing::debug!(%err, "upgrade failed"),
        }
    });

    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if format == Format::Json {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(JSON_PROTOCOL),
        );
    }
    resp
}
