//! [`Dynsec`]: one live dynamic-security configuration — the model, its durable store, the
//! compiled-ACL cache and the credential cache — with the operations a broker needs: run control
//! requests, authenticate, authorise, notice external edits of the file, flush on shutdown.
//!
//! Locking: the store mutex is the writer lock (every change takes it first), the model `RwLock`
//! is held for writing only while a batch is applied and made durable, and readers (credential
//! lookups, ACL compilation) take it for reading. The authorisation hot path takes neither: a
//! principal's [`AclHandle`] is shared by its connections, each of which checks through its own
//! [`AclView`]: its client id and an `Arc` of the principal's compiled ACLs, revalidated with two
//! atomic loads of epochs that the engine bumps, for exactly the principals a change affected,
//! before it releases the write lock. Compiled rules are shared by the principals that walk the
//! same roles ([`crate::acl::RoleRules`], kept by role walk for one model generation).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use sha2::{Digest, Sha256};

use crate::acl::{AccessKind, CompiledAcl, Decision, PrincipalKey, RoleRules, role_walk};
use crate::commands::{Admin, Envelope, Kicks, Limits, Processor, envelope_error, parse_envelope, prepare_passwords};
use crate::connections::ConnectionDirectory;
use crate::file::{self, LoadWarning};
use crate::init::init_model;
use crate::model::{Affected, Model};
use crate::password::{HashPolicy, PasswordHash};
use crate::store::{Store, StoreError};

mod replicated;
pub use replicated::{Prepared, Proposal};

/// Tunables of a dynsec engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// How new passwords are hashed.
    pub hash_policy: HashPolicy,
    /// The snapshot is rewritten once no change has arrived for this long (if the journal holds
    /// anything).
    pub snapshot_idle: Duration,
    /// How long a successful password verification is remembered (invalidated at once by any
    /// change to the client). Zero disables the cache.
    pub auth_cache_ttl: Duration,
    /// Caps on one control message (docs/store.md, "Limits").
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hash_policy: HashPolicy::default(),
            snapshot_idle: Duration::from_secs(1),
            auth_cache_ttl: Duration::from_secs(60),
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: file::FileError },
    #[error("cannot hash the admin password: {0}")]
    Password(#[from] crate::password::PasswordError),
    /// New passwords would be hashed beyond what loading accepts (docs/store.md, "Limits").
    #[error("password hashing settings: {0}")]
    HashPolicy(crate::password::PasswordError),
}

/// Outcome of opening a configuration.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub warnings: Vec<LoadWarning>,
    /// Journal records replayed (changes acknowledged after the last snapshot).
    pub replayed: usize,
    /// Set when the file did not exist and was created with this admin username.
    pub created_admin: Option<String>,
}

/// The reply to publish and the clients to disconnect afterwards.
#[derive(Debug, Clone, Default)]
pub struct ControlResult {
    pub response: Vec<u8>,
    pub kicks: Kicks,
}

/// dynsec's answer to a CONNECT (docs/compatibility.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Allow,
    Deny,
    /// Not dynsec's call: unknown user, no password sent, or a client without a password.
    Defer,
}

/// A compiled ACL and the (global, principal) epochs it was compiled at.
type Stamped = ((u64, u64), Arc<CompiledAcl>);

/// Per-principal invalidation state shared by all handles of that principal.
#[derive(Default)]
struct Slot {
    epoch: AtomicU64,
    compiled: Mutex<Option<Stamped>>,
}

struct CachedVerification {
    digest: [u8; 32],
    at: Instant,
}

pub struct Dynsec {
    model: RwLock<Model>,
    store: Mutex<Store>,
    options: Options,
    global_epoch: AtomicU64,
    slots: Mutex<HashMap<PrincipalKey, Weak<Slot>>>,
    /// Compiled rules by role walk, shared by the principals that walk the same roles
    /// ([`crate::acl::RoleRules`]); each entry valid for the `rules_generation` it was compiled at.
    shared_rules: Mutex<SharedRules>,
    /// Bumped by every change applied to the model (before the write lock is released).
    rules_generation: AtomicU64,
    auth_cache: Mutex<HashMap<String, CachedVerification>>,
    /// Bumped whenever credentials may have changed; a verification started before a bump is
    /// not cached.
    auth_generation: AtomicU64,
    /// Random per-process key so cached digests reveal nothing useful.
    auth_key: [u8; 32],
    last_change: Mutex<Option<Instant>>,
    /// The broker's live connections, shown by getClient / verbose listClients once attached.
    connections: RwLock<Option<Arc<dyn ConnectionDirectory>>>,
}

