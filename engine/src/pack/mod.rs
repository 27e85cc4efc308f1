//! Archive format v1 (spec §5.1): deterministic tar, pinned parallel deflate, sha256 digest (§5.2).
//!
//! [`ArchiveWriter`] turns a walk-ordered sequence of directories and files into the `.tar.gz` bytes and
//! their digest in one pass. The bytes depend only on the entries (names, contents, executable bits),
//! never on the thread count, timing or the machine.

pub mod digest;
pub mod gzip;
pub mod tar;

use std::cmp::Ordering;
use std::io::{self, BufWriter, Read, Write};

use self::digest::HashingWriter;
use self::gzip::GzEncoder;

/// Output buffer: large writes keep syscalls (and hashing calls) few.
const OUT_BUFFER: usize = 256 * 1024;

/// Tuning knobs that never affect the output bytes.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Deflate worker threads beside the caller's (which reads and checksums); clamped to
    /// `1..=`[`gzip::MAX_THREADS`]. Archives of one 256 KiB block start none.
    pub threads: usize,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Identity of a finished archive (spec §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// `sha256:<64 lowercase hex>` of the `.tar.gz` bytes.
    pub digest: String,
    /// Byte length of the `.tar.gz`.
    pub size: u64,
}

impl Packed {
    /// The 64 hex digits of the digest.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix(digest::PREFIX).unwrap_or(&self.digest)
    }

    /// Storage file name: `<first 16 hex digits>.tar.gz`.
    pub fn file_name(&self) -> String {
        let hex = self.hex();
        format!("{}.tar.gz", hex.get(..16).unwrap_or(hex))
    }

    /// Default revision: `latest@<digest>`.
    pub fn default_revision(&self) -> String {
        format!("latest@{}", self.digest)
    }
}

/// Streaming writer of a format-v1 archive. Entries must come in walk order (spec: depth-first pre-order,
/// siblings by name bytes) with each directory before its contents; out-of-order or duplicate paths are
/// rejected so a caller bug cannot silently produce a different archive for the same tree.
/// After any error the archive is incomplete and the writer should be dropped.
pub struct ArchiveWriter<W: Write> {
    gz: GzEncoder<BufWriter<HashingWriter<W>>>,
    /// Scratch for header bytes, reused across entries.
    header: Vec<u8>,
    /// Previous path, for the walk-order check.
    prev: String,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W, opts: &PackOptions) -> Self {
        let out = BufWriter::with_capacity(OUT_BUFFER, HashingWriter::new(out));
        ArchiveWriter {
            gz: GzEncoder::new(out, opts.threads),
            header: Vec::new(),
            prev: String::new(),
        }
    }

    /// Adds a directory entry. `path`: relative, '/'-separated, no trailing slash; the writer appends '/'.
    pub fn add_dir(&mut self, path: &str) -> io::Result<()> {
        self.check_path(path)?;
        let name = format!("{path}/");
        self.write_header(&name, tar::TYPE_DIR, tar::MODE_DIR, 0)
    }

    /// Adds a regular file, copying exactly `size` bytes from `content`. Fewer or more bytes mean the file
    /// changed while packing: an error, since the header already promised `size`. Error messages do not
    /// repeat `path` (callers annotate).
    pub fn add_file(
        &mut self,
        path: &str,
        size: u64,
        executable: bool,
        content: &mut dyn Read,
    ) -> io::Result<()> {
        self.check_path(path)?;
        let mode = if executable {
            tar::MODE_EXEC
        } else {
            tar::MODE_FILE
        };
        self.write_header(path, tar::TYPE_FILE, mode, size)?;
        let copied = self.gz.copy_from(content, size)?;
        if copied < size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("changed while packing: expected {size} bytes, got {copied}"),
            ));
        }
        if read_one(content)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("changed while packing: more than the expected {size} bytes"),
            ));
        }
        self.gz.write_all(&ZEROS[..tar::padding(size)])
    }

    /// Writes the end-of-archive marker and the gzip trailer, flushes, and returns the output writer with
    /// the archive's digest and size.
    pub fn finish(mut self) -> io::Result<(W, Packed)> {
        self.gz.write_all(&ZEROS[..2 * tar::BLOCK])?;
        let mut out = self
            .gz
            .finish()?
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        out.flush()?;
        let (w, digest, size) = out.finish();
        Ok((w, Packed { digest, size }))
    }

    fn write_header(&mut self, name: &str, typeflag: u8, mode: u32, size: u64) -> io::Result<()> {
        self.header.clear();
        tar::encode_headers(name, typeflag, mode, size, &mut self.header);
        self.gz.write_all(&self.header)
    }

    /// Rejects paths that are not clean relative paths or that break walk order.
    fn check_path(&mut self, path: &str) -> io::Result<()> {
        let clean = !path.is_empty()
            && !path.contains('\0')
            && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean {
            return Err(invalid(format!("invalid archive path {path:?}")));
        }
        if walk_order(&self.prev, path) != Ordering::Less {
            return Err(invalid(format!(
                "archive path {path:?} is not after {:?} in walk order",
                self.prev
            )));
        }
        self.prev.clear();
        self.prev.push_str(path);
        Ok(())
    }
}

/// Source of padding and end-of-archive zeros.
static ZEROS: [u8; 2 * tar::BLOCK] = [0; 2 * tar::BLOCK];

/// Walk order = component-wise bytewise comparison, i.e. bytewise with '/' ranked below every other byte.
fn walk_order(a: &str, b: &str) -> Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { u16::from(c) + 1 };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// True if `r` still has data (one byte is consumed and discarded).
fn read_one(r: &mut dyn Read) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests;
