//! The output queue of one connection: what the kernel would not take yet.

use std::io::{self, Write};

/// Bytes waiting to be written, in order: `buf[start..]`.
///
/// Appending is one `memcpy`; writing is one `write` of one slice. The written prefix is
/// dropped (one `memmove`) when it is at least half the buffer, so the buffer never holds more
/// than about twice what is queued.
///
/// # Invariant
///
/// An empty queue owns no allocation: the buffer is freed when it drains, so an idle
/// connection costs only this struct's few words.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    buf: Vec<u8>,
    start: usize,
}

impl OutQueue {
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Writes as much as `sink` takes in one call.
    pub(crate) fn write_to(&mut self, sink: &mut impl Write) -> io::Result<usize> {
        let n = sink.write(&self.buf[self.start..])?;
        self.start += n;
        if self.start == self.buf.len() {
            self.clear();
        }
        Ok(n)
    }

    /// Drops everything queued; returns how many bytes that was.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.len();
        self.buf = Vec::new();
        self.start = 0;
        n
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
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
    fn the_buffer_stays_within_twice_what_is_queued() {
        let mut q = OutQueue::default();
        let mut sink = Trickle {
            limit: 1000,
            got: Vec::new(),
        };
        for round in 0..1000u32 {
            q.push(&round.to_le_bytes().repeat(300));
            q.write_to(&mut sink).unwrap();
            assert!(
                q.buf.len() <= 2 * q.len() + 1200,
                "round {round}: {} held for {} queued",
                q.buf.len(),
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
