//! Each rule enforced by its own mode (rule markers), decisions that act only on the change they
//! name, and temporary changes that time out offline.

use super::*;

const BLOCK_TEXT: &str = "Never commit secrets.";
const WARN_TEXT: &str = "Prefer small commits.";

/// A team layer with a block rule (1) and a rule (2) of `mode`.
fn two_rules(f: &Fixture, revision: u64, mode: Mode) -> anyhow::Result<()> {
    f.snapshot.put_ruleset(&ruleset_of(
        "team-a",
        revision,
        vec![
            rule(1, "No secrets", Mode::Block, BLOCK_TEXT),
            rule(2, "Small commits", mode, WARN_TEXT),
        ],
    ))?;
    Ok(())
}

fn replace(path: &Path, from: &str, to: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    assert!(text.contains(from), "{from:?} not in {text:?}");
    std::fs::write(path, text.replacen(from, to, 1))?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)?)
}

#[test]
fn a_warning_rules_edit_is_kept_while_a_block_rule_shares_its_section() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    two_rules(&f, 2, Mode::Warning)?;
    f.enforcer.sync_all()?;
    replace(&f.team_file, WARN_TEXT, "Commit however you like.")?;
    assert_eq!(
        f.enforcer.check_file(&f.team_file)?,
        Outcome::Reported(ReportKind::WarningKept)
    );
    assert!(read(&f.team_file)?.contains("Commit however you like."));
    let reports = f.snapshot.outbox()?;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].rule, rule_id(2));
    assert!(reports[0].diff.contains("+Commit however you like."));
    assert!(!reports[0].diff.contains(BLOCK_TEXT));

    // The block rule's text edited too: only that text is restored, the warning's edit stays.
    replace(&f.team_file, BLOCK_TEXT, "Commit secrets.")?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Restored);
    let text = read(&f.team_file)?;
    assert!(text.contains(BLOCK_TEXT) && text.contains("Commit however you like."));
    let reports = f.snapshot.outbox()?;
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.kind, r.rule.clone()))
            .collect::<Vec<_>>(),
        vec![
            (ReportKind::WarningKept, rule_id(2)),
            (ReportKind::BlockReverted, rule_id(1))
        ]
    );
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Unchanged);
    Ok(())
}

#[test]
fn a_temporary_rules_edit_opens_a_change_request_for_that_rule() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    two_rules(&f, 2, Mode::Temporary)?;
    f.enforcer.sync_all()?;
    replace(&f.team_file, WARN_TEXT, "Any size.")?;
    assert_eq!(
        f.enforcer.check_file(&f.team_file)?,
        Outcome::Reported(ReportKind::TemporaryChanged)
    );
    let report = f.snapshot.outbox()?.remove(0);
    assert_eq!(
        (report.rule.as_str(), report.team.as_str()),
        (rule_id(2).as_str(), "team-a")
    );
    assert!(read(&f.team_file)?.contains("Any size."));
    Ok(())
}

#[test]
fn raising_a_rule_to_block_reverts_its_standing_edit_and_lowering_keeps_it() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    two_rules(&f, 2, Mode::Warning)?;
    f.enforcer.sync_all()?;
    replace(&f.team_file, WARN_TEXT, "Commit however you like.")?;
    f.enforcer.check_file(&f.team_file)?;
    assert!(read(&f.team_file)?.contains("Commit however you like."));
    // Raised to block: the standing edit is reverted at once.
    two_rules(&f, 3, Mode::Block)?;
    f.enforcer.sync_all()?;
    assert!(read(&f.team_file)?.contains(WARN_TEXT));
    let last = f
        .snapshot
        .outbox()?
        .pop()
        .ok_or(anyhow::anyhow!("no report"))?;
    assert_eq!(
        (last.kind, last.rule),
        (ReportKind::BlockReverted, rule_id(2))
    );

    // Temporary, edited, then lowered to warning: the edit stays and is not reported again.
    two_rules(&f, 4, Mode::Temporary)?;
    f.enforcer.sync_all()?;
    replace(&f.team_file, WARN_TEXT, "Any size.")?;
    f.enforcer.check_file(&f.team_file)?;
    let before = f.snapshot.outbox()?.len();
    two_rules(&f, 5, Mode::Warning)?;
    f.enforcer.sync_all()?;
    assert!(read(&f.team_file)?.contains("Any size."));
    assert_eq!(f.snapshot.outbox()?.len(), before);
    Ok(())
}

#[test]
fn an_edit_not_tied_to_one_rule_falls_back_to_the_strictest_mode() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Block)?;
    two_rules(&f, 2, Mode::Warning)?;
    f.enforcer.sync_all()?;
    let written = read(&f.team_file)?;
    // Text between the rules.
    replace(&f.team_file, "## General", "## Whatever")?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Restored);
    assert_eq!(read(&f.team_file)?, written);
    // A broken rule marker, with an edit of the warning rule's text: the whole section is restored.
    replace(&f.team_file, "<!-- edict:rule-end -->", "")?;
    replace(&f.team_file, WARN_TEXT, "Commit however you like.")?;
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Restored);
    assert_eq!(read(&f.team_file)?, written);
    assert_eq!(
        kinds(&f.snapshot)?,
        vec![ReportKind::BlockReverted, ReportKind::BlockReverted]
    );
    Ok(())
}

/// A decision as a gateway sends it, naming the rule and the content.
fn named(cr: &str, f: &Fixture, report: &Report, action: DecisionAction, version: u32) -> Decision {
    Decision {
        change_request: cr.into(),
        file: f.team_file.to_string_lossy().into_owned(),
        rule: Some(report.rule.clone()),
        content_hash: Some(report.new_hash.clone()),
        decision_id: Some(format!("{cr}:{version}")),
        action,
        until: None,
    }
}

