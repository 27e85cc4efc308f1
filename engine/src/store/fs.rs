//! The storage layout and atomic writes (spec §10.1), with an in-memory record per written file so
//! [`Storage::verify`] re-hashes only what may have changed (§9.4).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt as _, MetadataExt as _, OpenOptions, OpenOptionsExt as _};

use super::{KIND_DIR, Stored, TEMP_PREFIX, Verified, is_artifact_file_name};
use crate::error::{Error, Result};
use crate::pack::Packed;
use crate::pack::digest::HashingWriter;
use crate::validate::{is_dns1123_label, is_dns1123_subdomain};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// What artgen saw right after writing a file. A file whose size and mtime still match is trusted
/// without re-hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) size: u64,
    pub(super) mtime: (i64, i64),
    pub(super) digest: String,
}

impl Record {
    fn matches(&self, meta: &cap_std::fs::Metadata) -> bool {
        self.size == meta.len() && self.mtime == mtime_of(meta)
    }
}

fn mtime_of(meta: &cap_std::fs::Metadata) -> (i64, i64) {
    (meta.mtime(), meta.mtime_nsec())
}

/// Artifact storage rooted at `--storage-path`. All file operations below the root go through a
/// cap-std [`Dir`], so no name can reach outside it; names are validated on top of that.
#[derive(Clone, Debug)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    dir: Dir,
    advertised: String,
    /// Keyed by the relative path `externalartifact/<ns>/<name>/<file>`.
    records: Mutex<HashMap<String, Record>>,
}

