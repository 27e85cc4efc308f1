use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::*;
use crate::pack::Packed;
use crate::pack::digest::sha256_bytes;

const ADV: &str = "http://storage.test:9090";

fn packed(data: &[u8]) -> Packed {
    Packed {
        digest: sha256_bytes(data),
        size: data.len() as u64,
    }
}

/// Writes `data` as a build output outside storage, as `artgen_engine::build` would.
fn archive(scratch: &Path, data: &[u8]) -> (PathBuf, Packed) {
    let p = packed(data);
    let path = scratch.join(format!("out-{}", p.file_name()));
    fs::write(&path, data).unwrap();
    (path, p)
}

fn setup() -> (tempfile::TempDir, tempfile::TempDir, Storage) {
    let root = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let storage = Storage::new(root.path(), format!("{ADV}/")).unwrap();
    (root, scratch, storage)
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn new_requires_an_existing_directory() {
    let root = tempfile::tempdir().unwrap();
    assert!(Storage::new(&root.path().join("absent"), ADV).is_err());
    let file = root.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(Storage::new(&file, ADV).is_err());
}

#[test]
fn put_layout_modes_and_url() {
    let (root, scratch, storage) = setup();
    let (src, p) = archive(scratch.path(), b"artifact bytes");
    let stored = storage.put("apps", "my-app", &src, &p).unwrap();

    let file = p.file_name();
    assert_eq!(stored.path, format!("externalartifact/apps/my-app/{file}"));
    assert_eq!(stored.url, format!("{ADV}/externalartifact/apps/my-app/{file}"));
    assert_eq!((stored.digest.as_str(), stored.size), (p.digest.as_str(), p.size));

    let on_disk = root.path().join(&stored.path);
    assert_eq!(fs::read(&on_disk).unwrap(), b"artifact bytes");
    assert_eq!(mode(&on_disk), 0o600);
    for dir in [
        "externalartifact",
        "externalartifact/apps",
        "externalartifact/apps/my-app",
    ] {
        assert_eq!(mode(&root.path().join(dir)), 0o700, "{dir}");
    }
    // Only the artifact is left behind: no temporary files.
    let names: Vec<_> = fs::read_dir(on_disk.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from(&file)]);
}

#[test]
fn put_rejects_bad_names_and_mismatched_archives() {
    let (root, scratch, storage) = setup();
    let (src, p) = archive(scratch.path(), b"data");
    for (ns, name) in [
        ("..", "x"),
        ("apps", "../x"),
        ("Apps", "x"),
        ("apps", "a/b"),
        ("", "x"),
        ("apps", ""),
    ] {
        assert!(storage.put(ns, name, &src, &p).is_err(), "{ns}/{name}");
    }
    let wrong = Packed {
        digest: sha256_bytes(b"other"),
        size: 4,
    };
    assert!(storage.put("apps", "x", &src, &wrong).is_err());
    let dir = root.path().join("externalartifact/apps/x");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "a failed put leaves nothing behind"
    );
}

#[test]
fn put_is_idempotent() {
    let (root, scratch, storage) = setup();
    let (src, p) = archive(scratch.path(), b"same content");
    let first = storage.put("apps", "x", &src, &p).unwrap();
    let path = root.path().join(&first.path);
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    set_mtime(&path, old);
    let ino = fs::metadata(&path).unwrap().ino();

    // Also from a fresh process view (no record): the file is re-hashed and kept.
    let again = Storage::new(root.path(), ADV).unwrap();
    assert_eq!(again.put("apps", "x", &src, &p).unwrap(), first);
    assert_eq!(storage.put("apps", "x", &src, &p).unwrap(), first);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.ino(), meta.modified().unwrap()),
        (ino, old),
        "the existing file is kept"
    );
}

#[test]
fn put_replaces_a_corrupted_file() {
    let (root, scratch, storage) = setup();
    let (src, p) = archive(scratch.path(), b"good content");
    let stored = storage.put("apps", "x", &src, &p).unwrap();
    let path = root.path().join(&stored.path);
    fs::write(&path, b"bad").unwrap();
    storage.put("apps", "x", &src, &p).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"good content");
}

