//! The shutdown signal every task waits on. At the bottom of the module graph: it
//! depends on nothing in the crate, so any task can take one without importing the
//! daemon's wiring.

use tokio::sync::watch;

/// A shutdown signal every task can wait on; cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// The sender stops every clone of the receiver with `send(true)`.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once shutdown was triggered (or the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}
