//! The artifact server (spec §10.4) against a real listener, with artifacts written by
//! `artgen_engine::store::Storage`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use artgen_engine::pack::Packed;
use artgen_engine::store::{Storage, Stored};
use reqwest::StatusCode;
use reqwest::header;
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    base: String,
    client: reqwest::Client,
    storage: Storage,
    _root: tempfile::TempDir,
    scratch: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic, incompressible-looking test bytes.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

async fn start() -> Server {
    let root = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let storage = Storage::new(root.path(), base.clone()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(artgen::server::serve(
        listener,
        root.path().to_path_buf(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        client: client(),
        storage,
        _root: root,
        scratch: tempfile::tempdir().unwrap(),
        stop: Some(stop),
        task,
    }
}

impl Server {
    fn root(&self) -> &Path {
        self._root.path()
    }

    /// Writes `data` through `Storage::put` (on a blocking thread, as the controller does).
    async fn put(&self, ns: &str, name: &str, data: &[u8]) -> Stored {
        let packed = Packed {
            digest: digest(data),
            size: data.len() as u64,
        };
        let src: PathBuf = self.scratch.path().join(packed.file_name());
        std::fs::write(&src, data).unwrap();
        let (storage, ns, name) = (self.storage.clone(), ns.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || storage.put(&ns, &name, &src, &packed))
            .await
            .unwrap()
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn status(&self, path: &str) -> StatusCode {
        self.get(path).await.status()
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn get_serves_the_stored_bytes() {
    let s = start().await;
    let data = bytes(300_000, 1);
    let stored = s.put("apps", "my-app", &data).await;
    assert_eq!(stored.url, format!("{}/{}", s.base, stored.path));

    let resp = s.client.get(&stored.url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "application/gzip");
    assert_eq!(h[header::CONTENT_LENGTH], data.len().to_string().as_str());
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert!(h.contains_key(header::LAST_MODIFIED));
    let body = resp.bytes().await.unwrap();
    assert_eq!(digest(&body), stored.digest);
    assert_eq!(body.len() as u64, stored.size);
    s.shutdown().await;
}

#[tokio::test]
async fn head_has_headers_and_no_body() {
    let s = start().await;
    let data = bytes(1000, 2);
    let stored = s.put("apps", "x", &data).await;
    let resp = s.client.head(&stored.url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "1000");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/gzip");
    assert!(resp.bytes().await.unwrap().is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn range_requests() {
    let s = start().await;
    let data = bytes(5000, 3);
    let stored = s.put("apps", "x", &data).await;
    let range = |r: &'static str| s.client.get(&stored.url).header(header::RANGE, r).send();

    let resp = range("bytes=100-199").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes 100-199/5000");
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "100");
    assert_eq!(resp.bytes().await.unwrap(), data[100..200]);

    let resp = range("bytes=-10").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes 4990-4999/5000");
    assert_eq!(resp.bytes().await.unwrap(), data[4990..]);

    let resp = range("bytes=4000-").await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), data[4000..]);

    let resp = range("bytes=5000-").await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes */5000");

    let resp = range("bytes=0-1,10-11").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), data);

    // A stale If-Range turns the range request into a full one.
    let resp = s
        .client
        .get(&stored.url)
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "Thu, 01 Jan 1970 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test]
async fn if_modified_since() {
    let s = start().await;
    let stored = s.put("apps", "x", &bytes(100, 4)).await;
    let resp = s.client.get(&stored.url).send().await.unwrap();
    let last_modified = resp.headers()[header::LAST_MODIFIED].clone();

    let resp = s
        .client
        .get(&stored.url)
        .header(header::IF_MODIFIED_SINCE, &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert!(resp.bytes().await.unwrap().is_empty());

    let old = "Thu, 01 Jan 1970 00:00:00 GMT";
    let resp = s
        .client
        .get(&stored.url)
        .header(header::IF_MODIFIED_SINCE, old)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test]
async fn root_answers_200() {
    let s = start().await;
    assert_eq!(s.status("/").await, StatusCode::OK);
    let resp = s.client.head(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test]
async fn everything_else_is_404() {
    let s = start().await;
    let stored = s.put("apps", "x", &bytes(100, 5)).await;
    let file = stored.path.rsplit('/').next().unwrap().to_string();
    let dir = s.root().join("externalartifact/apps/x");
    std::fs::write(dir.join(format!("{file}.lock")), b"lock").unwrap();
    std::fs::write(dir.join(format!(".tmp-1-2-{file}")), b"partial").unwrap();
    std::fs::write(dir.join("notes.txt"), b"text").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd0000000000.tar.gz")).unwrap();
    std::os::unix::fs::symlink(dir.join(&file), dir.join("alias00000000000.tar.gz")).unwrap();
    std::os::unix::fs::symlink(&dir, s.root().join("externalartifact/apps/linked")).unwrap();
    std::fs::write(s.root().join("top.tar.gz"), b"outside the layout").unwrap();

    // The real file is served; each of these is not.
    assert_eq!(s.status(&format!("/{}", stored.path)).await, StatusCode::OK);
    let cases = [
        "/externalartifact/apps/x/0000000000000000.tar.gz".to_string(),
        "/externalartifact/apps/absent/0000000000000000.tar.gz".into(),
        format!("/externalartifact/apps/x/{file}.lock"),
        format!("/externalartifact/apps/x/.tmp-1-2-{file}"),
        "/externalartifact/apps/x/notes.txt".into(),
        "/externalartifact/apps/x/passwd0000000000.tar.gz".into(),
        "/externalartifact/apps/x/alias00000000000.tar.gz".into(),
        format!("/externalartifact/apps/linked/{file}"),
        "/externalartifact/apps/x/..%2F..%2F..%2Ftop.tar.gz".into(),
        "/externalartifact/apps/x/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd".into(),
        format!("/externalartifact/apps/%2e%2e/x/{file}"),
        format!("/externalartifact/apps%2Fx/x/{file}"),
        "/externalartifact/apps/x/%ff.tar.gz".into(),
        "/externalartifact/apps/x".into(),
        "/externalartifact/apps/x/".into(),
        "/externalartifact".into(),
        format!("/externalartifact/apps/x/{file}/more"),
        format!("/other/apps/x/{file}"),
        format!("/apps/x/{file}"),
        "/top.tar.gz".into(),
        "/etc/passwd".into(),
    ];
    for path in &cases {
        assert_eq!(s.status(path).await, StatusCode::NOT_FOUND, "{path}");
    }
    let resp = s.client.post(&stored.url).send().await.unwrap();
    assert!(resp.status().is_client_error(), "POST: {}", resp.status());
    s.shutdown().await;
}

/// While `put` writes a new file, a reader polling its URL gets 404 or the whole file, never a part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reader_never_sees_a_partial_file() {
    let s = Arc::new(start().await);
    let data = bytes(8 << 20, 6);
    let want = digest(&data);
    let url = format!(
        "{}/{}",
        s.base,
        Storage::relative_path("apps", "big", &format!("{}.tar.gz", &want[7..23]))
    );
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let (s, done, want, url) = (s.clone(), done.clone(), want.clone(), url.clone());
        tokio::spawn(async move {
            let mut full = 0;
            loop {
                let finished = done.load(Ordering::Acquire);
                let resp = s.client.get(&url).send().await.unwrap();
                match resp.status() {
                    StatusCode::NOT_FOUND => assert!(!finished, "missing after put returned"),
                    StatusCode::OK => {
                        assert_eq!(
                            digest(&resp.bytes().await.unwrap()),
                            want,
                            "partial or wrong body"
                        );
                        full += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
                if finished {
                    return full;
                }
            }
        })
    };
    let stored = s.put("apps", "big", &data).await;
    done.store(true, Ordering::Release);
    assert_eq!(stored.url, url);
    assert!(reader.await.unwrap() >= 1);
    Arc::into_inner(s).unwrap().shutdown().await;
}

#[tokio::test]
async fn serve_fails_for_a_missing_root() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let res = artgen::server::serve(listener, PathBuf::from("/nonexistent/artgen-storage"), async {}).await;
    assert!(res.is_err());
}

/// Shutdown lets a response that is already streaming finish, then `serve` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_responses() {
    let mut s = start().await;
    let data = bytes(16 << 20, 7);
    let stored = s.put("apps", "x", &data).await;
    let resp = s.client.get(&stored.url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.stop.take().unwrap().send(()).unwrap();
    assert_eq!(digest(&resp.bytes().await.unwrap()), stored.digest);
    (&mut s.task).await.unwrap().unwrap();
}
