//! The hash chain: how an event is turned into bytes ([`canonical_bytes`]), hashed
//! ([`chain_hash`]) and linked to its predecessor ([`link`]), and how a sequence of stored events
//! is checked ([`verify`], [`Verifier`]).
//!
//! Each event's hash is SHA-256 over its canonical bytes, which include its sequence number and
//! the previous event's hash. Changing an event's content breaks its own hash ([`ChainProblem::Altered`]);
//! re-hashing a changed event breaks the next event's link ([`ChainProblem::BrokenLink`]);
//! deleting events leaves a sequence gap ([`ChainProblem::Removed`]); events fed to the
//! verifier out of order put a sequence number where another was due
//! ([`ChainProblem::Reordered`]). A store that reads its rows back by sequence number never
//! feeds them out of order: there, swapping two events' contents shows as those events being
//! altered (and, if they were re-hashed, as broken links). Removing the newest events, or adding
//! events behind the log's back, is only visible against an independently kept head
//! ([`Verifier::expect_head`], [`VerifyReport::check_head`]). The chain is unkeyed: rewriting it
//! from some point on, hashes and head included, is only visible against a head recorded
//! elsewhere (for example in a backup or a SIEM).

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::{AuditEvent, ChainedEvent};

/// The `prev_hash` of the first event of every chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of the canonical byte format; part of the hashed bytes.
const FORMAT_VERSION: i64 = 1;

/// The deterministic bytes that [`chain_hash`] hashes: a JSON object with keys in sorted order,
/// no whitespace, and every nested object in `detail` also with sorted keys:
///
/// `{"actor":…,"detail":…,"kind":"…","prev_hash":"…","seq":N,"tenant":"…","time_ms":N,"v":1}`
///
/// The result does not depend on serde_json's map ordering features.
pub fn canonical_bytes(seq: i64, prev_hash: &str, ev: &AuditEvent) -> Vec<u8> {
    let detail = ev.detail.as_str().as_bytes();
    let mut out = Vec::with_capacity(detail.len().saturating_add(256));
    out.extend_from_slice(b"{\"actor\":");
    match &ev.actor {
        Some(actor) => write_json_string(&mut out, actor),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"detail\":");
    out.extend_from_slice(detail);
    out.extend_from_slice(b",\"kind\":");
    write_json_string(&mut out, ev.kind.as_str());
    out.extend_from_slice(b",\"prev_hash\":");
    write_json_string(&mut out, prev_hash);
    out.extend_from_slice(b",\"seq\":");
    write_int(&mut out, seq);
    out.extend_from_slice(b",\"tenant\":");
    write_json_string(&mut out, &ev.tenant);
    out.extend_from_slice(b",\"time_ms\":");
    write_int(&mut out, ev.time_ms);
    out.extend_from_slice(b",\"v\":");
    write_int(&mut out, FORMAT_VERSION);
    out.push(b'}');
    out
}

/// The canonical JSON text of a detail value, as [`canonical_bytes`] embeds it: sorted keys, no
/// whitespace, minimal string escapes. It is valid JSON that parses back to the same value.
/// Events hold their detail as this text ([`crate::Detail`]); stores keep it as it is, and
/// reading a row back re-encodes whatever JSON is stored, so rows stored in any other JSON
/// layout verify the same way.
pub fn canonical_detail(detail: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_canonical(&mut out, detail);
    // Every byte written is either copied from a `str` or ASCII punctuation, digits and
    // escapes, so this never fails; a lossy conversion keeps that from ever panicking.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Lowercase hex SHA-256 over [`canonical_bytes`].
pub fn chain_hash(seq: i64, prev_hash: &str, ev: &AuditEvent) -> String {
    let digest = Sha256::digest(canonical_bytes(seq, prev_hash, ev));
    let mut text = [0u8; 64];
    // 32 bytes always fit 64 hex digits, which are ASCII.
    match hex::encode_to_slice(digest, &mut text) {
        Ok(()) => String::from_utf8_lossy(&text).into_owned(),
        Err(_) => hex::encode(digest),
    }
}

/// Appends `ev` after `prev` (or starts a chain with `seq = 1` and [`GENESIS_HASH`]).
pub fn link(prev: Option<&ChainedEvent>, ev: AuditEvent) -> ChainedEvent {
    match prev {
        Some(p) => link_to(p.seq, &p.hash, ev),
        None => link_to(0, GENESIS_HASH, ev),
    }
}

/// Appends `ev` after the chain head `(prev_seq, prev_hash)`; an empty chain's head is
/// `(0, GENESIS_HASH)`. For stores that keep only the head, not the whole previous event.
pub fn link_to(prev_seq: i64, prev_hash: &str, ev: AuditEvent) -> ChainedEvent {
    let seq = prev_seq.saturating_add(1);
    let hash = chain_hash(seq, prev_hash, &ev);
    ChainedEvent {
        seq,
        prev_hash: prev_hash.to_owned(),
        hash,
        event: ev,
    }
}

fn write_canonical(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's Display for Number is its JSON form (itoa / ryu shortest round-trip).
        Value::Number(n) => write_display(out, n),
        Value::String(s) => write_json_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Maps built in key order (or serde_json's sorted map) need no sorted copy.
            if map.keys().is_sorted() {
                write_object(out, map.iter());
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                write_object(out, entries.into_iter());
            }
        }
    }
}

