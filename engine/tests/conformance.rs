//! The conformance cases (spec §13) through the engine library: the same table and checks as the CLI
//! runner (`controller/tests/cli.rs`), with the `--json` output synthesised from the build output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use artgen_e2e::cases::{self, Invocation, Outcome};
use artgen_engine::error::chain;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("cases")
}

fn failed(message: String) -> Outcome {
    Outcome {
        code: 1,
        stdout: String::new(),
        stderr: format!("{message}\n"),
    }
}

/// `artgen build --json` / `artgen validate` semantics on top of the engine API. Relative paths of the
/// invocation are resolved against its work directory.
fn run_engine(rt: &tokio::runtime::Runtime, inv: &Invocation) -> Outcome {
    let manifest_path = inv.workdir.join(&inv.manifest);
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(t) => t,
        Err(e) => {
            return Outcome {
                code: 2,
                stdout: String::new(),
                stderr: format!("{}: {e}\n", manifest_path.display()),
            };
        }
    };
    let manifest = match artgen_engine::spec::parse_manifest(&text) {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let namespace = manifest
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    if let Err(e) = artgen_engine::validate::validate(&manifest.spec, &namespace, &Default::default()) {
        return failed(chain(&e));
    }
    if inv.validate_only {
        return Outcome::default();
    }

    let mut sources = BTreeMap::new();
    for (alias, value) in &inv.sources {
        let input = if value.starts_with("http://") || value.starts_with("https://") {
            artgen_engine::SourceInput::Url(value.clone())
        } else {
            let path = inv.workdir.join(value);
            if path.is_dir() {
                artgen_engine::SourceInput::Dir(path)
            } else {
                artgen_engine::SourceInput::Tarball(path)
            }
        };
        sources.insert(alias.clone(), input);
    }
    let input = artgen_engine::BuildInput {
        manifest,
        sources,
        revisions: BTreeMap::new(),
        origin_revisions: BTreeMap::new(),
        options: Default::default(),
    };
    let output = match rt.block_on(artgen_engine::build(input)) {
        Ok(o) => o,
        Err(e) => return failed(chain(&e)),
    };
    if let Err(e) = output.write_to(&inv.workdir.join(&inv.out)) {
        return failed(chain(&e));
    }
    let items: Vec<serde_json::Value> = output
        .artifacts
        .iter()
        .map(|a| {
            let mut item = serde_json::json!({
                "name": a.name,
                "revision": a.revision,
                "digest": a.digest.to_string(),
                "size": a.size,
                "path": inv.out.join(format!("{}.tar.gz", a.name)).display().to_string(),
                "labels": a.labels,
            });
            if let Some(origin) = &a.origin_revision {
                item["originRevision"] = serde_json::Value::String(origin.clone());
            }
            item
        })
        .collect();
    let stderr: String = output
        .warnings
        .iter()
        .map(|w| {
            if w.starts_with("warning: ") {
                format!("{w}\n")
            } else {
                format!("warning: {w}\n")
            }
        })
        .collect();
    Outcome {
        code: 0,
        stdout: serde_json::Value::Array(items).to_string(),
        stderr,
    }
}

fn run(file: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let runner = |inv: &Invocation| run_engine(&rt, inv);
    cases::run_case_file(&cases_dir().join(file), &runner).assert_all_passed();
}

macro_rules! case_file_tests {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(#[test] fn $test() { run($file); })*
        const CASE_FILES: &[&str] = &[$($file,)* "controller.yaml"];
    };
}

case_file_tests! {
    archive => "archive.yaml",
    copy => "copy.yaml",
    exclude => "exclude.yaml",
    extract => "extract.yaml",
    merge => "merge.yaml",
    optional => "optional.yaml",
    pathpattern => "pathpattern.yaml",
    sources => "sources.yaml",
    symlink => "symlink.yaml",
    validation => "validation.yaml",
}

#[test]
fn every_case_file_is_run() {
    // controller.yaml is prose for the cluster suite; the runners skip it.
    cases::assert_case_files_covered(&cases_dir(), CASE_FILES);
}

#[test]
fn case_copy_matches_shared_spec() {
    cases::assert_matches_shared(&cases_dir());
}
