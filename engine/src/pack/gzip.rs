//! Parallel gzip whose output does not depend on the thread count (spec §5.1 "compression").
//!
//! The uncompressed stream is cut by offset into [`BLOCK_SIZE`] blocks. Each block is compressed on its
//! own as raw deflate (level [`LEVEL`], pinned zlib-rs) with the previous [`DICT_SIZE`] bytes of input as
//! preset dictionary; every block but the last ends with a sync flush (byte-aligned, no BFINAL), the last
//! with finish. The concatenation is one valid deflate stream (the pigz scheme), and because each block's
//! bytes are a pure function of (dictionary, block, is-last), every thread count produces identical
//! archives. Block size, dictionary size, level and flush kinds are therefore part of format v1.
//!
//! `threads` counts deflate workers. The caller's thread fills the next block (reading files, CRC-32)
//! while the workers compress earlier ones, as `tar | gzip` overlaps archiving and compression; with one
//! worker that hides the reading behind the compression. The last block is compressed on the caller's
//! thread, so an archive of one block (small artifacts, the common case) never starts a thread.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::mem;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Deflate level (spec §5.1: fixed level 6).
pub const LEVEL: u32 = 6;

/// Uncompressed bytes per independently compressed block. Frozen: changing it changes every digest.
pub const BLOCK_SIZE: usize = 256 * 1024;

/// Preset dictionary length: the deflate window.
pub const DICT_SIZE: usize = 32 * 1024;

/// Upper bound on compression threads: beyond this the single producer thread (reading, CRC, hashing)
/// becomes the bottleneck. It also bounds memory: at most `2 * threads` blocks (with their deflate
/// state) are in flight, measured peak RSS of a whole packing process is ~19 MiB at 8 threads, ~10 MiB
/// at 2, whatever the archive size.
pub const MAX_THREADS: usize = 8;

/// gzip member header: ID1 ID2, CM = deflate, FLG = 0, MTIME = 0, XFL = 0 (neither "best" nor "fastest";
/// what gzip writes for level 6), OS = 255 (unknown).
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

const _: () = assert!(BLOCK_SIZE >= DICT_SIZE);

/// One block of uncompressed input plus its compressed output; recycled so steady state allocates nothing.
struct Block {
    /// `DICT_SIZE` bytes of dictionary area followed by `BLOCK_SIZE` bytes of data area.
    buf: Vec<u8>,
    /// Valid dictionary bytes, at the end of the dictionary area (0 for the first block).
    dict_len: usize,
    /// Valid data bytes at the start of the data area.
    len: usize,
    last: bool,
    out: Vec<u8>,
}

impl Block {
    fn new() -> Self {
        Block {
            buf: vec![0; DICT_SIZE + BLOCK_SIZE],
            dict_len: 0,
            len: 0,
            last: false,
            out: Vec::new(),
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[DICT_SIZE..DICT_SIZE + self.len]
    }

    /// Compresses `data()` into `out` with `c`, which must be fresh, so the result depends on nothing but
    /// this block. `Compress::reset` is not enough: zlib-rs's reset keeps the old window and `prev` arrays, and
    /// with a reused compressor the output was observed to depend on which blocks that thread compressed
    /// before, i.e. on the thread count. The fresh state costs ~15 us per block.
    fn compress(&mut self, mut c: Compress) -> io::Result<()> {
        let c = &mut c;
        if self.dict_len > 0 {
            c.set_dictionary(&self.buf[DICT_SIZE - self.dict_len..DICT_SIZE])
                .map_err(io::Error::other)?;
        }
        let data = &self.buf[DICT_SIZE..DICT_SIZE + self.len];
        let flush = if self.last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        self.out.clear();
        // Deflate's worst case is a few bytes per 16 KiB over the input; text needs far less.
        self.out.reserve(data.len() / 2 + 1024);
        loop {
            let consumed = c.total_in() as usize;
            let status = c
                .compress_vec(&data[consumed..], &mut self.out, flush)
                .map_err(io::Error::other)?;
            let all_in = c.total_in() as usize == data.len();
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                // A flush is complete once all input is consumed and output space is left over.
                _ => all_in && self.out.len() < self.out.capacity(),
            };
            if done {
                return Ok(());
            }
            self.out.reserve(self.out.capacity().max(4096));
        }
    }
}

