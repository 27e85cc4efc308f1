//! What a transform run reports (design/plugins.md §2 status, §8 reasons): per-transform reports, the
//! failure reasons with their retry class, diagnostics, and the sanitising every plugin string goes through.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::error::ErrorKind;

/// Failure reasons of design/plugins.md §8, as set on the Ready condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Reason {
    PluginsDisabled,
    PluginNotAllowed,
    PluginConfigInvalid,
    PluginIncompatible,
    PluginNotFound,
    PluginDigestMismatch,
    TransformFailed,
    TransformOutOfFuel,
    TransformMemoryLimit,
    TransformTrapped,
    TransformOutputInvalid,
    TransformTimeout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PluginsDisabled => "PluginsDisabled",
            Reason::PluginNotAllowed => "PluginNotAllowed",
            Reason::PluginConfigInvalid => "PluginConfigInvalid",
            Reason::PluginIncompatible => "PluginIncompatible",
            Reason::PluginNotFound => "PluginNotFound",
            Reason::PluginDigestMismatch => "PluginDigestMismatch",
            Reason::TransformFailed => "TransformFailed",
            Reason::TransformOutOfFuel => "TransformOutOfFuel",
            Reason::TransformMemoryLimit => "TransformMemoryLimit",
            Reason::TransformTrapped => "TransformTrapped",
            Reason::TransformOutputInvalid => "TransformOutputInvalid",
            Reason::TransformTimeout => "TransformTimeout",
        }
    }

    /// Retry class (§8): spec/policy errors are terminal, plugin behaviour is a build failure (deterministic
    /// for the same inputs), a timeout is transient.
    pub fn kind(self) -> ErrorKind {
        match self {
            Reason::PluginsDisabled
            | Reason::PluginNotAllowed
            | Reason::PluginConfigInvalid
            | Reason::PluginIncompatible => ErrorKind::Terminal,
            Reason::PluginNotFound
            | Reason::PluginDigestMismatch
            | Reason::TransformFailed
            | Reason::TransformOutOfFuel
            | Reason::TransformMemoryLimit
            | Reason::TransformTrapped
            | Reason::TransformOutputInvalid => ErrorKind::Build,
            Reason::TransformTimeout => ErrorKind::Transient,
        }
    }

    /// Whether the result may be memoised per build-input hash (§8): everything but a timeout.
    pub fn is_deterministic(self) -> bool {
        self != Reason::TransformTimeout
    }

    /// `failurePolicy: Ignore` covers build and transient failures only.
    pub fn ignorable(self) -> bool {
        self.kind() != ErrorKind::Terminal
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A diagnostic from a plugin or from the host (codes `artgen.*`). Every string is sanitised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: String,
    pub message: String,
    /// Relative to the artifact root (`/work`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `2 errors; first: secrets.aws-access-key-id deploy/app.yaml:12: …` (or the first diagnostic), for a
/// one-line failure detail.
pub(crate) fn first_errors(d: &[Diagnostic]) -> String {
    let errors: Vec<&Diagnostic> = d.iter().filter(|d| d.severity == Severity::Error).collect();
    match (errors.first(), d.first()) {
        (Some(e), _) if errors.len() == 1 => sanitize(&e.render(), 300),
        (Some(e), _) => format!("{} errors; first: {}", errors.len(), sanitize(&e.render(), 300)),
        (None, Some(x)) => sanitize(&x.render(), 300),
        (None, None) => "no diagnostics".into(),
    }
}

/// Caps on what a plugin can make the host keep (§7 "Diagnostics").
pub const MAX_DIAGNOSTICS: usize = 1000;
const MAX_CODE: usize = 128;
const MAX_MESSAGE: usize = 1024;
const MAX_PATH: usize = 4096;

impl Diagnostic {
    /// A host diagnostic (code `artgen.*`).
    pub fn host(severity: Severity, code: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            code: code.to_owned(),
            message: message.into(),
            path: None,
            line: None,
            column: None,
            hint: None,
        }
    }

    /// Builds a sanitised diagnostic from untrusted plugin strings.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_plugin(
        severity: Severity,
        code: &str,
        message: &str,
        path: Option<&str>,
        line: Option<u32>,
        column: Option<u32>,
        hint: Option<&str>,
    ) -> Self {
        let code = sanitize(code, MAX_CODE);
        Diagnostic {
            severity,
            code: if code.is_empty() { "plugin".into() } else { code },
            message: sanitize(message, MAX_MESSAGE),
            path: path.map(|p| sanitize(p.trim_start_matches("/work/"), MAX_PATH)),
            line,
            column,
            hint: hint.map(|h| sanitize(h, MAX_MESSAGE)),
        }
    }

    /// `error images.unmatched deploy/app.yaml:12: message`.
    pub fn render(&self) -> String {
        let mut s = format!("{} {}", self.severity.as_str(), self.code);
        if let Some(p) = &self.path {
            s.push(' ');
            s.push_str(p);
            if let Some(l) = self.line {
                s.push_str(&format!(":{l}"));
                if let Some(c) = self.column {
                    s.push_str(&format!(":{c}"));
                }
            }
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }
}

