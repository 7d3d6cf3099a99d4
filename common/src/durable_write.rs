//! Writing a large file front to back and making it durable at the end, at the disk's pace and
//! without spending a core on the page cache.
//!
//! Both sides must sync what they write — the server before it acknowledges an upload, the CLI
//! before it renames a fetched record into place. On Linux [`DurableWriter`] writes with
//! `O_DIRECT` from one aligned 1 MiB buffer: the disk reads straight from that buffer, so there is
//! no copy into the page cache (about half the server's CPU during an upload when it was
//! buffered) and the final sync has only the last partial block and the metadata left.
//!
//! [`DurableWriter::buffered`] — and any file system that refuses `O_DIRECT` or a write's
//! alignment — writes through the page cache instead, starting writeback of every completed
//! 8 MiB range so the final sync still has at most one range left. The server stores uploads
//! direct (CPU is what limits it); the CLI writes fetched files buffered (someone is likely to
//! open them at once, and it should not wait on each disk write). See docs/performance.md.

use std::fs::File;
use std::io::Write;

/// Bytes per write: one efficient disk request, and the writer's whole memory.
pub const BUFFER: usize = 1 << 20;
/// Alignment of the buffer, of every direct write's offset and of its length: the largest
/// logical block size in common use.
const ALIGN: usize = 4096;
/// Buffered mode: bytes written between two writeback starts.
pub const STEP: u64 = 8 << 20;

/// A new file being written front to back; call [`DurableWriter::finish`] to make it durable.
/// Dropping it without `finish` leaves whatever was written, unsynced.
pub struct DurableWriter {
    file: File,
    /// `BUFFER + ALIGN` bytes, of which `window` is the `ALIGN`-aligned `BUFFER` bytes.
    storage: Vec<u8>,
    window: usize,
    filled: usize,
    direct: bool,
    written: u64,
    writeback_from: u64,
}

impl DurableWriter {
    /// Starts writing `file`, which must be new (empty) and open for writing, direct where the
    /// file system allows.
    pub fn new(file: File) -> Self {
        Self::with_mode(file, true)
    }

    /// Starts writing `file` through the page cache, with writeback started as it goes: for
    /// files someone may read right away, and writers that must not wait on each disk write.
    pub fn buffered(file: File) -> Self {
        Self::with_mode(file, false)
    }

    fn with_mode(file: File, try_direct: bool) -> Self {
        let storage = vec![0u8; BUFFER + ALIGN];
        // `align_offset` may decline to answer; then the writer simply stays buffered.
        let window = storage.as_ptr().align_offset(ALIGN);
        let direct = try_direct && window < ALIGN && set_direct(&file, true).is_ok();
        Self {
            file,
            storage,
            window: window.min(ALIGN),
            filled: 0,
            direct,
            written: 0,
            writeback_from: 0,
        }
    }

    /// Whether writes bypass the page cache (for tests and diagnostics).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Writes what is buffered and makes the whole file durable with one fsync.
    pub fn finish(mut self) -> std::io::Result<()> {
        let tail = self.filled % ALIGN;
        if self.direct && tail != 0 {
            // A direct write's length must be whole blocks: write those, then the rest buffered.
            let whole = self.filled - tail;
            self.write_out(self.window, whole)?;
            self.go_buffered()?;
            self.write_out(self.window + whole, tail)?;
        } else {
            self.write_out(self.window, self.filled)?;
        }
        self.filled = 0;
        self.file.sync_all()
    }

    /// Writes `len` bytes of `storage` from `from` at the end of the file.
    fn write_out(&mut self, mut from: usize, len: usize) -> std::io::Result<()> {
        let end = from + len;
        while from < end {
            match self.file.write(&self.storage[from..end]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    from += n;
                    self.written += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The device wants a larger alignment, or a short write left the offset
                // unaligned: carry on buffered rather than fail.
                Err(e) if self.direct && e.kind() == std::io::ErrorKind::InvalidInput => {
                    self.go_buffered()?;
                }
                Err(e) => return Err(e),
            }
        }
        if !self.direct && self.written - self.writeback_from >= STEP {
            start_writeback(
                &self.file,
                self.writeback_from,
                self.written - self.writeback_from,
            );
            self.writeback_from = self.written;
        }
        Ok(())
    }

    fn go_buffered(&mut self) -> std::io::Result<()> {
        if self.direct {
            set_direct(&self.file, false)?;
            self.direct = false;
            self.writeback_from = self.written;
        }
        Ok(())
    }
}

impl Write for DurableWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.filled == BUFFER {
            self.write_out(self.window, BUFFER)?;
            self.filled = 0;
        }
        let n = data.len().min(BUFFER - self.filled);
        let at = self.window + self.filled;
        self.storage[at..at + n].copy_from_slice(&data[..n]);
        self.filled += n;
        Ok(n)
    }

    /// Does nothing: a direct write must be whole blocks, so the buffer is written when full or
    /// at [`DurableWriter::finish`], which is the only point where durability is promised.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Turns `O_DIRECT` on or off for an open file; the kernel refuses it where unsupported.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> std::io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    Ok(fcntl_setfl(file, flags)?)
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &File, on: bool) -> std::io::Result<()> {
    if on {
        Err(std::io::ErrorKind::Unsupported.into())
    } else {
        Ok(())
    }
}

/// On Linux `POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages (and drops pages
/// already clean, so large transfers do not crowd the page cache). Advice only: durability comes
/// from [`DurableWriter::finish`], so a refusal changes nothing but speed.
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
    use std::io::Read;
    use std::path::{Path, PathBuf};

    fn scratch(dir: &Path) -> PathBuf {
        dir.join(format!(
            "healthlock-dw-{}",
            crate::encoding::hex(&crate::random_bytes::<8>())
        ))
    }

    /// Writes `len` patterned bytes in odd-sized pieces and reads them back.
    fn round_trip(dir: &Path, len: usize, buffered: bool) -> bool {
        let path = scratch(dir);
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let file = File::create(&path).unwrap();
        let mut out = if buffered {
            DurableWriter::buffered(file)
        } else {
            DurableWriter::new(file)
        };
        let direct = out.is_direct();
        for piece in data.chunks(100_003) {
            out.write_all(piece).unwrap();
        }
        out.finish().unwrap();
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            back == data,
            "{len} bytes: the file differs from what was written"
        );
        direct
    }

    #[test]
    fn writes_every_byte_in_order_whatever_the_length() {
        // The working directory is on the disk the build uses.
        let dir = std::env::current_dir().unwrap();
        let probe = scratch(&dir);
        let supported = set_direct(&File::create(&probe).unwrap(), true).is_ok();
        std::fs::remove_file(&probe).unwrap();
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            BUFFER,
            BUFFER + 1,
            3 * BUFFER + 12_345,
        ] {
            // Where direct I/O works the writer must use it, or the point is lost.
            assert_eq!(round_trip(&dir, len, false), supported, "{len} bytes");
            assert!(!round_trip(&dir, len, true), "{len} bytes");
        }
        // Writeback starts in buffered mode.
        round_trip(&dir, 2 * STEP as usize + 7, true);
    }
}
