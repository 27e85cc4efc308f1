//! Archive format v1 (spec §5.1): a strict reader that reports every rule an archive breaks, a small
//! reference writer, and a raw tar writer for hostile test inputs.
//!
//! The checker parses the gzip member and the tar blocks itself (no trust in a library's leniency) and
//! cross-checks the entry list with the `tar` crate. Rules checked, all of them on every archive:
//!
//! - exactly one gzip member: magic, CM 8, FLG 0, MTIME 0, OS 255, valid CRC32/ISIZE trailer, no byte after it;
//! - tar blocks: valid header checksum, USTAR magic `ustar\0` + version `00`, typeflag `0`, `5` or `x`;
//!   `x` headers carry exactly one `path` record, only for names longer than 100 bytes, and precede a file or
//!   directory; empty prefix and link name; uid/gid/mtime/device numbers 0; empty uname/gname;
//! - names: not empty, no root entry, no leading `./` or `/`, no empty, `.` or `..` component, UTF-8,
//!   directories end with `/` and files do not; files 0644/0755, directories 0755 (and size 0);
//! - walk order (paths compared as lists of components, bytewise), no duplicates, every parent directory
//!   present before its contents;
//! - two zero blocks at the end and nothing after them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use flate2::{Compression, Crc, Decompress, FlushDecompress, GzBuilder, Status};

/// Largest decompressed stream the checker accepts (the conformance artifacts are tiny).
const MAX_TAR_BYTES: usize = 1 << 30;
const BLOCK: usize = 512;

/// What a (valid or not) archive contains, as far as it could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Entries in archive order (names as stored, directories with their trailing `/`; PAX headers folded in).
    pub entries: Vec<Entry>,
    /// Regular files by path (no trailing slash).
    pub files: BTreeMap<String, ArchiveFile>,
    /// Directory paths without the trailing slash.
    pub dirs: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveFile {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The result of [`inspect`]: what could be read plus every rule violation found.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    pub listing: Listing,
    pub violations: Vec<String>,
}

impl Inspection {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks a `.tar.gz` against every format v1 rule. `Err` lists all violations, one per line.
pub fn verify(bytes: &[u8]) -> Result<Listing, String> {
    let inspection = inspect(bytes);
    if inspection.violations.is_empty() {
        Ok(inspection.listing)
    } else {
        Err(inspection.violations.join("\n"))
    }
}

/// [`verify`] for a file on disk.
pub fn verify_file(path: &Path) -> Result<Listing, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    verify(&bytes)
}

/// Reads a `.tar.gz` and reports every format v1 violation (gzip container and tar stream).
pub fn inspect(bytes: &[u8]) -> Inspection {
    let mut violations = Vec::new();
    let tar = gunzip_checked(bytes, &mut violations);
    let mut inspection = match tar {
        Some(tar) => inspect_tar(&tar),
        None => Inspection::default(),
    };
    violations.append(&mut inspection.violations);
    inspection.violations = violations;
    inspection
}

/// Decompresses exactly one gzip member, recording container violations. `None` when the deflate stream
/// cannot be read at all.
pub fn gunzip_checked(bytes: &[u8], violations: &mut Vec<String>) -> Option<Vec<u8>> {
    if bytes.len() < 18 {
        violations.push(format!(
            "gzip: {} bytes is too short for a gzip member",
            bytes.len()
        ));
        return None;
    }
    if bytes[0..2] != [0x1f, 0x8b] {
        violations.push(format!(
            "gzip: bad magic {:02x}{:02x} (not gzip)",
            bytes[0], bytes[1]
        ));
        return None;
    }
    if bytes[2] != 8 {
        violations.push(format!(
            "gzip: compression method {} (want 8 = deflate)",
            bytes[2]
        ));
        return None;
    }
    let flg = bytes[3];
    if flg != 0 {
        violations.push(format!(
            "gzip: FLG = {flg:#04x} (want 0: no FNAME/FCOMMENT/FEXTRA/FHCRC/FTEXT)"
        ));
    }
    let mtime = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if mtime != 0 {
        violations.push(format!("gzip: MTIME = {mtime} (want 0)"));
    }
    if bytes[9] != 255 {
        violations.push(format!("gzip: OS = {} (want 255)", bytes[9]));
    }
    // Skip optional header fields so that a non-zero FLG still lets the rest be checked.
    let mut pos = 10usize;
    if flg & 0x04 != 0 {
        if pos + 2 > bytes.len() {
            violations.push("gzip: truncated FEXTRA".into());
            return None;
        }
        let xlen = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]) as usize;
        pos += 2 + xlen;
    }
    for (bit, what) in [(0x08u8, "FNAME"), (0x10, "FCOMMENT")] {
        if flg & bit != 0 {
            match bytes
                .get(pos..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(n) => pos += n + 1,
                None => {
                    violations.push(format!("gzip: unterminated {what}"));
                    return None;
                }
            }
        }
    }
    if flg & 0x02 != 0 {
        pos += 2;
    }
    if pos >= bytes.len() {
        violations.push("gzip: no deflate data".into());
        return None;
    }

    let input = &bytes[pos..];
    let mut inflater = Decompress::new(false);
    let mut out: Vec<u8> = Vec::with_capacity(input.len().saturating_mul(4).clamp(4096, 64 << 20));
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = inflater.total_in() as usize;
        let produced = out.len();
        let status = match inflater.decompress_vec(&input[consumed..], &mut out, FlushDecompress::None) {
            Ok(s) => s,
            Err(e) => {
                violations.push(format!("gzip: corrupt deflate stream: {e}"));
                return None;
            }
        };
        if out.len() > MAX_TAR_BYTES {
            violations.push(format!("gzip: decompressed stream exceeds {MAX_TAR_BYTES} bytes"));
            return None;
        }
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError => {
                let progressed = inflater.total_in() as usize != consumed || out.len() != produced;
                if !progressed && out.len() < out.capacity() {
                    violations.push("gzip: deflate stream is truncated".into());
                    return None;
                }
            }
        }
    }
    let end = pos + inflater.total_in() as usize;
    match bytes.get(end..end + 8) {
        None => violations.push("gzip: missing CRC32/ISIZE trailer".into()),
        Some(trailer) => {
            let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
            let mut want = Crc::new();
            want.update(&out);
            if crc != want.sum() {
                violations.push(format!(
                    "gzip: CRC32 {crc:08x} does not match the data ({:08x})",
                    want.sum()
                ));
            }
            if isize != out.len() as u32 {
                violations.push(format!(
                    "gzip: ISIZE {isize} does not match the data length {}",
                    out.len()
                ));
            }
            let rest = &bytes[end + 8..];
            if rest.starts_with(&[0x1f, 0x8b]) {
                violations.push("gzip: more than one gzip member".into());
            } else if !rest.is_empty() {
                violations.push(format!("gzip: {} bytes after the gzip member", rest.len()));
            }
        }
    }
    Some(out)
}

