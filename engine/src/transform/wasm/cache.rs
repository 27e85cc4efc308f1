//! Compiled-code caches (design/plugins.md §5 step 4): an in-memory LRU of loaded plugins and an on-disk
//! `.cwasm` cache at `<cache>/<hex(sha256(precompile_compatibility_hash))>/<hex digest>.cwasm`.
//!
//! The on-disk cache is private to this process's user: its directories are created 0700 and a directory
//! that is not (group/other bits set, a symlink, not a directory) is not used at all. Every read error,
//! version or configuration mismatch is a miss: the file is deleted and the plugin recompiled
//! (wasmtime#11685). Files are written to a temporary name and renamed, so a reader never sees half a file,
//! and read back into memory (never mapped), so a file changed later cannot fault the process. At most 128
//! files are kept, least recently used first out.

use std::collections::VecDeque;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds `Hash` output into sha256 (the compatibility hash is only available through `Hash`).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// `hex(sha256(engine.precompile_compatibility_hash()))`: changes with the wasmtime version, the engine
/// configuration (fuel, epochs, …) and the host CPU features.
pub(super) fn compatibility_key(engine: &Engine) -> String {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(h.0.finalize())
}

#[derive(Debug)]
pub(super) struct Disk {
    dir: PathBuf,
}