/// A reader polling the final name while a large file is written sees either nothing or all of it.
#[test]
fn put_is_atomic() {
    let (root, scratch, storage) = setup();
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (src, p) = archive(scratch.path(), &data);
    let final_path = root
        .path()
        .join(Storage::relative_path("apps", "big", &p.file_name()));
    let done = AtomicBool::new(false);
    let seen_partial = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut partial = 0;
            loop {
                let finished = done.load(Ordering::Acquire);
                if let Ok(f) = fs::File::open(&final_path) {
                    partial += usize::from(f.metadata().unwrap().len() != data.len() as u64);
                }
                if finished {
                    return partial;
                }
            }
        });
        storage.put("apps", "big", &src, &p).unwrap();
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    assert_eq!(seen_partial, 0);
    assert_eq!(fs::read(&final_path).unwrap(), data);
}

#[test]
fn verify_ok_missing_corrupted() {
    let (root, scratch, storage) = setup();
    let (src, p) = archive(scratch.path(), b"0123456789 verify me");
    let stored = storage.put("apps", "x", &src, &p).unwrap();
    let file = p.file_name();
    let path = root.path().join(&stored.path);
    let verify = |s: &Storage, f: &str| s.verify("apps", "x", f, &p.digest).unwrap();

    assert_eq!(verify(&storage, &file), Verified::Ok);
    assert_eq!(verify(&storage, "0000000000000000.tar.gz"), Verified::Missing);
    assert_eq!(
        storage.verify("other", "x", &file, &p.digest).unwrap(),
        Verified::Missing
    );
    assert_eq!(verify(&storage, "../../etc/passwd"), Verified::Missing);

    // Only the mtime changed: re-hashed, still fine.
    let later = SystemTime::now() + Duration::from_secs(10);
    set_mtime(&path, later);
    assert_eq!(verify(&storage, &file), Verified::Ok);

    // Same size, one byte flipped, new mtime: re-hashed, corrupted, deleted.
    let mut bytes = fs::read(&path).unwrap();
    bytes[3] ^= 0x55;
    fs::write(&path, &bytes).unwrap();
    set_mtime(&path, later + Duration::from_secs(10));
    assert_eq!(verify(&storage, &file), Verified::Corrupted);
    assert!(!path.exists());
    assert_eq!(verify(&storage, &file), Verified::Missing);

    // Truncated with the recorded mtime restored: the size alone gives it away.
    storage.put("apps", "x", &src, &p).unwrap();
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(5)
        .unwrap();
    set_mtime(&path, mtime);
    assert_eq!(verify(&storage, &file), Verified::Corrupted);
    assert!(!path.exists());

    // No record (a restart): a flipped byte is found by hashing.
    storage.put("apps", "x", &src, &p).unwrap();
    fs::write(&path, &bytes).unwrap();
    let fresh = Storage::new(root.path(), ADV).unwrap();
    assert_eq!(verify(&fresh, &file), Verified::Corrupted);

    // A symlink is not a regular file in storage.
    std::os::unix::fs::symlink(&src, &path).unwrap();
    assert_eq!(verify(&fresh, &file), Verified::Missing);
    assert!(src.exists());
}

#[test]
fn remove_artifact_dir() {
    let (root, scratch, storage) = setup();
    let (src, p) = archive(scratch.path(), b"x");
    storage.put("apps", "x", &src, &p).unwrap();
    storage.put("apps", "y", &src, &p).unwrap();
    storage.remove_artifact_dir("apps", "x").unwrap();
    storage.remove_artifact_dir("apps", "x").unwrap();
    storage.remove_artifact_dir("absent", "x").unwrap();
    assert!(!root.path().join("externalartifact/apps/x").exists());
    assert!(root.path().join("externalartifact/apps/y").exists());
    assert!(storage.remove_artifact_dir("apps", "..").is_err());
    assert_eq!(
        storage.verify("apps", "x", &p.file_name(), &p.digest).unwrap(),
        Verified::Missing
    );
}

/// `<dir>/<name>` with an mtime `age` ago.
fn old_file(dir: &Path, name: &str, age: Duration) {
    let p = dir.join(name);
    fs::write(&p, name).unwrap();
    set_mtime(&p, SystemTime::now() - age);
}

