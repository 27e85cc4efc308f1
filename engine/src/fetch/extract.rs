//! Streaming, confined tarball unpacker (spec §4, both columns).
//!
//! The tar stream is parsed here rather than with `tar::Archive`, because that reads PAX and GNU
//! long-name headers of any declared size into memory (a few KiB of gzip could demand gigabytes);
//! `tar::Header` is still used to decode header fields. One pass: input → sha256 → gunzip → untar →
//! files. Every limit is checked before the bytes it covers are written, and every write goes through
//! the destination's `cap_std::fs::Dir`, so even a wrong name check cannot escape it.

use std::collections::HashMap;
use std::fs::Permissions;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::mpsc;

use cap_std::fs::{Dir, OpenOptions};
use flate2::bufread::GzDecoder;
use sha2::{Digest as _, Sha256};

use super::FetchError;

const BLOCK: usize = 512;
/// Largest PAX (`x`) or GNU long name/link (`L`/`K`) header kept in memory.
const META_MAX: u64 = 1 << 20;
/// Longest path and path component that Linux file systems accept.
const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;
/// Allowance of non-file bytes (headers, metadata, padding) per entry; bounds inflate work only.
const OVERHEAD_PER_ENTRY: u64 = 8 << 10;
const INPUT_BUF: usize = 256 << 10;
/// Prefix of the corruption detail for a gzip stream that ended early (a cut download).
pub(crate) const GZIP_EOF: &str = "unexpected end of gzip data";

/// The two columns of spec §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtractMode {
    /// Fetched sources and CLI tarball/URL sources: symlinks are kept for the copy stage (§3.11).
    Source,
    /// The Extract copy strategy: symlinks are rejected.
    Extract,
}

/// Per-tarball limits (`--source-max-size` / `--extract-max-size`, `--tarball-max-entries`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sum of regular-file bytes, declared or actual (hard-link copies included).
    pub max_bytes: u64,
    /// Entries other than metadata headers (PAX `x`/`g`, GNU `L`/`K`).
    pub max_entries: u64,
}

impl Limits {
    pub const SOURCE_MAX_BYTES: u64 = 1 << 30;
    pub const EXTRACT_MAX_BYTES: u64 = 100 << 20;
    pub const MAX_ENTRIES: u64 = 100_000;

    /// The spec defaults for `mode`.
    pub fn for_mode(mode: ExtractMode) -> Self {
        let max_bytes = match mode {
            ExtractMode::Source => Self::SOURCE_MAX_BYTES,
            ExtractMode::Extract => Self::EXTRACT_MAX_BYTES,
        };
        Limits {
            max_bytes,
            max_entries: Self::MAX_ENTRIES,
        }
    }

    /// Non-file bytes of the decompressed stream we are willing to inflate (keeps CPU bounded when a
    /// bomb hides in skipped data, padding or after the end-of-archive marker).
    fn max_overhead(&self) -> u64 {
        self.max_bytes
            .saturating_add(self.max_entries.saturating_mul(OVERHEAD_PER_ENTRY))
    }

    /// Upper bound of the compressed size of any tarball within the limits (deflate expands
    /// incompressible data by well under 1/64); more input is refused without reading it all.
    pub(crate) fn max_compressed(&self) -> u64 {
        let total = self.max_bytes.saturating_add(self.max_overhead());
        total.saturating_add(total / 64).saturating_add(1 << 20)
    }
}

/// What an unpack produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:<hex>` of the compressed bytes read (the whole input).
    pub digest: String,
    /// Compressed bytes read.
    pub size: u64,
    /// Regular files written (hard-link copies included; a replaced file counts each time).
    pub files: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
}

/// Counts from [`unpack_stream`]; the caller adds digest and size.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    pub files: u64,
    pub bytes: u64,
}

/// Unpacks the gzip-compressed tarball read from `input` into the empty directory `dest`.
pub fn unpack(
    input: impl Read,
    dest: &Dir,
    mode: ExtractMode,
    limits: &Limits,
) -> Result<Unpacked, FetchError> {
    let mut hashing = Hashing::new(input, limits.max_compressed());
    let mut buffered = BufReader::with_capacity(INPUT_BUF, &mut hashing);
    let result = unpack_stream(&mut buffered, dest, mode, limits);
    drop(buffered);
    match result {
        Ok(stats) => {
            let (digest, size) = hashing.finish();
            Ok(Unpacked {
                digest,
                size,
                files: stats.files,
                bytes: stats.bytes,
            })
        }
        // The content error is only a consequence of the input failing or being cut off.
        Err(_) if hashing.over_cap => Err(FetchError::TooBig {
            limit: limits.max_bytes,
        }),
        Err(err) => Err(hashing.failure.take().map_or(err, FetchError::Read)),
    }
}

/// Unpacks a local `.tar.gz`/`.tgz` file (opened with ambient authority: the path is the user's).
pub fn unpack_file(
    path: &Path,
    dest: &Dir,
    mode: ExtractMode,
    limits: &Limits,
) -> Result<Unpacked, FetchError> {
    let file = std::fs::File::open(path)
        .map_err(|e| FetchError::io(format!("failed to open '{}'", path.display()), e))?;
    unpack(file, dest, mode, limits)
}

/// Gunzips and untars `input` into `dest`, reading `input` to its end so a caller hashing it sees
/// every byte. Read errors come back as [`FetchError::Corrupt`]; callers that know the input failed
/// report that instead.
///
/// Inflating runs on the calling thread and parsing/writing on a scoped thread, fed through a small
/// bounded channel: the two take about the same time, so this nearly halves the wall time.
pub(crate) fn unpack_stream<R: BufRead>(
    mut input: R,
    dest: &Dir,
    mode: ExtractMode,
    limits: &Limits,
) -> Result<Stats, FetchError> {
    let head = input.fill_buf().map_err(corrupt)?;
    if head.first() != Some(&0x1f) {
        return Err(FetchError::NotGzip);
    }
    let mut gz = Members {
        dec: Some(GzDecoder::new(input)),
    };
    std::thread::scope(|scope| {
        let (data_tx, data_rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let (spare_tx, spare_rx) = mpsc::channel();
        let untar = scope.spawn(move || {
            let mut reader = ChunkReader {
                rx: data_rx,
                spare: spare_tx,
                buf: Vec::new(),
                pos: 0,
                ended: false,
                aborted: false,
            };
            let mut unpacker = Unpacker {
                tree: Tree {
                    dest,
                    root: HashMap::new(),
                },
                mode,
                limits,
                entries: 0,
                overhead: 0,
                stats: Stats::default(),
            };
            let result = unpacker.run(&mut reader).map(|()| unpacker.stats);
            (result, reader.aborted)
        });
        let inflated = inflate_into(&mut gz, &data_tx, &spare_rx);
        drop(data_tx);
        let (result, aborted) = untar
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match inflated {
            // The parser only saw its input stop: the inflate error is the cause.
            Err(err) if aborted => Err(err),
            _ => result,
        }
    })
}

/// Decompressed bytes per message between the inflate and the untar thread.
const CHUNK: usize = 128 << 10;
const CHUNKS_IN_FLIGHT: usize = 8;

enum Chunk {
    Data(Vec<u8>),
    /// The gzip stream ended cleanly; a channel closed without it means inflating failed.
    End,
}

/// Inflates into recycled buffers until the end, an error, or the parser hanging up (it failed).
fn inflate_into(
    gz: &mut impl Read,
    tx: &mpsc::SyncSender<Chunk>,
    spare: &mpsc::Receiver<Vec<u8>>,
) -> Result<(), FetchError> {
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match gz.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(corrupt(e)),
            }
        }
        if filled == 0 {
            let _ = tx.send(Chunk::End);
            return Ok(());
        }
        buf.truncate(filled);
        if tx.send(Chunk::Data(buf)).is_err() {
            return Ok(());
        }
    }
}

