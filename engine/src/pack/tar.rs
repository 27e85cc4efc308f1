//! USTAR / PAX header encoding for archive format v1 (spec §5.1).
//!
//! Written by hand rather than with `tar::Builder` so that every byte of every header is fixed by this
//! file alone: a dependency update must never be able to change a digest. Changing anything here is a
//! format-version bump.

use std::io::Write as _;

/// Tar block size; headers and padded data are multiples of it.
pub const BLOCK: usize = 512;

/// Width of the ustar `name` field; longer names go into a PAX `path` record.
pub const NAME_LEN: usize = 100;

/// Largest size the 11-digit octal `size` field can hold (8 GiB - 1); larger files get a PAX `size` record.
pub const MAX_USTAR_SIZE: u64 = 0o777_7777_7777;

/// Directory mode (spec §5.1).
pub const MODE_DIR: u32 = 0o755;
/// Mode of a file with any executable bit set.
pub const MODE_EXEC: u32 = 0o755;
/// Mode of every other file.
pub const MODE_FILE: u32 = 0o644;
/// Mode of PAX extended headers (readers ignore it; fixed for determinism).
const MODE_PAX: u32 = 0o644;

/// Typeflag of a regular file.
pub const TYPE_FILE: u8 = b'0';
/// Typeflag of a directory.
pub const TYPE_DIR: u8 = b'5';
/// Typeflag of a PAX extended header applying to the next entry.
pub const TYPE_PAX: u8 = b'x';

/// Prefix of the (frozen) name given to PAX extended header entries: `PaxHeader/<entry name>`, cut to
/// [`NAME_LEN`] bytes. Only non-PAX readers ever see it.
const PAX_NAME_PREFIX: &str = "PaxHeader/";

/// Number of zero bytes needed after `size` bytes of entry data to reach a block boundary.
pub fn padding(size: u64) -> usize {
    // The remainder is < 512, so the cast is lossless.
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Appends the header block(s) of one entry to `out`: a PAX extended header (plus its padded data) when
/// the name or size does not fit the ustar fields, then the ustar header itself. `name` is the stored
/// name (directories already end with `/`); `size` is 0 for directories.
pub fn encode_headers(name: &str, typeflag: u8, mode: u32, size: u64, out: &mut Vec<u8>) {
    let long_name = name.len() > NAME_LEN;
    let big = size > MAX_USTAR_SIZE;
    if long_name || big {
        let mut records = Vec::new();
        // Records in key order; "path" then "size" is also the order they are tested for here.
        if long_name {
            pax_record("path", name.as_bytes(), &mut records);
        }
        if big {
            pax_record("size", size.to_string().as_bytes(), &mut records);
        }
        let pax_name = format!("{PAX_NAME_PREFIX}{name}");
        out.extend_from_slice(&ustar_header(
            truncate(&pax_name, NAME_LEN).as_bytes(),
            MODE_PAX,
            records.len() as u64,
            TYPE_PAX,
        ));
        let pad = padding(records.len() as u64);
        out.extend_from_slice(&records);
        out.resize(out.len() + pad, 0);
    }
    // The truncated name and the zero size are only for readers that ignore PAX.
    out.extend_from_slice(&ustar_header(
        truncate(name, NAME_LEN).as_bytes(),
        mode,
        if big { 0 } else { size },
        typeflag,
    ));
}

/// One ustar header block. `name` must fit [`NAME_LEN`] and `size` [`MAX_USTAR_SIZE`].
fn ustar_header(name: &[u8], mode: u32, size: u64, typeflag: u8) -> [u8; BLOCK] {
    debug_assert!(name.len() <= NAME_LEN && size <= MAX_USTAR_SIZE);
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0); // mtime
    h[156] = typeflag;
    // linkname (157..257) stays zero.
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // uname (265..297) and gname (297..329) stay empty.
    octal(&mut h[329..337], 0); // devmajor
    octal(&mut h[337..345], 0); // devminor
    // prefix (345..500) stays empty: no prefix splitting.
    // POSIX checksum: byte sum with the checksum field read as spaces; stored as 6 octal digits, NUL, space
    // (the traditional form every reader accepts). The maximum, 512 * 255, fits 6 octal digits.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h
}

/// Fills `field` with zero-padded octal digits of `value` followed by one NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    debug_assert!(
        value >> (3 * digits) == 0,
        "{value} does not fit {digits} octal digits"
    );
    for (i, b) in field[..digits].iter_mut().rev().enumerate() {
        *b = b'0' + ((value >> (3 * i)) & 7) as u8;
    }
    field[digits] = 0;
}

