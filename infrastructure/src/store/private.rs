//! The embedded store's files are private to the user Edict runs as: they hold the token-signing
//! secret, the audit key, password hashes and session ids. The data directory is created `0700` and
//! every file in it `0600`; a directory or file found with looser modes (an older version, a copy) is
//! tightened at start, with a warning. Only on Unix; elsewhere nothing is changed.

use std::io;
use std::path::Path;

/// Creates `dir` (and missing parents) `0700` when missing. An existing directory is left as it is:
/// it may be shared (`/tmp`); [`secure_data_dir`] tightens the data directory itself.
///
/// # Errors
/// When it cannot be created.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Creates the SQLite file `path` empty and `0600` when missing (SQLite gives its `-wal` and `-shm`
/// files the mode of the database file), and tightens it, its `-wal` and its `-shm` when they exist
/// with looser modes.
///
/// # Errors
/// When the file cannot be created or its mode changed.
pub fn secure_sqlite_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            tighten(Path::new(&name), 0o600)?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Makes the data directory private when the SQLite store at `database_url` lives in it: created
/// `0700` when missing, tightened to `0700` when looser, and every file in it tightened to `0600`
/// (each change is logged as a warning). Does nothing for another store.
///
/// # Errors
/// When the directory cannot be created or a mode cannot be changed.
pub fn secure_data_dir(data_dir: &Path, database_url: &str) -> io::Result<()> {
    let Some(file) = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    else {
        return Ok(());
    };
    let file = Path::new(file.split('?').next().unwrap_or(file));
    let inside = file
        .parent()
        .is_some_and(|parent| same_dir(parent, data_dir));
    if !inside {
        return Ok(());
    }
    create_private_dir(data_dir)?;
    #[cfg(unix)]
    {
        tighten(data_dir, 0o700)?;
        for entry in std::fs::read_dir(data_dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                tighten(&entry.path(), 0o600)?;
            }
        }
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.components().eq(b.components()),
    }
}

/// Sets `path` to `mode` when it exists and grants group or others anything (a warning says so).
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    let current = metadata.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            from = format!("{current:o}"),
            to = format!("{mode:o}"),
            "the embedded store's files were readable by others; tightened"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_missing_data_dir_is_created_private_and_loose_files_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/.edict");
        let url = format!("sqlite://{}", dir.join("edict.db").display());
        secure_data_dir(&dir, &url).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stray = dir.join("notes");
        std::fs::write(&stray, "x").unwrap();
        std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o644)).unwrap();
        secure_data_dir(&dir, &url).unwrap();
        assert_eq!((mode(&dir), mode(&stray)), (0o700, 0o600));
    }

    #[test]
    fn a_store_elsewhere_leaves_the_data_dir_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(".edict");
        secure_data_dir(&dir, "postgres://localhost/edict").unwrap();
        secure_data_dir(&dir, "sqlite:///var/lib/edict/edict.db").unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn the_sqlite_file_is_created_0600() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("edict.db");
        secure_sqlite_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
