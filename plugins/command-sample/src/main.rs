//! `command-sample`: a command-mode plugin (design §4), i.e. a plain `wasi:cli/command` program.
//!
//! Protocol: stdin is `{"version":"0.1.0","config":{…},"context":{…}}`; every stdout line that is a JSON object is
//! a diagnostic `{"severity","code","message","path"?,"line"?,"hint"?}` (absent fields omitted), any other line
//! is log output; the exit code is 0 = success, 2 = invalid config, anything else = `rejected` when error
//! diagnostics were printed, else `internal`.
//!
//! What it does: prepends the line `config.header` to every `*.txt` file under `/work` (files that already start
//! with it are left alone, so a rerun changes nothing).
//!
//! * `config`: `{"header": "…" (required, one line, ≤ 200 chars), "forbid": ["word", …], "exitCode": n}`.
//! * A `*.txt` file containing a `forbid` word ⇒ one error diagnostic per occurrence (path, line), exit 1, no edits.
//! * `exitCode` (test hook): exit immediately with that code, printing nothing, before any edit.
//! * An unsupported `version` (not 0.1.x) ⇒ an error diagnostic and exit 1.
//!
//! It does not use the SDK: the SDK carries the typed world, and a command needs none of it.
//!
//! Exit codes other than 0 are reported with `wasi:cli/exit.exit-with-code` (WASI 0.2.12, so the component imports
//! `wasi:cli/*@0.2.12`): a non-zero `ExitCode` returned from `main` or `std::process::exit(n)` reaches the host as
//! plain failure (`exit(err)`, which wasmtime reports as status 1), losing the difference between 1 and 2.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
struct Input {
    version: String,
    #[serde(default)]
    config: serde_json::Value,
    #[serde(default)]
    context: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    header: String,
    #[serde(default)]
    forbid: Vec<String>,
    #[serde(default)]
    exit_code: Option<u8>,
}

#[derive(Debug, Serialize)]
struct Diag {
    severity: &'static str,
    code: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

impl Diag {
    fn new(severity: &'static str, code: &str, message: impl Into<String>) -> Diag {
        Diag {
            severity,
            code: code.into(),
            message: message.into(),
            path: None,
            line: None,
            hint: None,
        }
    }
}

fn emit(d: &Diag) {
    println!("{}", serde_json::to_string(d).expect("diagnostics serialize"));
}

const WORK: &str = "/work";
const EXIT_REJECTED: u8 = 1;
const EXIT_INVALID_CONFIG: u8 = 2;
const EXIT_INTERNAL: u8 = 3;

fn main() -> ExitCode {
    let code = run();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if code != 0 {
        // Returning a non-zero `ExitCode` (or `std::process::exit(n)`) reaches the host only as "failed"
        // (`wasi:cli/exit.exit(err)`, seen as status 1). `exit-with-code` (WASI 0.2.12) carries the number.
        #[cfg(target_os = "wasi")]
        wasip2::cli::exit::exit_with_code(code);
    }
    ExitCode::from(code)
}

fn run() -> u8 {
    let mut raw = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut raw) {
        eprintln!("command-sample: reading stdin: {e}");
        return EXIT_INTERNAL;
    }
    let input: Input = match serde_json::from_str(&raw) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("command-sample: stdin is not the expected JSON: {e}");
            return EXIT_INTERNAL;
        }
    };
    if !(input.version == "0.1" || input.version.starts_with("0.1.")) {
        emit(&Diag::new(
            "error",
            "command-sample.version",
            format!("unsupported protocol version {:?}", input.version),
        ));
        return EXIT_REJECTED;
    }
    let config = if input.config.is_null() {
        serde_json::json!({})
    } else {
        input.config
    };
    let cfg: Config = match serde_json::from_value(config) {
        Ok(c) => c,
        Err(e) => {
            emit(&Diag::new("error", "config.invalid", format!("config: {e}")));
            return EXIT_INVALID_CONFIG;
        }
    };
    if cfg.header.contains('\n') || cfg.header.chars().count() > 200 {
        emit(&Diag::new(
            "error",
            "config.invalid",
            "config: header must be one line of at most 200 characters",
        ));
        return EXIT_INVALID_CONFIG;
    }
    if let Some(code) = cfg.exit_code {
        return code;
    }
    let artifact = input
        .context
        .get("artifact")
        .and_then(|a| a.as_str())
        .unwrap_or("?")
        .to_owned();

    let files = match walk_sorted(Path::new(WORK)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("command-sample: walking /work: {e}");
            return EXIT_INTERNAL;
        }
    };
    let txt: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    println!("command-sample: artifact {artifact}: {} .txt file(s)", txt.len());

    let mut edits = Vec::new();
    let mut rejected = false;
    for rel in &txt {
        let shown = display(rel);
        let text = match std::fs::read(Path::new(WORK).join(rel)) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                eprintln!("command-sample: reading {shown}: {e}");
                return EXIT_INTERNAL;
            }
        };
        for (i, line) in text.lines().enumerate() {
            for word in cfg.forbid.iter().filter(|w| !w.is_empty()) {
                if line.contains(word.as_str()) {
                    let mut d = Diag::new(
                        "error",
                        "command-sample.forbidden",
                        format!("forbidden word {word:?}"),
                    );
                    d.path = Some(shown.clone());
                    d.line = Some(i as u32 + 1);
                    d.hint = Some("remove the word or change config.forbid".into());
                    emit(&d);
                    rejected = true;
                }
            }
        }
        let first = text.split('\n').next().unwrap_or("");
        if first != cfg.header {
            edits.push((rel.clone(), format!("{}\n{text}", cfg.header)));
        }
    }
    if rejected {
        return EXIT_REJECTED;
    }
    for (rel, text) in &edits {
        if let Err(e) = std::fs::write(Path::new(WORK).join(rel), text) {
            eprintln!("command-sample: writing {}: {e}", display(rel));
            return EXIT_INTERNAL;
        }
        let mut d = Diag::new("info", "command-sample.header-added", "header added");
        d.path = Some(display(rel));
        d.line = Some(1);
        emit(&d);
    }
    0
}

/// Regular files under `root`, relative, sorted bytewise by component (the SDK's `walk_sorted`, inlined).
fn walk_sorted(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries = Vec::new();
        for e in std::fs::read_dir(root.join(rel))? {
            let e = e?;
            entries.push((e.file_name(), e.file_type()?));
        }
        entries.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
        for (name, kind) in entries {
            let p = rel.join(name);
            if kind.is_dir() {
                walk(root, &p, out)?;
            } else if kind.is_file() {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn display(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
