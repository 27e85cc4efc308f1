//! The source cache (spec §9.8) against a real loopback HTTP server: an unchanged digest is downloaded once,
//! even by concurrent builds; the size bound evicts least-recently-used entries that no build holds; a
//! download that does not match its digest leaves nothing behind.

use std::io::Write as _;
use std::time::Duration;

use artgen_e2e::source_server::{Fault, SourceServer};
use artgen_engine::fetch::{ExtractMode, HttpOptions, Limits, Lookup, SourceCache, client};
use sha2::{Digest, Sha256};

fn tarball(name: &str, size: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let data = vec![b'x'; size];
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, &data[..]).unwrap();
    let mut gz = builder.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn opts() -> HttpOptions {
    HttpOptions {
        retries: 0,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn unchanged_digest_is_downloaded_once_even_concurrently() {
    let server = SourceServer::start().unwrap();
    let body = tarball("a.yaml", 1000);
    let d = digest(&body);
    let url = server.put("/a.tar.gz", body);
    let dir = tempfile::tempdir().unwrap();
    let cache = SourceCache::new(&dir.path().join("cache"), 1 << 30).unwrap();
    let (http, limits, opts) = (client(), Limits::for_mode(ExtractMode::Source), opts());
    let jobs = (0..8).map(|_| cache.get(&http, &url, &d, &limits, &opts));
    let results = futures_util::future::join_all(jobs).await;
    let lookups: Vec<Lookup> = results.iter().map(|r| r.as_ref().unwrap().1).collect();
    assert_eq!(
        lookups.iter().filter(|l| **l == Lookup::Miss).count(),
        1,
        "{lookups:?}"
    );
    assert_eq!(server.hits("/a.tar.gz"), 1);
    assert_eq!(cache.downloads(), 1);
    let entry = &results[0].as_ref().unwrap().0;
    assert_eq!(std::fs::read(entry.path().join("a.yaml")).unwrap().len(), 1000);
    drop(results);
    let (_, again) = cache.get(&http, &url, &d, &limits, &opts).await.unwrap();
    assert_eq!(again, Lookup::Hit);
    assert_eq!(server.hits("/a.tar.gz"), 1);
}

#[tokio::test]
async fn bound_evicts_least_recently_used_unheld_entries() {
    let server = SourceServer::start().unwrap();
    let (http, limits) = (client(), Limits::for_mode(ExtractMode::Source));
    let dir = tempfile::tempdir().unwrap();
    // Room for two 1000-byte trees.
    let cache = SourceCache::new(&dir.path().join("cache"), 2500).unwrap();
    let mut urls = Vec::new();
    for name in ["a", "b", "c"] {
        let body = tarball(&format!("{name}.yaml"), 1000);
        let d = digest(&body);
        urls.push((server.put(&format!("/{name}.tar.gz"), body), d));
    }
    let opts = opts();
    let get = |i: usize| cache.get(&http, &urls[i].0, &urls[i].1, &limits, &opts);
    let (a, _) = get(0).await.unwrap();
    drop(get(1).await.unwrap());
    // `a` is held while `c` arrives: `b` (unheld) is the one evicted, even though `a` is older.
    drop(get(2).await.unwrap());
    assert!(a.path().join("a.yaml").exists(), "a held entry is never evicted");
    assert_eq!(cache.size(), 2000);
    drop(a);
    assert_eq!(get(0).await.unwrap().1, Lookup::Hit);
    assert_eq!(get(2).await.unwrap().1, Lookup::Hit);
    assert_eq!(get(1).await.unwrap().1, Lookup::Miss, "b was evicted");
    assert_eq!(server.hits("/b.tar.gz"), 2);
}

#[tokio::test]
async fn digest_mismatch_and_http_errors_cache_nothing() {
    let server = SourceServer::start().unwrap();
    let (http, limits) = (client(), Limits::for_mode(ExtractMode::Source));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let cache = SourceCache::new(&root, 1 << 30).unwrap();
    let url = server.put("/a.tar.gz", tarball("a.yaml", 10));
    let wrong = digest(b"something else");
    let err = cache
        .get(&http, &url, &wrong, &limits, &opts())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    let missing = server.put_fault("/gone.tar.gz", Fault::Status(404));
    assert!(
        cache
            .get(&http, &missing, &wrong, &limits, &opts())
            .await
            .is_err()
    );
    assert_eq!(cache.size(), 0);
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "no partial entries left"
    );
}
