//! The output queue of one connection: what the handler sent that is not written yet.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// How large a chunk of the queue grows before the next bytes start another.
const CHUNK: usize = 64 * 1024;

/// The most chunks one vectored write passes (Linux takes up to 1024; 64 × 64 KiB is more
/// than a socket buffer takes at once anyway).
const MAX_SLICES: usize = 64;

/// The most full-sized written chunks kept for reuse (see [`Spares`]).
const SPARES: usize = 2;

/// The capacity a small send's chunk gets (so the sends after it in the turn extend it in
/// place; a connection whose peer does not read holds this much for a small reply), and the
/// most small chunks kept.
const SMALL: usize = 4096;
const SMALL_SPARES: usize = 8;

/// Written chunks kept for reuse by the queues of one loop: a connection that echoes each
/// read otherwise allocated 64 KiB and freed it again at every read, and the allocator gave
/// the memory back to the kernel and took it again each time (two `brk` calls and the page
/// faults of the fresh pages per read); one that answers a small request allocated and freed
/// a small chunk at each (about a fifth of the reactor's instructions per round trip). At
/// most [`SPARES`] large and [`SMALL_SPARES`] small chunks; an empty queue still owns
/// nothing. The loop owns it and lends it to each call (a thread-local cost as much again).
#[derive(Debug, Default)]
pub(crate) struct Spares {
    large: Vec<Vec<u8>>,
    small: Vec<Vec<u8>>,
}

impl Spares {
    /// A chunk for `data`: a spare one of its class if there is one, else a new one (of
    /// [`SMALL`] bytes for a small send, of exactly its size for a larger one).
    fn chunk(&mut self, data: &[u8]) -> Vec<u8> {
        let small = data.len() <= SMALL;
        let spare = if small {
            self.small.pop()
        } else {
            self.large.pop()
        };
        let mut chunk = match spare {
            Some(chunk) => chunk,
            None if small => Vec::with_capacity(SMALL),
            None => return data.to_vec(),
        };
        chunk.extend_from_slice(data);
        chunk
    }

    /// A written chunk: kept if it is of a size kept and there is room.
    fn recycle(&mut self, mut chunk: Vec<u8>) {
        let capacity = chunk.capacity();
        let (pool, most) = if (CHUNK..=2 * CHUNK).contains(&capacity) {
            (&mut self.large, SPARES)
        } else if capacity == SMALL {
            (&mut self.small, SMALL_SPARES)
        } else {
            return;
        };
        if pool.len() < most {
            chunk.clear();
            pool.push(chunk);
        }
    }
}