impl Dynsec {
    /// Opens the configuration at `path`; if the file does not exist, creates it with an admin
    /// client `admin_username` whose password is `admin_password` (as `dynsec init` would).
    pub fn open_or_init(
        path: &Path,
        options: Options,
        admin_username: &str,
        admin_password: impl FnOnce() -> String,
    ) -> Result<(Arc<Dynsec>, OpenReport), EngineError> {
        options.hash_policy.check().map_err(EngineError::HashPolicy)?;
        if !path.exists() {
            let password = admin_password();
            let model = init_model(admin_username, PasswordHash::new(password.as_bytes(), options.hash_policy)?);
            let store = Store::create(path, &model)?;
            let report = OpenReport { created_admin: Some(admin_username.to_owned()), ..Default::default() };
            return Ok((Self::new(model, store, options), report));
        }
        Self::open(path, options)
    }

    /// Opens an existing configuration (snapshot plus journal).
    pub fn open(path: &Path, options: Options) -> Result<(Arc<Dynsec>, OpenReport), EngineError> {
        options.hash_policy.check().map_err(EngineError::HashPolicy)?;
        let loaded = Store::open(path)?;
        let report = OpenReport { warnings: loaded.warnings, replayed: loaded.replayed, created_admin: None };
        Ok((Self::new(loaded.model, loaded.store, options), report))
    }

    fn new(model: Model, store: Store, options: Options) -> Arc<Dynsec> {
        let mut auth_key = [0u8; 32];
        if getrandom::fill(&mut auth_key).is_err() {
            // Without randomness the cache would be keyed predictably; don't cache at all.
            tracing::warn!("no random bytes for the credential cache key; caching disabled");
        }
        let options = Options {
            auth_cache_ttl: if auth_key == [0; 32] { Duration::ZERO } else { options.auth_cache_ttl },
            ..options
        };
        Arc::new(Dynsec {
            model: RwLock::new(model),
            store: Mutex::new(store),
            options,
            global_epoch: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
            shared_rules: Mutex::new(SharedRules::default()),
            rules_generation: AtomicU64::new(0),
            auth_cache: Mutex::new(HashMap::new()),
            auth_generation: AtomicU64::new(0),
            auth_key,
            last_change: Mutex::new(None),
            connections: RwLock::new(None),
        })
    }

    /// Lets getClient and verbose listClients report the live connections `directory` knows of
    /// (mosquitto 2.1.2's `connections`); a broker attaches its own at start.
    pub fn attach_connections(&self, directory: Arc<dyn ConnectionDirectory>) {
        *self.connections.write() = Some(directory);
    }

    pub fn path(&self) -> PathBuf {
        self.store.lock().path().to_owned()
    }

