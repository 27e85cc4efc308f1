//! The source cache (spec §9.8): unpacked source artifacts keyed by their `status.artifact.digest`, shared by
//! every generator, bounded in bytes with least-recently-used eviction. An unchanged digest is never
//! downloaded twice: concurrent requests for one digest wait for a single download (single flight).
//!
//! An entry is a read-only directory tree, written under a temporary name and renamed into place once the
//! download matched its digest, so a visible entry is always complete. Entries in use by a build are never
//! evicted; the bound is enforced again when the last user lets go.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::extract::{ExtractMode, Limits};
use super::http::{HttpOptions, fetch};
use super::{FetchError, parse_sha256};

/// Whether a lookup found the entry or had to download it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SourceCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    max_size: u64,
    state: Mutex<State>,
    /// One lock per digest being downloaded.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    clock: u64,
    total: u64,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    last_used: u64,
    users: usize,
}

/// A cache entry held for a build: the tree stays on disk until this is dropped.
#[derive(Debug)]
pub struct CachedSource {
    cache: SourceCache,
    hex: String,
    path: PathBuf,
}

impl CachedSource {
    /// The unpacked tree (read it, never write it).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CachedSource {
    fn drop(&mut self) {
        let mut state = self.cache.state();
        if let Some(e) = state.entries.get_mut(&self.hex) {
            e.users -= 1;
        }
        self.cache.evict(&mut state);
    }
}

impl SourceCache {
    /// A cache in `root`, which is created if needed; anything already in it is removed (entries are not
    /// trusted across restarts: nothing recorded their digests).
    pub fn new(root: &Path, max_size: u64) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(root)?;
        Ok(SourceCache {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                max_size,
                state: Mutex::new(State::default()),
                flights: Mutex::new(HashMap::new()),
                downloads: AtomicU64::new(0),
            }),
        })
    }

    /// Downloads performed so far (cache misses that completed).
    pub fn downloads(&self) -> u64 {
        self.inner.downloads.load(Ordering::Relaxed)
    }

    /// Bytes held by the entries.
    pub fn size(&self) -> u64 {
        self.state().total
    }

    /// The tree of the artifact with `digest`, downloaded from `url` (with the source limits of spec §4) if
    /// it is not cached.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        url: &str,
        digest: &str,
        limits: &Limits,
        opts: &HttpOptions,
    ) -> Result<(CachedSource, Lookup), FetchError> {
        let hex = parse_sha256(digest)?;
        if let Some(hit) = self.acquire(&hex) {
            return Ok((hit, Lookup::Hit));
        }
        let flight = {
            let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.entry(hex.clone()).or_default().clone()
        };
        let _guard = flight.lock().await;
        // Whoever held the flight before us may have filled the entry.
        if let Some(hit) = self.acquire(&hex) {
            return Ok((hit, Lookup::Hit));
        }
        let result = self.download(client, url, &hex, limits, opts).await;
        self.inner
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hex);
        result.map(|entry| (entry, Lookup::Miss))
    }

    async fn download(
        &self,
        client: &reqwest::Client,
        url: &str,
        hex: &str,
        limits: &Limits,
        opts: &HttpOptions,
    ) -> Result<CachedSource, FetchError> {
        let (unpacked, dir) = fetch(
            client,
            url,
            Some(hex),
            &self.inner.root,
            ExtractMode::Source,
            limits,
            opts,
        )
        .await?;
        let path = self.inner.root.join(hex);
        let tmp = dir.keep();
        let renamed = std::fs::rename(&tmp, &path);
        if let Err(e) = renamed {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(FetchError::io("storing source in the cache", e));
        }
        self.inner.downloads.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        state.clock += 1;
        let entry = Entry {
            size: unpacked.bytes,
            last_used: state.clock,
            users: 1,
        };
        state.total += entry.size;
        state.entries.insert(hex.to_owned(), entry);
        self.evict(&mut state);
        Ok(CachedSource {
            cache: self.clone(),
            hex: hex.to_owned(),
            path,
        })
    }

    fn acquire(&self, hex: &str) -> Option<CachedSource> {
        let mut state = self.state();
        state.clock += 1;
        let clock = state.clock;
        let entry = state.entries.get_mut(hex)?;
        entry.users += 1;
        entry.last_used = clock;
        Some(CachedSource {
            cache: self.clone(),
            hex: hex.to_owned(),
            path: self.inner.root.join(hex),
        })
    }

    /// Drops least-recently-used unused entries while over the bound. The directory is renamed away under the
    /// lock (so a new download of the same digest cannot collide) and removed outside of it.
    fn evict(&self, state: &mut State) {
        while state.total > self.inner.max_size {
            let Some(victim) = state
                .entries
                .iter()
                .filter(|(_, e)| e.users == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(hex, _)| hex.clone())
            else {
                return;
            };
            let entry = state.entries.remove(&victim).expect("victim exists");
            state.total -= entry.size;
            let from = self.inner.root.join(&victim);
            let doomed = self.inner.root.join(format!(".evicted-{victim}-{}", state.clock));
            if std::fs::rename(&from, &doomed).is_ok() {
                remove_in_background(doomed);
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Deleting a tree is blocking I/O: off the async workers when there is a runtime.
fn remove_in_background(path: PathBuf) {
    let remove = move || {
        let _ = std::fs::remove_dir_all(&path);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(remove)),
        Err(_) => remove(),
    }
}
