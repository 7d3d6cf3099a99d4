//! Writing a large file so that its final fsync is short.
//!
//! Both sides must sync what they write — the server before it acknowledges an upload, the CLI
//! before it renames a fetched record into place — and a sync after the last byte of a 2 GiB
//! file waits for all of it. [`WriteBehind`] asks the kernel to start writing each completed
//! range to disk as soon as it is complete, so the disk works while the network does and the
//! sync at the end has at most one range left (docs/performance.md).

use std::fs::File;
use std::io::Write;

/// Bytes written between two writeback starts: one efficient disk write, and at most this much
/// left for the final sync.
pub const STEP: u64 = 8 << 20;

/// A file being written front to back. Wrap it in a `BufWriter` of at least 256 KiB: page-cache
/// writes cost far more per byte when small.
pub struct WriteBehind {
    file: File,
    written: u64,
    started: u64,
}

impl WriteBehind {
    /// Starts writing `file` from its current (zero) position.
    pub fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            started: 0,
        }
    }

    /// Makes everything written durable, with one last fsync.
    pub fn sync(self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= STEP {
            start_writeback(&self.file, self.started, self.written - self.started);
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// On Linux `POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages (and drops pages
/// already clean, so large transfers do not crowd the page cache). Advice only: durability comes
/// from [`WriteBehind::sync`], so a refusal changes nothing but speed.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufWriter, Read};

    #[test]
    fn writes_every_byte_in_order_across_many_steps() {
        let dir = std::env::temp_dir().join(format!(
            "healthlock-wb-{}",
            crate::encoding::hex(&crate::random_bytes::<8>())
        ));
        let data: Vec<u8> = (0..(2 * STEP + 12_345)).map(|i| (i % 251) as u8).collect();
        let mut out =
            BufWriter::with_capacity(1 << 20, WriteBehind::new(File::create(&dir).unwrap()));
        for piece in data.chunks(100_003) {
            out.write_all(piece).unwrap();
        }
        out.into_inner()
            .map_err(|e| e.into_error())
            .unwrap()
            .sync()
            .unwrap();
        let mut back = Vec::new();
        File::open(&dir).unwrap().read_to_end(&mut back).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert!(back == data, "the file differs from what was written");
    }
}