/// Checks an uncompressed tar stream against the format v1 tar rules.
pub fn inspect_tar(tar: &[u8]) -> Inspection {
    let mut v: Vec<String> = Vec::new();
    let mut listing = Listing::default();
    let mut off = 0usize;
    let mut pending_path: Option<String> = None;
    let mut prev: Option<Vec<Vec<u8>>> = None;
    let mut seen: BTreeSet<String> = BTreeSet::new();

    loop {
        let Some(block) = tar.get(off..off + BLOCK) else {
            if off == tar.len() {
                v.push("tar: stream ends without the two zero end-of-archive blocks".into());
            } else {
                v.push(format!(
                    "tar: stream ends with a partial block ({} bytes)",
                    tar.len() - off
                ));
            }
            break;
        };
        if block.iter().all(|&b| b == 0) {
            match tar.get(off + BLOCK..off + 2 * BLOCK) {
                None => v.push("tar: only one zero end-of-archive block".into()),
                Some(second) if second.iter().any(|&b| b != 0) => v.push(format!(
                    "tar: zero block at offset {off} followed by a non-zero block"
                )),
                Some(_) => {
                    let after = tar.len() - (off + 2 * BLOCK);
                    if after != 0 {
                        v.push(format!(
                            "tar: {after} bytes after the two zero end-of-archive blocks"
                        ));
                    }
                }
            }
            if pending_path.is_some() {
                v.push("tar: PAX header not followed by an entry".into());
            }
            break;
        }

        let at = format!("tar header at offset {off}");
        check_header_common(block, &at, &mut v);
        let typeflag = block[156];
        let size = match parse_octal(&block[124..136]) {
            Some(s) => s,
            None => {
                v.push(format!(
                    "{at}: unreadable size field {:?}",
                    String::from_utf8_lossy(&block[124..136])
                ));
                break;
            }
        };
        let data_start = off + BLOCK;
        let Some(data) = usize::try_from(size)
            .ok()
            .and_then(|s| tar.get(data_start..data_start + s))
        else {
            v.push(format!(
                "{at}: entry data ({size} bytes) runs past the end of the stream"
            ));
            break;
        };
        off = data_start + (size as usize).div_ceil(BLOCK) * BLOCK;
        let header_name = cstr(&block[0..100]);

        match typeflag {
            b'x' => {
                if pending_path.is_some() {
                    v.push(format!("{at}: two PAX headers in a row"));
                }
                match parse_pax(data) {
                    Err(e) => v.push(format!("{at}: bad PAX records: {e}")),
                    Ok(records) => {
                        let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
                        if keys != ["path"] {
                            v.push(format!(
                                "{at}: PAX header must hold exactly one `path` record, has {keys:?}"
                            ));
                        }
                        if let Some((_, p)) = records.iter().find(|(k, _)| k == "path") {
                            if p.len() <= 100 {
                                v.push(format!(
                                    "{at}: PAX path record for {p:?}, which fits the 100-byte name field"
                                ));
                            }
                            pending_path = Some(p.clone());
                        }
                    }
                }
            }
            b'0' | b'5' => {
                let name = match pending_path.take() {
                    Some(p) => p,
                    None => match String::from_utf8(header_name.to_vec()) {
                        Ok(s) => s,
                        Err(_) => {
                            let lossy = String::from_utf8_lossy(header_name).into_owned();
                            v.push(format!("{at}: name {lossy:?} is not UTF-8"));
                            lossy
                        }
                    },
                };
                let is_dir = typeflag == b'5';
                let mode = parse_octal(&block[100..108]).unwrap_or(u64::MAX) as u32;
                let at = format!("entry {name:?}");
                check_name(&name, is_dir, &at, &mut v);
                if is_dir {
                    if mode != 0o755 {
                        v.push(format!("{at}: directory mode {mode:o} (want 755)"));
                    }
                    if size != 0 {
                        v.push(format!("{at}: directory with size {size}"));
                    }
                } else if mode != 0o644 && mode != 0o755 {
                    v.push(format!("{at}: file mode {mode:o} (want 644 or 755)"));
                }

                let trimmed = name.strip_suffix('/').unwrap_or(&name).to_string();
                let comps: Vec<Vec<u8>> = trimmed.split('/').map(|c| c.as_bytes().to_vec()).collect();
                if let Some(p) = &prev {
                    if comps == *p {
                        v.push(format!("{at}: duplicate entry"));
                    } else if comps < *p {
                        v.push(format!(
                            "{at}: out of walk order (after {:?})",
                            join_components(p)
                        ));
                    }
                }
                if comps.len() > 1 {
                    let parent = join_components(&comps[..comps.len() - 1]);
                    if !listing.dirs.contains(&parent) {
                        v.push(format!(
                            "{at}: parent directory {parent:?} has no entry before it"
                        ));
                    }
                }
                if !seen.insert(trimmed.clone()) && prev.as_ref() != Some(&comps) {
                    v.push(format!("{at}: path appears twice"));
                }
                prev = Some(comps);
                listing.entries.push(Entry {
                    path: name.clone(),
                    kind: if is_dir { EntryKind::Dir } else { EntryKind::File },
                    mode,
                    size,
                });
                if is_dir {
                    listing.dirs.insert(trimmed);
                } else {
                    listing.files.insert(
                        trimmed,
                        ArchiveFile {
                            data: data.to_vec(),
                            mode,
                        },
                    );
                }
            }
            other => {
                pending_path = None;
                v.push(format!(
                    "{at}: typeflag {:?} ({}) is not allowed (only '0', '5', 'x')",
                    other as char,
                    String::from_utf8_lossy(header_name)
                ));
            }
        }
    }

    cross_check_with_tar_crate(tar, &listing, &mut v);
    Inspection {
        listing,
        violations: v,
    }
}