    /// Read access to the current model (for tools and tests). Do not hold it long.
    pub fn with_model<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&self.model.read())
    }

    /// Runs one `$CONTROL/dynamic-security/v1` payload. Returns once every change in it is durable;
    /// if persisting fails, nothing of it is kept and each changing command reports the error.
    pub fn handle_control(&self, payload: &[u8], admin: Admin) -> ControlResult {
        // The command count is checked here, before any password of the message is hashed.
        let commands = match parse_envelope(payload, self.options.limits) {
            Envelope::Invalid(error) => {
                return ControlResult { response: envelope_error(&error), kicks: Kicks::default() };
            }
            Envelope::Commands(commands) => commands,
        };
        // The expensive part, outside every lock and over all cores.
        let prepared = prepare_passwords(&commands, self.options.hash_policy);
        let mut store = self.store.lock();
        let mut model = self.model.write();
        if let Err(e) = store.prepare_for_write(&model) {
            return self.refuse_changes(&mut model, &commands, prepared, admin, &e);
        }
        let connections = self.connections.read().clone();
        let mut outcome = Processor::new(&mut model, self.options.hash_policy, prepared.clone(), admin.clone())
            .with_limits(self.options.limits)
            .with_connections(connections.as_deref())
            .run(&commands);
        if !outcome.mutations.is_empty() {
            match store.commit(&outcome.mutations, &model) {
                Ok(()) => {
                    self.invalidate(&outcome.affected);
                    *self.last_change.lock() = Some(Instant::now());
                }
                Err(e) => {
                    outcome.roll_back(&mut model);
                    return self.refuse_changes(&mut model, &commands, prepared, admin, &e);
                }
            }
        }
        // Readers (logins, ACL compiles) go on while a due snapshot is written.
        store.compact_if_due(&RwLockWriteGuard::downgrade(model));
        ControlResult { response: outcome.response, kicks: outcome.kicks }
    }

    /// Answers a batch whose changes cannot be saved: reads still answer, every command that would
    /// change something gets the error, the model stays as it was.
    fn refuse_changes(
        &self,
        model: &mut Model,
        commands: &[crate::json::Json],
        prepared: Vec<Option<PasswordHash>>,
        admin: Admin,
        error: &StoreError,
    ) -> ControlResult {
        tracing::error!("dynsec: could not save configuration, changes refused: {error}");
        let message = format!("Internal error: configuration could not be saved ({error})");
        let connections = self.connections.read().clone();
        let outcome = Processor::new(model, self.options.hash_policy, prepared, admin)
            .with_limits(self.options.limits)
            .with_connections(connections.as_deref())
            .refuse_changes(message)
            .run(commands);
        ControlResult { response: outcome.response, kicks: outcome.kicks }
    }

    /// Bumps the epochs of everyone `affected`; must run before the model write lock is released.
    fn invalidate(&self, affected: &Affected) {
        // Every change, even one that concerns nobody (a role no principal holds): rules compiled
        // before it are not handed to anyone compiling after it.
        self.rules_generation.fetch_add(1, Ordering::AcqRel);
        if affected.is_empty() {
            return;
        }
        self.auth_generation.fetch_add(1, Ordering::AcqRel);
        if affected.all {
            self.global_epoch.fetch_add(1, Ordering::AcqRel);
            self.auth_cache.lock().clear();
            return;
        }
        {
            let mut cache = self.auth_cache.lock();
            for user in &affected.users {
                cache.remove(user);
            }
        }
        let mut slots = self.slots.lock();
        slots.retain(|_, slot| slot.strong_count() > 0);
        let bump = |key: PrincipalKey| {
            if let Some(slot) = slots.get(&key).and_then(Weak::upgrade) {
                slot.epoch.fetch_add(1, Ordering::AcqRel);
            }
        };
        if affected.anonymous {
            bump(PrincipalKey::Anonymous);
        }
        for user in &affected.users {
            bump(PrincipalKey::User(user.clone()));
        }
    }

    fn invalidate_everything(&self) {
        self.invalidate(&Affected { all: true, ..Default::default() });
    }

    /// The dynsec basic-auth hook. Blocking: it may compute a password hash, so call it from a
    /// blocking pool, never from an async task.
    pub fn authenticate(&self, username: &str, password: Option<&[u8]>, client_id: &str) -> AuthResult {
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return AuthResult::Defer;
        };
        let generation = self.auth_generation.load(Ordering::Acquire);
        let hash = {
            let model = self.model.read();
            let Some(client) = model.clients.get(username) else {
                return AuthResult::Defer;
            };
            if client.disabled {
                return AuthResult::Deny;
            }
            if client.clientid.as_deref().is_some_and(|bound| bound != client_id) {
                return AuthResult::Deny;
            }
            match &client.password {
                Some(hash) => hash.clone(),
                None => return AuthResult::Defer,
            }
        };
        let digest = self.credential_digest(username, password);
        let ttl = self.options.auth_cache_ttl;
        if !ttl.is_zero()
            && let Some(cached) = self.auth_cache.lock().get(username)
            && cached.digest == digest
            && cached.at.elapsed() < ttl
        {
            return AuthResult::Allow;
        }
        if !hash.verify(password) {
            return AuthResult::Deny;
        }
        if !ttl.is_zero() {
            let mut cache = self.auth_cache.lock();
            if self.auth_generation.load(Ordering::Acquire) == generation {
                cache.insert(username.to_owned(), CachedVerification { digest, at: Instant::now() });
            }
        }
        AuthResult::Allow
    }

    fn credential_digest(&self, username: &str, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.auth_key);
        h.update((username.len() as u64).to_le_bytes());
        h.update(username.as_bytes());
        h.update(password);
        h.finalize().into()
    }

    /// Whether dynsec knows this username (for the plugin chain's anonymous rules).
    pub fn has_client(&self, username: &str) -> bool {
        self.model.read().clients.contains_key(username)
    }

    /// Decides an access for `username` (`None`: the anonymous client) with the ACL check's own
    /// evaluation on the current configuration, and names the role, ACL and priority that decided
    /// ([`crate::acl::explain`]).
    pub fn explain(
        &self,
        username: Option<&str>,
        kind: AccessKind,
        topic: &str,
        client_id: Option<&str>,
    ) -> crate::acl::Explanation {
        let key = PrincipalKey::for_username(username);
        crate::acl::explain(&self.model.read(), &key, kind, topic, client_id)
    }

    /// A handle that evaluates ACLs for one principal, for any number of its connections (each
    /// through an [`AclView`]). Cheap to check; see the module documentation.
    pub fn acl_handle(self: &Arc<Self>, username: Option<&str>) -> AclHandle {
        let key = PrincipalKey::for_username(username);
        let slot = {
            let mut slots = self.slots.lock();
            match slots.get(&key).and_then(Weak::upgrade) {
                Some(slot) => slot,
                None => {
                    let slot = Arc::new(Slot::default());
                    slots.insert(key.clone(), Arc::downgrade(&slot));
                    slot
                }
            }
        };
        AclHandle { engine: Arc::clone(self), key, slot }
    }

    fn compiled_for(&self, key: &PrincipalKey, slot: &Slot) -> Stamped {
        // Read the epochs before the model: a change that lands in between makes the next check
        // recompile, never the reverse.
        let epochs = (self.global_epoch.load(Ordering::Acquire), slot.epoch.load(Ordering::Acquire));
        let mut shared = slot.compiled.lock();
        if let Some((at, compiled)) = shared.as_ref()
            && *at == epochs
        {
            return (epochs, Arc::clone(compiled));
        }
        // Read before the model, like the epochs: rules compiled from a model that a change has
        // already replaced are stamped with the generation before it, and never handed out again.
        let generation = self.rules_generation.load(Ordering::Acquire);
        let model = self.model.read();
        let walk = crate::acl::walk_key(&model, key);
        let found = self.shared_rules.lock().get(&walk, generation);
        let rules = found.unwrap_or_else(|| {
            let rules = Arc::new(RoleRules::compile(&model, key));
            self.shared_rules.lock().insert(walk, generation, &rules);
            rules
        });
        drop(model);
        let compiled = Arc::new(CompiledAcl::with_rules(key, rules));
        *shared = Some((epochs, Arc::clone(&compiled)));
        (epochs, compiled)
    }

    /// Writes the snapshot if the journal holds anything (clean shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut store = self.store.lock();
        if store.has_pending_journal() {
            let model = self.model.read();
            store.compact(&model)?;
        }
        Ok(())
    }

    /// Rewrites the snapshot if the journal holds anything and nothing changed for
    /// `Options::snapshot_idle`. Called periodically by [`Dynsec::spawn_maintenance`].
    pub fn compact_if_idle(&self) {
        let idle = self.last_change.lock().is_none_or(|t| t.elapsed() >= self.options.snapshot_idle);
        if !idle {
            return;
        }
        let mut store = self.store.lock();
        if store.has_pending_journal() {
            let model = self.model.read();
            if let Err(e) = store.compact(&model) {
                tracing::warn!("dynsec: snapshot not written (the journal keeps every change): {e}");
            }
        }
    }

    /// A background thread doing idle compaction for as long as the engine lives.
    pub fn spawn_maintenance(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let weak = Arc::downgrade(self);
        let tick = (self.options.snapshot_idle / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        std::thread::Builder::new().name("dynsec-maintenance".into()).spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.compact_if_idle(),
                    None => return,
                }
            }
        })
    }

    /// The file was changed by another program: load it if valid, keep every change acknowledged
    /// since our last snapshot (replayed over the edit), and report whom to kick. Returns
    /// `Ok(None)` when the file is our own last write. An invalid file changes nothing.
    pub fn reload_external(&self) -> Result<Option<Kicks>, EngineError> {
        let mut store = self.store.lock();
        let bytes = store.read_snapshot()?;
        if store.is_own_snapshot(&bytes) {
            return Ok(None);
        }
        let path = store.path().to_owned();
        let (mut edited, warnings) = crate::store::load_snapshot(&path, &bytes)?;
        for w in warnings {
            tracing::warn!("{}: {}", path.display(), w.0);
        }
        for m in store.pending_mutations()? {
            edited.apply(m);
        }
        let mut model = self.model.write();
        let kicks = changed_principals(&model, &edited);
        store.compact(&edited)?;
        *model = edited;
        self.invalidate_everything();
        Ok(Some(kicks))
    }
}

