//! A line-based chat room across every listener.
//!
//! Run with `cargo run --example chat -- [OPTIONS] [SPEC]...` (default `localhost:7001`),
//! then connect several clients: `nc -4 127.0.0.1 7001`, `nc -6 ::1 7001`.
//!
//! Each line a client sends goes to every other client as `ADDR: TEXT`, where ADDR is the
//! sender's normalized peer address (an IPv4 client of a dual-stack socket is `127.0.0.1:P`,
//! never `[::ffff:127.0.0.1]:P`) or the name it chose with `/nick NAME`. `/who` lists who is
//! here; a name is one client's (another asking for it, in any case, is refused). Joins and
//! leaves are announced as `* ADDR joined` and `* ADDR left`. A line longer than 4096 bytes
//! is dropped with an error line back to its sender. A client that stops reading is
//! disconnected once 256 KiB are waiting for it, without slowing anyone else.

mod common;

use dualstack::frame::Lines;
use dualstack::{ConnId, ConnInfo, Context, Handler, Input, SendError};

/// The longest line, in bytes, not counting the newline.
const MAX_LINE: usize = 4096;
/// A client with more than this waiting for it is not reading: it is cut off.
const MAX_WAITING: usize = 256 * 1024;

/// A line: LF or CRLF, at most MAX_LINE bytes before it.
const LINE: Lines = Lines::new(MAX_LINE);

/// What the server keeps for each client, beside its connection (`Handler::State`).
#[derive(Default)]
struct Client {
    /// What others see: the normalized peer address, or the nickname.
    name: String,
    /// The current line passed MAX_LINE: drop the rest of it, up to its newline.
    overlong: bool,
}

/// The room. It keeps nothing itself: every client's name lives with its connection, and
/// the start of a line whose end has not come stays in the connection's input.
struct Chat;

type Ctx<'a> = Context<'a, Chat>;

/// Sends `text` to `to`, or cuts `to` off if it is not reading.
fn deliver(ctx: &mut Ctx<'_>, to: ConnId, text: &str) {
    let waiting = ctx.queued(to);
    let result = if waiting + text.len() > MAX_WAITING {
        Err(SendError::QueueFull {
            queued: waiting,
            limit: MAX_WAITING,
        })
    } else {
        ctx.send(to, text.as_bytes())
    };
    match result {
        Ok(()) | Err(SendError::Closed) => {}
        Err(e) => {
            // Not reading (or the server's total output cap says no): cut off, never a
            // message lost in silence.
            let name = ctx.state(to).map_or("?", |c| c.name.as_str());
            log::info!("{name} is not reading ({e}): disconnecting it");
            ctx.close(to);
        }
    }
}

/// Sends `text` to every client but `except`.
fn broadcast(ctx: &mut Ctx<'_>, except: Option<ConnId>, text: &str) {
    let targets: Vec<ConnId> = ctx.connections().filter(|c| Some(*c) != except).collect();
    for to in targets {
        deliver(ctx, to, text);
    }
}

/// One complete line from `from`: a command, or a message for the others.
fn line(ctx: &mut Ctx<'_>, from: ConnId, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let Some(name) = ctx.state(from).map(|c| c.name.clone()) else {
        return;
    };
    if let Some(nick) = text.strip_prefix("/nick ") {
        let nick = nick.trim();
        let valid = !nick.is_empty()
            && nick.len() <= 32
            && nick
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.".contains(c));
        if !valid {
            deliver(
                ctx,
                from,
                "* error: a nickname is 1 to 32 letters, digits, '-', '_' or '.'\n",
            );
            return;
        }
        // One name, one client (in any case): none may speak as another.
        let taken = ctx.connections().filter(|c| *c != from).any(|c| {
            ctx.state(c)
                .is_some_and(|s| s.name.eq_ignore_ascii_case(nick))
        });
        if taken {
            return deliver(ctx, from, &format!("* error: {nick} is taken\n"));
        }
        if let Some(client) = ctx.state_mut(from) {
            client.name = nick.to_owned();
        }
        broadcast(ctx, None, &format!("* {name} is now {nick}\n"));
    } else if text.trim() == "/who" {
        let mut names: Vec<String> = ctx
            .connections()
            .filter_map(|c| ctx.state(c).map(|s| s.name.clone()))
            .collect();
        names.sort_unstable();
        deliver(ctx, from, &format!("* here: {}\n", names.join(", ")));
    } else {
        broadcast(ctx, Some(from), &format!("{name}: {}\n", printable(&text)));
    }
}

/// `text` with every character that could act on another user's terminal written out
/// instead: C0 and C1 controls and DEL (ESC starts cursor and screen commands, CR
/// overwrites a line) in caret or `\u{..}` form, and the bidirectional overrides, isolates
/// and marks that reorder what is shown. Tabs stay.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\0'..='\x1f' => {
                out.push('^');
                out.push(char::from(c as u8 + b'@'));
            }
            '\x7f' => out.push_str("^?"),
            '\u{80}'..='\u{9f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{61c}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            _ => out.push(c),
        }
    }
    out
}

impl Handler for Chat {
    type State = Client;

    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, info: &ConnInfo) {
        let name = info.peer.to_string();
        log::debug!("{name} joined");
        broadcast(ctx, Some(conn), &format!("* {name} joined\n"));
        if let Some(client) = ctx.state_mut(conn) {
            client.name = name;
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, input: &mut Input<'_>) {
        loop {
            let Some(client) = ctx.state_mut(conn) else {
                return;
            };
            if client.overlong {
                // The end of a line already reported as too long.
                if !input.skip_past(b"\n") {
                    return;
                }
                client.overlong = false;
            }
            match input.next_frame(&LINE) {
                Ok(Some(text)) => line(ctx, conn, text),
                Ok(None) => return, // its end comes later (or the input is held)
                Err(_) => {
                    client.overlong = true;
                    deliver(ctx, conn, "* error: line longer than 4096 bytes, dropped\n");
                }
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, reason: &dualstack::CloseReason) {
        // The connection's state is still there to read, one last time.
        if let Some(name) = ctx.state(conn).map(|c| c.name.clone()) {
            log::debug!("{name} left ({reason})");
            broadcast(ctx, None, &format!("* {name} left\n"));
        }
    }
}

fn main() {
    let signals = common::signals("chat");
    let opts = common::Options::parse(
        "chat",
        "chat: a line-based chat room across every listener (/nick NAME, /who).",
        "localhost:7001",
        &[],
    );
    common::init_logging();
    common::serve("chat", &signals, &opts, opts.builder(), Chat);
}
