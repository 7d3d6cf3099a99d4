//! Writing a large file front to back and making it durable at the end, without the final
//! sync having the whole file left to write.
//!
//! Both sides must sync what they write — the server before it acknowledges an upload, the CLI
//! before it renames a fetched record into place. [`DurableWriter`] writes through the page
//! cache, 256 KiB or more at a time, and starts writeback of every completed 8 MiB range as it
//! goes, so the disk works while the network and the crypto do, and [`DurableWriter::finish`]'s
//! fsync has at most one range left.
//!
//! Written is not yet durable: a disk with a volatile write cache (most SSDs, and the virtual
//! disks of cloud VMs) holds what it has been sent until a flush, and a flush costs in
//! proportion to what it holds — on the development VM, 0.7–0.85 s for 512 MiB already written
//! with direct I/O. So every 32 MiB a helper thread also syncs what has been written so far,
//! while the writer goes on, and when the disk keeps up the final fsync has about the last
//! 32 MiB to flush (a step is skipped while the previous sync still runs): 512 MiB uploads took
//! 1.5 s against 2.1 s without, fetches 1.9 s against 2.4 (64 MiB steps; 16, 32 and 64 were
//! within noise; docs/performance.md). The background syncs are best effort: without a spare
//! file descriptor or thread one is skipped and the final fsync does its work. But a background
//! sync that fails fails the file: every later write and [`DurableWriter::finish`] refuse, since
//! on Linux a later fsync may report success after an earlier one lost data.
//!
//! Why not direct I/O (`O_DIRECT`), which spares the page-cache copy: with one write in flight
//! at a time its thread stalls on every disk request, and on a busy 2-core machine it must then
//! wait to be scheduled before it can issue the next; the kernel's writeback keeps the disk's
//! queue full instead. Side by side, 512 MiB uploads took 2.3–2.7 s buffered against 2.7–3.5 s
//! direct, for 1.2–1.7 core-seconds of the server's CPU against 1.0–1.2. See
//! docs/performance.md.

use std::fs::File;
use std::io::{self, BufWriter, IoSlice, Write};
use std::thread::JoinHandle;

/// Bytes per write to the file: few system calls, and the writer's whole memory. Pieces at
/// least this large skip the buffer and go to the file uncopied (the CLI's decrypted pieces are).
pub const BUFFER: usize = 256 << 10;
/// Bytes written between two writeback starts.
pub const STEP: u64 = 8 << 20;
/// Bytes written between two background syncs.
pub const SYNC_STEP: u64 = 32 << 20;

/// A new file being written front to back; call [`DurableWriter::finish`] to make it durable.
/// Dropping it without `finish` leaves whatever was written, unsynced.
pub struct DurableWriter(BufWriter<WriteBehind>);

impl DurableWriter {
    /// Starts writing `file`, which must be new (empty) and open for writing.
    pub fn new(file: File) -> Self {
        Self(BufWriter::with_capacity(
            BUFFER,
            WriteBehind {
                file,
                written: 0,
                writeback_from: 0,
                sync_started_at: 0,
                syncing: None,
                failed: None,
            },
        ))
    }

    /// Writes what is buffered and makes the whole file durable: waits for the background
    /// sync, if one runs, then fsyncs.
    pub fn finish(self) -> io::Result<()> {
        let mut inner = self.0.into_inner().map_err(|e| e.into_error())?;
        inner.collect_sync(true);
        inner.check()?;
        inner.file.sync_all()
    }
}

impl DurableWriter {
    /// Writes all of `bufs`, in order, past the buffer and with as few system calls as the
    /// kernel allows (`writev`): for data that lies in several places, as the chunks of a
    /// decrypted piece do, which `write` would copy into the buffer one by one.
    pub fn write_all_vectored(&mut self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        self.0.flush()?;
        let file = self.0.get_mut();
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match file.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Write for DurableWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.write(data)
    }

