//! Write an NSS cache of N pool accounts (`poolNNNNNN`, uid 200000+N, group `pool` 50000) into
//! DIR, as the pool and portal writers do (checksummed files and their indexes); for
//! `bench/pam-nss.sh`.
//!
//!     cargo run --release -p hpccert-core --example nss_pool -- DIR N
use std::process::ExitCode;

use hpccert_core::host::nsscache::{GroupEntry, IdFloor, PasswdEntry, write_group, write_passwd};
use hpccert_core::identity::gridmap::AccountName;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(Ok(n))) = (args.first(), args.get(1).map(|n| n.parse::<u32>())) else {
        eprintln!("usage: nss_pool DIR N");
        return ExitCode::from(2);
    };
    let name = |s: String| AccountName::parse(&s).map_err(|e| e.to_string());
    let result = (|| -> Result<(), String> {
        let users = (1..=n)
            .map(|i| {
                Ok(PasswdEntry {
                    name: name(format!("pool{i:06}"))?,
                    uid: 200_000 + i,
                    gid: 50_000,
                    gecos: format!("Pool account {i}"),
                    dir: format!("/home/pool{i:06}"),
                    shell: "/bin/bash".into(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let dir = std::path::Path::new(dir);
        write_passwd(dir, &users, &IdFloor::default()).map_err(|e| e.to_string())?;
        let group = GroupEntry {
            name: name("pool".into())?,
            gid: 50_000,
            members: Vec::new(),
        };
        write_group(dir, &[group], &IdFloor::default()).map_err(|e| e.to_string())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nss_pool: {e}");
            ExitCode::from(1)
        }
    }
}