fn private_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) => {
            if !md.is_dir() {
                return Err(io::Error::other(format!("{} is not a directory", path.display())));
            }
            if md.permissions().mode() & 0o077 != 0 {
                return Err(io::Error::other(format!(
                    "{} is accessible to other users (mode {:o}); it must be 0700",
                    path.display(),
                    md.permissions().mode() & 0o777
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().mode(0o700).recursive(true).create(path)?;
            // `recursive` may have found it created concurrently: check again.
            let md = fs::symlink_metadata(path)?;
            if !md.is_dir() || md.permissions().mode() & 0o077 != 0 {
                return Err(io::Error::other(format!(
                    "{} is not a private directory",
                    path.display()
                )));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Disk {
    /// Opens (creating 0700) `<root>/<compatibility key>`.
    pub fn open(root: &Path, engine: &Engine) -> io::Result<Disk> {
        private_dir(root)?;
        let dir = root.join(compatibility_key(engine));
        private_dir(&dir)?;
        Ok(Disk { dir })
    }

    fn path(&self, digest_hex: &str) -> PathBuf {
        self.dir.join(format!("{digest_hex}.cwasm"))
    }

    /// Loads a cached component; any failure is a miss and removes the file.
    pub fn load(&self, engine: &Engine, digest_hex: &str) -> Option<Component> {
        let path = self.path(digest_hex);
        let md = match fs::symlink_metadata(&path) {
            Ok(md) if md.is_file() => md,
            Ok(_) => {
                let _ = fs::remove_file(&path);
                return None;
            }
            Err(_) => return None,
        };
        match deserialize_private(engine, &path, &md) {
            Ok(c) => {
                // Recency for `prune` (best effort).
                if let Ok(f) = fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding unusable compiled plugin");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes a compiled component (best effort: a failure only costs a later recompile).
    pub fn store(&self, digest_hex: &str, component: &Component) {
        let result = (|| -> io::Result<()> {
            let bytes = component
                .serialize()
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".cwasm-")
                .permissions(fs::Permissions::from_mode(0o600))
                .tempfile_in(&self.dir)?;
            tmp.write_all(&bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(self.path(digest_hex)).map_err(|e| e.error)?;
            self.prune()
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the compiled-plugin cache");
        }
    }
}

impl Disk {
    /// Keeps the [`MAX_FILES`] most recently used `.cwasm` files.
    fn prune(&self) -> io::Result<()> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "cwasm") {
                let md = e.metadata()?;
                files.push((md.modified().unwrap_or(std::time::UNIX_EPOCH), p));
            }
        }
        if files.len() > MAX_FILES {
            files.sort();
            for (_, p) in &files[..files.len() - MAX_FILES] {
                let _ = fs::remove_file(p);
            }
        }
        Ok(())
    }
}

/// Compiled plugins kept on disk (about 2.8 × the component each).
const MAX_FILES: usize = 128;

/// Largest `.cwasm` file read back (a 50 MiB component compiles to roughly 140 MiB).
const MAX_CWASM_BYTES: u64 = 512 << 20;

/// The only `unsafe` in the plugin host.
///
/// The file is mapped, not read (`Component::deserialize_file`, as design/plugins.md §5 says): a copy costs
/// about 4 ms for the templater's 3.9 MB `.cwasm` on this class of machine, a mapping a fraction of one.
/// A mapped file that shrinks while in use faults the process (SIGBUS). artgen never changes a `.cwasm` in
/// place: [`Disk::store`] renames a complete temporary file over it and [`Disk::prune`] unlinks, and both
/// leave existing mappings intact. Only someone with this user's access to the private cache directory
/// could truncate one, and they could as well replace it with machine code of their choosing, which
/// `deserialize` (mapped or read) would run: mapping grants nothing new.
#[allow(unsafe_code)]
fn deserialize_private(engine: &Engine, path: &Path, md: &fs::Metadata) -> wasmtime::Result<Component> {
    if md.len() > MAX_CWASM_BYTES {
        return Err(wasmtime::format_err!(
            "{} is {} bytes, more than a cached plugin may be",
            path.display(),
            md.len()
        ));
    }
    // Only files `Disk::store` made: a private regular file with no other name.
    if md.nlink() != 1 || md.permissions().mode() & 0o077 != 0 {
        return Err(wasmtime::format_err!(
            "{} is not a private regular file with one link",
            path.display()
        ));
    }
    // SAFETY: `Component::deserialize_file` trusts its input to be wasmtime-produced machine code that
    // does not change while mapped. `path` is inside the 0700 cache directory that `Disk::open` created
    // or verified as private to this user (never under --storage-path, which is served over HTTP), and
    // only `Disk::store` writes there, from `Component::serialize` of code this process compiled itself;
    // user-supplied `.cwasm` files are never accepted. wasmtime itself rejects files from another
    // version, configuration or CPU (the directory name is the engine's compatibility hash as well), and
    // any such error is treated as a miss.
    unsafe { Component::deserialize_file(engine, path) }
}

/// A small LRU keyed by plugin digest.
#[derive(Debug)]
pub(super) struct Lru<V> {
    cap: usize,
    items: VecDeque<(String, V)>,
}

impl<V: Clone> Lru<V> {
    pub fn new(cap: usize) -> Self {
        Lru {
            cap: cap.max(1),
            items: VecDeque::new(),
        }
    }

    pub fn get(&mut self, key: &str) -> Option<V> {
        let i = self.items.iter().position(|(k, _)| k == key)?;
        let item = self.items.remove(i)?;
        let v = item.1.clone();
        self.items.push_front(item);
        Some(v)
    }

    pub fn put(&mut self, key: String, v: V) {
        self.items.retain(|(k, _)| *k != key);
        self.items.push_front((key, v));
        self.items.truncate(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recent() {
        let mut l = Lru::new(2);
        l.put("a".into(), 1);
        l.put("b".into(), 2);
        assert_eq!(l.get("a"), Some(1));
        l.put("c".into(), 3);
        assert_eq!(l.get("b"), None);
        assert_eq!(l.get("a"), Some(1));
        assert_eq!(l.get("c"), Some(3));
    }

    #[test]
    fn prune_keeps_the_most_recent() {
        let t = tempfile::tempdir().unwrap();
        let disk = Disk {
            dir: t.path().to_owned(),
        };
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(10_000);
        for i in 0..(MAX_FILES + 3) {
            let p = t.path().join(format!("{i:04}.cwasm"));
            fs::write(&p, b"x").unwrap();
            let f = fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(base + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        fs::write(t.path().join("other"), b"x").unwrap();
        disk.prune().unwrap();
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), MAX_FILES + 1);
        assert!(!t.path().join("0002.cwasm").exists());
        assert!(t.path().join("0003.cwasm").exists());
    }

    #[test]
    fn a_shared_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c");
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&p).is_err());
        let q = t.path().join("new/deeper");
        private_dir(&q).unwrap();
        assert_eq!(fs::metadata(&q).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
