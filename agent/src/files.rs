//! Where each layer's managed section goes, what it holds, and how it is written.
//!
//! - organization → [`Paths::org_file`] (`/etc/claude-code/CLAUDE.md`, env `EDICT_AGENT_ORG_FILE`);
//! - team → `<home>/.claude/CLAUDE.md` (home from env `EDICT_AGENT_HOME`, else the user's home);
//! - project → `<dir>/CLAUDE.md` for each watched project dir.
//!
//! The organization and team bodies are the distinct rendered texts of the teams' layer, in team id
//! order. The project body is rendered here (same format as the server) from the project rules whose
//! triggers match a file of the project, or that have no trigger. Writes are atomic: a temp file in the
//! same directory, fsync, rename, keeping the existing file's permissions.

use crate::ruleset::{EffectiveRule, Layer, Mode, render_layer};
use crate::snapshot::{RuleMark, StoredRuleSet};
use globset::{Glob, GlobSetBuilder};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

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
}

impl Paths {
    /// The paths for a home directory and an organization file.
    pub fn new(home: &Path, org_file: PathBuf) -> Self {
        Paths {
            org_file,
            team_file: home.join(".claude").join("CLAUDE.md"),
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

/// Every managed file: the organization and team files, and each watched project's file.
pub fn targets(paths: &Paths, watched: &[PathBuf]) -> Vec<Target> {
    let mut out = vec![
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
        out.push(Target {
            path: Paths::project_file(dir),
            layer: Layer::Project,
            project: Some(dir.clone()),
        });
    }
    out
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
/// On any other read failure.
pub fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to `path` atomically: parent dirs created, a temp file in the same directory
/// written and fsynced, the existing file's permissions kept, then renamed over `path`.
///
/// # Errors
/// On any filesystem failure (the temp file is removed).
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_atomic_if(path, None, contents).map(|_| ())
}

/// Like [`write_atomic`], but only when the file still holds `expected` (`Some(None)`: does not exist)
/// right before the rename; `Ok(false)` when someone changed it meanwhile (nothing is written).
///
/// This narrows the race with another writer to the instant between the check and the rename: the agent
/// never replaces a file based on content it did not see (which would orphan the other writer's data).
///
/// # Errors
/// On any filesystem failure (the temp file is removed).
pub fn write_atomic_if_unchanged(
    path: &Path,
    expected: Option<&[u8]>,
    contents: &[u8],
) -> std::io::Result<bool> {
    write_atomic_if(path, Some(expected), contents)
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
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.edict-{:016x}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents)?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        if let Some(expected) = expected
            && read(path)?.as_deref() != expected
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
