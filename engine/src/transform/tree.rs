//! The staged tree a transform edits (`/work`): the post-run check and normalisation (design/plugins.md
//! §5 steps 6 and 10), the input-tree digest for the seed (§9), the output watchdog (§6) and the snapshot
//! that `failurePolicy: Ignore` restores.
//!
//! Everything goes through cap-std handles and never follows a symlink: a plugin may have left anything
//! in `/work`, and nothing it left may make the host touch a file outside it.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, Permissions, PermissionsExt};
use sha2::{Digest as _, Sha256};

/// Fixed tree limits (§7).
pub const MAX_DEPTH: usize = 64;
pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_PATH_BYTES: usize = 4096;

/// Limits of the post-run scan. `entries` counts files and directories.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutputLimits {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// sha256 over paths, types, executable bits and contents, in name-byte order. Zero when not asked for.
    pub digest: [u8; 32],
}

/// Why the tree is not acceptable.
#[derive(Debug)]
pub(crate) enum TreeError {
    /// A rule is broken: the first offending path (relative to `/work`) and what is wrong.
    Invalid { path: String, why: String },
    /// More entries or bytes than the limits allow.
    TooLarge(String),
    /// The host could not read or normalise the tree.
    Io { path: String, source: io::Error },
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeError::Invalid { path, why } => write!(f, "'{path}' {why}"),
            TreeError::TooLarge(m) => f.write_str(m),
            TreeError::Io { path, source } => write!(f, "reading '{path}': {source}"),
        }
    }
}

struct Scan<'a> {
    limits: Option<&'a OutputLimits>,
    hash: Option<Sha256>,
    sum: Summary,
    tmp_counter: u64,
}

/// Checks the tree under `work` (only regular files and directories; depth, name and path lengths; with
/// `limits`, entry and byte counts), materialises hard links, and normalises it: directories 0755, files
/// 0755 when owner-executable else 0644, mtimes and atimes 0. With `digest`, also hashes it.
pub(crate) fn check_and_normalize(
    work: &Path,
    limits: Option<&OutputLimits>,
    digest: bool,
) -> Result<Summary, TreeError> {
    let io_err = |path: &str| {
        let path = path.to_owned();
        move |source| TreeError::Io { path, source }
    };
    let root = Dir::open_ambient_dir(work, ambient_authority()).map_err(io_err(""))?;
    let mut scan = Scan {
        limits,
        hash: digest.then(Sha256::new),
        sum: Summary {
            files: 0,
            dirs: 0,
            bytes: 0,
            digest: [0; 32],
        },
        tmp_counter: 0,
    };
    scan.dir(&root, "", 0)?;
    // cap-std directory handles are O_PATH on Linux (no fchmod/futimens): reopen the root for that.
    Pending::ALL
        .apply(std::fs::File::open(work).map_err(io_err(""))?, 0o755)
        .map_err(io_err(""))?;
    if let Some(h) = scan.hash.take() {
        scan.sum.digest = h.finalize().into();
    }
    Ok(scan.sum)
}

/// What normalising one file still has to change.
struct Pending {
    mode: bool,
    times: bool,
}

impl Pending {
    const ALL: Pending = Pending {
        mode: true,
        times: true,
    };

    fn of(md: &cap_std::fs::Metadata, mode: u32) -> Pending {
        Pending {
            mode: md.mode() & 0o7777 != mode,
            times: (md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec()) != (0, 0, 0, 0),
        }
    }

    fn any(&self) -> bool {
        self.mode || self.times
    }

    fn apply(&self, f: std::fs::File, mode: u32) -> io::Result<()> {
        if self.mode {
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        if self.times {
            let epoch = SystemTime::UNIX_EPOCH;
            f.set_times(std::fs::FileTimes::new().set_accessed(epoch).set_modified(epoch))?;
        }
        Ok(())
    }
}

/// Opens a file to read without moving its access time (`O_NOATIME`: the host owns every file in
/// `/work`), so a normalised file needs no `futimens` after hashing. Returns whether that worked.
fn open_noatime(dir: &Dir, name: &str) -> io::Result<(std::fs::File, bool)> {
    use cap_std::fs::OpenOptionsExt as _;
    let mut opts = cap_std::fs::OpenOptions::new();
    opts.read(true)
        .custom_flags(rustix::fs::OFlags::NOATIME.bits() as i32);
    match dir.open_with(name, &opts) {
        Ok(f) => Ok((f.into_std(), true)),
        // Not the owner (and no CAP_FOWNER): read normally, the caller resets the times.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            Ok((dir.open(name)?.into_std(), false))
        }
        Err(e) => Err(e),
    }
}

