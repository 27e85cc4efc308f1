//! Table-driven conformance cases (spec §13, schema in `cases/README.md`).
//!
//! [`run_cases`] loads every `*.yaml` case file of a directory, materialises each case's sources in a fresh
//! directory, writes the manifest, hands an [`Invocation`] to a runner (the `artgen` binary or the engine
//! library) and checks the [`Outcome`] against `expect` plus the README's "checks applied to every
//! successful build" (JSON items, `out/` contents, archive format v1 via [`crate::archive`]).
//!
//! Decisions the README leaves to the harness:
//!
//! - Paths in an [`Invocation`] are relative to `workdir` (`generator.yaml`, `sources/<alias>`, `out`), as
//!   in the README's command line; runners must resolve them against `workdir` (the CLI runner runs there).
//!   JSON `path` must equal `<out as given>/<name>.tar.gz`.
//! - Expected `revision` for an artifact with `revision: '@a'` (and `originRevision` for `originRevision:
//!   '@a'`, which falls back to the source's revision): for a tarball or URL source
//!   `local@sha256:<sha256 of the file>`; for a directory source the README defines it as the digest of the
//!   directory packed in format v1, which the harness obtains from the implementation under test by a
//!   second run of a one-artifact manifest copying `@a/` to `@artifact/` (§3.4: the whole source's contents,
//!   symlinks per §3.11) and taking `local@sha256:<hex of that archive's digest>`.
//! - `pax_global` entries are written first in a tarball ("at the start of the archive"), other entries in
//!   the given order; tarball entries carry uid/gid 1000, mtime 1700000000 and owner names.
//! - With `pathPattern`, JSON items cannot be mapped to templates, so an item's revision may be that of any
//!   template; without it, item `i` belongs to artifact `i`.
//! - Unknown keys in `expect` fail the case (a typo must not pass silently). The `error` phrase is
//!   advisory: when stderr does not contain it, the case passes with a note.
//! - Environment: `ARTGEN_CASE=<substring>` runs only matching cases; `ARTGEN_E2E_KEEP=1` keeps the work
//!   directories of failing cases (their paths are printed); `ARTGEN_E2E_TIMEOUT_SECS` bounds one run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use yaml_serde::{Mapping, Value};

use crate::archive::{self, Listing, TarEntry};
use crate::source_server::SourceServer;

