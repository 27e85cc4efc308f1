//! Artifact storage (spec §10): the on-disk layout under `--storage-path`, atomic writes, cheap
//! verification of stored files (§9.4 `ArtifactMissing` / `ArtifactCorrupted`), retention (§10.3) and
//! the advertised URL (§10.2).
//!
//! Every method is synchronous (cap-std is); async callers run them in `spawn_blocking`. [`Storage`] is
//! cheap to clone, so it can be moved into such a task.

mod fs;
mod gc;

pub use fs::Storage;

/// Directory below the storage root that holds ExternalArtifact files (kind lower-cased, §10.1).
pub const KIND_DIR: &str = "externalartifact";

/// Suffix of lock files: never served, never collected (§10.1).
pub const LOCK_SUFFIX: &str = ".lock";

/// Suffix of every artifact file (§5.2).
pub const ARTIFACT_SUFFIX: &str = ".tar.gz";

/// Prefix of in-progress writes. A leading dot keeps them out of the artifact name space, so neither
/// the server nor GC ever treats one as an artifact.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Where [`Storage::put`] placed an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Relative to the storage root: `externalartifact/<ns>/<name>/<file>`.
    pub path: String,
    /// `<advertised prefix>/<path>`.
    pub url: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
}

/// Outcome of [`Storage::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    Ok,
    /// Not a regular file in storage (absent, a directory, a symlink, …).
    Missing,
    /// Size or content differs from what was written; the file has been deleted.
    Corrupted,
}

/// Is `file` a name the storage may hold as an artifact: a plain `*.tar.gz` file name that is neither
/// hidden (temporary files) nor a lock? The artifact server applies the same rule.
pub fn is_artifact_file_name(file: &str) -> bool {
    file.len() > ARTIFACT_SUFFIX.len()
        && file.len() <= 255
        && file.ends_with(ARTIFACT_SUFFIX)
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The URL prefix artifacts are advertised under (§10.2), without a trailing slash.
///
/// `storage_adv_addr` wins when set; otherwise it is derived from `storage_addr`: an empty host becomes
/// `localhost`, `0.0.0.0` becomes `hostname` (`$HOSTNAME` or the OS hostname, chosen by the caller),
/// other hosts are kept. An address starting with `http://` or `https://` is the prefix verbatim.
pub fn advertised_url(storage_adv_addr: &str, storage_addr: &str, hostname: &str) -> String {
    let addr = if storage_adv_addr.is_empty() {
        derive_addr(storage_addr, hostname)
    } else {
        storage_adv_addr.to_string()
    };
    let prefix = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr
    } else {
        format!("http://{addr}")
    };
    prefix.trim_end_matches('/').to_string()
}

/// Upstream's `determineAdvStorageAddr`: only the host part is rewritten; an address without a port
/// is kept as it is.
fn derive_addr(storage_addr: &str, hostname: &str) -> String {
    let Some((host, port)) = storage_addr.rsplit_once(':') else {
        return storage_addr.to_string();
    };
    let host = match host {
        "" => "localhost",
        "0.0.0.0" if !hostname.is_empty() => hostname,
        "0.0.0.0" => "localhost",
        other => other,
    };
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests;
