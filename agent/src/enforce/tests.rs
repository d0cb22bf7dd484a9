use super::*;
use crate::ruleset::{EffectiveRule, Layer, LayerRules, Layers, RuleSetDoc, render_layer};
use edict_api::protocol::DecisionAction;

mod per_rule;
use crate::snapshot::StoredRuleSet;

struct Fixture {
    _dir: tempfile::TempDir,
    snapshot: Arc<Snapshot>,
    enforcer: Enforcer,
    team_file: PathBuf,
}

/// The id of test rule `n`.
fn rule_id(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}

fn rule(n: u128, name: &str, mode: Mode, content: &str) -> EffectiveRule {
    EffectiveRule {
        rule_id: uuid::Uuid::from_u128(n),
        revision: 1,
        name: name.into(),
        category: None,
        priority: 0,
        mode,
        temporary_timeout_secs: None,
        triggers: Vec::new(),
        content: content.into(),
    }
}

fn ruleset_of(team: &str, revision: u64, rules: Vec<EffectiveRule>) -> StoredRuleSet {
    let layers = Layers {
        team: LayerRules {
            text: render_layer(Layer::Team, &rules),
            rules,
        },
        ..Layers::default()
    };
    StoredRuleSet {
        team: team.into(),
        revision,
        hash: format!("h{revision}"),
        doc: RuleSetDoc {
            team_id: uuid::Uuid::from_u128(0xa),
            team_name: team.into(),
            archived: false,
            revision,
            hash: format!("h{revision}"),
            updated_at: chrono::DateTime::default(),
            position: 1,
            layers,
            signature: None,
        },
    }
}

fn ruleset(team: &str, mode: Mode, content: &str) -> StoredRuleSet {
    ruleset_of(team, 1, vec![rule(1, "No secrets", mode, content)])
}

fn fixture(mode: Mode) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let snapshot = Arc::new(Snapshot::open(&dir.path().join("data"))?);
    let paths = Paths::new(&dir.path().join("home"), dir.path().join("etc/CLAUDE.md"));
    let team_file = paths.team_file.clone();
    snapshot.put_ruleset(&ruleset("team-a", mode, "Never commit secrets."))?;
    let config = EnforceConfig {
        loop_threshold: 3,
        loop_window: Duration::from_secs(60),
        settle: Duration::from_millis(10),
    };
    let enforcer = Enforcer::new(snapshot.clone(), paths, config, Arc::new(Notify::new()));
    Ok(Fixture {
        _dir: dir,
        snapshot,
        enforcer,
        team_file,
    })
}

fn edit(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    std::fs::write(
        path,
        text.replace("Never commit secrets.", "Commit what you like."),
    )?;
    Ok(())
}

fn kinds(snapshot: &Snapshot) -> anyhow::Result<Vec<ReportKind>> {
    Ok(snapshot.outbox()?.into_iter().map(|r| r.kind).collect())
}

#[test]
fn a_rule_set_writes_the_section_and_keeps_the_user_text() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    std::fs::create_dir_all(f.team_file.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&f.team_file, "# My notes\n")?;
    f.enforcer.sync_all()?;
    let text = std::fs::read_to_string(&f.team_file)?;
    assert!(text.starts_with("# My notes\n\n<!-- edict:begin layer=team -->\n"));
    assert!(text.contains("Never commit secrets."));
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Unchanged);
    assert!(f.snapshot.outbox()?.is_empty());
    Ok(())
}

#[test]
fn an_edited_block_section_is_restored_and_reported() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    f.enforcer.sync_all()?;
    let written = std::fs::read_to_string(&f.team_file)?;
    std::fs::write(&f.team_file, format!("mine before\n{written}mine after\n"))?;
    edit(&f.team_file)?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Restored);
    let text = std::fs::read_to_string(&f.team_file)?;
    assert_eq!(text, format!("mine before\n{written}mine after\n"));
    let outbox = f.snapshot.outbox()?;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].kind, ReportKind::BlockReverted);
    assert_eq!(
        (outbox[0].team.as_str(), outbox[0].rule.as_str()),
        ("team-a", rule_id(1).as_str())
    );
    assert!(outbox[0].diff.contains("+Commit what you like."));
    assert_ne!(outbox[0].original_hash, outbox[0].new_hash);
    Ok(())
}

#[test]
fn a_deleted_block_file_is_recreated() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    f.enforcer.sync_all()?;
    std::fs::remove_file(&f.team_file)?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Restored);
    assert!(std::fs::read_to_string(&f.team_file)?.contains("Never commit secrets."));
    Ok(())
}

#[test]
fn a_temporary_change_is_kept_reported_once_and_amended_with_its_change_request()
-> anyhow::Result<()> {
    let mut f = fixture(Mode::Temporary)?;
    f.enforcer.sync_all()?;
    edit(&f.team_file)?;
    let edited = std::fs::read_to_string(&f.team_file)?;
    assert_eq!(
        f.enforcer.check_file(&f.team_file)?,
        Outcome::Reported(ReportKind::TemporaryChanged)
    );
    assert_eq!(std::fs::read_to_string(&f.team_file)?, edited);
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Unchanged);
    let first = f.snapshot.outbox()?.remove(0);
    f.enforcer
        .acknowledged(&first.report_id, Some("cr-1".into()))?;
    assert!(f.snapshot.outbox()?.is_empty());
    std::fs::write(&f.team_file, edited.replace("like.", "like!"))?;
    f.enforcer.check_file(&f.team_file)?;
    let amendment = f.snapshot.outbox()?.remove(0);
    assert_eq!(amendment.change_request.as_deref(), Some("cr-1"));
    Ok(())
}

