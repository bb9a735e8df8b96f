//! The websocket as the byte stream the connection code reads and writes: the payloads of binary
//! messages are concatenated (an MQTT packet may span messages, a message may hold several
//! packets), each write becomes one binary message, ping and pong are tungstenite's business,
//! a close or the end of the socket is end of file, and a text message is an error (MQTT over
//! websockets is binary only). Shutting down sends a websocket close.
//!
//! [`PreLoginBudget`] sits under the websocket: until the broker first writes to the client (its
//! CONNACK), it lets only so many bytes be read from the socket, as the TCP path reads at most
//! `gate_connect_max_size` before a login is decided; tungstenite would otherwise buffer a whole
//! message of up to `max_packet_size` for a client nobody has authenticated yet.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// A websocket read and written as bytes.
pub(crate) struct ByteStream<S> {
    websocket: WebSocketStream<PreLoginBudget<S>>,
    /// What is left of the last binary message.
    unread: Bytes,
    /// The peer closed, or the socket ended: reads return end of file from now on.
    finished: bool,
}

impl<S> ByteStream<S> {
    pub(crate) fn new(websocket: WebSocketStream<PreLoginBudget<S>>) -> Self {
        ByteStream { websocket, unread: Bytes::new(), finished: false }
    }
}

fn io_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ByteStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.unread.is_empty() {
                let take = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread.split_to(take));
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.websocket).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => this.unread = payload,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text websocket message: MQTT is carried in binary messages",
                    )));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => this.finished = true,
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                    this.finished = true;
                }
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ByteStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(Pin::new(&mut this.websocket).poll_ready(cx)).map_err(io_error)?;
        this.websocket.get_mut().lift();
        Pin::new(&mut this.websocket).start_send(Message::Binary(Bytes::copy_from_slice(buf))).map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.websocket).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.websocket).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(error) => Poll::Ready(Err(io_error(error))),
        }
    }
}

/// The raw socket under the websocket, with a read allowance until [`PreLoginBudget::lift`].
pub(crate) struct PreLoginBudget<S> {
    inner: S,
    /// Bytes that may still be read; `None` once lifted.
    left: Option<usize>,
}

impl<S> PreLoginBudget<S> {
    pub(crate) fn new(inner: S, allowance: usize) -> Self {
        PreLoginBudget { inner, left: Some(allowance) }
    }

    /// The broker answered the client: from now on `max_packet_size` (enforced by the
    /// connection and by the websocket's message limit) is the only bound.
    fn lift(&mut self) {
        self.left = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreLoginBudget<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(left) = this.left else { return Pin::new(&mut this.inner).poll_read(cx, buf) };
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "websocket client sent more than gate_connect_max_size allows before its login was decided",
            )));
        }
        let read = if buf.remaining() <= left {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            buf.filled().len() - before
        } else {
            // Less is allowed than asked for: read through a smaller buffer.
            let mut chunk = [0u8; 1024];
            let mut limited = ReadBuf::new(&mut chunk[..left.min(1024)]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
            buf.put_slice(limited.filled());
            limited.filled().len()
        };
        this.left = Some(left - read);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreLoginBudget<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
