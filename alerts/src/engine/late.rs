//! Catch-up without noise (docs/design.md#lifecycle, issue 18): when a town's readings
//! arrive late (a cluster's bridge replaying hours of backlog after its link to the
//! city came back), what they show has already happened. The engine records it, at the
//! readings' times, and tells only what still holds once the backlog is in.
//!
//! A town is *catching up* while its newest reading is older than `[alerts]
//! late_after` and late readings keep moving it. Meanwhile its transitions take the
//! newest reading's time (pending since, `for`, fired, resolved), an alert that fires
//! is marked `late` and is not told, and the town's group is not flushed: notices of
//! alerts told before the cut (a resolution, a rise) wait, merged as ever. It stops
//! being behind when its newest reading is current again, or when nothing late moved it
//! for [`QUIET`] (the backlog ended there; a gateway silent since is then judged live).
//! The next evaluation is live: an alert fired late that still holds is told once, as
//! fired since the reading that raised it; one that fired and resolved within the
//! backlog was never told and never will be.
//!
//! A town never catches up longer than [`LONGEST`] (or `late_after`, if longer) of wall
//! time: a backlog replays in a minute or two (BENCHMARKS.md), so a town still behind
//! by then has a gateway whose clock is behind, and is judged live until its readings
//! are current once more.
//!
//! The check is one map lookup per town evaluated; the live path is otherwise as it was.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use reserve::Ledger;
use reserve::registry::{Report, TownIdx};

use super::Engine;

/// Nothing late moved a town for this long: its backlog is in (or its gateway fell
/// silent again). Three of the engine's default ticks, so a pause between two batches
/// of a replay does not end a catch-up.
pub(super) const QUIET: chrono::Duration = chrono::Duration::seconds(30);

/// A catch-up lasts at most this, or `late_after` when that is longer: a backlog of
/// hours replays in a minute or two (BENCHMARKS.md "Faults"), so a town still behind
/// after this has a gateway whose clock is behind.
const LONGEST: chrono::Duration = chrono::Duration::minutes(10);

/// Which towns are catching up, from the newest reading of each evaluation.
#[derive(Debug, Default)]
pub(super) struct Lateness {
    /// `[alerts] late_after`; zero turns catch-up off (every reading is live).
    late_after: chrono::Duration,
    towns: HashMap<TownIdx, TownClock>,
}

#[derive(Debug, Default, Clone, Copy)]
struct TownClock {
    /// The newest reading noted for the next evaluation.
    noted: Option<DateTime<Utc>>,
    /// The newest reading the last evaluation judged; `None` before the first.
    judged: Option<DateTime<Utc>>,
    catch_up: Option<CatchUp>,
    /// Left a catch-up by its bound while still behind: not again until current.
    lagging: bool,
}

#[derive(Debug, Clone, Copy)]
struct CatchUp {
    /// Wall time it began, and when late readings last moved the town.
    began: DateTime<Utc>,
    moved: DateTime<Utc>,
}

impl Lateness {
    pub(super) fn new(late_after: chrono::Duration) -> Lateness {
        Lateness {
            late_after,
            towns: HashMap::new(),
        }
    }

    /// The newest reading of `town` as the ledger has it now, for its next evaluation.
    pub(super) fn note(&mut self, town: TownIdx, newest: Option<DateTime<Utc>>) {
        if self.late_after > chrono::Duration::zero() {
            self.towns.entry(town).or_default().noted = newest;
        }
    }

    /// Judges `town`'s evaluation at wall time `now`: the time of its newest reading
    /// when it is catching up, `None` when it is live.
    pub(super) fn judge(&mut self, town: TownIdx, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let late_after = self.late_after;
        let clock = self.towns.get_mut(&town)?;
        let newest = clock.noted?;
        // A town judged for the first time with an old reading may be in the middle of
        // a backlog (the service restarted during one): it waits a quiet period too.
        let moved = clock.judged.is_none_or(|judged| newest > judged);
        clock.judged = Some(newest);
        if now - newest <= late_after {
            clock.catch_up = None;
            clock.lagging = false;
            return None;
        }
        if clock.lagging {
            return None;
        }
        let catch_up = match (clock.catch_up, moved) {
            (None, false) => return None,
            (None, true) => CatchUp {
                began: now,
                moved: now,
            },
            (Some(c), true) => CatchUp { moved: now, ..c },
            (Some(c), false) => c,
        };
        if now - catch_up.began > late_after.max(LONGEST) {
            tracing::warn!(
                message = "A town's readings stay late after its catch-up should be over; its gateway's clock may be behind. Judging it live.",
                town = town.index(),
                newest = %newest
            );
            clock.catch_up = None;
            clock.lagging = true;
            return None;
        }
        if now - catch_up.moved >= QUIET {
            clock.catch_up = None;
            return None;
        }
        clock.catch_up = Some(catch_up);
        Some(newest)
    }

    /// Whether `town` was catching up at its last evaluation: its group waits.
    pub(super) fn catching_up(&self, town: TownIdx) -> bool {
        self.towns
            .get(&town)
            .is_some_and(|clock| clock.catch_up.is_some())
    }

    /// Forgets every town: a registry reload renumbers them.
    pub(super) fn forget(&mut self) {
        self.towns.clear();
    }
}

/// The measurement time of `town`'s newest gateway reading on the ledger, if it has
/// one. A figure entered by hand is stamped when it was counted, often hours before it
/// is typed in: that is not a backlog, and it is told as it comes.
pub fn newest_reading(ledger: &Ledger, town: TownIdx) -> Option<DateTime<Utc>> {
    let registry = ledger.registry();
    registry
        .town(town)
        .facilities
        .iter()
        .filter(|&&f| registry.facility(f).report == Report::Gateway)
        .map(|&f| ledger.facility(f))
        .filter(|state| state.counted_by_hand.is_none())
        .filter_map(|state| state.last_ts)
        .max()
}

impl Engine {
    /// Sets `[alerts] late_after` (docs/design.md#lifecycle).
    pub fn with_late_after(mut self, late_after: chrono::Duration) -> Engine {
        self.late = Lateness::new(late_after);
        self
    }

    /// `town`'s newest reading on the ledger now, for its next evaluation.
    pub fn note_newest_reading(&mut self, town: TownIdx, newest: Option<DateTime<Utc>>) {
        self.late.note(town, newest);
    }
}

#[cfg(test)]
mod tests;
