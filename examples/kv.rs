//! A key-value server that speaks Redis's protocol (RESP2), so `redis-cli` and
//! `redis-benchmark` talk to it as to `redis-server`.
//!
//! Run with `cargo run --release --example kv -- [OPTIONS] [SPEC]...` (default
//! `localhost:6380`), then `redis-cli -p 6380 set greeting hello`, `redis-cli -p 6380 get
//! greeting`, or `redis-benchmark -p 6380 -t set,get -P 16 -q`.
//!
//! Commands: PING [msg], ECHO, SET key value [EX seconds | PX milliseconds], GET, DEL,
//! EXISTS, INCR, MGET, MSET, DBSIZE, FLUSHALL, COMMAND (an empty answer, enough for
//! `redis-cli`), QUIT; any other gets Redis's "unknown command" error and the connection
//! goes on. Requests come as arrays of bulk strings or inline (`PING\r\n`, split at white
//! space: Redis's quotes are not read), pipelined, split at any byte; a request in many reads
//! is parsed once, on from where the last read left it. A bulk string longer than
//! `--max-bulk` (default 512 MiB, as Redis), or a line longer than 64 KiB, gets an error and
//! a close: nothing of the claimed size is ever allocated. A reply may be as long as the
//! longest value (the output limit is set to it); an MGET whose reply would be longer gets
//! `-ERR reply too large`. Keys expire through the server's timers.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use dualstack::{ConnId, Context, Handler, Input, Sender, TimerId};

/// The longest line (an inline request, a `*` or `$` header), and the most arguments of one
/// request, as Redis.
const MAX_LINE: usize = 64 * 1024;
const MAX_ARGS: i64 = i32::MAX as i64;

struct Entry {
    value: Vec<u8>,
    /// When it expires, and the timer that removes it then.
    expiry: Option<(Instant, TimerId)>,
}

struct Kv {
    map: HashMap<Vec<u8>, Entry>,
    /// The key each expiry timer removes.
    expiring: HashMap<TimerId, Vec<u8>>,
    max_bulk: usize,
    /// The longest reply built (the output limit): a longer one is refused before it is.
    max_reply: usize,
}

/// A decimal integer as Redis reads one: an optional `-`, digits, no leading zero.
fn integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = !digits.is_empty() && (digits[0] != b'0' || text == b"0");
    if !canonical || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// How far the request at the start of a connection's input was parsed: the arguments
/// found, where parsing goes on, how many are still to come (`None`: a request begins). A
/// request that comes in many reads is parsed once, not again from its start at each.
#[derive(Default)]
struct Progress {
    args: Vec<(usize, usize)>,
    at: usize,
    left: Option<i64>,
}

/// Parses the request at the start of `buf` on from where `p` says: `Ok(Some(len))` with its
/// length and `p.args` its arguments, `Ok(None)` while it is incomplete, `Err` (Redis's
/// words) for what no request begins with.
fn request(buf: &[u8], max_bulk: usize, p: &mut Progress) -> Result<Option<usize>, String> {
    // The line at `at`: where its text ends (before CR LF, or LF), and where the next begins.
    let line = |at: usize, too_big: &str| match buf[at..]
        .iter()
        .take(MAX_LINE + 2)
        .position(|&b| b == b'\n')
    {
        Some(lf) if lf > 0 && buf[at + lf - 1] == b'\r' => Ok(Some((at + lf - 1, at + lf + 1))),
        Some(lf) => Ok(Some((at + lf, at + lf + 1))),
        None if buf.len() - at > MAX_LINE + 1 => Err(too_big.to_owned()),
        None => Ok(None),
    };
    if p.left.is_none() {
        p.args.clear();
        let too_big = match buf.first() {
            Some(b'*') => "too big mbulk count string",
            _ => "too big inline request",
        };
        let Some((end, next)) = line(0, too_big)? else {
            return Ok(None);
        };
        if buf[0] != b'*' {
            // Inline: words as Redis splits them (its quoting is not read): ended by a
            // space, tab, CR, LF or NUL; a vertical tab or form feed before one is skipped.
            let mut start = 0;
            for (i, b) in buf[..end].iter().chain(b" ").enumerate() {
                if matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0) {
                    if i > start {
                        p.args.push((start, i));
                    }
                    start = i + 1;
                } else if i == start && matches!(b, 0x0b | 0x0c) {
                    start = i + 1;
                }
            }
            return Ok(Some(next));
        }
        let count = integer(&buf[1..end])
            .filter(|n| *n <= MAX_ARGS)
            .ok_or("invalid multibulk length")?;
        (p.at, p.left) = (next, Some(count.max(0)));
    }
    while let Some(left @ 1..) = p.left {
        let Some((end, next)) = line(p.at, "too big bulk count string")? else {
            return Ok(None);
        };
        if buf[p.at] != b'$' {
            return Err(format!("expected '$', got '{}'", buf[p.at] as char));
        }
        let len = integer(&buf[p.at + 1..end])
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= max_bulk)
            .ok_or("invalid bulk length")?;
        if buf.len() < next + len + 2 {
            return Ok(None); // the rest comes later: nothing of `len` is allocated
        }
        p.args.push((next, next + len));
        (p.at, p.left) = (next + len + 2, Some(left - 1));
    }
    p.left = None;
    Ok(Some(p.at))
}

