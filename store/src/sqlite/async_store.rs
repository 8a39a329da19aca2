//! The store from async code: one handle every component uses (the alert engine's
//! readers and delivery workers, the API, the InfluxDB sink, history), instead of each
//! wrapping a locked [`Store`] in `spawn_blocking` its own way.

use std::sync::{Arc, Mutex, PoisonError};

use super::Store;
use crate::StoreError;

/// A [`Store`] shared by async tasks. Every call runs on tokio's blocking pool, so a
/// statement waiting for SQLite's lock (up to the busy timeout while another
/// connection writes) never stalls the async workers. A std `Mutex` and not a tokio
/// one: it is only ever locked inside those blocking calls, never across an `.await`.
/// Cloning shares the one connection.
#[derive(Debug, Clone)]
pub struct AsyncStore(Arc<Mutex<Store>>);

impl AsyncStore {
    pub fn new(store: Store) -> AsyncStore {
        AsyncStore(Arc::new(Mutex::new(store)))
    }

    /// Runs `work`, one or more store calls, on the blocking pool.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.call(work).await
    }

    /// Like [`AsyncStore::run`], for work whose outcome is not a store result (history
    /// with its own error). A panic in `work` is a bug: it is resumed here, in the task
    /// that asked, rather than turned into an error that would be retried. A mutex
    /// poisoned by such a panic is taken over: each call is one statement or one
    /// transaction, which SQLite completes or rolls back.
    pub async fn call<T, F>(&self, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> T + Send + 'static,
    {
        let store = Arc::clone(&self.0);
        let task = tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut store)
        });
        match task.await {
            Ok(out) => out,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only a runtime shutting down cancels a blocking task, and then nobody
                // is left waiting for this answer.
                Err(join) => panic!("store task cancelled: {join}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[tokio::test]
    async fn calls_share_one_connection_and_a_panic_reaches_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
        let store = AsyncStore::new(store);
        let path = store.call(|s| s.path().to_owned()).await;
        assert_eq!(path, dir.path().join("s.db"));

        let other = store.clone();
        let panicked =
            tokio::spawn(async move { other.call(|_| -> () { panic!("a bug") }).await }).await;
        assert!(panicked.unwrap_err().is_panic());
        // The handle still works after a panic poisoned its mutex.
        assert_eq!(store.run(|s| s.count_readings()).await.unwrap(), 0);
    }
}
