//! Fetching sources: local tarballs and HTTP(S) artifacts, unpacked with the confined extractor
//! (spec §4). Local directories are used in place and need nothing from here.
//!
//! Everything read from a tarball or a URL is untrusted: names are checked lexically, every write goes
//! through a `cap_std::fs::Dir` handle (so a bug in a check still cannot escape the destination), and
//! size/entry limits are enforced while streaming.

pub mod cache;
pub mod extract;
pub mod http;

use std::io;

pub use cache::{CachedSource, Lookup, SourceCache};
pub use extract::{ExtractMode, Limits, Unpacked, unpack, unpack_file};
pub use http::{HttpOptions, client, fetch};

/// Why a source could not be downloaded or unpacked. Only [`FetchError::is_transient`] errors are
/// worth retrying; everything else fails the same way on every attempt.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Empty, absolute, `..`, backslash, NUL, not UTF-8, or too long for a file system.
    #[error("invalid entry name '{0}'")]
    InvalidName(String),

    #[error("entry '{0}' is a symlink, which is not allowed")]
    Symlink(String),

    #[error("entry '{name}' passes through symlink '{link}'")]
    ThroughSymlink { name: String, link: String },

    /// `why` is `missing or later` or `non-regular`: a stream cannot tell missing from later.
    #[error("hard link '{name}' points to {why} entry '{target}'")]
    HardLink {
        name: String,
        target: String,
        why: &'static str,
    },

    #[error("entry '{name}' has unsupported file type ({kind})")]
    Unsupported { name: String, kind: String },

    /// A file where a directory is (or is needed), or the other way round.
    #[error("entry '{name}' conflicts with earlier {earlier} '{path}'")]
    Conflict {
        name: String,
        earlier: &'static str,
        path: String,
    },

    #[error("tarball is bigger than {limit} bytes when decompressed")]
    TooBig { limit: u64 },

    #[error("tarball has more than {limit} entries")]
    TooManyEntries { limit: u64 },

    /// Plain tar or anything else that is not gzip (says both phrases: it is also a failed extract).
    #[error("failed to extract tarball: requires gzip-compressed body")]
    NotGzip,

    /// Corrupt gzip or tar data; the detail is part of the message.
    #[error("failed to extract tarball: {0}")]
    Corrupt(String),

    #[error("digest mismatch: expected sha256:{expected}, got sha256:{actual}")]
    DigestMismatch { expected: String, actual: String },

    #[error("invalid sha256 digest '{0}'")]
    InvalidDigest(String),

    #[error("invalid URL '{url}'")]
    InvalidUrl {
        url: String,
        #[source]
        source: Option<reqwest::Error>,
    },

    /// Not a success status; `status` displays as `404 Not Found`.
    #[error("HTTP {status} from {url}")]
    Status {
        status: reqwest::StatusCode,
        url: String,
    },

    /// Connecting or sending the request failed.
    #[error("failed to download {url}")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The connection broke while the body was streaming (includes Content-Length not reached).
    #[error("download of {url} was interrupted")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// No response or no body bytes for the idle timeout.
    #[error("download of {url} timed out after {after:?} without data")]
    Timeout { url: String, after: std::time::Duration },

    /// The body ended early without a Content-Length to tell (the gzip stream was cut).
    #[error("download of {url} was truncated")]
    Truncated { url: String },

    /// The last error of a retried download.
    #[error("giving up after {attempts} attempts")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<FetchError>,
    },

    /// Reading the local tarball (not its content) failed.
    #[error("failed to read tarball")]
    Read(#[source] io::Error),

    /// Writing the unpacked tree failed (disk full, permissions, ...).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// True for failures that a later attempt may not hit: network errors, 5xx, timeouts, truncated
    /// bodies. Not 4xx, digest mismatches, unsafe or corrupt tarballs, or size limits.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => status.is_server_error(),
            FetchError::Network { .. }
            | FetchError::Body { .. }
            | FetchError::Timeout { .. }
            | FetchError::Truncated { .. } => true,
            FetchError::GaveUp { last, .. } => last.is_transient(),
            _ => false,
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        FetchError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Splits an `artgen build` URL source into the URL and its optional `#sha256:<64 hex>` pin (spec
/// §12.1). Any other fragment stays part of the URL (HTTP clients never send fragments).
pub fn split_pin(url: &str) -> Result<(&str, Option<&str>), FetchError> {
    match url.rsplit_once("#sha256:") {
        Some((base, hex)) => {
            parse_sha256(hex)?;
            Ok((base, Some(hex)))
        }
        None => Ok((url, None)),
    }
}

/// Parses `hex` or `sha256:hex` into lowercase hex, so pins can be compared with computed digests.
pub fn parse_sha256(digest: &str) -> Result<String, FetchError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(FetchError::InvalidDigest(digest.to_owned()))
    }
}

/// True for names the spec treats as tarballs: `*.tar.gz` or `*.tgz`, ASCII case-insensitive (§3.10).
pub fn is_tarball_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".tar.gz") || lower.ends_with(".tgz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_names() {
        let hex = "ab".repeat(32);
        let url = format!("http://h/x.tar.gz#sha256:{hex}");
        assert_eq!(
            split_pin(&url).unwrap(),
            ("http://h/x.tar.gz", Some(hex.as_str()))
        );
        assert_eq!(split_pin("http://h/x.tgz").unwrap(), ("http://h/x.tgz", None));
        assert!(matches!(
            split_pin("http://h/x.tgz#sha256:abc"),
            Err(FetchError::InvalidDigest(_))
        ));
        assert_eq!(parse_sha256(&format!("sha256:{}", "AB".repeat(32))).unwrap(), hex);
        assert!(parse_sha256("sha512:00").is_err());
        assert!(is_tarball_name("A.TGZ") && is_tarball_name("x.Tar.Gz") && !is_tarball_name("x.tar"));
    }

    #[test]
    fn transient_classification() {
        let status = |s: u16| FetchError::Status {
            status: reqwest::StatusCode::from_u16(s).unwrap(),
            url: "u".into(),
        };
        assert!(status(503).is_transient());
        assert!(!status(404).is_transient());
        assert_eq!(status(404).to_string(), "HTTP 404 Not Found from u");
        assert!(FetchError::Truncated { url: "u".into() }.is_transient());
        assert!(!FetchError::TooBig { limit: 1 }.is_transient());
        assert!(
            !FetchError::DigestMismatch {
                expected: "a".into(),
                actual: "b".into()
            }
            .is_transient()
        );
        let gave_up = FetchError::GaveUp {
            attempts: 3,
            last: Box::new(status(500)),
        };
        assert!(gave_up.is_transient());
    }
}
