//! Fetching sources: local directories, local tarballs and HTTP(S) artifacts, unpacked with the
//! confined extractor.

pub mod extract;
pub mod http;

/// Placeholder; owned by the fetch work.
#[derive(Debug, thiserror::Error)]
#[error("fetch failed")]
pub struct FetchError;

impl FetchError {
    pub fn is_transient(&self) -> bool {
        false
    }
}
