//! Limits on unauthenticated connections, as sshd's `MaxStartups start:rate:full` and
//! `PerSourceMaxStartups`: past `start` unauthenticated connections, a new one is dropped
//! with probability `rate`% rising linearly to 100% at `full`; one source address may hold
//! at most `per_source` unauthenticated connections. A connection stops counting when it
//! authenticates or ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// `MaxStartups` as parsed from `start:rate:full` (or a single number: `n:100:n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    pub start: usize,
    pub rate: u32,
    pub full: usize,
}

impl MaxStartups {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("max_startups {s:?}: expected start:rate:full (e.g. 10:30:100) or a number");
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| p.trim().parse::<usize>().map_err(|_| bad());
        let m = match parts.as_slice() {
            [n] => {
                let n = num(n)?;
                Self {
                    start: n,
                    rate: 100,
                    full: n,
                }
            }
            [a, r, f] => Self {
                start: num(a)?,
                rate: u32::try_from(num(r)?).map_err(|_| bad())?,
                full: num(f)?,
            },
            _ => return Err(bad()),
        };
        if m.start == 0 || m.full < m.start || m.rate > 100 {
            return Err(bad());
        }
        Ok(m)
    }

    /// The chance (percent) that a new connection is dropped when `n` are unauthenticated.
    pub fn drop_percent(&self, n: usize) -> u32 {
        if n < self.start {
            0
        } else if n >= self.full {
            100
        } else {
            let span = (self.full - self.start) as u64;
            let over = (n - self.start) as u64;
            let extra = (100 - u64::from(self.rate)) * over / span.max(1);
            u32::try_from(u64::from(self.rate) + extra).unwrap_or(100)
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// The server-wide counters.
#[derive(Debug)]
pub struct Startups {
    max: MaxStartups,
    per_source: usize,
    counts: Mutex<Counts>,
}

/// Why a connection is not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `MaxStartups`: (unauthenticated connections, drop chance in percent).
    Max(usize, u32),
    /// `PerSourceMaxStartups`.
    PerSource(usize),
}

impl Startups {
    pub fn new(max: MaxStartups, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_source,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Take a slot for a new connection from `ip`, or refuse it. `roll` is a uniform
    /// number in 0..100 (randomness is a parameter).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, roll: u32) -> Result<Slot, Refused> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = c.by_source.get(&ip).copied().unwrap_or(0);
        if self.per_source > 0 && from_ip >= self.per_source {
            return Err(Refused::PerSource(from_ip));
        }
        let p = self.max.drop_percent(c.total);
        if p >= 100 || roll < p {
            return Err(Refused::Max(c.total, p));
        }
        c.total += 1;
        *c.by_source.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            startups: self.clone(),
            ip,
            released: AtomicBool::new(false),
        })
    }

    /// Unauthenticated connections now.
    #[cfg(test)]
    pub fn unauthenticated(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

/// One unauthenticated connection's place; given back on authentication or drop.
#[derive(Debug)]
pub struct Slot {
    startups: Arc<Startups>,
    ip: IpAddr,
    released: AtomicBool,
}

impl Slot {
    /// The connection authenticated (or ended): it no longer counts. Idempotent.
    pub fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut c = self
            .startups
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_source.remove(&self.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether a connection has authenticated; marking it gives its startup slot back.
#[derive(Debug, Default)]
pub struct AuthFlag {
    done: AtomicBool,
    slot: Mutex<Option<Slot>>,
}

impl AuthFlag {
    pub fn with_slot(slot: Slot) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicBool::new(false),
            slot: Mutex::new(Some(slot)),
        })
    }

    pub fn mark(&self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(slot) = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            slot.release();
        }
    }

    pub fn is_set(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

/// A uniform roll in 0..100 from the system's CSPRNG (0 if it fails: no random drop).
pub fn roll() -> u32 {
    let mut b = [0u8; 4];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        return 0;
    }
    u32::from_le_bytes(b) % 100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_sshd() {
        assert_eq!(
            MaxStartups::parse("10:30:100").unwrap(),
            MaxStartups {
                start: 10,
                rate: 30,
                full: 100
            }
        );
        assert_eq!(
            MaxStartups::parse("5").unwrap(),
            MaxStartups {
                start: 5,
                rate: 100,
                full: 5
            }
        );
        for bad in ["", "10:30", "0:30:100", "10:130:100", "100:30:10", "a:b:c"] {
            assert!(MaxStartups::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_early_drop_rises_to_full() {
        let m = MaxStartups::parse("10:30:100").unwrap();
        assert_eq!(m.drop_percent(9), 0);
        assert_eq!(m.drop_percent(10), 30);
        assert_eq!(m.drop_percent(55), 65);
        assert_eq!(m.drop_percent(100), 100);
    }

    #[test]
    fn slots_count_and_release() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let s = Startups::new(MaxStartups::parse("3:50:4").unwrap(), 2);
        let a = s.admit(ip, 99).unwrap();
        let b = s.admit(ip, 99).unwrap();
        // per source
        assert_eq!(s.admit(ip, 99).unwrap_err(), Refused::PerSource(2));
        let c = s.admit(other, 99).unwrap();
        assert_eq!(s.unauthenticated(), 3);
        // at start: 50% drop: a low roll is dropped, a high one admitted
        assert_eq!(s.admit(other, 10).unwrap_err(), Refused::Max(3, 50));
        let d = s.admit(other, 60).unwrap();
        // full
        assert!(matches!(
            s.admit("192.0.2.3".parse().unwrap(), 99),
            Err(Refused::Max(4, 100))
        ));
        // authentication releases, twice is harmless, drop releases
        a.release();
        a.release();
        assert_eq!(s.unauthenticated(), 3);
        drop(a);
        drop(b);
        assert!(s.admit(ip, 99).is_ok());
        drop((c, d));
        assert_eq!(s.unauthenticated(), 0);
    }
}
