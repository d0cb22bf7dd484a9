//! `edict-agent doctor`: runs the checks ([`crate::doctor`]) and prints them; fails (exit 1) when one
//! failed.

use super::Format;
use crate::doctor::{self, Check, DoctorConfig, Level};
use crate::output;
use anyhow::bail;
use serde_json::json;

/// Runs the checks and prints them.
///
/// # Errors
/// When a check failed (after printing them all).
pub(super) async fn doctor(config: &DoctorConfig, format: Format) -> anyhow::Result<()> {
    let checks = doctor::run(config).await;
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    if format == Format::Json {
        output::json(&json!({"ok": failed == 0, "checks": checks}));
    } else {
        for check in &checks {
            print(check);
        }
    }
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

fn print(check: &Check) {
    let level = match check.level {
        Level::Ok => "ok  ",
        Level::Warn => "warn",
        Level::Fail => "FAIL",
    };
    output::line(&format!("{level}  {}: {}", check.name, check.reason));
    if check.level != Level::Ok && !check.hint.is_empty() {
        output::line(&format!("      hint: {}", check.hint));
    }
}
