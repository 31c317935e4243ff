//! Without the `tls` feature: the types the reactor names, with no values. Every method is
//! unreachable (`match *self {}`), so the reactor's TLS paths compile to nothing.

use std::io;
use std::time::{Duration, Instant};

use super::{Fed, TlsFailure};
use crate::conn::{OutQueue, Spares};

/// A listener's TLS settings: none exist without the feature.
#[derive(Debug, Clone)]
pub(crate) enum Acceptor {}

/// Handshake threads: none exist without the feature.
#[derive(Debug)]
pub(crate) enum Pool {}

/// A connection's TLS state: none exist without the feature.
#[derive(Debug)]
pub(crate) enum Session {}

impl Pool {
    pub(crate) fn send(
        &self,
        _: crate::conn::ConnId,
        _: Box<Session>,
        _: &[u8],
        _: Instant,
    ) -> Result<(), Box<Session>> {
        match *self {}
    }

    pub(crate) fn steal(&self, _: Instant) -> Option<(crate::conn::ConnId, Box<Session>, Vec<u8>)> {
        match *self {}
    }

    pub(crate) fn next_steal(&self) -> Option<Instant> {
        match *self {}
    }

    pub(crate) fn takes_steps(&self, _: Instant) -> bool {
        match *self {}
    }

    pub(crate) fn next_done(&self) -> Option<super::Done> {
        match *self {}
    }

    pub(crate) fn next_lost(&self) -> Option<crate::conn::ConnId> {
        match *self {}
    }
}

impl Acceptor {
    pub(crate) fn start(&self) -> Result<Box<Session>, TlsFailure> {
        match *self {}
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        match *self {}
    }
}

impl Session {
    pub(crate) fn read_direct(
        &mut self,
        _: &mut dyn io::Read,
        _: &mut super::Plain,
        _: usize,
    ) -> io::Result<super::Direct> {
        match *self {}
    }

    pub(crate) fn feed(&mut self, _: &[u8], _: &mut super::Plain) -> Result<Fed, TlsFailure> {
        match *self {}
    }

    pub(crate) fn peer_closed(&self) -> bool {
        match *self {}
    }

    pub(crate) fn wants_write(&self) -> bool {
        match *self {}
    }

    pub(crate) fn write_tls(&mut self, _: &mut dyn io::Write) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn encrypt(&mut self, _: &mut OutQueue, _: &mut Spares) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn wants_thread(&self) -> bool {
        match *self {}
    }

    pub(crate) fn is_tls13(&self) -> bool {
        match *self {}
    }

    pub(crate) fn encrypt_slice(&mut self, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn output_dropped(&mut self) {
        match *self {}
    }

    pub(crate) fn close_notify(&mut self) -> bool {
        match *self {}
    }

    pub(crate) fn summary(&self) -> String {
        match *self {}
    }
}
