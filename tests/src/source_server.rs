//! A loopback HTTP/1.1 file server for source downloads in tests (std only: one thread per connection).
//!
//! Serves bodies registered with [`SourceServer::put`] at `http://127.0.0.1:<port>/<path>`, answers GET and
//! HEAD, honours a single `Range: bytes=` range, counts requests per path and injects [`Fault`]s. Every
//! response carries `Connection: close`. The server stops when dropped.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Bytes written per chunk under [`Fault::Slow`].
pub const SLOW_CHUNK: usize = 1024;
/// Idle connections are dropped after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A misbehaviour of one path, set with [`SourceServer::put_fault`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every request is answered with this status (and a short text body).
    Status(u16),
    /// The first `times` requests get `status`; later ones are served normally.
    FailFirst { times: u32, status: u16 },
    /// Declares the full `Content-Length`, sends only the first `send` body bytes, then closes.
    Truncate { send: usize },
    /// Sends the body in [`SLOW_CHUNK`]-byte chunks with this pause before each chunk.
    Slow { delay_per_chunk: Duration },
    /// Closes the connection after reading the request, without any response.
    Reset,
}

#[derive(Debug, Default)]
struct Route {
    body: Arc<Vec<u8>>,
    fault: Option<Fault>,
    failures_served: u32,
}

#[derive(Debug, Default)]
struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    hits: Mutex<HashMap<String, u64>>,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct SourceServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SourceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SourceServer {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("source-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn_shared = Arc::clone(&accept_shared);
                    let _ = thread::Builder::new()
                        .name("source-server-conn".into())
                        .spawn(move || {
                            let _ = handle_connection(stream, &conn_shared);
                        });
                }
            })?;
        Ok(SourceServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The full URL of `path` (a leading `/` is optional; other characters are percent-encoded as needed).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), encode_path(&normalize(path)))
    }

    /// Serves `body` at `path` (replacing any earlier body, keeping a fault) and returns its full URL.
    pub fn put(&self, path: &str, body: Vec<u8>) -> String {
        let key = normalize(path);
        lock(&self.shared.routes).entry(key).or_default().body = Arc::new(body);
        self.url(path)
    }

    /// Makes `path` misbehave (the path need not have a body). Returns its full URL.
    pub fn put_fault(&self, path: &str, fault: Fault) -> String {
        let key = normalize(path);
        let mut routes = lock(&self.shared.routes);
        let route = routes.entry(key).or_default();
        route.fault = Some(fault);
        route.failures_served = 0;
        drop(routes);
        self.url(path)
    }

    /// Removes the fault of `path`, if any.
    pub fn clear_fault(&self, path: &str) {
        if let Some(route) = lock(&self.shared.routes).get_mut(&normalize(path)) {
            route.fault = None;
        }
    }

    /// Stops serving `path` (later requests get 404).
    pub fn remove(&self, path: &str) {
        lock(&self.shared.routes).remove(&normalize(path));
    }

    /// How many requests (any method, any outcome, 404s included) arrived for `path`.
    pub fn hits(&self, path: &str) -> u64 {
        lock(&self.shared.hits)
            .get(&normalize(path))
            .copied()
            .unwrap_or(0)
    }

    /// Total number of requests received.
    pub fn total_hits(&self) -> u64 {
        lock(&self.shared.hits).values().sum()
    }
}

impl Drop for SourceServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop; it sees the flag and exits, closing the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn normalize(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Request {
    method: String,
    path: String,
    range: Option<String>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut total = 0usize;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    total += line.len();
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request line"));
    };
    let method = method.to_string();
    let path = decode_path(&normalize(target));
    let mut range = None;
    let mut content_length = 0u64;
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header)?;
        total += n;
        if n == 0 || total > MAX_HEADER_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "headers too long or cut",
            ));
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            }
        }
    }
    // Discard a request body, if any.
    io::copy(&mut reader.by_ref().take(content_length), &mut io::sink())?;
    Ok(Some(Request { method, path, range }))
}

enum Plan {
    Status(u16),
    Reset,
    Body {
        body: Arc<Vec<u8>>,
        truncate: Option<usize>,
        slow: Option<Duration>,
    },
}