fn new_compressor() -> Compress {
    Compress::new(Compression::new(LEVEL), false)
}

/// Writes the gzip header before the first compressed bytes (so construction cannot fail).
struct Sink<W: Write> {
    out: W,
    started: bool,
}

impl<W: Write> Sink<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.started {
            self.out.write_all(&HEADER)?;
            self.started = true;
        }
        self.out.write_all(data)
    }
}

struct Job {
    block: Block,
    /// Allocated by the producer thread: keeps all deflate states in one malloc arena (with per-thread
    /// arenas, glibc otherwise retains several MiB of freed states per worker).
    compressor: Compress,
    reply: SyncSender<Done>,
}

struct Done {
    block: Block,
    result: io::Result<()>,
}

/// Long-lived compression workers fed through one shared queue; each job carries its own reply channel,
/// and `pending` keeps those in submission order, which is the output order.
struct Pool {
    jobs: Option<Sender<Job>>,
    queue: Arc<Mutex<Receiver<Job>>>,
    workers: Vec<JoinHandle<()>>,
    max_workers: usize,
    pending: VecDeque<Receiver<Done>>,
    /// Bounds memory: at most this many blocks are queued or being compressed.
    max_pending: usize,
}

impl Pool {
    fn new(threads: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        Pool {
            jobs: Some(tx),
            queue: Arc::new(Mutex::new(rx)),
            workers: Vec::new(),
            max_workers: threads,
            pending: VecDeque::new(),
            max_pending: 2 * threads,
        }
    }

    fn submit<W: Write>(
        &mut self,
        block: Block,
        sink: &mut Sink<W>,
        free: &mut Vec<Block>,
    ) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.complete_oldest(sink, free)?;
        }
        // Workers start lazily: small archives (the common case) never spawn more than they use.
        if self.workers.len() < self.max_workers && self.workers.len() <= self.pending.len() {
            let queue = Arc::clone(&self.queue);
            let handle = thread::Builder::new()
                .name("artgen-gzip".into())
                .spawn(move || worker(&queue))?;
            self.workers.push(handle);
        }
        let (reply, done) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(worker_lost)?;
        let job = Job {
            block,
            compressor: new_compressor(),
            reply,
        };
        jobs.send(job).map_err(|_| worker_lost())?;
        self.pending.push_back(done);
        Ok(())
    }

    fn complete_oldest<W: Write>(&mut self, sink: &mut Sink<W>, free: &mut Vec<Block>) -> io::Result<()> {
        let Some(done) = self.pending.pop_front() else {
            return Ok(());
        };
        let Done { block, result } = done.recv().map_err(|_| worker_lost())?;
        result?;
        sink.write(&block.out)?;
        free.push(block);
        Ok(())
    }

    fn drain<W: Write>(&mut self, sink: &mut Sink<W>, free: &mut Vec<Block>) -> io::Result<()> {
        while !self.pending.is_empty() {
            self.complete_oldest(sink, free)?;
        }
        Ok(())
    }
}

impl Drop for Pool {
    /// Closing the queue stops the workers once queued jobs (at most `max_pending`) are done.
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for a job, never while compressing.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Job {
            mut block,
            compressor,
            reply,
        }) = job
        else {
            return;
        };
        let result = block.compress(compressor);
        // The writer may have given up (error or drop): nobody to tell.
        let _ = reply.send(Done { block, result });
    }
}

fn worker_lost() -> io::Error {
    io::Error::other("gzip compression worker terminated unexpectedly")
}

