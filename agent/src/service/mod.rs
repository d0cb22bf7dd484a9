//! `edict-agent service install|uninstall|status`: the agent as the user's service, a systemd user
//! unit (`~/.config/systemd/user/edict-agent.service`) or a launchd agent
//! (`~/Library/LaunchAgents/com.edict.agent.plist`).
//!
//! The manager is a runtime value ([`ServiceManager`]), the system's by default, so both branches are
//! built and tested everywhere. The unit files come from the templates in `agent/packaging/`
//! ([`render`]). With `start` off (`--no-start`) only files are written or removed: no `systemctl` or
//! `launchctl` runs (for tests and packagers). A missing `systemctl`/`launchctl` is an error that comes
//! after the file is written and says what to run.

pub mod render;

use anyhow::{Context, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The systemd unit's name.
pub const SYSTEMD_UNIT: &str = "edict-agent.service";
/// The launchd agent's label (its file is `<label>.plist`).
pub const LAUNCHD_LABEL: &str = "com.edict.agent";

/// Which service manager runs the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    /// A systemd user unit (Linux).
    Systemd,
    /// A launchd agent (macOS).
    Launchd,
}

impl ServiceManager {
    /// This system's: launchd on macOS, systemd elsewhere.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") {
            ServiceManager::Launchd
        } else {
            ServiceManager::Systemd
        }
    }

    /// The unit file's name.
    pub fn file_name(self) -> String {
        match self {
            ServiceManager::Systemd => SYSTEMD_UNIT.to_owned(),
            ServiceManager::Launchd => format!("{LAUNCHD_LABEL}.plist"),
        }
    }

    /// Where the unit file goes by default: `$XDG_CONFIG_HOME/systemd/user` (else
    /// `~/.config/systemd/user`), or `~/Library/LaunchAgents`.
    ///
    /// # Errors
    /// When there is no home directory.
    pub fn default_dir(self) -> anyhow::Result<PathBuf> {
        let home = dirs::home_dir().context("no home directory: give --unit-dir")?;
        Ok(match self {
            ServiceManager::Systemd => std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .filter(|dir| dir.is_absolute())
                .unwrap_or_else(|| home.join(".config"))
                .join("systemd/user"),
            ServiceManager::Launchd => home.join("Library/LaunchAgents"),
        })
    }

    /// The command-line tool that loads units.
    fn tool(self) -> &'static str {
        match self {
            ServiceManager::Systemd => "systemctl",
            ServiceManager::Launchd => "launchctl",
        }
    }
}

/// What the service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The agent's absolute path.
    pub program: String,
    /// Its arguments: the global options, then `run`.
    pub args: Vec<String>,
    /// launchd only: where its stdout and stderr go.
    pub log_file: String,
}

/// One service manager's unit file in one directory.
#[derive(Debug, Clone)]
pub struct Service {
    /// The manager.
    pub manager: ServiceManager,
    /// The directory of the unit file.
    pub dir: PathBuf,
    /// Whether to run `systemctl`/`launchctl` (off: `--no-start`).
    pub start: bool,
    /// The tool to run (`systemctl`, `launchctl`; another name in tests).
    pub tool: String,
}

/// Which command a tool runs for (what to do by hand differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Install,
    Uninstall,
}

/// What `install` did to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Written {
    /// There was none.
    Created,
    /// There was another one.
    Replaced,
    /// It held this already.
    Unchanged,
}

/// What `service status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// The manager.
    pub manager: ServiceManager,
    /// The unit file.
    pub file: PathBuf,
    /// Whether it exists.
    pub installed: bool,
    /// Whether it holds what `install` would write now.
    pub matches: bool,
    /// The program it runs.
    pub program: Option<String>,
    /// The program `install` would write now.
    pub expected_program: String,
    /// The program it runs is not this one (moved, or another copy).
    pub stale_program: bool,
    /// systemd: `is-active`'s answer; launchd: `loaded` or `not loaded`. None with `--no-start` or
    /// when the tool cannot run.
    pub active: Option<String>,
    /// systemd: `is-enabled`'s answer.
    pub enabled: Option<String>,
}

