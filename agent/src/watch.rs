//! The file watcher: a notify watcher on the directories of the managed files (never recursive: only the
//! managed paths themselves matter), forwarding an event about a managed file to the engine. An editor's
//! rename-save and a deletion show up as events on the directory, so they are seen too. The engine
//! debounces; the periodic audit backs the watcher up.
//!
//! The managed paths are real files (a link to an instruction file is watched at its target, see
//! `files::targets`), so an event on a managed path that is now a symbolic link means someone put a link
//! in its place: it is not forwarded (checking the file would read through the link); the next audit
//! resolves the path again and leaves it alone.

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Watches the managed files' directories and calls back with the path of a managed file that changed.
pub struct ManagedWatcher {
    watcher: RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    files: Arc<Mutex<HashSet<PathBuf>>>,
}

impl std::fmt::Debug for ManagedWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedWatcher")
            .field("dirs", &self.dirs)
            .finish()
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

impl ManagedWatcher {
    /// A watcher calling `on_change` (from the watcher's thread) with each managed path an event names.
    ///
    /// # Errors
    /// When the platform watcher cannot be created.
    pub fn new(on_change: impl Fn(PathBuf) + Send + 'static) -> notify::Result<Self> {
        let files: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let managed = files.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            // Opening or reading a file is not a change. inotify reports opens (notify watches
            // IN_OPEN), and the agent opens a managed file to check it: without this, each check
            // announced the next, a check every debounce interval forever.
            if matches!(
                event.kind,
                EventKind::Access(
                    AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
                )
            ) {
                return;
            }
            let managed = managed.lock().unwrap_or_else(PoisonError::into_inner);
            for path in event.paths {
                if managed.contains(&path) && !is_symlink(&path) {
                    on_change(path);
                }
            }
        })?;
        Ok(ManagedWatcher {
            watcher,
            dirs: HashSet::new(),
            files,
        })
    }

    /// Watches exactly the directories of `files` that exist (a missing one is picked up by a later
    /// call, after the agent creates it).
    pub fn update(&mut self, files: &[PathBuf]) {
        let wanted: HashSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .filter(|d| d.is_dir())
            .collect();
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) =
            files.iter().cloned().collect();
        for gone in self.dirs.difference(&wanted).cloned().collect::<Vec<_>>() {
            // A directory that vanished is no longer watched anyway.
            let _ = self.watcher.unwatch(&gone);
            self.dirs.remove(&gone);
        }
        for dir in wanted {
            if !self.dirs.contains(&dir) {
                match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.dirs.insert(dir);
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; the audit covers it");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn writes_renames_and_deletions_of_a_managed_file_are_seen_and_others_are_not()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let managed = dir.path().join("CLAUDE.md");
        let (tx, rx) = mpsc::channel();
        let mut watcher = ManagedWatcher::new(move |p| {
            let _ = tx.send(p);
        })?;
        watcher.update(std::slice::from_ref(&managed));
        std::fs::write(dir.path().join("other.md"), "x")?;
        std::fs::write(&managed, "one")?;
        assert_eq!(rx.recv_timeout(Duration::from_secs(2))?, managed);
        while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
        let tmp = dir.path().join(".CLAUDE.md.swp");
        std::fs::write(&tmp, "two")?;
        std::fs::rename(&tmp, &managed)?;
        assert_eq!(rx.recv_timeout(Duration::from_secs(2))?, managed);
        while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
        std::fs::remove_file(&managed)?;
        assert_eq!(rx.recv_timeout(Duration::from_secs(2))?, managed);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn a_link_put_in_place_of_a_managed_file_is_not_forwarded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let managed = dir.path().join("CLAUDE.md");
        let other = dir.path().join("other/CLAUDE.md");
        std::fs::create_dir_all(dir.path().join("other"))?;
        std::fs::write(dir.path().join("id_ed25519"), "secret")?;
        let (tx, rx) = mpsc::channel();
        let mut watcher = ManagedWatcher::new(move |p| {
            let _ = tx.send(p);
        })?;
        watcher.update(&[managed.clone(), other.clone()]);
        std::os::unix::fs::symlink(dir.path().join("id_ed25519"), &managed)?;
        // A later event on another managed file comes through: the link's event (earlier) did not.
        std::fs::write(&other, "x")?;
        let mut seen = Vec::new();
        while let Ok(p) = rx.recv_timeout(Duration::from_secs(2)) {
            seen.push(p.clone());
            if p == other {
                break;
            }
        }
        assert_eq!(seen.last(), Some(&other), "{seen:?}");
        assert!(!seen.contains(&managed), "{seen:?}");
        Ok(())
    }
}
