//! Everything the CLI prints to stdout or stderr goes through here (the lints forbid printing elsewhere).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use serde::Serialize;

/// The format of `edict openapi`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SpecFormat {
    /// YAML, as committed in `api-spec/openapi.yaml`.
    Yaml,
    /// JSON, as served at `/openapi.json`.
    Json,
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Prints the API spec.
pub fn print_spec(format: SpecFormat) -> anyhow::Result<()> {
    let spec = match format {
        SpecFormat::Yaml => edict_api::server::spec_yaml(),
        SpecFormat::Json => edict_api::server::spec_json(),
    };
    write_out(spec.trim_end_matches('\n'))?;
    Ok(())
}

/// Prints a line of human-readable output (nothing once stdout is closed: `edict … | head`).
pub fn line(text: &str) {
    let _ = stream_line(text);
}

/// Writes `text` and a newline to stdout; a closed stdout (`| head`) is not an error: the command
/// ends quietly instead of panicking.
fn write_out(text: &str) -> std::io::Result<()> {
    stream_line(text).map(drop)
}

/// Prints a line of a stream that may outlive its reader (`edict events tail | head`): answers
/// `Ok(false)` once stdout is closed, so the command can end quietly instead of failing.
///
/// # Errors
/// Any other write failure.
pub fn stream_line(text: &str) -> std::io::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error),
    }
}

/// Prints a value as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    write_out(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Standard output as a byte sink, for bulk data a command streams (`edict events export` without
/// `--output`); wrap it in a `BufWriter`.
pub fn raw_stdout() -> std::io::Stdout {
    std::io::stdout()
}

/// Prints a line for a person on stderr (a summary beside data streamed to stdout).
pub fn note(text: &str) {
    eprintln!("{text}");
}

/// Prints a command's failure, with its causes, for a person.
pub fn print_error(error: &anyhow::Error) {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
