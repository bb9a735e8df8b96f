//! A session registry full of live clients without sockets: each client is a registry entry with
//! a mailbox, claimed as a connection would claim it, so tests and benchmarks can count what a
//! kick reaches among many sessions without opening that many connections.

use std::sync::Arc;
use std::time::Duration;

use crate::gate::session::Sessions;
use crate::routing::null_engine::NullEngine;

/// One client of a [`Crowd`].
pub struct Member {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    /// Dropped when the member leaves (a takeover waits on it).
    pub mailbox: crate::gate::mailbox::MailReceiver,
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
            let (mailbox_tx, mailbox) = crate::gate::mailbox::channel();
            let conn_id = index as u64 + 1;
            let peer = std::net::IpAddr::from([127, 0, 0, 1]);
            if sessions.claim(&client_id, conn_id, username.clone(), peer, mailbox_tx, true).await.is_ok() {
                members.push(Member { client_id, username, mailbox });
            }
        }
        Crowd { sessions, members }
    }
}

/// The registry's kick index, counted among many sessions (the crowd is the fixture: these tests
/// live beside it so that the registry does not depend on its own test support).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::mailbox::{KickReason, Mail};
    use crate::gate::session::Release;
    use crate::security::KickTarget;

    const SESSIONS: usize = 100_000;
    /// One client in this many holds the role.
    const EVERY: usize = 100;

    fn command(engine: &dynsec::Dynsec, commands: &[String]) -> dynsec::commands::Kicks {
        let payload = format!("{{\"commands\":[{}]}}", commands.join(","));
        let admin = dynsec::commands::Admin { client_id: "test".into(), username: Some("admin".into()) };
        let result = engine.handle_control(payload.as_bytes(), admin);
        assert!(
            !String::from_utf8_lossy(&result.response).contains("\"error\""),
            "{}",
            String::from_utf8_lossy(&result.response)
        );
        result.kicks
    }

    /// A role deleted on a broker with 100,000 live sessions kicks exactly the 1,000 clients that
    /// held it, each once, through the registry's username index.
    #[tokio::test]
    async fn deleting_a_role_kicks_its_holders_among_100000_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynamic-security.json");
        let (engine, _) =
            dynsec::Dynsec::open_or_init(&path, dynsec::Options::default(), "admin", || "admin-pw".into()).unwrap();
        command(&engine, &[r#"{"command":"createRole","rolename":"fleet"}"#.to_owned()]);
        let holders: Vec<String> = (0..SESSIONS / EVERY).map(|i| format!("holder-{i}")).collect();
        for batch in holders.chunks(500) {
            let creates: Vec<String> = batch
                .iter()
                .map(|name| {
                    format!(r#"{{"command":"createClient","username":"{name}","roles":[{{"rolename":"fleet"}}]}}"#)
                })
                .collect();
            command(&engine, &creates);
        }

        let mut crowd = Crowd::gather(SESSIONS, |i| {
            Some(if i % EVERY == 0 { format!("holder-{}", i / EVERY) } else { format!("device-{i}") })
        })
        .await;
        assert_eq!(crowd.members.len(), SESSIONS);
        assert_eq!(crowd.sessions.live_count(), SESSIONS);

        let kicks = command(&engine, &[r#"{"command":"deleteRole","rolename":"fleet"}"#.to_owned()]);
        assert_eq!(kicks.users.len(), holders.len());
        let mut kicked = 0;
        for user in &kicks.users {
            kicked += crowd.sessions.kick(&KickTarget::Username(user.as_str().into()));
        }
        assert_eq!(kicked, holders.len());
        for member in &mut crowd.members {
            let holder = member.username.as_deref().is_some_and(|name| name.starts_with("holder-"));
            match member.mailbox.try_recv() {
                Ok(Mail::Kick(KickReason::Admin)) => assert!(holder, "{} was kicked", member.client_id),
                Ok(other) => panic!("unexpected mail {other:?}"),
                Err(_) => assert!(!holder, "{} was not kicked", member.client_id),
            }
            assert!(member.mailbox.try_recv().is_err(), "one kick per connection");
        }
    }

    /// The index follows connections that leave and client ids that change hands.
    #[tokio::test]
    async fn the_kick_index_follows_releases_and_takeovers() {
        let mut crowd = Crowd::gather(3, |i| (i > 0).then(|| "alice".to_owned())).await;
        assert_eq!(crowd.sessions.kick(&KickTarget::Anonymous), 1);
        // client-1 leaves: only client-2 is still alice's.
        let gone = crowd.members[1].client_id.clone();
        crowd.sessions.release(&gone, 2, Release { saved: None, expiry: None, will: None });
        assert_eq!(crowd.sessions.kick(&KickTarget::Username("alice".into())), 1);
        assert!(matches!(crowd.members[2].mailbox.try_recv(), Ok(Mail::Kick(KickReason::Admin))));
        assert!(crowd.members[1].mailbox.try_recv().is_err());
        // bob takes client-2 over (its previous owner never answers: the wait is bounded).
        let (tx, _rx) = crate::gate::mailbox::channel();
        let taken = crowd.members[2].client_id.clone();
        let peer = std::net::IpAddr::from([127, 0, 0, 1]);
        let claim = crowd.sessions.claim(&taken, 99, Some("bob".into()), peer, tx, true).await;
        assert!(claim.is_ok());
        assert_eq!(crowd.sessions.kick(&KickTarget::Username("alice".into())), 0);
        assert_eq!(crowd.sessions.kick(&KickTarget::CredentialsRevoked("bob".into())), 1);
    }
}
