//! `edict-agent service install|uninstall|status`: the options, the command the service runs (this
//! executable's absolute path, the global options given, made absolute, then `run`), and the output.

use super::{Cli, Format};
use crate::output;
use crate::service::{Service, ServiceManager, ServiceSpec, Written, path_text};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// What to do with the service.
#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Writes the unit file (running this executable's `run` with the global options given here),
    /// then enables and starts it.
    Install(ServiceArgs),
    /// Stops and disables the service, then removes its unit file.
    Uninstall(ServiceArgs),
    /// Whether the unit file is installed and current, and what the service manager says of it.
    Status {
        /// Where and how.
        #[command(flatten)]
        args: ServiceArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
}

/// The options of every `service` command.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The directory of the unit file (default: ~/.config/systemd/user, or $XDG_CONFIG_HOME/systemd/user;
    /// ~/Library/LaunchAgents for launchd).
    #[arg(long)]
    pub unit_dir: Option<PathBuf>,
    /// Only write or remove the file: run no systemctl or launchctl.
    #[arg(long)]
    pub no_start: bool,
    /// The service manager (default: launchd on macOS, systemd elsewhere).
    #[arg(long, value_enum)]
    pub manager: Option<ServiceManager>,
}

impl ServiceArgs {
    fn service(&self) -> anyhow::Result<Service> {
        Service::new(
            self.manager.unwrap_or_else(ServiceManager::native),
            self.unit_dir.clone(),
            !self.no_start,
        )
    }
}

/// What the service runs: this executable with the global options of `cli` (those given: paths made
/// absolute, since a service starts elsewhere), then `run`.
fn spec(cli: &Cli) -> anyhow::Result<ServiceSpec> {
    let program = std::env::current_exe()?;
    let absolute =
        |path: &Path| -> anyhow::Result<String> { path_text(&std::path::absolute(path)?) };
    let mut args = Vec::new();
    if let Some(dir) = &cli.data_dir {
        args.extend(["--data-dir".to_owned(), absolute(dir)?]);
    }
    if let Some(home) = &cli.home {
        args.extend(["--home".to_owned(), absolute(home)?]);
    }
    if cli.org_file != Path::new(super::DEFAULT_ORG_FILE) {
        args.extend(["--org-file".to_owned(), absolute(&cli.org_file)?]);
    }
    if let Some(ca) = &cli.ca_file {
        args.extend(["--ca-file".to_owned(), absolute(ca)?]);
    }
    if cli.insecure {
        args.push("--insecure".to_owned());
    }
    args.push("run".to_owned());
    let log_file = dirs::home_dir()
        .unwrap_or_default()
        .join("Library/Logs/edict-agent.log");
    Ok(ServiceSpec {
        program: path_text(&program)?,
        args,
        log_file: path_text(&log_file)?,
    })
}

/// Runs `service …`.
///
/// # Errors
/// When the file cannot be written, read or removed, or the service manager fails.
pub(super) fn execute(cli: &Cli, action: &ServiceAction) -> anyhow::Result<()> {
    let spec = spec(cli)?;
    match action {
        ServiceAction::Install(args) => {
            let service = args.service()?;
            let written = service.install(&spec)?;
            let file = service.file();
            output::line(&match written {
                Written::Created => format!("wrote {}", file.display()),
                Written::Replaced => format!("updated {}", file.display()),
                Written::Unchanged => format!("{} is up to date", file.display()),
            });
            output::line(&if service.start {
                "the agent runs as your service and starts with your session".to_owned()
            } else {
                "not started (--no-start)".to_owned()
            });
            Ok(())
        }
        ServiceAction::Uninstall(args) => {
            let service = args.service()?;
            let file = service.file();
            output::line(&if service.uninstall()? {
                format!("removed {}", file.display())
            } else {
                format!("{} was not installed", file.display())
            });
            Ok(())
        }
        ServiceAction::Status { args, output } => {
            let status = args.service()?.status(&spec)?;
            if *output == Format::Json {
                output::json(&serde_json::to_value(&status)?);
                return Ok(());
            }
            output::line(&format!("unit file:  {}", status.file.display()));
            output::line(&format!(
                "installed:  {}",
                match (status.installed, status.matches, status.stale_program) {
                    (false, _, _) => "no (`edict-agent service install`)".to_owned(),
                    (true, true, _) => "yes, current".to_owned(),
                    (true, false, true) => format!(
                        "yes, but it runs {} instead of {}: run `edict-agent service install` again",
                        status.program.as_deref().unwrap_or("?"),
                        status.expected_program
                    ),
                    (true, false, false) => "yes, but with other options or an older template: \
                         run `edict-agent service install` again (with the options it should keep)"
                        .to_owned(),
                }
            ));
            if let Some(active) = &status.active {
                output::line(&format!("active:     {active}"));
            }
            if let Some(enabled) = &status.enabled {
                output::line(&format!("enabled:    {enabled}"));
            }
            Ok(())
        }
    }
}