fn check_header_common(block: &[u8], at: &str, v: &mut Vec<String>) {
    let stored = parse_octal(&block[148..156]);
    let actual: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as u64 })
        .sum();
    if stored != Some(actual) {
        v.push(format!(
            "{at}: header checksum {stored:?} does not match {actual}"
        ));
    }
    if &block[257..263] != b"ustar\0" || &block[263..265] != b"00" {
        v.push(format!(
            "{at}: not a USTAR header (magic {:?}, version {:?})",
            String::from_utf8_lossy(&block[257..263]),
            String::from_utf8_lossy(&block[263..265])
        ));
    }
    for (range, field) in [(108..116, "uid"), (116..124, "gid"), (136..148, "mtime")] {
        match parse_octal(&block[range.clone()]) {
            Some(0) => {}
            other => v.push(format!(
                "{at}: {field} = {} (want 0)",
                other
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| format!("{:?}", &block[range]))
            )),
        }
    }
    for (range, field) in [(329..337, "devmajor"), (337..345, "devminor")] {
        let f = &block[range];
        if !(f.iter().all(|&b| b == 0) || parse_octal(f) == Some(0)) {
            v.push(format!("{at}: {field} is not 0"));
        }
    }
    for (range, field) in [
        (265..297, "uname"),
        (297..329, "gname"),
        (157..257, "linkname"),
        (345..500, "prefix"),
    ] {
        let f = &block[range];
        if f.iter().any(|&b| b != 0) {
            v.push(format!(
                "{at}: {field} {:?} is not empty",
                String::from_utf8_lossy(cstr(f))
            ));
        }
    }
}

