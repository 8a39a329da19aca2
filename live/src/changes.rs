//! Which towns changed: the writer's signal to everything downstream of the ledger
//! (alert evaluation, the InfluxDB sink, the board's live feed).
//!
//! Each consumer has its own set of dirty towns. The writer adds to every set and
//! never waits; a consumer takes its whole set when it wakes. A slow consumer therefore
//! sees coalesced changes (the town's newest figures, once) instead of a backlog, and
//! memory is bounded by the number of towns, however far behind it falls.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use reserve::registry::TownIdx;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct TownChanges {
    consumers: Mutex<Vec<Arc<ChangeConsumer>>>,
}

#[derive(Debug, Default)]
pub struct ChangeConsumer {
    dirty: Mutex<BTreeSet<TownIdx>>,
    notify: Notify,
}

impl TownChanges {
    /// A new consumer; it sees changes published from now on.
    pub fn subscribe(&self) -> Arc<ChangeConsumer> {
        let consumer = Arc::new(ChangeConsumer::default());
        lock(&self.consumers).push(Arc::clone(&consumer));
        consumer
    }

    /// Marks towns changed for every consumer. Never blocks on a consumer.
    pub fn publish(&self, towns: impl IntoIterator<Item = TownIdx> + Clone) {
        for consumer in lock(&self.consumers).iter() {
            lock(&consumer.dirty).extend(towns.clone());
            consumer.notify.notify_one();
        }
    }
}

impl ChangeConsumer {
    /// Waits until some town changed, then takes the set of changed towns.
    pub async fn changed(&self) -> BTreeSet<TownIdx> {
        loop {
            let taken = std::mem::take(&mut *lock(&self.dirty));
            if !taken.is_empty() {
                return taken;
            }
            self.notify.notified().await;
        }
    }

    /// Takes whatever changed so far without waiting (possibly nothing).
    pub fn take(&self) -> BTreeSet<TownIdx> {
        std::mem::take(&mut *lock(&self.dirty))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking consumer must not silence the others: the data (a set) stays valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_consumer_sees_changes_coalesced() {
        let changes = TownChanges::default();
        let fast = changes.subscribe();
        let slow = changes.subscribe();
        changes.publish([TownIdx(1), TownIdx(2)]);
        assert_eq!(
            fast.changed().await,
            BTreeSet::from([TownIdx(1), TownIdx(2)])
        );
        changes.publish([TownIdx(2)]);
        changes.publish([TownIdx(3)]);
        assert_eq!(
            slow.changed().await,
            BTreeSet::from([TownIdx(1), TownIdx(2), TownIdx(3)])
        );
        assert_eq!(fast.take(), BTreeSet::from([TownIdx(2), TownIdx(3)]));
        assert!(fast.take().is_empty());
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_publish() {
        let changes = Arc::new(TownChanges::default());
        let consumer = changes.subscribe();
        let waiter = tokio::spawn(async move { consumer.changed().await });
        tokio::task::yield_now().await;
        changes.publish([TownIdx(7)]);
        assert_eq!(waiter.await.unwrap(), BTreeSet::from([TownIdx(7)]));
    }
}