/// Compiled rules by role walk (see [`Dynsec::compiled_for`]); entries whose rules nobody holds
/// any more are swept as the map grows.
#[derive(Default)]
struct SharedRules {
    by_walk: HashMap<Option<Vec<String>>, (u64, Weak<RoleRules>)>,
    sweep_at: usize,
}

impl SharedRules {
    fn get(&self, walk: &Option<Vec<String>>, generation: u64) -> Option<Arc<RoleRules>> {
        match self.by_walk.get(walk) {
            Some((at, rules)) if *at == generation => rules.upgrade(),
            _ => None,
        }
    }

    fn insert(&mut self, walk: Option<Vec<String>>, generation: u64, rules: &Arc<RoleRules>) {
        if self.by_walk.len() >= self.sweep_at {
            self.by_walk.retain(|_, (_, rules)| rules.strong_count() > 0);
            self.sweep_at = (self.by_walk.len() * 2).max(64);
        }
        // A newer generation's rules are not replaced by older ones compiled concurrently.
        match self.by_walk.get(&walk) {
            Some((at, current)) if *at > generation && current.strong_count() > 0 => {}
            _ => {
                self.by_walk.insert(walk, (generation, Arc::downgrade(rules)));
            }
        }
    }
}

/// Everyone whose credentials, flags or effective roles differ between two models.
fn changed_principals(old: &Model, new: &Model) -> Kicks {
    let view = |model: &Model, key: &PrincipalKey| {
        let client = match key {
            PrincipalKey::User(u) => model.clients.get(u).map(|c| (c.clientid.clone(), c.disabled, c.password.clone())),
            PrincipalKey::Anonymous => None,
        };
        (client, role_walk(model, key).map(|roles| roles.into_iter().cloned().collect::<Vec<_>>()))
    };
    let users: BTreeSet<&String> = old.clients.keys().chain(new.clients.keys()).collect();
    let mut kicks = Kicks::default();
    for user in users {
        let key = PrincipalKey::User(user.clone());
        if view(old, &key) != view(new, &key) {
            kicks.users.insert(user.clone());
        }
    }
    kicks.anonymous = view(old, &PrincipalKey::Anonymous) != view(new, &PrincipalKey::Anonymous);
    kicks
}