/// `{"k":v,…}` from entries already in key order.
fn write_object<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push(b'{');
    for (i, (k, item)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, k);
        out.push(b':');
        write_canonical(out, item);
    }
    out.push(b'}');
}

/// A value's `Display` text (numbers: serde_json's JSON form, itoa / ryu shortest round-trip),
/// written in place instead of through a `String`.
fn write_int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn write_display(out: &mut Vec<u8>, v: impl fmt::Display) {
    use std::io::Write as _;
    // Writing to a `Vec` cannot fail.
    let _ = write!(out, "{v}");
}

/// JSON string with the minimal escapes (RFC 8259): `"`, `\` and control characters.
pub(crate) fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len().saturating_add(2));
    out.push(b'"');
    let mut rest = s.as_bytes();
    // Runs of bytes that need no escape are found eight at a time and copied at once.
    loop {
        let at = first_to_escape(rest);
        let (run, tail) = rest.split_at(at.min(rest.len()));
        out.extend_from_slice(run);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        rest = tail;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
            }
        }
    }
    out.push(b'"');
}

/// Whether a byte must be escaped in a JSON string: `"`, `\\` or a control character.
fn must_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The index of the first byte of `bytes` that must be escaped, or `bytes.len()`. Looks at
/// eight bytes at a time (SWAR): a word's bytes below 0x20, and its bytes equal to `"` or `\\`
/// (a zero after XOR), each set their high bit in a mask. Borrows can only flag bytes above a
/// truly flagged one, so the lowest flagged byte is exact. The last few bytes are read as the
/// string's last whole word, overlapping bytes already found clean (which therefore hold no
/// flag), so no byte is copied or looked at one by one unless the string is shorter than a
/// word.
fn first_to_escape(bytes: &[u8]) -> usize {
    let n = bytes.len();
    let word = |at: usize| {
        bytes
            .get(at..at.saturating_add(8))
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_le_bytes)
    };
    if n < 8 {
        return bytes.iter().position(|&b| must_escape(b)).unwrap_or(n);
    }
    let mut at = 0;
    while let Some(w) = word(at) {
        if let Some(i) = first_flagged(w) {
            return at + i;
        }
        at += 8;
    }
    let last = n - 8;
    match word(last).and_then(first_flagged) {
        Some(i) => last + i,
        None => n,
    }
}

/// The first of a word's eight bytes (little-endian) that must be escaped.
fn first_flagged(x: u64) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let flags = (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
        | zero(x ^ (ONES * u64::from(b'"')))
        | zero(x ^ (ONES * u64::from(b'\\')));
    (flags != 0).then(|| (flags.trailing_zeros() / 8) as usize)
}

