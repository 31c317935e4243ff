//! A connection's input: what it sent that the handler has not used yet ([`Input`], what
//! [`Handler::on_data`](crate::Handler::on_data) sees), and where the reactor keeps it
//! between reads ([`Kept`]).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::frame::{FrameError, Framing};

/// The bytes a connection sent that the handler has not used yet: what came in this read,
/// after whatever earlier calls left unused.
///
/// The handler uses what it can (a whole frame at a time with
/// [`next_frame`](Input::next_frame), or by [`take`](Input::take),
/// [`take_all`](Input::take_all) or [`consume`](Input::consume)); what it leaves stays, and
/// comes again, first, with the next bytes. So a request split over reads, at any byte, is
/// whole in a later call, and nothing is ever lost by returning early: bytes are used only
/// when the handler says so.
///
/// While the connection's output is above its high-water mark (a reply larger than its
/// request, many of them), and after the handler pauses reading or closes the connection,
/// the input is *held*: it shows no bytes and no frame, so a loop over frames stops there;
/// the rest is offered again once the output has drained below the low-water mark, or
/// reading resumes. A client that asks for more than it reads is held, never cut off, and
/// gets every reply in order.
///
/// ```
/// use dualstack::frame::Lines;
/// use dualstack::{ConnId, Context, Handler, Input};
///
/// /// Answers each line with its length.
/// struct Lengths;
///
/// impl Handler for Lengths {
///     type State = ();
///
///     fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
///         loop {
///             match input.next_frame(&Lines::new(1024)) {
///                 Ok(Some(line)) => {
///                     let _ = ctx.send(conn, format!("{}\n", line.len()).as_bytes());
///                 }
///                 Ok(None) => return, // the rest of a line comes later
///                 Err(_) => return ctx.close(conn), // longer than 1024 bytes
///             }
///         }
///     }
/// }
/// # let _server = dualstack::Server::builder().listen("127.0.0.1:0").bind(Lengths)?;
/// # Ok::<(), dualstack::Error>(())
/// ```
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a [u8],
    used: usize,
    held: &'a AtomicBool,
}

impl<'a> Input<'a> {
    pub(crate) fn new(bytes: &'a [u8], held: &'a AtomicBool) -> Input<'a> {
        Input {
            bytes,
            used: 0,
            held,
        }
    }

    /// The bytes not used yet; empty while the input is held.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        if self.is_held() {
            &[]
        } else {
            &self.bytes[self.used..]
        }
    }

    /// How many bytes are not used yet (0 while the input is held).
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether no byte is left to use, or the input is held (which shows nothing): ask
    /// [`is_held`](Input::is_held) first to tell input held back from no partial request
    /// waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// Whether the input is held: the connection's output passed its high-water mark, or
    /// the handler paused reading or closed the connection, during this call (it stays so
    /// for the call, though the output may drain within it). It shows no bytes then, and
    /// what is left is offered again once the hold ends.
    #[inline]
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Marks the next `n` bytes used (all that are left, if `n` is more). It counts also
    /// while the input is held, so a handler may parse a request from
    /// [`bytes`](Input::bytes), send its reply (which may be what holds the input), and then
    /// consume it.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.used += n.min(self.bytes.len() - self.used);
    }

    /// The next `n` bytes (fewer if fewer are left), marked used.
    #[inline]
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let bytes = self.bytes();
        let taken = &bytes[..n.min(bytes.len())];
        self.used += taken.len();
        taken
    }

    /// Every byte left, marked used.
    #[inline]
    pub fn take_all(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }

    /// The next whole frame `framing` finds, its bytes marked used, and its payload
    /// returned; `Ok(None)` when no whole frame is there yet (its rest comes later) or the
    /// input is held.
    ///
    /// # Errors
    ///
    /// What `framing` says: a frame longer than its maximum, or bytes no frame begins with.
    /// Nothing is used then: close the connection, or skip the bad frame (as
    /// [`skip_past`](Input::skip_past) does for a delimiter) and go on.
    pub fn next_frame(&mut self, framing: &impl Framing) -> Result<Option<&'a [u8]>, FrameError> {
        let bytes = self.bytes();
        match framing.find(bytes)? {
            // A frame must take a byte at least, and lie within what there is: a
            // `Framing` that says otherwise is not believed.
            Some(f) if f.len > 0 && f.start <= f.end && f.end <= f.len && f.len <= bytes.len() => {
                self.used += f.len;
                Ok(Some(&bytes[f.start..f.end]))
            }
            Some(_) => Err(FrameError::Invalid(
                "the framing found a frame that is not within the input",
            )),
            None => Ok(None),
        }
    }

    /// Uses every byte up to and including the next `delimiter` and returns `true`, or, if
    /// none has come yet, every byte there is and returns `false` (call it again with the
    /// next input). The way past a line or record too long to take: drop it, and go on with
    /// the next one. An empty delimiter uses nothing.
    pub fn skip_past(&mut self, delimiter: &[u8]) -> bool {
        let bytes = self.bytes();
        if delimiter.is_empty() {
            return true;
        }
        match bytes.windows(delimiter.len()).position(|w| w == delimiter) {
            Some(at) => {
                self.used += at + delimiter.len();
                true
            }
            None => {
                // Keep a partial delimiter at the end: it may be completed next time.
                let keep = (1..delimiter.len())
                    .rev()
                    .find(|&k| k <= bytes.len() && delimiter.starts_with(&bytes[bytes.len() - k..]))
                    .unwrap_or(0);
                self.used += bytes.len() - keep;
                false
            }
        }
    }

    /// How many bytes were used, of all this input showed.
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

