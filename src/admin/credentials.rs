//! The signed-in session of the admin CLI, kept in `credentials.json` for the user only.
//!
//! Where: `$EDICT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/edict`, else `~/.config/edict`. The directory is
//! made 0700 and the file 0600; every write goes to a temporary file in the same directory (created
//! 0600, never readable by others even for a moment) that is then renamed over the old one, so a
//! crash leaves either the old session or the new one, never half a file.
//!
//! A refresh token is single use: presenting one that was already exchanged ends the whole session.
//! Two `edict` processes refreshing at once would do just that, so refreshes hold an exclusive lock on
//! `credentials.lock` and re-read the file under it (the other process may have refreshed already).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `edict login` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The API's base URL, as given to `--server`.
    pub server: String,
    /// The email signed in with (shown by `edict login`, for people).
    pub email: String,
    /// The bearer token of API calls.
    pub access_token: String,
    /// The single-use token that buys the next pair.
    pub refresh_token: String,
    /// When the access token expires (Unix seconds).
    pub expires_at: i64,
    /// A PEM bundle of CA certificates to trust for the server (`--ca-file` at login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The log position of the last command sent: reads wait until their read model shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_position: Option<i64>,
}

impl Credentials {
    /// Whether the access token expires within `margin_secs` of `now` (Unix seconds).
    pub fn expires_soon(&self, now: i64, margin_secs: i64) -> bool {
        self.expires_at <= now.saturating_add(margin_secs)
    }
}

/// The directory of `credentials.json`, from `EDICT_CONFIG_DIR`, `XDG_CONFIG_HOME` and `HOME` (as
/// given, so tests pass them as values).
pub fn config_dir(
    edict_config_dir: Option<&str>,
    xdg_config_home: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    let set = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(edict_config_dir)
        .or_else(|| set(xdg_config_home).map(|dir| dir.join("edict")))
        .or_else(|| set(home).map(|dir| dir.join(".config").join("edict")))
}

/// The store of one user's credentials.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Store { dir }
    }

    /// The store this process's environment names.
    ///
    /// # Errors
    /// When no variable names a directory (no `HOME` either).
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok();
        config_dir(
            var("EDICT_CONFIG_DIR").as_deref(),
            var("XDG_CONFIG_HOME").as_deref(),
            var("HOME").as_deref(),
        )
        .map(Store::new)
        .context("no configuration directory: set EDICT_CONFIG_DIR or HOME")
    }

    /// `credentials.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("credentials.json")
    }

    /// The stored credentials, if any.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn load(&self) -> Result<Option<Credentials>> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is not a credentials file", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Replaces the stored credentials atomically (0600 file in a 0700 directory).
    ///
    /// # Errors
    /// When the directory or the file cannot be written.
    pub fn save(&self, credentials: &Credentials) -> Result<()> {
        self.make_dir()?;
        let path = self.path();
        let temporary = self
            .dir
            .join(format!(".credentials.json.{}.tmp", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut file = private_file(&temporary, true)?;
            file.write_all(&serde_json::to_vec_pretty(credentials)?)?;
            file.sync_all()?;
            fs::rename(&temporary, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        written.with_context(|| format!("cannot write {}", path.display()))
    }

    /// Deletes the stored credentials; answers whether there were any.
    ///
    /// # Errors
    /// When the file exists but cannot be removed.
    pub fn delete(&self) -> Result<bool> {
        let path = self.path();
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error).with_context(|| format!("cannot delete {}", path.display())),
        }
    }

    /// Takes the exclusive refresh lock; it is released when the answer is dropped.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub fn lock(&self) -> Result<File> {
        self.make_dir()?;
        let path = self.dir.join("credentials.lock");
        let file = private_file(&path, false)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    }

    fn make_dir(&self) -> Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        // An existing directory keeps whatever mode it had: tighten it (it holds only our files).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict {}", self.dir.display()))?;
        }
        Ok(())
    }
}

/// Opens `path` for writing, created 0600 (`truncate`: a fresh file; else kept as it is).
fn private_file(path: &Path, truncate: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            server: "http://127.0.0.1:8080".into(),
            email: "admin@example.com".into(),
            access_token: "a".into(),
            refresh_token: "r".into(),
            expires_at: 100,
            ca_file: None,
            last_position: Some(7),
        }
    }

    #[test]
    fn the_config_dir_prefers_edict_then_xdg_then_home() {
        assert_eq!(
            config_dir(Some("/e"), Some("/x"), Some("/h")),
            Some(PathBuf::from("/e"))
        );
        assert_eq!(
            config_dir(None, Some("/x"), Some("/h")),
            Some(PathBuf::from("/x/edict"))
        );
        assert_eq!(
            config_dir(Some(""), None, Some("/h")),
            Some(PathBuf::from("/h/.config/edict"))
        );
        assert_eq!(config_dir(None, None, None), None);
    }

    #[test]
    fn saved_credentials_load_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("edict"));
        assert_eq!(store.load().unwrap(), None);
        store.save(&sample()).unwrap();
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&store.path()), 0o600);
            assert_eq!(mode(&dir.path().join("edict")), 0o700);
        }
        assert!(store.delete().unwrap());
        assert!(!store.delete().unwrap());
    }

    #[test]
    fn a_token_expiring_within_the_margin_is_due_for_refresh() {
        assert!(sample().expires_soon(95, 10));
        assert!(!sample().expires_soon(80, 10));
    }
}
