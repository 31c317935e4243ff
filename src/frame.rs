//! Framing: finding one whole message at the start of a connection's unread input.
//!
//! A [`Framing`] looks at bytes and says whether a complete frame begins there, where its
//! payload is and how many bytes it takes; it keeps no state, does no I/O and never
//! allocates, so a frame split over reads at any byte is found once its last byte is in
//! (every framer here is tested at every split point). [`Input::next_frame`] applies one to
//! what a connection sent and marks the frame used; what is not used stays for the next
//! call.
//!
//! The stock framers, the ones a line or binary protocol reaches for (tokio-util's
//! `LinesCodec`, `LengthDelimitedCodec`, asyncio's `readuntil`), each with a maximum that is
//! part of the value, so a peer can never make a frame grow without bound:
//!
//! - [`Lines`]: a line ended by LF or CRLF (the CR is not part of the line);
//! - [`Delimited`]: bytes up to a delimiter of one or more bytes;
//! - [`LengthPrefixed`]: a big- or little-endian length of 1, 2, 4 or 8 bytes, then that
//!   many bytes.
//!
//! A protocol of its own (RESP, HTTP) implements [`Framing`], or parses
//! [`Input::bytes`] itself and calls [`Input::consume`].
//!
//! [`Input::next_frame`]: crate::Input::next_frame
//! [`Input::bytes`]: crate::Input::bytes
//! [`Input::consume`]: crate::Input::consume

use std::fmt;

/// Finds one frame at the start of a buffer. See the [module docs](self).
///
/// # Implementing Framing
///
/// `find` is called with all the unread bytes of a connection, again and again as more
/// arrive, so it must decide from a prefix alone: `Ok(None)` while the frame may still be
/// completed, an error as soon as it cannot (so a peer cannot make the server keep more than
/// the maximum), and the same answer for the same bytes whatever came before.
///
/// ```
/// use dualstack::frame::{Frame, FrameError, Framing};
///
/// /// A frame is one byte saying how many bytes follow.
/// struct Counted;
///
/// impl Framing for Counted {
///     fn find(&self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
///         let Some(&n) = buf.first() else { return Ok(None) };
///         let end = 1 + usize::from(n);
///         Ok((buf.len() >= end).then(|| Frame::new(1, end, end)))
///     }
/// }
///
/// assert_eq!(Counted.find(b"\x03abcd"), Ok(Some(Frame::new(1, 4, 4))));
/// assert_eq!(Counted.find(b"\x03ab"), Ok(None));
/// ```
pub trait Framing {
    /// Looks for one frame at the start of `buf`.
    ///
    /// # Errors
    ///
    /// [`FrameError`]: the frame is longer than the framing allows, or `buf` cannot begin
    /// one at all.
    fn find(&self, buf: &[u8]) -> Result<Option<Frame>, FrameError>;
}

/// Where a frame found at the start of a buffer is: its payload is `buf[start..end]`, and it
/// takes the first `len` bytes (payload, prefix and terminator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Where the payload begins.
    pub start: usize,
    /// Where the payload ends (exclusive).
    pub end: usize,
    /// How many bytes the frame takes from the start of the buffer.
    pub len: usize,
}

impl Frame {
    /// A frame whose payload is `start..end`, taking `len` bytes.
    pub const fn new(start: usize, end: usize, len: usize) -> Frame {
        Frame { start, end, len }
    }
}

