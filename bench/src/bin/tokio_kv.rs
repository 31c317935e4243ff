//! The tokio reference for `examples/kv.rs`: the same Redis-protocol key-value server (the
//! same commands, replies and limits), written as a tokio user would write it: a
//! current-thread runtime, a task per connection reading into a buffer it keeps and parses
//! from, replies through a `BufWriter` flushed when no whole request is left to answer (as
//! tokio's docs advise), the keyspace behind an `Arc<Mutex<..>>`, and a task per expiring
//! key.
//!
//! `tokio_kv SPEC...`: same sockets (from `dualstack::bind`), socket options
//! (`dualstack_bench::reference_options`) and `listening on` lines as the kv example.

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

/// The longest line (an inline request, a `*` or `$` header), the most arguments of one
/// request and the longest bulk string, as Redis.
const MAX_LINE: usize = 64 * 1024;
const MAX_ARGS: i64 = i32::MAX as i64;
const MAX_BULK: usize = 512 << 20;
/// The longest reply built (kv's output limit: one value of the longest bulk string).
const MAX_REPLY: usize = MAX_BULK + 2 * MAX_LINE;

struct Entry {
    value: Vec<u8>,
    /// When it expires, and which setting of the key that was (an expiry task removes the
    /// key only if it was not set again since).
    expiry: Option<(Instant, u64)>,
}

#[derive(Default)]
struct Db {
    map: HashMap<Vec<u8>, Entry>,
    /// Counts settings of keys, to tell them apart.
    sets: u64,
}

type Shared = Arc<Mutex<Db>>;

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
fn request(buf: &[u8], p: &mut Progress) -> Result<Option<usize>, String> {
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
            .filter(|n| *n <= MAX_BULK)
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

impl Db {
    /// The live value of `key` (one whose expiry passed is gone, even before its task).
    fn get(&self, key: &[u8], now: Instant) -> Option<&[u8]> {
        let e = self.map.get(key)?;
        e.expiry
            .is_none_or(|(at, _)| at > now)
            .then_some(e.value.as_slice())
    }

    fn set(&mut self, db: &Shared, key: &[u8], value: Vec<u8>, ttl: Option<Duration>) {
        self.sets += 1;
        let expiry = ttl.map(|ttl| {
            let (db, key, set) = (db.clone(), key.to_vec(), self.sets);
            tokio::spawn(async move {
                tokio::time::sleep(ttl).await;
                let mut db = db.lock().unwrap();
                if db
                    .map
                    .get(&key)
                    .is_some_and(|e| e.expiry.is_some_and(|(_, s)| s == set))
                {
                    db.map.remove(&key);
                }
            });
            (Instant::now() + ttl, set)
        });
        self.map.insert(key.to_vec(), Entry { value, expiry });
    }

    /// Removes `key`; whether it was there (and live).
    fn del(&mut self, key: &[u8], now: Instant) -> bool {
        let Some(e) = self.map.remove(key) else {
            return false;
        };
        e.expiry.is_none_or(|(at, _)| at > now)
    }

    /// Runs one request, its reply (or Redis's error for it) appended to `out`; whether the
    /// connection is to close.
    fn command(&mut self, db: &Shared, args: &[&[u8]], out: &mut Vec<u8>) -> Result<bool, String> {
        let Some(name) = args.first() else {
            return Ok(false);
        }; // an empty request
        let mut lower = [0u8; 16];
        let name_len = name.len().min(16);
        lower[..name_len].copy_from_slice(&name[..name_len]);
        lower.make_ascii_lowercase();
        let (n, now) = (args.len(), Instant::now());
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
                self.set(db, args[1], args[2].to_vec(), ttl);
                out.extend_from_slice(b"+OK\r\n");
            }
            b"get" => {
                arity(n == 2, "get")?;
                bulk(out, self.get(args[1], now));
            }
            b"del" => {
                arity(n >= 2, "del")?;
                let gone = args[1..].iter().filter(|key| self.del(key, now)).count();
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
                    Some(e) if e.expiry.is_none_or(|(at, _)| at > now) => {
                        e.value = new.to_string().into_bytes()
                    }
                    _ => self.set(db, args[1], new.to_string().into_bytes(), None),
                }
                let _ = write!(out, ":{new}\r\n");
            }
            b"mget" => {
                arity(n >= 2, "mget")?;
                let _ = write!(out, "*{}\r\n", n - 1);
                for key in &args[1..] {
                    bulk(out, self.get(key, now));
                    if out.len() > MAX_REPLY {
                        return Err("-ERR reply too large\r\n".into());
                    }
                }
            }
            b"mset" => {
                arity(n >= 3 && n % 2 == 1, "mset")?;
                for pair in args[1..].chunks(2) {
                    self.set(db, pair[0], pair[1].to_vec(), None);
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

/// Serves one client: reads into a buffer, answers every whole request in it, and writes
/// the replies when no whole request is left.
async fn serve(stream: TcpStream, db: Shared) -> io::Result<()> {
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::new(writer);
    let (mut buf, mut out) = (Vec::with_capacity(64 * 1024), Vec::new());
    let mut progress = Progress::default();
    loop {
        let mut used = 0;
        loop {
            match request(&buf[used..], &mut progress) {
                Ok(Some(len)) => {
                    let req = &buf[used..used + len];
                    let argv: Vec<&[u8]> = progress.args.iter().map(|&(a, b)| &req[a..b]).collect();
                    out.clear();
                    let quit = db.lock().unwrap().command(&db, &argv, &mut out);
                    match quit {
                        Ok(quit) => {
                            writer.write_all(&out).await?;
                            if quit {
                                return writer.flush().await;
                            }
                        }
                        Err(e) => writer.write_all(e.as_bytes()).await?,
                    }
                    used += len;
                }
                Ok(None) => break,
                Err(e) => {
                    writer
                        .write_all(format!("-ERR Protocol error: {e}\r\n").as_bytes())
                        .await?;
                    return writer.flush().await;
                }
            }
        }
        buf.drain(..used);
        writer.flush().await?;
        buf.reserve(64 * 1024);
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

fn main() -> io::Result<()> {
    let std_listeners = dualstack_bench::std_tcp_listeners("tokio_kv")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let db = Shared::default();
        let mut accepts = Vec::new();
        for std_listener in std_listeners {
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            let db = db.clone();
            accepts.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(stream, db.clone()));
                }
            }));
        }
        for a in accepts {
            let _ = a.await;
        }
        Ok(())
    })
}
