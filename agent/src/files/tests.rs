//! The managed files: what each section holds, symbolic links left alone unless they lead to an
//! instruction file in the home or the project, and atomic writes that keep permissions and never replace
//! unseen content.

use super::write::create_temp;
use super::*;
use crate::ruleset::{EffectiveRule, Layer, Mode, render_layer};
use crate::ruleset::{LayerRules, Layers, RuleSetDoc};
use crate::snapshot::StoredRuleSet;

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
                && std::fs::read(&path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
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
fn a_link_is_managed_only_to_an_instruction_file_in_the_home_or_the_project() -> anyhow::Result<()>
{
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
