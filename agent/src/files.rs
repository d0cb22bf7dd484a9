//! Where each layer's managed section goes, what it holds, and how it is written.
//!
//! - organization → [`Paths::org_file`] (`/etc/claude-code/CLAUDE.md`, env `EDICT_AGENT_ORG_FILE`);
//! - team → `<home>/.claude/CLAUDE.md` (home from env `EDICT_AGENT_HOME`, else the user's home);
//! - project → `<dir>/CLAUDE.md` for each watched project dir.
//!
//! The organization and team bodies are the distinct rendered texts of the teams' layer, in team id
//! order. The project body is rendered here (same format as the server) from the project rules whose
//! triggers match a file of the project, or that have no trigger. Writes are atomic: a temp file in the
//! same directory (created `0600`), fsync, rename, keeping the existing file's permissions (`0644` for a
//! new file).
//!
//! # Symbolic links
//! A managed path that is a symbolic link is managed only when it resolves to a regular file named
//! `CLAUDE.md` inside the user's home or (for a project file) the project ([`resolve`]); the agent then
//! reads and writes that file, and the link stays. Anything else (a repository shipping
//! `CLAUDE.md -> ~/.ssh/id_ed25519`, a link out of the home, to a directory, to nothing) is left alone,
//! link and target: no read, no write, a warning in the log and an entry in `edict-agent status`
//! ([`refused`]). Writes never follow a link either: one that appears after the paths were resolved
//! fails the write before anything is read through it or copied ([`write_atomic_if_unchanged`]).
//!
//! Layout: this module holds the paths and their resolution ([`targets`], [`refused`]); `desired` what
//! each section holds; `write` the safe reads and atomic writes.

mod desired;
#[cfg(test)]
mod tests;
mod write;

use crate::ruleset::Layer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

pub use desired::{Desired, desired};
pub use write::{read, write_atomic, write_atomic_if_unchanged};

/// The managed file name in a project.
pub const PROJECT_FILE: &str = "CLAUDE.md";

/// The files of the organization and team layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The organization layer's file.
    pub org_file: PathBuf,
    /// The team layer's file.
    pub team_file: PathBuf,
    /// The user's home: a symbolic link may point to an instruction file inside it.
    pub home: PathBuf,
}

impl Paths {
    /// The paths for a home directory and an organization file.
    pub fn new(home: &Path, org_file: PathBuf) -> Self {
        Paths {
            org_file,
            team_file: home.join(".claude").join("CLAUDE.md"),
            home: home.to_path_buf(),
        }
    }

    /// The file of a project dir.
    pub fn project_file(dir: &Path) -> PathBuf {
        dir.join(PROJECT_FILE)
    }
}

/// One managed file and its layer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The file.
    pub path: PathBuf,
    /// Its layer.
    pub layer: Layer,
    /// For the project layer, the project dir.
    pub project: Option<PathBuf>,
}

/// A managed path the agent leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// The path (the symbolic link).
    pub file: PathBuf,
    /// Why, for a person.
    pub reason: String,
}

/// What the agent does with a managed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Read and write this file: the path itself, or the instruction file its symbolic link points to.
    Manage(PathBuf),
    /// Leave the path and whatever it points to alone, for this reason.
    Refuse(String),
}

/// Whether `path` lies inside `root` (both resolved: `..` and links in `root` do not fool it).
fn inside(path: &Path, root: &Path) -> bool {
    std::fs::canonicalize(root).is_ok_and(|root| path.starts_with(root))
}

/// Resolves a managed path. Not there yet, or a regular file: itself. A symbolic link (through any
/// number of links): the regular file it ends at, when that is named `CLAUDE.md` and lies inside `home`
/// or `project`; anything else is refused. A directory or special file (a FIFO would block every read)
/// is refused too.
pub fn resolve(path: &Path, home: &Path, project: Option<&Path>) -> Resolution {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Missing (created by the first write), or unreadable: the write reports that failure.
        Err(_) => return Resolution::Manage(path.to_path_buf()),
    };
    if !meta.file_type().is_symlink() {
        return if meta.is_file() {
            Resolution::Manage(path.to_path_buf())
        } else {
            Resolution::Refuse("not a regular file".to_owned())
        };
    }
    let target = match std::fs::canonicalize(path) {
        Ok(target) => target,
        Err(e) => {
            return Resolution::Refuse(format!("a symbolic link that leads nowhere usable ({e})"));
        }
    };
    if !std::fs::metadata(&target).is_ok_and(|m| m.is_file()) {
        return Resolution::Refuse(format!(
            "a symbolic link to {}, which is not a regular file",
            target.display()
        ));
    }
    if target.file_name().is_none_or(|name| name != PROJECT_FILE) {
        return Resolution::Refuse(format!(
            "a symbolic link to {}, which is not an instruction file ({PROJECT_FILE})",
            target.display()
        ));
    }
    if !(inside(&target, home) || project.is_some_and(|p| inside(&target, p))) {
        return Resolution::Refuse(format!(
            "a symbolic link to {}, outside the home and the project",
            target.display()
        ));
    }
    Resolution::Manage(target)
}

/// Whether two paths name one file (compared resolved when they exist).
fn same_file(a: &Path, b: &Path) -> bool {
    let resolved = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || resolved(a) == resolved(b)
}

/// The managed files (resolved) and the paths left alone.
fn resolve_all(paths: &Paths, watched: &[PathBuf]) -> (Vec<Target>, Vec<Refused>) {
    let mut candidates = vec![
        Target {
            path: paths.org_file.clone(),
            layer: Layer::Organization,
            project: None,
        },
        Target {
            path: paths.team_file.clone(),
            layer: Layer::Team,
            project: None,
        },
    ];
    for dir in watched {
        candidates.push(Target {
            path: Paths::project_file(dir),
            layer: Layer::Project,
            project: Some(dir.clone()),
        });
    }
    let mut managed: Vec<Target> = Vec::new();
    let mut refused = Vec::new();
    for candidate in candidates {
        match resolve(&candidate.path, &paths.home, candidate.project.as_deref()) {
            // Two layers in one file would overwrite each other's section.
            Resolution::Manage(file) if managed.iter().any(|t| same_file(&t.path, &file)) => {
                refused.push(Refused {
                    reason: format!(
                        "a symbolic link to {}, which is managed already",
                        file.display()
                    ),
                    file: candidate.path,
                });
            }
            Resolution::Manage(file) => managed.push(Target {
                path: file,
                ..candidate
            }),
            Resolution::Refuse(reason) => refused.push(Refused {
                file: candidate.path,
                reason,
            }),
        }
    }
    (managed, refused)
}

/// The paths warned about, with the reason: one warning per path and reason, not one per audit.
static WARNED: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());

/// Every managed file: the organization and team files, and each watched project's file, each as
/// [`resolve`]d (a symbolic link to an instruction file is replaced by that file; a refused one is left
/// out and logged).
pub fn targets(paths: &Paths, watched: &[PathBuf]) -> Vec<Target> {
    let (managed, refused) = resolve_all(paths, watched);
    let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
    for r in &refused {
        if warned.get(&r.file) != Some(&r.reason) {
            tracing::warn!(file = %r.file.display(), reason = r.reason, "left alone: not managed");
            warned.insert(r.file.clone(), r.reason.clone());
        }
    }
    warned.retain(|file, _| refused.iter().any(|r| &r.file == file));
    managed
}

/// The managed paths the agent leaves alone, and why (for `edict-agent status`).
pub fn refused(paths: &Paths, watched: &[PathBuf]) -> Vec<Refused> {
    resolve_all(paths, watched).1
}
