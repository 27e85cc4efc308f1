//! The engine's error type. Variants carry context; their message never repeats their source, so the
//! chain is printed once, at the edge, by [`chain`].

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a failure should be retried (architecture §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The spec itself is wrong: Stalled, no retry until the spec changes.
    Terminal,
    /// A source is missing, not ready or cannot be downloaded: dependency requeue.
    Dependency,
    /// Building failed for these inputs: error backoff.
    Build,
    /// I/O, network, storage: error backoff.
    Transient,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Admission or controller-side validation (spec §2.6, §2.7). `field` is a JSON path such as
    /// `spec.artifacts[0].copy[1].to`.
    #[error("{field}: {message}")]
    Invalid {
        field: String,
        message: String,
        reason: &'static str,
    },

    /// pathPattern errors (spec §6 step 9): terminal, reason BuildFailed.
    #[error("failed to expand path pattern: {message}")]
    PathPattern { message: String },

    /// A source could not be read, downloaded or unpacked.
    #[error("source '{alias}'")]
    Source {
        alias: String,
        #[source]
        source: Box<crate::fetch::FetchError>,
    },

    /// A copy operation failed (spec §3.1: names the artifact, the index and from/to).
    #[error("artifact \"{artifact}\" copy[{index}] from '{from}' to '{to}'")]
    Copy {
        artifact: String,
        index: usize,
        from: String,
        to: String,
        #[source]
        source: Box<crate::stage::CopyError>,
    },

    /// The spec asks for transforms, which this build cannot run yet.
    #[error("artifact \"{artifact}\": transforms are not supported by this build")]
    TransformsUnsupported { artifact: String },

    /// A transform failed or was refused (design/plugins.md §8); the reason is per failure.
    #[error(transparent)]
    Transform(Box<crate::transform::TransformError>),

    /// Archiving or writing an artifact failed.
    #[error("artifact \"{artifact}\": {what}")]
    Pack {
        artifact: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
            reason: "ValidationFailed",
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } | Error::PathPattern { .. } | Error::TransformsUnsupported { .. } => {
                ErrorKind::Terminal
            }
            Error::Source { source, .. } if source.is_transient() => ErrorKind::Dependency,
            Error::Transform(e) => e.reason.kind(),
            Error::Source { .. } | Error::Copy { .. } => ErrorKind::Build,
            Error::Pack { .. } | Error::Io { .. } => ErrorKind::Transient,
        }
    }

    /// Stable PascalCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid { reason, .. } => reason,
            Error::Source { .. } => "SourceFetchFailed",
            Error::PathPattern { .. } | Error::Copy { .. } | Error::Pack { .. } | Error::Io { .. } => {
                "BuildFailed"
            }
            Error::TransformsUnsupported { .. } => "ValidationFailed",
            Error::Transform(e) => e.reason.as_str(),
        }
    }
}

/// Renders an error and all its sources as one line: `outer: inner: innermost`.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        // Some library errors (io::Error wrapping a custom error) repeat their source verbatim.
        if !msg.is_empty() && !out.ends_with(&msg) {
            let _ = write!(out, ": {msg}");
        }
        cur = e.source();
    }
    out
}
