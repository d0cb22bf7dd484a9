//! `edict-agent service install|status|uninstall --no-start --unit-dir <tmp>`: the unit file the real
//! binary writes (its own absolute path, the global options carried over, made absolute), what `status`
//! says of it (current, or stale when another copy of the agent installed it), idempotence, removal,
//! and a launchd agent that parses as a property list.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edict-agent"))
}

fn run(program: &Path, args: &[&str], cwd: &Path) -> anyhow::Result<Output> {
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_remove("EDICT_AGENT_DATA_DIR")
        .env_remove("EDICT_AGENT_HOME")
        .env_remove("EDICT_AGENT_ORG_FILE")
        .env_remove("EDICT_AGENT_CA_FILE")
        .env_remove("EDICT_AGENT_INSECURE")
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

fn status(program: &Path, global: &[&str], unit_dir: &str, cwd: &Path) -> anyhow::Result<Value> {
    let mut args = global.to_vec();
    args.extend(["service", "status", "--no-start", "--unit-dir", unit_dir]);
    args.extend(["--output", "json"]);
    Ok(serde_json::from_slice(&run(program, &args, cwd)?.stdout)?)
}

#[test]
fn service_install_writes_a_current_systemd_unit_once_and_uninstall_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("ca.pem"), "not read by install").unwrap();
    // Relative paths, as a person types them: the unit names them absolute.
    let global = [
        "--data-dir",
        "data",
        "--home",
        "home",
        "--org-file",
        "etc/CLAUDE.md",
        "--ca-file",
        "ca.pem",
        "--insecure",
    ];
    let install = |program: &Path| {
        let mut args = global.to_vec();
        args.extend(["service", "install", "--no-start", "--unit-dir", "units"]);
        args.extend(["--manager", "systemd"]);
        String::from_utf8(run(program, &args, root).unwrap().stdout).unwrap()
    };

    let said = install(&agent());
    assert!(said.contains("wrote"), "{said}");
    let file = root.join("units/edict-agent.service");
    let unit = std::fs::read_to_string(&file).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let r = root.display();
    assert_eq!(
        exec,
        format!(
            "{} --data-dir {r}/data --home {r}/home --org-file {r}/etc/CLAUDE.md --ca-file {r}/ca.pem --insecure run",
            agent().display()
        )
    );
    assert!(agent().is_absolute());
    assert!(unit.contains("\nRestart=on-failure\n") && unit.contains("\nRestartSec=5\n"));
    assert!(unit.contains("\nNoNewPrivileges=yes\n"));
    assert!(unit.contains("\nWantedBy=default.target\n"));
    // The service starts elsewhere, so it does not create the data directory here.
    assert!(!root.join("data").exists());

    let units = root.join("units").display().to_string();
    let current = status(&agent(), &global, &units, root).unwrap();
    assert_eq!(current["installed"], true);
    assert_eq!(current["matches"], true);
    assert_eq!(current["stale_program"], false);
    assert_eq!(current["program"], agent().display().to_string());
    assert_eq!(
        current["active"],
        Value::Null,
        "--no-start asks no systemctl"
    );

    // Idempotent: the same file, said so.
    let said = install(&agent());
    assert!(said.contains("up to date"), "{said}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), unit);

    // Installed by another copy of the agent (an upgrade moved it): the unit runs a stale program.
    let copy = root.join("old-edict-agent");
    std::fs::copy(agent(), &copy).unwrap();
    assert!(install(&copy).contains("updated"));
    let stale = status(&agent(), &global, &units, root).unwrap();
    assert_eq!(stale["installed"], true);
    assert_eq!(stale["matches"], false);
    assert_eq!(stale["stale_program"], true);
    assert_eq!(stale["program"], copy.display().to_string());
    let text = run(
        &agent(),
        &["service", "status", "--no-start", "--unit-dir", &units],
        root,
    );
    let text = String::from_utf8(text.unwrap().stdout).unwrap();
    assert!(
        text.contains("run `edict-agent service install` again"),
        "{text}"
    );

    let said = run(
        &agent(),
        &["service", "uninstall", "--no-start", "--unit-dir", &units],
        root,
    );
    assert!(String::from_utf8_lossy(&said.unwrap().stdout).contains("removed"));
    assert!(!file.exists());
    assert_eq!(
        status(&agent(), &global, &units, root).unwrap()["installed"],
        false
    );
}

#[test]
fn the_launchd_agent_is_a_property_list_running_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    run(
        &agent(),
        &[
            "--data-dir",
            "/tmp/a & <b>",
            "service",
            "install",
            "--no-start",
            "--manager",
            "launchd",
            "--unit-dir",
            "agents",
        ],
        root,
    )
    .unwrap();
    let file = root.join("agents/com.edict.agent.plist");
    let value = plist::Value::from_file(&file).unwrap();
    let dict = value.as_dictionary().unwrap();
    assert_eq!(dict["Label"].as_string(), Some("com.edict.agent"));
    let arguments: Vec<&str> = dict["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect();
    let program = agent().display().to_string();
    assert_eq!(
        arguments,
        [program.as_str(), "--data-dir", "/tmp/a & <b>", "run"]
    );
    assert_eq!(dict["RunAtLoad"].as_boolean(), Some(true));
    assert!(dict["KeepAlive"].as_dictionary().is_some());
    assert_eq!(dict["ThrottleInterval"].as_unsigned_integer(), Some(10));
    assert!(
        dict["StandardErrorPath"]
            .as_string()
            .unwrap()
            .ends_with("Library/Logs/edict-agent.log")
    );
    // The shipped template with its placeholders filled by hand parses too.
    let shipped = include_str!("../../packaging/com.edict.agent.plist")
        .replace(
            "\n@PROGRAM_ARGUMENTS@\n",
            "\n<string>/usr/local/bin/edict-agent</string>\n",
        )
        .replace("@LOG_FILE@", "/tmp/edict-agent.log");
    plist::Value::from_reader_xml(shipped.as_bytes()).unwrap();
}