/// The untar side of the channel: a `BufRead` over the received buffers, which go back for reuse.
struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    spare: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
    /// The parser ran into the inflate side stopping early, so the inflate error is the real one.
    aborted: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.buf.len() && !self.ended {
            match self.rx.recv() {
                Ok(Chunk::Data(data)) => {
                    let used = std::mem::replace(&mut self.buf, data);
                    self.pos = 0;
                    if used.capacity() > 0 {
                        let _ = self.spare.send(used);
                    }
                }
                Ok(Chunk::End) => self.ended = true,
                Err(_) => {
                    self.aborted = true;
                    return Err(io::Error::other("decompression stopped"));
                }
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

/// Hashes and counts what passes through; remembers the first read error so that it, not its effect
/// on the decoder, is reported.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    cap: u64,
    over_cap: bool,
    failure: Option<io::Error>,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R, cap: u64) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
            cap,
            over_cap: false,
            failure: None,
        }
    }

    fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failure.get_or_insert(e);
                return Err(copy);
            }
        };
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.cap {
            self.over_cap = true;
            return Err(io::Error::other(
                "input larger than any tarball within the limits",
            ));
        }
        Ok(n)
    }
}

/// Concatenated gzip members, as `gzip -d` and Go read them; zero bytes after the last member are
/// tolerated (tape padding), anything else is an error.
struct Members<R: BufRead> {
    dec: Option<GzDecoder<R>>,
}

impl<R: BufRead> Read for Members<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(mut rest) = self.dec.take().map(GzDecoder::into_inner) else {
                return Ok(0);
            };
            match rest.fill_buf()?.first() {
                None => return Ok(0),
                Some(0x1f) => self.dec = Some(GzDecoder::new(rest)),
                Some(_) => loop {
                    let chunk = rest.fill_buf()?;
                    if chunk.is_empty() {
                        return Ok(0);
                    }
                    if chunk.iter().any(|&b| b != 0) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "trailing garbage after gzip data",
                        ));
                    }
                    let len = chunk.len();
                    rest.consume(len);
                },
            }
        }
    }
}

fn corrupt(err: io::Error) -> FetchError {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        FetchError::Corrupt(GZIP_EOF.to_owned())
    } else {
        FetchError::Corrupt(err.to_string())
    }
}

fn corrupt_msg(msg: impl Into<String>) -> FetchError {
    FetchError::Corrupt(msg.into())
}

/// What the tarball has put at a path so far. The destination starts empty and only we write to it,
/// so this is exactly what is on disk; keyed by component so memory grows with distinct names only.
enum Node {
    Dir(HashMap<Box<str>, Node>),
    File { exec: bool, size: u64 },
    Symlink,
}

impl Node {
    fn what(&self) -> &'static str {
        match self {
            Node::Dir(_) => "directory",
            Node::File { .. } => "file",
            Node::Symlink => "symlink",
        }
    }
}

struct Tree<'d> {
    dest: &'d Dir,
    root: HashMap<Box<str>, Node>,
}

impl Tree<'_> {
    /// Walks (creating as needed) the directories leading to the last component of `path` and
    /// returns the one containing it. A parent that is a file conflicts; one that is a symlink would
    /// make the write land elsewhere, so it is refused.
    fn parent(&mut self, path: &EntryPath, shown: &str) -> Result<&mut HashMap<Box<str>, Node>, FetchError> {
        let dest = self.dest;
        let mut map = &mut self.root;
        let parents = path.comps.len() - 1;
        for (i, comp) in path.comps[..parents].iter().enumerate() {
            let prefix = path.prefix(i);
            if !map.contains_key(*comp) {
                dest.create_dir(prefix)
                    .map_err(|e| FetchError::io(format!("failed to create directory '{prefix}'"), e))?;
                map.insert((*comp).into(), Node::Dir(HashMap::new()));
            }
            map = match map.get_mut(*comp) {
                Some(Node::Dir(children)) => children,
                Some(Node::Symlink) => {
                    return Err(FetchError::ThroughSymlink {
                        name: shown.to_owned(),
                        link: prefix.to_owned(),
                    });
                }
                _ => {
                    return Err(FetchError::Conflict {
                        name: shown.to_owned(),
                        earlier: "file",
                        path: prefix.to_owned(),
                    });
                }
            };
        }
        Ok(map)
    }

    /// The node at `path`, if `path` names an earlier entry without passing through a symlink.
    fn get(&self, path: &EntryPath) -> Option<&Node> {
        let (last, parents) = path.comps.split_last()?;
        let mut map = &self.root;
        for comp in parents {
            match map.get(*comp)? {
                Node::Dir(children) => map = children,
                _ => return None,
            }
        }
        map.get(*last)
    }
}

/// A checked entry name: non-empty components joined by `/` in `full`.
struct EntryPath<'a> {
    comps: Vec<&'a str>,
    full: String,
}