/// Appends one PAX record `"<len> <key>=<value>\n"`, where `len` counts the whole record including itself.
fn pax_record(key: &str, value: &[u8], out: &mut Vec<u8>) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + decimal_digits(len) {
        len = rest + decimal_digits(len);
    }
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{len} {key}=");
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn decimal_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary (keeps fields valid UTF-8).
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_str(h: &[u8], range: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&h[range]).unwrap()
    }

    #[test]
    fn ustar_fields_exact() {
        let mut out = Vec::new();
        encode_headers("a/b.yaml", TYPE_FILE, MODE_FILE, 1234, &mut out);
        assert_eq!(out.len(), BLOCK);
        let h = &out[..];
        assert_eq!(&h[..8], b"a/b.yaml");
        assert!(h[8..100].iter().all(|&b| b == 0));
        assert_eq!(field_str(h, 100..108), "0000644\0");
        assert_eq!(field_str(h, 108..116), "0000000\0");
        assert_eq!(field_str(h, 116..124), "0000000\0");
        assert_eq!(field_str(h, 124..136), "00000002322\0");
        assert_eq!(field_str(h, 136..148), "00000000000\0");
        assert_eq!(h[156], b'0');
        assert!(h[157..257].iter().all(|&b| b == 0));
        assert_eq!(&h[257..265], b"ustar\x0000");
        assert!(h[265..329].iter().all(|&b| b == 0));
        assert_eq!(field_str(h, 329..345), "0000000\x000000000\0");
        assert!(h[345..].iter().all(|&b| b == 0));
        // Checksum: 6 octal digits, NUL, space; equals the byte sum with the field as spaces.
        assert_eq!(h[154], 0);
        assert_eq!(h[155], b' ');
        let stored = u32::from_str_radix(field_str(h, 148..154), 8).unwrap();
        let mut copy = h.to_vec();
        copy[148..156].fill(b' ');
        assert_eq!(stored, copy.iter().map(|&b| u32::from(b)).sum::<u32>());
    }

    #[test]
    fn name_of_exactly_100_bytes_needs_no_pax() {
        let name = "n".repeat(NAME_LEN);
        let mut out = Vec::new();
        encode_headers(&name, TYPE_FILE, MODE_EXEC, 0, &mut out);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[..NAME_LEN], name.as_bytes());
        assert_eq!(field_str(&out, 100..108), "0000755\0");
    }

    #[test]
    fn long_name_gets_pax_path_record() {
        // 'é' is 2 bytes: a 101-byte name whose byte 100 is inside a char.
        let name = format!("{}é/", "d".repeat(99));
        let mut out = Vec::new();
        encode_headers(&name, TYPE_DIR, MODE_DIR, 0, &mut out);
        assert_eq!(out.len(), 3 * BLOCK);
        let pax = &out[..BLOCK];
        assert_eq!(pax[156], TYPE_PAX);
        let record = format!("112 path={name}\n");
        assert_eq!(record.len(), 112);
        assert_eq!(field_str(pax, 124..136), format!("{:011o}\0", record.len()));
        assert_eq!(&out[BLOCK..BLOCK + record.len()], record.as_bytes());
        assert!(out[BLOCK + record.len()..2 * BLOCK].iter().all(|&b| b == 0));
        let h = &out[2 * BLOCK..];
        assert_eq!(h[156], TYPE_DIR);
        // Truncated on a char boundary: 99 'd's.
        assert_eq!(&h[..99], "d".repeat(99).as_bytes());
        assert_eq!(h[99], 0);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [
            0usize, 1, 5, 6, 7, 8, 90, 91, 92, 93, 94, 95, 990, 991, 992, 993, 994, 995,
        ] {
            let mut out = Vec::new();
            pax_record("path", "v".repeat(value_len).as_bytes(), &mut out);
            let text = std::str::from_utf8(&out).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{text:?}");
        }
    }

    #[test]
    fn huge_size_gets_pax_size_record() {
        let size = MAX_USTAR_SIZE + 1;
        let mut out = Vec::new();
        encode_headers("big.bin", TYPE_FILE, MODE_FILE, size, &mut out);
        assert_eq!(out.len(), 3 * BLOCK);
        let record = format!("19 size={size}\n");
        assert_eq!(record.len(), 19);
        assert_eq!(&out[BLOCK..BLOCK + 19], record.as_bytes());
        assert_eq!(field_str(&out, 2 * BLOCK + 124..2 * BLOCK + 136), "00000000000\0");
        // The largest ustar size still fits without PAX.
        let mut out = Vec::new();
        encode_headers("big.bin", TYPE_FILE, MODE_FILE, MAX_USTAR_SIZE, &mut out);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(field_str(&out, 124..136), "77777777777\0");
    }

    #[test]
    fn padding_to_block() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
