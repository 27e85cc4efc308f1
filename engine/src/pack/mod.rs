//! Archive format v1 (spec §5.1): deterministic tar, pinned deflate, sha256 digest.

pub mod digest;
pub mod gzip;
pub mod tar;