/// Something wrong with a chain, naming the event(s) concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainProblem {
    /// The event's content (or its `seq` / `prev_hash`) no longer matches its stored hash.
    Altered { seq: i64 },
    /// The event's stored detail is not the text its hash covers, although it parses to the
    /// same value (a duplicate key, added whitespace, a number spelt otherwise): it was altered,
    /// and SQL's JSON functions may read other values from it than verification does.
    DetailNotCanonical { seq: i64 },
    /// The event's stored row cannot be read back as an event at all (an unknown kind, a detail
    /// that is not JSON, a time that is not a number, ...); `reason` says which.
    Unreadable { seq: i64, reason: String },
    /// A stored row's sequence number is no event number: below 1, or not an integer at all.
    /// `stored` is the number as stored.
    BadSeq { stored: String },
    /// Events `missing_from..=missing_to` are absent; `after_seq` is the last event before them.
    Removed {
        after_seq: i64,
        missing_from: i64,
        missing_to: i64,
    },
    /// Event `seq` appeared at the position where event `expected` was due.
    Reordered { seq: i64, expected: i64 },
    /// Event `seq`'s `prev_hash` is not the hash of event `seq - 1`.
    BrokenLink { seq: i64 },
    /// Event `seq` appeared more than once.
    Duplicate { seq: i64 },
    /// The chain ends at `last_seq` (0: no events) but the independently recorded head is
    /// `head_seq`: with `last_seq < head_seq` the newest events were removed. (From
    /// [`VerifyReport::check_head`] it also stands for any other difference at the end.)
    HeadMismatch { last_seq: i64, head_seq: i64 },
    /// Event `seq` is the recorded head's event, but its hash is not the recorded hash.
    HeadHashMismatch { seq: i64 },
    /// The chain has events up to `last_seq` but no head was recorded for it.
    HeadMissing { last_seq: i64 },
    /// The recorded head cannot be read; `reason` says why.
    HeadUnreadable { reason: String },
    /// Events `first..=last` lie past the recorded head `head_seq`: they were added behind the
    /// log's back.
    PastHead {
        first: i64,
        last: i64,
        head_seq: i64,
    },
}

/// `event #N` or `events #N to #M`.
fn events_named(from: i64, to: i64) -> String {
    if from == to {
        format!("event #{from}")
    } else {
        format!("events #{from} to #{to}")
    }
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainProblem::Altered { seq } => write!(
                f,
                "event #{seq} was altered: its content no longer matches its stored hash"
            ),
            ChainProblem::DetailNotCanonical { seq } => write!(
                f,
                "event #{seq} was altered: its stored detail is not the exact text its hash covers \
                 (a duplicate key, added whitespace or another spelling), so a query of the \
                 database may read other values than the ones verified"
            ),
            ChainProblem::Unreadable { seq, reason } => write!(
                f,
                "event #{seq} was altered: its stored row cannot be read as an event ({reason})"
            ),
            ChainProblem::BadSeq { stored } => write!(
                f,
                "a row numbered {stored} is in the chain, but events are numbered from #1 on: \
                 it was added behind the log's back"
            ),
            ChainProblem::Removed {
                after_seq,
                missing_from,
                missing_to,
            } => {
                let which = events_named(*missing_from, *missing_to);
                let verb = if missing_from == missing_to {
                    "was"
                } else {
                    "were"
                };
                write!(
                    f,
                    "{which} {verb} removed: the chain jumps from event #{after_seq} to a later one"
                )
            }
            ChainProblem::Reordered { seq, expected } => write!(
                f,
                "event #{seq} is out of order: it appears where event #{expected} was expected (events were moved or swapped)"
            ),
            ChainProblem::BrokenLink { seq } => write!(
                f,
                "event #{seq} does not link to event #{}: its prev_hash is not that event's hash (an event was replaced and re-hashed, or the chain forked)",
                seq.saturating_sub(1)
            ),
            ChainProblem::Duplicate { seq } => {
                write!(f, "event #{seq} appears more than once")
            }
            ChainProblem::HeadMismatch { last_seq, head_seq } => {
                if last_seq < head_seq {
                    write!(
                        f,
                        "the chain ends at event #{last_seq} but its recorded head is event #{head_seq}: the newest events were removed ({})",
                        events_named(last_seq.saturating_add(1), *head_seq),
                    )
                } else {
                    write!(
                        f,
                        "the chain ends at event #{last_seq} but its recorded head is event #{head_seq} with another hash: events at the end were replaced or appended behind the log's back"
                    )
                }
            }
            ChainProblem::HeadHashMismatch { seq } => write!(
                f,
                "event #{seq} is the recorded head, but its hash is not the recorded head's hash: \
                 the event or the head row was replaced"
            ),
            ChainProblem::HeadMissing { last_seq } => write!(
                f,
                "the chain has events up to #{last_seq} but no recorded head: the head row was removed"
            ),
            ChainProblem::HeadUnreadable { reason } => {
                write!(f, "the recorded head cannot be read ({reason})")
            }
            ChainProblem::PastHead {
                first,
                last,
                head_seq,
            } => write!(
                f,
                "{} past the recorded head, event #{head_seq}: added behind the log's back",
                events_named(*first, *last)
            ),
        }
    }
}

