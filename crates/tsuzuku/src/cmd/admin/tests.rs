#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

/// `audit tail`'s "what" of an event that is neither a decision nor a sign-in: its fields on
/// one line, cut short, never the whole detail (a policy change holds whole policy texts).
#[test]
fn other_events_are_summarised_on_one_short_line() {
    let policy = "permit (principal, action, resource);\n".repeat(200);
    let d = serde_json::json!({
        "version": 7,
        "message": "office hours",
        "documents": [{"id": "a", "text": policy}],
        "text": policy,
        "by": null,
    });
    let line = summary(&d);
    assert!(line.chars().count() <= SUMMARY_CHARS, "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("version=7"), "{line}");
    assert!(line.contains("message=office hours"), "{line}");
    assert!(line.contains("documents=[1 items]"), "{line}");
    assert!(line.contains('…'), "{line}");
    assert!(!line.contains("by="), "{line}");
}

#[test]
fn clip_keeps_short_text_and_marks_a_cut() {
    assert_eq!(clip("short", 10), "short");
    assert_eq!(clip("exactly10!", 10), "exactly10!");
    assert_eq!(clip("a\tb\nc", 10), "a b c");
    assert_eq!(clip("ééééééééééé", 5), "éééé…");
}

/// Generated passwords pass the rules for chosen ones (12 characters or more).
#[test]
fn generated_passwords_pass_the_new_password_rules() {
    for _ in 0..20 {
        let pw = generate_password();
        password::check_new(&pw).unwrap();
    }
}