/// Distinguishes temporary files of concurrent writers within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Storage {
    /// Opens the storage at `root`, which must exist and be a directory (spec §11 `--storage-path`).
    /// `advertised` is the URL prefix of [`super::advertised_url`].
    pub fn new(root: &Path, advertised: impl Into<String>) -> Result<Self> {
        let ctx = || format!("storage path {}", root.display());
        let meta = std::fs::metadata(root).map_err(|e| Error::io(ctx(), e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                ctx(),
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let dir = Dir::open_ambient_dir(root, ambient_authority()).map_err(|e| Error::io(ctx(), e))?;
        Ok(Storage {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                dir,
                advertised: advertised.into().trim_end_matches('/').to_string(),
                records: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The advertised URL prefix, without a trailing slash.
    pub fn advertised(&self) -> &str {
        &self.inner.advertised
    }

    /// `externalartifact/<ns>/<name>/<file>`, relative to the root.
    pub fn relative_path(namespace: &str, name: &str, file: &str) -> String {
        format!("{KIND_DIR}/{namespace}/{name}/{file}")
    }

    /// The URL an artifact is served under (§10.2).
    pub fn url(&self, namespace: &str, name: &str, file: &str) -> String {
        format!(
            "{}/{}",
            self.inner.advertised,
            Self::relative_path(namespace, name, file)
        )
    }

    /// Stores the archive at `archive` as `<ns>/<name>/<packed.file_name()>`.
    ///
    /// The bytes go to a temporary file in the target directory, are fsynced and renamed into place,
    /// so a reader sees either no file or the whole file. The copy is hashed on the way and must match
    /// `packed`, so the in-memory record is trustworthy. An existing file with the same digest is kept
    /// (its URL and mtime stay stable).
    pub fn put(&self, namespace: &str, name: &str, archive: &Path, packed: &Packed) -> Result<Stored> {
        let file = packed.file_name();
        check_names(namespace, name, Some(&file))?;
        let rel = Self::relative_path(namespace, name, &file);
        let ctx = || format!("storing {rel}");
        let dir = self
            .create_artifact_dir(namespace, name)
            .map_err(|e| Error::io(ctx(), e))?;

        let stored = Stored {
            url: self.url(namespace, name, &file),
            path: rel.clone(),
            digest: packed.digest.clone(),
            size: packed.size,
        };
        if self
            .verify_in(&dir, &rel, &file, &packed.digest)
            .map_err(|e| Error::io(ctx(), e))?
            == Verified::Ok
        {
            return Ok(stored);
        }

        let mut src = std::fs::File::open(archive).map_err(|e| Error::io(ctx(), e))?;
        let tmp = format!(
            "{TEMP_PREFIX}{}-{}-{file}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let written = write_temp(&dir, &tmp, &mut src, packed);
        let record = written.and_then(|()| {
            dir.rename(&tmp, &dir, &file)?;
            sync_dir(&dir)?;
            let meta = dir.symlink_metadata(&file)?;
            Ok(Record {
                size: meta.len(),
                mtime: mtime_of(&meta),
                digest: packed.digest.clone(),
            })
        });
        match record {
            Ok(record) => {
                self.records().insert(rel, record);
                Ok(stored)
            }
            Err(e) => {
                let _ = dir.remove_file(&tmp);
                Err(Error::io(ctx(), e))
            }
        }
    }

    /// Checks a stored file against the inventory digest (§9.4). The file is re-hashed only when there
    /// is no record of writing it (e.g. after a restart) or its mtime changed; a size different from the
    /// record is corruption without hashing. A corrupted file is deleted.
    pub fn verify(&self, namespace: &str, name: &str, file: &str, digest: &str) -> Result<Verified> {
        if check_names(namespace, name, Some(file)).is_err() {
            return Ok(Verified::Missing);
        }
        let rel = Self::relative_path(namespace, name, file);
        let dir = match self.open_artifact_dir(namespace, name) {
            Ok(dir) => dir,
            Err(e) if is_absent(&e) => return Ok(Verified::Missing),
            Err(e) => return Err(Error::io(format!("verifying {rel}"), e)),
        };
        self.verify_in(&dir, &rel, file, digest)
            .map_err(|e| Error::io(format!("verifying {rel}"), e))
    }

    fn verify_in(&self, dir: &Dir, rel: &str, file: &str, digest: &str) -> io::Result<Verified> {
        let meta = match dir.symlink_metadata(file) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(Verified::Missing),
            Err(e) if is_absent(&e) => {
                self.records().remove(rel);
                return Ok(Verified::Missing);
            }
            Err(e) => return Err(e),
        };
        let record = self.records().get(rel).cloned();
        let ok = match record {
            Some(r) if r.matches(&meta) => r.digest == digest,
            Some(r) if r.size != meta.len() => false,
            _ => {
                let Some(mut f) = open_same_file(dir, file, &meta)? else {
                    return Ok(Verified::Missing);
                };
                let mut w = HashingWriter::new(io::sink());
                io::copy(&mut f, &mut w)?;
                let (_, actual, size) = w.finish();
                // The metadata of the open file: what was hashed is what gets recorded.
                let meta = f.metadata()?;
                let ok = actual == digest && size == meta.len();
                if ok {
                    let record = Record {
                        size,
                        mtime: mtime_of(&meta),
                        digest: actual,
                    };
                    self.records().insert(rel.to_string(), record);
                }
                ok
            }
        };
        if ok {
            return Ok(Verified::Ok);
        }
        self.records().remove(rel);
        match dir.remove_file(file) {
            Ok(()) => Ok(Verified::Corrupted),
            Err(e) if is_absent(&e) => Ok(Verified::Corrupted),
            Err(e) => Err(e),
        }
    }

    /// Removes `<ns>/<name>` with everything in it (deletion and orphan GC, §10.3). Absent is fine.
    pub fn remove_artifact_dir(&self, namespace: &str, name: &str) -> Result<()> {
        check_names(namespace, name, None)?;
        let ctx = || format!("removing {KIND_DIR}/{namespace}/{name}");
        let ns_dir = match self.open_checked(&[KIND_DIR, namespace]) {
            Ok(dir) => dir,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(Error::io(ctx(), e)),
        };
        match ns_dir.remove_dir_all(name) {
            Ok(()) => {}
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(Error::io(ctx(), e)),
        }
        let prefix = format!("{KIND_DIR}/{namespace}/{name}/");
        self.records().retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }

    pub(super) fn records(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // A panic while holding the lock cannot leave a record half-written: entries are replaced whole.
        self.inner.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn create_artifact_dir(&self, namespace: &str, name: &str) -> io::Result<Dir> {
        let mut builder = DirBuilder::new();
        builder.mode(DIR_MODE);
        let mut dir = self.inner.dir.try_clone()?;
        for seg in [KIND_DIR, namespace, name] {
            match dir.create_dir_with(seg, &builder) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            dir = open_dir_nofollow(&dir, seg)?;
        }
        Ok(dir)
    }

    pub(super) fn open_artifact_dir(&self, namespace: &str, name: &str) -> io::Result<Dir> {
        self.open_checked(&[KIND_DIR, namespace, name])
    }

    fn open_checked(&self, segments: &[&str]) -> io::Result<Dir> {
        let mut dir = self.inner.dir.try_clone()?;
        for seg in segments {
            dir = open_dir_nofollow(&dir, seg)?;
        }
        Ok(dir)
    }
}

/// Opens a sub-directory, refusing symlinks: storage directories are only ever created by us.
fn open_dir_nofollow(dir: &Dir, seg: &str) -> io::Result<Dir> {
    if !dir.symlink_metadata(seg)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{seg} is not a directory"),
        ));
    }
    dir.open_dir(seg)
}

/// Opens `file` only if it is still the regular file `lstat` saw: a symlink swapped in between is
/// refused (`None`) rather than followed.
fn open_same_file(
    dir: &Dir,
    file: &str,
    seen: &cap_std::fs::Metadata,
) -> io::Result<Option<cap_std::fs::File>> {
    let f = dir.open(file)?;
    let meta = f.metadata()?;
    Ok((meta.is_file() && meta.dev() == seen.dev() && meta.ino() == seen.ino()).then_some(f))
}

fn write_temp(dir: &Dir, tmp: &str, src: &mut dyn Read, packed: &Packed) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true).mode(FILE_MODE);
    let mut w = HashingWriter::new(dir.open_with(tmp, &opts)?);
    io::copy(src, &mut w)?;
    w.flush()?;
    let (f, digest, size) = w.finish();
    if digest != packed.digest || size != packed.size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "archive is {digest} ({size} bytes), expected {} ({} bytes)",
                packed.digest, packed.size
            ),
        ));
    }
    f.sync_all()
}

/// Makes the rename durable.
fn sync_dir(dir: &Dir) -> io::Result<()> {
    dir.open(".")?.sync_all()
}

fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

pub(super) fn check_names(namespace: &str, name: &str, file: Option<&str>) -> Result<()> {
    if !is_dns1123_label(namespace) {
        return Err(Error::invalid(
            "metadata.namespace",
            format!("'{namespace}' is not a DNS-1123 label"),
        ));
    }
    if !is_dns1123_subdomain(name) {
        return Err(Error::invalid(
            "metadata.name",
            format!("'{name}' is not a DNS-1123 subdomain"),
        ));
    }
    if let Some(file) = file
        && !is_artifact_file_name(file)
    {
        return Err(Error::invalid(
            "file",
            format!("'{file}' is not an artifact file name"),
        ));
    }
    Ok(())
}
