//! Whole-archive tests: read-back with independent readers, determinism, and a pinned known answer.

use std::io::{Cursor, Read};
use std::process::Command;

use super::*;

enum Entry {
    Dir(String),
    File(String, Vec<u8>, bool),
}

fn pack(entries: &[Entry], threads: usize) -> (Vec<u8>, Packed) {
    let mut w = ArchiveWriter::new(Vec::new(), &PackOptions { threads });
    for e in entries {
        match e {
            Entry::Dir(p) => w.add_dir(p).unwrap(),
            Entry::File(p, data, x) => w.add_file(p, data.len() as u64, *x, &mut &data[..]).unwrap(),
        }
    }
    w.finish().unwrap()
}

fn small_tree() -> Vec<Entry> {
    vec![
        Entry::Dir("a".into()),
        Entry::File("a/b.yaml".into(), b"kind: ConfigMap\n".to_vec(), false),
        Entry::Dir("a/empty".into()),
        Entry::File("a/run.sh".into(), b"#!/bin/sh\necho hi\n".to_vec(), true),
        Entry::File("a.yaml".into(), Vec::new(), false),
        Entry::File("b.yaml".into(), vec![b'x'; 513], false),
    ]
}

/// Deterministic YAML-ish tree of `files` files spread over a few directories, in walk order.
fn big_tree(files: usize, file_len: usize) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut x: u64 = 88172645463325252;
    for d in 0..10 {
        entries.push(Entry::Dir(format!("d{d}")));
        for f in 0..files / 10 {
            let mut data = Vec::with_capacity(file_len + 64);
            while data.len() < file_len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(format!("  key{}: value-{:x}\n", x % 97, x % 100_000).as_bytes());
            }
            data.truncate(file_len);
            entries.push(Entry::File(format!("d{d}/f{f:04}.yaml"), data, f % 7 == 0));
        }
    }
    entries
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut raw).unwrap();
    raw
}

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".tar.gz").tempfile().unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
    f
}

/// (name, is_dir, mode, contents) of every entry, via the `tar` crate (which applies PAX records).
fn read_back(gz: &[u8]) -> Vec<(String, bool, u32, Vec<u8>)> {
    let mut ar = ::tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header();
        assert_eq!(h.as_ustar().map(|_| ()), Some(()), "not a ustar header");
        assert_eq!(
            (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
            (0, 0, 0)
        );
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        assert_eq!(
            (h.device_major().unwrap(), h.device_minor().unwrap()),
            (Some(0), Some(0))
        );
        let is_dir = h.entry_type().is_dir();
        assert!(is_dir || h.entry_type().is_file());
        let mode = h.mode().unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((name, is_dir, mode, data));
    }
    out
}

#[test]
fn reads_back_with_tar_crate() {
    let (gz, packed) = pack(&small_tree(), 2);
    let got = read_back(&gz);
    let names: Vec<_> = got.iter().map(|(n, d, m, _)| (n.as_str(), *d, *m)).collect();
    assert_eq!(
        names,
        [
            ("a/", true, 0o755),
            ("a/b.yaml", false, 0o644),
            ("a/empty/", true, 0o755),
            ("a/run.sh", false, 0o755),
            ("a.yaml", false, 0o644),
            ("b.yaml", false, 0o644),
        ]
    );
    assert_eq!(got[3].3, b"#!/bin/sh\necho hi\n");
    assert_eq!(got[5].3, vec![b'x'; 513]);
    assert_eq!(packed.size, gz.len() as u64);
    assert_eq!(packed.digest, digest::sha256_bytes(&gz));
}

#[test]
fn tar_stream_layout_exact() {
    let raw = gunzip(&pack(&small_tree(), 1).0);
    // 6 headers + data blocks (16 B, 18 B, 0 B, 513 B -> 1 + 1 + 2) + two end blocks; no record padding.
    assert_eq!(raw.len(), (6 + 4 + 2) * 512);
    assert!(raw[raw.len() - 1024..].iter().all(|&b| b == 0));
    assert_eq!(&raw[..2], b"a/");
    assert_eq!(raw[156], b'5');
}

