//! NSS cache lookups at 100,000 entries, as `libnss_hpccert.so.2` makes them
//! ([`CachedTable::find_name`] / [`CachedTable::find_id`] through the index files), against
//! the whole-file load that enumeration needs.
//!
//! `cold` builds a new [`CachedTable`] for each lookup: the first lookup of a fresh process
//! (`ls -l`, `id`, `sudo`), which opens the file and its index; `warm` reuses one, as a
//! long-running process (sshd-gsi, a batch system daemon) does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hpccert_core::host::nsscache::{CachedTable, IdFloor, PasswdEntry, PasswdTable, write_passwd};
use hpccert_core::identity::gridmap::AccountName;

const ENTRIES: u32 = 100_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<PasswdEntry> = (1..=ENTRIES)
        .map(|i| PasswdEntry {
            name: AccountName::parse(&format!("pool{i:06}")).unwrap(),
            uid: 200_000 + i,
            gid: 50_000,
            gecos: format!("Pool account {i}"),
            dir: format!("/home/pool{i:06}"),
            shell: "/bin/bash".into(),
        })
        .collect();
    write_passwd(dir.path(), &entries, &IdFloor::default()).unwrap();
    let d = dir.path();

    let mut g = c.benchmark_group("nss_100k");
    g.bench_function("by_name_cold", |b| {
        b.iter(|| {
            let cache = CachedTable::<PasswdTable>::new(d);
            black_box(cache.find_name(black_box("pool054321")).unwrap().unwrap());
        })
    });
    g.bench_function("by_uid_cold", |b| {
        b.iter(|| {
            let cache = CachedTable::<PasswdTable>::new(d);
            black_box(cache.find_id(black_box(254_321)).unwrap().unwrap());
        })
    });
    let warm = CachedTable::<PasswdTable>::new(d);
    g.bench_function("by_name_warm", |b| {
        b.iter(|| black_box(warm.find_name(black_box("pool054321")).unwrap().unwrap()))
    });
    g.bench_function("by_name_warm_miss", |b| {
        b.iter(|| black_box(warm.find_name(black_box("pool154321")).unwrap()))
    });
    g.sample_size(10);
    g.bench_function("whole_file_load", |b| {
        b.iter(|| {
            let cache = CachedTable::<PasswdTable>::new(d);
            black_box(cache.load().unwrap().len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
