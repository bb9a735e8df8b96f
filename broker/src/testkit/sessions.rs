//! A session registry full of live clients without sockets: each client is a registry entry with
//! a mailbox, claimed as a connection would claim it, so tests and benchmarks can count what a
//! kick reaches among many sessions without opening that many connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::gate::session::{Mail, Sessions};
use crate::routing::null_engine::NullEngine;

/// One client of a [`Crowd`].
pub struct Member {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    pub mailbox: mpsc::UnboundedReceiver<Mail>,
    /// Dropped when the member leaves (a takeover would wait on it).
    _closed: watch::Sender<()>,
}

/// A registry and its live clients.
pub struct Crowd {
    pub sessions: Arc<Sessions<NullEngine>>,
    pub members: Vec<Member>,
}

impl Crowd {
    /// Claims `count` client ids (`client-0`, `client-1`, …), the `i`th with `username_of(i)`.
    pub async fn gather(count: usize, username_of: impl Fn(usize) -> Option<String>) -> Crowd {
        let sessions = Sessions::new(Arc::new(NullEngine::default()), Duration::from_secs(1));
        let mut members = Vec::with_capacity(count);
        for index in 0..count {
            let client_id: Arc<str> = format!("client-{index}").into();
            let username: Option<Arc<str>> = username_of(index).map(Arc::from);
            let (mailbox_tx, mailbox) = mpsc::unbounded_channel();
            let (closed, closed_rx) = watch::channel(());
            let conn_id = index as u64 + 1;
            let peer = std::net::IpAddr::from([127, 0, 0, 1]);
            if sessions.claim(&client_id, conn_id, username.clone(), peer, mailbox_tx, closed_rx, true).await.is_ok() {
                members.push(Member { client_id, username, mailbox, _closed: closed });
            }
        }
        Crowd { sessions, members }
    }
}
