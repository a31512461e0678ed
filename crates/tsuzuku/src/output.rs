//! Human tables by default, JSON with `--json`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// Prints rows as a table, or `json` when asked for JSON.
pub fn print(json_mode: bool, header: &[&str], rows: Vec<Vec<String>>, json: serde_json::Value) {
    if json_mode {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}

/// A Unix time as local RFC 3339 text.
pub fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| unix.to_string())
}