fn plan(shared: &Shared, path: &str) -> Plan {
    let mut routes = lock(&shared.routes);
    let Some(route) = routes.get_mut(path) else {
        return Plan::Status(404);
    };
    let body = Arc::clone(&route.body);
    match route.fault.clone() {
        None => Plan::Body {
            body,
            truncate: None,
            slow: None,
        },
        Some(Fault::Status(s)) => Plan::Status(s),
        Some(Fault::Reset) => Plan::Reset,
        Some(Fault::FailFirst { times, status }) => {
            if route.failures_served < times {
                route.failures_served += 1;
                Plan::Status(status)
            } else {
                Plan::Body {
                    body,
                    truncate: None,
                    slow: None,
                }
            }
        }
        Some(Fault::Truncate { send }) => Plan::Body {
            body,
            truncate: Some(send),
            slow: None,
        },
        Some(Fault::Slow { delay_per_chunk }) => Plan::Body {
            body,
            truncate: None,
            slow: Some(delay_per_chunk),
        },
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn content_type(path: &str) -> &'static str {
    if path.ends_with(".tar.gz") || path.ends_with(".tgz") || path.ends_with(".gz") {
        "application/gzip"
    } else if path.ends_with(".tar") {
        "application/x-tar"
    } else {
        "application/octet-stream"
    }
}

/// Parses a single `bytes=` range against a body of `len` bytes. `Ok(None)` = ignore the header.
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let suffix: u64 = end.parse().map_err(|_| ())?;
        if suffix == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(suffix), len - 1)
    } else {
        let start: u64 = start.parse().map_err(|_| ())?;
        let end: u64 = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            end.parse().map_err(|_| ())?
        };
        if start >= len || end < start {
            return Err(());
        }
        (start, end.min(len - 1))
    };
    Ok(Some(range))
}

fn handle_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    *lock(&shared.hits).entry(req.path.clone()).or_insert(0) += 1;

    let head = req.method == "HEAD";
    if req.method != "GET" && !head {
        return simple(&mut writer, 405, head);
    }
    let (body, truncate, slow) = match plan(shared, &req.path) {
        Plan::Status(s) => return simple(&mut writer, s, head),
        Plan::Reset => {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
        Plan::Body { body, truncate, slow } => (body, truncate, slow),
    };
    let total = body.len() as u64;
    let (status, range) = match req.range.as_deref().map(|r| parse_range(r, total)) {
        None | Some(Ok(None)) => (200, 0..body.len()),
        Some(Ok(Some((a, b)))) => (206, a as usize..b as usize + 1),
        Some(Err(())) => {
            let head_text = format!(
                "HTTP/1.1 416 {}\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                reason(416)
            );
            writer.write_all(head_text.as_bytes())?;
            return finish(writer);
        }
    };
    let mut head_text = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        reason(status),
        content_type(&req.path),
        range.len()
    );
    if status == 206 {
        head_text.push_str(&format!(
            "Content-Range: bytes {}-{}/{total}\r\n",
            range.start,
            range.end - 1
        ));
    }
    head_text.push_str("\r\n");
    writer.write_all(head_text.as_bytes())?;
    if head {
        return finish(writer);
    }
    let mut data = &body[range];
    if let Some(send) = truncate {
        data = &data[..send.min(data.len())];
    }
    match slow {
        None => writer.write_all(data)?,
        Some(delay) => {
            for chunk in data.chunks(SLOW_CHUNK) {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                // Fault injection, not synchronisation: the point is a slow peer.
                thread::sleep(delay);
                writer.write_all(chunk)?;
                writer.flush()?;
            }
        }
    }
    finish(writer)
}

fn simple(writer: &mut TcpStream, status: u16, head: bool) -> io::Result<()> {
    let body = format!("{status} {}\n", reason(status));
    let text = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reason(status),
        body.len(),
        if head { "" } else { body.as_str() }
    );
    writer.write_all(text.as_bytes())?;
    finish(writer.try_clone()?)
}