#[test]
fn system_tar_and_gzip_accept_it() {
    let f = temp_file(&pack(&small_tree(), 1).0);
    assert!(
        Command::new("gzip")
            .arg("-t")
            .arg(f.path())
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new("tar")
        .arg("-tvzf")
        .arg(f.path())
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<(&str, &str, &str)> = listing
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0], cols[1], *cols.last().unwrap())
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("drwxr-xr-x", "0/0", "a/"),
            ("-rw-r--r--", "0/0", "a/b.yaml"),
            ("drwxr-xr-x", "0/0", "a/empty/"),
            ("-rwxr-xr-x", "0/0", "a/run.sh"),
            ("-rw-r--r--", "0/0", "a.yaml"),
            ("-rw-r--r--", "0/0", "b.yaml"),
        ]
    );
    assert!(listing.contains(" 1970-01-01 00:00 "), "{listing}");
}

#[test]
fn gzip_header_bytes() {
    let (gz, _) = pack(&small_tree(), 3);
    assert_eq!(&gz[..10], &gzip::HEADER);
    assert_eq!((gz[3], &gz[4..8], gz[9]), (0, &[0u8; 4][..], 255));
}

#[test]
fn identical_for_any_thread_count() {
    // ~6 MB: dozens of blocks, with block boundaries inside headers and file data.
    let tree = big_tree(600, 10_007);
    let (one, packed) = pack(&tree, 1);
    assert!(gunzip(&one).len() > 20 * gzip::BLOCK_SIZE);
    for threads in [2, 3, 8] {
        let (other, p) = pack(&tree, threads);
        assert!(other == one, "threads = {threads} differs");
        assert_eq!(p, packed);
    }
    let got = read_back(&one);
    assert_eq!(got.len(), tree.len());
    for (e, (name, _, mode, data)) in tree.iter().zip(&got) {
        match e {
            Entry::Dir(p) => assert_eq!(name, &format!("{p}/")),
            Entry::File(p, d, x) => {
                assert_eq!(name, p);
                assert_eq!(data, d);
                assert_eq!(*mode, if *x { 0o755 } else { 0o644 });
            }
        }
    }
    let f = temp_file(&one);
    assert!(
        Command::new("gzip")
            .arg("-t")
            .arg(f.path())
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn long_unicode_names_round_trip_via_pax() {
    let dir = format!("{}-ünïcødé-目录", "d".repeat(90));
    let file = format!("{dir}/{}.yaml", "ファイル".repeat(20));
    let tree = vec![
        Entry::Dir(dir.clone()),
        Entry::File(file.clone(), b"x: 1\n".to_vec(), true),
        Entry::File("short".into(), b"y".to_vec(), false),
    ];
    let (gz, _) = pack(&tree, 1);
    let got = read_back(&gz);
    let names: Vec<_> = got.iter().map(|(n, d, m, _)| (n.clone(), *d, *m)).collect();
    assert_eq!(
        names,
        [
            (format!("{dir}/"), true, 0o755),
            (file.clone(), false, 0o755),
            ("short".into(), false, 0o644)
        ]
    );
    assert_eq!(got[1].3, b"x: 1\n");

    let f = temp_file(&gz);
    let out = Command::new("tar").arg("-tzf").arg(f.path()).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{dir}/\n{file}\nshort\n")
    );
}

#[test]
fn size_mismatch_is_an_error() {
    let mut w = ArchiveWriter::new(Vec::new(), &PackOptions { threads: 1 });
    let err = w.add_file("f", 10, false, &mut &b"short"[..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("changed while packing"));

    let mut w = ArchiveWriter::new(Vec::new(), &PackOptions { threads: 2 });
    let err = w.add_file("f", 3, false, &mut &b"longer"[..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("changed while packing"));
}

#[test]
fn empty_archive_is_1024_zero_bytes() {
    let (gz, packed) = ArchiveWriter::new(Vec::new(), &PackOptions { threads: 4 })
        .finish()
        .unwrap();
    assert_eq!(gunzip(&gz), vec![0u8; 1024]);
    let mut plain = GzEncoder::new(Vec::new(), 1);
    plain.write_all(&[0; 1024]).unwrap();
    assert_eq!(plain.finish().unwrap(), gz);
    assert_eq!(packed.size, gz.len() as u64);
    let f = temp_file(&gz);
    assert!(
        Command::new("gzip")
            .arg("-t")
            .arg(f.path())
            .status()
            .unwrap()
            .success()
    );
}

/// Pinned digests: any change to headers, block size, flushing or the deflate implementation breaks this
/// test, and must then be a format-version bump (spec §5.1), not a test update.
#[test]
fn known_answer() {
    let (_, packed) = pack(&small_tree(), 2);
    assert_eq!(packed.digest, KNOWN_SMALL);
    // Multi-block: exercises dictionaries and sync flushes.
    let tree = big_tree(200, 4_000);
    let (gz, packed) = pack(&tree, 2);
    assert!(gunzip(&gz).len() > 3 * gzip::BLOCK_SIZE, "not multi-block");
    assert_eq!(packed.digest, KNOWN_MULTI);
    let (_, packed) = ArchiveWriter::new(Vec::new(), &PackOptions { threads: 1 })
        .finish()
        .unwrap();
    assert_eq!(packed.digest, KNOWN_EMPTY);
}

const KNOWN_SMALL: &str = "sha256:00286369881bebd66fbd28b4841c8232bf38802da7a69da503810483e29e64d8";
const KNOWN_MULTI: &str = "sha256:14c62b642b4d18bfa3f627835d524d166e06b888a4cd0cb232aadce3cbaca291";
const KNOWN_EMPTY: &str = "sha256:75eb48369c0d0b1260b7db5c5f831d5f8b1b9b322b64191c96cb147437e7f404";

#[test]
fn rejects_bad_paths_and_order() {
    let mut w = ArchiveWriter::new(Vec::new(), &PackOptions { threads: 1 });
    for bad in ["", "/abs", "a/", "a//b", "./a", "a/../b", "..", "a\0b"] {
        assert_eq!(
            w.add_dir(bad).unwrap_err().kind(),
            io::ErrorKind::InvalidInput,
            "{bad:?}"
        );
    }
    w.add_dir("a").unwrap();
    w.add_file("a/z.yaml", 0, false, &mut io::empty()).unwrap();
    w.add_file("a.yaml", 0, false, &mut io::empty()).unwrap();
    // Duplicate and backwards.
    assert!(w.add_file("a.yaml", 0, false, &mut io::empty()).is_err());
    assert!(w.add_dir("a/b").is_err());
    w.add_dir("b").unwrap();
}

#[test]
fn walk_order_is_component_wise() {
    let sorted = ["a", "a/b", "a/z.yaml", "a-b", "a.yaml", "b.yaml"];
    for pair in sorted.windows(2) {
        assert_eq!(walk_order(pair[0], pair[1]), Ordering::Less, "{pair:?}");
    }
}

#[test]
fn packed_helpers() {
    let (gz, p) = pack(&small_tree(), 1);
    assert_eq!(p.hex().len(), 64);
    assert_eq!(p.file_name(), format!("{}.tar.gz", &p.hex()[..16]));
    assert_eq!(p.default_revision(), format!("latest@{}", p.digest));
    assert_eq!(
        digest::sha256_reader(&mut Cursor::new(&gz)).unwrap(),
        (p.digest.clone(), p.size)
    );
}

/// Yields at most a few bytes per call and interrupts itself now and then.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.1 += 1;
        if self.1.is_multiple_of(5) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = (self.1 % 7 + 1).min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn short_and_interrupted_reads_give_same_bytes() {
    let tree = big_tree(20, 30_000);
    let (expected, _) = pack(&tree, 2);
    let mut w = ArchiveWriter::new(Vec::new(), &PackOptions { threads: 2 });
    for e in &tree {
        match e {
            Entry::Dir(p) => w.add_dir(p).unwrap(),
            Entry::File(p, d, x) => w.add_file(p, d.len() as u64, *x, &mut Trickle(d, 0)).unwrap(),
        }
    }
    assert!(w.finish().unwrap().0 == expected);
}

#[test]
fn content_read_error_is_returned() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let mut w = ArchiveWriter::new(Vec::new(), &PackOptions { threads: 1 });
    assert_eq!(
        w.add_file("f", 1, false, &mut Broken).unwrap_err().to_string(),
        "disk on fire"
    );
}

/// Accepts `left` bytes, then fails: errors must surface (no panic, no hang) on every engine.
struct FailingOut {
    left: usize,
}

impl Write for FailingOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_surface() {
    let tree = big_tree(300, 10_000);
    for threads in [1, 2, 8] {
        let mut w = ArchiveWriter::new(FailingOut { left: 100_000 }, &PackOptions { threads });
        let mut result = Ok(());
        for e in &tree {
            result = match e {
                Entry::Dir(p) => w.add_dir(p),
                Entry::File(p, d, x) => w.add_file(p, d.len() as u64, *x, &mut &d[..]),
            };
            if result.is_err() {
                break;
            }
        }
        let err = match result {
            Err(e) => e,
            Ok(()) => w.finish().err().expect("finish must fail"),
        };
        assert_eq!(err.to_string(), "disk full", "threads = {threads}");
    }
}
