//! Authorization of a connected client: dynsec, then `acl_file`; the first non-deferring answer
//! wins, all deferred denies, and a listener with no ACL source allows everything. Checked on
//! every PUBLISH, SUBSCRIBE and delivery, so it takes no shared lock (see [`ReloadableCopy`]).
//!
//! What is the same for every client of one user on one listener scope — the dynsec handle of
//! the user's ACLs and the `acl_file` copy — is built once and shared ([`UserRights`], kept by
//! [`SharedRights`] while a client of that user is connected): a fleet often logs in as one user,
//! and per client this was ~450 bytes (docs/benchmarks.md, "Per-user and per-subscription data").
//! What depends on the client stays per client ([`ClientRights`]): its client id, which `%c`
//! stands for in dynsec ACLs and `acl_file` patterns, and its dynsec [`AclView`] (the compiled
//! ACLs it last checked against, and its memo of answers, which are valid for its client id
//! only). A change in dynsec or a reload of the `acl_file` reaches every client at its next check
//! exactly as before: each view revalidates against the engine's epochs, and the shared
//! `acl_file` copy against the file's version.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use dynsec::acl::{AccessKind, Decision};
use dynsec::static_files::AclFile;
use dynsec::{AclHandle, AclView, Dynsec};
use parking_lot::Mutex;

use super::reloadable::{Reloadable, ReloadableCopy};
use crate::security::{Access, ClientAuthz};

/// The ACL sources of one listener scope, and the rights of each of its users who have a client
/// connected.
pub(super) struct SharedRights {
    dynsec: Option<Arc<Dynsec>>,
    acl_file: Option<Arc<Reloadable<AclFile>>>,
    /// The answer of a scope with no ACL source, one for all its clients.
    no_source: Arc<NoAclSource>,
    users: Mutex<Users>,
}

#[derive(Default)]
struct Users {
    by_name: HashMap<Arc<str>, Weak<UserRights>>,
    anonymous: Weak<UserRights>,
    /// `by_name` is swept of users with no client left when it grows to this.
    sweep_at: usize,
}

impl SharedRights {
    pub(super) fn new(dynsec: Option<Arc<Dynsec>>, acl_file: Option<Arc<Reloadable<AclFile>>>) -> SharedRights {
        SharedRights { dynsec, acl_file, no_source: Arc::new(NoAclSource), users: Mutex::default() }
    }

    /// The rights of a client that logged in as `username` (`None`: anonymous) with `client_id`.
    pub(super) fn for_client(&self, username: Option<Arc<str>>, client_id: Arc<str>) -> Arc<dyn ClientAuthz> {
        if self.dynsec.is_none() && self.acl_file.is_none() {
            return self.no_source.clone();
        }
        Arc::new(self.client(username, client_id))
    }

    fn client(&self, username: Option<Arc<str>>, client_id: Arc<str>) -> ClientRights {
        let user = self.user(username);
        let view = user.dynsec.as_ref().map(|handle| handle.view(Some(client_id.clone())));
        ClientRights { user, view, client_id }
    }

    /// The shared rights of `username`, made if none of its clients is connected.
    fn user(&self, username: Option<Arc<str>>) -> Arc<UserRights> {
        let mut users = self.users.lock();
        let existing = match &username {
            Some(name) => users.by_name.get(name).and_then(Weak::upgrade),
            None => users.anonymous.upgrade(),
        };
        if let Some(user) = existing {
            return user;
        }
        let user = Arc::new(UserRights {
            dynsec: self.dynsec.as_ref().map(|engine| Arc::new(engine.acl_handle(username.as_deref()))),
            acl_file: self.acl_file.clone().map(ReloadableCopy::new),
            username: username.clone(),
        });
        match username {
            None => users.anonymous = Arc::downgrade(&user),
            Some(name) => {
                if users.by_name.len() >= users.sweep_at {
                    // Amortised: the map holds at most twice the users with a client connected.
                    users.by_name.retain(|_, user| user.strong_count() > 0);
                    users.sweep_at = (users.by_name.len() * 2).max(64);
                }
                users.by_name.insert(name, Arc::downgrade(&user));
            }
        }
        user
    }
}

/// The rights on a listener with no ACL source (neither dynamic security nor `acl_file`), as in
/// mosquitto: every topic may be published, subscribed and received. What still applies there
/// comes from the gate, not from this: `$SYS` and `$share` topics cannot be published, and the
/// `$CONTROL` endpoints of other listeners are neither executed nor delivered
/// ([`crate::security::Security::serves_control`]); see docs/security.md.
struct NoAclSource;

impl ClientAuthz for NoAclSource {
    fn allows(&self, _: Access, _: &str) -> bool {
        true
    }
}

/// What every client of one user on one scope shares (see the module documentation).
struct UserRights {
    dynsec: Option<Arc<AclHandle>>,
    /// The user's copy of the `acl_file` (refreshed after a SIGHUP reload).
    acl_file: Option<ReloadableCopy<AclFile>>,
    username: Option<Arc<str>>,
}

/// One client's authorization: dynsec, then acl_file (docs/compatibility.md §3.1 ACL chain).
struct ClientRights {
    user: Arc<UserRights>,
    /// This client's checks through the user's dynsec handle.
    view: Option<AclView>,
    client_id: Arc<str>,
}

