//! Authorization of a connected client: dynsec, then `acl_file`; the first non-deferring answer
//! wins, all deferred denies, and a listener with no ACL source allows everything. Checked on
//! every PUBLISH, SUBSCRIBE and delivery, so it takes no shared lock (see [`ReloadableCopy`]).

use std::sync::Arc;

use dynsec::acl::{AccessKind, Decision};
use dynsec::static_files::AclFile;
use dynsec::{AclHandle, Dynsec};

use super::reloadable::{Reloadable, ReloadableCopy};
use crate::security::{Access, ClientAuthz};

pub(super) fn build_authz(
    dynsec: Option<&Arc<Dynsec>>,
    acl_file: Option<Arc<Reloadable<AclFile>>>,
    username: Option<Arc<str>>,
    client_id: Arc<str>,
) -> Arc<dyn ClientAuthz> {
    if dynsec.is_none() && acl_file.is_none() {
        return Arc::new(NoAclSource);
    }
    let dynsec = dynsec.map(|engine| engine.acl_handle(username.as_deref()));
    let acl_file = acl_file.map(ReloadableCopy::new);
    Arc::new(ChainAuthz { dynsec, acl_file, username, client_id })
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

/// Per-connection authorization: dynsec, then acl_file (docs/compatibility.md §3.1 ACL chain).
struct ChainAuthz {
    dynsec: Option<AclHandle>,
    /// This connection's copy of the `acl_file` (refreshed after a SIGHUP reload).
    acl_file: Option<ReloadableCopy<AclFile>>,
    username: Option<Arc<str>>,
    client_id: Arc<str>,
}

impl ClientAuthz for ChainAuthz {
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

impl ChainAuthz {
    fn decide(&self, access: Access, topic: &str) -> bool {
        if let Some(handle) = &self.dynsec {
            let kind = match access {
                Access::Publish => AccessKind::Publish,
                Access::Receive => AccessKind::Receive,
                Access::Subscribe => AccessKind::Subscribe,
                Access::Unsubscribe => AccessKind::Unsubscribe,
            };
            match handle.check(kind, topic, Some(&self.client_id)) {
                Decision::Allow => return true,
                Decision::Deny => return false,
                Decision::Defer => {}
            }
        }
        if let Some(file) = &self.acl_file {
            return match access {
                // acl_file never restricts subscriptions; delivery is filtered instead.
                Access::Subscribe | Access::Unsubscribe => true,
                Access::Publish | Access::Receive => {
                    let write = access == Access::Publish;
                    file.get().check(self.username.as_deref(), &self.client_id, topic, write) == Decision::Allow
                }
            };
        }
        false
    }
}