/// Why no frame could be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is longer than the maximum (`max` payload bytes): a line or delimited
    /// frame passed it without its end, or a length prefix `declared` more. Nothing was
    /// used; the peer is either hostile or speaking another protocol.
    TooLong {
        /// The maximum payload.
        max: usize,
        /// The length a prefix declared, for [`LengthPrefixed`].
        declared: Option<u64>,
    },
    /// The framing cannot frame anything: an empty delimiter, a prefix width that is not 1,
    /// 2, 4 or 8, or a protocol's own framing that found bytes no frame begins with.
    Invalid(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong {
                max,
                declared: Some(len),
            } => write!(f, "a frame of {len} bytes is longer than the {max} allowed"),
            FrameError::TooLong { max, .. } => {
                write!(f, "a frame is longer than the {max} bytes allowed")
            }
            FrameError::Invalid(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for FrameError {}

/// Lines, ended by LF or CRLF, of at most `max` bytes (the terminator not counted). The
/// payload is the line without its terminator; a CR elsewhere in a line is part of it.
///
/// ```
/// use dualstack::frame::{Frame, FrameError, Framing, Lines};
///
/// const LINES: Lines = Lines::new(8);
/// assert_eq!(LINES.find(b"hello\r\nworld"), Ok(Some(Frame::new(0, 5, 7))));
/// assert_eq!(LINES.find(b"hel"), Ok(None));
/// assert!(matches!(LINES.find(b"much too long"), Err(FrameError::TooLong { max: 8, .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    max: usize,
}

impl Lines {
    /// Lines of at most `max` bytes. A line found longer is an error as soon as it is (at
    /// most `max + 2` bytes have been looked at), not when its end comes.
    pub const fn new(max: usize) -> Lines {
        Lines { max }
    }

    /// The maximum length of a line.
    pub const fn max(&self) -> usize {
        self.max
    }
}

impl Framing for Lines {
    fn find(&self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        let too_long = FrameError::TooLong {
            max: self.max,
            declared: None,
        };
        // A line of `max` bytes, CR, LF: the LF is at most at `max + 1`.
        let window = &buf[..buf.len().min(self.max.saturating_add(2))];
        match window.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let end = if lf > 0 && buf[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                if end > self.max {
                    return Err(too_long);
                }
                Ok(Some(Frame::new(0, end, lf + 1)))
            }
            // `max + 1` bytes without an LF: too long, unless the last is the CR of a CRLF.
            None if window.len() > self.max.saturating_add(1) => Err(too_long),
            None if window.len() == self.max.saturating_add(1) && window.last() != Some(&b'\r') => {
                Err(too_long)
            }
            None => Ok(None),
        }
    }
}

/// Frames ended by a delimiter of one or more bytes (NUL, `\r\n\r\n`…), of at most `max`
/// bytes before it. The payload is what comes before the delimiter.
///
/// ```
/// use dualstack::frame::{Delimited, Frame, Framing};
///
/// const RECORDS: Delimited = Delimited::new(b"\0", 1024);
/// assert_eq!(RECORDS.find(b"one\0two"), Ok(Some(Frame::new(0, 3, 4))));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimited<'d> {
    delimiter: &'d [u8],
    max: usize,
}

impl<'d> Delimited<'d> {
    /// Frames ended by `delimiter`, of at most `max` bytes before it. An empty delimiter
    /// frames nothing: [`find`](Framing::find) says so with [`FrameError::Invalid`].
    pub const fn new(delimiter: &'d [u8], max: usize) -> Delimited<'d> {
        Delimited { delimiter, max }
    }
}

impl Framing for Delimited<'_> {
    fn find(&self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        let d = self.delimiter;
        if d.is_empty() {
            return Err(FrameError::Invalid("an empty delimiter ends no frame"));
        }
        let window = &buf[..buf.len().min(self.max.saturating_add(d.len()))];
        if let Some(at) = find(window, d) {
            return Ok(Some(Frame::new(0, at, at + d.len())));
        }
        if window.len() <= self.max {
            return Ok(None);
        }
        // More than `max` bytes and no delimiter: too long, unless a delimiter that
        // begins at or before `max` has its first bytes at the end of what came.
        let first = (window.len() + 1).saturating_sub(d.len());
        if (first..=self.max).any(|p| d.starts_with(&window[p..])) {
            return Ok(None);
        }
        Err(FrameError::TooLong {
            max: self.max,
            declared: None,
        })
    }
}

/// Where `needle` (not empty) first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Frames of a length prefix (1, 2, 4 or 8 bytes, big-endian unless
/// [`little_endian`](LengthPrefixed::little_endian)), then that many bytes, at most `max`.
/// The payload is what follows the prefix.
///
/// ```
/// use dualstack::frame::{Frame, FrameError, Framing, LengthPrefixed};
///
/// const MESSAGES: LengthPrefixed = LengthPrefixed::new(4, 1 << 20);
/// assert_eq!(MESSAGES.find(b"\0\0\0\x02hi!"), Ok(Some(Frame::new(4, 6, 6))));
/// assert_eq!(
///     MESSAGES.find(b"\xff\xff\xff\xff"),
///     Err(FrameError::TooLong { max: 1 << 20, declared: Some(0xffff_ffff) })
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefixed {
    width: usize,
    max: usize,
    little_endian: bool,
    includes_prefix: bool,
}

