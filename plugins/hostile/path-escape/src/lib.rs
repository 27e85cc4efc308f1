//! Hostile plugin `path-escape` (design §11): tries to reach outside `/work` and to change a read-only source.
//!
//! Each attempt is reported as a diagnostic with code `path-escape.<attempt>`: `info` when the sandbox refused it
//! (the message has the error), `error` when an escape succeeded (any error ⇒ `rejected`). A symlink that the
//! sandbox lets the guest create inside `/work` is reported as `info` and left in place, so that the host's
//! post-run scan answers `TransformOutputInvalid`. Under wasmtime 48, `/work/x → /etc` (absolute target) is
//! refused inside the guest, while the relative `/work/up → ../../../../../../etc` and `/work/inside →
//! inside-target` are created (reading through `up` still fails).
//!
//! Config: `{"attempts": [...], "source": "app"}`; by default every attempt, in this order: `read-parent`
//! (`../../etc/passwd`), `read-absolute` (`/etc/passwd`), `read-work-parent` (`/work/../etc/passwd`), `list-root`
//! (`/`), `write-source-new` (`/sources/<source>/pwned.txt`), `write-source-existing` (append to the first file of
//! the source), `remove-source` (remove it), `hardlink-source` (`/work/hardlink` → that file), `symlink-etc`
//! (`/work/x` → `/etc`), `read-via-symlink` (`/work/x/passwd`), `symlink-relative-escape` (`/work/up` →
//! `../../../../../../etc`, then read `/work/up/passwd`), `symlink-inside` (`/work/inside` → `inside-target`).

use std::io::Write;
use std::path::{Path, PathBuf};

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginInfo, Success, finish, walk_sorted};
use serde::Deserialize;

pub const ATTEMPTS: [&str; 12] = [
    "read-parent",
    "read-absolute",
    "read-work-parent",
    "list-root",
    "write-source-new",
    "write-source-existing",
    "remove-source",
    "hardlink-source",
    "symlink-etc",
    "read-via-symlink",
    "symlink-relative-escape",
    "symlink-inside",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    attempts: Option<Vec<String>>,
    #[serde(default = "default_source")]
    source: String,
}

fn default_source() -> String {
    "app".into()
}

const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,
"properties":{"attempts":{"type":"array","items":{"enum":["read-parent","read-absolute","read-work-parent","list-root",
"write-source-new","write-source-existing","remove-source","hardlink-source","symlink-etc","read-via-symlink",
"symlink-relative-escape","symlink-inside"]}},
"source":{"type":"string","minLength":1}}}"#;

enum Outcome {
    Denied(String),
    Escaped(String),
    /// Allowed inside /work; the host must catch it afterwards.
    Contained(String),
}

fn first_source_file(src: &Path) -> std::io::Result<PathBuf> {
    walk_sorted(src)?
        .into_iter()
        .next()
        .map(|p| src.join(p))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the source has no file"))
}

fn attempt(name: &str, src: &Path) -> Outcome {
    let r: std::io::Result<String> = match name {
        "read-parent" => std::fs::read("../../etc/passwd").map(|b| format!("read {} bytes", b.len())),
        "read-absolute" => std::fs::read("/etc/passwd").map(|b| format!("read {} bytes", b.len())),
        "read-work-parent" => std::fs::read("/work/../etc/passwd").map(|b| format!("read {} bytes", b.len())),
        "list-root" => std::fs::read_dir("/").map(|d| format!("listed {} entries", d.count())),
        "write-source-new" => {
            std::fs::write(src.join("pwned.txt"), "pwned").map(|()| "created pwned.txt".into())
        }
        "write-source-existing" => first_source_file(src).and_then(|f| {
            let mut file = std::fs::OpenOptions::new().append(true).open(&f)?;
            file.write_all(b"pwned")?;
            Ok(format!("appended to {}", f.display()))
        }),
        "remove-source" => first_source_file(src)
            .and_then(|f| std::fs::remove_file(&f).map(|()| format!("removed {}", f.display()))),
        "hardlink-source" => first_source_file(src).and_then(|f| {
            std::fs::hard_link(&f, "/work/hardlink")
                .map(|()| format!("linked /work/hardlink to {}", f.display()))
        }),
        "symlink-etc" => {
            return match symlink("/etc", "/work/x") {
                Ok(()) => Outcome::Contained("created symlink /work/x -> /etc".into()),
                Err(e) => Outcome::Denied(e.to_string()),
            };
        }
        "read-via-symlink" => std::fs::read("/work/x/passwd").map(|b| format!("read {} bytes", b.len())),
        "symlink-relative-escape" => {
            if let Err(e) = symlink("../../../../../../etc", "/work/up") {
                return Outcome::Denied(e.to_string());
            }
            // Created inside /work; following it must still fail.
            return match std::fs::read("/work/up/passwd") {
                Ok(b) => Outcome::Escaped(format!("read {} bytes through /work/up", b.len())),
                Err(e) => Outcome::Contained(format!(
                    "created symlink /work/up -> ../../../../../../etc; reading through it: {e}"
                )),
            };
        }
        "symlink-inside" => {
            return match symlink("inside-target", "/work/inside") {
                Ok(()) => Outcome::Contained("created symlink /work/inside -> inside-target".into()),
                Err(e) => Outcome::Denied(e.to_string()),
            };
        }
        _ => return Outcome::Denied("unknown attempt".into()),
    };
    match r {
        Ok(what) => Outcome::Escaped(what),
        Err(e) => Outcome::Denied(e.to_string()),
    }
}

/// `std::os::wasi::fs::symlink_path` is unstable; call wasi-libc's POSIX `symlink`, which resolves `link`
/// against the preopens exactly like std does.
#[cfg(target_os = "wasi")]
#[allow(unsafe_code)]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::ffi::{CString, c_char, c_int};
    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let t = CString::new(target).map_err(std::io::Error::other)?;
    let l = CString::new(link).map_err(std::io::Error::other)?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; wasi-libc's `symlink`
    // only reads them.
    if unsafe { symlink(t.as_ptr(), l.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(unix)]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: tries to escape /work.",
            Some(SCHEMA),
        )
    }

    fn validate_config(config: String) -> Vec<Diagnostic> {
        match artgen_plugin_sdk::parse_config_diagnostics::<Config>(&config) {
            Err(d) => d,
            Ok(cfg) => cfg
                .attempts
                .unwrap_or_default()
                .iter()
                .filter(|a| !ATTEMPTS.contains(&a.as_str()))
                .map(|a| Diagnostic::error("config.invalid", format!("unknown attempt {a:?}")))
                .collect(),
        }
    }

    fn transform(config: String, _ctx: Context) -> Result<Success, Failure> {
        let cfg: Config = artgen_plugin_sdk::parse_config(&config)?;
        let src = PathBuf::from(format!("/sources/{}", cfg.source));
        let attempts: Vec<String> = cfg
            .attempts
            .unwrap_or_else(|| ATTEMPTS.iter().map(|s| s.to_string()).collect());
        let mut diags = Vec::new();
        for name in &attempts {
            let code = format!("path-escape.{name}");
            diags.push(match attempt(name, &src) {
                Outcome::Denied(e) => Diagnostic::info(code, format!("denied: {e}")),
                Outcome::Contained(what) => Diagnostic::info(code, what),
                Outcome::Escaped(what) => Diagnostic::error(code, format!("ESCAPED: {what}")),
            });
        }
        finish(diags)
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
