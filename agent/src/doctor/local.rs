//! The checks on this machine: the data directory, the snapshot, the managed files.

use super::Check;
use crate::files::{Paths, Resolution, resolve};
use crate::ruleset::KeyChain;
use crate::snapshot::{Snapshot, SnapshotError, keys};
use edict_api::protocol::Holding;
use std::path::{Path, PathBuf};

/// What the snapshot holds that the checks need.
#[derive(Debug, Clone)]
pub struct State {
    /// The API URL `login` stored.
    pub api: Option<String>,
    /// The gateway URLs.
    pub gateways: Vec<String>,
    /// The agent token.
    pub token: Option<String>,
    /// The agent id.
    pub agent_id: Option<String>,
    /// The keys pinned and taken since.
    pub chain: KeyChain,
    /// The rule sets held (sent in the gateway check's `hello`).
    pub holdings: Vec<Holding>,
    /// The watched project directories.
    pub watched: Vec<PathBuf>,
}

impl State {
    /// Reads it.
    ///
    /// # Errors
    /// When the snapshot cannot be read.
    pub fn read(snapshot: &Snapshot) -> Result<Self, SnapshotError> {
        Ok(State {
            api: snapshot.identity(keys::API)?.filter(|s| !s.is_empty()),
            gateways: snapshot
                .identity(keys::SERVER)?
                .map(|s| s.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
            token: snapshot.identity(keys::TOKEN)?.filter(|s| !s.is_empty()),
            agent_id: snapshot.identity(keys::AGENT_ID)?.filter(|s| !s.is_empty()),
            chain: snapshot.key_chain()?,
            holdings: snapshot.holdings()?,
            watched: snapshot.watched()?,
        })
    }

    /// Whether `login` stored what the agent needs.
    pub fn login_check(&self) -> Check {
        match (&self.api, &self.token) {
            (Some(api), Some(_)) => Check::ok(
                "login",
                format!(
                    "agent {} of {api}",
                    self.agent_id.as_deref().unwrap_or("(id not known yet)")
                ),
            ),
            _ => Check::fail(
                "login",
                "no server or agent token stored",
                "run `edict-agent login --server URL`",
            ),
        }
    }
}

/// The data directory: there, the user's, `0700` (the snapshot holds the agent token).
pub fn data_dir(dir: &Path) -> Vec<Check> {
    let name = "data dir";
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) => {
            return vec![Check::fail(
                name,
                format!("{}: {e}", dir.display()),
                "run `edict-agent login --server URL` (or give the --data-dir it used)",
            )];
        }
    };
    if !meta.is_dir() {
        return vec![Check::fail(
            name,
            format!("{} is not a directory", dir.display()),
            "give --data-dir a directory",
        )];
    }
    let mut checks = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o777;
        if meta.uid() != uid() {
            checks.push(Check::fail(
                name,
                format!("{} belongs to uid {}, not you", dir.display(), meta.uid()),
                format!(
                    "run the agent as its owner, or `chown -R $USER {}`",
                    dir.display()
                ),
            ));
        } else if mode & 0o077 != 0 {
            checks.push(Check::fail(
                name,
                format!(
                    "{} is {mode:04o}: others may read the agent token",
                    dir.display()
                ),
                format!("chmod 700 {}", dir.display()),
            ));
        } else {
            checks.push(Check::ok(name, format!("{} is {mode:04o}", dir.display())));
        }
    }
    #[cfg(not(unix))]
    checks.push(Check::ok(name, format!("{}", dir.display())));
    if !Snapshot::file_in(dir).is_file() {
        checks.push(Check::fail(
            "snapshot",
            format!("no snapshot in {}", dir.display()),
            "run `edict-agent login --server URL` (or give the --data-dir it used)",
        ));
    }
    checks
}

/// Opens the snapshot (it exists).
///
/// # Errors
/// The failed check.
pub async fn open(dir: &Path) -> Result<Snapshot, Box<Check>> {
    let dir = dir.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || Snapshot::open(&dir))
        .await
        .map_err(|e| Box::new(Check::fail("snapshot", e.to_string(), "")))?;
    opened.map_err(|e| {
        Box::new(Check::fail(
            "snapshot",
            format!("does not open: {e}"),
            "log in again (`edict-agent login`) after moving the data directory aside",
        ))
    })
}

/// The current user's id.
#[cfg(unix)]
fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Each managed file: the organization file, the team file, each watched project's.
pub fn files(paths: &Paths, watched: &[PathBuf]) -> Vec<Check> {
    let mut checks = vec![
        file(&paths.org_file, &paths.home, None),
        file(&paths.team_file, &paths.home, None),
    ];
    for dir in watched {
        checks.push(file(&Paths::project_file(dir), &paths.home, Some(dir)));
    }
    checks
}

