//! A line-based chat room across every listener.
//!
//! Run with `cargo run --example chat -- [OPTIONS] [SPEC]...` (default `localhost:7001`),
//! then connect several clients: `nc -4 127.0.0.1 7001`, `nc -6 ::1 7001`.
//!
//! Each line a client sends goes to every other client as `ADDR: TEXT`, where ADDR is the
//! sender's normalized peer address (an IPv4 client of a dual-stack socket is `127.0.0.1:P`,
//! never `[::ffff:127.0.0.1]:P`) or the name it chose with `/nick NAME`. `/who` lists who is
//! here. Joins and leaves are announced as `* ADDR joined` and `* ADDR left`. A line longer
//! than 4096 bytes is dropped with an error line back to its sender. A client that stops
//! reading is disconnected once 256 KiB are waiting for it, without slowing anyone else.

mod common;

use dualstack::{ConnId, ConnInfo, Context, Handler, SendError};

/// The longest line, in bytes, not counting the newline.
const MAX_LINE: usize = 4096;
/// A client with more than this waiting for it is not reading: it is cut off.
const MAX_WAITING: usize = 256 * 1024;

/// What the server keeps for each client, beside its connection (`Handler::State`).
#[derive(Default)]
struct Client {
    /// What others see: the normalized peer address, or the nickname.
    name: String,
    /// The start of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// The current line passed MAX_LINE: drop the rest of it, up to its newline.
    overlong: bool,
}

/// The room. It keeps nothing itself: every client's name and partial line live with its
/// connection.
struct Chat;

type Ctx<'a> = Context<'a, Client>;

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
    let line = line.strip_suffix(b"\r").unwrap_or(line);
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
/// overwrites a line) in caret or `\u{..}` form, and the bidirectional overrides that
/// reorder what is shown. Tabs stay.
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
            '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            _ => out.push(c),
        }
    }
    out
}

/// The length of `head` followed by `tail` for the line limit: a CR at the end (of a CRLF
/// ending, perhaps split across reads) is not part of the line.
fn counted(head: &[u8], tail: &[u8]) -> usize {
    let last = tail.last().or(head.last());
    head.len() + tail.len() - usize::from(last == Some(&b'\r'))
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

    fn on_data(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, data: &[u8]) {
        let mut rest = data;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (piece, after) = (&rest[..newline], &rest[newline + 1..]);
            rest = after;
            let Some(client) = ctx.state_mut(conn) else {
                return;
            };
            if std::mem::take(&mut client.overlong) {
                continue; // the end of a line already reported as too long
            }
            if counted(&client.partial, piece) > MAX_LINE {
                client.partial.clear();
                deliver(ctx, conn, "* error: line longer than 4096 bytes, dropped\n");
                continue;
            }
            let mut whole = std::mem::take(&mut client.partial);
            whole.extend_from_slice(piece);
            line(ctx, conn, &whole);
        }
        let Some(client) = ctx.state_mut(conn) else {
            return;
        };
        if client.overlong {
            return;
        }
        // A CR at the end may be the first half of a CRLF split across reads.
        if counted(&client.partial, rest) > MAX_LINE {
            client.partial = Vec::new();
            client.overlong = true;
            deliver(ctx, conn, "* error: line longer than 4096 bytes, dropped\n");
        } else {
            client.partial.extend_from_slice(rest);
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
    let signals = common::Signals::install("chat");
    let opts = common::Options::parse(
        "chat",
        "chat: a line-based chat room across every listener (/nick NAME, /who).",
        "localhost:7001",
        &[],
    );
    common::init_logging();
    let mut server = common::bind("chat", opts.builder(), Chat);
    signals.stop(&server);
    common::announce("chat", &server);
    if let Err(e) = server.run() {
        log::error!("the server loop failed: {e}");
        std::process::exit(1);
    }
}
