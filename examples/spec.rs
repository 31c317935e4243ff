//! Explains listen specs: how each one parses, or why it does not.
//!
//! Run with: `cargo run --example spec -- localhost:8080 "[fe80::1%25lo]:80" ::1:80`
//! Exits with status 2 if any spec is invalid.

use dualstack::{Host, ListenSpec, SpecKind, UnixAddr};

fn main() {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    if specs.is_empty() {
        eprintln!("usage: spec SPEC...   (for example: spec localhost:8080 :0 \"[::1]:80\")");
        std::process::exit(2);
    }
    let mut failed = false;
    for text in &specs {
        match text.parse::<ListenSpec>() {
            Ok(spec) => println!("{text:?} -> {spec}: {}", explain(&spec)),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(2);
    }
}

/// What a parsed spec listens on, in words.
fn explain(spec: &ListenSpec) -> String {
    let (host, port) = match spec.kind() {
        SpecKind::Ip { host, port } => (host, port),
        SpecKind::Unix(UnixAddr::Path(path)) => {
            return format!("a Unix-domain socket at {}", path.display())
        }
        SpecKind::Unix(UnixAddr::Abstract(name)) => {
            return format!(
                "the Linux abstract Unix-domain socket {:?} (no file)",
                String::from_utf8_lossy(name)
            )
        }
        SpecKind::Activated { name: None } => {
            return "every socket the service manager passed (LISTEN_FDS)".to_owned()
        }
        SpecKind::Activated { name: Some(name) } => {
            return format!("the sockets the service manager passed named {name:?}")
        }
        SpecKind::Fd(fd) => return format!("the listening socket inherited on descriptor {fd}"),
        _ => return "a kind of spec this example does not know".to_owned(),
    };
    let what = match host {
        Host::Any => "every address of every family".to_owned(),
        Host::V4(a) if a.is_unspecified() => "the IPv4 any address only".to_owned(),
        Host::V4(_) => "one IPv4 address".to_owned(),
        Host::V6(a, _) if a.is_unspecified() => "the IPv6 any address only".to_owned(),
        Host::V6(_, Some(zone)) => format!("one IPv6 address on interface {zone}"),
        Host::V6(_, None) => "one IPv6 address".to_owned(),
        Host::Name(n) if n.is_localhost() => {
            "the loopback address of each family (never asks DNS)".to_owned()
        }
        Host::Name(_) => "every address the name resolves to".to_owned(),
    };
    format!("{what}, port {port}")
}