/// One managed file: resolved as the agent resolves it, then its kind, owner, mode and directory.
fn file(path: &Path, home: &Path, project: Option<&Path>) -> Check {
    let name = format!("file {}", path.display());
    let target = match resolve(path, home, project) {
        Resolution::Manage(target) => target,
        Resolution::Refuse(reason) => {
            return Check::fail(
                name,
                format!("left alone: {reason}"),
                "replace it with a regular file (or a link to a CLAUDE.md in your home or the project)",
            );
        }
    };
    let through = if target == path {
        String::new()
    } else {
        format!(" (through a link to {})", target.display())
    };
    let meta = match std::fs::symlink_metadata(&target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match creatable(&target) {
                Ok(dir) => Check::ok(
                    name,
                    format!(
                        "not there yet; the agent can create it ({} is writable)",
                        dir.display()
                    ),
                ),
                Err(reason) => Check::fail(
                    name,
                    format!("cannot be created: {reason}"),
                    "give your user write access to the directory (or run the agent as a user that has it)",
                ),
            };
        }
        Err(e) => return Check::fail(name, format!("cannot be read: {e}"), ""),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o777;
        if meta.uid() != uid() {
            return Check::fail(
                name,
                format!("belongs to uid {}, not you{through}", meta.uid()),
                format!("chown $USER {}", target.display()),
            );
        }
        if mode & 0o022 != 0 {
            return Check::fail(
                name,
                format!(
                    "is {mode:04o}{through}: others can rewrite the rules your assistant obeys"
                ),
                format!("chmod go-w {}", target.display()),
            );
        }
    }
    if let Err(e) = std::fs::OpenOptions::new().append(true).open(&target) {
        return Check::fail(
            name,
            format!("not writable: {e}"),
            "give your user write access (or run the agent as a user that has it)",
        );
    }
    if let Err(reason) = creatable(&target) {
        return Check::fail(
            name,
            format!(
                "its directory is not writable ({reason}): the agent writes by renaming a file there"
            ),
            "give your user write access to the directory",
        );
    }
    if through.is_empty() {
        Check::ok(name, "a regular file, yours, not writable by others")
    } else {
        Check::warn(
            name,
            format!("managed{through}"),
            "a link is followed only to a CLAUDE.md in your home or the project; a regular file is simpler",
        )
    }
}

/// Whether a file can be created beside `file`: the nearest directory up that exists takes a new
/// file (created and removed at once). Answers that directory.
fn creatable(file: &Path) -> Result<PathBuf, String> {
    let mut dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    while !dir.is_dir() {
        match dir.parent() {
            Some(parent) => dir = parent.to_path_buf(),
            None => return Err(format!("no directory of {} exists", file.display())),
        }
    }
    let probe = dir.join(format!(".edict-doctor-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(dir)
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::doctor::Level;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_managed_file_writable_by_the_group_fails_and_a_private_one_passes() -> anyhow::Result<()> {
        let home = tempfile::tempdir()?;
        let file_path = home.path().join("CLAUDE.md");
        assert_eq!(file(&file_path, home.path(), None).level, Level::Ok);
        std::fs::write(&file_path, "x")?;
        std::fs::set_permissions(&file_path, std::fs::Permissions::from_mode(0o644))?;
        assert_eq!(file(&file_path, home.path(), None).level, Level::Ok);
        std::fs::set_permissions(&file_path, std::fs::Permissions::from_mode(0o664))?;
        let check = file(&file_path, home.path(), None);
        assert_eq!(check.level, Level::Fail, "{check:?}");
        assert!(check.hint.contains("chmod go-w"));
        Ok(())
    }

    #[test]
    fn a_link_the_agent_refuses_fails() -> anyhow::Result<()> {
        let home = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("id_ed25519"), "secret")?;
        let link = home.path().join("CLAUDE.md");
        std::os::unix::fs::symlink(outside.path().join("id_ed25519"), &link)?;
        let check = file(&link, home.path(), None);
        assert_eq!(check.level, Level::Fail, "{check:?}");
        assert!(check.reason.starts_with("left alone"));
        Ok(())
    }

    #[test]
    fn a_data_dir_others_can_read_fails() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let checks = data_dir(dir.path());
        assert_eq!(checks[0].level, Level::Fail, "{checks:?}");
        assert!(checks[0].hint.contains("chmod 700"));
        // And it holds no snapshot: not logged in.
        assert_eq!(checks[1].name, "snapshot");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        assert_eq!(data_dir(dir.path())[0].level, Level::Ok);
        Ok(())
    }
}
