//! Replicated operation: several brokers share one configuration through an ordered log (the
//! broker's `cluster` folder, docs/cluster.md). A control request is *proposed* against the current
//! state without changing it; the proposal's entries go into the log; every node *applies* the
//! log's entries in order. Applying is deterministic because passwords are hashed once, before the
//! proposal ([`Dynsec::prepare`]), and an entry holds the journal's put/delete records (each
//! edited role's final state), never commands to run again.
//!
//! The local file stays a durable copy of what was applied (same journal and snapshot as a
//! single node, docs/store.md); the log is the source of truth.

use std::time::Instant;

use parking_lot::RwLockWriteGuard;

use super::{ControlResult, Dynsec, EngineError, changed_principals};
use crate::commands::{Admin, Envelope, Kicks, Processor, envelope_error, parse_envelope, prepare_passwords};
use crate::file;
use crate::json::Json;
use crate::model::{Affected, Mutation};
use crate::password::PasswordHash;

/// A parsed control request whose passwords are hashed: what may be proposed several times (after
/// a conflict in the log) without hashing again.
#[derive(Clone)]
pub struct Prepared {
    commands: Vec<Json>,
    passwords: Vec<Option<PasswordHash>>,
}

/// What a request would do to the current state.
#[derive(Debug, Default)]
pub struct Proposal {
    /// The reply, as it will be true once the entries are applied.
    pub response: Vec<u8>,
    /// The clients to disconnect once the entries are applied.
    pub kicks: Kicks,
    /// The entries to append to the log (a compact JSON array); `None` when nothing changes.
    pub entries: Option<Vec<u8>>,
}

/// A log entry that is not a journal batch (written by something else, or damaged).
#[derive(Debug, thiserror::Error)]
#[error("the replicated entry is not a dynamic-security batch")]
pub struct NotABatch;

impl Dynsec {
    /// Parses a request and hashes its passwords (over all cores, no lock held). `Err` is the
    /// reply to a request that is refused whole (invalid JSON, too many commands).
    pub fn prepare(&self, payload: &[u8]) -> Result<Prepared, Vec<u8>> {
        match parse_envelope(payload, self.options.limits) {
            Envelope::Invalid(error) => Err(envelope_error(&error)),
            Envelope::Commands(commands) => {
                let passwords = prepare_passwords(&commands, self.options.hash_policy);
                Ok(Prepared { commands, passwords })
            }
        }
    }

    /// Runs `prepared` against the current state and undoes it: the state is unchanged, the
    /// proposal says what the request does. Holds the writer lock meanwhile, so readers never see
    /// the trial.
    pub fn propose(&self, prepared: &Prepared, admin: Admin) -> Proposal {
        let _writer = self.store.lock();
        let mut model = self.model.write();
        let connections = self.connections.read().clone();
        let mut outcome = Processor::new(&mut model, self.options.hash_policy, prepared.passwords.clone(), admin)
            .with_limits(self.options.limits)
            .with_connections(connections.as_deref())
            .run(&prepared.commands);
        let entries = (!outcome.mutations.is_empty()).then(|| crate::store::batch_json(&outcome.mutations, &model));
        let response = std::mem::take(&mut outcome.response);
        let kicks = std::mem::take(&mut outcome.kicks);
        outcome.roll_back(&mut model);
        Proposal { response, kicks, entries }
    }

    /// Answers `prepared` without changing anything: reads answer, every changing command gets
    /// `message` (the log could not take the change).
    pub fn refuse(&self, prepared: &Prepared, admin: Admin, message: String) -> ControlResult {
        let _writer = self.store.lock();
        let mut model = self.model.write();
        let connections = self.connections.read().clone();
        let outcome = Processor::new(&mut model, self.options.hash_policy, prepared.passwords.clone(), admin)
            .with_limits(self.options.limits)
            .with_connections(connections.as_deref())
            .refuse_changes(message)
            .run(&prepared.commands);
        ControlResult { response: outcome.response, kicks: outcome.kicks }
    }

    /// Applies one log entry (a [`Proposal::entries`] array) at log position `change_index`, which
    /// becomes the configuration's `changeIndex`. The local copy is written as a single node
    /// writes it; if that fails the change still applies in memory (the log keeps it, and a
    /// restart reads it from there).
    pub fn apply_entries(&self, entries: &[u8], change_index: i64) -> Result<(), NotABatch> {
        let mut mutations = crate::store::batch_from_json(entries).ok_or(NotABatch)?;
        mutations.push(Mutation::SetChangeIndex(change_index));
        let mut store = self.store.lock();
        let mut model = self.model.write();
        if let Err(e) = store.prepare_for_write(&model) {
            tracing::warn!("dynsec: the local copy is not current (the cluster log keeps every change): {e}");
        }
        let mut affected = Affected::default();
        for m in &mutations {
            affected.merge(model.apply(m.clone()).1);
        }
        if let Err(e) = store.commit(&mutations, &model) {
            tracing::warn!("dynsec: the local copy is not current (the cluster log keeps every change): {e}");
        }
        self.invalidate(&affected);
        *self.last_change.lock() = Some(Instant::now());
        // Readers (logins, ACL compiles) go on while a due snapshot is written.
        store.compact_if_due(&RwLockWriteGuard::downgrade(model));
        Ok(())
    }

