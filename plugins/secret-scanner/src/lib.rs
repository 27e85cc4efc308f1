//! `secret-scanner`: a gate that rejects the artifact when `/work` contains credentials (design §11).
//!
//! Rules (each hit ⇒ one error diagnostic with path, line and column; any hit ⇒ `rejected`):
//!
//! | code | matches |
//! |---|---|
//! | `secrets.aws-access-key-id` | `AKIA` + 16 of `[0-9A-Z]`, as a whole word |
//! | `secrets.private-key` | a PEM private key header: `-----BEGIN [<TYPE> ]PRIVATE KEY-----` (RSA, EC, OPENSSH, ENCRYPTED, PGP … BLOCK) |
//! | `secrets.github-token` | `gh[pousr]_` + 36 alphanumerics, as a whole word |
//! | `secrets.high-entropy` | only with `highEntropy: true`: a run of ≥ 32 base64/base64url characters with Shannon entropy ≥ 4.5 bits per character (hex digests stay below 4) |
//!
//! Config: `{"allow": ["testdata/**", "*.md"], "highEntropy": false}`; files matching an `allow` glob
//! (see `artgen_plugin_sdk::glob`) are not scanned. Messages never contain the secret itself.

use std::path::Path;

use artgen_plugin_sdk::fs::walk_sorted;
use artgen_plugin_sdk::glob::any_matches;
use artgen_plugin_sdk::{
    Context, Diagnostic, Failure, Guest, PluginConfig, PluginInfo, Success, WORK, display_path, finish,
    line_col,
};
use regex::bytes::Regex;
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "allow": {"type": "array", "items": {"type": "string", "minLength": 1},
              "description": "globs of paths (relative to the artifact root) that are not scanned"},
    "highEntropy": {"type": "boolean", "description": "also flag long high-entropy base64 strings"}
  }
}"#;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub high_entropy: bool,
}

impl PluginConfig for Config {
    fn check(&self) -> Vec<Diagnostic> {
        self.allow
            .iter()
            .enumerate()
            .filter(|(_, g)| g.is_empty())
            .map(|(i, _)| Diagnostic::error("config.invalid", format!("allow[{i}]: empty glob")))
            .collect()
    }
}

/// One secret found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

pub struct Scanner {
    aws: Regex,
    pem: Regex,
    github: Regex,
    entropy: Option<Regex>,
}

pub const MIN_ENTROPY_LEN: usize = 32;
pub const ENTROPY_BITS: f64 = 4.5;

impl Scanner {
    pub fn new(high_entropy: bool) -> Scanner {
        let re = |p: &str| Regex::new(p).expect("valid rule regex");
        Scanner {
            aws: re(r"(?-u)\bAKIA[0-9A-Z]{16}\b"),
            pem: re(r"(?-u)-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
            github: re(r"(?-u)\bgh[pousr]_[A-Za-z0-9]{36}\b"),
            entropy: high_entropy.then(|| re(r"(?-u)[A-Za-z0-9+/_=-]{32,}")),
        }
    }

    /// Findings in one file's bytes, in order of position (then rule).
    pub fn scan(&self, text: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut push = |rule: &'static str, start: usize, message: String| {
            let (line, column) = line_col(text, start);
            out.push(Finding {
                rule,
                line,
                column,
                message,
            });
        };
        for m in self.aws.find_iter(text) {
            push(
                "aws-access-key-id",
                m.start(),
                "possible AWS access key id (AKIA…, 20 characters)".into(),
            );
        }
        for m in self.pem.find_iter(text) {
            push(
                "private-key",
                m.start(),
                format!("PEM private key ({})", String::from_utf8_lossy(m.as_bytes())),
            );
        }
        for m in self.github.find_iter(text) {
            let prefix = String::from_utf8_lossy(&m.as_bytes()[..4]).into_owned();
            push(
                "github-token",
                m.start(),
                format!("possible GitHub token ({prefix}…, 40 characters)"),
            );
        }
        if let Some(re) = &self.entropy {
            for m in re.find_iter(text) {
                let bits = shannon_entropy(m.as_bytes());
                if bits >= ENTROPY_BITS {
                    let msg = format!(
                        "high-entropy string ({} characters, {bits:.2} bits/character)",
                        m.len()
                    );
                    push("high-entropy", m.start(), msg);
                }
            }
        }
        out.sort_by(|a, b| (a.line, a.column, a.rule).cmp(&(b.line, b.column, b.rule)));
        out
    }
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

pub fn run(work: &Path, cfg: &Config) -> Result<Vec<Diagnostic>, Failure> {
    let scanner = Scanner::new(cfg.high_entropy);
    let files = walk_sorted(work).map_err(|e| Failure::internal(format!("walking /work: {e}")))?;
    let mut diags = Vec::new();
    let (mut scanned, mut allowed) = (0usize, 0usize);
    for rel in &files {
        let shown = display_path(rel);
        if any_matches(&cfg.allow, &shown) {
            allowed += 1;
            continue;
        }
        scanned += 1;
        let bytes =
            std::fs::read(work.join(rel)).map_err(|e| Failure::internal(format!("reading {shown}: {e}")))?;
        for f in scanner.scan(&bytes) {
            diags.push(
                Diagnostic::error(format!("secrets.{}", f.rule), f.message)
                    .at(shown.clone(), f.line)
                    .with_column(f.column)
                    .with_hint("remove the secret (and rotate it); if this is a false positive, add the path to config.allow"),
            );
        }
    }
    diags.push(Diagnostic::info(
        "secrets.scanned",
        format!("scanned {scanned} file(s), skipped {allowed} allowed file(s)"),
    ));
    Ok(diags)
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Rejects the artifact if it contains AWS access key ids, PEM private keys or GitHub tokens.",
            Some(SCHEMA),
        )
    }

    fn validate_config(config: String) -> Vec<Diagnostic> {
        artgen_plugin_sdk::validate_config::<Config>(&config)
    }

    fn transform(config: String, _ctx: Context) -> Result<Success, Failure> {
        let (cfg, mut diags) = artgen_plugin_sdk::load_config::<Config>(&config)?;
        diags.extend(run(Path::new(WORK), &cfg)?);
        finish(diags)
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);

