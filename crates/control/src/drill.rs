//! Drill reporting (issue 5 item 5): connectors say in their experience reports which DR state
//! they are in; the control plane records each change per device ([`transition`], pure), and
//! `tsuzuku dr drill` turns the recorded changes into episodes — when each connector entered
//! DR mode, when it left, whether it was a drill ([`episodes`], pure).

use tsuzuku_store::DrTransition;

/// A connector's DR state as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrState {
    Normal,
    /// In DR mode.
    Active,
    /// DR mode ended; critical apps stay on the DR gateway until a normal site is healthy.
    Returning,
}

impl DrState {
    pub fn as_str(self) -> &'static str {
        match self {
            DrState::Normal => "normal",
            DrState::Active => "active",
            DrState::Returning => "returning",
        }
    }

    pub fn parse(s: &str) -> Option<DrState> {
        [DrState::Normal, DrState::Active, DrState::Returning]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// The `dr` part of a connector's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrReport {
    pub state: DrState,
    /// Active because of a drill (a `test` record).
    pub drill: bool,
    /// When the state began at the connector (Unix ms), if it says.
    pub since_ms: Option<i64>,
}

/// The transition to record for `report`, given the device's last recorded one (none: the
/// device was never seen outside normal mode). `None` when the state did not change. The
/// transition's time is when the connector says the state began, but never later than the
/// report's arrival (`now_ms`) nor earlier than the previous transition (connector clocks
/// drift). Pure.
pub fn transition(
    device: &str,
    prev: Option<&DrTransition>,
    report: &DrReport,
    now_ms: i64,
) -> Option<DrTransition> {
    // Only an active state is a drill or not; returning and normal are the same either way.
    let drill = report.state == DrState::Active && report.drill;
    let (prev_state, prev_drill, prev_seq, prev_at) = match prev {
        Some(p) => (p.state.as_str(), p.drill, p.seq, p.at_ms),
        None => ("normal", false, 0, i64::MIN),
    };
    if prev_state == report.state.as_str() && prev_drill == drill {
        return None;
    }
    let at_ms = report.since_ms.unwrap_or(now_ms).min(now_ms).max(prev_at);
    Some(DrTransition {
        device: device.to_owned(),
        seq: prev_seq.saturating_add(1),
        at_ms,
        state: report.state.as_str().to_owned(),
        drill,
        reported_ms: now_ms,
    })
}

/// One stay of a connector in DR mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    pub device: String,
    /// A drill (a `test` record) or a real disaster.
    pub drill: bool,
    /// When DR mode began; `None` when the connector was first seen already returning.
    pub entered_ms: Option<i64>,
    /// When DR mode ended (the connector began returning, or went straight back to normal);
    /// `None` while it lasts.
    pub left_ms: Option<i64>,
    /// When the connector was fully back on a normal site; `None` until then.
    pub back_ms: Option<i64>,
}

impl Episode {
    /// Time in DR mode, up to `now_ms` while it lasts; `None` when the start is unknown.
    pub fn duration_ms(&self, now_ms: i64) -> Option<i64> {
        let entered = self.entered_ms?;
        Some(
            self.left_ms
                .unwrap_or(now_ms)
                .saturating_sub(entered)
                .max(0),
        )
    }
}

/// The episodes that were under way at or after `since_ms`, from transitions sorted by device
/// and then by `seq` (as [`tsuzuku_store::Store::dr_transitions`] returns them). Pure.
pub fn episodes(transitions: &[DrTransition], since_ms: i64) -> Vec<Episode> {
    // Each episode with the time it was over (back to normal, or superseded), if it is.
    let mut out: Vec<(Episode, Option<i64>)> = Vec::new();
    let mut cur: Option<Episode> = None;
    let mut device: Option<&str> = None;
    for t in transitions {
        if device != Some(t.device.as_str()) {
            out.extend(cur.take().map(|e| (e, None)));
            device = Some(t.device.as_str());
        }
        match DrState::parse(&t.state) {
            Some(DrState::Active) => {
                if let Some(mut e) = cur.take() {
                    // From one kind of DR mode straight into another (a drill turned real).
                    e.left_ms.get_or_insert(t.at_ms);
                    out.push((e, Some(t.at_ms)));
                }
                cur = Some(Episode {
                    device: t.device.clone(),
                    drill: t.drill,
                    entered_ms: Some(t.at_ms),
                    left_ms: None,
                    back_ms: None,
                });
            }
            Some(DrState::Returning) => match &mut cur {
                Some(e) => {
                    e.left_ms.get_or_insert(t.at_ms);
                }
                None => {
                    cur = Some(Episode {
                        device: t.device.clone(),
                        drill: false,
                        entered_ms: None,
                        left_ms: Some(t.at_ms),
                        back_ms: None,
                    });
                }
            },
            Some(DrState::Normal) => {
                if let Some(mut e) = cur.take() {
                    e.left_ms.get_or_insert(t.at_ms);
                    e.back_ms = Some(t.at_ms);
                    out.push((e, Some(t.at_ms)));
                }
            }
            // A state this build does not know: not an episode boundary it can interpret.
            None => {}
        }
    }
    out.extend(cur.map(|e| (e, None)));
    out.into_iter()
        .filter(|(_, over)| over.is_none_or(|o| o >= since_ms))
        .map(|(e, _)| e)
        .collect()
}

#[cfg(test)]
mod tests;
