//! The HTTP side of a websockets listener: reading the request head (bounded in size and time),
//! checking an upgrade request (RFC 6455 §4.2.1, the MQTT subprotocols, `websockets_origin`),
//! answering 101, or choosing the plain HTTP answer (a file of `http_dir`, an error) after which
//! the socket is closed. Nothing here trusts the request: every problem becomes an HTTP status.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{debug, info};

use super::answer::{ANSWER_TIMEOUT, Answer, send};
use super::static_files;
use crate::config::ListenerConfig;
use crate::logging::client_text;

/// Subprotocols a client may ask for, in our order of preference when it offers several:
/// `mqtt` (MQTT 3.1.1 and 5) and `mqttv3.1` (what MQTT 3.1 clients send).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// More header lines than any browser sends; beyond it the answer is 431.
const MAX_HEADERS: usize = 64;

/// Bounds of the request head.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// `websockets_headers_size`.
    pub head_size: usize,
    /// `gate_connect_timeout`: the whole head must arrive within it.
    pub timeout: Duration,
}

/// How the HTTP exchange ended.
pub(super) enum Outcome {
    /// 101 was sent: websocket frames follow (`early_frames`: bytes the client sent right after
    /// its head, already read).
    Upgraded { subprotocol: &'static str, early_frames: Vec<u8> },
    /// A plain HTTP answer was sent (or the client left): close the socket.
    Done,
}

/// One request head, owned.
#[derive(Debug)]
pub(super) struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names lower-cased, values as sent.
    headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// Every value of header `name` (lower case), split at commas, trimmed, non-empty.
    fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key == name)
            .flat_map(|(_, value)| value.split(|&byte| byte == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|token| !token.is_empty())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_slice())
    }
}

/// Logs why an HTTP request was turned away (once per socket).
fn log_refusal(peer: SocketAddr, status: u16, why: &str) {
    info!(%peer, status, "websocket listener: HTTP request answered with an error: {why}");
}

/// Reads the request and answers it: an upgrade, a file, or an error.
pub(super) async fn handshake<S>(stream: &mut S, peer: SocketAddr, listener: &ListenerConfig, limits: Limits) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (request, early_frames) = match tokio::time::timeout(limits.timeout, read_head(stream, limits.head_size)).await
    {
        Ok(Ok(Some(read))) => read,
        Ok(Ok(None)) => {
            debug!(%peer, "websocket listener: the client left before completing its HTTP request");
            return Outcome::Done;
        }
        Ok(Err(answer)) => {
            log_refusal(peer, answer.status, String::from_utf8_lossy(&answer.body).trim_end());
            send(stream, &answer, true).await;
            return Outcome::Done;
        }
        Err(_) => {
            let answer = Answer::error(408, "no complete HTTP request within gate_connect_timeout");
            log_refusal(peer, 408, "HTTP request timed out");
            send(stream, &answer, true).await;
            return Outcome::Done;
        }
    };
    let head_only = request.method == "HEAD";
    let answer = if is_upgrade(&request) {
        match accept(&request, listener) {
            Ok((subprotocol, response)) => {
                let written = tokio::time::timeout(ANSWER_TIMEOUT, async {
                    stream.write_all(response.as_bytes()).await?;
                    stream.flush().await
                })
                .await;
                return match written {
                    Ok(Ok(())) => Outcome::Upgraded { subprotocol, early_frames },
                    _ => Outcome::Done,
                };
            }
            Err(answer) => answer,
        }
    } else if request.method != "GET" && request.method != "HEAD" {
        Answer::error(405, "only GET and HEAD are served here").with_header("Allow: GET, HEAD")
    } else if let Some(dir) = &listener.http_dir {
        match static_files::open(dir, &request.target).await {
            Ok(file) => {
                // The path only: a query may carry anything, credentials included.
                let path = request.target.split(['?', '#']).next().unwrap_or_default();
                debug!(%peer, path = %client_text(path), "websocket listener: serving a file of http_dir");
                static_files::send(stream, file, head_only).await;
                return Outcome::Done;
            }
            Err(answer) => answer,
        }
    } else {
        Answer::error(426, "this is an MQTT over websockets listener (no http_dir configured)")
            .with_header("Upgrade: websocket")
            .with_header("Connection: Upgrade")
    };
    log_refusal(peer, answer.status, String::from_utf8_lossy(&answer.body).trim_end());
    send(stream, &answer, !head_only).await;
    Outcome::Done
}

/// Reads until the end of the request head. `Ok(None)`: the client closed first.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, limit: usize) -> Result<Option<(Request, Vec<u8>)>, Answer> {
    let mut buf = Vec::with_capacity(limit.min(1024));
    let mut chunk = [0u8; 1024];
    loop {
        let room = limit - buf.len();
        if room == 0 {
            return Err(Answer::error(431, &format!("request head larger than websockets_headers_size ({limit})")));
        }
        let want = room.min(chunk.len());
        let read = match stream.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(read) => read,
        };
        buf.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(head_len)) => {
                let request = Request {
                    method: parsed.method.unwrap_or_default().to_owned(),
                    target: parsed.path.unwrap_or_default().to_owned(),
                    minor_version: parsed.version.unwrap_or_default(),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|header| (header.name.to_ascii_lowercase(), header.value.to_vec()))
                        .collect(),
                };
                return Ok(Some((request, buf[head_len..].to_vec())));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Answer::error(431, &format!("more than {MAX_HEADERS} header lines")));
            }
            Err(error) => return Err(Answer::error(400, &format!("malformed HTTP request ({error})"))),
        }
    }
}

