//! An HTTP answer that ends a websockets listener's exchange (an error, or the head of a file of
//! `http_dir`), and writing it: bounded in time, since the client being turned away may not be
//! reading, and followed by a short drain of what the client still sends.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::info;

/// Upper bound for writing an HTTP answer to a client that is being turned away.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// An HTTP answer that ends the exchange.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    /// Extra header lines, each ending in CRLF.
    pub headers: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

impl Answer {
    /// An error answer whose text body says what was wrong.
    pub fn error(status: u16, why: &str) -> Answer {
        Answer {
            status,
            headers: String::new(),
            body: format!("{status} {}: {why}\n", reason_phrase(status)).into_bytes(),
            content_type: "text/plain; charset=utf-8",
        }
    }

    pub fn with_header(mut self, line: &str) -> Answer {
        self.headers.push_str(line);
        self.headers.push_str("\r\n");
        self
    }

    /// The status line and headers (the body follows them unless the request was HEAD).
    pub fn head(&self, content_length: u64) -> String {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {content_length}\r\n\
             X-Content-Type-Options: nosniff\r\nConnection: close\r\n{}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.headers
        )
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Error",
    }
}

/// Writes an answer and closes the socket (bounded: the client may not be reading).
pub(super) async fn send<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, answer: &Answer, with_body: bool) {
    let mut bytes = answer.head(answer.body.len() as u64).into_bytes();
    if with_body {
        bytes.extend_from_slice(&answer.body);
    }
    let written = tokio::time::timeout(ANSWER_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        info!(status = answer.status, "websocket listener: the HTTP answer could not be written");
        return;
    }
    linger(stream).await;
}

/// Reads (and drops) what the client still sends after our answer, for a bounded time and
/// amount: closing a socket with unread input resets the connection, and the client could lose
/// the answer (a 431 comes while the client is still sending its oversized head).
async fn linger<S: AsyncRead + Unpin>(stream: &mut S) {
    const AT_MOST: usize = 64 * 1024;
    let mut chunk = [0u8; 4096];
    let mut drained = 0;
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while drained < AT_MOST {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    })
    .await;
}