    /// Replaces the whole configuration with a snapshot from the log (mosquitto's file format) at
    /// log position `change_index`; returns whom the difference concerns.
    pub fn install_snapshot(&self, snapshot: &[u8], change_index: i64) -> Result<Kicks, EngineError> {
        let path = self.path();
        let (mut loaded, warnings) =
            file::load(snapshot).map_err(|source| EngineError::Format { path: path.clone(), source })?;
        for w in warnings {
            tracing::warn!("cluster snapshot: {}", w.0);
        }
        loaded.change_index = change_index;
        let mut store = self.store.lock();
        let mut model = self.model.write();
        let kicks = changed_principals(&model, &loaded);
        if let Err(e) = store.compact(&loaded) {
            tracing::warn!("dynsec: the local copy is not current (the cluster log keeps every change): {e}");
        }
        *model = loaded;
        self.invalidate_everything();
        Ok(kicks)
    }

    /// The whole configuration in mosquitto's file format (a snapshot for the log).
    pub fn export(&self) -> Vec<u8> {
        file::save(&self.model.read())
    }

    /// The configuration's `changeIndex` (in a cluster: the log position last applied).
    pub fn change_index(&self) -> i64 {
        self.model.read().change_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;
    use crate::password::HashPolicy;

    fn engine(dir: &std::path::Path, name: &str) -> std::sync::Arc<Dynsec> {
        let options = Options { hash_policy: HashPolicy::Pbkdf2Sha512 { iterations: 1 }, ..Options::default() };
        Dynsec::open_or_init(&dir.join(name), options, "admin", || "pw".into()).unwrap().0
    }

    #[test]
    fn a_proposal_changes_nothing_and_its_entries_give_every_node_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (engine(dir.path(), "a.json"), engine(dir.path(), "b.json"));
        // Both start from the same state, as nodes do after loading the log's snapshot.
        let seed = first.export();
        first.install_snapshot(&seed, 1).unwrap();
        second.install_snapshot(&seed, 1).unwrap();
        let before = first.with_model(Clone::clone);
        let request = br#"{"commands":[
            {"command":"createRole","rolename":"r"},
            {"command":"addRoleACL","rolename":"r","acltype":"publishClientSend","topic":"a/#","allow":true},
            {"command":"createClient","username":"u","password":"secret","roles":[{"rolename":"r"}]},
            {"command":"getDetails"}]}"#;
        let prepared = first.prepare(request).unwrap();
        let proposal = first.propose(&prepared, Admin::default());
        assert_eq!(first.with_model(Clone::clone), before, "proposing changes nothing");
        let entries = proposal.entries.expect("the request changes something");
        first.apply_entries(&entries, 2).unwrap();
        second.apply_entries(&entries, 2).unwrap();
        let (a, b) = (first.with_model(Clone::clone), second.with_model(Clone::clone));
        assert_eq!(a, b, "applying is deterministic (the password was hashed once, before)");
        assert_eq!(a.change_index, 2, "the log position is the changeIndex");
        assert!(a.clients["u"].password.as_ref().is_some_and(|p| p.verify(b"secret")));
        assert_eq!(second.authenticate("u", Some(b"secret"), "c"), crate::AuthResult::Allow);
        // A read-only request proposes nothing; a refused one answers with the reason.
        let read = first.prepare(br#"{"commands":[{"command":"listClients"}]}"#).unwrap();
        assert!(first.propose(&read, Admin::default()).entries.is_none());
        let another = first.prepare(br#"{"commands":[{"command":"createClient","username":"v"}]}"#).unwrap();
        let refused = first.refuse(&another, Admin::default(), "Cluster error: test".into());
        assert!(first.with_model(|m| !m.clients.contains_key("v")));
        assert!(String::from_utf8_lossy(&refused.response).contains("Cluster error: test"));
        assert!(apply_garbage(&second).is_err());
    }

    fn apply_garbage(engine: &Dynsec) -> Result<(), NotABatch> {
        engine.apply_entries(b"not json", 3)
    }
}