/// Kept bytes in a buffer larger than this, and under a quarter of it, move to one their
/// size once some are used.
const SHRINK_ABOVE: usize = 16 * 1024;

/// The bytes of a connection the handler has not used yet, kept between reads: `buf[start..]`.
/// While it holds anything, what a read brings is added to it; it grows by what it holds,
/// not by the size of a read.
///
/// # Invariant
///
/// An empty `Kept` owns no allocation: an idle connection costs only this struct's words.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    buf: Vec<u8>,
    start: usize,
}

impl Kept {
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Keeps `rest`, the unused end of a read that went elsewhere (only when nothing is
    /// kept: reads go into this buffer while it holds anything).
    pub(crate) fn keep(&mut self, rest: &[u8]) {
        debug_assert!(self.is_empty());
        if !rest.is_empty() {
            self.buf.clear();
            self.start = 0;
            self.buf.extend_from_slice(rest);
        }
    }

    /// `n` kept bytes were used; frees the buffer once none is left.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.is_empty() {
            self.clear();
        } else if self.buf.capacity() > SHRINK_ABOVE && self.len() <= self.buf.capacity() / 4 {
            // Most of a large buffer was used: what is left moves to one its size, so a
            // partial frame after a large request does not pin the request's buffer.
            self.buf = self.bytes().to_vec();
            self.start = 0;
        }
    }

    /// Adds bytes that came after the kept ones (first moving the kept bytes to the front
    /// when the used prefix is at least half the buffer, or the buffer must grow). The
    /// buffer grows only by what is added, doubling at most, so a few kept bytes pin a few
    /// bytes, and no buffer is more than twice the most ever kept in it (with a used
    /// prefix carried along, growth made it four times).
    pub(crate) fn append(&mut self, more: &[u8]) {
        let grows = self.buf.len() + more.len() > self.buf.capacity();
        if self.start > 0 && (grows || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(more);
    }

    /// Gives the kept bytes away, leaving nothing kept.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.drain(..std::mem::take(&mut self.start));
        buf
    }

    /// Drops everything kept; returns how many bytes that was.
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
    use crate::frame::Lines;

    #[test]
    fn input_is_used_only_as_the_handler_says() {
        let held = AtomicBool::new(false);
        let mut input = Input::new(b"ab\ncd\nef", &held);
        assert_eq!(input.next_frame(&Lines::new(9)), Ok(Some(&b"ab"[..])));
        assert_eq!(input.take(1), b"c");
        input.consume(2);
        assert_eq!(input.bytes(), b"ef");
        assert_eq!(input.next_frame(&Lines::new(9)), Ok(None));
        assert_eq!(input.used(), 6, "ef stays for the next call");
        input.consume(usize::MAX);
        assert_eq!(input.used(), 8, "consume past the end uses what there is");
        assert!(input.is_empty());
    }

    #[test]
    fn held_input_shows_nothing_and_uses_nothing_more() {
        let held = AtomicBool::new(false);
        let mut input = Input::new(b"a\nb\nc\n", &held);
        assert_eq!(input.next_frame(&Lines::new(9)), Ok(Some(&b"a"[..])));
        held.store(true, Ordering::Relaxed); // a send passed the high-water mark
        assert!(input.is_held());
        assert_eq!(input.next_frame(&Lines::new(9)), Ok(None));
        assert_eq!(input.take_all(), b"");
        assert_eq!(input.len(), 0);
        assert_eq!(input.used(), 2, "b and c wait for the output to drain");
    }

    #[test]
    fn a_framing_that_lies_is_not_believed() {
        struct Liar;
        impl Framing for Liar {
            fn find(&self, _: &[u8]) -> Result<Option<crate::frame::Frame>, FrameError> {
                Ok(Some(crate::frame::Frame::new(0, 10, 10)))
            }
        }
        struct Empty;
        impl Framing for Empty {
            fn find(&self, _: &[u8]) -> Result<Option<crate::frame::Frame>, FrameError> {
                Ok(Some(crate::frame::Frame::new(0, 0, 0)))
            }
        }
        let held = AtomicBool::new(false);
        let mut input = Input::new(b"abc", &held);
        assert!(input.next_frame(&Liar).is_err());
        assert!(input.next_frame(&Empty).is_err(), "would loop for ever");
        assert_eq!(input.used(), 0);
    }

    #[test]
    fn skip_past_drops_through_the_delimiter_or_keeps_a_partial_one() {
        let held = AtomicBool::new(false);
        let mut input = Input::new(b"junk\r\nnext", &held);
        assert!(input.skip_past(b"\r\n"));
        assert_eq!(input.bytes(), b"next");
        let mut input = Input::new(b"junk\r", &held);
        assert!(!input.skip_past(b"\r\n"));
        assert_eq!(input.bytes(), b"\r", "the CR may begin the delimiter");
        let mut input = Input::new(b"junk", &held);
        assert!(!input.skip_past(b"\n"));
        assert!(input.is_empty());
        assert!(Input::new(b"x", &held).skip_past(b""));
    }

    #[test]
    fn kept_bytes_grow_by_what_comes_and_are_freed_when_used() {
        let mut kept = Kept::default();
        kept.keep(b"par");
        kept.append(b"tial");
        assert_eq!(kept.bytes(), b"partial");
        assert!(
            kept.capacity() < 64,
            "a few kept bytes pinned {} bytes",
            kept.capacity()
        );
        kept.consume(3);
        assert_eq!(kept.bytes(), b"tial");
        kept.append(b" line");
        assert_eq!(kept.bytes(), b"tial line");
        kept.consume(100);
        assert!(kept.is_empty());
        assert_eq!(kept.capacity(), 0, "an idle connection must own no buffer");
    }

    /// A review found `max_input`'s "about twice it" bound broken: a used prefix just under
    /// half the buffer was carried into the buffer's growth, so 502 kept bytes held 2,000.
    #[test]
    fn a_growing_buffer_holds_at_most_twice_what_is_kept() {
        let mut kept = Kept::default();
        kept.keep(&[b'x'; 1000]);
        kept.consume(499);
        kept.append(b"y");
        assert_eq!(kept.len(), 502);
        assert!(
            kept.capacity() <= 2 * kept.len(),
            "{} kept bytes hold {}",
            kept.len(),
            kept.capacity()
        );
        // Reads that keep coming behind a front that is used as they come.
        let mut most = kept.len();
        for _ in 0..300 {
            kept.consume(kept.len() / 2 - 1);
            kept.append(&[b'z'; 3000]);
            most = most.max(kept.len());
            assert!(
                kept.capacity() <= 2 * most,
                "{} for {most}",
                kept.capacity()
            );
        }
    }

    #[test]
    fn a_large_buffer_mostly_used_shrinks_to_what_is_left() {
        let mut kept = Kept::default();
        kept.keep(&[b'x'; 1 << 20]);
        kept.consume((1 << 20) - 10);
        assert_eq!(kept.bytes(), &[b'x'; 10]);
        assert!(
            kept.capacity() < 1024,
            "10 bytes pinned {}",
            kept.capacity()
        );
    }
}