/// Streaming gzip encoder for archive format v1. Feed it the uncompressed tar stream with
/// [`write_all`](Self::write_all) / [`copy_from`](Self::copy_from), then [`finish`](Self::finish).
/// After any error the output is unusable and the encoder should be dropped.
pub struct GzEncoder<W: Write> {
    sink: Sink<W>,
    cur: Block,
    free: Vec<Block>,
    pool: Pool,
    crc: crc32fast::Hasher,
    total: u64,
}

impl<W: Write> GzEncoder<W> {
    /// `threads` deflate workers (clamped to 1..=[`MAX_THREADS`]), started as blocks arrive. The output
    /// bytes are the same for every value.
    pub fn new(out: W, threads: usize) -> Self {
        GzEncoder {
            sink: Sink { out, started: false },
            cur: Block::new(),
            free: Vec::new(),
            pool: Pool::new(threads.clamp(1, MAX_THREADS)),
            crc: crc32fast::Hasher::new(),
            total: 0,
        }
    }

    /// Uncompressed bytes accepted so far.
    pub fn total_in(&self) -> u64 {
        self.total + self.cur.len as u64
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.room()?.min(data.len());
            let start = DICT_SIZE + self.cur.len;
            self.cur.buf[start..start + n].copy_from_slice(&data[..n]);
            self.cur.len += n;
            data = &data[n..];
        }
        Ok(())
    }

    /// Reads up to `n` bytes from `r` straight into the block buffer (no intermediate copy). Returns the
    /// number of bytes read, which is less than `n` only if `r` reached end of file.
    pub fn copy_from(&mut self, r: &mut dyn Read, n: u64) -> io::Result<u64> {
        let mut copied = 0;
        while copied < n {
            let want = (self.room()? as u64).min(n - copied) as usize;
            let start = DICT_SIZE + self.cur.len;
            match r.read(&mut self.cur.buf[start..start + want]) {
                Ok(0) => break,
                Ok(k) if k > want => return Err(io::Error::other("Read implementation returned too much")),
                Ok(k) => {
                    self.cur.len += k;
                    copied += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(copied)
    }

    /// Space left in the current block, dispatching it first if it is full. Dispatching only when more
    /// data arrives means the last block is never empty unless the whole stream is.
    fn room(&mut self) -> io::Result<usize> {
        if self.cur.len == BLOCK_SIZE {
            let mut next = self.free.pop().unwrap_or_else(Block::new);
            // The last DICT_SIZE bytes of this block's data become the next block's dictionary.
            next.buf[..DICT_SIZE].copy_from_slice(&self.cur.buf[BLOCK_SIZE..BLOCK_SIZE + DICT_SIZE]);
            next.dict_len = DICT_SIZE;
            next.len = 0;
            next.last = false;
            let full = mem::replace(&mut self.cur, next);
            self.dispatch(full)?;
        }
        Ok(BLOCK_SIZE - self.cur.len)
    }

    fn dispatch(&mut self, block: Block) -> io::Result<()> {
        self.account(&block);
        self.pool.submit(block, &mut self.sink, &mut self.free)
    }

    /// The trailer's CRC-32 and length cover every block, in order.
    fn account(&mut self, block: &Block) {
        self.crc.update(block.data());
        self.total += block.len as u64;
    }

    /// Compresses the final block, writes the trailer (CRC-32 and length mod 2^32) and returns the
    /// output writer (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        let placeholder = Block {
            buf: Vec::new(),
            dict_len: 0,
            len: 0,
            last: false,
            out: Vec::new(),
        };
        let mut last = mem::replace(&mut self.cur, placeholder);
        last.last = true;
        self.account(&last);
        // The caller's thread has nothing left to read: it compresses the last block itself while the
        // workers finish theirs (for a one-block archive no thread is ever started).
        last.compress(new_compressor())?;
        self.pool.drain(&mut self.sink, &mut self.free)?;
        self.sink.write(&last.out)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE is defined modulo 2^32: truncation intended.
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.sink.write(&trailer)?;
        Ok(self.sink.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::{GzDecoder, MultiGzDecoder};

    /// Deterministic pseudo-random, partly compressible bytes.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let words: [&[u8]; 6] = [
            b"apiVersion: v1\n",
            b"kind: ConfigMap\n",
            b"  name: ",
            b"data:\n",
            b"x",
            b"\n",
        ];
        let mut v = Vec::with_capacity(len + 32);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(4) {
                v.extend_from_slice(&x.to_le_bytes());
            } else {
                v.extend_from_slice(words[(x >> 8) as usize % words.len()]);
            }
        }
        v.truncate(len);
        v
    }

    fn gzip(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), threads);
        for c in data.chunks(chunk.max(1)) {
            gz.write_all(c).unwrap();
        }
        if data.is_empty() {
            gz.write_all(&[]).unwrap();
        }
        gz.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn header_bytes_exact() {
        let gz = gzip(b"hello", 1, 5);
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(&gz[gz.len() - 4..], &5u32.to_le_bytes());
        assert_eq!(
            &gz[gz.len() - 8..gz.len() - 4],
            &crc32fast::hash(b"hello").to_le_bytes()
        );
    }

    #[test]
    fn round_trip_at_block_boundaries() {
        for len in [
            0,
            1,
            DICT_SIZE,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            2 * BLOCK_SIZE,
            3 * BLOCK_SIZE + 7,
        ] {
            let data = sample(len);
            let one = gzip(&data, 1, 4096);
            assert_eq!(gunzip(&one), data, "len {len}");
            assert_eq!(gzip(&data, 3, 777), one, "len {len}");
        }
    }

    #[test]
    fn single_member_and_identical_across_threads() {
        let data = sample(5 * 1024 * 1024 + 333);
        let one = gzip(&data, 1, 64 * 1024);
        // A second member would show up as extra output with MultiGzDecoder vs. GzDecoder.
        let mut multi = Vec::new();
        MultiGzDecoder::new(&one[..]).read_to_end(&mut multi).unwrap();
        assert_eq!(multi, data);
        assert_eq!(gunzip(&one), data);
        for threads in [2, 3, 8, 64] {
            assert!(gzip(&data, threads, 10_000) == one, "threads {threads}");
        }
    }

    #[test]
    fn only_blocks_before_the_last_go_to_workers() {
        let data = sample(BLOCK_SIZE + 1);
        let mut gz = GzEncoder::new(Vec::new(), 4);
        gz.write_all(&data[..BLOCK_SIZE]).unwrap();
        // A full block is held back until more data shows it is not the last.
        assert_eq!(gz.pool.workers.len(), 0);
        gz.write_all(&data[BLOCK_SIZE..]).unwrap();
        assert_eq!(gz.pool.workers.len(), 1, "one block handed off, one worker");
        assert_eq!(gunzip(&gz.finish().unwrap()), data);
    }

    #[test]
    fn copy_from_reads_exactly() {
        let data = sample(BLOCK_SIZE * 2 + 10);
        let mut gz = GzEncoder::new(Vec::new(), 2);
        assert_eq!(
            gz.copy_from(&mut &data[..], data.len() as u64 + 5).unwrap(),
            data.len() as u64
        );
        assert_eq!(gz.copy_from(&mut &data[..], 3).unwrap(), 3);
        assert_eq!(gz.total_in(), data.len() as u64 + 3);
        let out = gz.finish().unwrap();
        let mut expected = data.clone();
        expected.extend_from_slice(&data[..3]);
        assert_eq!(gunzip(&out), expected);
    }

    #[test]
    fn matches_system_gzip_test() {
        let data = sample(3 * BLOCK_SIZE + 100);
        let gz = gzip(&data, 2, 5000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &gz).unwrap();
        let status = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}