impl LengthPrefixed {
    /// A prefix of `width` bytes (1, 2, 4 or 8: any other width frames nothing, as
    /// [`FrameError::Invalid`] says), payloads of at most `max` bytes.
    pub const fn new(width: usize, max: usize) -> LengthPrefixed {
        LengthPrefixed {
            width,
            max,
            little_endian: false,
            includes_prefix: false,
        }
    }

    /// The prefix is little-endian.
    pub const fn little_endian(mut self) -> LengthPrefixed {
        self.little_endian = true;
        self
    }

    /// The length counts the prefix too (a frame of a 4-byte prefix and 2 bytes says 6).
    pub const fn length_includes_prefix(mut self) -> LengthPrefixed {
        self.includes_prefix = true;
        self
    }
}

impl Framing for LengthPrefixed {
    fn find(&self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        let w = self.width;
        if !matches!(w, 1 | 2 | 4 | 8) {
            return Err(FrameError::Invalid(
                "a length prefix is 1, 2, 4 or 8 bytes wide",
            ));
        }
        let Some(prefix) = buf.get(..w) else {
            return Ok(None);
        };
        let mut bytes = [0u8; 8];
        let declared = if self.little_endian {
            bytes[..w].copy_from_slice(prefix);
            u64::from_le_bytes(bytes)
        } else {
            bytes[8 - w..].copy_from_slice(prefix);
            u64::from_be_bytes(bytes)
        };
        let payload = if self.includes_prefix {
            declared.checked_sub(w as u64).ok_or(FrameError::Invalid(
                "a length that counts the prefix is shorter than the prefix",
            ))?
        } else {
            declared
        };
        let too_long = FrameError::TooLong {
            max: self.max,
            declared: Some(payload),
        };
        let payload = usize::try_from(payload).map_err(|_| too_long)?;
        if payload > self.max {
            return Err(too_long);
        }
        // A frame that could not be addressed (a maximum near usize::MAX) is too long.
        let len = w.checked_add(payload).ok_or(too_long)?;
        Ok((buf.len() >= len).then_some(Frame::new(w, len, len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of #22: a peer's eight 0xff bytes under a maximum of `usize::MAX` overflowed
    /// the frame's length (a panic in debug builds).
    #[test]
    fn a_length_past_the_address_space_is_too_long_not_an_overflow() {
        let framing = LengthPrefixed::new(8, usize::MAX);
        assert!(matches!(
            framing.find(&[0xff; 8]),
            Err(FrameError::TooLong { .. })
        ));
    }

    /// Feeds `stream` to `framing` split at every point, as a connection would receive it,
    /// taking frames as they complete; returns the payloads, or the first error, which
    /// must be the same wherever the stream was split.
    fn frames_at_every_split(
        framing: &impl Framing,
        stream: &[u8],
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let whole = take_all(framing, stream, &[stream.len()]);
        for split in 0..=stream.len() {
            let parts = take_all(framing, stream, &[split, stream.len()]);
            assert_eq!(parts, whole, "split at {split} of {stream:?}");
        }
        // Byte by byte, the hardest split of all.
        let ends: Vec<usize> = (1..=stream.len()).collect();
        assert_eq!(take_all(framing, stream, &ends), whole, "byte by byte");
        whole
    }

    /// The frames found when the bytes of `stream` arrive up to each of `ends` in turn.
    fn take_all(
        framing: &impl Framing,
        stream: &[u8],
        ends: &[usize],
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut used = 0;
        let mut out = Vec::new();
        for &end in ends {
            while let Some(f) = framing.find(&stream[used..end])? {
                assert!(f.start <= f.end && f.end <= f.len, "{f:?}");
                assert!(f.len > 0, "a frame that takes nothing");
                out.push(stream[used + f.start..used + f.end].to_vec());
                used += f.len;
            }
        }
        Ok(out)
    }

    fn v(items: &[&[u8]]) -> Vec<Vec<u8>> {
        items.iter().map(|i| i.to_vec()).collect()
    }

    #[test]
    fn lines_end_at_lf_or_crlf_at_every_split() {
        let lines = Lines::new(5);
        assert_eq!(
            frames_at_every_split(&lines, b"a\r\nbc\n\nd\re\r\n12345\r\n"),
            Ok(v(&[b"a", b"bc", b"", b"d\re", b"12345"]))
        );
        // A line of exactly the maximum, split anywhere, even between its CR and LF.
        assert_eq!(
            frames_at_every_split(&lines, b"12345\r\n12345\n"),
            Ok(v(&[b"12345", b"12345"]))
        );
    }

    #[test]
    fn a_line_too_long_is_refused_as_soon_as_it_is_and_wherever_it_is_split() {
        let lines = Lines::new(5);
        let too_long = FrameError::TooLong {
            max: 5,
            declared: None,
        };
        for stream in [&b"123456\n"[..], b"123456\r\n", b"1234567", b"ok\n123456"] {
            assert_eq!(
                frames_at_every_split(&lines, stream),
                Err(too_long),
                "{stream:?}"
            );
        }
        // Known at the seventh byte, before any terminator.
        assert_eq!(lines.find(b"123456x"), Err(too_long));
        assert_eq!(lines.find(b"123456"), Err(too_long), "no CR to wait for");
        assert_eq!(lines.find(b"12345\r"), Ok(None), "the CR of a CRLF");
        assert_eq!(Lines::new(0).find(b"\r\n"), Ok(Some(Frame::new(0, 0, 2))));
        assert_eq!(Lines::new(usize::MAX).find(b"abc"), Ok(None));
    }

    #[test]
    fn delimited_frames_at_every_split() {
        let crlf2 = Delimited::new(b"\r\n\r\n", 6);
        assert_eq!(
            frames_at_every_split(&crlf2, b"GET /\r\n\r\n\r\n\r\nab\r\nc\r\n\r\n"),
            Ok(v(&[b"GET /", b"", b"ab\r\nc"]))
        );
        let nul = Delimited::new(b"\0", 3);
        assert_eq!(
            frames_at_every_split(&nul, b"abc\0\0x\0"),
            Ok(v(&[b"abc", b"", b"x"]))
        );
        assert_eq!(
            frames_at_every_split(&nul, b"abcd\0"),
            Err(FrameError::TooLong {
                max: 3,
                declared: None
            })
        );
        // A delimiter that begins within the maximum may still end a frame of max bytes.
        assert_eq!(crlf2.find(b"123456\r\n\r"), Ok(None));
        assert_eq!(crlf2.find(b"12345\r\n\r"), Ok(None));
        assert_eq!(
            frames_at_every_split(&crlf2, b"123456\r\n\r\n"),
            Ok(v(&[b"123456"]))
        );
        assert!(crlf2.find(b"1234567").is_err());
        assert!(Delimited::new(b"", 9).find(b"abc").is_err());
    }

    #[test]
    fn length_prefixed_frames_at_every_split() {
        let be = LengthPrefixed::new(2, 4);
        assert_eq!(
            frames_at_every_split(&be, b"\0\x03abc\0\0\0\x04wxyz"),
            Ok(v(&[b"abc", b"", b"wxyz"]))
        );
        let le = LengthPrefixed::new(4, 10).little_endian();
        assert_eq!(frames_at_every_split(&le, b"\x02\0\0\0hi"), Ok(v(&[b"hi"])));
        let counted = LengthPrefixed::new(1, 10).length_includes_prefix();
        assert_eq!(
            frames_at_every_split(&counted, b"\x03hi\x01"),
            Ok(v(&[b"hi", b""]))
        );
        assert!(counted.find(b"\x00").is_err(), "shorter than its prefix");
        assert_eq!(
            LengthPrefixed::new(8, 100).find(&[0xff; 8]),
            Err(FrameError::TooLong {
                max: 100,
                declared: Some(u64::MAX)
            }),
            "a declared length is refused before a byte of it is awaited"
        );
        assert!(LengthPrefixed::new(3, 9).find(b"\0\0\0").is_err());
        assert!(LengthPrefixed::new(0, 9).find(b"").is_err());
    }
}