#[test]
fn a_warning_change_is_kept_and_reported_once() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Warning)?;
    f.enforcer.sync_all()?;
    edit(&f.team_file)?;
    f.enforcer.check_file(&f.team_file)?;
    f.enforcer.check_file(&f.team_file)?;
    f.enforcer.sync_all()?;
    assert_eq!(kinds(&f.snapshot)?, vec![ReportKind::WarningKept]);
    assert!(std::fs::read_to_string(&f.team_file)?.contains("Commit what you like."));
    Ok(())
}

#[test]
fn an_editor_fighting_the_agent_is_flagged_once_and_no_longer_reverted() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    f.enforcer.sync_all()?;
    for _ in 0..3 {
        edit(&f.team_file)?;
        assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Restored);
    }
    edit(&f.team_file)?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Looping);
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Looping);
    assert!(std::fs::read_to_string(&f.team_file)?.contains("Commit what you like."));
    let k = kinds(&f.snapshot)?;
    assert_eq!(
        k.iter()
            .filter(|k| **k == ReportKind::BlockReverted)
            .count(),
        3
    );
    assert_eq!(
        k.iter().filter(|k| **k == ReportKind::RevertLoop).count(),
        1
    );
    Ok(())
}

fn decision(cr: &str, file: &Path, action: DecisionAction, until: Option<String>) -> Decision {
    Decision {
        change_request: cr.into(),
        file: file.to_string_lossy().into_owned(),
        rule: None,
        content_hash: None,
        decision_id: None,
        action,
        until,
    }
}

/// Edits the file, lets the enforcer report it and acknowledges the report with `cr`.
fn report_and_ack(f: &mut Fixture, cr: &str) -> anyhow::Result<Report> {
    f.enforcer.check_file(&f.team_file)?;
    let report = f
        .snapshot
        .outbox()?
        .pop()
        .ok_or(anyhow::anyhow!("no report"))?;
    f.enforcer
        .acknowledged(&report.report_id, Some(cr.into()))?;
    Ok(report)
}

#[test]
fn a_revert_decision_restores_the_section() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Temporary)?;
    f.enforcer.sync_all()?;
    edit(&f.team_file)?;
    report_and_ack(&mut f, "cr-1")?;
    assert_eq!(
        f.enforcer.decide(&decision(
            "cr-1",
            &f.team_file,
            DecisionAction::Revert,
            None
        ))?,
        Outcome::Restored
    );
    assert!(std::fs::read_to_string(&f.team_file)?.contains("Never commit secrets."));
    assert!(f.snapshot.changes()?.is_empty());
    Ok(())
}

#[test]
fn a_keep_decision_accepts_the_change_until_its_time_then_restores() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Temporary)?;
    f.enforcer.sync_all()?;
    edit(&f.team_file)?;
    report_and_ack(&mut f, "cr-1")?;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    f.enforcer.decide(&decision(
        "cr-1",
        &f.team_file,
        DecisionAction::Keep,
        Some(later),
    ))?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Unchanged);
    assert!(std::fs::read_to_string(&f.team_file)?.contains("Commit what you like."));
    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    f.enforcer.decide(&decision(
        "cr-1",
        &f.team_file,
        DecisionAction::Keep,
        Some(past),
    ))?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Restored);
    assert!(std::fs::read_to_string(&f.team_file)?.contains("Never commit secrets."));
    Ok(())
}

#[test]
fn a_removed_team_takes_its_section_away_and_leaves_the_user_text() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    std::fs::create_dir_all(f.team_file.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&f.team_file, "# Mine\n")?;
    f.enforcer.sync_all()?;
    f.snapshot.remove_ruleset("team-a")?;
    f.enforcer.sync_all()?;
    assert_eq!(std::fs::read_to_string(&f.team_file)?, "# Mine\n\n");
    assert!(f.snapshot.file(&f.team_file)?.is_none());
    Ok(())
}

#[test]
fn a_new_revision_rewrites_the_section() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    f.enforcer.sync_all()?;
    f.snapshot
        .put_ruleset(&ruleset("team-a", Mode::Block, "Rotate keys monthly."))?;
    f.enforcer.sync_all()?;
    let text = std::fs::read_to_string(&f.team_file)?;
    assert!(text.contains("Rotate keys monthly.") && !text.contains("Never commit"));
    assert!(f.snapshot.outbox()?.is_empty());
    Ok(())
}

#[test]
fn the_users_bytes_outside_the_markers_survive_byte_for_byte_even_invalid_utf8()
-> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    std::fs::create_dir_all(f.team_file.parent().unwrap_or(Path::new(".")))?;
    let before: &[u8] = b"# Notes \xff\xfe latin-1: caf\xe9\r\n";
    let after: &[u8] = b"\ntrailing \xc3\x28 bytes\n";
    std::fs::write(&f.team_file, before)?;
    f.enforcer.sync_all()?;
    let written = std::fs::read(&f.team_file)?;
    assert!(
        written.starts_with(before),
        "{:?}",
        String::from_utf8_lossy(&written)
    );
    let mut with_after = written.clone();
    with_after.extend_from_slice(after);
    std::fs::write(&f.team_file, &with_after)?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Unchanged);
    // An edit of the block rule is restored; every byte around the section stays.
    let section = std::str::from_utf8(&written[before.len()..])?;
    let mut tampered = before.to_vec();
    tampered.extend_from_slice(
        section
            .replace("Never commit secrets.", "Commit what you like.")
            .as_bytes(),
    );
    tampered.extend_from_slice(after);
    std::fs::write(&f.team_file, &tampered)?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Restored);
    assert_eq!(std::fs::read(&f.team_file)?, with_after);
    Ok(())
}