#[cfg(test)]
mod tests {
    use super::*;

    // Split so that this source file does not itself look like it holds secrets.
    fn aws() -> String {
        format!("AKIA{}", "IOSFODNN7EXAMPLE")
    }
    fn gh() -> String {
        format!("ghp_{}", "a".repeat(18) + &"B".repeat(18))
    }

    #[test]
    fn rules() {
        let s = Scanner::new(false);
        let text = format!(
            "ok\nkey: {}\n  token={} x\n-----BEGIN RSA PRIVATE KEY-----\n-----BEGIN PRIVATE KEY-----\n",
            aws(),
            gh()
        );
        let f = s.scan(text.as_bytes());
        let got: Vec<_> = f.iter().map(|f| (f.rule, f.line, f.column)).collect();
        assert_eq!(
            got,
            [
                ("aws-access-key-id", 2, 6),
                ("github-token", 3, 9),
                ("private-key", 4, 1),
                ("private-key", 5, 1)
            ]
        );
        assert!(
            f.iter()
                .all(|f| !f.message.contains("IOSFODNN7EXAMPLE") && !f.message.contains("aaaa"))
        );
        for benign in [
            format!("X{}", aws()),             // not a word boundary
            "AKIA123".to_owned(),              // too short
            format!("gha_{}", "a".repeat(36)), // unknown prefix
            "-----BEGIN PUBLIC KEY-----".to_owned(),
            "-----BEGIN CERTIFICATE-----".to_owned(),
        ] {
            assert!(s.scan(benign.as_bytes()).is_empty(), "{benign}");
        }
        assert_eq!(s.scan(b"\xff\xfe binary ").len(), 0);
    }

    #[test]
    fn entropy() {
        let digest = "24a0c4b4a4c0eb97a1aabb8e29f18e917d05abfe1b7a7c07857230879ce7d3d3";
        let random = "q8Zr3JkT0vXwLpN5aYbC7eHdF2gMi9sU+/Wo1Rt4Kz6Vn=";
        let off = Scanner::new(false);
        let on = Scanner::new(true);
        assert!(off.scan(random.as_bytes()).is_empty());
        assert_eq!(on.scan(random.as_bytes())[0].rule, "high-entropy");
        assert!(
            on.scan(digest.as_bytes()).is_empty(),
            "hex digests stay under the threshold"
        );
        assert!(on.scan("a".repeat(64).as_bytes()).is_empty());
        assert!(shannon_entropy(b"abcd") == 2.0);
    }

    #[test]
    fn tree_with_allow() {
        let d = std::env::temp_dir().join(format!("artgen-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("testdata")).unwrap();
        std::fs::write(d.join("clean.yaml"), "a: b\n").unwrap();
        std::fs::write(d.join("testdata/key.txt"), aws()).unwrap();
        std::fs::write(d.join("app.env"), format!("\n\nTOKEN={}\n", gh())).unwrap();
        let cfg: Config = artgen_plugin_sdk::parse_config(r#"{"allow":["testdata/**"]}"#).unwrap();
        let diags = run(&d, &cfg).unwrap();
        let errors: Vec<_> = diags
            .iter()
            .filter(|x| x.is_error())
            .map(|x| {
                let l = x.location.as_ref().unwrap();
                (x.code.as_str(), l.path.as_str(), l.line)
            })
            .collect();
        assert_eq!(errors, [("secrets.github-token", "app.env", Some(3))]);
        assert!(matches!(finish(diags), Err(Failure::Rejected(_))));
        std::fs::remove_file(d.join("app.env")).unwrap();
        assert!(finish(run(&d, &cfg).unwrap()).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
