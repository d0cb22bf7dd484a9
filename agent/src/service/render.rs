//! The unit files, rendered from the templates shipped in `agent/packaging/` (included at build time, so
//! the files in the repository and what `service install` writes cannot drift), and the program a unit
//! file runs, read back for `service status`.
//!
//! systemd: `ExecStart=` is split into words on spaces, with double quotes and C escapes; `%` starts a
//! specifier and `$` a variable, inside quotes too, so both are doubled. launchd: one `<string>` per
//! argument, XML-escaped.

use super::{LAUNCHD_LABEL, ServiceManager, ServiceSpec};

/// The systemd user unit template (`@EXEC_START@`).
pub const SYSTEMD_TEMPLATE: &str = include_str!("../../packaging/edict-agent.service");
/// The launchd agent template (`@PROGRAM_ARGUMENTS@`, `@LOG_FILE@`).
pub const LAUNCHD_TEMPLATE: &str = include_str!("../../packaging/com.edict.agent.plist");

/// The unit file `manager` runs `spec` with.
pub fn render(manager: ServiceManager, spec: &ServiceSpec) -> String {
    match manager {
        ServiceManager::Systemd => {
            let words: Vec<String> = std::iter::once(spec.program.as_str())
                .chain(spec.args.iter().map(String::as_str))
                .map(systemd_word)
                .collect();
            // The placeholder where it stands, not where the template's comments name it.
            SYSTEMD_TEMPLATE.replace(
                "\nExecStart=@EXEC_START@\n",
                &format!("\nExecStart={}\n", words.join(" ")),
            )
        }
        ServiceManager::Launchd => {
            let strings: Vec<String> = std::iter::once(spec.program.as_str())
                .chain(spec.args.iter().map(String::as_str))
                .map(|arg| format!("    <string>{}</string>", xml_escape(arg)))
                .collect();
            debug_assert!(LAUNCHD_TEMPLATE.contains(LAUNCHD_LABEL));
            // The placeholders where they stand, not where the template's comment names them.
            LAUNCHD_TEMPLATE
                .replace(
                    "\n@PROGRAM_ARGUMENTS@\n",
                    &format!("\n{}\n", strings.join("\n")),
                )
                .replace(
                    "<string>@LOG_FILE@</string>",
                    &format!("<string>{}</string>", xml_escape(&spec.log_file)),
                )
        }
    }
}

/// One word of `ExecStart=`: bare when it holds only characters systemd never treats specially, else
/// double-quoted; `%` and `$` doubled either way.
fn systemd_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@".contains(c));
    let escaped = arg.replace('%', "%%").replace('$', "$$");
    if plain {
        return escaped;
    }
    let mut out = String::with_capacity(escaped.len() + 2);
    out.push('"');
    for c in escaped.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` safe inside an XML element.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The program a unit file runs (its first word or string), as written by [`render`]; `None` when it
/// names none.
pub fn program_of(manager: ServiceManager, unit: &str) -> Option<String> {
    match manager {
        ServiceManager::Systemd => {
            let line = unit
                .lines()
                .find_map(|line| line.trim().strip_prefix("ExecStart="))?;
            first_systemd_word(line)
        }
        ServiceManager::Launchd => {
            let after = unit.split("<key>ProgramArguments</key>").nth(1)?;
            let start = after.find("<string>")? + "<string>".len();
            let end = start + after[start..].find("</string>")?;
            Some(
                after[start..end]
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&apos;", "'")
                    .replace("&amp;", "&"),
            )
        }
    }
}

/// The first word of an `ExecStart=` line, unquoted and with `%%`, `$$` undone (systemd's `-`, `@`,
/// `+`, `!` and `:` prefixes are not written by [`render`] and not expected).
fn first_systemd_word(line: &str) -> Option<String> {
    let line = line.trim_start();
    let mut word = String::new();
    if let Some(rest) = line.strip_prefix('"') {
        let mut chars = rest.chars();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => word.push('\n'),
                    't' => word.push('\t'),
                    c => word.push(c),
                },
                c => word.push(c),
            }
        }
    } else {
        word = line.split_whitespace().next()?.to_owned();
    }
    Some(word.replace("%%", "%").replace("$$", "$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> ServiceSpec {
        ServiceSpec {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            log_file: "/Users/a & b/Library/Logs/edict-agent.log".to_owned(),
        }
    }

    #[test]
    fn a_systemd_unit_runs_the_program_with_its_arguments_quoted_where_needed() {
        let unit = render(
            ServiceManager::Systemd,
            &spec(
                "/opt/my tools/edict-agent",
                &["--data-dir", "/home/u/100%$x", "--insecure", "run"],
            ),
        );
        assert!(
            unit.contains(
                "\nExecStart=\"/opt/my tools/edict-agent\" --data-dir \"/home/u/100%%$$x\" --insecure run\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("\nRestart=on-failure\n"));
        assert!(unit.contains("\nWantedBy=default.target\n"));
        assert!(!unit.contains("ExecStart=@EXEC_START@"));
        assert!(
            unit.contains("replace @EXEC_START@ with"),
            "the comment stays as it is"
        );
        assert_eq!(
            program_of(ServiceManager::Systemd, &unit).as_deref(),
            Some("/opt/my tools/edict-agent")
        );
        let plain = render(
            ServiceManager::Systemd,
            &spec("/usr/bin/edict-agent", &["run"]),
        );
        assert!(plain.contains("\nExecStart=/usr/bin/edict-agent run\n"));
        assert_eq!(
            program_of(ServiceManager::Systemd, &plain).as_deref(),
            Some("/usr/bin/edict-agent")
        );
    }

    #[test]
    fn a_launchd_agent_lists_each_argument_escaped() {
        let plist = render(
            ServiceManager::Launchd,
            &spec(
                "/Applications/A&B/edict-agent",
                &["--home", "/Users/<me>", "run"],
            ),
        );
        assert!(plist.contains("    <string>/Applications/A&amp;B/edict-agent</string>\n    <string>--home</string>\n    <string>/Users/&lt;me&gt;</string>\n    <string>run</string>\n"), "{plist}");
        assert!(plist.contains("<string>/Users/a &amp; b/Library/Logs/edict-agent.log</string>"));
        assert!(plist.contains("<string>com.edict.agent</string>"));
        assert!(!plist.contains("\n@PROGRAM_ARGUMENTS@\n"));
        assert!(!plist.contains("<string>@LOG_FILE@</string>"));
        assert!(
            plist.contains("with @PROGRAM_ARGUMENTS@ replaced"),
            "the comment stays as it is"
        );
        assert_eq!(
            program_of(ServiceManager::Launchd, &plist).as_deref(),
            Some("/Applications/A&B/edict-agent")
        );
    }
}