impl<'a> EntryPath<'a> {
    /// Lexically checks a raw name (spec §4 row 3) and cleans it: leading `./`, `.` and empty
    /// components dropped. `None` = invalid; no components = the root. Non-UTF-8 names are invalid
    /// because artifacts store names as UTF-8 PAX records.
    fn parse(raw: &'a [u8]) -> Option<Self> {
        if raw.is_empty()
            || raw.len() > PATH_MAX
            || raw[0] == b'/'
            || raw.contains(&b'\\')
            || raw.contains(&0)
        {
            return None;
        }
        let text = std::str::from_utf8(raw).ok()?;
        let mut comps = Vec::new();
        for comp in text.split('/') {
            match comp {
                "" | "." => {}
                ".." => return None,
                c if c.len() > NAME_MAX => return None,
                c => comps.push(c),
            }
        }
        let full = comps.join("/");
        Some(EntryPath { comps, full })
    }

    /// The path of the first `i + 1` components.
    fn prefix(&self, i: usize) -> &str {
        let end: usize = self.comps[..=i].iter().map(|c| c.len()).sum::<usize>() + i;
        &self.full[..end]
    }

    fn leaf(&self) -> &'a str {
        self.comps[self.comps.len() - 1]
    }
}

/// Entry name for messages: lossy UTF-8, control characters escaped, long names shortened.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 200 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Metadata collected from PAX `x` and GNU `L`/`K` headers for the next entry.
#[derive(Default)]
struct Pending {
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
    sparse: bool,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn merge_pax(&mut self, data: &[u8]) -> Result<(), FetchError> {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.map_err(|e| corrupt_msg(format!("malformed PAX header: {e}")))?;
            let (key, value) = (ext.key_bytes(), ext.value_bytes());
            match key {
                b"path" => self.pax_path = Some(value.to_vec()).filter(|v| !v.is_empty()),
                b"linkpath" => self.pax_link = Some(value.to_vec()).filter(|v| !v.is_empty()),
                b"size" => {
                    let size = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok());
                    self.pax_size = Some(size.ok_or_else(|| corrupt_msg("malformed PAX size"))?);
                }
                k if k.starts_with(b"GNU.sparse.") => self.sparse = true,
                _ => {}
            }
        }
        Ok(())
    }
}

fn type_name(flag: u8) -> String {
    match flag {
        b'3' => "character device".into(),
        b'4' => "block device".into(),
        b'6' => "FIFO".into(),
        b'S' => "sparse file".into(),
        b'D' => "GNU dump directory".into(),
        b'M' => "multi-volume continuation".into(),
        b'V' => "volume label".into(),
        b'N' => "GNU old long name".into(),
        c if c.is_ascii_graphic() => format!("type '{}'", c as char),
        c => format!("type 0x{c:02x}"),
    }
}

struct Unpacker<'a, 'd> {
    tree: Tree<'d>,
    mode: ExtractMode,
    limits: &'a Limits,
    entries: u64,
    overhead: u64,
    stats: Stats,
}

impl Unpacker<'_, '_> {
    fn run<R: BufRead>(&mut self, r: &mut R) -> Result<(), FetchError> {
        let mut pending = Pending::default();
        let mut header = tar::Header::new_old();
        loop {
            if !self.read_block(r, header.as_mut_bytes())? {
                break; // end of data without an end-of-archive marker: accepted, like GNU tar and Go
            }
            if header.as_bytes().iter().all(|&b| b == 0) {
                // End-of-archive marker: a second zero block (or the end of data) must follow.
                if self.read_block(r, header.as_mut_bytes())? && header.as_bytes().iter().any(|&b| b != 0) {
                    return Err(corrupt_msg("lone zero block before more headers"));
                }
                break;
            }
            check_checksum(&header)?;
            let flag = header.as_bytes()[156];
            let header_size = header.entry_size().map_err(|e| corrupt_msg(e.to_string()))?;
            match flag {
                b'x' | b'L' | b'K' => {
                    let data = self.read_meta(r, header_size)?;
                    match flag {
                        b'x' => pending.merge_pax(&data)?,
                        b'L' => pending.long_name = Some(trim_nuls(data)),
                        _ => pending.long_link = Some(trim_nuls(data)),
                    }
                }
                // PAX global header (`git archive` writes one): metadata only, never a file.
                b'g' => self.skip_overhead(r, padded(header_size)?)?,
                _ => {
                    let meta = std::mem::take(&mut pending);
                    self.entry(r, &header, flag, header_size, meta)?;
                }
            }
        }
        // Inflate the rest (padding, gzip trailer) so the CRC is checked and the input fully read.
        loop {
            let len = r.fill_buf().map_err(corrupt)?.len();
            if len == 0 {
                return Ok(());
            }
            self.charge_overhead(len as u64)?;
            r.consume(len);
        }
    }

    fn entry<R: BufRead>(
        &mut self,
        r: &mut R,
        header: &tar::Header,
        flag: u8,
        header_size: u64,
        meta: Pending,
    ) -> Result<(), FetchError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(FetchError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let header_name = header.path_bytes();
        let raw: &[u8] = meta
            .pax_path
            .as_deref()
            .or(meta.long_name.as_deref())
            .unwrap_or(&header_name);
        let name = shown(raw);
        let path = EntryPath::parse(raw).ok_or_else(|| FetchError::InvalidName(name.clone()))?;
        let ends_with_slash = raw.ends_with(b"/");
        // Old tars mark directories as `\0` with a trailing slash (Go reads them the same way).
        let is_dir = flag == b'5' || (flag == 0 && ends_with_slash);
        if path.comps.is_empty() {
            // The root itself (`.`, `./`): nothing to create; anything but a directory is nonsense.
            return if is_dir {
                Ok(())
            } else {
                Err(FetchError::InvalidName(name))
            };
        }
        if ends_with_slash && !is_dir {
            return Err(FetchError::InvalidName(name));
        }
        if meta.sparse || flag == b'S' {
            return Err(FetchError::Unsupported {
                name,
                kind: type_name(b'S'),
            });
        }
        let header_link = header.link_name_bytes();
        let link: &[u8] = meta
            .pax_link
            .as_deref()
            .or(meta.long_link.as_deref())
            .or(header_link.as_deref())
            .unwrap_or(b"");
        // Types 1, 2 and 5 carry no data whatever their size field says (POSIX; Go reads them so).
        match flag {
            _ if is_dir => self.directory(&path, &name),
            b'0' | 0 | b'7' => {
                let size = meta.pax_size.unwrap_or(header_size);
                let mode = header.mode().map_err(|e| corrupt_msg(e.to_string()))?;
                self.file(r, &path, &name, size, mode & 0o111 != 0)
            }
            b'1' => self.hard_link(&path, &name, link),
            b'2' if self.mode == ExtractMode::Extract => Err(FetchError::Symlink(name)),
            b'2' => self.symlink(&path, &name, link),
            other => Err(FetchError::Unsupported {
                name,
                kind: type_name(other),
            }),
        }
    }

