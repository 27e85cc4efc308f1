//! Waiting on a condition with a deadline: [`until`] for state tests cannot subscribe to (HTTP endpoints,
//! list results, metrics), the only poll loop of the async test suites; [`exit`] for a child process, woken
//! by the exit itself.

use std::future::Future;
use std::io;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

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

/// Waits up to `timeout` for `child` to exit and reaps it; `None` if it still runs at the deadline. Blocks in
/// `poll(2)` on the child's pidfd, which becomes readable when the process exits.
pub fn exit(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    // Not reaped yet, so the pid still names this child.
    let pidfd = pidfd_open(Pid::from_child(child), PidfdFlags::empty())?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = Timespec::try_from(deadline.saturating_duration_since(Instant::now()))
            .map_err(io::Error::other)?;
        match poll(&mut [PollFd::new(&pidfd, PollFlags::IN)], Some(&left)) {
            Ok(0) => return child.try_wait(),
            Ok(_) => return child.wait().map(Some),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::exit;

    #[test]
    fn exit_returns_the_status_once_the_child_exits() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let status = exit(&mut child, Duration::from_secs(30))
            .unwrap()
            .expect("exited");
        assert_eq!(status.code(), Some(3));
        // Reaped: asking again returns the same status at once.
        assert_eq!(
            exit(&mut child, Duration::ZERO).unwrap().and_then(|s| s.code()),
            Some(3)
        );
    }

    #[test]
    fn exit_gives_up_at_the_deadline_on_a_running_child() {
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let started = Instant::now();
        let status = exit(&mut child, Duration::from_millis(200)).unwrap();
        let waited = started.elapsed();
        child.kill().unwrap();
        assert!(status.is_none(), "a running child reported {status:?}");
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(30),
            "{waited:?}"
        );
        // The kill wakes the wait long before its deadline.
        assert!(exit(&mut child, Duration::from_secs(60)).unwrap().is_some());
    }
}
