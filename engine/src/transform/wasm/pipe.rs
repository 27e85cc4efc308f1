//! `CappedPipe` (design/plugins.md §6): a guest's stdout or stderr. wasmtime-wasi's `MemoryOutputPipe`
//! traps the guest when full; ours keeps the first `cap` bytes, drops the rest and remembers that it did
//! (the host then adds an `artgen.log-truncated` warning). A write never fails.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The largest write the guest is offered at once.
const PERMIT: usize = 64 << 10;

#[derive(Debug, Default)]
struct Buf {
    kept: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl Buf {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        let take = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }
}

#[derive(Clone, Debug)]
pub(super) struct CappedPipe(Arc<Mutex<Buf>>);

impl CappedPipe {
    pub fn new(cap: usize) -> Self {
        CappedPipe(Arc::new(Mutex::new(Buf {
            kept: Vec::new(),
            cap,
            dropped: 0,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buf> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of what was kept so far.
    pub fn peek(&self) -> Vec<u8> {
        self.lock().kept.clone()
    }

    /// What was kept, and how many bytes were dropped.
    pub fn take(&self) -> (Vec<u8>, u64) {
        let mut b = self.lock();
        (std::mem::take(&mut b.kept), b.dropped)
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.lock().push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.lock().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_cap_and_counts_the_rest() {
        let p = CappedPipe::new(10);
        let mut s = p.clone();
        s.write(Bytes::from_static(b"0123456")).unwrap();
        s.write(Bytes::from_static(b"789abcdef")).unwrap();
        assert_eq!(s.check_write().unwrap(), PERMIT);
        let (kept, dropped) = p.take();
        assert_eq!(kept, b"0123456789");
        assert_eq!(dropped, 6);
    }
}
