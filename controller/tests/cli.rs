//! `artgen build` / `artgen validate` end to end through the real binary (spec §12): every conformance
//! case, URL sources against a loopback server (faults, retries, limits), usage errors, determinism across
//! processes and input orders, and hostile inputs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use artgen_e2e::archive::{self, Listing, TarEntry, sha256_hex};
use artgen_e2e::cases::{self, Outcome};
use artgen_e2e::source_server::{Fault, SourceServer};

const BIN: &str = env!("CARGO_BIN_EXE_artgen");

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("engine")
        .join("tests")
        .join("cases")
}

// ---------------------------------------------------------------------------------------------------------
// The conformance table through the binary

fn run_file(file: &str) {
    let runner = cases::cli_runner(BIN);
    cases::run_case_file(&cases_dir().join(file), &runner).assert_all_passed();
}

macro_rules! case_file_tests {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(#[test] fn $test() { run_file($file); })*
        const CASE_FILES: &[&str] = &[$($file,)* "controller.yaml"];
    };
}

case_file_tests! {
    conformance_archive => "archive.yaml",
    conformance_copy => "copy.yaml",
    conformance_exclude => "exclude.yaml",
    conformance_extract => "extract.yaml",
    conformance_merge => "merge.yaml",
    conformance_optional => "optional.yaml",
    conformance_pathpattern => "pathpattern.yaml",
    conformance_sources => "sources.yaml",
    conformance_symlink => "symlink.yaml",
    conformance_validation => "validation.yaml",
}

