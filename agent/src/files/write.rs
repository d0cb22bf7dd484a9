//! Reading and writing a managed file: never through a symbolic link, atomically (a private temp file
//! in the same directory, fsync, rename), keeping the file's permissions, and only over content the
//! agent saw.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The file's bytes (never decoded: the user's text need not be UTF-8 and is kept as it is); `None` when
/// it does not exist.
///
/// # Errors
/// On any other read failure, and when `path` is a symbolic link or not a regular file.
pub fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    // Never through a link: `path` is already resolved ([`resolve`]), so a link found here appeared
    // since, and what it points to (a private key, say) must not reach a report's diff.
    Ok(read_no_follow(path)?.map(|(bytes, _)| bytes))
}

/// Writes `contents` to `path` atomically: parent dirs created, a temp file in the same directory
/// created `0600`, written and fsynced, given the existing file's permissions (`0644` for a new file),
/// then renamed over `path`.
///
/// # Errors
/// On any filesystem failure (the temp file is removed), and when `path` is a symbolic link (left
/// alone; see the module documentation).
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_atomic_if(path, None, contents).map(|_| ())
}

/// Like [`write_atomic`], but only when the file still holds `expected` (`Some(None)`: does not exist)
/// right before the rename; `Ok(false)` when someone changed it meanwhile (nothing is written).
///
/// This narrows the race with another writer to the instant between the check and the rename: the agent
/// never replaces a file based on content it did not see (which would orphan the other writer's data).
/// The check runs before the temp file is created too, and never follows a symbolic link: content read
/// through a link that appeared after the paths were resolved (say, to a private key) never matches
/// what is on disk, so it is never copied into a temp file or the managed file.
///
/// # Errors
/// On any filesystem failure (the temp file is removed), and when `path` is a symbolic link.
pub fn write_atomic_if_unchanged(
    path: &Path,
    expected: Option<&[u8]>,
    contents: &[u8],
) -> std::io::Result<bool> {
    write_atomic_if(path, Some(expected), contents)
}

/// Permissions of a file the agent creates: readable by every user's assistant (the organization file
/// lives in `/etc`), writable by its owner.
#[cfg(unix)]
const NEW_FILE_MODE: u32 = 0o644;

/// The file at `path` without following a symbolic link in its last component (`None`: missing): its
/// bytes and metadata. A link is an error (`InvalidInput`), as is anything but a regular file.
fn read_no_follow(path: &Path) -> std::io::Result<Option<(Vec<u8>, std::fs::Metadata)>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: a FIFO put in the file's place cannot hang the agent.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(symlink_error(path)),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file: left alone", path.display()),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(Some((bytes, meta)))
}

fn symlink_error(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{} became a symbolic link: left alone, not read through",
            path.display()
        ),
    )
}

/// Whether the file holds exactly `expected`.
fn holds(found: Option<&(Vec<u8>, std::fs::Metadata)>, expected: Option<&[u8]>) -> bool {
    match (found, expected) {
        (None, None) => true,
        (Some((bytes, _)), Some(expected)) => bytes.as_slice() == expected,
        _ => false,
    }
}

/// A new temp file for `path` in `dir`, private to its user (`0600`) until it is complete.
pub(super) fn create_temp(dir: &Path, path: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.edict-{:016x}.tmp", rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    // `create_new` (O_EXCL) never follows a link planted at the temp name.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    Ok((options.open(&tmp)?, tmp))
}

fn write_atomic_if(
    path: &Path,
    expected: Option<Option<&[u8]>>,
    contents: &[u8],
) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Before any temp file exists: `contents` was built from what the caller read, which must be
    // what is at `path` itself (never what a link points to).
    let found = read_no_follow(path)?;
    if let Some(expected) = expected
        && !holds(found.as_ref(), expected)
    {
        return Ok(false);
    }
    let (mut file, tmp) = create_temp(dir, path)?;
    let result = (|| {
        file.write_all(contents)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = found.as_ref().map_or(NEW_FILE_MODE, |(_, meta)| {
                meta.permissions().mode() & 0o7777
            });
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        if let Some((_, meta)) = &found {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        if let Some(expected) = expected
            && !holds(read_no_follow(path)?.as_ref(), expected)
        {
            std::fs::remove_file(&tmp)?;
            return Ok(false);
        }
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Persisting the rename; not every platform lets a directory be synced.
            let _ = d.sync_all();
        }
        Ok(true)
    })();
    drop(file);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