fn bulk(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            let _ = write!(out, "${}\r\n", v.len());
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"$-1\r\n"),
    }
}

impl Kv {
    /// The live value of `key` (one whose expiry passed is gone, even before its timer).
    fn get(&self, key: &[u8], now: Instant) -> Option<&[u8]> {
        let e = self.map.get(key)?;
        e.expiry
            .map_or(true, |(at, _)| at > now)
            .then_some(e.value.as_slice())
    }

    fn set(&mut self, ctx: &mut Sender<'_>, key: &[u8], value: Vec<u8>, ttl: Option<Duration>) {
        let expiry = ttl.map(|ttl| {
            let timer = ctx.set_timer(ttl, 0);
            self.expiring.insert(timer, key.to_vec());
            (ctx.now() + ttl, timer)
        });
        // The old value's expiry goes with it, not the new one's.
        if let Some(old) = self.map.insert(key.to_vec(), Entry { value, expiry }) {
            self.forget(ctx, old);
        }
    }

    /// Removes `key`; whether it was there (and live).
    fn del(&mut self, ctx: &mut Sender<'_>, key: &[u8]) -> bool {
        self.map.remove(key).is_some_and(|e| self.forget(ctx, e))
    }

    /// Cancels the expiry of an entry taken out of the map; whether it was live.
    fn forget(&mut self, ctx: &mut Sender<'_>, e: Entry) -> bool {
        let Some((at, timer)) = e.expiry else {
            return true;
        };
        ctx.cancel_timer(timer);
        self.expiring.remove(&timer);
        at > ctx.now()
    }

    /// Runs one request, its reply (or Redis's error for it) appended to `out`; whether the
    /// connection is to close.
    fn command(
        &mut self,
        ctx: &mut Sender<'_>,
        args: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let Some(name) = args.first() else {
            return Ok(false);
        }; // an empty request
        let mut lower = [0u8; 16];
        let name_len = name.len().min(16);
        lower[..name_len].copy_from_slice(&name[..name_len]);
        lower.make_ascii_lowercase();
        let (n, now) = (args.len(), ctx.now());
        let arity = |ok: bool, name: &str| match ok {
            true => Ok(()),
            false => Err(format!(
                "-ERR wrong number of arguments for '{name}' command\r\n"
            )),
        };
        let not_integer = || "-ERR value is not an integer or out of range\r\n".to_owned();
        match &lower[..if name.len() > 16 { 0 } else { name_len }] {
            b"ping" => {
                arity(n <= 2, "ping")?;
                match args.get(1) {
                    Some(msg) => bulk(out, Some(msg)),
                    None => out.extend_from_slice(b"+PONG\r\n"),
                }
            }
            b"echo" => {
                arity(n == 2, "echo")?;
                bulk(out, Some(args[1]));
            }
            b"set" => {
                arity(n >= 3, "set")?;
                let ttl = match &args[3..] {
                    [] => None,
                    [unit, amount] => {
                        let scale = match &unit.to_ascii_lowercase()[..] {
                            b"ex" => 1000,
                            b"px" => 1,
                            _ => return Err("-ERR syntax error\r\n".into()),
                        };
                        let ms = integer(amount).ok_or_else(not_integer)?.checked_mul(scale);
                        // Redis's bounds: positive, and a Unix time in milliseconds then.
                        let unix_ms = std::time::UNIX_EPOCH.elapsed().unwrap_or_default();
                        let ms = ms
                            .filter(|ms| *ms > 0)
                            .filter(|ms| ms.checked_add(unix_ms.as_millis() as i64).is_some())
                            .ok_or("-ERR invalid expire time in 'set' command\r\n")?;
                        Some(Duration::from_millis(ms as u64))
                    }
                    _ => return Err("-ERR syntax error\r\n".into()),
                };
                self.set(ctx, args[1], args[2].to_vec(), ttl);
                out.extend_from_slice(b"+OK\r\n");
            }
            b"get" => {
                arity(n == 2, "get")?;
                bulk(out, self.get(args[1], now));
            }
            b"del" => {
                arity(n >= 2, "del")?;
                let gone = args[1..].iter().filter(|key| self.del(ctx, key)).count();
                let _ = write!(out, ":{gone}\r\n");
            }
            b"exists" => {
                arity(n >= 2, "exists")?;
                let found = args[1..]
                    .iter()
                    .filter(|key| self.get(key, now).is_some())
                    .count();
                let _ = write!(out, ":{found}\r\n");
            }
            b"incr" => {
                arity(n == 2, "incr")?;
                let old = self
                    .get(args[1], now)
                    .map_or(Some(0), integer)
                    .ok_or_else(not_integer)?;
                let new = old
                    .checked_add(1)
                    .ok_or("-ERR increment or decrement would overflow\r\n")?;
                match self.map.get_mut(args[1]) {
                    // A live key keeps its expiry, as in Redis.
                    Some(e) if e.expiry.map_or(true, |(at, _)| at > now) => {
                        e.value = new.to_string().into_bytes()
                    }
                    _ => self.set(ctx, args[1], new.to_string().into_bytes(), None),
                }
                let _ = write!(out, ":{new}\r\n");
            }
            b"mget" => {
                arity(n >= 2, "mget")?;
                let _ = write!(out, "*{}\r\n", n - 1);
                for key in &args[1..] {
                    bulk(out, self.get(key, now));
                    if out.len() > self.max_reply {
                        return Err("-ERR reply too large\r\n".into());
                    }
                }
            }
            b"mset" => {
                arity(n >= 3 && n % 2 == 1, "mset")?;
                for pair in args[1..].chunks(2) {
                    self.set(ctx, pair[0], pair[1].to_vec(), None);
                }
                out.extend_from_slice(b"+OK\r\n");
            }
            b"dbsize" => {
                arity(n == 1, "dbsize")?;
                let _ = write!(out, ":{}\r\n", self.map.len());
            }
            b"flushall" => {
                let mode = args.get(1).map(|m| m.to_ascii_lowercase());
                if n > 2 || mode.is_some_and(|m| m != b"sync" && m != b"async") {
                    return Err("-ERR syntax error\r\n".into());
                }
                for (timer, _) in self.expiring.drain() {
                    ctx.cancel_timer(timer);
                }
                self.map.clear();
                out.extend_from_slice(b"+OK\r\n");
            }
            b"command" => out.extend_from_slice(b"*0\r\n"),
            b"quit" => {
                out.extend_from_slice(b"+OK\r\n");
                return Ok(true);
            }
            _ => {
                // Redis's words: the name, and arguments up to 128 characters.
                let mut given = String::new();
                for arg in &args[1..] {
                    if given.len() >= 128 {
                        break;
                    }
                    let arg: String = String::from_utf8_lossy(arg)
                        .chars()
                        .take(128 - given.len())
                        .collect();
                    given += &format!("'{arg}' ");
                }
                let shown: String = String::from_utf8_lossy(name).chars().take(128).collect();
                let text =
                    format!("-ERR unknown command '{shown}', with args beginning with: {given}");
                return Err(text.replace(['\r', '\n'], " ") + "\r\n");
            }
        }
        Ok(false)
    }
}