#[test]
fn every_case_file_is_run() {
    // controller.yaml is prose for the cluster suite; the CLI runner skips it.
    cases::assert_case_files_covered(&cases_dir(), CASE_FILES);
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Work {
            dir: tempfile::Builder::new()
                .prefix("artgen-cli-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `gen.yaml` with `aliases` as GitRepository sources and `spec` (YAML, without `sources`).
    fn manifest(&self, aliases: &[&str], spec: &str) {
        fs::write(
            self.path().join("gen.yaml"),
            cases::manifest_yaml("cli-test", aliases, spec),
        )
        .unwrap();
    }

    /// Materialises a directory source (README tree syntax) and returns its relative path.
    fn dir_source(&self, name: &str, tree: &str) -> String {
        cases::materialize_dir(&self.path().join(name), tree).unwrap();
        name.to_string()
    }

    fn tarball(&self, name: &str, entries: &[TarEntry], gzip: bool) -> String {
        archive::write_tarball(&self.path().join(name), entries, gzip).unwrap();
        name.to_string()
    }

    fn tarball_yaml(&self, name: &str, entries: &str) -> String {
        cases::materialize_tarball(&self.path().join(name), entries, true).unwrap();
        name.to_string()
    }

    fn artgen(&self, args: &[&str]) -> Outcome {
        self.artgen_with(args, |_| {})
    }

    fn artgen_with(&self, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Outcome {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.path()).args(args);
        tweak(&mut cmd);
        cases::run_command(cmd, cases::run_timeout())
    }

    /// `artgen build -f gen.yaml --source a=v ... -o out --json <extra>`.
    fn build(&self, sources: &[(&str, &str)], extra: &[&str]) -> Outcome {
        let mut args: Vec<String> = vec!["build".into(), "-f".into(), "gen.yaml".into()];
        for (a, v) in sources {
            args.push("--source".into());
            args.push(format!("{a}={v}"));
        }
        args.extend(["-o", "out", "--json"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        self.artgen(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn out_entries(&self) -> Vec<String> {
        match fs::read_dir(self.path().join("out")) {
            Err(_) => vec![],
            Ok(rd) => {
                let mut v: Vec<String> = rd
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            }
        }
    }

    /// The verified archive `out/<name>.tar.gz`.
    fn archive(&self, name: &str) -> Listing {
        let path = self.path().join("out").join(format!("{name}.tar.gz"));
        archive::verify_file(&path).unwrap_or_else(|v| panic!("{name}.tar.gz violates format v1:\n{v}"))
    }

    fn archive_bytes(&self, name: &str) -> Vec<u8> {
        fs::read(self.path().join("out").join(format!("{name}.tar.gz"))).unwrap()
    }
}

fn json(o: &Outcome) -> Vec<serde_json::Value> {
    assert_eq!(o.code, 0, "build failed: {o:?}");
    serde_json::from_str::<Vec<serde_json::Value>>(o.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not a JSON array ({e}): {}", o.stdout))
}

fn file_names(l: &Listing) -> Vec<&str> {
    l.files.keys().map(String::as_str).collect()
}

/// Exit 1 with a last stderr line that is an error (not a warning) and mentions `mention`; nothing in out/.
#[track_caller]
fn assert_build_error(w: &Work, o: &Outcome, mention: &str) {
    assert_eq!(o.code, 1, "expected exit 1: {o:?}");
    let last = o.last_stderr_line();
    assert!(
        !last.is_empty() && !last.starts_with("warning: "),
        "last stderr line is not an error: {o:?}"
    );
    assert!(
        last.to_lowercase().contains(&mention.to_lowercase()),
        "last stderr line does not mention {mention:?}: {last}"
    );
    assert!(
        w.out_entries().is_empty(),
        "a failed build wrote {:?}",
        w.out_entries()
    );
}

#[track_caller]
fn assert_usage_error(w: &Work, o: &Outcome) {
    assert_eq!(o.code, 2, "expected a usage error (exit 2): {o:?}");
    assert!(!o.stderr.trim().is_empty(), "usage error without a message");
    assert!(
        w.out_entries().is_empty(),
        "a usage error wrote {:?}",
        w.out_entries()
    );
}

const COPY_ALL_REMOTE: &str = "artifacts: [{name: app, copy: [{from: '@remote/**', to: '@artifact/'}]}]";

fn small_tgz() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.tar.gz");
    cases::materialize_tarball(&p, "{app.yaml: a, sub/: {}, sub/b.yaml: b}", true).unwrap();
    fs::read(p).unwrap()
}

/// A work dir with the COPY_ALL_REMOTE manifest and a server holding `body` at `path`.
fn url_setup(path: &str, body: Vec<u8>) -> (Work, SourceServer, String) {
    let w = Work::new();
    w.manifest(&["remote"], COPY_ALL_REMOTE);
    let server = SourceServer::start().unwrap();
    let url = server.put(path, body);
    (w, server, url)
}

const FAST_RETRY: [&str; 2] = ["--http-retry-delay", "10ms"];

// ---------------------------------------------------------------------------------------------------------
// URL sources

#[test]
fn url_source_pinned_and_unpinned() {
    let body = small_tgz();
    let hex = sha256_hex(&body);
    let (w, server, url) = url_setup("/a/remote.tar.gz", body);
    w.manifest(
        &["remote"],
        "artifacts: [{name: app, revision: '@remote', copy: [{from: '@remote/**', to: '@artifact/'}]}]",
    );
    let items = json(&w.build(&[("remote", &format!("{url}#sha256:{hex}"))], &[]));
    assert_eq!(
        items[0]["revision"],
        format!("local@sha256:{hex}"),
        "default revision = sha256 of the download"
    );
    assert_eq!(file_names(&w.archive("app")), ["app.yaml", "sub/b.yaml"]);
    let pinned = w.archive_bytes("app");
    let items = json(&w.build(&[("remote", &url)], &[]));
    assert_eq!(items[0]["revision"], format!("local@sha256:{hex}"));
    assert_eq!(w.archive_bytes("app"), pinned);
    assert!(server.hits("/a/remote.tar.gz") >= 2);
}

#[test]
fn url_source_digest_mismatch_fails() {
    let (w, server, url) = url_setup("/remote.tar.gz", small_tgz());
    let wrong = sha256_hex(b"something else");
    let o = w.build(&[("remote", &format!("{url}#sha256:{wrong}"))], &[]);
    assert_build_error(&w, &o, "remote");
    assert!(server.hits("/remote.tar.gz") >= 1);
}

#[test]
fn url_source_404_fails_without_retries() {
    let (w, server, _) = url_setup("/other", vec![]);
    let url = server.put_fault("/missing.tar.gz", Fault::Status(404));
    let o = w.build(
        &[("remote", &url)],
        &["--http-retry", "3", FAST_RETRY[0], FAST_RETRY[1]],
    );
    assert_build_error(&w, &o, "remote");
    assert_eq!(
        server.hits("/missing.tar.gz"),
        1,
        "4xx responses are not retried (spec §11: 5xx and connection errors)"
    );
}

#[test]
fn url_source_5xx_is_retried() {
    let (w, server, url) = url_setup("/flaky.tar.gz", small_tgz());
    server.put_fault(
        "/flaky.tar.gz",
        Fault::FailFirst {
            times: 2,
            status: 503,
        },
    );
    let o = w.build(
        &[("remote", &url)],
        &["--http-retry", "3", FAST_RETRY[0], FAST_RETRY[1]],
    );
    assert_eq!(json(&o).len(), 1);
    assert_eq!(server.hits("/flaky.tar.gz"), 3);
    assert_eq!(file_names(&w.archive("app")), ["app.yaml", "sub/b.yaml"]);
}

#[test]
fn url_source_5xx_retries_are_bounded() {
    let (w, server, url) = url_setup("/down.tar.gz", small_tgz());
    server.put_fault("/down.tar.gz", Fault::Status(500));
    let o = w.build(
        &[("remote", &url)],
        &["--http-retry", "2", FAST_RETRY[0], FAST_RETRY[1]],
    );
    assert_build_error(&w, &o, "remote");
    assert_eq!(
        server.hits("/down.tar.gz"),
        3,
        "--http-retry 2 = one attempt plus two retries"
    );
}

#[test]
fn url_source_connection_errors_are_retried() {
    let (w, server, url) = url_setup("/reset.tar.gz", small_tgz());
    server.put_fault("/reset.tar.gz", Fault::Reset);
    let o = w.build(
        &[("remote", &url)],
        &["--http-retry", "1", FAST_RETRY[0], FAST_RETRY[1]],
    );
    assert_build_error(&w, &o, "remote");
    assert_eq!(server.hits("/reset.tar.gz"), 2);
}

#[test]
fn url_source_truncated_body_fails() {
    let body = small_tgz();
    let half = body.len() / 2;
    let (w, server, url) = url_setup("/cut.tar.gz", body);
    server.put_fault("/cut.tar.gz", Fault::Truncate { send: half });
    let o = w.build(&[("remote", &url)], &["--http-retry", "0"]);
    assert_build_error(&w, &o, "remote");
}

#[test]
fn url_source_slow_download_completes() {
    let (w, server, url) = url_setup("/slow.tar.gz", small_tgz());
    server.put_fault(
        "/slow.tar.gz",
        Fault::Slow {
            delay_per_chunk: Duration::from_millis(2),
        },
    );
    json(&w.build(&[("remote", &url)], &[]));
    assert_eq!(file_names(&w.archive("app")), ["app.yaml", "sub/b.yaml"]);
}

#[test]
fn oversized_sources_fail() {
    let entries = [TarEntry::Zeros {
        name: "big.bin".into(),
        size: 64 * 1024,
        mode: 0o644,
    }];
    // URL source.
    let dir = tempfile::tempdir().unwrap();
    archive::write_tarball(&dir.path().join("b.tar.gz"), &entries, true).unwrap();
    let body = fs::read(dir.path().join("b.tar.gz")).unwrap();
    let (w, _server, url) = url_setup("/big.tar.gz", body);
    let o = w.build(&[("remote", &url)], &["--source-max-size", "4096"]);
    assert_build_error(&w, &o, "remote");
    // Local tarball source; the same input fits the default limit.
    let local = w.tarball("big.tar.gz", &entries, true);
    let o = w.build(&[("remote", &local)], &["--source-max-size", "4096"]);
    assert_build_error(&w, &o, "remote");
    json(&w.build(&[("remote", &local)], &[]));
}

#[test]
fn tarball_entry_limit() {
    let w = Work::new();
    w.manifest(&["remote"], COPY_ALL_REMOTE);
    let t = w.tarball_yaml("five.tgz", "{a: '1', b: '2', c: '3', d: '4', e: '5'}");
    let o = w.build(&[("remote", &t)], &["--tarball-max-entries", "4"]);
    assert_build_error(&w, &o, "remote");
    json(&w.build(&[("remote", &t)], &["--tarball-max-entries", "100"]));
}

#[test]
fn extract_size_limit_flag() {
    let w = Work::new();
    w.manifest(
        &["s"],
        "artifacts: [{name: unpacked, copy: [{from: '@s/big.tgz', to: '@artifact/', strategy: Extract}]}]",
    );
    let s = w.dir_source(
        "src",
        "{big.tgz: {tarball: {zeros.bin: {generated_size: 10000}}}}",
    );
    let o = w.build(&[("s", &s)], &["--extract-max-size", "4096"]);
    assert_build_error(&w, &o, "unpacked");
    json(&w.build(&[("s", &s)], &[]));
    assert_eq!(w.archive("unpacked").files["zeros.bin"].data.len(), 10000);
}

// ---------------------------------------------------------------------------------------------------------
// Usage errors (exit 2) and CLI contract details

#[test]
fn usage_errors_exit_2() {
    let w = Work::new();
    w.manifest(&["s", "t"], "artifacts: [{name: app, copy: [{from: '@s/a.yaml', to: '@artifact/'}, {from: '@t/b.yaml', to: '@artifact/'}]}]");
    w.dir_source("src", "{a.yaml: a, b.yaml: b}");
    fs::write(w.path().join("notes.txt"), "not a tarball").unwrap();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["build", "-f", "gen.yaml"].map(String::from).to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let ok = ["--source", "s=src", "--source", "t=src", "-o", "out"];
    let mut cases: Vec<(&str, Vec<String>)> = vec![
        ("unknown flag", base(&[&ok[..], &["--bogus"]].concat())),
        ("unknown command", vec!["frobnicate".into()]),
        (
            "missing -f",
            ["build", "--source", "s=src", "--source", "t=src", "-o", "out"]
                .map(String::from)
                .to_vec(),
        ),
        ("missing -o", base(&["--source", "s=src", "--source", "t=src"])),
        (
            "malformed --source",
            base(&["--source", "s", "--source", "t=src", "-o", "out"]),
        ),
        (
            "duplicate alias",
            base(&[
                "--source", "s=src", "--source", "s=src", "--source", "t=src", "-o", "out",
            ]),
        ),
        (
            "undeclared alias",
            base(&[&ok[..], &["--source", "zzz=src"]].concat()),
        ),
        (
            "referenced alias without --source",
            base(&["--source", "s=src", "-o", "out"]),
        ),
        (
            "nonexistent path",
            base(&["--source", "s=does-not-exist", "--source", "t=src", "-o", "out"]),
        ),
        (
            "path neither a directory nor a tarball",
            base(&["--source", "s=notes.txt", "--source", "t=src", "-o", "out"]),
        ),
        (
            "malformed --revision",
            base(&[&ok[..], &["--revision", "s"]].concat()),
        ),
        ("validate without -f", vec!["validate".into()]),
    ];
    let mut missing_manifest = base(&ok);
    missing_manifest[2] = "missing.yaml".into();
    cases.push(("unreadable manifest", missing_manifest));
    for (what, args) in cases {
        let o = w.artgen(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.code, 2, "{what}: expected exit 2: {o:?}");
        assert!(!o.stderr.trim().is_empty(), "{what}: no message");
        assert!(w.out_entries().is_empty(), "{what}: wrote {:?}", w.out_entries());
    }
    // Sanity: the same command line without the fault builds.
    let good = base(&[&ok[..], &["--json"]].concat());
    json(&w.artgen(&good.iter().map(String::as_str).collect::<Vec<_>>()));
    fs::remove_dir_all(w.path().join("out")).unwrap();
    assert_usage_error(&w, &w.artgen(&["validate", "-f", "missing.yaml"]));
}

#[test]
fn declared_but_unreferenced_alias_may_be_omitted() {
    let w = Work::new();
    w.manifest(
        &["s", "unused"],
        "artifacts: [{name: app, copy: [{from: '@s/a.yaml', to: '@artifact/'}]}]",
    );
    let s = w.dir_source("src", "{a.yaml: a}");
    json(&w.build(&[("s", &s)], &[]));
    assert_eq!(file_names(&w.archive("app")), ["a.yaml"]);
}

#[test]
fn output_directory_rules() {
    let w = Work::new();
    w.manifest(
        &["s"],
        "artifacts: [{name: app, copy: [{from: '@s/a.yaml', to: '@artifact/'}]}]",
    );
    let s = w.dir_source("src", "{a.yaml: a}");
    // Created if missing (nested); `path` is the file as given on the command line.
    let o = w.artgen(&[
        "build",
        "-f",
        "gen.yaml",
        "--source",
        &format!("s={s}"),
        "-o",
        "nested/dir/out",
        "--json",
    ]);
    let items = json(&o);
    assert_eq!(items[0]["path"], "nested/dir/out/app.tar.gz");
    let digest = items[0]["digest"].as_str().unwrap().to_string();
    let bytes = fs::read(w.path().join("nested/dir/out/app.tar.gz")).unwrap();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&bytes)));
    assert_eq!(items[0]["size"], bytes.len());
    assert_eq!(items[0]["revision"], format!("latest@{digest}"));
    // Other files are left alone, a same-name file is replaced.
    let out = w.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep.txt"), "mine").unwrap();
    fs::write(out.join("app.tar.gz"), "stale").unwrap();
    json(&w.build(&[("s", &s)], &[]));
    assert_eq!(fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    assert_eq!(fs::read(out.join("app.tar.gz")).unwrap(), bytes);
    // Without --json: a human-readable line per artifact.
    let o = w.artgen(&[
        "build",
        "-f",
        "gen.yaml",
        "--source",
        &format!("s={s}"),
        "-o",
        "out",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.stdout.trim().is_empty());
}

#[test]
fn failed_build_leaves_existing_output_untouched() {
    let w = Work::new();
    w.manifest(
        &["s"],
        "artifacts: [{name: good, copy: [{from: '@s/a.yaml', to: '@artifact/'}]}, \
         {name: bad, copy: [{from: '@s/missing.yaml', to: '@artifact/'}]}]",
    );
    let s = w.dir_source("src", "{a.yaml: a}");
    let out = w.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("good.tar.gz"), "previous").unwrap();
    let o = w.build(&[("s", &s)], &[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.last_stderr_line().contains("bad"),
        "error names the artifact: {o:?}"
    );
    assert_eq!(fs::read_to_string(out.join("good.tar.gz")).unwrap(), "previous");
    assert_eq!(w.out_entries(), ["good.tar.gz"]);
}

#[test]
fn revision_flags() {
    let w = Work::new();
    w.manifest(
        &["s"],
        "artifacts: [{name: pinned, revision: '@s', originRevision: '@s', copy: [{from: '@s/', to: '@artifact/'}]}, \
         {name: plain, originRevision: '@s', copy: [{from: '@s/', to: '@artifact/'}]}]",
    );
    let s = w.dir_source("src", "{a.yaml: a}");
    let items = json(&w.build(
        &[("s", &s)],
        &["--revision", "s=v1.0.0", "--origin-revision", "s=main@sha1:abc"],
    ));
    assert_eq!(items[0]["revision"], "v1.0.0");
    assert_eq!(items[0]["originRevision"], "main@sha1:abc");
    assert_eq!(
        items[1]["revision"],
        format!("latest@{}", items[1]["digest"].as_str().unwrap())
    );
    assert_eq!(items[1]["originRevision"], "main@sha1:abc");
    // Without --origin-revision the origin revision falls back to the source's revision (spec §7).
    let items = json(&w.build(&[("s", &s)], &["--revision", "s=v1.0.0"]));
    assert_eq!(items[0]["originRevision"], "v1.0.0");
    assert_eq!(items[1]["originRevision"], "v1.0.0");
    assert_eq!(items[0]["digest"], items[1]["digest"], "same tree, same digest");
    // Default revision of a directory: the digest of the directory packed in format v1.
    let items = json(&w.build(&[("s", &s)], &[]));
    let packed = items[1]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    assert_eq!(items[0]["revision"], format!("local@sha256:{packed}"));
    // Of a tarball: sha256 of the file.
    let t = w.tarball_yaml("s.tgz", "{a.yaml: a}");
    let hex = sha256_hex(&fs::read(w.path().join(&t)).unwrap());
    let items = json(&w.build(&[("s", &t)], &[]));
    assert_eq!(items[0]["revision"], format!("local@sha256:{hex}"));
    assert!(items.iter().all(|i| i["labels"] == serde_json::json!({})));
}

// ---------------------------------------------------------------------------------------------------------
// Determinism

/// (path, content, executable); paths ending in `/` are (possibly empty) directories.
const TREE: &[(&str, &str, bool)] = &[
    ("z.yaml", "z", false),
    ("a/", "", false),
    ("a/b/", "", false),
    ("a/b/c.yaml", "c", false),
    ("a/z.yaml", "az", false),
    ("a.yaml", "a", false),
    ("a-b.yaml", "ab", false),
    ("A.yaml", "A", false),
    ("bin/", "", false),
    ("bin/run.sh", "#!/bin/sh\necho hi\n", true),
    ("bin/tool", "tool", true),
    ("empty/", "", false),
    ("deep/", "", false),
    ("deep/er/", "", false),
    ("deep/er/est/", "", false),
    ("deep/er/est/f.yaml", "f", false),
    ("deep/er/empty/", "", false),
    ("space dir/", "", false),
    ("space dir/x y.txt", "xy", false),
    ("unicode/", "", false),
    ("unicode/café.yaml", "c", false),
    ("unicode/日本.yaml", "j", false),
    ("_x.yaml", "u", false),
    ("0.yaml", "0", false),
    ("a.b/", "", false),
    ("a.b/c", "c", false),
    ("big.bin", "", false),
];

fn big_content() -> Vec<u8> {
    (0..200_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes())
        .collect()
}

fn content(path: &str, text: &str) -> Vec<u8> {
    if path == "big.bin" {
        big_content()
    } else {
        text.as_bytes().to_vec()
    }
}

/// Writes TREE in the given order with the given modes and mtime.
fn write_tree(root: &Path, order: &[usize], file_mode: u32, dir_mode: u32, mtime: SystemTime) {
    fs::create_dir_all(root).unwrap();
    for &i in order {
        let (path, text, exec) = TREE[i];
        let p = root.join(path.trim_end_matches('/'));
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        if path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
        } else {
            fs::write(&p, content(path, text)).unwrap();
            let mode = if exec { file_mode | 0o100 } else { file_mode };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
    }
    // Directories last: creating children changes their mtime.
    let mut dirs: Vec<PathBuf> = TREE
        .iter()
        .filter(|(p, _, _)| p.ends_with('/'))
        .map(|(p, _, _)| root.join(p.trim_end_matches('/')))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        fs::set_permissions(&d, fs::Permissions::from_mode(dir_mode)).unwrap();
        fs::File::open(&d).unwrap().set_modified(mtime).unwrap();
    }
}

fn tree_entries(order: &[usize], dot_slash: bool) -> Vec<TarEntry> {
    order
        .iter()
        .map(|&i| {
            let (path, text, exec) = TREE[i];
            let name = if dot_slash && i % 2 == 0 {
                format!("./{path}")
            } else {
                path.to_string()
            };
            if path.ends_with('/') {
                TarEntry::Dir { name, mode: 0o700 }
            } else {
                TarEntry::File {
                    name,
                    data: content(path, text),
                    mode: if exec { 0o750 } else { 0o600 },
                }
            }
        })
        .collect()
}

#[test]
fn builds_are_byte_identical_across_processes_input_orders_and_metadata() {
    let spec = "artifacts: [{name: det, copy: [{from: '@s/', to: '@artifact/'}]}]";
    let forward: Vec<usize> = (0..TREE.len()).collect();
    let reverse: Vec<usize> = forward.iter().rev().copied().collect();
    let shuffled: Vec<usize> = {
        let mut v = forward.clone();
        v.sort_by_key(|i| (i * 7919) % TREE.len());
        v
    };
    let t2001 = SystemTime::UNIX_EPOCH + Duration::from_secs(978_307_200);
    let t2020 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800);

    let a = Work::new();
    a.manifest(&["s"], spec);
    write_tree(&a.path().join("src"), &forward, 0o644, 0o755, t2001);
    let o = a.artgen_with(
        &[
            "build", "-f", "gen.yaml", "--source", "s=src", "-o", "out", "--json",
        ],
        |c| {
            c.env("TOKIO_WORKER_THREADS", "1");
        },
    );
    json(&o);

    let b = Work::new();
    b.manifest(&["s"], spec);
    write_tree(&b.path().join("src"), &reverse, 0o600, 0o700, t2020);
    let o = b.artgen_with(&[], |c| {
        // Another umask and thread count, through a shell.
        *c = Command::new("sh");
        c.current_dir(b.path())
            .arg("-c")
            .arg("umask 077 && exec \"$0\" \"$@\"")
            .arg(BIN)
            .args([
                "build", "-f", "gen.yaml", "--source", "s=src", "-o", "out", "--json",
            ])
            .env("TOKIO_WORKER_THREADS", "4");
    });
    json(&o);

    let c = Work::new();
    c.manifest(&["s"], spec);
    let t = c.tarball("src.tar.gz", &tree_entries(&shuffled, true), true);
    json(&c.build(&[("s", &t)], &[]));

    let (ba, bb, bc) = (
        a.archive_bytes("det"),
        b.archive_bytes("det"),
        c.archive_bytes("det"),
    );
    assert!(
        ba == bb,
        "directory sources written in different orders/modes/mtimes/umask give different archives"
    );
    assert!(
        ba == bc,
        "a tarball source with the same tree gives a different archive"
    );

    let listing = a.archive("det");
    let want_files: Vec<&str> = {
        let mut v: Vec<&str> = TREE
            .iter()
            .filter(|(p, _, _)| !p.ends_with('/'))
            .map(|(p, _, _)| *p)
            .collect();
        v.sort();
        v
    };
    assert_eq!(file_names(&listing), want_files);
    for (p, text, exec) in TREE.iter().filter(|(p, _, _)| !p.ends_with('/')) {
        let f = &listing.files[*p];
        assert_eq!(f.data, content(p, text), "{p}");
        assert_eq!(f.mode, if *exec { 0o755 } else { 0o644 }, "{p}");
    }
    for d in ["empty", "deep/er/empty", "a/b", "space dir"] {
        assert!(listing.dirs.contains(d), "{d} missing");
    }

    // And a rebuild in yet another process gives the same bytes again.
    json(&a.build(&[("s", "src")], &[]));
    assert!(a.archive_bytes("det") == ba);
}

// ---------------------------------------------------------------------------------------------------------
// Hostile inputs

/// Files named `marker` anywhere directly in these directories.
fn no_escape(dirs: &[&Path], marker: &str) {
    for d in dirs {
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                assert!(
                    !e.file_name().to_string_lossy().contains(marker),
                    "{} was written",
                    e.path().display()
                );
            }
        }
    }
}

#[test]
fn hostile_entry_names_are_rejected_in_source_and_extract_tarballs() {
    let marker = unique("artgen-escape");
    let abs_dir = tempfile::tempdir().unwrap();
    let names = vec![
        format!("../{marker}.yaml"),
        format!("a/../../{marker}.yaml"),
        "a/../b.yaml".to_string(),
        format!("{}/{marker}.yaml", abs_dir.path().display()),
        "a\\b.yaml".to_string(),
        String::new(),
    ];
    for name in names {
        let entries = [
            TarEntry::File {
                name: "ok.yaml".into(),
                data: b"ok".to_vec(),
                mode: 0o644,
            },
            TarEntry::File {
                name: name.clone(),
                data: b"pwned".to_vec(),
                mode: 0o644,
            },
        ];
        // As a source.
        let w = Work::new();
        w.manifest(
            &["untrusted"],
            "artifacts: [{name: app, copy: [{from: '@untrusted/ok.yaml', to: '@artifact/'}]}]",
        );
        let t = w.tarball("evil.tgz", &entries, true);
        let o = w.build(&[("untrusted", &t)], &[]);
        assert_eq!(o.code, 1, "entry {name:?} in a source tarball: {o:?}");
        assert_build_error(&w, &o, "untrusted");
        // Through Extract.
        let w2 = Work::new();
        w2.manifest(&["untrusted"], "artifacts: [{name: unpack, copy: [{from: '@untrusted/evil.tgz', to: '@artifact/x/', strategy: Extract}]}]");
        fs::create_dir_all(w2.path().join("src")).unwrap();
        archive::write_tarball(&w2.path().join("src/evil.tgz"), &entries, true).unwrap();
        let o = w2.build(&[("untrusted", "src")], &[]);
        assert_eq!(o.code, 1, "entry {name:?} in an Extract tarball: {o:?}");
        assert_build_error(&w2, &o, "unpack");
        let parent = w.path().parent().unwrap().to_path_buf();
        no_escape(
            &[
                w.path(),
                w2.path(),
                &parent,
                abs_dir.path(),
                &std::env::current_dir().unwrap(),
            ],
            &marker,
        );
    }
}

#[test]
fn symlinks_in_source_tarballs_stay_inside() {
    let w = Work::new();
    w.manifest(
        &["untrusted"],
        "artifacts: [{name: app, copy: [{from: '@untrusted/**', to: '@artifact/'}]}]",
    );
    let t = w.tarball_yaml(
        "s.tgz",
        "{ok.yaml: ok, in.yaml: {symlink: ok.yaml}, up: {symlink: ../../../../../../../etc}, \
         host: {symlink: /etc/hostname}, dangling: {symlink: nope.yaml}}",
    );
    let o = w.build(&[("untrusted", &t)], &[]);
    json(&o);
    assert_eq!(file_names(&w.archive("app")), ["in.yaml", "ok.yaml"]);
    assert!(
        o.stderr.lines().any(|l| l.starts_with("warning: ")),
        "skipped symlinks are warned about: {o:?}"
    );
    // A literal from naming an escaping link counts as missing.
    w.manifest(
        &["untrusted"],
        "artifacts: [{name: app, copy: [{from: '@untrusted/host', to: '@artifact/'}]}]",
    );
    let o = w.build(&[("untrusted", &t)], &[]);
    fs::remove_dir_all(w.path().join("out")).ok();
    assert_eq!(o.code, 1, "{o:?}");
}

#[test]
fn entries_through_symlink_entries_are_rejected() {
    let target = tempfile::tempdir().unwrap();
    for link in [
        target.path().display().to_string(),
        "..".to_string(),
        "sub".to_string(),
    ] {
        let w = Work::new();
        w.manifest(
            &["untrusted"],
            "artifacts: [{name: app, copy: [{from: '@untrusted/**', to: '@artifact/'}]}]",
        );
        let entries = [
            TarEntry::Dir {
                name: "sub/".into(),
                mode: 0o755,
            },
            TarEntry::Symlink {
                name: "d".into(),
                target: link.clone(),
            },
            TarEntry::File {
                name: "d/x.yaml".into(),
                data: b"x".to_vec(),
                mode: 0o644,
            },
        ];
        let t = w.tarball("s.tgz", &entries, true);
        let o = w.build(&[("untrusted", &t)], &[]);
        assert_build_error(&w, &o, "untrusted");
        assert_eq!(
            fs::read_dir(target.path()).unwrap().count(),
            0,
            "wrote through the link {link}"
        );
    }
}

#[test]
fn hard_links_in_tarballs() {
    let w = Work::new();
    w.manifest(
        &["untrusted"],
        "artifacts: [{name: app, copy: [{from: '@untrusted/**', to: '@artifact/'}]}]",
    );
    let t = w.tarball_yaml(
        "ok.tgz",
        "{a.yaml: {content: a, mode: '0755'}, b.yaml: {hardlink: a.yaml}}",
    );
    json(&w.build(&[("untrusted", &t)], &[]));
    let l = w.archive("app");
    assert_eq!(l.files["b.yaml"].data, b"a");
    assert_eq!(
        l.files["b.yaml"].mode, 0o755,
        "a hard link copies the target's mode"
    );
    for (what, entries) in [
        (
            "outside",
            "{a.yaml: a, b.yaml: {hardlink: ../../../../etc/passwd}}",
        ),
        ("absolute", "{a.yaml: a, b.yaml: {hardlink: /etc/passwd}}"),
        ("later entry", "{b.yaml: {hardlink: c.yaml}, c.yaml: c}"),
        ("missing", "{a.yaml: a, b.yaml: {hardlink: nope.yaml}}"),
        ("directory", "{d/: {}, b.yaml: {hardlink: d/}}"),
        (
            "symlink",
            "{a.yaml: a, l.yaml: {symlink: a.yaml}, b.yaml: {hardlink: l.yaml}}",
        ),
    ] {
        fs::remove_dir_all(w.path().join("out")).ok();
        let t = w.tarball_yaml(&format!("{}.tgz", what.replace(' ', "-")), entries);
        let o = w.build(&[("untrusted", &t)], &[]);
        assert_eq!(o.code, 1, "hard link to {what}: {o:?}");
        assert_build_error(&w, &o, "untrusted");
    }
}

#[test]
fn pax_headers_in_tarballs() {
    let w = Work::new();
    w.manifest(
        &["untrusted"],
        "artifacts: [{name: app, copy: [{from: '@untrusted/', to: '@artifact/'}]}]",
    );
    let long_dir = "d".repeat(90);
    let long_file = format!("{long_dir}/{}.yaml", "f".repeat(40));
    let entries = [
        TarEntry::PaxGlobal {
            records: vec![("comment".into(), "0123456789abcdef".into())],
        },
        TarEntry::Dir {
            name: format!("{long_dir}/"),
            mode: 0o755,
        },
        TarEntry::File {
            name: long_file.clone(),
            data: b"long".to_vec(),
            mode: 0o644,
        },
        TarEntry::File {
            name: "a.yaml".into(),
            data: b"a".to_vec(),
            mode: 0o644,
        },
    ];
    let t = w.tarball("git-archive.tar.gz", &entries, true);
    json(&w.build(&[("untrusted", &t)], &[]));
    let l = w.archive("app");
    assert_eq!(
        file_names(&l),
        ["a.yaml", long_file.as_str()],
        "PAX global header ignored, PAX path honoured"
    );
    assert!(long_file.len() > 100);
}

#[test]
fn decompression_bombs_and_lying_headers_fail() {
    let w = Work::new();
    w.manifest(
        &["untrusted"],
        "artifacts: [{name: app, copy: [{from: '@untrusted/', to: '@artifact/'}]}]",
    );
    // 256 MiB of zeros compress to a few hundred KiB.
    let bomb = w.tarball(
        "bomb.tgz",
        &[TarEntry::Zeros {
            name: "zeros".into(),
            size: 256 << 20,
            mode: 0o644,
        }],
        true,
    );
    assert!(fs::metadata(w.path().join(&bomb)).unwrap().len() < 2 << 20);
    let o = w.build(&[("untrusted", &bomb)], &["--source-max-size", "1048576"]);
    assert_build_error(&w, &o, "untrusted");
    // A header declaring more than the default 1 GiB limit, with almost no data behind it.
    let liar = w.tarball(
        "liar.tgz",
        &[TarEntry::Lying {
            name: "huge".into(),
            declared_size: 8 << 30,
            data: vec![0; 1024],
        }],
        true,
    );
    let o = w.build(&[("untrusted", &liar)], &[]);
    assert_build_error(&w, &o, "untrusted");
    // Extract bomb against --extract-max-size.
    let w2 = Work::new();
    w2.manifest(&["untrusted"], "artifacts: [{name: unpack, copy: [{from: '@untrusted/bomb.tgz', to: '@artifact/', strategy: Extract}]}]");
    fs::create_dir_all(w2.path().join("src")).unwrap();
    fs::copy(w.path().join(&bomb), w2.path().join("src/bomb.tgz")).unwrap();
    let o = w2.build(&[("untrusted", "src")], &["--extract-max-size", "1048576"]);
    assert_build_error(&w2, &o, "unpack");
}

#[test]
fn special_entries_and_plain_tar_sources_fail() {
    let w = Work::new();
    w.manifest(
        &["untrusted"],
        "artifacts: [{name: app, copy: [{from: '@untrusted/', to: '@artifact/'}]}]",
    );
    let fifo = w.tarball_yaml("fifo.tgz", "{a.yaml: a, p: {fifo: true}}");
    assert_build_error(&w, &w.build(&[("untrusted", &fifo)], &[]), "untrusted");
    let plain = w.tarball(
        "plain.tar.gz",
        &[TarEntry::File {
            name: "a".into(),
            data: b"a".to_vec(),
            mode: 0o644,
        }],
        false,
    );
    assert_build_error(&w, &w.build(&[("untrusted", &plain)], &[]), "untrusted");
    fs::write(w.path().join("garbage.tgz"), "this is not a tarball").unwrap();
    assert_build_error(&w, &w.build(&[("untrusted", "garbage.tgz")], &[]), "untrusted");
}

#[test]
fn escaping_destinations_are_rejected() {
    let marker = unique("artgen-to");
    let w = Work::new();
    let spec = format!(
        "artifacts: [{{name: app, copy: [{{from: '@untrusted/a.yaml', to: '@artifact/../../{marker}.yaml'}}]}}]"
    );
    w.manifest(&["untrusted"], &spec);
    let s = w.dir_source("src", "{a.yaml: a}");
    let o = w.build(&[("untrusted", &s)], &[]);
    assert_build_error(&w, &o, "copy[0]");
    let v = w.artgen(&["validate", "-f", "gen.yaml"]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.last_stderr_line().contains("spec.artifacts[0].copy[0].to"),
        "validate names the field: {v:?}"
    );
    let parent = w.path().parent().unwrap().to_path_buf();
    no_escape(&[w.path(), &parent], &marker);
}

#[test]
fn artifacts_named_like_aliases_are_isolated() {
    let w = Work::new();
    w.manifest(
        &["s", "out"],
        "artifacts: [{name: s, copy: [{from: '@s/deploy/**', to: '@artifact/'}]}, \
         {name: out, copy: [{from: '@out/README.md', to: '@artifact/'}, {from: '@s/README.md', to: '@artifact/s.md'}]}]",
    );
    let s = w.dir_source("src", "{deploy/app.yaml: a, README.md: r}");
    let o2 = w.dir_source("other", "{README.md: other}");
    json(&w.build(&[("s", &s), ("out", &o2)], &[]));
    assert_eq!(file_names(&w.archive("s")), ["app.yaml"]);
    let l = w.archive("out");
    assert_eq!(file_names(&l), ["README.md", "s.md"]);
    assert_eq!(
        l.files["s.md"].data, b"r",
        "a later artifact sees the unmodified source"
    );
    // The source directories are used in place, read-only.
    assert_eq!(fs::read_to_string(w.path().join("src/README.md")).unwrap(), "r");
    assert!(!w.path().join("src/app.yaml").exists());
}