/// Names of `dir`'s entries, sorted by bytes, each checked to be UTF-8. Stops early past `max` entries.
fn sorted_names(dir: &Dir, prefix: &str, max: Option<u64>) -> Result<Vec<String>, TreeError> {
    let io_err = |source| TreeError::Io {
        path: prefix.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in dir.entries().map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let raw = entry.file_name();
        let Some(name) = raw.to_str() else {
            return Err(TreeError::Invalid {
                path: join(prefix, &raw.to_string_lossy()),
                why: "has a name that is not valid UTF-8".into(),
            });
        };
        names.push(name.to_owned());
        if max.is_some_and(|m| names.len() as u64 > m) {
            break;
        }
    }
    names.sort_unstable();
    Ok(names)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

impl Scan<'_> {
    fn count(&mut self, is_dir: bool, bytes: u64) -> Result<(), TreeError> {
        if is_dir {
            self.sum.dirs += 1;
        } else {
            self.sum.files += 1;
        }
        self.sum.bytes += bytes;
        if let Some(l) = self.limits {
            let entries = self.sum.files + self.sum.dirs;
            if entries > l.entries {
                return Err(TreeError::TooLarge(format!(
                    "output has more than {} files and directories (limits.outputFiles)",
                    l.entries
                )));
            }
            if self.sum.bytes > l.bytes {
                return Err(TreeError::TooLarge(format!(
                    "output is larger than {} (limits.outputBytes)",
                    super::admission::format_bytes(l.bytes)
                )));
            }
        }
        Ok(())
    }

    fn dir(&mut self, dir: &Dir, prefix: &str, depth: usize) -> Result<(), TreeError> {
        let max = self
            .limits
            .map(|l| l.entries.saturating_sub(self.sum.files + self.sum.dirs));
        let names = sorted_names(dir, prefix, max)?;
        for name in names {
            let path = join(prefix, &name);
            let io_err = |source| TreeError::Io {
                path: path.clone(),
                source,
            };
            let invalid = |why: &str| TreeError::Invalid {
                path: path.clone(),
                why: why.to_owned(),
            };
            if name.len() > MAX_NAME_BYTES {
                return Err(invalid("has a name longer than 255 bytes"));
            }
            if path.len() > MAX_PATH_BYTES {
                return Err(invalid("has a path longer than 4096 bytes"));
            }
            let md = dir.symlink_metadata(&name).map_err(io_err)?;
            let ft = md.file_type();
            if ft.is_symlink() {
                return Err(invalid(
                    "is a symlink (only regular files and directories are allowed)",
                ));
            }
            if ft.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(invalid("is nested deeper than 64 levels"));
                }
                self.count(true, 0)?;
                if let Some(h) = &mut self.hash {
                    h.update(b"D");
                    h.update(path.as_bytes());
                    h.update([0]);
                }
                // Make it traversable before opening it (a plugin cannot chmod, but be safe).
                dir.set_permissions(&name, Permissions::from_mode(0o755))
                    .map_err(io_err)?;
                let sub = dir.open_dir(&name).map_err(io_err)?;
                self.dir(&sub, &path, depth + 1)?;
                // A read-only descriptor of the directory itself (cap-std's `Dir` is O_PATH).
                let fd = dir.open(&name).map_err(io_err)?.into_std();
                // Always: reading the directory moved its access time.
                Pending::ALL.apply(fd, 0o755).map_err(io_err)?;
            } else if ft.is_file() {
                self.count(false, md.len())?;
                let executable = md.mode() & 0o100 != 0;
                if md.nlink() > 1 {
                    self.materialize(dir, &name).map_err(io_err)?;
                }
                let mode = if executable { 0o755 } else { 0o644 };
                // Only the syscalls that change something: most files are normalised already (staged
                // ones before the run, untouched ones after it).
                let mut pending = Pending::of(&md, mode);
                if md.mode() & 0o400 == 0 {
                    dir.set_permissions(&name, Permissions::from_mode(mode))
                        .map_err(io_err)?;
                    pending.mode = false;
                }
                let Some(h) = &mut self.hash else {
                    if pending.any() {
                        pending
                            .apply(dir.open(&name).map_err(io_err)?.into_std(), mode)
                            .map_err(io_err)?;
                    }
                    continue;
                };
                let (file, atime_kept) = open_noatime(dir, &name).map_err(io_err)?;
                h.update(b"F");
                h.update(path.as_bytes());
                h.update([0, u8::from(executable)]);
                h.update(md.len().to_be_bytes());
                let mut content = Sha256::new();
                io::copy(&mut (&file).take(md.len()), &mut HashWriter(&mut content)).map_err(io_err)?;
                h.update(content.finalize());
                pending.times |= !atime_kept;
                if pending.any() {
                    pending.apply(file, mode).map_err(io_err)?;
                }
            } else {
                return Err(invalid(
                    "is not a regular file or directory (devices, FIFOs and sockets are not allowed)",
                ));
            }
        }
        Ok(())
    }

    /// Replaces a hard-linked file by a private copy, so normalising it cannot change another name.
    fn materialize(&mut self, dir: &Dir, name: &str) -> io::Result<()> {
        let tmp = loop {
            self.tmp_counter += 1;
            let tmp = format!(".artgen-materialize-{}", self.tmp_counter);
            if dir.symlink_metadata(&tmp).is_err() {
                break tmp;
            }
        };
        let mut src = dir.open(name)?;
        let mut opts = cap_std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        let mut dst = dir.open_with(&tmp, &opts)?;
        io::copy(&mut src, &mut dst)?;
        dst.flush()?;
        drop(dst);
        dir.rename(&tmp, dir, name)
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// Output watchdog (§6): WASI writes have no quota, so a thread re-walks `/work` every 250 ms (stat only,
// stopping past the limits) and raises a flag the host checks whenever running wasm yields. The post-run scan
// stays authoritative.

pub(crate) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub tripped: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn start(work: &Path, limits: OutputLimits) -> io::Result<Watchdog> {
        let root = Dir::open_ambient_dir(work, ambient_authority())?;
        let tripped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let flag = tripped.clone();
        let thread = std::thread::Builder::new()
            .name("artgen-watchdog".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_millis(250)) {
                    let mut seen = (0u64, 0u64);
                    if over(&root, 0, &limits, &mut seen) {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })?;
        Ok(Watchdog {
            stop: Some(tx),
            thread: Some(thread),
            tripped,
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the tree holds more than the limits (entries, bytes). Errors count as "not over".
fn over(dir: &Dir, depth: usize, limits: &OutputLimits, seen: &mut (u64, u64)) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let Ok(entries) = dir.entries() else {
        return false;
    };
    for entry in entries.flatten() {
        seen.0 += 1;
        if seen.0 > limits.entries {
            return true;
        }
        let Ok(md) = entry.metadata() else { continue };
        if md.is_dir() {
            if let Ok(sub) = entry.open_dir()
                && over(&sub, depth + 1, limits, seen)
            {
                return true;
            }
        } else {
            seen.1 += md.len();
            if seen.1 > limits.bytes {
                return true;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------------
// Snapshot for `failurePolicy: Ignore`.

/// A copy of a checked tree (regular files and directories only), to put back if the transform fails.
pub(crate) struct Snapshot {
    dir: tempfile::TempDir,
}

impl Snapshot {
    /// Copies `work` into a private directory next to it (same filesystem, never visible to a plugin).
    pub fn take(work: &Path) -> io::Result<Snapshot> {
        let parent = work.parent().unwrap_or(work);
        let dir = tempfile::Builder::new()
            .prefix(".artgen-snapshot-")
            .tempdir_in(parent)?;
        let src = Dir::open_ambient_dir(work, ambient_authority())?;
        let dst = Dir::open_ambient_dir(dir.path(), ambient_authority())?;
        copy_tree(&src, &dst, 0)?;
        Ok(Snapshot { dir })
    }

    /// Empties `work` (never following symlinks) and moves the snapshot's contents back.
    pub fn restore(self, work: &Path) -> io::Result<()> {
        let w = Dir::open_ambient_dir(work, ambient_authority())?;
        for entry in w.entries()? {
            let entry = entry?;
            let name = entry.file_name();
            if entry.file_type()?.is_dir() {
                w.remove_dir_all(&name)?;
            } else {
                w.remove_file(&name)?;
            }
        }
        let s = Dir::open_ambient_dir(self.dir.path(), ambient_authority())?;
        for entry in s.entries()? {
            let name = entry?.file_name();
            s.rename(&name, &w, &name)?;
        }
        Ok(())
    }
}

fn copy_tree(src: &Dir, dst: &Dir, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("tree too deep"));
    }
    for entry in src.entries()? {
        let entry = entry?;
        let name = entry.file_name();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            dst.create_dir(&name)?;
            copy_tree(&src.open_dir(&name)?, &dst.open_dir(&name)?, depth + 1)?;
        } else if ft.is_file() {
            let mode = src.symlink_metadata(&name)?.mode() & 0o777;
            let mut from = src.open(&name)?;
            let mut to = dst.create(&name)?;
            io::copy(&mut from, &mut to)?;
            to.set_permissions(Permissions::from_mode(mode))?;
        } else {
            return Err(io::Error::other(format!(
                "'{}' is not a regular file or directory",
                name.to_string_lossy()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f.txt"), "hello").unwrap();
        std::fs::write(t.path().join("x.sh"), "#!/bin/sh").unwrap();
        std::fs::set_permissions(t.path().join("x.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        t
    }

    #[test]
    fn normalises_and_digests_deterministically() {
        let t1 = tree();
        let s1 = check_and_normalize(t1.path(), None, true).unwrap();
        assert_eq!((s1.files, s1.dirs, s1.bytes), (2, 2, 14));
        let md = std::fs::metadata(t1.path().join("x.sh")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o755);
        assert_eq!(md.modified().unwrap(), SystemTime::UNIX_EPOCH);
        let md = std::fs::metadata(t1.path().join("a/b/f.txt")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o644);
        // A second pass reads every file again (for the digest) and writes nothing, yet the times stay 0.
        assert_eq!(check_and_normalize(t1.path(), None, true).unwrap(), s1);
        let md = std::fs::metadata(t1.path().join("a/b/f.txt")).unwrap();
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!((md.accessed().unwrap(), md.modified().unwrap()), (epoch, epoch));
        // Same content elsewhere, created in another order: same digest.
        let t2 = tempfile::tempdir().unwrap();
        std::fs::write(t2.path().join("x.sh"), "#!/bin/sh").unwrap();
        std::fs::set_permissions(t2.path().join("x.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(t2.path().join("a/b")).unwrap();
        std::fs::write(t2.path().join("a/b/f.txt"), "hello").unwrap();
        assert_eq!(
            check_and_normalize(t2.path(), None, true).unwrap().digest,
            s1.digest
        );
        std::fs::write(t2.path().join("a/b/f.txt"), "hellp").unwrap();
        assert_ne!(
            check_and_normalize(t2.path(), None, true).unwrap().digest,
            s1.digest
        );
    }

    #[test]
    fn rejects_symlinks_specials_and_limits() {
        let t = tree();
        symlink("/etc", t.path().join("a/evil")).unwrap();
        let e = check_and_normalize(t.path(), None, false).unwrap_err();
        assert!(
            matches!(&e, TreeError::Invalid { path, .. } if path == "a/evil"),
            "{e}"
        );
        std::fs::remove_file(t.path().join("a/evil")).unwrap();
        let l = OutputLimits {
            entries: 3,
            bytes: 1 << 20,
        };
        assert!(matches!(
            check_and_normalize(t.path(), Some(&l), false),
            Err(TreeError::TooLarge(_))
        ));
        let l = OutputLimits {
            entries: 10,
            bytes: 10,
        };
        assert!(matches!(
            check_and_normalize(t.path(), Some(&l), false),
            Err(TreeError::TooLarge(_))
        ));
        let mut deep = t.path().to_path_buf();
        for _ in 0..65 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let e = check_and_normalize(t.path(), None, false).unwrap_err();
        assert!(e.to_string().contains("deeper than 64"), "{e}");
    }

    #[test]
    fn hard_links_are_materialised() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "secret").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = tree();
        std::fs::hard_link(&victim, t.path().join("link")).unwrap();
        check_and_normalize(t.path(), None, false).unwrap();
        let md = std::fs::metadata(&victim).unwrap();
        assert_eq!(
            md.permissions().mode() & 0o777,
            0o600,
            "the other name is untouched"
        );
        assert_eq!(md.nlink(), 1);
        assert_eq!(std::fs::read_to_string(t.path().join("link")).unwrap(), "secret");
    }

    #[test]
    fn snapshot_restores() {
        let t = tree();
        let snap = Snapshot::take(t.path()).unwrap();
        std::fs::remove_dir_all(t.path().join("a")).unwrap();
        std::fs::write(t.path().join("new"), "x").unwrap();
        symlink("/etc", t.path().join("ln")).unwrap();
        snap.restore(t.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("a/b/f.txt")).unwrap(),
            "hello"
        );
        assert!(!t.path().join("new").exists());
        assert!(std::fs::symlink_metadata(t.path().join("ln")).is_err());
    }

    #[test]
    fn watchdog_trips() {
        let t = tree();
        let w = Watchdog::start(
            t.path(),
            OutputLimits {
                entries: 2,
                bytes: 1 << 20,
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert!(w.tripped.load(Ordering::SeqCst));
    }
}