fn check_name(name: &str, is_dir: bool, at: &str, v: &mut Vec<String>) {
    if name.is_empty() {
        v.push(format!("{at}: empty name"));
        return;
    }
    if matches!(name, "." | "./" | "/") {
        v.push(format!("{at}: root entry"));
        return;
    }
    if name.starts_with("./") {
        v.push(format!("{at}: name starts with ./"));
    }
    if name.starts_with('/') {
        v.push(format!("{at}: absolute name"));
    }
    if is_dir && !name.ends_with('/') {
        v.push(format!("{at}: directory name does not end with /"));
    }
    if !is_dir && name.ends_with('/') {
        v.push(format!("{at}: file name ends with /"));
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let trimmed = trimmed.strip_prefix('/').unwrap_or(trimmed);
    for comp in trimmed.split('/') {
        match comp {
            "" => v.push(format!("{at}: empty path component")),
            "." => v.push(format!("{at}: `.` path component")),
            ".." => v.push(format!("{at}: `..` path component")),
            _ => {}
        }
    }
}

fn cross_check_with_tar_crate(tar: &[u8], listing: &Listing, v: &mut Vec<String>) {
    let mut archive = tar::Archive::new(tar);
    let mut theirs = Vec::new();
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            v.push(format!("tar crate cannot read the stream: {e}"));
            return;
        }
    };
    for entry in entries {
        match entry {
            Ok(mut e) => {
                let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let mut data = Vec::new();
                if let Err(err) = e.read_to_end(&mut data) {
                    v.push(format!("tar crate cannot read {path:?}: {err}"));
                    return;
                }
                theirs.push((path.trim_end_matches('/').to_string(), data.len() as u64));
            }
            Err(e) => {
                // Our own parser has already described what is wrong; only report a silent disagreement.
                if v.is_empty() {
                    v.push(format!("tar crate rejects the stream: {e}"));
                }
                return;
            }
        }
    }
    let ours: Vec<(String, u64)> = listing
        .entries
        .iter()
        .map(|e| (e.path.trim_end_matches('/').to_string(), e.size))
        .collect();
    if v.is_empty() && ours != theirs {
        v.push(format!(
            "the tar crate reads a different entry list: {theirs:?} (ours: {ours:?})"
        ));
    }
}

fn join_components(comps: &[Vec<u8>]) -> String {
    let parts: Vec<String> = comps
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    parts.join("/")
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Parses a tar numeric field: optional leading spaces, octal digits, terminated by NUL/space or the end.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = field.iter().skip_while(|&&b| b == b' ');
    let mut n: u64 = 0;
    let mut digits = 0;
    let mut ended = false;
    for &b in s {
        match b {
            b'0'..=b'7' if !ended => {
                n = n.checked_mul(8)?.checked_add((b - b'0') as u64)?;
                digits += 1;
            }
            0 | b' ' => ended = true,
            _ => return None,
        }
    }
    if digits == 0 { None } else { Some(n) }
}

/// Parses PAX records (`<len> <key>=<value>\n`), in order.
pub fn parse_pax(data: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("record without length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad record length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(format!("record length {len} does not fit"));
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without '='")?;
        let key = String::from_utf8(record[..eq].to_vec()).map_err(|_| "key not UTF-8")?;
        let value = String::from_utf8(record[eq + 1..].to_vec()).map_err(|_| "value not UTF-8")?;
        out.push((key, value));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Compares two paths in walk order: as lists of `/`-separated components, bytewise.
pub fn walk_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.trim_end_matches('/')
        .split('/')
        .cmp(b.trim_end_matches('/').split('/'))
}

// ---------------------------------------------------------------------------------------------------------
// Reference writer

/// One node of a staged tree for [`pack_v1`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeNode {
    Dir,
    File { data: Vec<u8>, executable: bool },
}

/// An independent implementation of archive format v1 (for the harness's own tests). Keys are paths
/// without trailing slashes; parent directories must be listed too. Numeric fields use the common
/// zero-padded octal form; §5.1 does not fix that formatting, so compare engine archives with it only by
/// content, never byte for byte.
pub fn pack_v1(tree: &BTreeMap<String, TreeNode>) -> Vec<u8> {
    let mut paths: Vec<&String> = tree.keys().collect();
    paths.sort_by(|a, b| walk_order(a, b));
    let mut tar = Vec::new();
    for path in paths {
        let (name, typeflag, mode, data): (String, u8, u32, &[u8]) = match &tree[path] {
            TreeNode::Dir => (format!("{path}/"), b'5', 0o755, &[]),
            TreeNode::File { data, executable } => (
                path.clone(),
                b'0',
                if *executable { 0o755 } else { 0o644 },
                data.as_slice(),
            ),
        };
        if name.len() > 100 {
            let records = pax_records(&[("path", &name)]);
            let header = v1_header("PaxHeader", b'x', 0o644, records.len() as u64);
            tar.extend_from_slice(&header);
            push_padded(&mut tar, &records);
        }
        let header = v1_header(truncate_utf8(&name, 100), typeflag, mode, data.len() as u64);
        tar.extend_from_slice(&header);
        push_padded(&mut tar, data);
    }
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    let mut gz = GzBuilder::new().write(Vec::new(), Compression::new(6));
    gz.write_all(&tar).expect("writing to a Vec");
    gz.finish().expect("writing to a Vec")
}

fn v1_header(name: &str, typeflag: u8, mode: u32, size: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    put_octal(&mut h[100..108], mode as u64);
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], 0);
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put_octal(&mut h[329..337], 0);
    put_octal(&mut h[337..345], 0);
    finish_checksum(&mut h);
    h
}

// ---------------------------------------------------------------------------------------------------------
// Raw tar writer for test inputs

/// Owner, group and time written into every [`TarEntry`] header (the engine must ignore them).
pub const INPUT_UID: u64 = 1000;
pub const INPUT_GID: u64 = 1000;
pub const INPUT_MTIME: u64 = 1_700_000_000;
pub const INPUT_UNAME: &str = "builder";
pub const INPUT_GNAME: &str = "staff";

