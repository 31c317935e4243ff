//! Micro-benchmarks of the address layer: parsing typical specs, normalizing, and parse +
//! plan of a numeric spec (no I/O: capabilities are given, and a numeric host never asks the
//! resolver). Run with `cargo bench --bench address`.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use dualstack::{normalize, plan, HostCaps, ListenSpec, PlanOptions, SystemResolver};

const CAPS: HostCaps = HostCaps {
    ipv4: true,
    ipv6: true,
    dual_stack: true,
    ipv4_loopback: true,
    ipv6_loopback: true,
};

fn parsing(c: &mut Criterion) {
    for spec in [
        "localhost:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        ":8080",
        "[fe80::1%25eth0]:80",
        "api.example.com:443",
    ] {
        c.bench_function(&format!("parse {spec}"), |b| {
            b.iter(|| black_box(spec).parse::<ListenSpec>().unwrap())
        });
    }
}

fn normalizing(c: &mut Criterion) {
    let mapped: SocketAddr = "[::ffff:192.0.2.7]:50000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    c.bench_function("normalize mapped", |b| {
        b.iter(|| normalize(black_box(mapped)))
    });
    c.bench_function("normalize ipv6", |b| b.iter(|| normalize(black_box(v6))));
}

fn planning(c: &mut Criterion) {
    for spec in ["127.0.0.1:8080", "[::1]:8080", ":8080"] {
        c.bench_function(&format!("parse + plan {spec}"), |b| {
            b.iter(|| {
                let spec: ListenSpec = black_box(spec).parse().unwrap();
                plan(&spec, PlanOptions::default(), &CAPS, &SystemResolver).unwrap()
            })
        });
    }
}

criterion_group!(benches, parsing, normalizing, planning);
criterion_main!(benches);
