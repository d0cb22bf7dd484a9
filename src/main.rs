//! `edict`: the binary. The command line and the composition root are the library (`src/lib.rs`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    edict::main().await
}