/// One entry of a test tarball. Names and link targets are written verbatim (`../x`, `/abs`, `./a`,
/// `a\b` included); a name or target longer than 100 bytes gets a PAX `x` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TarEntry {
    File {
        name: String,
        data: Vec<u8>,
        mode: u32,
    },
    /// A regular file of `size` zero bytes, streamed (never held in memory).
    Zeros {
        name: String,
        size: u64,
        mode: u32,
    },
    /// A regular file whose bytes are streamed from a file on disk.
    FileFrom {
        name: String,
        path: std::path::PathBuf,
        mode: u32,
    },
    Dir {
        name: String,
        mode: u32,
    },
    Symlink {
        name: String,
        target: String,
    },
    Hardlink {
        name: String,
        target: String,
    },
    Fifo {
        name: String,
    },
    /// A PAX global header (typeflag `g`), as `git archive` writes first.
    PaxGlobal {
        records: Vec<(String, String)>,
    },
    /// A regular-file header declaring `declared_size` bytes followed by only `data` (a lying header).
    Lying {
        name: String,
        declared_size: u64,
        data: Vec<u8>,
    },
}

/// Writes `entries` in order as a tar stream (end blocks plus padding to a 10 KiB record, like GNU tar).
pub fn write_tar<W: Write>(mut w: W, entries: &[TarEntry]) -> io::Result<W> {
    let mut written: u64 = 0;
    for entry in entries {
        written += write_tar_entry(&mut w, entry)?;
    }
    w.write_all(&[0u8; 2 * BLOCK])?;
    written += 2 * BLOCK as u64;
    let record = 20 * BLOCK as u64;
    let pad = (record - written % record) % record;
    io::copy(&mut io::repeat(0).take(pad), &mut w)?;
    Ok(w)
}

/// Writes `entries` to `path` as a tarball, gzip-compressed when `gzip`.
pub fn write_tarball(path: &Path, entries: &[TarEntry], gzip: bool) -> io::Result<()> {
    let file = io::BufWriter::new(fs::File::create(path)?);
    if gzip {
        let gz = write_tar(
            flate2::write::GzEncoder::new(file, Compression::default()),
            entries,
        )?;
        gz.finish()?.flush()
    } else {
        write_tar(file, entries)?.flush()
    }
}

fn write_tar_entry<W: Write>(w: &mut W, entry: &TarEntry) -> io::Result<u64> {
    let mut n = 0;
    match entry {
        TarEntry::File { name, data, mode } => {
            n += input_header(w, name, b'0', *mode, data.len() as u64, "")?;
            n += write_padded(w, data)?;
        }
        TarEntry::Zeros { name, size, mode } => {
            n += input_header(w, name, b'0', *mode, *size, "")?;
            n += stream_padded(w, &mut io::repeat(0).take(*size), *size)?;
        }
        TarEntry::FileFrom { name, path, mode } => {
            let size = fs::metadata(path)?.len();
            n += input_header(w, name, b'0', *mode, size, "")?;
            n += stream_padded(w, &mut fs::File::open(path)?, size)?;
        }
        TarEntry::Dir { name, mode } => n += input_header(w, name, b'5', *mode, 0, "")?,
        TarEntry::Symlink { name, target } => n += input_header(w, name, b'2', 0o777, 0, target)?,
        TarEntry::Hardlink { name, target } => n += input_header(w, name, b'1', 0o644, 0, target)?,
        TarEntry::Fifo { name } => n += input_header(w, name, b'6', 0o644, 0, "")?,
        TarEntry::PaxGlobal { records } => {
            let pairs: Vec<(&str, &str)> = records.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let data = pax_records(&pairs);
            let h = raw_header("pax_global_header", b'g', 0o666, data.len() as u64, "");
            w.write_all(&h)?;
            n += BLOCK as u64 + write_padded(w, &data)?;
        }
        TarEntry::Lying {
            name,
            declared_size,
            data,
        } => {
            n += input_header(w, name, b'0', 0o644, *declared_size, "")?;
            w.write_all(data)?;
            n += data.len() as u64;
        }
    }
    Ok(n)
}

fn input_header<W: Write>(
    w: &mut W,
    name: &str,
    typeflag: u8,
    mode: u32,
    size: u64,
    link: &str,
) -> io::Result<u64> {
    let mut n = 0;
    let mut short_name = name;
    let mut short_link = link;
    let mut records: Vec<(&str, &str)> = Vec::new();
    if name.len() > 100 {
        records.push(("path", name));
        short_name = truncate_utf8(name, 100);
    }
    if link.len() > 100 {
        records.push(("linkpath", link));
        short_link = truncate_utf8(link, 100);
    }
    if !records.is_empty() {
        let data = pax_records(&records);
        w.write_all(&raw_header("././@PaxHeader", b'x', 0o644, data.len() as u64, ""))?;
        n += BLOCK as u64 + write_padded(w, &data)?;
    }
    w.write_all(&raw_header(short_name, typeflag, mode, size, short_link))?;
    Ok(n + BLOCK as u64)
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn raw_header(name: &str, typeflag: u8, mode: u32, size: u64, link: &str) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    put_octal(&mut h[100..108], mode as u64);
    put_octal(&mut h[108..116], INPUT_UID);
    put_octal(&mut h[116..124], INPUT_GID);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], INPUT_MTIME);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..265 + INPUT_UNAME.len()].copy_from_slice(INPUT_UNAME.as_bytes());
    h[297..297 + INPUT_GNAME.len()].copy_from_slice(INPUT_GNAME.as_bytes());
    put_octal(&mut h[329..337], 0);
    put_octal(&mut h[337..345], 0);
    finish_checksum(&mut h);
    h
}