#[test]
fn retention_by_ttl_and_count() {
    let (root, scratch, storage) = setup();
    let (src, p) = archive(scratch.path(), b"current");
    let current = p.file_name();
    storage.put("apps", "x", &src, &p).unwrap();
    let dir = root.path().join("externalartifact/apps/x");
    // The current file is the oldest of all: it must survive both rules anyway.
    set_mtime(&dir.join(&current), SystemTime::now() - Duration::from_secs(3600));
    let min = Duration::from_secs(60);
    old_file(&dir, "a000000000000000.tar.gz", 10 * min);
    old_file(&dir, "b000000000000000.tar.gz", 5 * min);
    old_file(&dir, "c000000000000000.tar.gz", Duration::from_secs(30));
    old_file(&dir, "d000000000000000.tar.gz", Duration::from_secs(20));
    old_file(&dir, "e000000000000000.tar.gz", Duration::from_secs(10));
    old_file(&dir, "x.tar.gz.lock", 100 * min);
    old_file(&dir, ".tmp-1-2-f000000000000000.tar.gz", 100 * min);

    let deleted = storage.retention_gc("apps", "x", &current, min, 2).unwrap();
    // TTL removes a and b; then current + c, d, e is 4 > 2: the oldest beyond the count go (c, d).
    assert_eq!(
        deleted,
        [
            "a000000000000000.tar.gz",
            "b000000000000000.tar.gz",
            "c000000000000000.tar.gz",
            "d000000000000000.tar.gz"
        ]
    );
    let mut left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = vec![
        ".tmp-1-2-f000000000000000.tar.gz".to_string(),
        current.clone(),
        "e000000000000000.tar.gz".into(),
        "x.tar.gz.lock".into(),
    ];
    want.sort();
    assert_eq!(left, want);

    // Zero records: everything but the current file goes.
    assert_eq!(
        storage.retention_gc("apps", "x", &current, min, 0).unwrap(),
        ["e000000000000000.tar.gz"]
    );
    assert!(dir.join(&current).exists());
    assert_eq!(
        storage.verify("apps", "x", &current, &p.digest).unwrap(),
        Verified::Ok
    );
    assert!(
        storage
            .retention_gc("apps", "absent", &current, min, 2)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn retention_count_only() {
    let (root, scratch, storage) = setup();
    let (src, p) = archive(scratch.path(), b"current");
    storage.put("apps", "x", &src, &p).unwrap();
    let dir = root.path().join("externalartifact/apps/x");
    old_file(&dir, "a000000000000000.tar.gz", Duration::from_secs(3));
    old_file(&dir, "b000000000000000.tar.gz", Duration::from_secs(2));
    let deleted = storage
        .retention_gc("apps", "x", &p.file_name(), Duration::from_secs(3600), 2)
        .unwrap();
    assert_eq!(deleted, ["a000000000000000.tar.gz"]);
}

#[test]
fn advertised_url_rules() {
    let cases = [
        ("", ":9090", "pod-1", "http://localhost:9090"),
        ("", "0.0.0.0:9090", "pod-1", "http://pod-1:9090"),
        ("", "0.0.0.0:9090", "", "http://localhost:9090"),
        ("", "10.1.2.3:9090", "pod-1", "http://10.1.2.3:9090"),
        ("", "http://already:1", "pod-1", "http://already:1"),
        (
            "source-watcher.flux-system.svc.cluster.local.",
            ":9090",
            "pod-1",
            "http://source-watcher.flux-system.svc.cluster.local.",
        ),
        (
            "https://cdn.example.com/prefix/",
            ":9090",
            "pod-1",
            "https://cdn.example.com/prefix",
        ),
        ("http://svc:80", "", "", "http://svc:80"),
    ];
    for (adv, addr, host, want) in cases {
        assert_eq!(advertised_url(adv, addr, host), want, "{adv:?} {addr:?} {host:?}");
    }
    let root = tempfile::tempdir().unwrap();
    let adv = advertised_url("source-watcher.flux-system.svc.cluster.local.", ":9090", "h");
    let storage = Storage::new(root.path(), adv).unwrap();
    assert_eq!(
        storage.url("apps", "my-app", "0f3c9a1b2c3d4e5f.tar.gz"),
        "http://source-watcher.flux-system.svc.cluster.local./externalartifact/apps/my-app/0f3c9a1b2c3d4e5f.tar.gz"
    );
    assert_eq!(
        advertised_url("", ":9090", "h") + "/externalartifact/a/b/f.tar.gz",
        "http://localhost:9090/externalartifact/a/b/f.tar.gz"
    );
}

#[test]
fn artifact_file_names() {
    for ok in ["0f3c9a1b2c3d4e5f.tar.gz", "a.tar.gz"] {
        assert!(is_artifact_file_name(ok), "{ok}");
    }
    for bad in [
        ".tar.gz",
        ".hidden.tar.gz",
        "x.tar.gz.lock",
        "x.tgz",
        "../x.tar.gz",
        "a/b.tar.gz",
        "a b.tar.gz",
        "",
    ] {
        assert!(!is_artifact_file_name(bad), "{bad}");
    }
}
