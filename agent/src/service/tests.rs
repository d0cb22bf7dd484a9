//! Unit tests of `service`: both managers' files in a temporary directory, and the error of a missing
//! tool.

use super::*;

fn spec(program: &str) -> ServiceSpec {
    ServiceSpec {
        program: program.to_owned(),
        args: vec!["--data-dir".to_owned(), "/d".to_owned(), "run".to_owned()],
        log_file: "/home/u/Library/Logs/edict-agent.log".to_owned(),
    }
}

fn service(manager: ServiceManager, dir: &Path, start: bool) -> Service {
    Service {
        manager,
        dir: dir.to_path_buf(),
        start,
        tool: "edict-test-no-such-tool".to_owned(),
    }
}

#[test]
fn each_manager_installs_idempotently_reports_and_uninstalls_without_starting() -> anyhow::Result<()>
{
    for manager in [ServiceManager::Systemd, ServiceManager::Launchd] {
        let dir = tempfile::tempdir()?;
        let unit_dir = dir.path().join("units");
        let service = service(manager, &unit_dir, false);
        let status = service.status(&spec("/bin/edict-agent"))?;
        assert!(!status.installed && !status.matches && status.active.is_none());

        assert_eq!(
            service.install(&spec("/bin/edict-agent"))?,
            Written::Created
        );
        assert_eq!(
            service.install(&spec("/bin/edict-agent"))?,
            Written::Unchanged
        );
        let status = service.status(&spec("/bin/edict-agent"))?;
        assert!(status.installed && status.matches && !status.stale_program);
        assert_eq!(status.program.as_deref(), Some("/bin/edict-agent"));

        // Another copy of the agent asks: the file runs a stale program.
        let status = service.status(&spec("/opt/edict-agent"))?;
        assert!(status.installed && !status.matches && status.stale_program);
        assert_eq!(
            service.install(&spec("/opt/edict-agent"))?,
            Written::Replaced
        );

        assert!(service.uninstall()?);
        assert!(!service.file().exists());
        assert!(!service.uninstall()?);
    }
    Ok(())
}

#[test]
fn a_missing_tool_fails_after_the_file_is_written_and_says_what_to_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let service = service(ServiceManager::Systemd, dir.path(), true);
    let error = format!(
        "{:#}",
        service.install(&spec("/bin/edict-agent")).unwrap_err()
    );
    assert!(service.file().is_file(), "the unit is written first");
    assert!(error.contains("was not found"), "{error}");
    assert!(error.contains("is written"), "{error}");
    assert!(
        error.contains("systemctl --user enable --now edict-agent.service"),
        "{error}"
    );
    assert!(error.contains("--no-start"), "{error}");
    // Uninstalling cannot stop it either: the file stays, so nothing runs without its unit.
    assert!(service.uninstall().is_err());
    assert!(service.file().is_file());
    Ok(())
}

#[cfg(unix)]
#[test]
fn the_unit_file_is_readable_by_its_manager() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let service = service(ServiceManager::Systemd, dir.path(), false);
    service.install(&spec("/bin/edict-agent"))?;
    let mode = std::fs::metadata(service.file())?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    Ok(())
}