#[test]
fn a_decision_acts_only_on_the_change_it_names() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Temporary)?;
    f.enforcer.sync_all()?;
    // Change request 1: rejected, reverted.
    edit(&f.team_file)?;
    let first = report_and_ack(&mut f, "cr-1")?;
    let reject = named("cr-1", &f, &first, DecisionAction::Revert, 2);
    assert_eq!(f.enforcer.decide(&reject)?, Outcome::Restored);
    assert!(read(&f.team_file)?.contains("Never commit secrets."));
    // Change request 2: a later edit, approved.
    replace(
        &f.team_file,
        "Never commit secrets.",
        "Secrets in vaults only.",
    )?;
    let second = report_and_ack(&mut f, "cr-2")?;
    let approve = named("cr-2", &f, &second, DecisionAction::Keep, 2);
    assert_eq!(f.enforcer.decide(&approve)?, Outcome::Unchanged);
    // Every decision replayed (a reconnect): the approved text stays.
    for d in [&reject, &approve] {
        f.enforcer.decide(d)?;
    }
    let mut replayed = reject.clone();
    replayed.decision_id = Some("cr-1:9".into());
    assert_eq!(f.enforcer.decide(&replayed)?, Outcome::Unchanged);
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Unchanged);
    assert!(read(&f.team_file)?.contains("Secrets in vaults only."));
    Ok(())
}

#[test]
fn a_decision_about_content_no_longer_on_disk_is_ignored() -> anyhow::Result<()> {
    let mut f = fixture(Mode::Temporary)?;
    f.enforcer.sync_all()?;
    edit(&f.team_file)?;
    let report = report_and_ack(&mut f, "cr-1")?;
    let mut reject = named("cr-1", &f, &report, DecisionAction::Revert, 2);
    reject.content_hash = Some(hash_body("something else"));
    assert_eq!(f.enforcer.decide(&reject)?, Outcome::Unchanged);
    assert!(read(&f.team_file)?.contains("Commit what you like."));
    // Not remembered: the right decision still applies.
    reject.content_hash = Some(report.new_hash.clone());
    assert_eq!(f.enforcer.decide(&reject)?, Outcome::Restored);
    Ok(())
}

#[test]
fn a_temporary_change_past_its_timeout_is_reverted_by_the_agent_and_reported() -> anyhow::Result<()>
{
    let mut f = fixture(Mode::Block)?;
    let mut temporary = rule(1, "No secrets", Mode::Temporary, "Never commit secrets.");
    temporary.temporary_timeout_secs = Some(1);
    f.snapshot
        .put_ruleset(&ruleset_of("team-a", 2, vec![temporary]))?;
    f.enforcer.sync_all()?;
    edit(&f.team_file)?;
    report_and_ack(&mut f, "cr-1")?;
    // No decision comes (offline): the periodic audit restores the text once the timeout passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        f.enforcer.sync_all()?;
        if read(&f.team_file)?.contains("Never commit secrets.") {
            break;
        }
        assert!(Instant::now() < deadline, "not reverted after its timeout");
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = f
        .snapshot
        .outbox()?
        .pop()
        .ok_or(anyhow::anyhow!("no report"))?;
    assert_eq!(report.kind, ReportKind::BlockReverted);
    assert_eq!(report.change_request.as_deref(), Some("cr-1"));
    assert_eq!(report.rule, rule_id(1));
    assert!(f.snapshot.changes()?.is_empty());
    Ok(())
}

#[test]
fn a_new_revision_keeps_the_standing_edits_of_the_rules_it_leaves_unchanged() -> anyhow::Result<()>
{
    let mut f = fixture(Mode::Block)?;
    let mut temporary = rule(2, "Small commits", Mode::Temporary, WARN_TEXT);
    temporary.temporary_timeout_secs = Some(3600);
    let with = |block_text: &str, revision: u32, temporary: &EffectiveRule| {
        let mut block = rule(1, "No secrets", Mode::Block, block_text);
        block.revision = revision;
        vec![block, temporary.clone()]
    };
    f.snapshot
        .put_ruleset(&ruleset_of("team-a", 2, with(BLOCK_TEXT, 1, &temporary)))?;
    f.enforcer.sync_all()?;
    replace(&f.team_file, WARN_TEXT, "Any size, approved.")?;
    let report = report_and_ack(&mut f, "cr-2")?;
    let approve = named("cr-2", &f, &report, DecisionAction::Keep, 2);
    f.enforcer.decide(&approve)?;
    let reports = f.snapshot.outbox()?.len();
    // A new revision of the other rule: its new text is written, the approved edit stays.
    f.snapshot.put_ruleset(&ruleset_of(
        "team-a",
        3,
        with("Rotate keys monthly.", 2, &temporary),
    ))?;
    f.enforcer.sync_all()?;
    let text = read(&f.team_file)?;
    assert!(text.contains("Rotate keys monthly."), "{text}");
    assert!(text.contains("Any size, approved."), "{text}");
    assert_eq!(f.enforcer.check_file(&f.team_file)?, Outcome::Unchanged);
    assert_eq!(f.snapshot.outbox()?.len(), reports);
    // The approved rule's own new revision replaces the edit.
    temporary.revision = 2;
    f.snapshot.put_ruleset(&ruleset_of(
        "team-a",
        4,
        with("Rotate keys monthly.", 2, &temporary),
    ))?;
    f.enforcer.sync_all()?;
    let text = read(&f.team_file)?;
    assert!(
        text.contains(WARN_TEXT) && !text.contains("Any size"),
        "{text}"
    );
    assert!(f.snapshot.changes()?.is_empty());
    Ok(())
}
