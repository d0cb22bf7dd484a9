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

use crate::ruleset::{EffectiveRule, Layer, Mode, render_layer};
use crate::snapshot::{RuleMark, StoredRuleSet};
use globset::{Glob, GlobSetBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The managed file name in a project.
pub const PROJECT_FILE: &str = "CLAUDE.md";
/// How many entries of a project tree trigger matching looks at, at most.
const MAX_SCAN: usize = 20_000;
/// Directories trigger matching never enters.
const SKIP_DIRS: &[&str] = &[".git", "target", "node_modules", ".venv", "vendor"];

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

/// What a managed section should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The body; empty when no rule applies.
    pub body: String,
    /// The strictest mode of its rules.
    pub mode: Mode,
    /// The team of its first rule.
    pub team: String,
    /// Its first rule.
    pub rule: String,
    /// The shortest temporary timeout among its rules.
    pub temporary_timeout_secs: Option<u64>,
    /// Each rule once, with its strictest mode: how an edit of its text is enforced.
    pub rules: Vec<RuleMark>,
}

/// One mark per rule id (teams in team id order): a rule several teams include is enforced by the
/// strictest of their modes, reported against the first team with that mode.
fn marks(rules: &[(String, &EffectiveRule)]) -> Vec<RuleMark> {
    let mut out: Vec<RuleMark> = Vec::new();
    for (team, rule) in rules {
        let id = rule.rule_id.to_string();
        match out.iter_mut().find(|m| m.rule == id) {
            Some(mark) => {
                if rule.mode > mark.mode {
                    mark.mode = rule.mode;
                    mark.team = team.clone();
                }
                mark.temporary_timeout_secs =
                    match (mark.temporary_timeout_secs, rule.temporary_timeout_secs) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
            }
            None => out.push(RuleMark {
                rule: id,
                team: team.clone(),
                mode: rule.mode,
                temporary_timeout_secs: rule.temporary_timeout_secs,
            }),
        }
    }
    out
}

fn summarize(body: String, rules: &[(String, &EffectiveRule)]) -> Desired {
    let mode = rules
        .iter()
        .map(|(_, r)| r.mode)
        .max()
        .unwrap_or(Mode::Warning);
    // The change is reported against a rule of the strictest mode: that is the rule the section is
    // enforced under (a temporary change must name a temporary-mode rule to open a change request).
    let (team, rule) = rules
        .iter()
        .find(|(_, r)| r.mode == mode)
        .map(|(t, r)| (t.clone(), r.rule_id.to_string()))
        .unwrap_or_default();
    Desired {
        body,
        mode,
        team,
        rule,
        rules: marks(rules),
        temporary_timeout_secs: rules
            .iter()
            .filter_map(|(_, r)| r.temporary_timeout_secs)
            .min(),
    }
}

/// The section a target should hold, from the rule sets in force.
pub fn desired(target: &Target, rulesets: &[StoredRuleSet]) -> Desired {
    let mut sorted: Vec<&StoredRuleSet> = rulesets.iter().collect();
    sorted.sort_by(|a, b| a.team.cmp(&b.team));
    match (&target.layer, &target.project) {
        (Layer::Project, Some(dir)) => {
            let files = project_files(dir);
            let mut seen = BTreeSet::new();
            let mut rules: Vec<(String, &EffectiveRule)> = Vec::new();
            for rs in &sorted {
                for rule in &rs.doc.layers.project.rules {
                    if seen.contains(&rule.rule_id) || !triggered(rule, &files) {
                        continue;
                    }
                    seen.insert(rule.rule_id);
                    rules.push((rs.team.clone(), rule));
                }
            }
            let owned: Vec<EffectiveRule> = rules.iter().map(|(_, r)| (*r).clone()).collect();
            let body = render_layer(Layer::Project, &owned);
            summarize(body, &rules)
        }
        (layer, _) => {
            let mut texts: Vec<&str> = Vec::new();
            let mut rules: Vec<(String, &EffectiveRule)> = Vec::new();
            for rs in &sorted {
                let lr = rs.doc.layers.layer(*layer);
                if !lr.text.is_empty() && !texts.contains(&lr.text.as_str()) {
                    texts.push(&lr.text);
                }
                rules.extend(lr.rules.iter().map(|r| (rs.team.clone(), r)));
            }
            summarize(texts.join("\n"), &rules)
        }
    }
}

