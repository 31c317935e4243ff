//! An echo server: every byte a client sends comes back, unchanged, on every listener.
//!
//! Run with `cargo run --example echo -- [OPTIONS] [SPEC]...` (default `localhost:7000`,
//! which is 127.0.0.1:7000 and [::1]:7000), then try `nc -4 127.0.0.1 7000` and
//! `nc -6 ::1 7000`. `--help` explains the specs and options.
//!
//! Backpressure comes from the library: a client that sends without reading is no longer
//! read once its echo queue passes the high-water mark, so TCP flow control holds it back.

mod common;

use dualstack::{ConnId, Context, Handler, Input, SendError};

struct Echo;

impl Handler for Echo {
    type State = ();
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        match ctx.send(conn, input.take_all()) {
            Ok(()) | Err(SendError::Closed) => {}
            // An echo that cannot be taken (the per-connection or the total limit) is never
            // dropped in silence: the connection goes, and the log says why, at debug (a
            // peer must not be able to fill the log).
            Err(e) => {
                log::debug!("{conn}: {e}; closing it");
                ctx.close(conn);
            }
        }
    }
}

fn main() {
    let signals = common::signals("echo");
    let opts = common::Options::parse(
        "echo",
        "echo: every byte a client sends comes back, unchanged.",
        "localhost:7000",
        &[],
    );
    common::init_logging();
    common::serve("echo", &signals, &opts, opts.builder(), Echo);
}
