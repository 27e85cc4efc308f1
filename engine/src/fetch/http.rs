//! HTTP(S) sources (spec §4, §11, §12.1): download → sha256 → gunzip → untar in one streaming pass,
//! retried on transient failures.
//!
//! The async side reads the body, hashes each chunk and hands it through a bounded channel to a
//! `spawn_blocking` unpacker, so network, hashing and inflate/write overlap and memory stays bounded
//! (at most [`CHANNEL_CHUNKS`] chunks in flight) whatever the size. Nothing is re-read from disk.

use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use cap_std::fs::Dir;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::extract::{self, ExtractMode, GZIP_EOF, Limits, Unpacked};
use super::{FetchError, parse_sha256};

/// Body chunks buffered between the download and the unpacker (hyper chunks are ≤ a few hundred KiB).
const CHANNEL_CHUNKS: usize = 32;

/// Retry and timeout policy of [`fetch`]. Defaults follow `--http-retry` (spec §11).
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Retries after the first attempt, for transient errors only.
    pub retries: u32,
    /// First delay; doubled per retry up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest wait for the response headers, and for each body chunk after that (an idle timeout:
    /// large downloads are not cut off while data keeps flowing).
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            retries: 9,
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
        }
    }
}

impl HttpOptions {
    /// Delay before retry number `retry` (1-based).
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.min_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// An HTTP client using rustls with the ring provider. The provider is installed process-wide once
/// (reqwest's `rustls-no-provider` picks up the installed default); if another one was installed
/// first, that one is used. Build it once and share it: it pools connections.
pub fn client() -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .user_agent(concat!("artgen/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with a crypto provider and default settings always builds")
}

/// Downloads `url` and unpacks it into a fresh temporary directory under `work_parent`.
///
/// `expected` (bare hex or `sha256:hex`) pins the digest of the downloaded bytes. Unpacking streams
/// alongside the download, so a mismatch is only known at the end; the tree is then discarded. Every
/// failed attempt removes its partial directory; transient failures are retried per `opts`.
///
/// On success the tree is returned as a [`TempDir`]: the caller owns it, it is removed when dropped
/// (use [`TempDir::keep`] to keep it).
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    expected: Option<&str>,
    work_parent: &Path,
    mode: ExtractMode,
    limits: &Limits,
    opts: &HttpOptions,
) -> Result<(Unpacked, TempDir), FetchError> {
    let expected = expected.map(parse_sha256).transpose()?;
    let shown = redact(url);
    let parsed = reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| FetchError::InvalidUrl {
            url: shown.clone(),
            source: None,
        })?;
    let job = Job {
        client,
        url: parsed,
        shown,
        expected,
        work_parent,
        mode,
        limits,
        opts,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let err = match job.attempt().await {
            Ok(done) => return Ok(done),
            Err(err) => err,
        };
        if !err.is_transient() {
            return Err(err);
        }
        if attempts > opts.retries {
            return Err(if attempts == 1 {
                err
            } else {
                FetchError::GaveUp {
                    attempts,
                    last: Box::new(err),
                }
            });
        }
        let delay = opts.backoff(attempts);
        tracing::warn!(url = %job.shown, attempt = attempts, error = %chain(&err), ?delay, "download failed, retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The URL for messages and logs: no credentials, no fragment.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.split('#').next().unwrap_or_default().to_owned(),
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

struct Job<'a> {
    client: &'a reqwest::Client,
    url: reqwest::Url,
    shown: String,
    expected: Option<String>,
    work_parent: &'a Path,
    mode: ExtractMode,
    limits: &'a Limits,
    opts: &'a HttpOptions,
}

/// What the download side saw.
struct Pumped {
    hex: String,
    size: u64,
    /// The whole body was received.
    complete: bool,
    failure: Option<FetchError>,
    /// The unpacker hung up (it failed) before the download ended.
    unpacker_stopped: bool,
}

impl Job<'_> {
    async fn attempt(&self) -> Result<(Unpacked, TempDir), FetchError> {
        let response = match timeout(self.opts.timeout, self.client.get(self.url.clone()).send()).await {
            Err(_) => return Err(self.timed_out()),
            Ok(Err(e)) => {
                return Err(FetchError::Network {
                    url: self.shown.clone(),
                    source: e.without_url(),
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                status,
                url: self.shown.clone(),
            });
        }
        let declared_len = response.content_length();

        let tmp = tempfile::Builder::new()
            .prefix("fetch-")
            .tempdir_in(self.work_parent)
            .map_err(|e| {
                FetchError::io(
                    format!("failed to create a directory in '{}'", self.work_parent.display()),
                    e,
                )
            })?;
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority())
            .map_err(|e| FetchError::io(format!("failed to open '{}'", tmp.path().display()), e))?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (mode, limits) = (self.mode, self.limits.clone());
        // The TempDir travels with the unpacker: if this future is dropped, the unpacker sees the
        // channel close, stops, and only then removes the directory.
        let unpacker = tokio::task::spawn_blocking(move || {
            let result = extract::unpack_stream(ChannelReader::new(rx), &dir, mode, &limits);
            (tmp, result)
        });
        let pumped = self.pump(response, tx).await;
        let (tmp, unpacked) = match unpacker.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(FetchError::io("unpacking was cancelled", io::Error::other(e))),
        };

        match (pumped, unpacked) {
            // The unpacker only saw the stream break off: the download error is the cause.
            (
                Pumped {
                    failure: Some(err),
                    unpacker_stopped: false,
                    ..
                },
                _,
            ) => Err(err),
            (pumped, Ok(stats)) => {
                self.check_digest(&pumped.hex)?;
                let digest = format!("sha256:{}", pumped.hex);
                Ok((
                    Unpacked {
                        digest,
                        size: pumped.size,
                        files: stats.files,
                        bytes: stats.bytes,
                    },
                    tmp,
                ))
            }
            (pumped, Err(err)) => {
                if pumped.complete {
                    // Content that is not what was pinned is reported as such, whatever else is wrong.
                    self.check_digest(&pumped.hex)?;
                    // Without a Content-Length a cut connection looks like a clean end.
                    if declared_len.is_none() && matches!(&err, FetchError::Corrupt(m) if m == GZIP_EOF) {
                        return Err(FetchError::Truncated {
                            url: self.shown.clone(),
                        });
                    }
                }
                Err(err)
            }
        }
    }

    fn check_digest(&self, hex: &str) -> Result<(), FetchError> {
        match &self.expected {
            Some(expected) if expected != hex => Err(FetchError::DigestMismatch {
                expected: expected.clone(),
                actual: hex.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn timed_out(&self) -> FetchError {
        FetchError::Timeout {
            url: self.shown.clone(),
            after: self.opts.timeout,
        }
    }

    /// Streams the body into the channel, hashing as it goes. If the unpacker fails and a digest is
    /// pinned, keeps hashing (bounded) so a wrong download is reported as a digest mismatch.
    async fn pump(&self, mut response: reqwest::Response, tx: mpsc::Sender<Msg>) -> Pumped {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut tx = Some(tx);
        let mut complete = false;
        let mut unpacker_stopped = false;
        let cap = self.limits.max_compressed();
        let failure = loop {
            let chunk = match timeout(self.opts.timeout, response.chunk()).await {
                Err(_) => break Some(self.timed_out()),
                Ok(Err(e)) => {
                    break Some(FetchError::Body {
                        url: self.shown.clone(),
                        source: e.without_url(),
                    });
                }
                Ok(Ok(None)) => {
                    complete = true;
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Msg::End).await;
                    }
                    break None;
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            hasher.update(&chunk);
            size += chunk.len() as u64;
            if size > cap {
                break Some(FetchError::TooBig {
                    limit: self.limits.max_bytes,
                });
            }
            if let Some(sender) = &tx
                && sender.send(Msg::Data(chunk)).await.is_err()
            {
                tx = None;
                unpacker_stopped = true;
                if self.expected.is_none() {
                    break None;
                }
            }
        };
        Pumped {
            hex: hex::encode(hasher.finalize()),
            size,
            complete,
            failure,
            unpacker_stopped,
        }
    }
}

enum Msg {
    Data(Bytes),
    /// The body ended normally; without it a closed channel means the download was abandoned.
    End,
}

/// The blocking side of the channel, as a `BufRead` that lends out the received chunks (no copy).
struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    chunk: Bytes,
    ended: bool,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Msg>) -> Self {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.chunk.is_empty() && !self.ended {
            match self.rx.blocking_recv() {
                Some(Msg::Data(chunk)) => self.chunk = chunk,
                Some(Msg::End) => self.ended = true,
                None => return Err(io::Error::other("download interrupted")),
            }
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, amt: usize) {
        self.chunk.advance(amt);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::fetch::extract::tests::{Tb, listing};

    /// A loopback HTTP/1.1 server: `respond(hit, stream)` writes the raw response for the n-th request.
    struct Server {
        addr: SocketAddr,
        hits: Arc<AtomicUsize>,
    }

    impl Server {
        fn start(respond: impl Fn(usize, &mut TcpStream) + Send + Sync + 'static) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let hits = Arc::new(AtomicUsize::new(0));
            let (counter, respond) = (hits.clone(), Arc::new(respond));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    let (counter, respond) = (counter.clone(), respond.clone());
                    std::thread::spawn(move || {
                        let mut request = Vec::new();
                        let mut byte = [0u8; 1];
                        while !request.ends_with(b"\r\n\r\n") {
                            match stream.read(&mut byte) {
                                Ok(1) => request.push(byte[0]),
                                _ => return,
                            }
                        }
                        let hit = counter.fetch_add(1, Ordering::SeqCst);
                        respond(hit, &mut stream);
                    });
                }
            });
            Server { addr, hits }
        }

        fn url(&self) -> String {
            format!("http://{}/x.tar.gz", self.addr)
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    fn ok(stream: &mut TcpStream, body: &[u8]) {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    }

    fn status(stream: &mut TcpStream, line: &str) {
        let _ = write!(
            stream,
            "HTTP/1.1 {line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    fn opts(retries: u32, timeout: Duration) -> HttpOptions {
        HttpOptions {
            retries,
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            timeout,
        }
    }

    fn fast(retries: u32) -> HttpOptions {
        opts(retries, Duration::from_secs(10))
    }

    fn sample() -> Vec<u8> {
        let mut tb = Tb::default();
        tb.file("app.yaml", "a")
            .raw(b"bin/run.sh", b'0', b"x", 0o755, b"")
            .symlink("l", "app.yaml");
        tb.tgz()
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    async fn get(
        url: &str,
        expected: Option<&str>,
        work: &Path,
        opts: &HttpOptions,
    ) -> Result<(Unpacked, TempDir), FetchError> {
        let limits = Limits::for_mode(ExtractMode::Source);
        fetch(&client(), url, expected, work, ExtractMode::Source, &limits, opts).await
    }

    fn empty(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }

    #[tokio::test]
    async fn downloads_verifies_and_unpacks() {
        let body = sample();
        let served = body.clone();
        let server = Server::start(move |_, s| ok(s, &served));
        let work = tempfile::tempdir().unwrap();
        let hex = sha(&body);
        for pin in [
            None,
            Some(hex.clone()),
            Some(format!("sha256:{}", hex.to_uppercase())),
        ] {
            let (unpacked, tree) = get(&server.url(), pin.as_deref(), work.path(), &fast(0))
                .await
                .unwrap();
            assert_eq!(unpacked.digest, format!("sha256:{hex}"));
            assert_eq!(
                (unpacked.size, unpacked.files, unpacked.bytes),
                (body.len() as u64, 2, 2)
            );
            assert!(tree.path().starts_with(work.path()));
            let files = listing(tree.path());
            assert_eq!(files["bin/run.sh"], "file 0755 x");
            assert_eq!(files["l"], "link -> app.yaml");
            drop(tree);
            assert!(empty(work.path()));
        }
        assert_eq!(server.hits(), 3);
    }

    #[tokio::test]
    async fn large_body_streams_through() {
        // Incompressible data in a few big files and many small ones: exercises chunking and back-pressure.
        let mut tb = Tb::default();
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        };
        for i in 0..3 {
            tb.raw(format!("big{i}").as_bytes(), b'0', &noise(3 << 20), 0o644, b"");
        }
        for i in 0..500 {
            tb.raw(format!("small/{i}.txt").as_bytes(), b'0', &noise(100), 0o644, b"");
        }
        let body = tb.tgz();
        let served = body.clone();
        let server = Server::start(move |_, s| ok(s, &served));
        let work = tempfile::tempdir().unwrap();
        let (unpacked, tree) = get(&server.url(), Some(&sha(&body)), work.path(), &fast(0))
            .await
            .unwrap();
        assert_eq!((unpacked.files, unpacked.bytes), (503, 3 * (3 << 20) + 500 * 100));
        assert_eq!(
            std::fs::metadata(tree.path().join("big2")).unwrap().len(),
            3 << 20
        );
    }

    #[tokio::test]
    async fn digest_mismatch_is_final_and_leaves_nothing() {
        let body = sample();
        let served = body.clone();
        let server = Server::start(move |_, s| ok(s, &served));
        let work = tempfile::tempdir().unwrap();
        let zeros = "0".repeat(64);
        let err = get(&server.url(), Some(&zeros), work.path(), &fast(3))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "digest mismatch: expected sha256:{zeros}, got sha256:{}",
                sha(&body)
            )
        );
        assert!(!err.is_transient());
        assert_eq!(server.hits(), 1);
        assert!(empty(work.path()));
        assert!(matches!(
            get(&server.url(), Some("abc"), work.path(), &fast(0)).await,
            Err(FetchError::InvalidDigest(_))
        ));
    }

    #[tokio::test]
    async fn pinned_digest_wins_over_content_errors() {
        let mut tb = Tb::default();
        tb.file("../evil", "e");
        let body = tb.tgz();
        let served = body.clone();
        let server = Server::start(move |_, s| ok(s, &served));
        let work = tempfile::tempdir().unwrap();
        let err = get(&server.url(), Some(&"0".repeat(64)), work.path(), &fast(0))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::DigestMismatch { .. }), "{err}");
        let err = get(&server.url(), Some(&sha(&body)), work.path(), &fast(0))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid entry name '../evil'");
        let err = get(&server.url(), None, work.path(), &fast(2)).await.unwrap_err();
        assert_eq!(err.to_string(), "invalid entry name '../evil'");
        assert_eq!(server.hits(), 3);
        assert!(empty(work.path()));
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let server = Server::start(|_, s| status(s, "404 Not Found"));
        let work = tempfile::tempdir().unwrap();
        let url = format!(
            "http://user:secret@{}/x.tar.gz#sha256:{}",
            server.addr,
            "0".repeat(64)
        );
        let err = get(&url, None, work.path(), &fast(5)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("HTTP 404 Not Found from http://{}/x.tar.gz", server.addr)
        );
        assert!(!err.is_transient());
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn server_errors_are_retried() {
        let body = sample();
        let server = Server::start(move |hit, s| {
            if hit == 0 {
                status(s, "500 Internal Server Error")
            } else {
                ok(s, &body)
            }
        });
        let work = tempfile::tempdir().unwrap();
        get(&server.url(), None, work.path(), &fast(3)).await.unwrap();
        assert_eq!(server.hits(), 2);

        let server = Server::start(|_, s| status(s, "503 Service Unavailable"));
        let err = get(&server.url(), None, work.path(), &fast(2)).await.unwrap_err();
        assert!(err.is_transient());
        let msg = chain(&err);
        assert!(
            msg.starts_with("giving up after 3 attempts: HTTP 503 Service Unavailable from "),
            "{msg}"
        );
        assert_eq!(server.hits(), 3);
    }

    #[tokio::test]
    async fn truncated_bodies_are_transient() {
        let body = sample();
        let half = body[..body.len() / 2].to_vec();
        let declared = body.len();
        let server = Server::start(move |_, s| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n");
            let _ = s.write_all(&half);
        });
        let work = tempfile::tempdir().unwrap();
        let err = get(&server.url(), None, work.path(), &fast(2)).await.unwrap_err();
        assert!(err.is_transient(), "{}", chain(&err));
        let FetchError::GaveUp { attempts: 3, last } = &err else {
            panic!("{}", chain(&err))
        };
        assert!(matches!(**last, FetchError::Body { .. }), "{}", chain(&err));
        assert_eq!(server.hits(), 3);
        assert!(empty(work.path()));

        // Without Content-Length the cut is only visible as a gzip stream that stops early.
        let half = body[..body.len() / 2].to_vec();
        let server = Server::start(move |_, s| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(&half);
        });
        let err = get(&server.url(), None, work.path(), &fast(0)).await.unwrap_err();
        assert!(matches!(err, FetchError::Truncated { .. }), "{}", chain(&err));
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn connection_refused_is_retried() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let work = tempfile::tempdir().unwrap();
        let err = get(&format!("http://{addr}/x.tgz"), None, work.path(), &fast(2))
            .await
            .unwrap_err();
        let FetchError::GaveUp { attempts: 3, last } = &err else {
            panic!("{}", chain(&err))
        };
        assert!(matches!(**last, FetchError::Network { .. }), "{}", chain(&err));
        assert!(err.is_transient());
        assert!(matches!(
            get("ftp://example.invalid/x.tgz", None, work.path(), &fast(0)).await,
            Err(FetchError::InvalidUrl { .. })
        ));
    }

    #[tokio::test]
    async fn slow_servers_time_out() {
        let server = Server::start(|_, _| std::thread::sleep(Duration::from_secs(3)));
        let work = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let err = get(
            &server.url(),
            None,
            work.path(),
            &opts(1, Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(err.is_transient());
        assert_eq!(server.hits(), 2);
        assert!(chain(&err).contains("timed out after 200ms"), "{}", chain(&err));

        // Headers, then the body stalls: the idle timeout applies per chunk.
        let body = sample();
        let server = Server::start(move |_, s| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(&body[..10]);
            std::thread::sleep(Duration::from_secs(3));
        });
        let err = get(
            &server.url(),
            None,
            work.path(),
            &opts(0, Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FetchError::Timeout { .. }), "{}", chain(&err));
        assert!(empty(work.path()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_fetch_cleans_up() {
        let body = sample();
        let server = Server::start(move |_, s| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(&body[..10]);
            std::thread::sleep(Duration::from_secs(3));
        });
        let work = tempfile::tempdir().unwrap();
        let slow = opts(0, Duration::from_secs(10));
        let cut = tokio::time::timeout(
            Duration::from_millis(300),
            get(&server.url(), None, work.path(), &slow),
        )
        .await;
        assert!(cut.is_err());
        let start = Instant::now();
        while !empty(work.path()) {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "partial directory left behind"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn tls_uses_the_ring_provider() {
        // A server that answers a ClientHello with plain HTTP: the handshake fails, after rustls (with
        // ring) did its part.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let work = tempfile::tempdir().unwrap();
        let err = get(&format!("https://{addr}/x.tgz"), None, work.path(), &fast(0))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Network { .. }), "{}", chain(&err));
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let o = HttpOptions::default();
        let secs: Vec<u64> = (1..=6).map(|r| o.backoff(r).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 30, 30, 30]);
        assert_eq!(o.backoff(200), Duration::from_secs(30));
    }
}