    /// Writes what is buffered to the file, not to the disk: durability is promised only by
    /// [`DurableWriter::finish`].
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The file, counting what reaches it to start writeback every [`STEP`] bytes and a background
/// sync every [`SYNC_STEP`].
struct WriteBehind {
    file: File,
    written: u64,
    writeback_from: u64,
    /// Where the last background sync began.
    sync_started_at: u64,
    /// The background sync in flight, if any.
    syncing: Option<JoinHandle<io::Result<()>>>,
    /// A background sync's failure: kept, because the kernel reports it once.
    failed: Option<io::Error>,
}

impl WriteBehind {
    /// Starts a background sync of what has been written, unless one is still running (then
    /// the next step tries again: syncs never queue up behind a slow disk).
    fn sync_behind(&mut self) {
        if self.syncing.is_some() || self.failed.is_some() {
            return;
        }
        let Ok(file) = self.file.try_clone() else {
            return;
        };
        // `Builder::spawn`, not `thread::spawn`: out of threads skips a sync, it does not panic.
        let spawned = std::thread::Builder::new()
            .name("durable-sync".into())
            .spawn(move || file.sync_data());
        if let Ok(sync) = spawned {
            self.syncing = Some(sync);
            self.sync_started_at = self.written;
        }
    }

    /// Takes the background sync's result if it has finished, or with `wait` once it does,
    /// keeping its error.
    fn collect_sync(&mut self, wait: bool) {
        let Some(sync) = self.syncing.take_if(|s| wait || s.is_finished()) else {
            return;
        };
        let result = sync
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("background sync panicked")));
        if let Err(e) = result {
            self.failed.get_or_insert(e);
        }
    }

    /// Refuses once a background sync has failed.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("syncing the file failed: {e}"),
            )),
            None => Ok(()),
        }
    }
}

/// Waits for the background sync, so that no thread outlives its writer with the file open
/// (an abandoned transfer's file is about to be removed).
impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.collect_sync(true);
    }
}

impl Write for WriteBehind {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = self.file.write(data)?;
        self.wrote(n);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.check()?;
        let n = self.file.write_vectored(bufs)?;
        self.wrote(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteBehind {
    /// Counts `n` bytes written, starting writeback and background syncs at their steps.
    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if self.written - self.writeback_from >= STEP {
            start_writeback(
                &self.file,
                self.writeback_from,
                self.written - self.writeback_from,
            );
            self.writeback_from = self.written;
            self.collect_sync(false);
            if self.written - self.sync_started_at >= SYNC_STEP {
                self.sync_behind();
            }
        }
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

    /// Writes `len` patterned bytes in odd-sized pieces (some larger than the buffer, which go
    /// straight to the file, some in three slices with `write_all_vectored`) and reads them back.
    fn round_trip(dir: &std::path::Path, len: usize) {
        let path = dir.join(format!(
            "healthlock-dw-{}",
            crate::encoding::hex(&crate::random_bytes::<8>())
        ));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut out = DurableWriter::new(File::create(&path).unwrap());
        let mut rest = &data[..];
        for (i, size) in [100_003, BUFFER + 17, 3 * 65_536 + 5]
            .into_iter()
            .cycle()
            .enumerate()
        {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            if i % 3 == 2 {
                let (a, b) = piece.split_at(piece.len() / 3);
                let (b, c) = b.split_at(b.len() / 2);
                out.write_all_vectored(&mut [IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)])
                    .unwrap();
            } else {
                out.write_all(piece).unwrap();
            }
            rest = tail;
        }
        out.finish().unwrap();
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            back == data,
            "{len} bytes: the file differs from what was written"
        );
    }

    #[test]
    fn a_failed_background_sync_fails_the_writes_after_it_and_the_finish() {
        // fsync of a pipe fails (EINVAL): a stand-in for a disk that lost written data.
        let (mut reader, writer) = std::io::pipe().unwrap();
        let drain = std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let mut out = DurableWriter::new(File::from(std::os::fd::OwnedFd::from(writer)));
        let piece = vec![7u8; BUFFER];
        let mut written = 0u64;
        let refused = loop {
            if let Err(e) = out.write_all(&piece) {
                break e;
            }
            written += BUFFER as u64;
            assert!(
                written < 16 * SYNC_STEP,
                "no write refused after the background sync failed"
            );
        };
        assert!(written >= SYNC_STEP, "refused before any sync: {refused}");
        assert!(out.write_all(&piece).is_err(), "the refusal must stick");
        assert!(out.finish().is_err());
        drain.join().unwrap().unwrap();
    }

    #[test]
    fn writes_every_byte_in_order_whatever_the_length() {
        // The working directory is on the disk the build uses.
        let dir = std::env::current_dir().unwrap();
        for len in [
            0,
            1,
            4095,
            BUFFER,
            BUFFER + 1,
            3 * BUFFER + 12_345,
            2 * STEP as usize + 7,
            // Past two background syncs: the second may find the first still running.
            2 * SYNC_STEP as usize + 12_345,
        ] {
            round_trip(&dir, len);
        }
    }
}