/// Zero-padded octal with a NUL terminator; values too large for that use the GNU base-256 form.
fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    if s.len() > width {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        return;
    }
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
}

fn finish_checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn pax_records(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (k, v) in pairs {
        let body = format!(" {k}={v}\n");
        // The length prefix counts itself.
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        let _ = write!(out, "{len}{body}");
    }
    out.into_bytes()
}

fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
}

fn write_padded<W: Write>(w: &mut W, data: &[u8]) -> io::Result<u64> {
    w.write_all(data)?;
    let pad = data.len().div_ceil(BLOCK) * BLOCK - data.len();
    w.write_all(&[0u8; BLOCK][..pad])?;
    Ok((data.len() + pad) as u64)
}

fn stream_padded<W: Write, R: Read>(w: &mut W, r: &mut R, size: u64) -> io::Result<u64> {
    let copied = io::copy(&mut r.take(size), w)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "source shrank while streaming",
        ));
    }
    let pad = (size as usize).div_ceil(BLOCK) * BLOCK - size as usize;
    w.write_all(&[0u8; BLOCK][..pad])?;
    Ok(size + pad as u64)
}

/// A raw, lenient view of one tar header (for checking test inputs, not artifacts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub typeflag: u8,
    pub name: String,
    pub link: String,
    pub size: u64,
    pub uid: u64,
    pub mtime: u64,
}

