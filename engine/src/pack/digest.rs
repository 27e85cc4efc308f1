//! SHA-256 helpers for artifact digests (spec §5.2: `sha256:<64 lowercase hex>` of the `.tar.gz` bytes).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// Algorithm prefix of every digest string.
pub const PREFIX: &str = "sha256:";

/// Formats a raw SHA-256 as `sha256:<64 lowercase hex>`.
pub fn format_sha256(hash: &[u8; 32]) -> String {
    let mut s = String::with_capacity(PREFIX.len() + 64);
    s.push_str(PREFIX);
    s.push_str(&hex::encode(hash));
    s
}

/// Parses `sha256:<hex>` or bare hex (the form sources may publish, spec §4) into the raw hash.
/// Returns `None` for other algorithms or malformed hex.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix(PREFIX).unwrap_or(s);
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// Digest of an in-memory byte string.
pub fn sha256_bytes(data: &[u8]) -> String {
    format_sha256(&Sha256::digest(data).into())
}

/// Digest and byte length of everything `r` yields.
pub fn sha256_reader(r: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut w = HashingWriter::new(io::sink());
    io::copy(r, &mut w)?;
    let (_, digest, size) = w.finish();
    Ok((digest, size))
}

/// Digest and byte length of a file (e.g. to verify a stored artifact).
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(&mut File::open(path)?)
}

/// A `Write` adapter that hashes and counts exactly the bytes the inner writer accepted, so the digest
/// and size of an artifact come for free while it is written.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes passed through so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the inner writer, the `sha256:` digest and the byte count. Does not flush.
    pub fn finish(self) -> (W, String, u64) {
        let hash: [u8; 32] = self.hasher.finalize().into();
        (self.inner, format_sha256(&hash), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn known_answers() {
        assert_eq!(sha256_bytes(b""), EMPTY);
        assert_eq!(sha256_bytes(b"abc"), ABC);
        assert_eq!(sha256_reader(&mut &b"abc"[..]).unwrap(), (ABC.to_string(), 3));
    }

    #[test]
    fn hashing_writer_passes_bytes_through() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        assert_eq!(w.bytes_written(), 3);
        let (inner, digest, size) = w.finish();
        assert_eq!((inner.as_slice(), digest.as_str(), size), (&b"abc"[..], ABC, 3));
    }

    #[test]
    fn parse_forms() {
        let raw = parse_sha256(ABC).unwrap();
        assert_eq!(format_sha256(&raw), ABC);
        assert_eq!(parse_sha256(&ABC[PREFIX.len()..]), Some(raw));
        assert_eq!(parse_sha256("sha512:abcd"), None);
        assert_eq!(parse_sha256(&ABC[..70]), None);
        assert_eq!(parse_sha256(""), None);
    }

    #[test]
    fn file_digest() {
        let dir = std::env::temp_dir().join(format!("artgen-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), (ABC.to_string(), 3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
