//! The output queue of one connection: what the handler sent that is not written yet.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// How large a chunk of the queue grows before the next bytes start another.
const CHUNK: usize = 64 * 1024;

/// The most chunks one vectored write passes (Linux takes up to 1024; 64 × 64 KiB is more
/// than a socket buffer takes at once anyway).
const MAX_SLICES: usize = 64;

/// The most written chunks a thread keeps for reuse (see [`SPARE`]).
const SPARES: usize = 2;

std::thread_local! {
    /// Chunks written and emptied, kept for the next queue that needs one on this thread
    /// (a loop and its connections live on one thread): a connection that echoes each read
    /// otherwise allocated 64 KiB and freed it again at every read, and the allocator gave
    /// the memory back to the kernel and took it again each time (two `brk` calls and the
    /// page faults of the fresh pages per read). At most [`SPARES`] chunks per thread; an
    /// empty queue still owns nothing.
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A chunk for `data`: a spare one if the thread has it, else one of exactly its size.
fn new_chunk(data: &[u8]) -> Vec<u8> {
    let spare = SPARE.with(|s| s.borrow_mut().pop());
    match spare {
        Some(mut chunk) => {
            chunk.extend_from_slice(data);
            chunk
        }
        None => data.to_vec(),
    }
}

/// A written chunk: kept as a spare if it is a full-sized one and the thread has room.
fn recycle(mut chunk: Vec<u8>) {
    if chunk.capacity() >= CHUNK && chunk.capacity() <= 2 * CHUNK {
        chunk.clear();
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARES {
                spare.push(chunk);
            }
        });
    }
}

/// Bytes waiting to be written, in order: the chunks, the first from `start` on.
///
/// Sends within a turn append to the last chunk (one `memcpy`), so many small replies leave
/// as one write; past [`CHUNK`] bytes a new chunk begins, and a write passes several chunks
/// at once (`writev`). Written chunks are freed one by one: nothing is ever moved to make
/// room, however much is queued.
///
/// # Invariant
///
/// An empty queue owns no allocation: the chunks are freed as they are written, so an idle
/// connection costs only this struct's few words. No chunk is empty.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already written.
    start: usize,
    /// Bytes queued: the chunks' lengths, less `start`.
    len: usize,
}

impl OutQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match self.chunks.back_mut() {
            Some(last) if last.len() + data.len() <= CHUNK => last.extend_from_slice(data),
            _ => self.chunks.push_back(new_chunk(data)),
        }
        self.len += data.len();
    }

    /// Writes as much as `sink` takes in one call, every chunk (up to [`MAX_SLICES`]) in
    /// one vectored write.
    pub(crate) fn write_to(&mut self, sink: &mut impl Write) -> io::Result<usize> {
        let Some(first) = self.chunks.front() else {
            return Ok(0);
        };
        let n = if self.chunks.len() == 1 {
            sink.write(&first[self.start..])?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(&first[self.start..]);
            let mut count = 1;
            for chunk in self.chunks.iter().skip(1).take(MAX_SLICES - 1) {
                slices[count] = IoSlice::new(chunk);
                count += 1;
            }
            sink.write_vectored(&slices[..count])?
        };
        self.advance(n);
        Ok(n)
    }

    /// `n` bytes were written: frees the chunks they emptied.
    fn advance(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let left = first.len() - self.start;
            if n < left {
                self.start += n;
                return;
            }
            n -= left;
            if let Some(chunk) = self.chunks.pop_front() {
                recycle(chunk);
            }
            self.start = 0;
        }
        if self.len == 0 {
            self.clear();
        }
    }

    /// Drops everything queued; returns how many bytes that was.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.len;
        std::mem::take(&mut self.chunks)
            .into_iter()
            .for_each(recycle);
        self.start = 0;
        self.len = 0;
        n
    }

    /// The heap memory the queue holds.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.chunks.iter().map(Vec::capacity).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `limit` bytes per call, like a full socket buffer.
    struct Trickle {
        limit: usize,
        got: Vec<u8>,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.limit == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.limit);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_leave_in_order_across_partial_writes_and_compaction() {
        let mut q = OutQueue::default();
        let mut sink = Trickle {
            limit: 3,
            got: Vec::new(),
        };
        let data: Vec<u8> = (0..=255).collect();
        let mut fed = 0;
        while sink.got.len() < data.len() {
            if fed < data.len() {
                let end = (fed + 10).min(data.len());
                q.push(&data[fed..end]);
                fed = end;
            }
            q.write_to(&mut sink).unwrap();
        }
        assert_eq!(sink.got, data);
        assert!(q.is_empty());
    }

    #[test]
    fn memory_follows_what_is_queued_and_many_chunks_leave_in_one_write() {
        let mut q = OutQueue::default();
        let mut sink = Trickle {
            limit: 1000,
            got: Vec::new(),
        };
        for round in 0..1000u32 {
            q.push(&round.to_le_bytes().repeat(300));
            q.write_to(&mut sink).unwrap();
            assert!(
                q.capacity() <= 2 * q.len() + 2 * CHUNK,
                "round {round}: {} held for {} queued",
                q.capacity(),
                q.len()
            );
        }
        while !q.is_empty() {
            q.write_to(&mut sink).unwrap();
        }
        let expected: Vec<u8> = (0..1000u32)
            .flat_map(|r| r.to_le_bytes().repeat(300))
            .collect();
        assert_eq!(sink.got, expected);

        // Three chunks' worth of sends: one vectored write takes them all.
        let mut q = OutQueue::default();
        let data: Vec<u8> = (0..3 * CHUNK).map(|i| i as u8).collect();
        for piece in data.chunks(1000) {
            q.push(piece);
        }
        let mut sink = Counting::default();
        assert_eq!(q.write_to(&mut sink).unwrap(), data.len());
        assert_eq!(sink.calls, 1);
        assert_eq!(sink.got, data);
        assert!(q.is_empty());
    }

    /// A sink that takes everything, counting its calls.
    #[derive(Default)]
    struct Counting {
        calls: usize,
        got: Vec<u8>,
    }

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.got.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                self.got.extend_from_slice(b);
                n += b.len();
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_drained_queue_frees_its_buffer() {
        let mut q = OutQueue::default();
        q.push(&[7; 100_000]);
        assert!(q.capacity() >= 100_000);
        let mut sink = Trickle {
            limit: usize::MAX,
            got: Vec::new(),
        };
        q.write_to(&mut sink).unwrap();
        assert_eq!(q.len(), 0);
        assert_eq!(q.capacity(), 0, "an idle connection must own no buffer");
        assert_eq!(sink.got.len(), 100_000);
    }

    #[test]
    fn would_block_leaves_the_queue_alone() {
        let mut q = OutQueue::default();
        q.push(b"abc");
        let mut sink = Trickle {
            limit: 0,
            got: Vec::new(),
        };
        assert_eq!(
            q.write_to(&mut sink).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(q.len(), 3);
        assert_eq!(q.clear(), 3);
        assert_eq!(q.capacity(), 0);
    }
}