/// The outcome of verifying a chain (or a contiguous part of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many events (stored rows) were looked at.
    pub checked: u64,
    /// `(seq, hash)` of the highest-numbered event seen, if any (its hash is empty when the
    /// row's hash could not be read).
    pub head: Option<(i64, String)>,
    /// Everything found wrong, in the order found. Empty means intact.
    pub problems: Vec<ChainProblem>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// Compares the verified chain's end with a head recorded independently of the events (for
    /// example a backup manifest or a SIEM), after the fact. `recorded` of `None` means the
    /// recorder has seen no events. Adds [`ChainProblem::HeadMismatch`] on a difference. A
    /// verifier told the head before it starts ([`Verifier::expect_head`]) tells more: which
    /// events lie past the head, and whether the head's own event matches.
    pub fn check_head(&mut self, recorded: Option<(i64, &str)>) {
        let found = self.head.as_ref().map(|(s, h)| (*s, h.as_str()));
        if found != recorded {
            self.problems.push(ChainProblem::HeadMismatch {
                last_seq: found.map_or(0, |(s, _)| s),
                head_seq: recorded.map_or(0, |(s, _)| s),
            });
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.head, self.problems.len()) {
            (None, 0) => write!(f, "chain empty, nothing to verify"),
            (Some((seq, _)), 0) => write!(
                f,
                "chain intact: {} events checked, head is event #{seq}",
                self.checked
            ),
            (_, n) => {
                write!(
                    f,
                    "chain NOT intact: {n} problem(s) in {} events checked",
                    self.checked
                )?;
                for p in &self.problems {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// What a verifier knows of the head recorded apart from the events ([`Verifier::expect_head`]).
#[derive(Debug, Clone)]
enum Recorded {
    /// Not checked.
    Unknown,
    /// No head was recorded.
    Missing,
    /// The recorded head could not be read.
    Unreadable(String),
    /// `(seq, hash)` of the recorded head (0 and [`GENESIS_HASH`]: no events yet).
    Head(i64, String),
}

/// Streaming chain verifier: feed events in stored order with [`Verifier::push`] (or, for rows
/// read back from storage, [`Verifier::push_not_canonical`], [`Verifier::push_unreadable`] and
/// [`Verifier::push_bad_seq`]), then [`Verifier::finish`]. Memory use is constant except for open
/// sequence gaps.
#[derive(Debug, Clone)]
pub struct Verifier {
    anchor_seq: i64,
    /// Highest seq seen so far (or the anchor).
    max_seq: i64,
    /// Hash of the event `max_seq` (or the anchor's hash); `None` if that row's hash could not
    /// be read, so the next event's link cannot be checked.
    max_hash: Option<String>,
    /// Ranges of sequence numbers skipped so far and not (yet) seen late.
    gaps: Vec<(i64, i64)>,
    checked: u64,
    problems: Vec<ChainProblem>,
    recorded: Recorded,
    /// Whether the event at the recorded head's seq was seen with the recorded hash.
    head_hash_seen: Option<bool>,
    /// The first and last events seen past the recorded head.
    past_head: Option<(i64, i64)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// Verifies a chain from its start: the first event must be #1 with [`GENESIS_HASH`].
    pub fn new() -> Self {
        Self::from_anchor(0, GENESIS_HASH)
    }

    /// Verifies the part of a chain that follows a trusted event `(anchor_seq, anchor_hash)`:
    /// the first event must be `anchor_seq + 1` and link to `anchor_hash`.
    pub fn from_anchor(anchor_seq: i64, anchor_hash: &str) -> Self {
        Verifier {
            anchor_seq,
            max_seq: anchor_seq,
            max_hash: Some(anchor_hash.to_owned()),
            gaps: Vec::new(),
            checked: 0,
            problems: Vec::new(),
            recorded: Recorded::Unknown,
            head_hash_seen: None,
            past_head: None,
        }
    }

    /// Checks the chain's end against the head recorded apart from the events (a store's head
    /// row), given before the first event: `None` when no head is recorded, `Some((0, _))` when
    /// the recorder has seen no events yet. [`Verifier::finish`] then reports events past the
    /// head ([`ChainProblem::PastHead`]), a chain that ends before it
    /// ([`ChainProblem::HeadMismatch`]), a head event with another hash
    /// ([`ChainProblem::HeadHashMismatch`]) and events without a head
    /// ([`ChainProblem::HeadMissing`]).
    pub fn expect_head(&mut self, recorded: Option<(i64, &str)>) {
        self.recorded = match recorded {
            Some((seq, hash)) => Recorded::Head(seq, hash.to_owned()),
            None => Recorded::Missing,
        };
    }

    /// Like [`Verifier::expect_head`] for a recorded head that cannot be read: reported as
    /// [`ChainProblem::HeadUnreadable`].
    pub fn expect_unreadable_head(&mut self, reason: &str) {
        self.recorded = Recorded::Unreadable(reason.to_owned());
    }

    /// Checks one event, in stored order.
    pub fn push(&mut self, ev: &ChainedEvent) {
        let intact = chain_hash(ev.seq, &ev.prev_hash, &ev.event) == ev.hash;
        let finding = (!intact).then_some(ChainProblem::Altered { seq: ev.seq });
        self.check(ev.seq, Some(&ev.prev_hash), Some(&ev.hash), finding);
    }

    /// Checks one event read back from storage whose stored detail text was not exactly the
    /// canonical text its hash covers ([`crate::Detail::from_stored`]), though it parses to a
    /// value: [`ChainProblem::DetailNotCanonical`] (or [`ChainProblem::Altered`] if the value
    /// does not match the hash either). Its sequence number and links are still checked.
    pub fn push_not_canonical(&mut self, ev: &ChainedEvent) {
        let seq = ev.seq;
        let finding = if chain_hash(seq, &ev.prev_hash, &ev.event) == ev.hash {
            ChainProblem::DetailNotCanonical { seq }
        } else {
            ChainProblem::Altered { seq }
        };
        self.check(seq, Some(&ev.prev_hash), Some(&ev.hash), Some(finding));
    }

    /// Records a stored event whose content cannot even be read back into an [`AuditEvent`]
    /// (say, an unknown kind or invalid JSON written behind the log's back):
    /// [`ChainProblem::Unreadable`] with `reason`. Its sequence number and, where they could be
    /// read, its hashes are still checked; a hash that could not be read leaves the next
    /// event's link unchecked.
    pub fn push_unreadable(
        &mut self,
        seq: i64,
        prev_hash: Option<&str>,
        hash: Option<&str>,
        reason: &str,
    ) {
        let finding = ChainProblem::Unreadable {
            seq,
            reason: reason.to_owned(),
        };
        self.check(seq, prev_hash, hash, Some(finding));
    }

    /// Records a stored row whose sequence number is not an integer at all; `stored` is its
    /// text. It is [`ChainProblem::BadSeq`] and takes no place in the chain.
    pub fn push_bad_seq(&mut self, stored: &str) {
        self.checked = self.checked.saturating_add(1);
        self.problems.push(ChainProblem::BadSeq {
            stored: stored.to_owned(),
        });
    }

    fn check(
        &mut self,
        seq: i64,
        prev_hash: Option<&str>,
        hash: Option<&str>,
        finding: Option<ChainProblem>,
    ) {
        if seq < 1 {
            // No event number: reported as such, whatever else is wrong with the row.
            self.push_bad_seq(&seq.to_string());
            return;
        }
        self.checked = self.checked.saturating_add(1);
        if let Some(p) = finding {
            self.problems.push(p);
        }
        if let Recorded::Head(head_seq, head_hash) = &self.recorded {
            if seq == *head_seq {
                self.head_hash_seen = Some(hash == Some(head_hash.as_str()));
            } else if seq > *head_seq {
                let first = self.past_head.map_or(seq, |(f, _)| f.min(seq));
                let last = self.past_head.map_or(seq, |(_, l)| l.max(seq));
                self.past_head = Some((first, last));
            }
        }
        let expected = self.max_seq.saturating_add(1);
        if seq == expected {
            if let (Some(prev), Some(linked)) = (prev_hash, &self.max_hash)
                && prev != linked
            {
                self.problems.push(ChainProblem::BrokenLink { seq });
            }
            self.advance(seq, hash);
        } else if seq > expected {
            self.gaps.push((expected, seq.saturating_sub(1)));
            self.advance(seq, hash);
        } else if let Some(i) = self.gaps.iter().position(|&(a, b)| a <= seq && seq <= b) {
            // Seen late: it was skipped earlier and shows up now.
            let (a, b) = self.gaps.swap_remove(i);
            if a < seq {
                self.gaps.push((a, seq.saturating_sub(1)));
            }
            if seq < b {
                self.gaps.push((seq.saturating_add(1), b));
            }
            self.problems
                .push(ChainProblem::Reordered { seq, expected });
        } else if seq <= self.anchor_seq {
            self.problems
                .push(ChainProblem::Reordered { seq, expected });
        } else {
            self.problems.push(ChainProblem::Duplicate { seq });
        }
    }

    fn advance(&mut self, seq: i64, hash: Option<&str>) {
        self.max_seq = seq;
        self.max_hash = hash.map(str::to_owned);
    }

    /// Ends verification: sequence gaps never filled become [`ChainProblem::Removed`], and the
    /// chain's end is compared with the recorded head, if one was given
    /// ([`Verifier::expect_head`]).
    pub fn finish(mut self) -> VerifyReport {
        self.gaps.sort_unstable();
        for (from, to) in self.gaps {
            self.problems.push(ChainProblem::Removed {
                after_seq: from.saturating_sub(1),
                missing_from: from,
                missing_to: to,
            });
        }
        let seen = self.max_seq > self.anchor_seq;
        match self.recorded {
            Recorded::Unknown => {}
            Recorded::Unreadable(reason) => {
                self.problems.push(ChainProblem::HeadUnreadable { reason });
            }
            Recorded::Missing => {
                if seen {
                    self.problems.push(ChainProblem::HeadMissing {
                        last_seq: self.max_seq,
                    });
                }
            }
            Recorded::Head(head_seq, head_hash) => {
                if self.max_seq < head_seq {
                    self.problems.push(ChainProblem::HeadMismatch {
                        last_seq: self.max_seq,
                        head_seq,
                    });
                } else if head_seq == self.anchor_seq {
                    // The head says "nothing after the anchor": its hash must be the anchor's.
                    if self.anchor_seq == 0 && head_hash != GENESIS_HASH {
                        self.problems
                            .push(ChainProblem::HeadHashMismatch { seq: head_seq });
                    }
                } else if self.head_hash_seen == Some(false) {
                    self.problems
                        .push(ChainProblem::HeadHashMismatch { seq: head_seq });
                }
                // (An event at the head's seq never seen is already reported as removed.)
                if let Some((first, last)) = self.past_head {
                    self.problems.push(ChainProblem::PastHead {
                        first,
                        last,
                        head_seq,
                    });
                }
            }
        }
        let head = seen.then(|| (self.max_seq, self.max_hash.unwrap_or_default()));
        VerifyReport {
            checked: self.checked,
            head,
            problems: self.problems,
        }
    }
}

/// Verifies a whole chain, in stored order, starting at event #1.
pub fn verify<I: IntoIterator<Item = ChainedEvent>>(events: I) -> VerifyReport {
    verify_from(0, GENESIS_HASH, events)
}

/// Verifies the events that follow the trusted event `(anchor_seq, anchor_hash)`.
pub fn verify_from<I: IntoIterator<Item = ChainedEvent>>(
    anchor_seq: i64,
    anchor_hash: &str,
    events: I,
) -> VerifyReport {
    let mut v = Verifier::from_anchor(anchor_seq, anchor_hash);
    for ev in events {
        v.push(&ev);
    }
    v.finish()
}

#[cfg(test)]
mod tests;