/// The client asks for a websocket (`Upgrade: websocket`); what else it must send is checked by
/// [`accept`], so that a broken upgrade gets a 400 rather than a file.
fn is_upgrade(request: &Request) -> bool {
    request.has_token("upgrade", "websocket")
}

/// Checks an upgrade request; on success the subprotocol chosen and the 101 response.
fn accept(request: &Request, listener: &ListenerConfig) -> Result<(&'static str, String), Answer> {
    if request.method != "GET" {
        return Err(Answer::error(405, "a websocket upgrade must be a GET").with_header("Allow: GET, HEAD"));
    }
    if request.minor_version < 1 {
        return Err(Answer::error(400, "a websocket upgrade needs HTTP/1.1"));
    }
    if !request.has_token("connection", "upgrade") {
        return Err(Answer::error(400, "a websocket upgrade needs \"Connection: Upgrade\""));
    }
    if request.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(
            Answer::error(426, "only websocket version 13 is supported").with_header("Sec-WebSocket-Version: 13")
        );
    }
    let key = request.header("sec-websocket-key").map(<[u8]>::trim_ascii).unwrap_or_default();
    if !is_websocket_key(key) {
        return Err(Answer::error(400, "missing or invalid Sec-WebSocket-Key"));
    }
    if !listener.websockets_origins.is_empty() {
        let origin = request.header("origin").unwrap_or_default();
        if !listener.websockets_origins.iter().any(|allowed| allowed.as_bytes() == origin) {
            return Err(Answer::error(403, "origin not allowed by websockets_origin"));
        }
    }
    let offered: Vec<&[u8]> = request.tokens("sec-websocket-protocol").collect();
    let Some(subprotocol) =
        offered.iter().find_map(|offer| SUBPROTOCOLS.into_iter().find(|name| name.as_bytes() == *offer))
    else {
        return Err(Answer::error(400, "the client must ask for websocket subprotocol mqtt (or mqttv3.1)"));
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n",
        derive_accept_key(key)
    );
    Ok((subprotocol, response))
}

/// RFC 6455: the key is 16 random bytes in base64, so 24 characters ending in `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|&byte| byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(head: &str) -> Request {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(head.as_bytes()).unwrap().is_complete());
        Request {
            method: parsed.method.unwrap().to_owned(),
            target: parsed.path.unwrap().to_owned(),
            minor_version: parsed.version.unwrap(),
            headers: parsed.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect(),
        }
    }

    fn upgrade(extra: &str) -> String {
        format!(
            "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    fn listener() -> ListenerConfig {
        crate::config::Config::from_text("t.conf", "listener 1\nprotocol websockets\n").unwrap().listeners[0].clone()
    }

    #[test]
    fn the_first_mqtt_subprotocol_offered_is_chosen() {
        for (offer, chosen) in [
            ("Sec-WebSocket-Protocol: mqtt\r\n", "mqtt"),
            ("Sec-WebSocket-Protocol: mqttv3.1\r\n", "mqttv3.1"),
            ("Sec-WebSocket-Protocol: chat, mqttv3.1, mqtt\r\n", "mqttv3.1"),
            ("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: mqtt\r\n", "mqtt"),
        ] {
            let (subprotocol, response) = accept(&request(&upgrade(offer)), &listener()).unwrap_or_else(|a| {
                panic!("{offer}: {}", String::from_utf8_lossy(&a.body));
            });
            assert_eq!(subprotocol, chosen);
            // RFC 6455 §1.3's example key and answer.
            assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{response}");
        }
    }

    #[test]
    fn broken_upgrades_get_an_http_error() {
        let good = upgrade("Sec-WebSocket-Protocol: mqtt\r\n");
        for (head, status) in [
            (upgrade(""), 400),
            (upgrade("Sec-WebSocket-Protocol: chat\r\n"), 400),
            (good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), 426),
            (good.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400),
            (good.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (good.replace("HTTP/1.1", "HTTP/1.0"), 400),
            (good.replace("GET", "POST"), 405),
        ] {
            let answer = accept(&request(&head), &listener()).expect_err(&head);
            assert_eq!(answer.status, status, "{head}");
        }
        let mut listener = listener();
        listener.websockets_origins.push("http://good.example".into());
        let answer = accept(&request(&good), &listener).err().unwrap();
        assert_eq!(answer.status, 403);
        let allowed = request(&upgrade("Sec-WebSocket-Protocol: mqtt\r\nOrigin: http://good.example\r\n"));
        assert!(accept(&allowed, &listener).is_ok());
    }

    #[tokio::test]
    async fn oversized_and_malformed_heads_are_refused() {
        let long = format!("GET / HTTP/1.1\r\nCookie: {}\r\n\r\n", "a".repeat(5000));
        let answer = read_head(&mut long.as_bytes(), 4096).await.err().unwrap();
        assert_eq!(answer.status, 431);
        let answer = read_head(&mut &b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"[..], 4096).await.err().unwrap();
        assert_eq!(answer.status, 400);
        let many: String = (0..100).map(|n| format!("X-{n}: y\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(read_head(&mut head.as_bytes(), 8192).await.err().unwrap().status, 431);
        assert!(read_head(&mut &b"GET / HTTP/1.1\r\n"[..], 4096).await.unwrap().is_none());
        let (request, early) =
            read_head(&mut &b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n\x82\x00"[..], 4096).await.unwrap().unwrap();
        assert_eq!((request.target.as_str(), early.as_slice()), ("/x", &b"\x82\x00"[..]));
    }
}