    fn directory(&mut self, path: &EntryPath, name: &str) -> Result<(), FetchError> {
        let dest = self.tree.dest;
        let parent = self.tree.parent(path, name)?;
        match parent.get(path.leaf()) {
            Some(Node::Dir(_)) => Ok(()),
            Some(node) => Err(conflict(name, node, path)),
            None => {
                dest.create_dir(&path.full)
                    .map_err(|e| FetchError::io(format!("failed to create directory '{}'", path.full), e))?;
                parent.insert(path.leaf().into(), Node::Dir(HashMap::new()));
                Ok(())
            }
        }
    }

    fn file<R: BufRead>(
        &mut self,
        r: &mut R,
        path: &EntryPath,
        name: &str,
        size: u64,
        exec: bool,
    ) -> Result<(), FetchError> {
        self.charge_file(size)?;
        let dest = self.tree.dest;
        let parent = self.tree.parent(path, name)?;
        prepare_leaf(dest, parent, path, name)?;
        let mut file = create(dest, &path.full)?;
        copy_exact(r, &mut file, size, &path.full)?;
        finish_file(&file, exec, &path.full)?;
        parent.insert(path.leaf().into(), Node::File { exec, size });
        self.charge_overhead(padded(size)? - size)?;
        skip(r, padded(size)? - size)?;
        Ok(())
    }

    fn hard_link(&mut self, path: &EntryPath, name: &str, raw_target: &[u8]) -> Result<(), FetchError> {
        let target_shown = shown(raw_target);
        let error = |why| FetchError::HardLink {
            name: name.to_owned(),
            target: target_shown.clone(),
            why,
        };
        let target = EntryPath::parse(raw_target).ok_or_else(|| error("missing or later"))?;
        let (exec, size) = match self.tree.get(&target) {
            Some(&Node::File { exec, size }) => (exec, size),
            Some(_) => return Err(error("non-regular")),
            None => return Err(error("missing or later")),
        };
        if target.full == path.full {
            return Ok(()); // a link to itself leaves the file as it is
        }
        self.charge_file(size)?;
        let dest = self.tree.dest;
        let parent = self.tree.parent(path, name)?;
        prepare_leaf(dest, parent, path, name)?;
        let mut from = dest
            .open(&target.full)
            .map_err(|e| FetchError::io(format!("failed to open '{}'", target.full), e))?
            .into_std();
        let mut file = create(dest, &path.full)?;
        io::copy(&mut from, &mut file)
            .map_err(|e| FetchError::io(format!("failed to write '{}'", path.full), e))?;
        finish_file(&file, exec, &path.full)?;
        parent.insert(path.leaf().into(), Node::File { exec, size });
        Ok(())
    }

    fn symlink(&mut self, path: &EntryPath, name: &str, target: &[u8]) -> Result<(), FetchError> {
        // The target is not resolved here: the copy stage decides whether it stays in the root.
        let target = std::str::from_utf8(target)
            .ok()
            .filter(|t| !t.is_empty() && t.len() <= PATH_MAX && !t.contains('\0'))
            .ok_or_else(|| corrupt_msg(format!("symlink '{name}' has an invalid target")))?;
        let dest = self.tree.dest;
        let parent = self.tree.parent(path, name)?;
        prepare_leaf(dest, parent, path, name)?;
        dest.symlink_contents(target, &path.full)
            .map_err(|e| FetchError::io(format!("failed to create symlink '{}'", path.full), e))?;
        parent.insert(path.leaf().into(), Node::Symlink);
        Ok(())
    }

    /// Counts `size` regular-file bytes against the limit before any of them is written.
    fn charge_file(&mut self, size: u64) -> Result<(), FetchError> {
        match self.stats.bytes.checked_add(size) {
            Some(total) if total <= self.limits.max_bytes => {
                self.stats.bytes = total;
                self.stats.files += 1;
                Ok(())
            }
            _ => Err(FetchError::TooBig {
                limit: self.limits.max_bytes,
            }),
        }
    }

