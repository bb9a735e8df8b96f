//! The file watcher: edits of `dynamic-security.json` by other programs are picked up, loaded by
//! the engine, and the clients whose rights changed are kicked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dynsec::Dynsec;
use tokio::sync::mpsc;

use crate::security::KickTarget;

/// Watches `dynamic-security.json` for edits by other programs.
pub(super) fn watch_dynsec_file(
    engine: Arc<Dynsec>,
    kicks: mpsc::UnboundedSender<KickTarget>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let path = engine.path();
    let file_name = path.file_name()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| p.file_name() == Some(file_name.as_os_str()))
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch {} for external edits: {e}", path.display());
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!("cannot watch {} for external edits: {e}", dir.display());
        return None;
    }
    let weak = Arc::downgrade(&engine);
    drop(engine);
    let spawned = std::thread::Builder::new().name("dynsec-watch".into()).spawn(move || {
        while rx.recv().is_ok() {
            // Editors write in several steps: wait until the events settle.
            while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
            let Some(engine) = weak.upgrade() else { return };
            match engine.reload_external() {
                Ok(None) => {}
                Ok(Some(k)) => {
                    tracing::info!("{} changed on disk: reloaded", engine.path().display());
                    for target in KickTarget::all_of(&k) {
                        let _ = kicks.send(target);
                    }
                }
                Err(e) => tracing::error!("{} changed on disk but was not loaded: {e}", engine.path().display()),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the file watcher thread: {e}");
        return None;
    }
    Some(watcher)
}
