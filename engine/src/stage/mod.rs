//! Staging: applies the copy operations of one artifact to a virtual tree (spec §3).

pub mod merge;
pub mod path_pattern;

/// Placeholder; owned by the staging work.
#[derive(Debug, thiserror::Error)]
#[error("copy failed")]
pub struct CopyError;
