//! An echo server for the load generator's fixed-size messages, written two ways: each
//! message sent back with its own `Context::send` (`--each`, what a handler written without a
//! thought for system calls does), or every whole message of a read gathered into one send
//! (`--gathered`, by hand). The runner compares the two on the `pipelined` scenario: the
//! library coalesces sends, so the first should cost about what the second does.
//!
//! `pieces --each|--gathered SIZE SPEC...`

use dualstack::{ConnId, Context, Handler, Input};

struct Pieces {
    size: usize,
    each: bool,
}

impl Handler for Pieces {
    type State = ();

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let whole = input.len() / self.size * self.size;
        if self.each {
            while input.len() >= self.size {
                let _ = ctx.send(conn, input.take(self.size));
            }
        } else if whole > 0 {
            let _ = ctx.send(conn, input.take(whole));
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let each = match args.next().as_deref() {
        Some("--each") => true,
        Some("--gathered") => false,
        other => {
            eprintln!("pieces: --each or --gathered first, not {other:?}");
            std::process::exit(2)
        }
    };
    let size = args
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or_else(|| {
            eprintln!("pieces: a message size in bytes second");
            std::process::exit(2)
        });
    let specs: Vec<String> = args.collect();
    let mut builder = dualstack::Server::builder();
    for spec in &specs {
        builder = builder.listen(spec.as_str());
    }
    let mut server = builder.bind(Pieces { size, each }).unwrap_or_else(|e| {
        eprintln!("pieces: {e}");
        std::process::exit(2)
    });
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for l in server.listeners() {
        let _ = writeln!(out, "listening on {l}");
    }
    let _ = out.flush();
    drop(out);
    if let Err(e) = server.run() {
        eprintln!("pieces: {e}");
        std::process::exit(1);
    }
}