impl Service {
    /// The manager's unit file in `dir` (its default directory when `None`).
    ///
    /// # Errors
    /// When there is no default directory.
    pub fn new(manager: ServiceManager, dir: Option<PathBuf>, start: bool) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(dir) => std::path::absolute(&dir).with_context(|| format!("{}", dir.display()))?,
            None => manager.default_dir()?,
        };
        Ok(Service {
            manager,
            dir,
            start,
            tool: manager.tool().to_owned(),
        })
    }

    /// The unit file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(self.manager.file_name())
    }

    /// Writes the unit file for `spec` (when it does not hold it already), then (with `start`) loads,
    /// enables and starts it: `systemctl --user daemon-reload`, `enable --now` (and `try-restart` when
    /// an older file was replaced), or `launchctl bootout` + `bootstrap gui/$UID`.
    ///
    /// # Errors
    /// When the file cannot be written or a tool fails or is missing (the file is written then).
    pub fn install(&self, spec: &ServiceSpec) -> anyhow::Result<Written> {
        let unit = render::render(self.manager, spec);
        let file = self.file();
        let before = read_optional(&file)?;
        let written = match before {
            None => Written::Created,
            Some(ref text) if *text == unit => Written::Unchanged,
            Some(_) => Written::Replaced,
        };
        if written != Written::Unchanged {
            write_unit(&file, &unit)?;
        }
        if !self.start {
            return Ok(written);
        }
        match self.manager {
            ServiceManager::Systemd => {
                self.run(&["--user", "daemon-reload"], Op::Install)?;
                self.run(&["--user", "enable", "--now", SYSTEMD_UNIT], Op::Install)?;
                if written == Written::Replaced {
                    self.run(&["--user", "try-restart", SYSTEMD_UNIT], Op::Install)?;
                }
            }
            ServiceManager::Launchd => {
                let domain = gui_domain()?;
                let target = format!("{domain}/{LAUNCHD_LABEL}");
                let loaded = self.probe(&["print", &target])?.is_some_and(|o| o.0);
                if written != Written::Unchanged || !loaded {
                    // Not loaded is fine here: the point is that the new file is what runs.
                    let _ = self.probe(&["bootout", &target])?;
                    self.run(&["bootstrap", &domain, &path_text(&file)?], Op::Install)?;
                }
            }
        }
        Ok(written)
    }

    /// Stops and disables the service (with `start`), then removes its file. `false` when there was
    /// no file.
    ///
    /// # Errors
    /// When a tool fails or is missing (the file is left then), or the file cannot be removed.
    pub fn uninstall(&self) -> anyhow::Result<bool> {
        let file = self.file();
        if std::fs::symlink_metadata(&file).is_err() {
            return Ok(false);
        }
        if self.start {
            match self.manager {
                ServiceManager::Systemd => {
                    self.run(&["--user", "disable", "--now", SYSTEMD_UNIT], Op::Uninstall)?;
                }
                ServiceManager::Launchd => {
                    let target = format!("{}/{LAUNCHD_LABEL}", gui_domain()?);
                    // Not loaded: nothing to stop.
                    let _ = self.probe(&["bootout", &target])?;
                }
            }
        }
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        if self.start && self.manager == ServiceManager::Systemd {
            self.run(&["--user", "daemon-reload"], Op::Uninstall)?;
        }
        Ok(true)
    }

    /// Whether the unit file is there and holds what `install` would write for `spec`, and what the
    /// manager says of it (with `start`, when its tool runs).
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub fn status(&self, spec: &ServiceSpec) -> anyhow::Result<ServiceStatus> {
        let file = self.file();
        let text = read_optional(&file)?;
        let program = text
            .as_deref()
            .and_then(|t| render::program_of(self.manager, t));
        let (mut active, mut enabled) = (None, None);
        if self.start {
            let answer = |probe: Option<(bool, String)>| probe.map(|(_, out)| out);
            match self.manager {
                ServiceManager::Systemd => {
                    active = answer(self.probe(&["--user", "is-active", SYSTEMD_UNIT])?);
                    enabled = answer(self.probe(&["--user", "is-enabled", SYSTEMD_UNIT])?);
                }
                ServiceManager::Launchd => {
                    let target = format!("{}/{LAUNCHD_LABEL}", gui_domain()?);
                    active = self
                        .probe(&["print", &target])?
                        .map(|(ok, _)| if ok { "loaded" } else { "not loaded" }.to_owned());
                }
            }
        }
        Ok(ServiceStatus {
            manager: self.manager,
            installed: text.is_some(),
            matches: text.as_deref() == Some(render::render(self.manager, spec).as_str()),
            stale_program: program.as_ref().is_some_and(|p| *p != spec.program),
            program,
            expected_program: spec.program.clone(),
            active,
            enabled,
            file,
        })
    }

    /// Runs the tool for `op`; an error saying what to do by hand when it fails or is missing.
    fn run(&self, args: &[&str], op: Op) -> anyhow::Result<()> {
        let file = self.file();
        let done = match op {
            Op::Install => format!("{} is written", file.display()),
            Op::Uninstall if file.exists() => format!("{} is still there", file.display()),
            Op::Uninstall => format!("{} is removed", file.display()),
        };
        match self.probe(args)? {
            Some((true, _)) => Ok(()),
            Some((false, out)) => bail!(
                "`{} {}` failed ({out}); {done}: {}",
                self.tool,
                args.join(" "),
                self.by_hand(op)
            ),
            None => bail!(
                "`{}` was not found; {done}: {}",
                self.tool,
                self.by_hand(op)
            ),
        }
    }

    /// What to run by hand where the tool works.
    fn by_hand(&self, op: Op) -> String {
        let command = match (self.manager, op) {
            (ServiceManager::Systemd, Op::Install) => format!(
                "systemctl --user daemon-reload && systemctl --user enable --now {SYSTEMD_UNIT}"
            ),
            (ServiceManager::Systemd, Op::Uninstall) => {
                format!("systemctl --user disable --now {SYSTEMD_UNIT}")
            }
            (ServiceManager::Launchd, Op::Install) => {
                format!("launchctl bootstrap gui/$(id -u) {}", self.file().display())
            }
            (ServiceManager::Launchd, Op::Uninstall) => {
                format!("launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}")
            }
        };
        format!(
            "run `{command}` where the service manager runs your services, or pass --no-start to only write or remove the file"
        )
    }

    /// Runs the tool: `None` when it is not installed, else whether it succeeded and its output
    /// (stdout, else stderr, trimmed).
    fn probe(&self, args: &[&str]) -> anyhow::Result<Option<(bool, String)>> {
        let output = match std::process::Command::new(&self.tool)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("running {}", self.tool)),
        };
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let text = if stdout.is_empty() {
            String::from_utf8_lossy(&output.stderr).trim().to_owned()
        } else {
            stdout
        };
        Ok(Some((output.status.success(), text)))
    }
}

/// The file's text; `None` when it does not exist.
fn read_optional(file: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// Writes the unit file atomically (a temp file renamed over it), readable by all (`0644`, as the
/// managers expect), its directory created.
fn write_unit(file: &Path, text: &str) -> anyhow::Result<()> {
    let dir = file.parent().context("a unit file has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        std::fs::write(&temp, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::rename(&temp, file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", file.display()))
}

/// The text of a path written into a unit file.
///
/// # Errors
/// When it is not UTF-8.
pub fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str().map(str::to_owned).with_context(|| {
        format!(
            "{} is not UTF-8: a unit file cannot name it",
            path.display()
        )
    })
}

/// launchd's domain of the user's GUI session, `gui/<uid>`.
fn gui_domain() -> anyhow::Result<String> {
    #[cfg(unix)]
    {
        Ok(format!("gui/{}", nix::unistd::getuid()))
    }
    #[cfg(not(unix))]
    {
        bail!("launchd runs on macOS only")
    }
}

#[cfg(test)]
mod tests;
