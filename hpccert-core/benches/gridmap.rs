//! Grid-mapfile load and lookup at 100,000 lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::GridMapfile;

const LINES: usize = 100_000;

/// A CILogon-style grid-mapfile: `"/DC=org/DC=cilogon/C=US/O=Inst N/CN=User N AN" acct`.
fn mapfile() -> String {
    let mut text = String::with_capacity(LINES * 80);
    text.push_str("# generated for the benchmark\n");
    for n in 0..LINES {
        let inst = n % 500;
        let _ = writeln!(
            text,
            "\"/DC=org/DC=cilogon/C=US/O=Inst {inst}/CN=User {n} A{n}\" user{n:06}{}",
            if n % 10 == 0 { ",shared" } else { "" }
        );
    }
    text
}

fn bench(c: &mut Criterion) {
    let text = mapfile();
    let map = GridMapfile::parse(&text).unwrap();
    assert_eq!(map.len(), LINES);
    let present =
        DistinguishedName::parse("/DC=org/DC=cilogon/C=US/O=Inst 234/CN=User 54734 A54734")
            .unwrap();
    let missing =
        DistinguishedName::parse("/DC=org/DC=cilogon/C=US/O=Inst 234/CN=User 54734 A54735")
            .unwrap();
    assert!(map.lookup(&present).is_some());
    assert!(map.lookup(&missing).is_none());

    let mut g = c.benchmark_group("gridmap_load");
    g.sample_size(10);
    g.bench_function("parse_100k", |b| {
        // the map is dropped outside the timing: this is the load alone
        b.iter_with_large_drop(|| GridMapfile::parse(black_box(&text)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("gridmap_lookup");
    g.bench_function("lookup_hit", |b| {
        b.iter(|| map.lookup(black_box(&present)).is_some())
    });
    g.bench_function("lookup_miss", |b| {
        b.iter(|| map.lookup(black_box(&missing)).is_some())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