fn triggered(rule: &EffectiveRule, files: &[PathBuf]) -> bool {
    if rule.triggers.is_empty() {
        return true;
    }
    let mut builder = GlobSetBuilder::new();
    for trigger in &rule.triggers {
        // A glob that does not parse matches nothing rather than everything.
        if let Ok(glob) = Glob::new(trigger) {
            builder.add(glob);
        }
    }
    match builder.build() {
        Ok(set) => files.iter().any(|f| set.is_match(f)),
        Err(_) => false,
    }
}

/// The project's files (relative paths), skipping VCS and build dirs, bounded.
fn project_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            if out.len() >= MAX_SCAN {
                return out;
            }
            let name = entry.file_name();
            let path = rel.join(&name);
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    if !SKIP_DIRS.iter().any(|s| name == *s) {
                        stack.push(path);
                    }
                }
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out
}

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
fn create_temp(dir: &Path, path: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{LayerRules, Layers, RuleSetDoc};

    fn rule(id: &str, mode: Mode, triggers: &[&str]) -> EffectiveRule {
        EffectiveRule {
            rule_id: uuid::Uuid::from_u128(id.parse().unwrap()),
            revision: 1,
            name: format!("Rule {id}"),
            category: None,
            priority: 0,
            mode,
            temporary_timeout_secs: None,
            triggers: triggers.iter().map(|s| (*s).to_owned()).collect(),
            content: format!("content {id}"),
        }
    }

    fn ruleset(team: &str, layer: Layer, rules: Vec<EffectiveRule>) -> StoredRuleSet {
        let lr = LayerRules {
            text: render_layer(layer, &rules),
            rules,
        };
        let mut layers = Layers::default();
        match layer {
            Layer::Organization => layers.organization = lr,
            Layer::Team => layers.team = lr,
            Layer::Project => layers.project = lr,
        }
        StoredRuleSet {
            team: team.into(),
            revision: 1,
            hash: "h".into(),
            doc: RuleSetDoc {
                team_id: uuid::Uuid::from_u128(u128::from(team.as_bytes()[0])),
                team_name: team.into(),
                archived: false,
                revision: 1,
                hash: "h".into(),
                updated_at: chrono::DateTime::default(),
                position: 0,
                layers,
                signature: None,
            },
        }
    }

    #[test]
    fn team_bodies_join_the_teams_texts_in_team_order_with_the_strictest_mode() {
        let paths = Paths::new(Path::new("/home/u"), "/org".into());
        let sets = vec![
            ruleset("b", Layer::Team, vec![rule("2", Mode::Warning, &[])]),
            ruleset("a", Layer::Team, vec![rule("1", Mode::Block, &[])]),
        ];
        let t = &targets(&paths, &[])[1];
        let d = desired(t, &sets);
        assert_eq!(
            d.body,
            format!(
                "{}\n{}",
                render_layer(Layer::Team, &[rule("1", Mode::Block, &[])]),
                render_layer(Layer::Team, &[rule("2", Mode::Warning, &[])])
            )
        );
        let one = uuid::Uuid::from_u128(1).to_string();
        assert_eq!(
            (d.mode, d.team.as_str(), d.rule.as_str()),
            (Mode::Block, "a", one.as_str())
        );
        let modes: Vec<(String, Mode)> = d.rules.iter().map(|m| (m.team.clone(), m.mode)).collect();
        assert_eq!(
            modes,
            vec![
                ("a".to_owned(), Mode::Block),
                ("b".to_owned(), Mode::Warning)
            ]
        );
    }

    #[test]
    fn identical_organization_texts_are_written_once() {
        let paths = Paths::new(Path::new("/h"), "/org".into());
        let sets = vec![
            ruleset("a", Layer::Organization, vec![rule("1", Mode::Block, &[])]),
            ruleset("b", Layer::Organization, vec![rule("1", Mode::Block, &[])]),
        ];
        let d = desired(&targets(&paths, &[])[0], &sets);
        assert_eq!(
            d.body,
            render_layer(Layer::Organization, &[rule("1", Mode::Block, &[])])
        );
        assert_eq!(d.rules.len(), 1);
    }

    #[test]
    fn project_rules_apply_when_a_trigger_matches_or_they_have_none() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("src"))?;
        std::fs::write(dir.path().join("src/main.rs"), "")?;
        let sets = vec![ruleset(
            "a",
            Layer::Project,
            vec![
                rule("1", Mode::Warning, &["src/**/*.rs"]),
                rule("2", Mode::Warning, &["**/*.py"]),
                rule("3", Mode::Temporary, &[]),
            ],
        )];
        let paths = Paths::new(Path::new("/h"), "/org".into());
        let all = targets(&paths, &[dir.path().to_path_buf()]);
        let d = desired(&all[2], &sets);
        assert!(d.body.contains("Rule 1") && d.body.contains("Rule 3"));
        assert!(!d.body.contains("Rule 2"));
        assert!(d.body.contains("Applies to: `src/**/*.rs`"));
        assert_eq!(d.mode, Mode::Temporary);
        Ok(())
    }

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-bytes\n";

    /// Every file under `dir` (links not followed) whose bytes contain `needle`.
    fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file()
                    && std::fs::read(&path)
                        .is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
                {
                    out.push(path);
                }
            }
        }
        out
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_private_key_is_left_alone_and_never_read_through() -> anyhow::Result<()> {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir()?;
        let home = dir.path().join("home");
        let key = home.join(".ssh/id_ed25519");
        std::fs::create_dir_all(key.parent().unwrap_or(&home))?;
        std::fs::write(&key, KEY)?;
        let project = home.join("repo");
        std::fs::create_dir_all(&project)?;
        let link = project.join("CLAUDE.md");
        symlink(&key, &link)?;
        let paths = Paths::new(&home, dir.path().join("etc/CLAUDE.md"));
        let watched = [project.clone()];

        assert!(matches!(
            resolve(&link, &home, Some(&project)),
            Resolution::Refuse(reason) if reason.contains("not an instruction file")
        ));
        let all = targets(&paths, &watched);
        assert!(all.iter().all(|t| t.layer != Layer::Project), "{all:?}");
        let refusals = refused(&paths, &watched);
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].file, link);

        // A write that races a link into place fails before anything is read through it.
        let error = write_atomic_if_unchanged(
            &link,
            Some(KEY.as_bytes()),
            format!("{KEY}section").as_bytes(),
        )
        .err()
        .ok_or_else(|| anyhow::anyhow!("wrote through a link"))?;
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(write_atomic(&link, b"section").is_err());
        assert_eq!(std::fs::read_link(&link)?, key);
        assert_eq!(std::fs::read_to_string(&key)?, KEY);
        assert_eq!(files_containing(dir.path(), "secret-key-bytes"), vec![key]);
        assert_eq!(
            std::fs::read_dir(&project)?.count(),
            1,
            "a temp file was left"
        );
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn a_link_is_managed_only_to_an_instruction_file_in_the_home_or_the_project()
    -> anyhow::Result<()> {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir()?;
        let elsewhere = tempfile::tempdir()?;
        let home = dir.path().join("home");
        let dotfiles = home.join("dotfiles/CLAUDE.md");
        std::fs::create_dir_all(home.join(".claude"))?;
        std::fs::create_dir_all(home.join("dotfiles"))?;
        std::fs::write(&dotfiles, "# mine\n")?;
        let paths = Paths::new(&home, dir.path().join("etc/CLAUDE.md"));
        symlink(&dotfiles, &paths.team_file)?;
        let project = dir.path().join("work/repo");
        std::fs::create_dir_all(project.join("docs"))?;
        std::fs::write(project.join("docs/CLAUDE.md"), "")?;
        symlink("docs/CLAUDE.md", project.join("CLAUDE.md"))?;

        // Through a link: the real file is the target; the link stays.
        let all = targets(&paths, std::slice::from_ref(&project));
        let real = |p: &Path| std::fs::canonicalize(p);
        assert_eq!(all[1].path, real(&dotfiles)?);
        assert_eq!(all[2].path, real(&project.join("docs/CLAUDE.md"))?);
        write_atomic(&all[1].path, b"# mine\nsection\n")?;
        assert!(
            std::fs::symlink_metadata(&paths.team_file)?
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&paths.team_file)?,
            "# mine\nsection\n"
        );

        // Outside the home and the project, to a directory, to nothing, to a managed file: refused.
        let outside = elsewhere.path().join("CLAUDE.md");
        std::fs::write(&outside, "")?;
        let cases = [
            (outside.clone(), "outside the home and the project"),
            (elsewhere.path().to_path_buf(), "not a regular file"),
            (elsewhere.path().join("missing/CLAUDE.md"), "leads nowhere"),
            (dotfiles.clone(), "managed already"),
        ];
        for (target, why) in cases {
            std::fs::remove_file(project.join("CLAUDE.md"))?;
            symlink(&target, project.join("CLAUDE.md"))?;
            let refusals = refused(&paths, std::slice::from_ref(&project));
            assert_eq!(refusals.len(), 1, "{target:?}: {refusals:?}");
            assert!(refusals[0].reason.contains(why), "{target:?}: {refusals:?}");
            assert_eq!(targets(&paths, std::slice::from_ref(&project)).len(), 2);
        }
        // A FIFO in a file's place is not opened (it would block).
        let fifo = project.join("CLAUDE.md");
        std::fs::remove_file(&fifo)?;
        let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
        anyhow::ensure!(made.success(), "mkfifo");
        assert!(matches!(
            resolve(&fifo, &home, Some(&project)),
            Resolution::Refuse(_)
        ));
        assert!(write_atomic(&fifo, b"x").is_err());
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn temp_files_are_created_private_and_the_file_gets_its_permissions() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("CLAUDE.md");
        let (file, tmp) = create_temp(dir.path(), &path)?;
        assert_eq!(file.metadata()?.permissions().mode() & 0o777, 0o600);
        drop(file);
        std::fs::remove_file(tmp)?;
        let mode = |p: &Path| -> anyhow::Result<u32> {
            Ok(std::fs::metadata(p)?.permissions().mode() & 0o7777)
        };
        write_atomic(&path, b"new")?;
        assert_eq!(mode(&path)?, 0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
        write_atomic(&path, b"again")?;
        assert_eq!(mode(&path)?, 0o640);
        Ok(())
    }

    #[test]
    fn atomic_writes_create_parents_keep_permissions_and_never_replace_unseen_content()
    -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a/b/CLAUDE.md");
        write_atomic(&path, b"one")?;
        assert_eq!(read(&path)?.as_deref(), Some(&b"one"[..]));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        write_atomic(&path, b"two")?;
        assert_eq!(read(&path)?.as_deref(), Some(&b"two"[..]));
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
        let leftovers = std::fs::read_dir(dir.path().join("a/b"))?.count();
        assert_eq!(leftovers, 1);
        assert!(!write_atomic_if_unchanged(&path, Some(b"one"), b"three")?);
        assert_eq!(read(&path)?.as_deref(), Some(&b"two"[..]));
        assert!(write_atomic_if_unchanged(&path, Some(b"two"), b"three")?);
        assert_eq!(read(&path)?.as_deref(), Some(&b"three"[..]));
        assert_eq!(std::fs::read_dir(dir.path().join("a/b"))?.count(), 1);
        assert_eq!(read(&dir.path().join("missing"))?, None);
        Ok(())
    }
}
