//! Waiting on a condition with a deadline, for tests that observe state they cannot subscribe to (HTTP
//! endpoints, list results, metrics). The only poll loop of the async test suites.

use std::future::Future;
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How often `probe` runs; the deadline, not this, bounds the wait.
const POLL: Duration = Duration::from_millis(50);

/// Runs `probe` until it returns `Some`, or fails after `timeout` saying what was awaited. An error from
/// `probe` ends the wait at once.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(POLL).await;
    }
}
