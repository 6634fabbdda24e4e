//! The shutdown signal every task listens to: a `watch<bool>` that flips to true once.

use tokio::sync::watch;

/// Resolves once shutdown has been signalled (or the sender is gone).
pub async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