/// One principal's ACLs as the engine keeps them current: cheap to check, and shared by every
/// connection of that principal. What belongs to one connection (its client id, for `%c`, and
/// its cache) is an [`AclView`].
pub struct AclHandle {
    engine: Arc<Dynsec>,
    key: PrincipalKey,
    slot: Arc<Slot>,
}

impl AclHandle {
    /// A view for one client of this principal: each check on it sees the current configuration.
    pub fn view(self: &Arc<Self>, client_id: Option<Arc<str>>) -> AclView {
        AclView { handle: Arc::clone(self), client_id, state: Mutex::new(None) }
    }

    /// Evaluates one access against the current configuration, keeping nothing (for occasional
    /// checks; a connection checks through its [`AclView`]).
    pub fn check(&self, kind: AccessKind, topic: &str, client_id: Option<&str>) -> Decision {
        self.engine.compiled_for(&self.key, &self.slot).1.check(kind, topic, client_id)
    }

    /// The compiled rules of this principal's role walk under the current configuration (shared
    /// with every principal that walks the same roles).
    pub fn rules(&self) -> Arc<RoleRules> {
        Arc::clone(self.engine.compiled_for(&self.key, &self.slot).1.rules())
    }

    fn epochs(&self) -> (u64, u64) {
        (self.engine.global_epoch.load(Ordering::Acquire), self.slot.epoch.load(Ordering::Acquire))
    }
}

