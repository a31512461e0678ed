//! Standard output: human tables by default, JSON with `--json`.
//!
//! Everything a command prints on standard output goes through [`outln!`] or [`out!`], which
//! return an error instead of panicking when the write fails. A reader that stops early
//! (`tsuzuku audit tail | head -1`) closes the pipe: that is [`StdoutClosed`], which `main`
//! turns into a quiet exit 0, as `cat` and `grep` do.

use std::io::Write as _;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// The reader of standard output went away (`EPIPE`): the command stops writing and exits 0.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes formatted text to standard output; a closed pipe becomes [`StdoutClosed`].
pub fn write(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// `println!` that returns `anyhow::Result<()>` instead of panicking on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that returns `anyhow::Result<()>` instead of panicking on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// Prints rows as a table, or `json` when asked for JSON.
pub fn print(
    json_mode: bool,
    header: &[&str],
    rows: Vec<Vec<String>>,
    json: serde_json::Value,
) -> anyhow::Result<()> {
    if json_mode {
        return outln!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    outln!("{t}")
}

/// Prints `json` under `--json`, otherwise the human `text` (one or more lines).
pub fn done(json_mode: bool, text: &str, json: serde_json::Value) -> anyhow::Result<()> {
    if json_mode {
        outln!("{json}")
    } else {
        outln!("{text}")
    }
}

/// A Unix time as local RFC 3339 text.
pub fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| unix.to_string())
}