fn finish(mut writer: TcpStream) -> io::Result<()> {
    writer.flush()?;
    writer.shutdown(Shutdown::Both)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn request(url: &str, method: &str, extra: &str) -> io::Result<Response> {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut s = TcpStream::connect(host)?;
        write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response head"))?;
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_string(), v.trim().to_string())
            })
            .collect();
        Ok(Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        })
    }

    fn get(url: &str) -> Response {
        request(url, "GET", "").unwrap()
    }

    #[test]
    fn serves_bodies_and_counts_hits() {
        let server = SourceServer::start().unwrap();
        let url = server.put("a/b.tar.gz", b"hello".to_vec());
        assert_eq!(url, format!("{}/a/b.tar.gz", server.base_url()));
        let r = get(&url);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("content-length"), Some("5"));
        assert_eq!(r.header("content-type"), Some("application/gzip"));
        assert_eq!(server.hits("/a/b.tar.gz"), 1);
        assert_eq!(server.hits("a/b.tar.gz"), 1);
        // Query strings and fragments do not change the path.
        assert_eq!(get(&format!("{url}?x=1")).status, 200);
        assert_eq!(server.hits("/a/b.tar.gz"), 2);
        let missing = get(&server.url("nope"));
        assert_eq!(missing.status, 404);
        assert_eq!(server.hits("/nope"), 1);
        assert_eq!(server.total_hits(), 3);
        server.remove("a/b.tar.gz");
        assert_eq!(get(&url).status, 404);
    }

    #[test]
    fn head_and_ranges() {
        let server = SourceServer::start().unwrap();
        let url = server.put("/f", b"0123456789".to_vec());
        let h = request(&url, "HEAD", "").unwrap();
        assert_eq!(
            (h.status, h.header("content-length"), h.body.len()),
            (200, Some("10"), 0)
        );
        let r = request(&url, "GET", "Range: bytes=2-4\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (206, b"234".as_slice()));
        assert_eq!(r.header("content-range"), Some("bytes 2-4/10"));
        let r = request(&url, "GET", "Range: bytes=7-\r\n").unwrap();
        assert_eq!(r.body, b"789");
        let r = request(&url, "GET", "Range: bytes=-2\r\n").unwrap();
        assert_eq!(r.body, b"89");
        let r = request(&url, "GET", "Range: bytes=20-\r\n").unwrap();
        assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */10")));
        assert_eq!(request(&url, "POST", "").unwrap().status, 405);
    }

    #[test]
    fn faults() {
        let server = SourceServer::start().unwrap();
        let url = server.put("x", vec![7; 5000]);
        server.put_fault(
            "x",
            Fault::FailFirst {
                times: 2,
                status: 503,
            },
        );
        assert_eq!(get(&url).status, 503);
        assert_eq!(get(&url).status, 503);
        assert_eq!(get(&url).body.len(), 5000);
        assert_eq!(server.hits("x"), 3);

        server.put_fault("x", Fault::Truncate { send: 100 });
        let r = get(&url);
        assert_eq!(
            (r.status, r.header("content-length"), r.body.len()),
            (200, Some("5000"), 100)
        );

        server.put_fault(
            "x",
            Fault::Slow {
                delay_per_chunk: Duration::from_millis(1),
            },
        );
        assert_eq!(get(&url).body, vec![7; 5000]);

        server.put_fault("x", Fault::Reset);
        assert!(request(&url, "GET", "").is_err());

        let only = server.put_fault("status-only", Fault::Status(500));
        assert_eq!(get(&only).status, 500);
        server.clear_fault("x");
        assert_eq!(get(&url).status, 200);
    }

    #[test]
    fn concurrent_connections_and_stop_on_drop() {
        let server = SourceServer::start().unwrap();
        let slow = server.put("slow", vec![1; 8 * SLOW_CHUNK]);
        server.put_fault(
            "slow",
            Fault::Slow {
                delay_per_chunk: Duration::from_millis(20),
            },
        );
        let fast = server.put("fast", b"f".to_vec());
        // A slow download does not block other connections.
        let slow_thread = thread::spawn(move || get(&slow).body.len());
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let fast = fast.clone();
                thread::spawn(move || get(&fast).body)
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), b"f");
        }
        assert_eq!(slow_thread.join().unwrap(), 8 * SLOW_CHUNK);
        assert_eq!(server.hits("fast"), 16);
        let addr = server.addr();
        drop(server);
        assert!(
            TcpStream::connect(addr).is_err(),
            "listener still open after drop"
        );
    }

    #[test]
    fn paths_are_percent_encoded_and_decoded() {
        let server = SourceServer::start().unwrap();
        let url = server.put("dir/with space/ü.tgz", b"x".to_vec());
        assert!(url.ends_with("/dir/with%20space/%C3%BC.tgz"), "{url}");
        assert_eq!(get(&url).body, b"x");
        assert_eq!(server.hits("dir/with space/ü.tgz"), 1);
    }
}