/// One client's checks against its principal's ACLs ([`AclHandle::view`]): the client id that
/// `%c` stands for, the compiled ACLs it last checked against, and, for a client that checks
/// the same topic again and again, a memo of its last answers. The whole cache belongs to one
/// pair of epochs: any change that could alter an answer bumps an epoch, and the cache is
/// replaced at the next check.
pub struct AclView {
    handle: Arc<AclHandle>,
    client_id: Option<Arc<str>>,
    /// Made at the first check.
    state: Mutex<Option<ViewState>>,
}

impl AclView {
    /// Evaluates one access of this view's client against the current configuration.
    pub fn check(&self, kind: AccessKind, topic: &str) -> Decision {
        let epochs = self.handle.epochs();
        let mut guard = self.state.lock();
        let state = match &mut *guard {
            Some(state) if state.compiled.0 == epochs => state,
            stale => stale.insert(ViewState {
                compiled: self.handle.engine.compiled_for(&self.handle.key, &self.handle.slot),
                last_miss: None,
                memo: None,
            }),
        };
        state.check(kind, topic, self.client_id.as_deref())
    }

    /// The client id `%c` stands for.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Whether this view keeps a memo of answers: it does once its client checked the same access
    /// twice within a second.
    pub fn remembers(&self) -> bool {
        self.state.lock().as_ref().is_some_and(|state| state.memo.is_some())
    }
}

impl std::fmt::Debug for AclView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclView").field("principal", &self.handle.key).field("client_id", &self.client_id).finish()
    }
}

/// How many recent answers a memo holds. Devices mostly publish to and receive from a few
/// topics, so a handful of entries turns most checks into one string comparison.
const RECENT_DECISIONS: usize = 4;

/// Topics longer than this are evaluated every time rather than copied into the memo.
const MEMO_TOPIC_LIMIT: usize = 256;

/// A view starts a memo when the same access to the same topic is evaluated twice within this
/// time. A busy client (the bench's P1: every message checked, the same topic each time) has one
/// after its second check; a device that publishes and receives once every few seconds never
/// pays for one (its topics copied, ~250 bytes per device: docs/benchmarks.md, "Per-user and
/// per-subscription data"), and its checks cost what an evaluation costs.
const MEMO_AFTER: Duration = Duration::from_secs(1);

struct ViewState {
    compiled: Stamped,
    /// The last access evaluated while there is no memo: a hash of (kind, topic), and when.
    last_miss: Option<(u64, Instant)>,
    memo: Option<Box<Memo>>,
}

#[derive(Default)]
struct Memo {
    recent: [Option<Remembered>; RECENT_DECISIONS],
    next_slot: usize,
}

struct Remembered {
    kind: AccessKind,
    topic: Box<str>,
    decision: Decision,
}

impl ViewState {
    fn check(&mut self, kind: AccessKind, topic: &str, client_id: Option<&str>) -> Decision {
        if let Some(memo) = &self.memo
            && let Some(remembered) = memo.recent.iter().flatten().find(|r| r.kind == kind && &*r.topic == topic)
        {
            return remembered.decision;
        }
        let decision = self.compiled.1.check(kind, topic, client_id);
        if topic.len() <= MEMO_TOPIC_LIMIT {
            if self.memo.is_none() && self.repeated_soon(kind, topic) {
                self.memo = Some(Box::default());
            }
            if let Some(memo) = &mut self.memo {
                memo.recent[memo.next_slot] = Some(Remembered { kind, topic: topic.into(), decision });
                memo.next_slot = (memo.next_slot + 1) % RECENT_DECISIONS;
            }
        }
        decision
    }

    /// Whether this access was also the last one evaluated, within [`MEMO_AFTER`]. (The hash
    /// only decides whether a memo is started: a collision costs a memo, never an answer.)
    fn repeated_soon(&mut self, kind: AccessKind, topic: &str) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        kind.hash(&mut hasher);
        topic.hash(&mut hasher);
        let hash = hasher.finish();
        let now = Instant::now();
        let repeated = self.last_miss.is_some_and(|(last, at)| last == hash && now.duration_since(at) < MEMO_AFTER);
        self.last_miss = Some((hash, now));
        repeated
    }
}

impl std::fmt::Debug for AclHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclHandle").field("principal", &self.key).finish()
    }
}
