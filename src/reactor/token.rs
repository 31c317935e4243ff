//! The token layout: which [`mio::Token`] means what.
//!
//! The top two bits of a token say what it names; the rest is the number within that kind.
//! Connections get the plain slab key (tag 0), so the hottest conversion is free.
//!
//! | tag | kind | rest |
//! |---|---|---|
//! | `00` | connection | slab key |
//! | `01` | listener | index into the server's listeners |
//! | `10` | application source | the application's own token value |
//! | `11` | the waker | all ones (`usize::MAX`) |

use mio::Token;

const SHIFT: u32 = usize::BITS - 2;
const MASK: usize = !(0b11 << SHIFT);
const LISTENER: usize = 0b01 << SHIFT;
const APP: usize = 0b10 << SHIFT;
const WAKER: usize = usize::MAX;

/// The largest token value an application source may use (and the largest slab key).
pub(crate) const MAX_VALUE: usize = MASK;

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Conn(usize),
    Listener(usize),
    App(Token),
    Waker,
}

pub(crate) const WAKER_TOKEN: Token = Token(WAKER);

pub(crate) fn conn(key: usize) -> Token {
    debug_assert!(
        key <= MAX_VALUE,
        "slab key {key} overflows the token layout"
    );
    Token(key)
}

pub(crate) fn listener(index: usize) -> Token {
    Token(LISTENER | index)
}

/// The token an application source is registered under, or `None` if the application's
/// token is too large to tag.
pub(crate) fn app(token: Token) -> Option<Token> {
    (token.0 <= MAX_VALUE).then_some(Token(APP | token.0))
}

pub(crate) fn slot(token: Token) -> Slot {
    match token.0 {
        WAKER => Slot::Waker,
        t if t & !MASK == 0 => Slot::Conn(t),
        t if t & !MASK == LISTENER => Slot::Listener(t & MASK),
        t => Slot::App(Token(t & MASK)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_kinds_never_collide() {
        for value in [0, 1, 7, 1 << 20, MAX_VALUE - 1, MAX_VALUE] {
            assert_eq!(slot(conn(value)), Slot::Conn(value));
            assert_eq!(slot(listener(value)), Slot::Listener(value));
            assert_eq!(slot(app(Token(value)).unwrap()), Slot::App(Token(value)));
        }
        assert_eq!(slot(WAKER_TOKEN), Slot::Waker);
        assert_eq!(app(Token(MAX_VALUE + 1)), None);
        assert_eq!(app(Token(usize::MAX)), None);
        assert_ne!(app(Token(MAX_VALUE)), Some(WAKER_TOKEN));
    }
}