/// Lists the headers of a (possibly gzip-compressed) tar stream without interpreting PAX records.
pub fn list_raw(bytes: &[u8]) -> io::Result<Vec<RawEntry>> {
    let tar = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        out
    } else {
        bytes.to_vec()
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(block) = tar.get(off..off + BLOCK) {
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let size_field = &block[124..136];
        let size = if size_field[0] & 0x80 != 0 {
            size_field[4..].iter().fold(0u64, |n, &b| (n << 8) | b as u64)
        } else {
            parse_octal(size_field).ok_or_else(|| bad("size"))?
        };
        out.push(RawEntry {
            typeflag: block[156],
            name: String::from_utf8_lossy(cstr(&block[0..100])).into_owned(),
            link: String::from_utf8_lossy(cstr(&block[157..257])).into_owned(),
            size,
            uid: parse_octal(&block[108..116]).unwrap_or(0),
            mtime: parse_octal(&block[136..148]).unwrap_or(0),
        });
        off += BLOCK + (size as usize).div_ceil(BLOCK) * BLOCK;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn tree(items: &[(&str, Option<(&str, bool)>)]) -> BTreeMap<String, TreeNode> {
        items
            .iter()
            .map(|(p, f)| {
                let node = match f {
                    None => TreeNode::Dir,
                    Some((data, executable)) => TreeNode::File {
                        data: data.as_bytes().to_vec(),
                        executable: *executable,
                    },
                };
                (p.to_string(), node)
            })
            .collect()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    fn regzip_v1(tar: &[u8]) -> Vec<u8> {
        let mut gz = GzBuilder::new().write(Vec::new(), Compression::new(6));
        gz.write_all(tar).unwrap();
        gz.finish().unwrap()
    }

    fn layout() -> BTreeMap<String, TreeNode> {
        tree(&[
            ("b.yaml", Some(("b", false))),
            ("a", None),
            ("a/z.yaml", Some(("z", false))),
            ("a.yaml", Some(("a", false))),
            ("a/b", None),
            ("a/b/c.yaml", Some(("c", true))),
        ])
    }

    #[test]
    fn reference_archive_is_valid_and_in_walk_order() {
        let listing = verify(&pack_v1(&layout())).unwrap();
        let order: Vec<&str> = listing.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            order,
            ["a/", "a/b/", "a/b/c.yaml", "a/z.yaml", "a.yaml", "b.yaml"]
        );
        assert_eq!(
            listing.files["a/b/c.yaml"],
            ArchiveFile {
                data: b"c".to_vec(),
                mode: 0o755
            }
        );
        assert_eq!(listing.files["a.yaml"].mode, 0o644);
        assert_eq!(listing.dirs, ["a", "a/b"].iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn empty_archive_is_valid() {
        let listing = verify(&pack_v1(&BTreeMap::new())).unwrap();
        assert!(listing.entries.is_empty());
    }

    #[test]
    fn long_names_use_one_pax_path_record() {
        let long = format!("d/{}", "x".repeat(120));
        let t = tree(&[("d", None), (long.as_str(), Some(("data", false)))]);
        let listing = verify(&pack_v1(&t)).unwrap();
        assert_eq!(listing.files[&long].data, b"data");
        // Exactly 100 bytes still fits the name field: a PAX header for it is a violation.
        let exact = "y".repeat(100);
        let mut tar = Vec::new();
        tar.extend_from_slice(&v1_header(
            "PaxHeader",
            b'x',
            0o644,
            pax_records(&[("path", &exact)]).len() as u64,
        ));
        push_padded(&mut tar, &pax_records(&[("path", &exact)]));
        tar.extend_from_slice(&v1_header("", b'0', 0o644, 0));
        tar.extend_from_slice(&[0; 1024]);
        let ins = inspect(&regzip_v1(&tar));
        assert!(
            ins.violations
                .iter()
                .any(|v| v.contains("fits the 100-byte name field")),
            "{:?}",
            ins.violations
        );
        assert!(ins.listing.files.contains_key(&exact));
    }

    #[test]
    fn system_tar_and_gzip_output_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/a.yaml"), "a").unwrap();
        fs::write(src.join("b.yaml"), "b").unwrap();
        let out = dir.path().join("x.tar.gz");
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let ins = inspect(&fs::read(&out).unwrap());
        let all = ins.violations.join("\n");
        for want in [
            "OS = 3",
            "root entry",
            "starts with ./",
            "not a USTAR header",
            "after the two zero",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        // The gzip CLI stores a name and an mtime when compressing a file.
        let plain = dir.path().join("plain.tar");
        fs::write(&plain, pack_tar_only(&layout())).unwrap();
        assert!(
            Command::new("gzip")
                .arg("-6")
                .arg(&plain)
                .status()
                .unwrap()
                .success()
        );
        let ins = inspect(&fs::read(dir.path().join("plain.tar.gz")).unwrap());
        let all = ins.violations.join("\n");
        assert!(all.contains("FLG = 0x08"), "{all}");
        assert!(all.contains("MTIME = "), "{all}");
        // The tar content itself is fine.
        assert_eq!(ins.listing.files.len(), 4, "{all}");
    }

    fn pack_tar_only(t: &BTreeMap<String, TreeNode>) -> Vec<u8> {
        gunzip(&pack_v1(t))
    }

    fn tar_with(mutate: impl FnOnce(&mut Vec<u8>)) -> Vec<String> {
        let mut tar = pack_tar_only(&layout());
        mutate(&mut tar);
        inspect(&regzip_v1(&tar)).violations
    }

    fn set_field(tar: &mut [u8], header_off: usize, range: std::ops::Range<usize>, value: &[u8]) {
        let h: &mut [u8; BLOCK] = (&mut tar[header_off..header_off + BLOCK]).try_into().unwrap();
        h[range.clone()].fill(0);
        h[range.start..range.start + value.len()].copy_from_slice(value);
        finish_checksum(h);
    }

    #[test]
    fn header_field_violations_are_reported() {
        let cases: Vec<(std::ops::Range<usize>, &[u8], &str)> = vec![
            (108..116, b"0001750", "uid = 1000"),
            (116..124, b"0000001", "gid = 1"),
            (136..148, b"00000000001", "mtime = 1"),
            (265..297, b"root", "uname \"root\""),
            (297..329, b"wheel", "gname \"wheel\""),
            (100..108, b"0000750", "directory mode 750"),
            (156..157, b"2", "typeflag '2'"),
            (257..263, b"ustar ", "not a USTAR header"),
            (345..500, b"pre", "prefix"),
        ];
        for (range, value, want) in cases {
            let v = tar_with(|t| set_field(t, 0, range.clone(), value));
            assert!(v.iter().any(|x| x.contains(want)), "{want:?} not in {v:?}");
        }
        // A corrupt checksum.
        let v = tar_with(|t| t[0] = b'q');
        assert!(v.iter().any(|x| x.contains("checksum")), "{v:?}");
    }

    #[test]
    fn name_and_order_violations_are_reported() {
        let mk = |entries: &[(&str, u8, u32)]| {
            let mut tar = Vec::new();
            for (name, flag, mode) in entries {
                tar.extend_from_slice(&v1_header(name, *flag, *mode, 0));
            }
            tar.extend_from_slice(&[0; 1024]);
            inspect(&regzip_v1(&tar)).violations.join("\n")
        };
        assert!(mk(&[("./", b'5', 0o755)]).contains("root entry"));
        assert!(mk(&[("./a", b'0', 0o644)]).contains("starts with ./"));
        assert!(mk(&[("/a", b'0', 0o644)]).contains("absolute name"));
        assert!(mk(&[("a/../b", b'0', 0o644)]).contains("`..` path component"));
        assert!(mk(&[("a", b'5', 0o755)]).contains("does not end with /"));
        assert!(mk(&[("a/", b'0', 0o644)]).contains("file name ends with /"));
        assert!(mk(&[("a", b'0', 0o600)]).contains("file mode 600"));
        assert!(mk(&[("b", b'0', 0o644), ("a", b'0', 0o644)]).contains("out of walk order"));
        assert!(mk(&[("a", b'0', 0o644), ("a", b'0', 0o644)]).contains("duplicate entry"));
        assert!(mk(&[("d/x", b'0', 0o644)]).contains("parent directory \"d\""));
        // Component order, not string order: `a/b` sorts before `a.yaml`.
        assert!(
            mk(&[("a/", b'5', 0o755), ("a.yaml", b'0', 0o644), ("a/b", b'0', 0o644)])
                .contains("out of walk order")
        );
        assert_eq!(
            mk(&[("a/", b'5', 0o755), ("a/b", b'0', 0o644), ("a.yaml", b'0', 0o644)]),
            ""
        );
    }

    #[test]
    fn end_of_archive_violations_are_reported() {
        let v = tar_with(|t| t.truncate(t.len() - BLOCK));
        assert!(v.iter().any(|x| x.contains("only one zero")), "{v:?}");
        let v = tar_with(|t| t.extend_from_slice(&[0; BLOCK]));
        assert!(v.iter().any(|x| x.contains("512 bytes after")), "{v:?}");
        let v = tar_with(|t| t.truncate(t.len() - 2 * BLOCK));
        assert!(v.iter().any(|x| x.contains("without the two zero")), "{v:?}");
    }

    #[test]
    fn gzip_container_violations_are_reported() {
        let good = pack_v1(&layout());
        let mut two = good.clone();
        two.extend_from_slice(&good);
        assert!(
            inspect(&two)
                .violations
                .iter()
                .any(|v| v.contains("more than one gzip member"))
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(
            inspect(&trailing)
                .violations
                .iter()
                .any(|v| v.contains("1 bytes after the gzip member"))
        );
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 0xff;
        assert!(inspect(&bad_crc).violations.iter().any(|v| v.contains("CRC32")));
        let truncated = &good[..good.len() - 12];
        assert!(!inspect(truncated).violations.is_empty());
        let named = {
            let mut gz = GzBuilder::new()
                .filename("x.tar")
                .mtime(7)
                .write(Vec::new(), Compression::new(6));
            gz.write_all(&pack_tar_only(&layout())).unwrap();
            gz.finish().unwrap()
        };
        let v = inspect(&named).violations.join("\n");
        assert!(v.contains("FLG = 0x08") && v.contains("MTIME = 7"), "{v}");
        assert_eq!(inspect(&named).listing.files.len(), 4);
        assert!(inspect(b"not gzip at all, definitely").violations[0].contains("bad magic"));
    }

    #[test]
    fn raw_writer_keeps_hostile_names_and_owners() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar.gz");
        let long = "l".repeat(120);
        let entries = vec![
            TarEntry::PaxGlobal {
                records: vec![("comment".into(), "abc".into())],
            },
            TarEntry::File {
                name: "../x".into(),
                data: b"x".to_vec(),
                mode: 0o644,
            },
            TarEntry::File {
                name: "/abs".into(),
                data: vec![],
                mode: 0o755,
            },
            TarEntry::Hardlink {
                name: "h".into(),
                target: "../x".into(),
            },
            TarEntry::Symlink {
                name: "s".into(),
                target: "/etc".into(),
            },
            TarEntry::Fifo { name: "f".into() },
            TarEntry::Zeros {
                name: "z".into(),
                size: 3 * BLOCK as u64 + 1,
                mode: 0o644,
            },
            TarEntry::Dir {
                name: format!("{long}/"),
                mode: 0o755,
            },
        ];
        write_tarball(&path, &entries, true).unwrap();
        let raw = list_raw(&fs::read(&path).unwrap()).unwrap();
        let flags: Vec<char> = raw.iter().map(|e| e.typeflag as char).collect();
        assert_eq!(flags, ['g', '0', '0', '1', '2', '6', '0', 'x', '5']);
        assert_eq!(raw[1].name, "../x");
        assert_eq!(raw[2].name, "/abs");
        assert_eq!(raw[3].link, "../x");
        assert_eq!(raw[6].size, 1537);
        assert!(
            raw.iter()
                .all(|e| (e.uid == INPUT_UID && e.mtime == INPUT_MTIME) || e.typeflag == b'x')
        );
        // The tar crate reads the long name through the PAX header.
        let tar = gunzip(&fs::read(&path).unwrap());
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(names.last().unwrap(), &format!("{long}/"));
        // Tar stream length is a multiple of the 10 KiB record.
        assert_eq!(tar.len() % (20 * BLOCK), 0);
        // Plain variant is not gzip.
        write_tarball(&path, &entries[..2], false).unwrap();
        assert!(!fs::read(&path).unwrap().starts_with(&[0x1f, 0x8b]));
    }

    #[test]
    fn huge_declared_sizes_use_base_256() {
        let mut tar = Vec::new();
        let entry = TarEntry::Lying {
            name: "huge".into(),
            declared_size: 8 << 30,
            data: vec![0; 10],
        };
        write_tar_entry(&mut tar, &entry).unwrap();
        assert_eq!(tar[124], 0x80);
        tar.extend_from_slice(&[0; 2 * BLOCK]);
        assert_eq!(list_raw(&tar[..BLOCK]).unwrap()[0].size, 8 << 30);
    }

    #[test]
    fn pax_records_length_prefix_counts_itself() {
        for value in ["a", &"v".repeat(5), &"w".repeat(93), &"z".repeat(995)] {
            let recs = pax_records(&[("path", value)]);
            assert_eq!(
                parse_pax(&recs).unwrap(),
                vec![("path".to_string(), value.to_string())]
            );
        }
    }
}
