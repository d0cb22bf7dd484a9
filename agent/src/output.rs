//! The only place the agent prints to the terminal (the workspace denies printing elsewhere).
#![allow(clippy::print_stdout, clippy::print_stderr)]

/// Prints a line to stdout.
pub fn line(text: &str) {
    println!("{text}");
}

/// Prints a value as pretty JSON to stdout.
pub fn json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}

/// Prints an error to stderr.
pub fn error(text: &str) {
    eprintln!("edict-agent: {text}");
}