/// Removes control characters (a newline or tab becomes a space) and caps the length in characters,
/// marking a cut with `…`.
pub fn sanitize(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    let mut n = 0;
    for c in s.chars() {
        let c = match c {
            '\n' | '\t' | '\r' => ' ',
            c if c.is_control() => continue,
            // Bidi overrides can disguise text in terminals and UIs.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => continue,
            c => c,
        };
        if n == max_chars {
            out.pop();
            out.push('…');
            return out;
        }
        out.push(c);
        n += 1;
    }
    out
}

/// Keeps at most [`MAX_DIAGNOSTICS`], recording the cut as a host warning.
pub(crate) fn cap_diagnostics(mut d: Vec<Diagnostic>) -> Vec<Diagnostic> {
    if d.len() > MAX_DIAGNOSTICS {
        let dropped = d.len() - (MAX_DIAGNOSTICS - 1);
        d.truncate(MAX_DIAGNOSTICS - 1);
        d.push(Diagnostic::host(
            Severity::Warning,
            "artgen.diagnostics-truncated",
            format!("{dropped} more diagnostics were dropped"),
        ));
    }
    d
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TransformResult {
    Succeeded,
    Failed,
    /// Failed under `failurePolicy: Ignore`: its changes were discarded and the build went on.
    Ignored,
}

/// How the plugin was driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Exports `artgen:transform/transformer@0.1.x`.
    Typed,
    /// Exports `wasi:cli/run@0.2.x` only.
    Command,
}

/// `describe()` of a typed plugin (sanitised).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<String>,
}

/// One transform's status entry (design/plugins.md §2) plus what the CLI and logs show.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformReport {
    pub artifact: String,
    pub name: String,
    /// The digest of the bytes that ran (the pin, or with `allow_any` the actual digest).
    pub plugin_digest: String,
    pub result: TransformResult,
    /// Empty on success.
    #[serde(serialize_with = "reason_str")]
    pub reason: Option<Reason>,
    /// The one-line failure message (as in the error), empty on success.
    pub message: String,
    pub fuel_used: u64,
    pub peak_memory_bytes: u64,
    #[serde(rename = "durationMillis", serialize_with = "millis")]
    pub duration: Duration,
    /// Of `duration`: instantiating the component in its fresh store (for benchmarks and metrics).
    #[serde(skip)]
    pub instantiate_time: Duration,
    pub diagnostics: Vec<Diagnostic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginInfo>,
    /// Captured stdout (command mode: the lines that were not diagnostics), at most 64 KiB, lossy UTF-8.
    #[serde(skip)]
    pub stdout: String,
    /// Captured stderr, at most 64 KiB, lossy UTF-8.
    #[serde(skip)]
    pub stderr: String,
}

fn reason_str<S: serde::Serializer>(r: &Option<Reason>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.map(Reason::as_str).unwrap_or(""))
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A failed transform: the error behind [`crate::Error::Transform`].
///
/// Displays as `"<artifact>: transform <name> (sha256:6f1c…): ran out of fuel (20G)"`.
#[derive(Clone, Debug)]
pub struct TransformError {
    pub artifact: String,
    pub transform: String,
    /// The pinned digest (or the actual one under `allow_any`).
    pub digest: String,
    pub reason: Reason,
    /// What went wrong, without the `<artifact>: transform <name> (…)` prefix.
    pub detail: String,
    /// Diagnostics of the failing transform (errors first).
    pub diagnostics: Vec<Diagnostic>,
    /// Reports of every transform that ran or was refused, in order, the failing one last.
    pub reports: Vec<TransformReport>,
}

/// `sha256:6f1c5d0e9a2b…`: the digest shortened for messages.
pub fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    if hex.len() > 12 {
        format!("sha256:{}…", &hex[..12])
    } else {
        format!("sha256:{hex}")
    }
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: transform {} ({}): {}",
            self.artifact,
            self.transform,
            short_digest(&self.digest),
            self.detail
        )
    }
}

impl std::error::Error for TransformError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_controls_and_caps() {
        assert_eq!(sanitize("a\u{1b}[31mb\nc", 100), "a[31mb c");
        assert_eq!(sanitize("abcdef", 4), "abc…");
        assert_eq!(sanitize("abcd", 4), "abcd");
        assert_eq!(sanitize("x\u{202e}y", 4), "xy");
    }

    #[test]
    fn message_format() {
        let e = TransformError {
            artifact: "my-app".into(),
            transform: "set-images".into(),
            digest: format!("sha256:{}", "6f1c".repeat(16)),
            reason: Reason::TransformOutOfFuel,
            detail: "ran out of fuel (20G)".into(),
            diagnostics: vec![],
            reports: vec![],
        };
        assert_eq!(
            e.to_string(),
            "my-app: transform set-images (sha256:6f1c6f1c6f1c…): ran out of fuel (20G)"
        );
    }

    #[test]
    fn classes() {
        assert_eq!(Reason::PluginNotAllowed.kind(), ErrorKind::Terminal);
        assert_eq!(Reason::TransformOutOfFuel.kind(), ErrorKind::Build);
        assert_eq!(Reason::TransformTimeout.kind(), ErrorKind::Transient);
        assert!(!Reason::TransformTimeout.is_deterministic());
        assert!(!Reason::PluginConfigInvalid.ignorable());
    }
}