pub const MANIFEST_FILE: &str = "generator.yaml";
pub const OUT_DIR: &str = "out";
pub const SOURCES_DIR: &str = "sources";
pub const NAMESPACE: &str = "conformance";
const API_VERSION: &str = "source.extensions.fluxcd.io/v1beta1";
const KIND: &str = "ArtifactGenerator";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One `artgen build` / `artgen validate` invocation. Relative paths are relative to `workdir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub workdir: PathBuf,
    pub manifest: PathBuf,
    /// `(alias, value)` pairs for `--source <alias>=<value>`, in spec order.
    pub sources: Vec<(String, String)>,
    pub out: PathBuf,
    pub validate_only: bool,
}

/// What a runner observed: exit code (-1 for a signal or a failure to start), stdout, stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The last non-empty stderr line (the error line of a failed build, spec §12.1).
    pub fn last_stderr_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseKind {
    Builder,
    Generator,
    Validation,
    Controller,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseStatus {
    Passed,
    Failed(Vec<String>),
    Skipped(String),
}

#[derive(Clone, Debug)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub kind: Option<CaseKind>,
    pub status: CaseStatus,
    /// Observations that do not fail the case (e.g. the advisory error phrase not found).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub results: Vec<CaseResult>,
    /// Set when an `ARTGEN_CASE` filter was active.
    pub filtered: bool,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.status == CaseStatus::Passed)
            .count()
    }

    pub fn failures(&self) -> Vec<&CaseResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.status, CaseStatus::Failed(_)))
            .collect()
    }

    pub fn skipped(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.status, CaseStatus::Skipped(_)))
            .count()
    }

    pub fn merge(&mut self, other: Report) {
        self.results.extend(other.results);
        self.filtered |= other.filtered;
    }

    /// Human-readable summary: counts, then every failure with its reasons, then notes.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "conformance cases: {} ok, {} failing, {} skipped\n",
            self.passed(),
            self.failures().len(),
            self.skipped()
        );
        for r in &self.results {
            if let CaseStatus::Failed(reasons) = &r.status {
                let _ = writeln!(s, "FAIL {}/{}", r.file, r.name);
                for reason in reasons {
                    for (i, line) in reason.lines().enumerate() {
                        let _ = writeln!(s, "    {} {line}", if i == 0 { "-" } else { " " });
                    }
                }
            }
        }
        for r in &self.results {
            for n in &r.notes {
                let _ = writeln!(s, "note {}/{}: {n}", r.file, r.name);
            }
        }
        s
    }

    /// Panics listing every failing case (and when no case ran at all without a filter).
    pub fn assert_all_passed(&self) {
        let summary = self.summary();
        println!("{summary}");
        if !self.failures().is_empty() {
            panic!("{} conformance case(s) failing\n{summary}", self.failures().len());
        }
        if self.passed() == 0
            && !self.filtered
            && self.results.iter().all(|r| r.kind != Some(CaseKind::Controller))
        {
            panic!("no conformance case ran\n{summary}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Case files

#[derive(Clone, Debug)]
pub struct CaseFile {
    pub path: PathBuf,
    pub file_name: String,
    pub area: String,
    pub cases: Vec<Case>,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub body: Mapping,
}

impl Case {
    /// The kind given by the case's keys, or an error for none/several.
    pub fn kind(&self) -> Result<CaseKind, String> {
        let kinds: Vec<CaseKind> = [
            ("artifact", CaseKind::Builder),
            ("generator", CaseKind::Generator),
            ("object", CaseKind::Validation),
            ("given", CaseKind::Controller),
        ]
        .into_iter()
        .filter(|(k, _)| self.body.contains_key(*k))
        .map(|(_, kind)| kind)
        .collect();
        match kinds.as_slice() {
            [k] => Ok(*k),
            [] => Err("case has none of artifact/generator/object/given".into()),
            _ => Err(format!("case has several kinds: {kinds:?}")),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.body.get(key)
    }
}

/// Loads one case file (`{area, cases: [...]}`).
pub fn load_case_file(path: &Path) -> Result<CaseFile, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = yaml_serde::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let top = doc
        .as_mapping()
        .ok_or_else(|| format!("{}: not a mapping", path.display()))?;
    let area = top
        .get("area")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{}: no area", path.display()))?;
    let cases = top
        .get("cases")
        .and_then(Value::as_sequence)
        .ok_or_else(|| format!("{}: no cases", path.display()))?;
    let mut out = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let body = c
            .as_mapping()
            .ok_or_else(|| format!("{}: case {i} is not a mapping", path.display()))?;
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: case {i} has no name", path.display()))?;
        out.push(Case {
            name: name.to_string(),
            body: body.clone(),
        });
    }
    Ok(CaseFile {
        path: path.to_path_buf(),
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        area: area.to_string(),
        cases: out,
    })
}

/// The `*.yaml` files of `dir`, sorted by name.
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && p.is_file())
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------------------
// Running

/// Runs every case file of `dir` (controller cases are skipped) and checks case names are unique.
pub fn run_cases(dir: &Path, runner: &dyn Fn(&Invocation) -> Outcome) -> Report {
    let mut env = Env::new(runner);
    let mut report = Report {
        filtered: env.filter.is_some(),
        ..Report::default()
    };
    let mut names: HashMap<String, String> = HashMap::new();
    for path in case_files(dir) {
        let file_report = run_file_in(&mut env, &path);
        for r in &file_report.results {
            if r.name == "<file>" {
                continue;
            }
            if let Some(prev) = names.get(&r.name)
                && *prev != r.file
            {
                report.results.push(CaseResult {
                    file: r.file.clone(),
                    name: r.name.clone(),
                    kind: r.kind,
                    status: CaseStatus::Failed(vec![format!("case name also used in {prev}")]),
                    notes: vec![],
                });
            }
            names.insert(r.name.clone(), r.file.clone());
        }
        report.merge(file_report);
    }
    report
}

/// Runs the cases of one file.
pub fn run_case_file(file: &Path, runner: &dyn Fn(&Invocation) -> Outcome) -> Report {
    let mut env = Env::new(runner);
    run_file_in(&mut env, file)
}

struct Env<'r> {
    runner: &'r dyn Fn(&Invocation) -> Outcome,
    server: Option<SourceServer>,
    keep: bool,
    filter: Option<String>,
}

impl<'r> Env<'r> {
    fn new(runner: &'r dyn Fn(&Invocation) -> Outcome) -> Self {
        Env {
            runner,
            server: None,
            keep: std::env::var_os("ARTGEN_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0"),
            filter: std::env::var("ARTGEN_CASE").ok().filter(|s| !s.is_empty()),
        }
    }

    fn server(&mut self) -> Result<&SourceServer, String> {
        if self.server.is_none() {
            self.server =
                Some(SourceServer::start().map_err(|e| format!("cannot start the source server: {e}"))?);
        }
        Ok(self.server.as_ref().expect("just started"))
    }
}

#[derive(Default)]
struct Check {
    fails: Vec<String>,
    notes: Vec<String>,
}

impl Check {
    fn fail(&mut self, msg: impl Into<String>) {
        self.fails.push(msg.into());
    }
    fn note(&mut self, msg: impl Into<String>) {
        self.notes.push(msg.into());
    }
}

fn run_file_in(env: &mut Env<'_>, path: &Path) -> Report {
    let mut report = Report {
        filtered: env.filter.is_some(),
        ..Report::default()
    };
    let file = match load_case_file(path) {
        Ok(f) => f,
        Err(e) => {
            report.results.push(CaseResult {
                file: path.display().to_string(),
                name: "<file>".into(),
                kind: None,
                status: CaseStatus::Failed(vec![e]),
                notes: vec![],
            });
            return report;
        }
    };
    let mut digests: HashMap<String, String> = HashMap::new();
    let mut crossrefs: Vec<(usize, Vec<String>, Vec<String>)> = Vec::new();
    let mut names = BTreeSet::new();
    for case in &file.cases {
        let duplicate = !names.insert(case.name.clone());
        if let Some(f) = &env.filter
            && !case.name.contains(f.as_str())
        {
            continue;
        }
        let kind = case.kind();
        let mut check = Check::default();
        let mut status = None;
        if duplicate {
            check.fail(format!("case name used twice in {}", file.file_name));
        }
        if case.get("area").and_then(Value::as_str) != Some(file.area.as_str()) {
            check.fail(format!(
                "case area {:?} differs from the file's area {:?}",
                case.get("area"),
                file.area
            ));
        }
        match kind.clone() {
            Err(e) => check.fail(e),
            Ok(CaseKind::Controller) => {
                status = Some(CaseStatus::Skipped(
                    "controller case (prose): needs a cluster".into(),
                ));
            }
            Ok(kind) => {
                let work = match tempfile::Builder::new().prefix("artgen-case-").tempdir() {
                    Ok(w) => w,
                    Err(e) => {
                        check.fail(format!("cannot create a work directory: {e}"));
                        report.results.push(result(&file, case, Some(kind), check, None));
                        continue;
                    }
                };
                match kind {
                    CaseKind::Validation => run_validation_case(env, case, work.path(), &mut check),
                    _ => {
                        if let Some(d) = run_build_case(env, &file, case, kind, work.path(), &mut check) {
                            digests.insert(case.name.clone(), d);
                        }
                    }
                }
                if env.keep && !check.fails.is_empty() {
                    let kept = work.keep();
                    check.note(format!("work directory kept at {}", kept.display()));
                }
                if kind == CaseKind::Builder {
                    let expect = case.get("expect").and_then(Value::as_mapping);
                    let refs = |key: &str| {
                        expect
                            .and_then(|e| e.get(key))
                            .map(string_list)
                            .unwrap_or_default()
                    };
                    let (same, different) = (refs("same_digest_as"), refs("different_digest_from"));
                    if !same.is_empty() || !different.is_empty() {
                        crossrefs.push((report.results.len(), same, different));
                    }
                }
            }
        }
        report
            .results
            .push(result(&file, case, kind.as_ref().ok().copied(), check, status));
    }

    for (index, same, different) in crossrefs {
        let name = report.results[index].name.clone();
        let mut extra = Vec::new();
        if let Some(mine) = digests.get(&name) {
            for (refs, want_equal) in [(same, true), (different, false)] {
                for other in refs {
                    if !file.cases.iter().any(|c| c.name == other) {
                        extra.push(format!(
                            "refers to case {other:?}, which is not in {}",
                            file.file_name
                        ));
                    } else if env.filter.is_some() && !digests.contains_key(&other) {
                        report.results[index]
                            .notes
                            .push(format!("digest of {other} not compared (filtered out)"));
                    } else if let Some(theirs) = digests.get(&other) {
                        if (mine == theirs) != want_equal {
                            extra.push(format!(
                                "digest {mine} {} that of {other} ({theirs})",
                                if want_equal { "differs from" } else { "equals" }
                            ));
                        }
                    } else {
                        extra.push(format!("case {other} produced no digest to compare with"));
                    }
                }
            }
        }
        if !extra.is_empty() {
            let r = &mut report.results[index];
            match &mut r.status {
                CaseStatus::Failed(reasons) => reasons.extend(extra),
                _ => r.status = CaseStatus::Failed(extra),
            }
        }
    }
    report
}

fn result(
    file: &CaseFile,
    case: &Case,
    kind: Option<CaseKind>,
    check: Check,
    status: Option<CaseStatus>,
) -> CaseResult {
    let status = match status {
        Some(s) if check.fails.is_empty() => s,
        _ if check.fails.is_empty() => CaseStatus::Passed,
        _ => CaseStatus::Failed(check.fails),
    };
    CaseResult {
        file: file.file_name.clone(),
        name: case.name.clone(),
        kind,
        status,
        notes: check.notes,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Validation cases

fn run_validation_case(env: &mut Env<'_>, case: &Case, work: &Path, check: &mut Check) {
    let expect = case.get("expect").and_then(Value::as_mapping);
    let valid = match expect.map(|e| (e.get("valid").and_then(Value::as_bool), e.len())) {
        Some((Some(v), 1)) => v,
        _ => return check.fail("validation case: expect must be exactly {valid: true|false}"),
    };
    let object = expand_repeats(case.get("object").cloned().unwrap_or(Value::Null));
    let manifest = manifest_document(&case.name, object);
    if let Err(e) = write_manifest(work, &manifest) {
        return check.fail(e);
    }
    let inv = Invocation {
        workdir: work.to_path_buf(),
        manifest: PathBuf::from(MANIFEST_FILE),
        sources: vec![],
        out: PathBuf::from(OUT_DIR),
        validate_only: true,
    };
    let outcome = (env.runner)(&inv);
    match (valid, outcome.code) {
        (true, 0) => {}
        (false, 1) if !outcome.stderr.trim().is_empty() => {}
        (false, 1) => check.fail("validate exited 1 but printed no reason on stderr"),
        (_, 2) => check.fail(format!(
            "exit code 2 (usage error) never satisfies a case: {}",
            outcome.last_stderr_line()
        )),
        (want, code) => check.fail(format!(
            "expected {} (exit {}), got exit {code}; stderr: {}",
            if want { "valid" } else { "invalid" },
            if want { 0 } else { 1 },
            outcome.last_stderr_line()
        )),
    }
}

/// Replaces every `{repeat: s, times: n}` mapping by `s` repeated `n` times.
pub fn expand_repeats(v: Value) -> Value {
    match v {
        Value::Mapping(m) => {
            if m.len() == 2
                && let (Some(s), Some(n)) = (
                    m.get("repeat").and_then(Value::as_str),
                    m.get("times").and_then(Value::as_u64),
                )
            {
                return Value::String(s.repeat(n as usize));
            }
            Value::Mapping(m.into_iter().map(|(k, v)| (k, expand_repeats(v))).collect())
        }
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(expand_repeats).collect()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Builder and generator cases

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceAs {
    Dir,
    Tarball,
    Tgz,
    TarballUncompressed,
    Url,
    UrlUnpinned,
    UrlBadDigest,
}

impl SourceAs {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "dir" => SourceAs::Dir,
            "tarball" => SourceAs::Tarball,
            "tgz" => SourceAs::Tgz,
            "tarball-uncompressed" => SourceAs::TarballUncompressed,
            "url" => SourceAs::Url,
            "url-unpinned" => SourceAs::UrlUnpinned,
            "url-bad-digest" => SourceAs::UrlBadDigest,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
struct Prepared {
    alias: String,
    /// The `--source` value (relative to the work directory, or a URL).
    value: String,
    /// Absolute path of the materialised directory (dir mode).
    dir: Option<PathBuf>,
    /// sha256 hex of the tarball file (tarball and URL modes).
    file_sha256: Option<String>,
    /// Server path (URL modes).
    url_path: Option<String>,
}

fn prepare_sources(
    env: &mut Env<'_>,
    file: &CaseFile,
    case: &Case,
    work: &Path,
) -> Result<Vec<Prepared>, String> {
    let empty = Mapping::new();
    let sources = match case.get("sources") {
        None => &empty,
        Some(v) => v.as_mapping().ok_or("sources is not a mapping")?,
    };
    let source_as = match case.get("source_as") {
        None => &empty,
        Some(v) => v.as_mapping().ok_or("source_as is not a mapping")?,
    };
    for k in source_as.keys() {
        if !sources.contains_key(k) {
            return Err(format!("source_as names {k:?}, which is not in sources"));
        }
    }
    let root = work.join(SOURCES_DIR);
    let scratch = work.join("scratch");
    fs::create_dir_all(&root)
        .and_then(|_| fs::create_dir_all(&scratch))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (alias, tree) in sources {
        let alias = alias
            .as_str()
            .ok_or_else(|| format!("source alias {alias:?} is not a string"))?
            .to_string();
        let mode = match source_as.get(alias.as_str()) {
            None => SourceAs::Dir,
            Some(v) => v
                .as_str()
                .and_then(SourceAs::parse)
                .ok_or_else(|| format!("unknown source_as {v:?}"))?,
        };
        let tree = if tree.is_null() {
            Value::Mapping(Mapping::new())
        } else {
            tree.clone()
        };
        let mut p = Prepared {
            alias: alias.clone(),
            value: String::new(),
            dir: None,
            file_sha256: None,
            url_path: None,
        };
        if mode == SourceAs::Dir {
            let dir = root.join(&alias);
            fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            materialize_tree(&dir, &tree, &scratch).map_err(|e| format!("source {alias}: {e}"))?;
            p.value = format!("{SOURCES_DIR}/{alias}");
            p.dir = Some(dir);
        } else {
            let (name, gzip) = match mode {
                SourceAs::Tgz => (format!("{alias}.tgz"), true),
                SourceAs::TarballUncompressed => (format!("{alias}.tar.gz"), false),
                _ => (format!("{alias}.tar.gz"), true),
            };
            let path = root.join(&name);
            let entries = tar_entries(&tree, &scratch).map_err(|e| format!("source {alias}: {e}"))?;
            archive::write_tarball(&path, &entries, gzip).map_err(|e| format!("source {alias}: {e}"))?;
            let bytes = fs::read(&path).map_err(|e| e.to_string())?;
            let hex = hex::encode(Sha256::digest(&bytes));
            p.value = format!("{SOURCES_DIR}/{name}");
            if matches!(
                mode,
                SourceAs::Url | SourceAs::UrlUnpinned | SourceAs::UrlBadDigest
            ) {
                let url_path = format!("/{}/{}/{name}", file.area, dns_label(&case.name));
                let url = env.server()?.put(&url_path, bytes);
                p.value = match mode {
                    SourceAs::Url => format!("{url}#sha256:{hex}"),
                    SourceAs::UrlBadDigest => format!("{url}#sha256:{}", "0".repeat(64)),
                    _ => url,
                };
                p.url_path = Some(url_path);
            }
            p.file_sha256 = Some(hex);
        }
        out.push(p);
    }
    Ok(out)
}

/// `revision` / `originRevision` aliases of one artifact (template).
#[derive(Clone, Debug, Default)]
struct RevRefs {
    revision: Option<String>,
    origin: Option<String>,
}

fn rev_refs(artifact: &Value) -> RevRefs {
    let alias = |key: &str| {
        artifact
            .get(key)
            .and_then(Value::as_str)
            .map(|s| s.strip_prefix('@').unwrap_or(s).to_string())
    };
    RevRefs {
        revision: alias("revision"),
        origin: alias("originRevision"),
    }
}

/// One item of the `--json` array, after the generic checks.
#[derive(Clone, Debug)]
struct Item {
    name: String,
    revision: String,
    digest: String,
    origin_revision: Option<String>,
    labels: BTreeMap<String, String>,
    listing: Listing,
}

const BUILDER_EXPECT: &[&str] = &[
    "files",
    "files_yaml",
    "modes",
    "dirs",
    "error",
    "same_digest_as",
    "different_digest_from",
];
const GENERATOR_EXPECT: &[&str] = &["artifacts", "error"];
const GENERATOR_KEYS: &[&str] = &["pathPattern", "commonMetadata", "artifacts"];

fn run_build_case(
    env: &mut Env<'_>,
    file: &CaseFile,
    case: &Case,
    kind: CaseKind,
    work: &Path,
    check: &mut Check,
) -> Option<String> {
    let Some(expect) = case.get("expect").and_then(Value::as_mapping) else {
        check.fail("expect is missing or not a mapping");
        return None;
    };
    let allowed = if kind == CaseKind::Builder {
        BUILDER_EXPECT
    } else {
        GENERATOR_EXPECT
    };
    for k in expect.keys() {
        if !k.as_str().is_some_and(|k| allowed.contains(&k)) {
            check.fail(format!("unknown expect key {k:?} for a {kind:?} case"));
        }
    }

    let mut spec_extra: Vec<(String, Value)> = Vec::new();
    let artifacts: Vec<Value> = if kind == CaseKind::Builder {
        vec![case.get("artifact").cloned().unwrap_or(Value::Null)]
    } else {
        let Some(g) = case.get("generator").and_then(Value::as_mapping) else {
            check.fail("generator is not a mapping");
            return None;
        };
        for k in g.keys() {
            if !k.as_str().is_some_and(|k| GENERATOR_KEYS.contains(&k)) {
                check.fail(format!("unknown generator key {k:?}"));
            }
        }
        if let Some(pp) = g.get("pathPattern")
            && !(pp.is_null() || pp.as_str() == Some(""))
        {
            spec_extra.push(("pathPattern".into(), pp.clone()));
        }
        if let Some(cm) = g.get("commonMetadata") {
            spec_extra.push(("commonMetadata".into(), cm.clone()));
        }
        match g.get("artifacts").and_then(Value::as_sequence) {
            Some(a) => a.clone(),
            None => {
                check.fail("generator.artifacts is not a sequence");
                return None;
            }
        }
    };
    let path_pattern = spec_extra.iter().any(|(k, _)| k == "pathPattern");

    let prepared = match prepare_sources(env, file, case, work) {
        Ok(p) => p,
        Err(e) => {
            check.fail(format!("cannot materialise the sources: {e}"));
            return None;
        }
    };
    let aliases: Vec<String> = prepared.iter().map(|p| p.alias.clone()).collect();
    let mut spec = Mapping::new();
    spec.insert("sources".into(), sources_value(&aliases));
    for (k, v) in spec_extra {
        spec.insert(Value::String(k), v);
    }
    spec.insert("artifacts".into(), Value::Sequence(artifacts.clone()));
    let manifest = manifest_document(&case.name, Value::Mapping(spec));
    if let Err(e) = write_manifest(work, &manifest) {
        check.fail(e);
        return None;
    }
    let inv = Invocation {
        workdir: work.to_path_buf(),
        manifest: PathBuf::from(MANIFEST_FILE),
        sources: prepared
            .iter()
            .map(|p| (p.alias.clone(), p.value.clone()))
            .collect(),
        out: PathBuf::from(OUT_DIR),
        validate_only: false,
    };
    let outcome = (env.runner)(&inv);

    if let Some(hint) = expect.get("error") {
        check_error(&inv, &outcome, hint, check);
        return None;
    }
    let items = check_success(&inv, &outcome, check)?;

    // Revisions.
    let templates: Vec<RevRefs> = artifacts.iter().map(rev_refs).collect();
    let mut source_revs: HashMap<String, Result<String, String>> = HashMap::new();
    let mut source_rev = |env: &mut Env<'_>, alias: &str| -> Result<String, String> {
        source_revs
            .entry(alias.to_string())
            .or_insert_with(|| source_revision(env, &prepared, alias))
            .clone()
    };
    for (i, item) in items.iter().enumerate() {
        let candidates: Vec<&RevRefs> = if path_pattern {
            templates.iter().collect()
        } else {
            templates.get(i).into_iter().collect()
        };
        if candidates.is_empty() {
            continue;
        }
        let mut revs = BTreeSet::new();
        let mut origins = BTreeSet::new();
        for t in &candidates {
            match &t.revision {
                None => {
                    revs.insert(format!("latest@{}", item.digest));
                }
                Some(a) => match source_rev(env, a) {
                    Ok(r) => {
                        revs.insert(r);
                    }
                    Err(e) => check.fail(format!(
                        "{}: cannot compute the expected revision: {e}",
                        item.name
                    )),
                },
            }
            match &t.origin {
                None => {
                    origins.insert(None);
                }
                Some(a) => match source_rev(env, a) {
                    Ok(r) => {
                        origins.insert(Some(r));
                    }
                    Err(e) => check.fail(format!(
                        "{}: cannot compute the expected originRevision: {e}",
                        item.name
                    )),
                },
            }
        }
        if !revs.is_empty() && !revs.contains(&item.revision) {
            check.fail(format!(
                "{}: revision {:?}, expected {}",
                item.name,
                item.revision,
                one_of(&revs)
            ));
        }
        if !origins.is_empty() && !origins.contains(&item.origin_revision) {
            check.fail(format!(
                "{}: originRevision {:?}, expected {:?}",
                item.name, item.origin_revision, origins
            ));
        }
    }

    // URL sources were really downloaded.
    if let Some(server) = &env.server {
        for p in &prepared {
            if let Some(path) = &p.url_path
                && server.hits(path) == 0
            {
                check.fail(format!("URL source {} was never requested", p.alias));
            }
        }
    }

    if kind == CaseKind::Builder {
        let artifact = &artifacts[0];
        let [item] = items.as_slice() else {
            check.fail(format!("expected exactly one JSON item, got {}", items.len()));
            return None;
        };
        let want_name = artifact.get("name").and_then(Value::as_str).unwrap_or("");
        if item.name != want_name {
            check.fail(format!("JSON name {:?}, expected {want_name:?}", item.name));
        }
        if !item.labels.is_empty() {
            check.fail(format!("labels {:?}, expected {{}}", item.labels));
        }
        check_tree(&item.listing, expect, "", check);
        Some(item.digest.clone())
    } else {
        let Some(want) = expect.get("artifacts").and_then(Value::as_sequence) else {
            check.fail("expect.artifacts missing (or not a sequence)");
            return None;
        };
        let got: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        let want_names: Vec<&str> = want
            .iter()
            .map(|w| w.get("name").and_then(Value::as_str).unwrap_or(""))
            .collect();
        if got != want_names {
            check.fail(format!("artifacts {got:?}, expected {want_names:?}"));
        }
        for (w, item) in want.iter().zip(&items) {
            let Some(w) = w.as_mapping() else {
                check.fail("expect.artifacts item is not a mapping");
                continue;
            };
            let want_labels: BTreeMap<String, String> = w
                .get("labels")
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((scalar_string(k)?, scalar_string(v)?)))
                        .collect()
                })
                .unwrap_or_default();
            if item.labels != want_labels {
                check.fail(format!(
                    "{}: labels {:?}, expected {want_labels:?}",
                    item.name, item.labels
                ));
            }
            check_tree(&item.listing, w, &format!("{}: ", item.name), check);
        }
        None
    }
}

fn one_of(set: &BTreeSet<String>) -> String {
    let v: Vec<&String> = set.iter().collect();
    if v.len() == 1 {
        format!("{:?}", v[0])
    } else {
        format!("one of {v:?}")
    }
}

/// The default revision of a source (spec §12.1), see the module docs.
fn source_revision(env: &mut Env<'_>, prepared: &[Prepared], alias: &str) -> Result<String, String> {
    let p = prepared
        .iter()
        .find(|p| p.alias == alias)
        .ok_or_else(|| format!("alias {alias} has no source"))?;
    if let Some(hex) = &p.file_sha256 {
        return Ok(format!("local@sha256:{hex}"));
    }
    let dir = p.dir.as_ref().ok_or("no directory")?;
    let work = tempfile::Builder::new()
        .prefix("artgen-dirrev-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut spec = Mapping::new();
    spec.insert("sources".into(), sources_value(&[alias.to_string()]));
    let artifact: Value = yaml_serde::from_str(&format!(
        "{{name: dir-revision, copy: [{{from: '@{alias}/', to: '@artifact/'}}]}}"
    ))
    .map_err(|e| e.to_string())?;
    spec.insert("artifacts".into(), Value::Sequence(vec![artifact]));
    write_manifest(
        work.path(),
        &manifest_document("dir-revision", Value::Mapping(spec)),
    )?;
    let inv = Invocation {
        workdir: work.path().to_path_buf(),
        manifest: PathBuf::from(MANIFEST_FILE),
        sources: vec![(alias.to_string(), dir.display().to_string())],
        out: PathBuf::from(OUT_DIR),
        validate_only: false,
    };
    let outcome = (env.runner)(&inv);
    if outcome.code != 0 {
        return Err(format!(
            "packing @{alias}/ failed (exit {}): {}",
            outcome.code,
            outcome.last_stderr_line()
        ));
    }
    let json: serde_json::Value = serde_json::from_str(outcome.stdout.trim()).map_err(|e| e.to_string())?;
    let digest = json
        .get(0)
        .and_then(|i| i.get("digest"))
        .and_then(|d| d.as_str())
        .ok_or("no digest in JSON")?;
    let hex = digest.strip_prefix("sha256:").ok_or("digest without sha256:")?;
    Ok(format!("local@sha256:{hex}"))
}

fn check_error(inv: &Invocation, outcome: &Outcome, hint: &Value, check: &mut Check) {
    match outcome.code {
        1 => {}
        2 => check.fail(format!(
            "exit code 2 (usage error) never satisfies a case; stderr: {}",
            outcome.last_stderr_line()
        )),
        0 => check.fail(format!(
            "expected the build to fail (exit 1), it succeeded; stdout: {}",
            clip(&outcome.stdout)
        )),
        c => check.fail(format!(
            "expected exit 1, got {c}; stderr: {}",
            clip(&outcome.stderr)
        )),
    }
    if outcome.code != 0 {
        let last = outcome.last_stderr_line();
        if last.is_empty() {
            check.fail("no error message on stderr");
        } else if last.starts_with("warning: ") {
            check.fail(format!(
                "the last stderr line must be the error, not a warning: {last}"
            ));
        }
        if let Some(h) = scalar_string(hint)
            && !outcome.stderr.to_lowercase().contains(&h.to_lowercase())
        {
            check.note(format!("stderr does not mention {h:?} (advisory): {last}"));
        }
    }
    let out = inv.workdir.join(&inv.out);
    match fs::read_dir(&out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => check.fail(format!("cannot list {}: {e}", out.display())),
        Ok(rd) => {
            let names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if !names.is_empty() {
                check.fail(format!("a failed build wrote to out/: {names:?}"));
            }
        }
    }
}

const ITEM_KEYS: &[&str] = &[
    "name",
    "revision",
    "digest",
    "size",
    "path",
    "labels",
    "originRevision",
];

/// Exit 0, JSON items, `out/` contents and the archive format of every item. `None` when there is no
/// usable JSON array.
fn check_success(inv: &Invocation, outcome: &Outcome, check: &mut Check) -> Option<Vec<Item>> {
    if outcome.code != 0 {
        let usage = if outcome.code == 2 {
            " (usage error: never satisfies a case)"
        } else {
            ""
        };
        check.fail(format!(
            "exit code {}{usage}, expected 0; stderr: {}",
            outcome.code,
            clip(&outcome.stderr)
        ));
        return None;
    }
    let json: serde_json::Value = match serde_json::from_str(outcome.stdout.trim()) {
        Ok(j) => j,
        Err(e) => {
            check.fail(format!("stdout is not JSON ({e}): {}", clip(&outcome.stdout)));
            return None;
        }
    };
    let Some(array) = json.as_array() else {
        check.fail(format!("stdout is not a JSON array: {}", clip(&outcome.stdout)));
        return None;
    };
    let mut items = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, v) in array.iter().enumerate() {
        let Some(obj) = v.as_object() else {
            check.fail(format!("JSON item {i} is not an object"));
            continue;
        };
        for k in obj.keys() {
            if !ITEM_KEYS.contains(&k.as_str()) {
                check.fail(format!("JSON item {i} has unexpected key {k:?}"));
            }
        }
        let string = |key: &str| obj.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let Some(name) = string("name") else {
            check.fail(format!("JSON item {i}: name missing or not a string"));
            continue;
        };
        if !seen.insert(name.clone()) {
            check.fail(format!("JSON item name {name:?} appears twice"));
        }
        let revision = string("revision").unwrap_or_else(|| {
            check.fail(format!("{name}: revision missing or not a string"));
            String::new()
        });
        let digest = string("digest").unwrap_or_default();
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            check.fail(format!(
                "{name}: digest {digest:?} is not sha256:<64 lowercase hex>"
            ));
        }
        let size = obj.get("size").and_then(|v| v.as_u64());
        if size.is_none() {
            check.fail(format!("{name}: size missing or not a non-negative integer"));
        }
        let labels = match obj.get("labels").and_then(|v| v.as_object()) {
            Some(m) => m
                .iter()
                .filter_map(|(k, v)| match v.as_str() {
                    Some(s) => Some((k.clone(), s.to_string())),
                    None => {
                        check.fail(format!("{name}: label {k} is not a string"));
                        None
                    }
                })
                .collect(),
            None => {
                check.fail(format!("{name}: labels missing or not an object"));
                BTreeMap::new()
            }
        };
        let origin_revision = match obj.get("originRevision") {
            None => None,
            Some(v) => match v.as_str() {
                Some(s) => Some(s.to_string()),
                None => {
                    check.fail(format!("{name}: originRevision is not a string"));
                    None
                }
            },
        };
        let want_path = inv.out.join(format!("{name}.tar.gz"));
        let mut listing = Listing::default();
        match string("path") {
            None => check.fail(format!("{name}: path missing or not a string")),
            Some(p) if Path::new(&p) != want_path => {
                check.fail(format!(
                    "{name}: path {p:?}, expected {:?}",
                    want_path.display().to_string()
                ));
            }
            Some(_) => {}
        }
        match fs::read(inv.workdir.join(&want_path)) {
            Err(e) => check.fail(format!("{name}: cannot read {}: {e}", want_path.display())),
            Ok(bytes) => {
                let actual = hex::encode(Sha256::digest(&bytes));
                if actual != hex {
                    check.fail(format!(
                        "{name}: digest {digest} but the file's sha256 is {actual}"
                    ));
                }
                if size.is_some_and(|s| s != bytes.len() as u64) {
                    check.fail(format!(
                        "{name}: size {size:?} but the file has {} bytes",
                        bytes.len()
                    ));
                }
                let inspection = archive::inspect(&bytes);
                for v in inspection.violations.iter().take(20) {
                    check.fail(format!("{name}.tar.gz violates format v1: {v}"));
                }
                if inspection.violations.len() > 20 {
                    check.fail(format!(
                        "{name}.tar.gz: {} more violations",
                        inspection.violations.len() - 20
                    ));
                }
                listing = inspection.listing;
            }
        }
        items.push(Item {
            name,
            revision,
            digest,
            origin_revision,
            labels,
            listing,
        });
    }

    let out = inv.workdir.join(&inv.out);
    match fs::read_dir(&out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !items.is_empty() {
                check.fail(format!("{} does not exist", out.display()));
            }
        }
        Err(e) => check.fail(format!("cannot list {}: {e}", out.display())),
        Ok(rd) => {
            let want: BTreeSet<String> = items.iter().map(|i| format!("{}.tar.gz", i.name)).collect();
            let mut got = BTreeSet::new();
            for e in rd.filter_map(|e| e.ok()) {
                let n = e.file_name().to_string_lossy().into_owned();
                if !e.file_type().is_ok_and(|t| t.is_file()) {
                    check.fail(format!("out/ contains {n:?}, which is not a regular file"));
                }
                got.insert(n);
            }
            if got != want {
                check.fail(format!("out/ contains {got:?}, expected exactly {want:?}"));
            }
        }
    }
    Some(items)
}

/// `files` / `files_yaml` / `modes` / `dirs` of `expect` (or of an expected generator item).
fn check_tree(listing: &Listing, expect: &Mapping, prefix: &str, check: &mut Check) {
    let files = expect.get("files").and_then(Value::as_mapping);
    let files_yaml = expect.get("files_yaml").and_then(Value::as_mapping);
    for key in ["files", "files_yaml", "modes"] {
        if expect.get(key).is_some_and(|v| !v.is_mapping()) {
            check.fail(format!("{prefix}expect.{key} is not a mapping"));
        }
    }
    if files.is_some() || files_yaml.is_some() {
        let mut want: BTreeSet<String> = BTreeSet::new();
        for m in [files, files_yaml].into_iter().flatten() {
            for k in m.keys() {
                match scalar_string(k) {
                    Some(k) if !want.insert(k.clone()) => {
                        check.fail(format!("{prefix}{k} is in files and files_yaml"))
                    }
                    Some(_) => {}
                    None => check.fail(format!("{prefix}file key {k:?} is not a scalar")),
                }
            }
        }
        let got: BTreeSet<String> = listing.files.keys().cloned().collect();
        let missing: Vec<&String> = want.difference(&got).collect();
        let extra: Vec<&String> = got.difference(&want).collect();
        if !missing.is_empty() {
            check.fail(format!("{prefix}missing files {missing:?} (archive has {got:?})"));
        }
        if !extra.is_empty() {
            check.fail(format!("{prefix}unexpected files {extra:?}"));
        }
        for (k, v) in files.into_iter().flatten() {
            let (Some(path), Some(content)) = (scalar_string(k), scalar_string(v)) else {
                check.fail(format!("{prefix}files entry {k:?} is not path: text"));
                continue;
            };
            if let Some(f) = listing.files.get(&path)
                && f.data != content.as_bytes()
            {
                check.fail(format!(
                    "{prefix}{path}: content {} != expected {}",
                    clip(&format!("{:?}", String::from_utf8_lossy(&f.data))),
                    clip(&format!("{content:?}"))
                ));
            }
        }
        for (k, v) in files_yaml.into_iter().flatten() {
            let (Some(path), Some(text)) = (scalar_string(k), v.as_str()) else {
                check.fail(format!("{prefix}files_yaml entry {k:?} is not path: text"));
                continue;
            };
            let Some(f) = listing.files.get(&path) else {
                continue;
            };
            let actual_text = String::from_utf8_lossy(&f.data);
            match (parse_yaml_documents(&actual_text), parse_yaml_documents(text)) {
                (_, Err(e)) => check.fail(format!("{prefix}{path}: expected YAML does not parse: {e}")),
                (Err(e), _) => check.fail(format!(
                    "{prefix}{path}: does not parse as YAML ({e}): {}",
                    clip(&actual_text)
                )),
                (Ok(a), Ok(b)) => {
                    if a.len() != b.len() || !a.iter().zip(&b).all(|(x, y)| yaml_equal(x, y)) {
                        check.fail(format!(
                            "{prefix}{path}: YAML differs\n--- got:\n{}\n--- expected:\n{}",
                            actual_text.trim_end(),
                            text.trim_end()
                        ));
                    }
                }
            }
        }
    }
    if let Some(modes) = expect.get("modes").and_then(Value::as_mapping) {
        for (k, v) in modes {
            let (Some(path), Some(mode)) = (scalar_string(k), scalar_string(v).and_then(|m| parse_mode(&m)))
            else {
                check.fail(format!("{prefix}modes entry {k:?}: {v:?} is not path: \"0644\""));
                continue;
            };
            match listing.files.get(&path) {
                None => check.fail(format!("{prefix}modes: {path} is not a file of the archive")),
                Some(f) if f.mode != mode => check.fail(format!(
                    "{prefix}{path}: mode {:04o}, expected {mode:04o}",
                    f.mode
                )),
                Some(_) => {}
            }
        }
    }
    if let Some(dirs) = expect.get("dirs") {
        for d in string_list(dirs) {
            let d = d.trim_end_matches('/');
            if !listing.dirs.contains(d) {
                check.fail(format!(
                    "{prefix}directory {d:?} has no entry (dirs: {:?})",
                    listing.dirs
                ));
            }
        }
    }
}

/// Parses every document of a YAML stream (YAML 1.2 core schema as implemented by yaml_serde).
pub fn parse_yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        docs.push(Value::deserialize(doc).map_err(|e| e.to_string())?);
    }
    Ok(docs)
}

/// Semantic YAML equality: strict types (`1` ≠ `1.0` ≠ `"1"`), sequence order matters, mapping order does not.
pub fn yaml_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() != y.is_f64() {
                false
            } else if x.is_f64() {
                let (p, q) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
                p == q || (p.is_nan() && q.is_nan())
            } else if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
                p == q
            } else {
                x.as_u64().is_some() && x.as_u64() == y.as_u64()
            }
        }
        (Value::Sequence(x), Value::Sequence(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| yaml_equal(p, q))
        }
        (Value::Mapping(x), Value::Mapping(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| yaml_equal(k, k2) && yaml_equal(v, v2)))
        }
        (Value::Tagged(x), Value::Tagged(y)) => x.tag == y.tag && yaml_equal(&x.value, &y.value),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Manifests

fn sources_value(aliases: &[String]) -> Value {
    Value::Sequence(
        aliases
            .iter()
            .map(|a| {
                let mut m = Mapping::new();
                m.insert("alias".into(), Value::String(a.clone()));
                m.insert("kind".into(), "GitRepository".into());
                m.insert("name".into(), Value::String(a.replace('_', "-")));
                Value::Mapping(m)
            })
            .collect(),
    )
}

fn manifest_document(case_name: &str, spec: Value) -> Value {
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), Value::String(dns_label(case_name)));
    metadata.insert("namespace".into(), NAMESPACE.into());
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), API_VERSION.into());
    m.insert("kind".into(), KIND.into());
    m.insert("metadata".into(), Value::Mapping(metadata));
    m.insert("spec".into(), spec);
    Value::Mapping(m)
}

fn write_manifest(work: &Path, manifest: &Value) -> Result<(), String> {
    let text = yaml_serde::to_string(manifest).map_err(|e| format!("cannot serialise the manifest: {e}"))?;
    fs::write(work.join(MANIFEST_FILE), text).map_err(|e| format!("cannot write the manifest: {e}"))
}

/// A manifest for hand-written tests: `spec_yaml` is the spec without `sources` (e.g. `artifacts: [...]`);
/// every alias becomes a GitRepository source. Panics on malformed YAML.
pub fn manifest_yaml(name: &str, aliases: &[&str], spec_yaml: &str) -> String {
    let rest: Value = yaml_serde::from_str(spec_yaml).expect("spec_yaml parses");
    let mut spec = Mapping::new();
    spec.insert(
        "sources".into(),
        sources_value(&aliases.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
    );
    for (k, v) in rest.as_mapping().expect("spec_yaml is a mapping") {
        spec.insert(k.clone(), v.clone());
    }
    yaml_serde::to_string(&manifest_document(name, Value::Mapping(spec))).expect("serialises")
}

/// Lower-cases and replaces everything outside `[a-z0-9-]` so the result is a DNS label (≤ 63).
pub fn dns_label(s: &str) -> String {
    let mapped: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let cut: String = trimmed.chars().take(63).collect();
    let cut = cut.trim_end_matches('-');
    if cut.is_empty() {
        "case".into()
    } else {
        cut.to_string()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Materialisation

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s.iter().filter_map(scalar_string).collect(),
        other => scalar_string(other).into_iter().collect(),
    }
}

/// `"0755"` / `"755"` / `0o755` → 0o755.
fn parse_mode(s: &str) -> Option<u32> {
    let s = s.trim().trim_start_matches("0o");
    if s.is_empty() {
        None
    } else {
        u32::from_str_radix(s, 8).ok()
    }
}

fn mode_of(m: &Mapping, default: u32) -> Result<u32, String> {
    match m.get("mode") {
        None => Ok(default),
        Some(v) => scalar_string(v)
            .and_then(|s| parse_mode(&s))
            .ok_or_else(|| format!("bad mode {v:?}")),
    }
}

/// Parses `tree_yaml` (README "Sources") and materialises it under `root`.
pub fn materialize_dir(root: &Path, tree_yaml: &str) -> Result<(), String> {
    let tree: Value = yaml_serde::from_str(tree_yaml).map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    fs::create_dir_all(root).map_err(|e| e.to_string())?;
    materialize_tree(root, &tree, scratch.path())
}

/// Parses `entries_yaml` (README tarball entries) and writes them to `path`.
pub fn materialize_tarball(path: &Path, entries_yaml: &str, gzip: bool) -> Result<(), String> {
    let tree: Value = yaml_serde::from_str(entries_yaml).map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let entries = tar_entries(&tree, scratch.path())?;
    archive::write_tarball(path, &entries, gzip).map_err(|e| e.to_string())
}

/// Materialises a source tree below `root` (which must exist). Files get their modes exactly (umask does
/// not apply), directories 0755. Nested `tarball` values are built in `scratch` first. Refuses names that
/// would leave `root` or write through a symlink.
pub fn materialize_tree(root: &Path, tree: &Value, scratch: &Path) -> Result<(), String> {
    let tree = match tree {
        Value::Null => return Ok(()),
        Value::Mapping(m) => m,
        other => return Err(format!("a tree must be a mapping, got {other:?}")),
    };
    for (key, value) in tree {
        let key = scalar_string(key).ok_or_else(|| format!("bad key {key:?}"))?;
        let rel = safe_relative(&key)?;
        let path = root.join(&rel);
        let err = |e: io::Error| format!("{key}: {e}");
        ensure_parents(root, &rel)?;
        if key.ends_with('/') {
            if !value.as_mapping().is_some_and(Mapping::is_empty) && !value.is_null() {
                return Err(format!("{key}: a directory key needs the value {{}}"));
            }
            refuse_symlink(&path, &key)?;
            if !path.is_dir() {
                fs::create_dir(&path).map_err(err)?;
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(err)?;
            continue;
        }
        refuse_symlink(&path, &key)?;
        if let Some(text) = scalar_string(value) {
            write_file(&path, text.as_bytes(), 0o644).map_err(err)?;
            continue;
        }
        let m = value
            .as_mapping()
            .ok_or_else(|| format!("{key}: unsupported value {value:?}"))?;
        if let Some(c) = m.get("content") {
            let text = scalar_string(c).ok_or_else(|| format!("{key}: content must be text"))?;
            write_file(&path, text.as_bytes(), mode_of(m, 0o644)?).map_err(err)?;
        } else if let Some(t) = m.get("symlink") {
            let target = scalar_string(t).ok_or_else(|| format!("{key}: symlink target must be text"))?;
            if path.exists() {
                return Err(format!("{key}: already exists"));
            }
            std::os::unix::fs::symlink(&target, &path).map_err(err)?;
        } else if let Some(entries) = m.get("tarball") {
            let gzip = m.get("gzip").and_then(Value::as_bool).unwrap_or(true);
            let entries = tar_entries(entries, scratch)?;
            archive::write_tarball(&path, &entries, gzip).map_err(err)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode_of(m, 0o644)?)).map_err(err)?;
        } else if m.get("fifo").and_then(Value::as_bool) == Some(true) {
            let status = Command::new("mkfifo")
                .arg("-m")
                .arg("644")
                .arg(&path)
                .status()
                .map_err(err)?;
            if !status.success() {
                return Err(format!("{key}: mkfifo failed ({status})"));
            }
        } else if let Some(n) = m.get("generated_size") {
            let n = n
                .as_u64()
                .ok_or_else(|| format!("{key}: generated_size must be a number"))?;
            let f = fs::File::create(&path).map_err(err)?;
            f.set_len(n).map_err(err)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode_of(m, 0o644)?)).map_err(err)?;
        } else if let Some(t) = m.get("hardlink") {
            let target = scalar_string(t).ok_or_else(|| format!("{key}: hardlink target must be text"))?;
            let target = root.join(safe_relative(&target)?);
            fs::hard_link(&target, &path).map_err(err)?;
        } else {
            return Err(format!("{key}: unsupported value {value:?}"));
        }
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    fs::write(path, data)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// `a/b/`, `./a` → `a/b`, `a`; rejects absolute names and `..`.
fn safe_relative(key: &str) -> Result<PathBuf, String> {
    let p = Path::new(key);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{key:?} cannot be materialised as a directory entry (use source_as: tarball)"
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("{key:?} names the root"));
    }
    Ok(out)
}

fn refuse_symlink(path: &Path, key: &str) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(format!("{key}: would write through a symlink")),
        _ => Ok(()),
    }
}

fn ensure_parents(root: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{}: parent is a symlink", rel.display()));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{}: parent is not a directory", rel.display())),
            Err(_) => {
                fs::create_dir(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Converts README tarball entries into [`TarEntry`]s: names verbatim, in the given order, PAX global
/// headers first. Nested `tarball` values are built as files in `scratch`.
pub fn tar_entries(tree: &Value, scratch: &Path) -> Result<Vec<TarEntry>, String> {
    let tree = match tree {
        Value::Null => return Ok(vec![]),
        Value::Mapping(m) => m,
        other => return Err(format!("tarball entries must be a mapping, got {other:?}")),
    };
    let mut globals = Vec::new();
    let mut entries = Vec::new();
    for (key, value) in tree {
        let name = scalar_string(key).ok_or_else(|| format!("bad entry name {key:?}"))?;
        if let Some(text) = scalar_string(value) {
            entries.push(TarEntry::File {
                name,
                data: text.into_bytes(),
                mode: 0o644,
            });
            continue;
        }
        let empty = Mapping::new();
        let m = match value {
            Value::Null => &empty,
            Value::Mapping(m) => m,
            other => return Err(format!("{name}: unsupported entry {other:?}")),
        };
        if m.is_empty() {
            if !name.ends_with('/') {
                return Err(format!(
                    "{name}: {{}} is only valid for directory keys ending in /"
                ));
            }
            entries.push(TarEntry::Dir { name, mode: 0o755 });
        } else if let Some(c) = m.get("content") {
            let text = scalar_string(c).ok_or_else(|| format!("{name}: content must be text"))?;
            entries.push(TarEntry::File {
                name,
                data: text.into_bytes(),
                mode: mode_of(m, 0o644)?,
            });
        } else if let Some(t) = m.get("symlink") {
            let target = scalar_string(t).ok_or_else(|| format!("{name}: symlink target must be text"))?;
            entries.push(TarEntry::Symlink { name, target });
        } else if let Some(t) = m.get("hardlink") {
            let target = scalar_string(t).ok_or_else(|| format!("{name}: hardlink target must be text"))?;
            entries.push(TarEntry::Hardlink { name, target });
        } else if let Some(n) = m.get("generated_size") {
            let size = n
                .as_u64()
                .ok_or_else(|| format!("{name}: generated_size must be a number"))?;
            entries.push(TarEntry::Zeros {
                name,
                size,
                mode: mode_of(m, 0o644)?,
            });
        } else if m.get("fifo").and_then(Value::as_bool) == Some(true) {
            entries.push(TarEntry::Fifo { name });
        } else if let Some(g) = m.get("pax_global") {
            let records = g
                .as_mapping()
                .ok_or_else(|| format!("{name}: pax_global must be a mapping"))?
                .iter()
                .map(|(k, v)| {
                    Ok((
                        scalar_string(k).ok_or("bad key")?,
                        scalar_string(v).unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            globals.push(TarEntry::PaxGlobal { records });
        } else if let Some(inner) = m.get("tarball") {
            let gzip = m.get("gzip").and_then(Value::as_bool).unwrap_or(true);
            let nested = tar_entries(inner, scratch)?;
            let n = fs::read_dir(scratch).map(|d| d.count()).unwrap_or(0);
            let path = scratch.join(format!("nested-{n}.tar"));
            archive::write_tarball(&path, &nested, gzip).map_err(|e| format!("{name}: {e}"))?;
            entries.push(TarEntry::FileFrom {
                name,
                path,
                mode: mode_of(m, 0o644)?,
            });
        } else {
            return Err(format!("{name}: unsupported entry {value:?}"));
        }
    }
    globals.extend(entries);
    Ok(globals)
}

// ---------------------------------------------------------------------------------------------------------
// Runners and helpers

/// A runner that executes `bin` (the `artgen` binary) per spec §12, in the invocation's work directory.
pub fn cli_runner(bin: impl Into<PathBuf>) -> impl Fn(&Invocation) -> Outcome {
    let bin = bin.into();
    move |inv: &Invocation| {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&inv.workdir);
        if inv.validate_only {
            cmd.arg("validate").arg("-f").arg(&inv.manifest);
        } else {
            cmd.arg("build").arg("-f").arg(&inv.manifest);
            for (alias, value) in &inv.sources {
                cmd.arg("--source").arg(format!("{alias}={value}"));
            }
            cmd.arg("-o").arg(&inv.out).arg("--json");
        }
        run_command(cmd, run_timeout())
    }
}

/// The per-run timeout (`ARTGEN_E2E_TIMEOUT_SECS`, default 600 s).
pub fn run_timeout() -> Duration {
    std::env::var("ARTGEN_E2E_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// Runs `cmd` with stdin closed, capturing stdout/stderr; a watchdog kills it after `timeout`.
pub fn run_command(mut cmd: Command, timeout: Duration) -> Outcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                code: -1,
                stdout: String::new(),
                stderr: format!("[harness] cannot start {:?}: {e}", cmd.get_program()),
            };
        }
    };
    let pid = child.id();
    let (done, wait) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if wait.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            true
        } else {
            false
        }
    });
    let output = child.wait_with_output();
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    match output {
        Ok(o) => {
            let mut stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            if killed {
                stderr.push_str(&format!("\n[harness] killed after {timeout:?}\n"));
            }
            Outcome {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr,
            }
        }
        Err(e) => Outcome {
            code: -1,
            stdout: String::new(),
            stderr: format!("[harness] wait failed: {e}"),
        },
    }
}

/// `<workspace root>/../shared/spec/cases`.
pub fn shared_cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("shared")
        .join("spec")
        .join("cases")
}

/// Fails when the shared spec cases (`<workspace root>/../shared/spec/cases`) exist and differ from
/// `copy_dir` (same file names, same bytes); does nothing when the shared directory does not exist.
pub fn assert_matches_shared(copy_dir: &Path) {
    let shared = shared_cases_dir();
    if !shared.is_dir() {
        println!("{} does not exist: nothing to compare", shared.display());
        return;
    }
    let list = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(d)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()))
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| {
                let bytes = fs::read(e.path())
                    .unwrap_or_else(|err| panic!("cannot read {}: {err}", e.path().display()));
                (e.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect()
    };
    let (want, have) = (list(&shared), list(copy_dir));
    let mut problems = Vec::new();
    for (name, bytes) in &want {
        match have.get(name) {
            None => problems.push(format!("{name} is missing from the copy")),
            Some(b) if b != bytes => problems.push(format!("{name} differs")),
            Some(_) => {}
        }
    }
    for name in have.keys().filter(|n| !want.contains_key(*n)) {
        problems.push(format!("{name} is not in the shared cases"));
    }
    assert!(
        problems.is_empty(),
        "{} is out of date with {} (copy the shared files over):\n  {}",
        copy_dir.display(),
        shared.display(),
        problems.join("\n  ")
    );
}

/// Fails when `dir` has a case file that is not in `covered`, or `covered` names a file that is not there.
pub fn assert_case_files_covered(dir: &Path, covered: &[&str]) {
    let present: BTreeSet<String> = case_files(dir)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let covered: BTreeSet<String> = covered.iter().map(|s| s.to_string()).collect();
    let missing: Vec<&String> = present.difference(&covered).collect();
    let stale: Vec<&String> = covered.difference(&present).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "case files without a test: {missing:?}; tests without a file: {stale:?}"
    );
}

fn clip(s: &str) -> String {
    const MAX: usize = 600;
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::TreeNode;
    use std::cell::RefCell;

    fn cases_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/cases")
    }

    fn y(s: &str) -> Value {
        yaml_serde::from_str(s).unwrap()
    }

    #[test]
    fn yaml_equality_is_strict_on_types_and_ignores_mapping_order() {
        let docs = |s: &str| parse_yaml_documents(s).unwrap();
        let eq = |a: &str, b: &str| {
            let (a, b) = (docs(a), docs(b));
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| yaml_equal(x, y))
        };
        assert!(eq("a: 1\nb: {x: [1, 2]}\n", "b:\n  x:\n  - 1\n  - 2\na: 1\n"));
        assert!(!eq("a: 1", "a: 1.0"));
        assert!(!eq("a: 1", "a: '1'"));
        assert!(!eq("a: true", "a: 'yes'"));
        assert!(eq("a: yes", "a: 'yes'"), "YAML 1.2: yes is a string");
        assert!(eq("a: 0x1F", "a: 31"));
        assert!(eq("big: 12345678901234567890", "big: 12345678901234567890"));
        assert!(!eq("big: 12345678901234567890", "big: 12345678901234567891"));
        assert!(!eq("l: [1, 2]", "l: [2, 1]"));
        assert!(eq("1: one\n'y': key", "'y': key\n1: one"));
        assert!(!eq("1: one", "'1': one"));
        assert!(!eq("a: 1\n---\nb: 2\n", "a: 1\nb: 2\n"));
        assert!(eq("a: null", "a: ~"));
        assert!(!eq("a: {b: 1}", "a: {b: 1, c: 2}"));
    }

    #[test]
    fn repeats_labels_and_modes() {
        assert_eq!(
            expand_repeats(y("{alias: {repeat: ab, times: 3}, l: [{repeat: x, times: 2}]}")),
            y("{alias: ababab, l: [xx]}")
        );
        assert_eq!(dns_label("Foo_bar--"), "foo-bar");
        assert_eq!(dns_label(&"a".repeat(70)).len(), 63);
        assert_eq!(dns_label("___"), "case");
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("9"), None);
    }

    #[test]
    fn materializer_creates_files_dirs_links_and_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        materialize_dir(
            &root,
            "{a/b/c.yaml: c, run.sh: {content: x, mode: '0755'}, ro: {content: r, mode: '0444'}, empty/: {}, \
             l: {symlink: a/b}, dangling: {symlink: nothere}, p: {fifo: true}, z: {generated_size: 5}, \
             t.tgz: {tarball: {x.yaml: x, d/: {}}}, raw.tgz: {tarball: {y: y}, gzip: false}}",
        )
        .unwrap();
        assert_eq!(fs::read_to_string(root.join("a/b/c.yaml")).unwrap(), "c");
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("run.sh"), 0o755);
        assert_eq!(mode("ro"), 0o444);
        assert_eq!(mode("a/b/c.yaml"), 0o644);
        assert_eq!(mode("a"), 0o755);
        assert!(root.join("empty").is_dir());
        assert_eq!(fs::read_link(root.join("l")).unwrap(), Path::new("a/b"));
        assert!(
            fs::symlink_metadata(root.join("dangling"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        use std::os::unix::fs::FileTypeExt;
        assert!(
            fs::symlink_metadata(root.join("p"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(fs::read(root.join("z")).unwrap(), vec![0; 5]);
        let t = archive::list_raw(&fs::read(root.join("t.tgz")).unwrap()).unwrap();
        assert_eq!(
            t.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["x.yaml", "d/"]
        );
        assert!(fs::read(root.join("t.tgz")).unwrap().starts_with(&[0x1f, 0x8b]));
        assert!(!fs::read(root.join("raw.tgz")).unwrap().starts_with(&[0x1f, 0x8b]));
    }

    #[test]
    fn materializer_refuses_escapes_and_writing_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        assert!(materialize_dir(&root, "{../x: x}").is_err());
        assert!(materialize_dir(&root, "{/abs: x}").is_err());
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let spec = format!("{{d: {{symlink: {}}}, d/x.yaml: x}}", outside.display());
        assert!(materialize_dir(&root, &spec).is_err());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn tarball_entries_keep_order_names_and_hoist_pax_globals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar.gz");
        materialize_tarball(
            &path,
            "{ok.yaml: o, ../evil.yaml: e, /abs.yaml: a, b: {hardlink: ok.yaml}, l: {symlink: /tmp}, \
             f: {fifo: true}, big: {generated_size: 2000}, g: {pax_global: {comment: abc}}, d/: {}, \
             n.tgz: {tarball: {inner: i}}}",
            true,
        )
        .unwrap();
        let raw = archive::list_raw(&fs::read(&path).unwrap()).unwrap();
        let got: Vec<(char, &str, &str)> = raw
            .iter()
            .map(|e| (e.typeflag as char, e.name.as_str(), e.link.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ('g', "pax_global_header", ""),
                ('0', "ok.yaml", ""),
                ('0', "../evil.yaml", ""),
                ('0', "/abs.yaml", ""),
                ('1', "b", "ok.yaml"),
                ('2', "l", "/tmp"),
                ('6', "f", ""),
                ('0', "big", ""),
                ('5', "d/", ""),
                ('0', "n.tgz", ""),
            ]
        );
        assert_eq!(raw[7].size, 2000);
        assert!(
            raw.iter()
                .all(|e| e.uid == archive::INPUT_UID && e.mtime == archive::INPUT_MTIME)
        );
    }

    #[test]
    fn every_case_file_loads_and_every_source_materialises() {
        let invocations = RefCell::new(0usize);
        let check_inputs = |inv: &Invocation| {
            *invocations.borrow_mut() += 1;
            let manifest = fs::read_to_string(inv.workdir.join(&inv.manifest)).unwrap();
            let doc: Value = yaml_serde::from_str(&manifest).unwrap();
            assert_eq!(doc["metadata"]["namespace"].as_str(), Some(NAMESPACE));
            if !inv.validate_only {
                let aliases: Vec<&str> = doc["spec"]["sources"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|s| s["alias"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    aliases,
                    inv.sources.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>()
                );
                for (_, value) in &inv.sources {
                    if let Some(url) = value.strip_prefix("http://") {
                        assert!(url.contains("/sources/") || url.contains(".tar.gz"), "{value}");
                    } else {
                        assert!(
                            fs::symlink_metadata(inv.workdir.join(value)).is_ok(),
                            "{value} missing"
                        );
                    }
                }
            }
            Outcome {
                code: 1,
                stdout: String::new(),
                stderr: "error: fake failure\n".into(),
            }
        };
        let report = run_cases(&cases_dir(), &check_inputs);
        assert!(*invocations.borrow() > 100);
        // Every failure of a runner that always fails is a failed success expectation, never a harness problem.
        for r in report.failures() {
            let CaseStatus::Failed(reasons) = &r.status else {
                unreachable!()
            };
            for reason in reasons {
                assert!(
                    reason.starts_with("exit code 1") || reason.starts_with("expected valid"),
                    "{}/{}: {reason}",
                    r.file,
                    r.name
                );
            }
        }
        // Error cases and invalid objects pass with such a runner.
        let passed: BTreeSet<&str> = report
            .results
            .iter()
            .filter(|r| r.status == CaseStatus::Passed)
            .map(|r| r.name.as_str())
            .collect();
        for name in [
            "url-source-with-wrong-digest-fails",
            "extract-size-limit-100mib",
            "alias-uppercase-rejected",
        ] {
            assert!(
                passed.contains(name),
                "{name} did not pass:\n{}",
                report.summary()
            );
        }
        assert!(
            report
                .results
                .iter()
                .any(|r| r.name == "default-revision-format" && matches!(r.status, CaseStatus::Skipped(_)))
        );
    }

    #[test]
    fn usage_errors_never_satisfy_a_case() {
        let usage = |_: &Invocation| Outcome {
            code: 2,
            stdout: String::new(),
            stderr: "usage\n".into(),
        };
        let report = run_case_file(&cases_dir().join("validation.yaml"), &usage);
        assert_eq!(report.passed(), 0);
        assert!(
            report
                .failures()
                .iter()
                .all(|r| matches!(&r.status, CaseStatus::Failed(v) if v[0].contains("exit code 2")))
        );
    }

    /// A tiny stand-in engine: whole-source copies (`@a/`, `@a/**`, `@a/*` to `@artifact/`) of directory
    /// sources, packed by the reference writer.
    fn fake_engine(inv: &Invocation, tamper: &dyn Fn(&mut serde_json::Value, &Path)) -> Outcome {
        let unsupported = |why: &str| Outcome {
            code: 3,
            stdout: String::new(),
            stderr: format!("fake: {why}\n"),
        };
        let text = fs::read_to_string(inv.workdir.join(&inv.manifest)).unwrap();
        let doc: Value = yaml_serde::from_str(&text).unwrap();
        if inv.validate_only {
            return unsupported("validate");
        }
        let mut built = Vec::new();
        for a in doc["spec"]["artifacts"].as_sequence().unwrap() {
            let mut tree = BTreeMap::new();
            for op in a["copy"].as_sequence().unwrap() {
                let from = op["from"].as_str().unwrap();
                let (alias, path) = from[1..].split_once('/').unwrap();
                if !matches!(path, "" | "**" | "*")
                    || op["to"].as_str() != Some("@artifact/")
                    || op.as_mapping().unwrap().len() != 2
                {
                    return unsupported(from);
                }
                let (_, value) = inv.sources.iter().find(|(a, _)| a == alias).unwrap();
                walk(&inv.workdir.join(value), "", &mut tree);
            }
            built.push((
                a["name"].as_str().unwrap().to_string(),
                a.get("revision").is_some(),
                archive::pack_v1(&tree),
            ));
        }
        let out = inv.workdir.join(&inv.out);
        fs::create_dir_all(&out).unwrap();
        let mut items = Vec::new();
        for (name, pinned, bytes) in built {
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            fs::write(out.join(format!("{name}.tar.gz")), &bytes).unwrap();
            assert!(!pinned, "the fake engine does not do revisions");
            items.push(serde_json::json!({
                "name": name, "revision": format!("latest@{digest}"), "digest": digest, "size": bytes.len(),
                "path": inv.out.join(format!("{name}.tar.gz")), "labels": {},
            }));
        }
        let mut json = serde_json::Value::Array(items);
        tamper(&mut json, &out);
        Outcome {
            code: 0,
            stdout: json.to_string(),
            stderr: String::new(),
        }
    }

    fn walk(dir: &Path, prefix: &str, tree: &mut BTreeMap<String, TreeNode>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                tree.insert(rel.clone(), TreeNode::Dir);
                walk(&e.path(), &format!("{rel}/"), tree);
            } else {
                let executable = meta.permissions().mode() & 0o111 != 0;
                tree.insert(
                    rel,
                    TreeNode::File {
                        data: fs::read(e.path()).unwrap(),
                        executable,
                    },
                );
            }
        }
    }

    #[test]
    fn archive_cases_pass_with_a_reference_engine() {
        let runner = |inv: &Invocation| fake_engine(inv, &|_, _| {});
        run_case_file(&cases_dir().join("archive.yaml"), &runner).assert_all_passed();
    }

    #[test]
    fn broken_outputs_are_reported() {
        let file = cases_dir().join("archive.yaml");
        let reasons = |tamper: &dyn Fn(&mut serde_json::Value, &Path)| -> String {
            let runner = |inv: &Invocation| fake_engine(inv, tamper);
            let report = run_case_file(&file, &runner);
            report
                .failures()
                .iter()
                .map(|r| format!("{:?}", r.status))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let r = reasons(&|j, _| {
            j[0].as_object_mut().unwrap().remove("labels");
        });
        assert!(r.contains("labels missing"), "{r}");
        let r = reasons(&|j, _| j[0]["revision"] = "latest@sha256:00".into());
        assert!(r.contains("revision \\\"latest@sha256:00\\\""), "{r}");
        let r = reasons(&|j, _| j[0]["extra"] = 1.into());
        assert!(r.contains("unexpected key \\\"extra\\\""), "{r}");
        let r = reasons(&|_, out| fs::write(out.join("stray.txt"), "x").unwrap());
        assert!(r.contains("out/ contains"), "{r}");
        let r = reasons(&|j, out| {
            let name = j[0]["name"].as_str().unwrap().to_string();
            let mut gz = flate2::GzBuilder::new()
                .mtime(5)
                .write(Vec::new(), flate2::Compression::new(6));
            io::Write::write_all(&mut gz, &[0; 1024]).unwrap();
            fs::write(out.join(format!("{name}.tar.gz")), gz.finish().unwrap()).unwrap();
        });
        assert!(r.contains("MTIME = 5") && r.contains("digest sha256:"), "{r}");
        // A digest comparison that does not hold (every archive forced to be the same).
        let r = reasons(&|j, out| {
            let name = j[0]["name"].as_str().unwrap().to_string();
            let bytes = archive::pack_v1(&BTreeMap::new());
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            fs::write(out.join(format!("{name}.tar.gz")), &bytes).unwrap();
            j[0]["digest"] = digest.clone().into();
            j[0]["revision"] = format!("latest@{digest}").into();
            j[0]["size"] = bytes.len().into();
        });
        assert!(r.contains("equals that of digest-baseline"), "{r}");
        assert!(r.contains("missing files"), "{r}");
    }

    #[test]
    fn failed_builds_must_leave_out_empty() {
        let writes = |inv: &Invocation| {
            let out = inv.workdir.join(&inv.out);
            fs::create_dir_all(&out).unwrap();
            fs::write(out.join("x.tar.gz"), "partial").unwrap();
            Outcome {
                code: 1,
                stdout: String::new(),
                stderr: "warning: skipped\nerror: boom\n".into(),
            }
        };
        let report = run_case_file(&cases_dir().join("copy.yaml"), &writes);
        let r = report
            .results
            .iter()
            .find(|r| r.name == "missing-literal-source-errors")
            .unwrap();
        assert!(
            matches!(&r.status, CaseStatus::Failed(v) if v[0].contains("wrote to out/")),
            "{r:?}"
        );
        let warn_last = |_: &Invocation| Outcome {
            code: 1,
            stdout: String::new(),
            stderr: "error\nwarning: x\n".into(),
        };
        let report = run_case_file(&cases_dir().join("copy.yaml"), &warn_last);
        let r = report
            .results
            .iter()
            .find(|r| r.name == "missing-literal-source-errors")
            .unwrap();
        assert!(
            matches!(&r.status, CaseStatus::Failed(v) if v[0].contains("not a warning")),
            "{r:?}"
        );
    }

    #[test]
    fn shared_copy_matches_and_all_files_are_known() {
        assert_matches_shared(&cases_dir());
        assert_case_files_covered(
            &cases_dir(),
            &[
                "archive.yaml",
                "controller.yaml",
                "copy.yaml",
                "exclude.yaml",
                "extract.yaml",
                "merge.yaml",
                "optional.yaml",
                "pathpattern.yaml",
                "sources.yaml",
                "symlink.yaml",
                "validation.yaml",
            ],
        );
    }

    #[test]
    fn command_runner_reports_codes_and_timeouts() {
        let o = run_command(
            {
                let mut c = Command::new("sh");
                c.arg("-c").arg("echo out; echo err >&2; exit 3");
                c
            },
            Duration::from_secs(60),
        );
        assert_eq!(
            (o.code, o.stdout.as_str(), o.last_stderr_line()),
            (3, "out\n", "err")
        );
        let mut c = Command::new("sleep");
        c.arg("30");
        let o = run_command(c, Duration::from_millis(200));
        assert_eq!(o.code, -1);
        assert!(o.stderr.contains("killed"), "{o:?}");
        let o = run_command(Command::new("/nonexistent/artgen"), Duration::from_secs(1));
        assert_eq!(o.code, -1);
    }

    #[test]
    fn manifest_helper() {
        let m = manifest_yaml(
            "My_Case",
            &["a", "b_c"],
            "artifacts: [{name: x, copy: [{from: '@a/', to: '@artifact/'}]}]",
        );
        let doc: Value = yaml_serde::from_str(&m).unwrap();
        assert_eq!(doc["metadata"]["name"].as_str(), Some("my-case"));
        assert_eq!(doc["spec"]["sources"][1]["name"].as_str(), Some("b-c"));
        assert_eq!(
            doc["spec"]["artifacts"][0]["copy"][0]["from"].as_str(),
            Some("@a/")
        );
    }
}
