//! `tsuzuku`: the one binary. CLI parsing and the wiring of roles; all logic lives in the
//! library crates. This is the only crate that uses `anyhow`.

mod cli;
mod cmd;
mod demo;
mod env;
mod localca;
mod output;
#[cfg(test)]
mod tests;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the gateway allocates and frees small buffers on every
/// request, often on different threads (hyper's and the audit writer's), where glibc's arenas
/// spend a tenth of the request threads' time (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tsuzuku: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cmd::run(cli)) {
        Ok(code) => code,
        // The reader of standard output stopped early (`| head`): not a failure.
        Err(e) if e.downcast_ref::<output::StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsuzuku: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// One line: the error and its causes, joined by ": ". A cause whose text the message before
/// it already contains is left out, so an error that both shows its source in its message and
/// exposes it as `source` is not printed twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        previous = text;
    }
    line
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TSUZUKU_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