impl Handler for Kv {
    type State = Progress;

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        // One request at a time: while this client's replies wait for it to read them, its
        // input is held (shows nothing), and the rest waits in the server.
        let Some((progress, mut ctx)) = ctx.split(conn) else {
            return;
        };
        let mut out = Vec::new();
        loop {
            let buf = input.bytes();
            match request(buf, self.max_bulk, progress) {
                Ok(Some(len)) => {
                    let argv: Vec<&[u8]> = progress.args.iter().map(|&(a, b)| &buf[a..b]).collect();
                    out.clear();
                    match self.command(&mut ctx, &argv, &mut out) {
                        Ok(quit) => {
                            // Refused only when the client stopped reading its replies.
                            if ctx.send(conn, &out).is_err() {
                                return ctx.close(conn);
                            }
                            if quit {
                                ctx.close_after_flush(conn);
                            }
                        }
                        Err(e) if ctx.send(conn, e.as_bytes()).is_err() => return ctx.close(conn),
                        Err(_) => {}
                    }
                    input.consume(len);
                }
                Ok(None) => return, // the rest comes later; `progress` keeps how far it got
                Err(e) => {
                    let _ = ctx.send(conn, format!("-ERR Protocol error: {e}\r\n").as_bytes());
                    return ctx.close_after_flush(conn);
                }
            }
        }
    }

    fn on_timer(&mut self, _: &mut Context<'_, Self>, timer: TimerId, _: u64) {
        if let Some(key) = self.expiring.remove(&timer) {
            self.map.remove(&key);
        }
    }
}

fn main() {
    let signals = common::signals("kv");
    let opts = common::Options::parse(
        "kv",
        "kv: a key-value server that speaks Redis's protocol (redis-cli, redis-benchmark).",
        "localhost:6380",
        &[(
            "--max-bulk",
            "--max-bulk BYTES          the longest bulk string taken (default 512 MiB)",
        )],
    );
    let max_bulk = opts
        .extra("--max-bulk")
        .map_or(512 << 20, |v| common::count("kv", "--max-bulk", v));
    common::init_logging();
    // A reply (GET) may hold one bulk string of max_bulk bytes, with its headers; a request
    // many, up to Redis's query buffer limit (1 GiB), or one at least.
    let largest = max_bulk.saturating_add(2 * MAX_LINE);
    let kv = Kv {
        map: HashMap::new(),
        expiring: HashMap::new(),
        max_bulk,
        max_reply: largest.max(4 << 20),
    };
    // The largest reply may come while up to the high-water mark (256 KiB) is queued.
    let builder = (opts.builder().max_input(largest.max(1 << 30)))
        .max_queued(kv.max_reply.saturating_add(256 << 10));
    common::serve("kv", &signals, &opts, builder, kv);
}
