//! Explains listen specs: how each one parses, or why it does not.
//!
//! Run with: `cargo run --example spec -- localhost:8080 "[fe80::1%25lo]:80" ::1:80`
//! Exits with status 2 if any spec is invalid.

use dualstack::{Host, ListenSpec};

fn main() {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    if specs.is_empty() {
        eprintln!("usage: spec SPEC...   (for example: spec localhost:8080 :0 \"[::1]:80\")");
        std::process::exit(2);
    }
    let mut failed = false;
    for text in &specs {
        match text.parse::<ListenSpec>() {
            Ok(spec) => {
                let kind = match spec.host() {
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
                println!("{text:?} -> {spec}: {kind}, port {}", spec.port());
            }
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