/// Bytes waiting to be written, in order: the chunks, the first from `start` on.
///
/// Sends within a turn append to the last chunk (one `memcpy`), so many small replies leave
/// as one write; past [`CHUNK`] bytes a new chunk begins, and a write passes several chunks
/// at once (`writev`). Written chunks are freed one by one: nothing is ever moved to make
/// room, however much is queued. The first chunk is kept apart from the rest, so the usual
/// queue of one chunk needs no list.
///
/// # Invariant
///
/// An empty queue owns no allocation: the chunks are freed as they are written, so an idle
/// connection costs only this struct's few words. No chunk is empty, but `head` when the
/// queue is.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    /// The first chunk; empty exactly when the queue is.
    head: Vec<u8>,
    /// The chunks after the first, once there were any (boxed: a connection's queue is as
    /// small as it was before the first chunk moved out of the list).
    #[allow(clippy::box_collection)] // the point: 8 bytes where a list is 32
    rest: Option<Box<VecDeque<Vec<u8>>>>,
    /// Bytes of `head` already written.
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

    #[inline]
    pub(crate) fn push(&mut self, data: &[u8], spares: &mut Spares) {
        // The usual push: into the one chunk there is, which has room (a reply per request
        // comes here per message: inlined into the send). The list may be there and empty,
        // after a burst of chunks was written (it is kept for the next).
        let one_chunk = self.rest.as_deref().map_or(true, VecDeque::is_empty);
        if one_chunk && !self.head.is_empty() && self.head.len() + data.len() <= CHUNK {
            self.head.extend_from_slice(data);
            self.len += data.len();
            return;
        }
        self.push_more(data, spares);
    }

    /// [`push`](OutQueue::push) past its usual case: the first chunk, a chunk full, or a
    /// list of chunks.
    #[cold]
    #[inline(never)]
    fn push_more(&mut self, data: &[u8], spares: &mut Spares) {
        if data.is_empty() {
            return;
        }
        if self.head.is_empty() {
            self.head = spares.chunk(data);
        } else {
            let last = match self.rest.as_deref_mut().and_then(VecDeque::back_mut) {
                Some(last) => last,
                None => &mut self.head,
            };
            if last.len() + data.len() <= CHUNK {
                last.extend_from_slice(data);
            } else {
                let chunk = spares.chunk(data);
                self.rest
                    .get_or_insert_with(Default::default)
                    .push_back(chunk);
            }
        }
        self.len += data.len();
    }

    /// Writes as much as `sink` takes in one call, every chunk (up to [`MAX_SLICES`]) in
    /// one vectored write.
    pub(crate) fn write_to(
        &mut self,
        sink: &mut impl Write,
        spares: &mut Spares,
    ) -> io::Result<usize> {
        if self.head.is_empty() {
            return Ok(0);
        }
        let rest = self.rest.as_deref().filter(|r| !r.is_empty());
        let n = if rest.is_none() {
            sink.write(&self.head[self.start..])?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(&self.head[self.start..]);
            let mut count = 1;
            for chunk in rest.into_iter().flatten().take(MAX_SLICES - 1) {
                slices[count] = IoSlice::new(chunk);
                count += 1;
            }
            sink.write_vectored(&slices[..count])?
        };
        self.advance(n, spares);
        Ok(n)
    }

    /// `n` bytes were written: frees the chunks they emptied.
    fn advance(&mut self, mut n: usize, spares: &mut Spares) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let left = self.head.len() - self.start;
            if n < left {
                self.start += n;
                return;
            }
            n -= left;
            let next = self
                .rest
                .as_deref_mut()
                .and_then(VecDeque::pop_front)
                .unwrap_or_default();
            spares.recycle(std::mem::replace(&mut self.head, next));
            self.start = 0;
        }
        if self.len == 0 {
            self.clear(spares);
        }
    }

    /// Drops everything queued; returns how many bytes that was.
    pub(crate) fn clear(&mut self, spares: &mut Spares) -> usize {
        let n = self.len;
        if self.head.capacity() > 0 {
            spares.recycle(std::mem::take(&mut self.head));
        }
        if let Some(rest) = self.rest.take() {
            for chunk in *rest {
                spares.recycle(chunk);
            }
        }
        self.start = 0;
        self.len = 0;
        n
    }

    /// The heap memory the queue holds.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.head.capacity()
            + self.rest.as_deref().map_or(0, |r| {
                std::mem::size_of::<VecDeque<Vec<u8>>>()
                    + r.capacity() * std::mem::size_of::<Vec<u8>>()
                    + r.iter().map(Vec::capacity).sum::<usize>()
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        let mut spares = Spares::default();
        let mut sink = Trickle {
            limit: 3,
            got: Vec::new(),
        };
        let data: Vec<u8> = (0..=255).collect();
        let mut fed = 0;
        while sink.got.len() < data.len() {
            if fed < data.len() {
                let end = (fed + 10).min(data.len());
                q.push(&data[fed..end], &mut spares);
                fed = end;
            }
            q.write_to(&mut sink, &mut spares).unwrap();
        }
        assert_eq!(sink.got, data);
        assert!(q.is_empty());
    }

    #[test]
    fn memory_follows_what_is_queued_and_many_chunks_leave_in_one_write() {
        let mut q = OutQueue::default();
        let mut spares = Spares::default();
        let mut sink = Trickle {
            limit: 1000,
            got: Vec::new(),
        };
        for round in 0..1000u32 {
            q.push(&round.to_le_bytes().repeat(300), &mut spares);
            q.write_to(&mut sink, &mut spares).unwrap();
            assert!(
                q.capacity() <= 2 * q.len() + 2 * CHUNK,
                "round {round}: {} held for {} queued",
                q.capacity(),
                q.len()
            );
        }
        while !q.is_empty() {
            q.write_to(&mut sink, &mut spares).unwrap();
        }
        let expected: Vec<u8> = (0..1000u32)
            .flat_map(|r| r.to_le_bytes().repeat(300))
            .collect();
        assert_eq!(sink.got, expected);

        // Three chunks' worth of sends: one vectored write takes them all.
        let mut q = OutQueue::default();
        let mut spares = Spares::default();
        let data: Vec<u8> = (0..3 * CHUNK).map(|i| i as u8).collect();
        for piece in data.chunks(1000) {
            q.push(piece, &mut spares);
        }
        let mut sink = Counting::default();
        assert_eq!(q.write_to(&mut sink, &mut spares).unwrap(), data.len());
        assert_eq!(sink.calls, 1);
        assert_eq!(sink.got, data);
        assert!(q.is_empty());
    }

    /// A sink that takes everything, counting its calls (the output's tests count writes
    /// with it too).
    #[derive(Default)]
    pub(crate) struct Counting {
        pub(crate) calls: usize,
        pub(crate) got: Vec<u8>,
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
        let mut spares = Spares::default();
        q.push(&[7; 100_000], &mut spares);
        assert!(q.capacity() >= 100_000);
        let mut sink = Trickle {
            limit: usize::MAX,
            got: Vec::new(),
        };
        q.write_to(&mut sink, &mut spares).unwrap();
        assert_eq!(q.len(), 0);
        assert_eq!(q.capacity(), 0, "an idle connection must own no buffer");
        assert_eq!(sink.got.len(), 100_000);
    }

    #[test]
    fn would_block_leaves_the_queue_alone() {
        let mut q = OutQueue::default();
        let mut spares = Spares::default();
        q.push(b"abc", &mut spares);
        let mut sink = Trickle {
            limit: 0,
            got: Vec::new(),
        };
        assert_eq!(
            q.write_to(&mut sink, &mut spares).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(q.len(), 3);
        assert_eq!(q.clear(&mut spares), 3);
        assert_eq!(q.capacity(), 0);
    }

    #[test]
    fn a_written_small_chunk_serves_the_next_send_and_the_empty_queue_owns_nothing() {
        let mut q = OutQueue::default();
        let mut spares = Spares::default();
        let mut sink = Counting::default();
        for round in 0..3 {
            q.push(b"+OK\r\n", &mut spares);
            assert_eq!(q.capacity(), SMALL, "round {round}: a small chunk");
            assert!(
                spares.small.is_empty(),
                "round {round}: the spare was taken"
            );
            q.write_to(&mut sink, &mut spares).unwrap();
            assert_eq!(
                q.capacity(),
                0,
                "round {round}: the empty queue owns nothing"
            );
            assert_eq!(spares.small.len(), 1, "round {round}: the chunk is kept");
        }
        // A chunk that grew past the small size is not kept as a small one.
        q.push(&[1; 3000], &mut spares);
        q.push(&[2; 3000], &mut spares);
        q.write_to(&mut sink, &mut spares).unwrap();
        assert!(spares.small.is_empty() && spares.large.is_empty());
        assert_eq!(sink.got.len(), 3 * 5 + 6000);
    }

    /// Every connection holds a queue, so its size is memory per idle connection: no more
    /// than the list alone took before the first chunk moved out of it.
    #[test]
    fn a_queue_is_no_larger_than_a_list_and_two_counts() {
        assert!(
            std::mem::size_of::<OutQueue>()
                <= std::mem::size_of::<VecDeque<Vec<u8>>>() + 2 * std::mem::size_of::<usize>()
        );
    }
}