impl ClientAuthz for ClientRights {
    fn allows(&self, access: Access, topic: &str) -> bool {
        let allowed = self.decide(access, topic);
        // (Indexes of `metrics::ACL_TYPES`.)
        let acl_type = match access {
            Access::Publish => 0,
            Access::Receive => 1,
            Access::Subscribe => 2,
            Access::Unsubscribe => 3,
        };
        crate::metrics::SECURITY.acl_decision(acl_type, allowed);
        allowed
    }
}

impl ClientRights {
    fn decide(&self, access: Access, topic: &str) -> bool {
        if let Some(view) = &self.view {
            let kind = match access {
                Access::Publish => AccessKind::Publish,
                Access::Receive => AccessKind::Receive,
                Access::Subscribe => AccessKind::Subscribe,
                Access::Unsubscribe => AccessKind::Unsubscribe,
            };
            match view.check(kind, topic) {
                Decision::Allow => return true,
                Decision::Deny => return false,
                Decision::Defer => {}
            }
        }
        if let Some(file) = &self.user.acl_file {
            return match access {
                // acl_file never restricts subscriptions; delivery is filtered instead.
                Access::Subscribe | Access::Unsubscribe => true,
                Access::Publish | Access::Receive => {
                    let write = access == Access::Publish;
                    file.get().check(self.user.username.as_deref(), &self.client_id, topic, write) == Decision::Allow
                }
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use dynsec::Options;
    use dynsec::commands::Admin;

    use super::*;

    fn engine(dir: &tempfile::TempDir) -> Arc<Dynsec> {
        let path = dir.path().join("ds.json");
        Dynsec::open_or_init(&path, Options::default(), "admin", || "adminpw".into()).unwrap().0
    }

    fn run(engine: &Dynsec, commands: &str) {
        let payload = format!(r##"{{"commands":[{commands}]}}"##);
        let response = engine.handle_control(payload.as_bytes(), Admin::default()).response;
        assert!(!String::from_utf8_lossy(&response).contains("error"), "{}", String::from_utf8_lossy(&response));
    }

    /// Two clients of one user share its rights; a change of the user's role reaches both at
    /// their next check, and `%c` stays each client's own.
    #[test]
    fn clients_of_one_user_share_its_rights_and_both_see_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&dir);
        run(
            &engine,
            r##"{"command":"createRole","rolename":"r","acls":[
                  {"acltype":"publishClientSend","topic":"dev/%c/#","allow":true},
                  {"acltype":"publishClientSend","topic":"fleet/#","allow":true}]},
               {"command":"createClient","username":"fleet","roles":[{"rolename":"r"}]},
               {"command":"createClient","username":"other","roles":[{"rolename":"r"}]}"##,
        );
        let rights = SharedRights::new(Some(engine.clone()), None);
        let one = rights.client(Some("fleet".into()), "d1".into());
        let two = rights.client(Some("fleet".into()), "d2".into());
        let other = rights.client(Some("other".into()), "d3".into());
        assert!(Arc::ptr_eq(&one.user, &two.user), "one user, one set of rights");
        assert!(!Arc::ptr_eq(&one.user, &other.user));

        for _ in 0..2 {
            assert!(one.allows(Access::Publish, "dev/d1/t"));
            assert!(two.allows(Access::Publish, "dev/d2/t"));
            assert!(one.allows(Access::Publish, "fleet/x"));
            assert!(two.allows(Access::Publish, "fleet/x"));
        }
        assert!(!one.allows(Access::Publish, "dev/d2/t"), "`%c` is each client's own");
        assert!(!two.allows(Access::Publish, "dev/d1/t"));

        run(
            &engine,
            r##"{"command":"removeRoleACL","rolename":"r","acltype":"publishClientSend","topic":"fleet/#"},
               {"command":"addRoleACL","rolename":"r","acltype":"publishClientSend","topic":"fleet/#","allow":false}"##,
        );
        assert!(!one.allows(Access::Publish, "fleet/x"), "the change reaches the first client");
        assert!(!two.allows(Access::Publish, "fleet/x"), "and the second");
        assert!(one.allows(Access::Publish, "dev/d1/t"));

        // With every client of the user gone, its rights go too; a new client gets fresh ones
        // that see the same configuration.
        let weak = Arc::downgrade(&one.user);
        drop((one, two));
        assert!(weak.upgrade().is_none());
        let three = rights.client(Some("fleet".into()), "d1".into());
        assert!(!three.allows(Access::Publish, "fleet/x"));
        assert!(three.allows(Access::Publish, "dev/d1/t"));
    }

    #[test]
    fn users_without_clients_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let rights = SharedRights::new(Some(engine(&dir)), None);
        let kept = rights.client(Some("kept".into()), "k".into());
        for i in 0..1000 {
            drop(rights.client(Some(format!("user{i}").into()), "c".into()));
        }
        let users = rights.users.lock();
        assert!(users.by_name.len() <= 128, "{} users remembered", users.by_name.len());
        assert!(users.by_name.get("kept").and_then(Weak::upgrade).is_some_and(|user| Arc::ptr_eq(&user, &kept.user)));
    }
}
