//! Transfers through the writer (docs/design.md#transfers). A transfer enters a batch
//! only as its first input, so the figures it is planned from are the ledger's, which
//! holds every commit before it, and this thread is the only writer of facility state:
//! nothing slips between reading the sender's count and storing the moved one.
//!
//! At a facility counted by hand (`report = "manual"`) the transfer makes a reading,
//! stored with `source = manual` and the recorder's name: the figure rests on an
//! officer's word, as a count does, and the `readings` table's `source` holds
//! `gateway` or `manual` only (a third value would mean rebuilding its largest table).
//! The reading is at the transfer's `at` (or a millisecond after the facility's latest
//! reading, so that it is the newest). At a gateway facility nothing is stored but the
//! row; after the commit the consumption estimate is told to expect the drop or the
//! rise.

use chrono::{DateTime, Utc};
use live::{Transfer, TransferOutcome, TransferRefused, TransferSubmission};
use reserve::Ledger;
use reserve::Reading;
use reserve::ledger::Shortfall;
use reserve::registry::{CategoryIdx, FacilityIdx, Registry, Report};
use store::NewTransfer;

/// A transfer the writer will store: its row, the readings it makes at facilities
/// counted by hand (in the batch's message), and what the gateway ends' estimates are
/// told once it is committed.
#[derive(Debug)]
pub(super) struct PlannedTransfer {
    pub(super) row: NewTransfer,
    /// Where the request came from, for the audit entry.
    pub(super) remote: String,
    pub(super) category: CategoryIdx,
    /// Gateway ends: the facility and what it sent (below 0: received).
    pub(super) expected: Vec<(FacilityIdx, f64)>,
    pub(super) from_after: Option<f64>,
    pub(super) to_after: Option<f64>,
}

impl PlannedTransfer {
    pub(super) fn at(&self) -> DateTime<Utc> {
        self.row.at
    }

    /// What the requester is told once the transfer is committed as `id`.
    pub(super) fn outcome(&self, id: i64) -> TransferOutcome {
        TransferOutcome {
            id,
            from_after: self.from_after,
            to_after: self.to_after,
        }
    }
}

/// Plans `transfer` against the ledger: refused when the sender is counted by hand and
/// its latest count holds less than the quantity (or none), when the receiver is
/// counted by hand and has no room for it, or when a facility or the category left the
/// registry since the API checked it.
pub(super) fn plan(
    ledger: &Ledger,
    registry: &Registry,
    transfer: &Transfer,
) -> Result<(PlannedTransfer, Vec<Reading>), TransferRefused> {
    let resolve = |id: &str, found: Option<FacilityIdx>| {
        found.ok_or_else(|| TransferRefused::NotInRegistry(format!("facility {id}")))
    };
    let from = resolve(&transfer.from, registry.facility_idx(&transfer.from))?;
    let to = resolve(&transfer.to, registry.facility_idx(&transfer.to))?;
    let category = registry
        .category_idx(&transfer.category)
        .ok_or_else(|| TransferRefused::NotInRegistry(format!("category {}", transfer.category)))?;
    let mut readings = Vec::new();
    let mut expected = Vec::new();
    let mut after = [None, None];
    for (i, (facility, sent)) in [(from, transfer.quantity), (to, -transfer.quantity)]
        .into_iter()
        .enumerate()
    {
        if registry.facility(facility).report != Report::Manual {
            expected.push((facility, sent));
            continue;
        }
        let reading = ledger
            .transfer_reading(facility, category, sent, transfer.at)
            .map_err(|refused| match refused {
                Shortfall::Holds { held } => TransferRefused::Shortfall { held },
                Shortfall::OverCapacity { held, capacity } => {
                    TransferRefused::OverCapacity { held, capacity }
                }
            })?;
        if let Some(reading) = reading {
            after[i] = ledger
                .held(facility, category)
                .map(|h| h - sent)
                .or(Some(-sent));
            readings.push(reading);
        }
    }
    let town = |f: FacilityIdx| registry.town(registry.facility(f).town).id.to_string();
    let row = NewTransfer {
        at: transfer.at,
        from_facility: transfer.from.clone(),
        from_town: town(from),
        to_facility: transfer.to.clone(),
        to_town: town(to),
        category: transfer.category.clone(),
        quantity: transfer.quantity,
        note: transfer.note.clone(),
        recorded_by: transfer.recorded_by.clone(),
    };
    let planned = PlannedTransfer {
        row,
        remote: transfer.remote.clone(),
        category,
        expected,
        from_after: after[0],
        to_after: after[1],
    };
    Ok((planned, readings))
}

impl super::Writer {
    /// The batch's transfer as a message to persist and apply: its readings at
    /// facilities counted by hand, stored as theirs, and its row. A refused transfer
    /// is answered now (nothing of it is stored) and makes no message.
    pub(super) fn plan_transfer(&self, batch: &mut super::Batch) -> Option<super::Message> {
        // Queued behind a batch the store refused, its requester may have gone.
        if self.abandoned(&mut batch.transfer) {
            return None;
        }
        let submission = batch.transfer.as_ref()?;
        let planned = {
            let ledger = self.read_ledger();
            plan(&ledger, &self.registry, &submission.transfer)
        };
        match planned {
            Ok((planned, readings)) => Some(super::Message {
                source: store::ReadingSource::Manual {
                    entered_by: planned.row.recorded_by.clone(),
                },
                readings,
                transfer: Some(planned),
                ..super::Message::default()
            }),
            Err(refused) => {
                let submission = batch.transfer.take()?;
                tracing::info!(
                    message = "Transfer refused.",
                    from = %submission.transfer.from,
                    to = %submission.transfer.to,
                    %refused
                );
                self.metrics.transfer(false);
                let _ = submission.reply.send(Err(refused));
                None
            }
        }
    }

    /// Drops the batch's transfer, and its message (the last), when its requester
    /// stopped waiting: answered 503 while the store failed, it was told nothing was
    /// recorded and will send it again, so storing this one too would move the stock
    /// twice.
    pub(super) fn drop_abandoned_transfer(
        &self,
        messages: &mut Vec<super::Message>,
        transfer: &mut Option<TransferSubmission>,
    ) {
        if self.abandoned(transfer) && messages.last().is_some_and(|m| m.transfer.is_some()) {
            messages.pop();
        }
    }

    /// Takes the transfer out when nobody waits for it any more (counted, logged).
    fn abandoned(&self, transfer: &mut Option<TransferSubmission>) -> bool {
        if !transfer.as_ref().is_some_and(|t| t.reply.is_closed()) {
            return false;
        }
        let Some(dropped) = transfer.take() else {
            return false;
        };
        let t = &dropped.transfer;
        tracing::warn!(
            message = "Transfer dropped unstored: its request was answered 503 while the store failed.",
            from = %t.from,
            to = %t.to,
            category = %t.category,
            quantity = t.quantity,
            by = %t.recorded_by
        );
        self.metrics.transfer_abandoned();
        true
    }
}