    fn charge_overhead(&mut self, n: u64) -> Result<(), FetchError> {
        self.overhead = self.overhead.saturating_add(n);
        if self.overhead > self.limits.max_overhead() {
            return Err(FetchError::TooBig {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Reads one 512-byte block; false at a clean end of data.
    fn read_block<R: BufRead>(&mut self, r: &mut R, block: &mut [u8; BLOCK]) -> Result<bool, FetchError> {
        let mut filled = 0;
        while filled < BLOCK {
            let chunk = r.fill_buf().map_err(corrupt)?;
            if chunk.is_empty() {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(corrupt_msg("unexpected end of tarball in a header"));
            }
            let n = chunk.len().min(BLOCK - filled);
            block[filled..filled + n].copy_from_slice(&chunk[..n]);
            r.consume(n);
            filled += n;
        }
        self.charge_overhead(BLOCK as u64)?;
        Ok(true)
    }

    fn read_meta<R: BufRead>(&mut self, r: &mut R, size: u64) -> Result<Vec<u8>, FetchError> {
        if size > META_MAX {
            return Err(corrupt_msg(format!(
                "extended header of {size} bytes is too large"
            )));
        }
        self.charge_overhead(padded(size)?)?;
        let mut data = Vec::with_capacity(size as usize);
        copy_exact(r, &mut data, size, "extended header")?;
        skip(r, padded(size)? - size)?;
        Ok(data)
    }

    fn skip_overhead<R: BufRead>(&mut self, r: &mut R, n: u64) -> Result<(), FetchError> {
        self.charge_overhead(n)?;
        skip(r, n)
    }
}

fn conflict(name: &str, earlier: &Node, path: &EntryPath) -> FetchError {
    FetchError::Conflict {
        name: name.to_owned(),
        earlier: earlier.what(),
        path: path.full.clone(),
    }
}

/// Makes room for a file or symlink at `path`: an earlier file is replaced, an earlier symlink
/// removed first (so the write cannot follow it), an earlier directory is a conflict.
fn prepare_leaf(
    dest: &Dir,
    parent: &HashMap<Box<str>, Node>,
    path: &EntryPath,
    name: &str,
) -> Result<(), FetchError> {
    match parent.get(path.leaf()) {
        Some(node @ Node::Dir(_)) => Err(conflict(name, node, path)),
        Some(Node::Symlink) | Some(Node::File { .. }) => dest
            .remove_file(&path.full)
            .map_err(|e| FetchError::io(format!("failed to replace '{}'", path.full), e)),
        None => Ok(()),
    }
}

fn create(dest: &Dir, path: &str) -> Result<std::fs::File, FetchError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    dest.open_with(path, &options)
        .map(cap_std::fs::File::into_std)
        .map_err(|e| FetchError::io(format!("failed to create '{path}'"), e))
}

/// Sets the mode explicitly: the umask must not decide the exec bit (spec: 0755 or 0644).
fn finish_file(file: &std::fs::File, exec: bool, path: &str) -> Result<(), FetchError> {
    let mode = if exec { 0o755 } else { 0o644 };
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|e| FetchError::io(format!("failed to set the mode of '{path}'"), e))
}

fn check_checksum(header: &tar::Header) -> Result<(), FetchError> {
    let bytes = header.as_bytes();
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in bytes.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    match header.cksum() {
        Ok(sum) if sum == unsigned || i64::from(sum) == i64::from(signed) => Ok(()),
        _ => Err(corrupt_msg("archive header checksum mismatch")),
    }
}

fn trim_nuls(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

/// `size` rounded up to whole blocks.
fn padded(size: u64) -> Result<u64, FetchError> {
    size.checked_next_multiple_of(BLOCK as u64)
        .ok_or_else(|| corrupt_msg("entry size overflows"))
}

/// Copies exactly `n` bytes straight out of the reader's buffer (no extra copy).
fn copy_exact<R: BufRead>(r: &mut R, w: &mut impl Write, mut n: u64, path: &str) -> Result<(), FetchError> {
    while n > 0 {
        let chunk = r.fill_buf().map_err(corrupt)?;
        if chunk.is_empty() {
            return Err(corrupt_msg(format!("unexpected end of tarball in '{path}'")));
        }
        let len = chunk.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        w.write_all(&chunk[..len])
            .map_err(|e| FetchError::io(format!("failed to write '{path}'"), e))?;
        r.consume(len);
        n -= len as u64;
    }
    Ok(())
}

fn skip<R: BufRead>(r: &mut R, mut n: u64) -> Result<(), FetchError> {
    while n > 0 {
        let chunk = r.fill_buf().map_err(corrupt)?;
        if chunk.is_empty() {
            return Err(corrupt_msg("unexpected end of tarball"));
        }
        let len = chunk.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        r.consume(len);
        n -= len as u64;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    /// Builds tarballs byte by byte, so hostile names and types need no cooperation from `tar`.
    #[derive(Default)]
    pub(crate) struct Tb(Vec<u8>);

    impl Tb {
        pub(crate) fn raw(
            &mut self,
            name: &[u8],
            flag: u8,
            data: &[u8],
            mode: u32,
            link: &[u8],
        ) -> &mut Self {
            let size = data.len() as u64;
            self.header(name, flag, size, mode, link);
            self.0.extend_from_slice(data);
            self.0.resize(self.0.len().next_multiple_of(BLOCK), 0);
            self
        }

        /// A header alone; `size` may lie about the data that follows.
        pub(crate) fn header(
            &mut self,
            name: &[u8],
            flag: u8,
            size: u64,
            mode: u32,
            link: &[u8],
        ) -> &mut Self {
            let mut h = tar::Header::new_ustar();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            h.set_size(size);
            h.set_mode(mode);
            h.as_mut_bytes()[156] = flag;
            h.set_uid(1234);
            h.set_gid(5678);
            h.set_mtime(1_700_000_000);
            h.set_username("someone").unwrap();
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self
        }

        pub(crate) fn file(&mut self, name: &str, data: &str) -> &mut Self {
            self.raw(name.as_bytes(), b'0', data.as_bytes(), 0o644, b"")
        }

        pub(crate) fn dir(&mut self, name: &str) -> &mut Self {
            self.raw(name.as_bytes(), b'5', b"", 0o755, b"")
        }

        pub(crate) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(name.as_bytes(), b'2', b"", 0o777, target.as_bytes())
        }

        pub(crate) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(name.as_bytes(), b'1', b"", 0o644, target.as_bytes())
        }

        pub(crate) fn pax(&mut self, flag: u8, records: &[(&str, &[u8])]) -> &mut Self {
            let mut data = Vec::new();
            for (key, value) in records {
                let base = key.len() + value.len() + 3;
                let mut len = base + 1;
                while len != base + len.to_string().len() {
                    len = base + len.to_string().len();
                }
                data.extend_from_slice(format!("{len} {key}=").as_bytes());
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            self.raw(b"PaxHeaders/x", flag, &data, 0o644, b"")
        }

        pub(crate) fn tar(&self) -> Vec<u8> {
            let mut out = self.0.clone();
            out.extend_from_slice(&[0; 2 * BLOCK]);
            out
        }

        pub(crate) fn tgz(&self) -> Vec<u8> {
            gz(&self.tar())
        }
    }

    pub(crate) fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn limits(max_bytes: u64, max_entries: u64) -> Limits {
        Limits {
            max_bytes,
            max_entries,
        }
    }

    fn run_with(
        tgz: &[u8],
        mode: ExtractMode,
        limits: &Limits,
    ) -> (Result<Unpacked, FetchError>, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        (unpack(tgz, &dir, mode, limits), tmp)
    }

    fn run(tgz: &[u8], mode: ExtractMode) -> (Result<Unpacked, FetchError>, tempfile::TempDir) {
        run_with(tgz, mode, &Limits::for_mode(mode))
    }

    fn err(tgz: &[u8], mode: ExtractMode) -> String {
        match run(tgz, mode).0 {
            Ok(u) => panic!("expected an error, got {u:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// path → "file 0644 <content>" / "dir" / "link -> <target>".
    pub(crate) fn listing(root: &Path) -> BTreeMap<String, String> {
        fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
            for entry in std::fs::read_dir(root.join(rel)).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = std::fs::symlink_metadata(root.join(&path)).unwrap();
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(root.join(&path)).unwrap();
                    out.insert(path, format!("link -> {}", target.display()));
                } else if meta.is_dir() {
                    out.insert(path.clone(), "dir".into());
                    walk(root, &path, out);
                } else {
                    let content =
                        std::fs::read_to_string(root.join(&path)).unwrap_or_else(|_| "<bin>".into());
                    out.insert(
                        path,
                        format!("file {:04o} {content}", meta.permissions().mode() & 0o7777),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, "", &mut out);
        out
    }

    fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BOTH: [ExtractMode; 2] = [ExtractMode::Source, ExtractMode::Extract];

    #[test]
    fn regular_tree_with_modes_and_normalization() {
        let mut tb = Tb::default();
        tb.dir("./")
            .dir(".")
            .file("./config.yaml", "c")
            .raw(b"bin/run.sh", b'0', b"#!/bin/sh\n", 0o750, b"")
            .raw(b"cfg.yaml", b'0', b"x", 0o640, b"")
            .raw(b"odd", b'0', b"o", 0o001, b"")
            .file("x/y/z.yaml", "z")
            .dir("empty/")
            .file("a//b/./c", "c2");
        let tgz = tb.tgz();
        for mode in BOTH {
            let (result, tmp) = run(&tgz, mode);
            let unpacked = result.unwrap();
            assert_eq!(
                unpacked.digest,
                format!("sha256:{}", hex::encode(Sha256::digest(&tgz)))
            );
            assert_eq!(unpacked.size, tgz.len() as u64);
            assert_eq!((unpacked.files, unpacked.bytes), (6, 16));
            assert_eq!(
                listing(tmp.path()),
                map(&[
                    ("a", "dir"),
                    ("a/b", "dir"),
                    ("a/b/c", "file 0644 c2"),
                    ("bin", "dir"),
                    ("bin/run.sh", "file 0755 #!/bin/sh\n"),
                    ("cfg.yaml", "file 0644 x"),
                    ("config.yaml", "file 0644 c"),
                    ("empty", "dir"),
                    ("odd", "file 0755 o"),
                    ("x", "dir"),
                    ("x/y", "dir"),
                    ("x/y/z.yaml", "file 0644 z"),
                ])
            );
        }
    }

    #[test]
    fn invalid_names_are_rejected() {
        let names: [&[u8]; 12] = [
            b"../escape.yaml",
            b"/abs.yaml",
            b"a/../b",
            b"a/../../x",
            b"./../x",
            b"a/..",
            b"..",
            b"a\\b",
            b"",
            b"\xff\xfe",
            b"./",
            b".",
        ];
        for name in names {
            for mode in BOTH {
                let mut tb = Tb::default();
                tb.file("ok.yaml", "o").raw(name, b'0', b"e", 0o644, b"");
                let msg = err(&tb.tgz(), mode);
                assert!(msg.starts_with("invalid entry name '"), "{name:?}: {msg}");
            }
        }
        // The effective name (PAX path, GNU long name) is what is checked.
        let mut tb = Tb::default();
        tb.pax(b'x', &[("path", b"../evil")]).file("innocent", "e");
        assert_eq!(
            err(&tb.tgz(), ExtractMode::Source),
            "invalid entry name '../evil'"
        );
        let mut tb = Tb::default();
        tb.raw(b"././@LongLink", b'L', b"/etc/evil\0", 0o644, b"")
            .file("innocent", "e");
        assert_eq!(
            err(&tb.tgz(), ExtractMode::Extract),
            "invalid entry name '/etc/evil'"
        );
        // Directories may end with '/', files may not.
        let mut tb = Tb::default();
        tb.file("f/", "x");
        assert_eq!(err(&tb.tgz(), ExtractMode::Source), "invalid entry name 'f/'");
        let long = "a".repeat(256);
        let mut tb = Tb::default();
        tb.pax(b'x', &[("path", long.as_bytes())]).file("x", "e");
        assert!(err(&tb.tgz(), ExtractMode::Source).starts_with("invalid entry name"));
    }

    #[test]
    fn symlinks_per_mode() {
        let mut tb = Tb::default();
        tb.file("real.yaml", "r")
            .symlink("link.yaml", "real.yaml")
            .symlink("abs", "/etc/passwd");
        let tgz = tb.tgz();
        assert_eq!(
            err(&tgz, ExtractMode::Extract),
            "entry 'link.yaml' is a symlink, which is not allowed"
        );
        let (result, tmp) = run(&tgz, ExtractMode::Source);
        result.unwrap();
        assert_eq!(
            listing(tmp.path()),
            map(&[
                ("abs", "link -> /etc/passwd"),
                ("link.yaml", "link -> real.yaml"),
                ("real.yaml", "file 0644 r")
            ])
        );
    }

    #[test]
    fn writes_through_symlinks_are_rejected() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_owned();
        for (link_target, second) in [(target.as_str(), "d/x.yaml"), (".", "d/x.yaml"), ("..", "d/y/z")] {
            let mut tb = Tb::default();
            tb.symlink("d", link_target).file(second, "x");
            let msg = err(&tb.tgz(), ExtractMode::Source);
            assert_eq!(msg, format!("entry '{second}' passes through symlink 'd'"));
        }
        let mut tb = Tb::default();
        tb.symlink("d", &target).dir("d/sub/");
        assert_eq!(
            err(&tb.tgz(), ExtractMode::Source),
            "entry 'd/sub/' passes through symlink 'd'"
        );
        // A hard link cannot reach through one either.
        let mut tb = Tb::default();
        tb.symlink("d", &target).hardlink("h", "d/secret");
        assert!(err(&tb.tgz(), ExtractMode::Source).starts_with("hard link 'h' points to missing"));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn hard_links() {
        let mut tb = Tb::default();
        tb.raw(b"a.sh", b'0', b"run", 0o755, b"")
            .hardlink("b/c.sh", "./a.sh")
            .hardlink("a.sh", "a.sh");
        for mode in BOTH {
            let (result, tmp) = run(&tb.tgz(), mode);
            assert_eq!((result.unwrap().bytes), 6);
            assert_eq!(
                listing(tmp.path()),
                map(&[
                    ("a.sh", "file 0755 run"),
                    ("b", "dir"),
                    ("b/c.sh", "file 0755 run")
                ])
            );
        }
        let mut missing = Tb::default();
        missing.file("a.txt", "a").hardlink("b.txt", "nothere.txt");
        let mut later = Tb::default();
        later.hardlink("b.txt", "a.txt").file("a.txt", "a");
        let mut to_dir = Tb::default();
        to_dir.dir("d/").hardlink("b.txt", "d");
        let mut to_link = Tb::default();
        to_link.file("a", "a").symlink("l", "a").hardlink("b", "l");
        let mut escaping = Tb::default();
        escaping.hardlink("b", "../../etc/passwd");
        for (tb, want, mode) in [
            (
                missing,
                "hard link 'b.txt' points to missing or later entry 'nothere.txt'",
                ExtractMode::Extract,
            ),
            (
                later,
                "hard link 'b.txt' points to missing or later entry 'a.txt'",
                ExtractMode::Source,
            ),
            (
                to_dir,
                "hard link 'b.txt' points to non-regular entry 'd'",
                ExtractMode::Extract,
            ),
            (
                to_link,
                "hard link 'b' points to non-regular entry 'l'",
                ExtractMode::Source,
            ),
            (
                escaping,
                "hard link 'b' points to missing or later entry '../../etc/passwd'",
                ExtractMode::Source,
            ),
        ] {
            assert_eq!(err(&tb.tgz(), mode), want);
        }
    }

    #[test]
    fn metadata_headers_are_never_files() {
        let long = format!("{}/file.yaml", "d".repeat(150));
        let long_target = format!("{}/t", "e".repeat(120));
        let mut tb = Tb::default();
        tb.pax(b'g', &[("comment", b"6f1c0ffee")])
            .pax(
                b'x',
                &[("path", long.as_bytes()), ("mtime", b"1.5"), ("uid", b"99")],
            )
            .file("short-name-ignored", "long")
            .raw(
                b"././@LongLink",
                b'L',
                format!("{long}2\0").as_bytes(),
                0o644,
                b"",
            )
            .file("ignored-too", "gnu")
            .raw(b"././@LongLink", b'K', long_target.as_bytes(), 0o644, b"")
            .symlink("lnk", "ignored")
            .file("a.yaml", "a");
        let (result, tmp) = run(&tb.tgz(), ExtractMode::Source);
        result.unwrap();
        let d = "d".repeat(150);
        assert_eq!(
            listing(tmp.path()),
            map(&[
                ("a.yaml", "file 0644 a"),
                (d.as_str(), "dir"),
                (long.as_str(), "file 0644 long"),
                (format!("{long}2").as_str(), "file 0644 gnu"),
                ("lnk", format!("link -> {long_target}").as_str()),
            ])
        );
        // `git archive` style: global header first, Extract mode.
        let mut tb = Tb::default();
        tb.raw(
            b"pax_global_header",
            b'g',
            b"52 comment=0123456789012345678901234567890123456789\n",
            0o666,
            b"",
        )
        .file("a.yaml", "a");
        let (result, tmp) = run(&tb.tgz(), ExtractMode::Extract);
        assert_eq!(result.unwrap().files, 1);
        assert_eq!(listing(tmp.path()), map(&[("a.yaml", "file 0644 a")]));
    }

    #[test]
    fn special_files_are_unsupported() {
        for (flag, kind) in [
            (b'6', "FIFO"),
            (b'3', "character device"),
            (b'4', "block device"),
            (b'S', "sparse file"),
        ] {
            for mode in BOTH {
                let mut tb = Tb::default();
                tb.file("ok", "o").raw(b"special", flag, b"", 0o644, b"");
                assert_eq!(
                    err(&tb.tgz(), mode),
                    format!("entry 'special' has unsupported file type ({kind})")
                );
            }
        }
        let mut tb = Tb::default();
        tb.pax(b'x', &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")])
            .file("sparse", "map");
        assert!(err(&tb.tgz(), ExtractMode::Source).contains("unsupported file type (sparse file)"));
    }

    #[test]
    fn conflicts_and_replacements() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[("f:a", "x"), ("d:a/", "")],
                "entry 'a/' conflicts with earlier file 'a'",
            ),
            (
                &[("f:a", "x"), ("f:a/b", "y")],
                "entry 'a/b' conflicts with earlier file 'a'",
            ),
            (
                &[("f:a/b", "y"), ("f:a", "x")],
                "entry 'a' conflicts with earlier directory 'a'",
            ),
            (
                &[("l:a", "t"), ("d:a", "")],
                "entry 'a' conflicts with earlier symlink 'a'",
            ),
            (
                &[("d:a", ""), ("l:a", "t")],
                "entry 'a' conflicts with earlier directory 'a'",
            ),
        ];
        for (entries, want) in cases {
            let mut tb = Tb::default();
            for (spec, data) in entries {
                let (kind, name) = spec.split_once(':').unwrap();
                match kind {
                    "f" => tb.file(name, data),
                    "d" => tb.dir(name),
                    _ => tb.symlink(name, data),
                };
            }
            assert_eq!(err(&tb.tgz(), ExtractMode::Source), want);
        }
        let mut tb = Tb::default();
        tb.file("a", "first")
            .raw(b"a", b'0', b"second", 0o755, b"")
            .symlink("b", "a")
            .file("b", "file now")
            .file("c", "file first")
            .symlink("c", "a")
            .dir("d/")
            .dir("d");
        let (result, tmp) = run(&tb.tgz(), ExtractMode::Source);
        assert_eq!(result.unwrap().files, 4);
        assert_eq!(
            listing(tmp.path()),
            map(&[
                ("a", "file 0755 second"),
                ("b", "file 0644 file now"),
                ("c", "link -> a"),
                ("d", "dir")
            ])
        );
    }

    #[test]
    fn not_gzip_and_corrupt_data() {
        let mut tb = Tb::default();
        tb.file("a", "a");
        let plain = tb.tar();
        for input in [&plain[..], b"this is not a tarball", b""] {
            assert_eq!(
                err(input, ExtractMode::Extract),
                "failed to extract tarball: requires gzip-compressed body"
            );
        }
        assert!(matches!(
            run(&plain, ExtractMode::Source).0,
            Err(FetchError::NotGzip)
        ));
        let garbage = gz(&[7u8; 4096]);
        assert_eq!(
            err(&garbage, ExtractMode::Source),
            "failed to extract tarball: archive header checksum mismatch"
        );
        assert!(
            err(&[0x1f, 0x8b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9], ExtractMode::Source)
                .starts_with("failed to extract")
        );
        let good = tb.tgz();
        let cut = &good[..good.len() / 2];
        assert_eq!(
            err(cut, ExtractMode::Source),
            format!("failed to extract tarball: {GZIP_EOF}")
        );
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        assert!(err(&bad_crc, ExtractMode::Source).starts_with("failed to extract tarball: "));
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        assert_eq!(
            err(&trailing, ExtractMode::Source),
            "failed to extract tarball: trailing garbage after gzip data"
        );
        // An unsafe entry early in a stream that is cut later: the entry is what is reported.
        let mut evil = Tb::default();
        evil.file("../x", "x");
        for i in 0..200 {
            evil.raw(format!("f{i}").as_bytes(), b'0', &[i as u8; 4096], 0o644, b"");
        }
        let evil = evil.tgz();
        assert_eq!(
            err(&evil[..evil.len() - 100], ExtractMode::Source),
            "invalid entry name '../x'"
        );
        // A tar cut inside a complete gzip stream is corrupt, not a short download.
        let mut tb2 = Tb::default();
        tb2.header(b"big", b'0', 5000, 0o644, b"");
        tb2.0.extend_from_slice(&[1; 100]);
        assert_eq!(
            err(&gz(&tb2.0), ExtractMode::Source),
            "failed to extract tarball: unexpected end of tarball in 'big'"
        );
    }

    #[test]
    fn lenient_framing() {
        let mut tb = Tb::default();
        tb.file("a", "a");
        // No end-of-archive marker, several gzip members, zero padding after the last one.
        let mut input = gz(&tb.0);
        let mut second = Tb::default();
        second.file("b", "b");
        input.extend_from_slice(&gz(&second.tar()));
        input.extend_from_slice(&[0; 10240]);
        let (result, tmp) = run(&input, ExtractMode::Source);
        assert_eq!(result.unwrap().size, input.len() as u64);
        assert_eq!(
            listing(tmp.path()),
            map(&[("a", "file 0644 a"), ("b", "file 0644 b")])
        );
        // Old-style directory: type '\0' with a trailing slash.
        let mut tb = Tb::default();
        tb.raw(b"olddir/", 0, b"", 0o755, b"")
            .raw(b"olddir/f", 0, b"f", 0o644, b"");
        let (result, tmp) = run(&tb.tgz(), ExtractMode::Extract);
        result.unwrap();
        assert_eq!(
            listing(tmp.path()),
            map(&[("olddir", "dir"), ("olddir/f", "file 0644 f")])
        );
    }

    #[test]
    fn size_limit_counts_declared_and_copied_bytes() {
        let l = limits(1000, 100);
        let mut exact = Tb::default();
        exact
            .raw(b"a", b'0', &[b'a'; 600], 0o644, b"")
            .raw(b"b", b'0', &[b'b'; 400], 0o644, b"");
        assert_eq!(
            run_with(&exact.tgz(), ExtractMode::Extract, &l).0.unwrap().bytes,
            1000
        );
        let mut over = exact.0.clone();
        over.extend_from_slice(Tb::default().file("c", "c").0.as_slice());
        let over = gz(&Tb(over).tar());
        let (result, tmp) = run_with(&over, ExtractMode::Extract, &l);
        assert_eq!(
            result.unwrap_err().to_string(),
            "tarball is bigger than 1000 bytes when decompressed"
        );
        assert!(!tmp.path().join("c").exists());
        let mut links = Tb::default();
        links.raw(b"a", b'0', &[b'a'; 600], 0o644, b"").hardlink("b", "a");
        let (result, tmp) = run_with(&links.tgz(), ExtractMode::Source, &l);
        assert!(matches!(result, Err(FetchError::TooBig { limit: 1000 })));
        assert!(!tmp.path().join("b").exists());
    }

    #[test]
    fn decompression_bombs_are_stopped_early() {
        // 150 MiB of zeros (compressed to ~150 KiB) against the 100 MiB Extract default: refused at
        // the header, before a byte is written.
        let mut tb = Tb::default();
        tb.header(b"zeros.bin", b'0', 150 << 20, 0o644, b"");
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&tb.0).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..150 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        let start = Instant::now();
        let (result, tmp) = run(&bomb, ExtractMode::Extract);
        assert_eq!(
            result.unwrap_err().to_string(),
            "tarball is bigger than 104857600 bytes when decompressed"
        );
        assert!(start.elapsed().as_secs() < 2);
        assert!(listing(tmp.path()).is_empty());

        // Many files, each small: stopped as the sum passes the limit; little is on disk.
        let mut tb = Tb::default();
        for i in 0..10 {
            tb.raw(format!("f{i}").as_bytes(), b'0', &[0; 200 << 10], 0o644, b"");
        }
        let (result, tmp) = run_with(&tb.tgz(), ExtractMode::Extract, &limits(1 << 20, 100));
        assert!(matches!(result, Err(FetchError::TooBig { .. })));
        let on_disk: u64 = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 1 << 20, "{on_disk}");

        // Zeros after the end-of-archive marker, in a skipped global header, or a giant PAX header:
        // all bounded by the overhead allowance, none held in memory.
        let mut tb = Tb::default();
        tb.file("a", "a");
        let mut tail = tb.tar();
        tail.resize(tail.len() + (8 << 20), 0);
        let l = limits(1 << 20, 10);
        assert!(matches!(
            run_with(&gz(&tail), ExtractMode::Source, &l).0,
            Err(FetchError::TooBig { .. })
        ));
        let mut g = Tb::default();
        g.header(b"pax_global_header", b'g', 8 << 20, 0o644, b"");
        g.0.resize(g.0.len() + (8 << 20), b'x');
        assert!(matches!(
            run_with(&gz(&g.tar()), ExtractMode::Source, &l).0,
            Err(FetchError::TooBig { .. })
        ));
        let mut x = Tb::default();
        x.header(b"PaxHeaders/huge", b'x', 1 << 40, 0o644, b"");
        assert_eq!(
            err(&gz(&x.tar()), ExtractMode::Source),
            "failed to extract tarball: extended header of 1099511627776 bytes is too large"
        );
    }

    #[test]
    fn entry_limit() {
        let mut tb = Tb::default();
        tb.pax(b'g', &[("comment", b"c")]).dir("d/");
        for i in 0..4 {
            tb.file(&format!("d/{i}"), "x");
        }
        let l = limits(1 << 20, 5);
        assert_eq!(run_with(&tb.tgz(), ExtractMode::Source, &l).0.unwrap().files, 4);
        tb.file("one-more", "x");
        let msg = run_with(&tb.tgz(), ExtractMode::Source, &l)
            .0
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "tarball has more than 5 entries");
    }

    #[test]
    fn local_files_and_read_errors() {
        let mut tb = Tb::default();
        tb.file("a", "a");
        let src = tempfile::tempdir().unwrap();
        let path = src.path().join("s.tgz");
        std::fs::write(&path, tb.tgz()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(out.path(), cap_std::ambient_authority()).unwrap();
        let unpacked = unpack_file(
            &path,
            &dir,
            ExtractMode::Source,
            &Limits::for_mode(ExtractMode::Source),
        )
        .unwrap();
        assert_eq!(unpacked.files, 1);
        let missing = unpack_file(
            &src.path().join("nope.tgz"),
            &dir,
            ExtractMode::Source,
            &limits(10, 10),
        );
        assert!(missing.unwrap_err().to_string().starts_with("failed to open '"));

        struct Failing(Vec<u8>);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let tgz = tb.tgz();
        let out = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(out.path(), cap_std::ambient_authority()).unwrap();
        let result = unpack(
            Failing(tgz[..20].to_vec()),
            &dir,
            ExtractMode::Source,
            &limits(10, 10),
        );
        assert!(matches!(result, Err(FetchError::Read(e)) if e.to_string() == "disk on fire"));
    }
}
