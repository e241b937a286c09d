//! Brute-force throttling of `POST /token`: failed sign-ins are counted per username and per
//! client IP, independently, in fixed windows of `throttle.window_seconds` starting at the first
//! failure. At `throttle.max_failures` failures further attempts get 429 with `Retry-After` until
//! the window ends. Memory is bounded: each map holds at most `throttle.max_entries` counters;
//! expired ones are dropped first, then the oldest.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use auth_core::clock::Clock;

use crate::settings::ThrottleSettings;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: u64,
}

/// One kind of counter (usernames or IPs).
#[derive(Debug, Default)]
struct Counters(HashMap<String, Entry>);

/// The two counters and their rules.
#[derive(Debug)]
pub struct Throttle {
    users: Mutex<Counters>,
    ips: Mutex<Counters>,
    max_failures: u32,
    window: u64,
    max_entries: usize,
    clock: Arc<dyn Clock>,
}

impl Throttle {
    /// From `throttle.*`.
    pub fn new(settings: &ThrottleSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            users: Mutex::default(),
            ips: Mutex::default(),
            max_failures: settings.max_failures.max(1),
            window: settings.window_seconds.max(1),
            max_entries: settings.max_entries.max(1),
            clock,
        }
    }

    /// `Err(retry_after_seconds)` when `username` or `ip` is locked out now.
    pub fn check(&self, username: &str, ip: Option<IpAddr>) -> Result<(), u64> {
        let now = self.clock.now();
        let user = self.locked(&self.users, username, now);
        let ip = ip.and_then(|ip| self.locked(&self.ips, &ip.to_string(), now));
        match user.max(ip) {
            Some(retry) => Err(retry),
            None => Ok(()),
        }
    }

    /// Counts a failed sign-in against both.
    pub fn failure(&self, username: &str, ip: Option<IpAddr>) {
        let now = self.clock.now();
        self.count(&self.users, username, now);
        if let Some(ip) = ip {
            self.count(&self.ips, &ip.to_string(), now);
        }
    }

    /// A successful sign-in clears the username's counter (not the IP's: one good password does
    /// not excuse many bad ones from the same address).
    pub fn success(&self, username: &str) {
        lock(&self.users).0.remove(username);
    }

    /// Counters held: (usernames, IPs).
    pub fn len(&self) -> (usize, usize) {
        (lock(&self.users).0.len(), lock(&self.ips).0.len())
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn locked(&self, map: &Mutex<Counters>, key: &str, now: u64) -> Option<u64> {
        let map = lock(map);
        let e = map.0.get(key)?;
        let end = e.since + self.window;
        (e.failures >= self.max_failures && now < end).then(|| (end - now).max(1))
    }

    fn count(&self, map: &Mutex<Counters>, key: &str, now: u64) {
        let mut map = lock(map);
        let window = self.window;
        if !map.0.contains_key(key) && map.0.len() >= self.max_entries {
            map.0.retain(|_, e| now < e.since + window);
            if map.0.len() >= self.max_entries
                && let Some(oldest) = map
                    .0
                    .iter()
                    .min_by_key(|(_, e)| e.since)
                    .map(|(k, _)| k.clone())
            {
                map.0.remove(&oldest);
            }
        }
        let e = map.0.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            since: now,
        });
        if now >= e.since + window {
            *e = Entry {
                failures: 0,
                since: now,
            };
        }
        e.failures = e.failures.saturating_add(1);
    }
}

fn lock(m: &Mutex<Counters>) -> std::sync::MutexGuard<'_, Counters> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client IP: the socket peer, or — only when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` address that is not itself a trusted proxy.
pub fn client_ip(
    peer: Option<SocketAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let Some(xff) = forwarded_for else {
        return Some(peer);
    };
    let mut hops = xff.split(',').map(str::trim).rev();
    for hop in hops.by_ref() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return Some(ip),
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use auth_core::clock::ManualClock;

    use super::*;

    fn throttle(clock: Arc<ManualClock>, max_entries: usize) -> Throttle {
        Throttle::new(
            &ThrottleSettings {
                max_failures: 3,
                window_seconds: 60,
                trusted_proxies: vec![],
                max_entries,
            },
            clock,
        )
    }

    #[test]
    fn locks_after_n_failures_until_the_window_ends() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock.clone(), 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check("alice", Some(ip)).is_ok());
            t.failure("alice", Some(ip));
        }
        assert_eq!(t.check("alice", None), Err(60));
        assert_eq!(t.check("bob", Some(ip)), Err(60), "the IP is locked too");
        assert!(t.check("bob", Some("10.0.0.2".parse().unwrap())).is_ok());
        clock.advance(59);
        assert_eq!(t.check("alice", None), Err(1));
        clock.advance(1);
        assert!(t.check("alice", Some(ip)).is_ok(), "entries expire");
    }

    #[test]
    fn memory_is_bounded() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock.clone(), 10);
        for i in 0..1000 {
            clock.advance(1);
            t.failure(
                &format!("user{i}"),
                Some(IpAddr::from([10, 0, (i / 256) as u8, i as u8])),
            );
        }
        assert_eq!(t.len(), (10, 10));
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 1234));
        assert_eq!(
            client_ip(peer("1.2.3.4"), Some("5.6.7.8"), &[proxy]),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            client_ip(
                peer("10.0.0.9"),
                Some("6.6.6.6, 5.6.7.8, 10.0.0.9"),
                &[proxy]
            ),
            Some("5.6.7.8".parse().unwrap())
        );
        assert_eq!(client_ip(peer("10.0.0.9"), None, &[proxy]), Some(proxy));
    }
}
