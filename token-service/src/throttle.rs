//! Brute-force throttling of `POST /token`: failed sign-ins are counted per username and per
//! client IP, independently, in fixed windows of `throttle.window_seconds` starting at the first
//! failure. At `throttle.max_failures` failures further attempts get 429 with `Retry-After` until
//! the window ends. Memory is bounded: each map holds at most `throttle.max_entries` counters;
//! expired ones are dropped first, then the oldest that is not a running lockout. An attempt
//! that checked no password leaves no counter behind.
//!
//! An attempt counts against its username when it starts (taken back when its credentials are
//! right, or when it is shed before any password was checked because the queue for a hash was
//! full), and against its address when it fails, or when it ends without an outcome once its
//! hash has started (the client hung up mid-hash). Honest sign-ins in flight together from one
//! address (a NAT) are not refused at the start, up to `throttle.max_in_flight_per_address` of
//! them; more get 429 with `Retry-After: 1` before they count against any username, so one
//! address cannot put more accounts at risk of a lockout, nor hold more of the hashing queue,
//! than that many guesses at a time. An attempt that finds its address locked when it finishes (a burst of guesses from
//! that address failed meanwhile) is answered 429 whatever its credentials, so a burst learns at
//! most `max_failures` outcomes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use auth_core::clock::Clock;
use ipnet::IpNet;

use crate::settings::ThrottleSettings;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: u64,
    /// Which counter this is: new whenever the entry is made or its window starts again (a
    /// time in seconds does not tell two windows of one second apart).
    generation: u64,
}

/// One kind of counter (usernames or IPs).
#[derive(Debug, Default)]
struct Counters {
    failures: HashMap<String, Entry>,
    /// Addresses only: attempts begun and not yet ended, per address. An entry lives while one
    /// of its attempts does, so the map is bounded by the requests in flight.
    in_flight: HashMap<String, u32>,
    /// The last [`Entry::generation`] given out.
    generation: u64,
}

/// Why [`Throttle::begin`] refused an attempt; either way the client waits `retry` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The username or the address is locked out.
    Locked { retry: u64 },
    /// The address has `throttle.max_in_flight_per_address` sign-ins in flight already.
    Busy { retry: u64 },
}

impl Refused {
    /// Seconds for `Retry-After`.
    pub fn retry(self) -> u64 {
        match self {
            Refused::Locked { retry } | Refused::Busy { retry } => retry,
        }
    }

    /// The audit reason: `locked` or `busy`.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Locked { .. } => "locked",
            Refused::Busy { .. } => "busy",
        }
    }
}

/// The two counters and their rules.
#[derive(Debug)]
pub struct Throttle {
    users: Mutex<Counters>,
    ips: Mutex<Counters>,
    max_failures: u32,
    window: u64,
    max_entries: usize,
    max_in_flight: u32,
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
            max_in_flight: settings.max_in_flight_per_address.max(1),
            clock,
        }
    }

    /// Starts a sign-in attempt: refused (with the seconds to wait) when the username or the
    /// client's address is locked. The attempt counts against the username at once, under the
    /// same lock, so parallel guesses at one account cannot all pass the check before any is
    /// counted; right credentials take it back ([`Attempt::finish`]). The address counts real
    /// failures only, so honest sign-ins at once from one address (a NAT, a proxy) are not
    /// refused at the start, up to `throttle.max_in_flight_per_address` of them: beyond, an
    /// attempt is refused ([`Refused::Busy`]) before it counts against its username. A burst of
    /// guesses from one address is bounded when each finishes too.
    pub fn begin(&self, username: &str, ip: Option<IpAddr>) -> Result<Attempt<'_>, Refused> {
        let now = self.clock.now();
        let ip = ip.map(ip_key);
        // One order for the two locks everywhere: users, then addresses.
        let mut users = lock(&self.users);
        let mut ips = lock(&self.ips);
        let user_locked = self.locked(&users, username, now);
        let ip_locked = ip.as_deref().and_then(|k| self.locked(&ips, k, now));
        if let Some(retry) = user_locked.max(ip_locked) {
            return Err(Refused::Locked { retry });
        }
        if let Some(k) = ip.as_deref() {
            let running = ips.in_flight.get(k).copied().unwrap_or(0);
            if running >= self.max_in_flight {
                return Err(Refused::Busy { retry: 1 });
            }
            ips.in_flight.insert(k.to_owned(), running + 1);
        }
        drop(ips);
        let counted = self.count(&mut users, username, now);
        Ok(Attempt {
            throttle: self,
            username: username.to_owned(),
            counted,
            ip,
            open: true,
            hashing: false,
        })
    }

    /// Entries held (usernames, addresses): bounded by `throttle.max_entries` each.
    pub fn len(&self) -> (usize, usize) {
        (
            lock(&self.users).failures.len(),
            lock(&self.ips).failures.len(),
        )
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn locked(&self, map: &Counters, key: &str, now: u64) -> Option<u64> {
        let e = map.failures.get(key)?;
        self.lock_end(e, now).map(|end| (end - now).max(1))
    }

    /// When `e` is a lockout still running, its end.
    fn lock_end(&self, e: &Entry, now: u64) -> Option<u64> {
        let end = e.since + self.window;
        (e.failures >= self.max_failures && now < end).then_some(end)
    }

    /// Counts one failure of `key`; the generation of the counter it counted in, unless the
    /// table was full of running lockouts and `key` is not tracked.
    fn count(&self, map: &mut Counters, key: &str, now: u64) -> Option<u64> {
        let window = self.window;
        if !map.failures.contains_key(key) && map.failures.len() >= self.max_entries {
            map.failures.retain(|_, e| now < e.since + window);
            if map.failures.len() >= self.max_entries {
                // Never evict a running lockout (a flood of throwaway names must not free a
                // victim): the oldest entry that is not locked goes. (Not the one with the
                // fewest failures: a guesser could then keep a victim at one failure by
                // guessing one throwaway name after each guess at it.) Evicting takes as many
                // new names as the table holds, each a failure some address paid for: an
                // attempt that checked no password leaves no entry ([`Attempt::take_back`]).
                let oldest = map
                    .failures
                    .iter()
                    .filter(|(_, e)| self.lock_end(e, now).is_none())
                    .min_by_key(|(_, e)| e.since)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => {
                        map.failures.remove(&k);
                    }
                    None => {
                        tracing::warn!(target: "audit", "throttle table full of running lockouts; a new key is not tracked");
                        return None;
                    }
                }
            }
        }
        let Counters {
            failures,
            generation,
            ..
        } = map;
        let mut fresh = || {
            *generation += 1;
            Entry {
                failures: 0,
                since: now,
                generation: *generation,
            }
        };
        let e = failures.entry(key.to_owned()).or_insert_with(&mut fresh);
        if now >= e.since + window {
            *e = fresh();
        }
        e.failures = e.failures.saturating_add(1);
        Some(e.generation)
    }
}

/// One sign-in attempt that passed [`Throttle::begin`]. It ends in [`Attempt::finish`],
/// [`Attempt::abandoned`] or [`Attempt::shed`]; dropped without any of them once its password
/// hash has started ([`Attempt::hashing`]: the client hung up, the request was cancelled
/// mid-hash) it counts as a failure of the address, since nothing shows it was not a guess.
/// Dropped before (while its user was looked up or it was queued for a hash), it guessed
/// nothing: like a shed attempt, it takes back its count against the username, so hanging up
/// on queued sign-ins cannot lock an account out at no cost to the address.
#[must_use = "an attempt ends in finish(), abandoned() or shed()"]
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    username: String,
    /// The counter (its generation) [`Throttle::begin`] counted this attempt against the
    /// username in.
    counted: Option<u64>,
    ip: Option<String>,
    open: bool,
    hashing: bool,
}

impl Attempt<'_> {
    /// The password hash has started: from now on a drop counts as a failure of the address.
    pub fn hashing(&mut self) {
        self.hashing = true;
    }

    /// The attempt's outcome: `right` credentials or not. Wrong ones count against the address
    /// (they already count against the username). In one step under the address's lock: when
    /// the address is locked by then (other guesses from it failed while this one ran), the
    /// seconds to wait, and the attempt must be answered like any refused one whatever its
    /// credentials. So a burst of guesses from one address that all passed
    /// [`Throttle::begin`] at once learns at most `max_failures` outcomes. Right credentials
    /// that are answered forget the user's count.
    pub fn finish(mut self, right: bool) -> Result<(), u64> {
        self.open = false;
        let now = self.throttle.clock.now();
        let overtaken = match self.ip.as_deref() {
            Some(k) => {
                let mut ips = lock(&self.throttle.ips);
                let overtaken = self.throttle.locked(&ips, k, now);
                if !right {
                    let _ = self.throttle.count(&mut ips, k, now);
                }
                overtaken
            }
            None => None,
        };
        if let Some(retry) = overtaken {
            return Err(retry);
        }
        if right {
            lock(&self.throttle.users).failures.remove(&self.username);
        }
        Ok(())
    }

    /// No outcome is known through no fault of the client (the user store failed, or the
    /// hasher): nothing more is counted. Before any password was checked, it is not a guess,
    /// so its count against the username is taken back, as [`Attempt::shed`] does: an honest
    /// user who retries through a database outage as `Retry-After` asks is not locked out by
    /// the 503s.
    pub fn abandoned(mut self) {
        self.open = false;
        if !self.hashing {
            self.take_back();
        }
    }

    /// Refused before any password was checked (the queue for a hash was full): not a guess, so
    /// its count against the username is taken back, from the counter it was counted in (not
    /// from one made since, after a success or a new window), and an honest user whose
    /// sign-ins are shed under load is not locked out by them.
    pub fn shed(mut self) {
        self.open = false;
        self.take_back();
    }

    /// Takes back the count [`Throttle::begin`] made against the username, from the counter it
    /// was made in only. A counter back at zero is removed: an attempt that checked no password
    /// leaves no entry, so free attempts (shed, or hung up while queued) at throwaway names
    /// cannot fill the table and evict a victim's count.
    fn take_back(&mut self) {
        let Some(counted) = self.counted.take() else {
            return;
        };
        let mut users = lock(&self.throttle.users);
        if let Some(e) = users.failures.get_mut(&self.username)
            && e.generation == counted
        {
            e.failures = e.failures.saturating_sub(1);
            if e.failures == 0 {
                users.failures.remove(&self.username);
            }
        }
    }
}

impl Drop for Attempt<'_> {
    /// However the attempt ends: it leaves its address's in-flight count. Without an outcome,
    /// it counts as a failure there when it had started hashing, and takes back its count
    /// against the username when it had not.
    fn drop(&mut self) {
        if self.open && !self.hashing {
            self.take_back();
        }
        let Some(k) = self.ip.as_deref() else {
            return;
        };
        let mut ips = lock(&self.throttle.ips);
        if self.open && self.hashing {
            let now = self.throttle.clock.now();
            let _ = self.throttle.count(&mut ips, k, now);
        }
        if let Some(running) = ips.in_flight.get_mut(k) {
            *running -= 1;
            if *running == 0 {
                ips.in_flight.remove(k);
            }
        }
    }
}

/// The key of an address: an IPv4 address itself (also when IPv4-mapped), an IPv6 address by its
/// /64 prefix (one host usually holds a whole /64).
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn lock(m: &Mutex<Counters>) -> std::sync::MutexGuard<'_, Counters> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client IP: the socket peer, or — only when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` address that is not itself a trusted proxy; when every address is inside a
/// trusted range (a client on the internal network), the left-most, which the first proxy wrote
/// (as nginx's `real_ip_recursive`): not the proxy's own address, which every internal client
/// would share, and so share one throttle.
pub fn client_ip(
    peer: Option<SocketAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    // An IPv4 peer of a dual-stack listener arrives as `::ffff:a.b.c.d`: compared as IPv4.
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    let peer = peer?.ip();
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(xff) = forwarded_for else {
        return Some(peer);
    };
    let mut leftmost = peer;
    for hop in xff.split(',').map(str::trim).rev() {
        match forwarded_hop(hop) {
            Ok(ip) if is_trusted(&ip) => leftmost = ip,
            Ok(ip) => return Some(ip),
            Err(_) => return Some(peer),
        }
    }
    Some(leftmost)
}

/// One `X-Forwarded-For` entry's address: a bare IP, or as some proxies write it (Azure
/// Application Gateway, IIS ARR), with a port (`203.0.113.7:51234`, `[2001:db8::7]:443`) or an
/// IPv6 address in brackets (`[2001:db8::7]`). Without this every client behind such a proxy
/// would be throttled as the proxy's one address.
fn forwarded_hop(hop: &str) -> Result<IpAddr, std::net::AddrParseError> {
    hop.parse::<IpAddr>()
        .or_else(|e| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .ok_or(e)
                .and_then(str::parse)
        })
        .or_else(|e| hop.parse::<SocketAddr>().map(|a| a.ip()).map_err(|_| e))
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
                max_in_flight_per_address: 20,
            },
            clock,
        )
    }

    fn locked(retry: u64) -> Refused {
        Refused::Locked { retry }
    }

    #[test]
    fn locks_after_n_failures_until_the_window_ends() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock.clone(), 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            t.begin("alice", Some(ip)).unwrap().finish(false).unwrap();
        }
        assert_eq!(t.begin("alice", None).err(), Some(locked(60)));
        assert_eq!(
            t.begin("bob", Some(ip)).err(),
            Some(locked(60)),
            "the IP is locked too"
        );
        t.begin("bob", Some("10.0.0.2".parse().unwrap()))
            .unwrap()
            .finish(true)
            .unwrap();
        clock.advance(59);
        assert_eq!(t.begin("alice", None).err(), Some(locked(1)));
        clock.advance(1);
        assert!(t.begin("alice", Some(ip)).is_ok(), "entries expire");
    }

    /// A sign-in the user store could not answer (a 503) checked no password: like a shed one,
    /// it counts against nothing, so retries through an outage lock no one out. One abandoned
    /// after the hash began (the hasher failed) keeps its count.
    #[test]
    fn an_attempt_abandoned_before_hashing_counts_against_nothing() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock.clone(), 100);
        for _ in 0..5 {
            t.begin("alice", None).unwrap().abandoned();
        }
        assert!(t.begin("alice", None).is_ok(), "503s locked alice out");
        for _ in 0..3 {
            let mut attempt = t.begin("bob", None).unwrap();
            attempt.hashing();
            attempt.abandoned();
        }
        assert_eq!(t.begin("bob", None).err(), Some(locked(60)));
    }

    #[test]
    fn a_shed_attempt_takes_back_its_count_in_its_own_window() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock.clone(), 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        // Two wrong guesses count; three shed attempts (no password checked) do not.
        for _ in 0..2 {
            t.begin("alice", Some(ip)).unwrap().finish(false).unwrap();
        }
        for _ in 0..3 {
            t.begin("alice", Some(ip)).unwrap().shed();
        }
        let third = t
            .begin("alice", Some(ip))
            .expect("shed attempts locked nothing");
        assert_eq!(third.finish(false), Ok(()));
        assert_eq!(t.begin("alice", None).err(), Some(locked(60)));
        // An attempt counted in a window that has since ended takes nothing back from the new
        // one.
        clock.advance(60);
        let old = t.begin("bob", None).unwrap();
        clock.advance(60);
        for _ in 0..3 {
            assert_eq!(t.begin("bob", None).unwrap().finish(false), Ok(()));
        }
        clock.advance(1);
        old.shed();
        assert_eq!(
            t.begin("bob", None).err(),
            Some(locked(59)),
            "the new window kept its three"
        );
    }

    /// A counter made again within the same second (after a success forgot the old one) is
    /// another counter: an attempt counted in the old one takes nothing back from it.
    #[test]
    fn a_shed_attempt_takes_nothing_from_a_counter_made_since() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock, 100);
        let old = t.begin("carol", None).unwrap();
        t.begin("carol", None).unwrap().finish(true).unwrap();
        for _ in 0..3 {
            t.begin("carol", None).unwrap().finish(false).unwrap();
        }
        old.shed();
        assert_eq!(t.begin("carol", None).err(), Some(locked(60)));
    }

    /// Attempts that checked no password leave no entry, so a flood of them at throwaway names
    /// (a full hash queue answers each 503 at once, counted against no address) cannot evict a
    /// victim's failures and give the guesser a fresh count.
    #[test]
    fn free_attempts_at_throwaway_names_leave_no_entry() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock.clone(), 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..2 {
            t.begin("victim", Some(ip)).unwrap().finish(false).unwrap();
        }
        for i in 0..100 {
            t.begin(&format!("throwaway{i}"), None).unwrap().shed();
            drop(t.begin(&format!("hung-up{i}"), None).unwrap());
            t.begin(&format!("outage{i}"), None).unwrap().abandoned();
        }
        assert_eq!(t.len().0, 1, "only the victim's count is held");
        t.begin("victim", None).unwrap().finish(false).unwrap();
        assert_eq!(t.begin("victim", None).err(), Some(locked(60)));
    }

    #[test]
    fn memory_is_bounded() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock.clone(), 10);
        for i in 0..1000 {
            clock.advance(1);
            let ip = IpAddr::from([10, 0, (i / 256) as u8, i as u8]);
            t.begin(&format!("user{i}"), Some(ip))
                .unwrap()
                .finish(false)
                .unwrap();
        }
        assert_eq!(t.len(), (10, 10));
    }

    #[test]
    fn attempts_count_before_they_finish_and_success_takes_them_back() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock, 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        // Three attempts at alice in flight at once: the fourth is refused before any has
        // finished.
        let running: Vec<_> = (0..3)
            .map(|_| t.begin("alice", Some(ip)).unwrap())
            .collect();
        assert!(t.begin("alice", Some(ip)).is_err());
        // A success forgets the user's count.
        let mut running = running.into_iter();
        running.next().unwrap().finish(true).unwrap();
        running.for_each(Attempt::abandoned);
        // Honest sign-ins of many users at once from one address are not refused.
        let honest: Vec<_> = (0..20)
            .map(|i| t.begin(&format!("user{i}"), Some(ip)).unwrap())
            .collect();
        for a in honest {
            assert!(a.finish(true).is_ok());
        }
        assert!(t.begin("alice", Some(ip)).is_ok());
    }

    #[test]
    fn a_running_lockout_is_never_evicted() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock.clone(), 3);
        for _ in 0..3 {
            t.begin("victim", None).unwrap().finish(false).unwrap();
        }
        for i in 0..50 {
            clock.advance(0);
            if let Ok(a) = t.begin(&format!("throwaway{i}"), None) {
                a.finish(false).unwrap();
            }
        }
        assert!(
            t.begin("victim", None).is_err(),
            "the lockout survived a flood of names"
        );
        assert_eq!(t.len().0, 3);
    }

    #[test]
    fn a_dropped_attempt_counts_only_once_its_hash_started() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock, 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        // Guesses whose clients hang up while queued for a hash guessed nothing: they count
        // against neither the address nor the name.
        for _ in 0..5 {
            drop(t.begin("victim", Some(ip)).unwrap());
        }
        t.begin("probe", Some(ip))
            .expect("queued hang-ups did not lock the address")
            .abandoned();
        // Three real failures (max_failures) from elsewhere, and only they, lock the name.
        let elsewhere: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..3 {
            t.begin("victim", Some(elsewhere))
                .expect("queued hang-ups did not count against the name")
                .finish(false)
                .unwrap();
        }
        assert_eq!(t.begin("victim", None).err(), Some(locked(60)));
        // Three guesses at one name whose clients hang up mid-hash: they count against the
        // name and the address.
        for _ in 0..3 {
            let mut a = t.begin("mid", Some(ip)).unwrap();
            a.hashing();
            drop(a);
        }
        assert_eq!(t.begin("u9", Some(ip)).err(), Some(locked(60)));
        assert_eq!(t.begin("mid", None).err(), Some(locked(60)));
        // An abandoned attempt (the user store failed) counts nothing more at the address.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..3 {
            t.begin(&format!("v{i}"), Some(other)).unwrap().abandoned();
        }
        assert!(t.begin("v9", Some(other)).is_ok());
    }

    #[test]
    fn a_burst_from_one_address_is_overtaken_by_its_own_failures() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock, 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        // Ten guesses at ten names, all past the check before any has finished; the last one
        // has the right password.
        let mut burst: Vec<_> = (0..10)
            .map(|i| t.begin(&format!("u{i}"), Some(ip)).unwrap())
            .collect();
        let right = burst.pop().unwrap();
        let answered = burst
            .into_iter()
            .map(|a| a.finish(false))
            .filter(Result::is_ok)
            .count();
        assert_eq!(answered, 3, "only max_failures outcomes are revealed");
        assert_eq!(
            right.finish(true).err(),
            Some(60),
            "right credentials that finish after the lock are refused like the rest"
        );
        // Another address is not affected.
        let a = t.begin("u0", Some("10.0.0.2".parse().unwrap())).unwrap();
        assert!(a.finish(true).is_ok());
    }

    /// One address with many guesses in flight at once (each at another account) cannot push
    /// more accounts towards a lockout than `max_in_flight_per_address` guesses at a time:
    /// beyond, attempts are refused before they count against their usernames. Ending attempts
    /// (however they end) frees their places.
    #[test]
    fn an_address_has_at_most_max_in_flight_attempts_and_refused_ones_count_nowhere() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = Throttle::new(
            &ThrottleSettings {
                max_failures: 3,
                window_seconds: 60,
                trusted_proxies: vec![],
                max_entries: 100,
                max_in_flight_per_address: 4,
            },
            clock,
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut running: Vec<_> = (0..4)
            .map(|i| t.begin(&format!("u{i}"), Some(ip)).unwrap())
            .collect();
        // Three guesses at each of ten other accounts, all refused: none is counted.
        for i in 10..20 {
            for _ in 0..3 {
                assert_eq!(
                    t.begin(&format!("u{i}"), Some(ip)).err(),
                    Some(Refused::Busy { retry: 1 })
                );
            }
        }
        assert_eq!(t.len(), (4, 0), "only the four running attempts counted");
        // Another address is not held up, and the refused accounts have their whole budget.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let fresh: Vec<_> = (0..3)
            .map(|_| t.begin("u10", Some(other)).unwrap())
            .collect();
        fresh.into_iter().for_each(Attempt::abandoned);
        // Each way an attempt ends frees its place.
        running.pop().unwrap().finish(true).unwrap();
        running.pop().unwrap().abandoned();
        drop(running.pop().unwrap());
        let mut hashing = running.pop().unwrap();
        hashing.hashing();
        drop(hashing);
        let again: Vec<_> = (0..4)
            .map(|i| t.begin(&format!("v{i}"), Some(ip)).unwrap())
            .collect();
        assert_eq!(
            t.begin("v9", Some(ip)).err(),
            Some(Refused::Busy { retry: 1 })
        );
        again.into_iter().for_each(Attempt::abandoned);
        assert!(lock(&t.ips).in_flight.is_empty(), "no place is leaked");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = throttle(clock, 100);
        for i in 1..=3u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, i]);
            t.begin(&format!("u{i}"), Some(ip))
                .unwrap()
                .finish(false)
                .unwrap();
        }
        let same_64 = IpAddr::from([0x2001, 0xdb8, 1, 2, 9, 9, 9, 9]);
        assert!(t.begin("u9", Some(same_64)).is_err());
        let other_64 = IpAddr::from([0x2001, 0xdb8, 1, 3, 0, 0, 0, 1]);
        assert!(t.begin("u9", Some(other_64)).is_ok());
        assert_eq!(ip_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 1234))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy = IpNet::from("10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            client_ip(peer("1.2.3.4"), Some("5.6.7.8"), &[proxy]),
            ip("1.2.3.4")
        );
        // The neighbour of a one-address proxy is not a proxy.
        assert_eq!(
            client_ip(peer("10.0.0.8"), Some("5.6.7.8"), &[proxy]),
            ip("10.0.0.8")
        );
        assert_eq!(
            client_ip(
                peer("10.0.0.9"),
                Some("6.6.6.6, 5.6.7.8, 10.0.0.9"),
                &[proxy]
            ),
            ip("5.6.7.8")
        );
        assert_eq!(client_ip(peer("10.0.0.9"), None, &[proxy]), ip("10.0.0.9"));
    }

    /// A proxy that writes the client's port, or brackets an IPv6 address, still names the
    /// client: not the proxy, which every client behind it would share.
    #[test]
    fn forwarded_for_entries_with_a_port_or_brackets_name_the_client() {
        let proxy = IpNet::from("10.0.0.9".parse::<IpAddr>().unwrap());
        for (xff, client) in [
            ("203.0.113.7:51234", "203.0.113.7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("6.6.6.6, 203.0.113.7:1, 10.0.0.9:80", "203.0.113.7"),
        ] {
            assert_eq!(
                client_ip(peer("10.0.0.9"), Some(xff), &[proxy]),
                ip(client),
                "{xff}"
            );
        }
        // What is no address at all still stops the walk at the proxy.
        for xff in [
            "unknown",
            "[203.0.113.7",
            "203.0.113.7:",
            "2001:db8::7:443:x",
        ] {
            assert_eq!(
                client_ip(peer("10.0.0.9"), Some(xff), &[proxy]),
                ip("10.0.0.9"),
                "{xff}"
            );
        }
    }

    #[test]
    fn trusted_proxies_may_be_ranges() {
        let ranges: Vec<IpNet> = ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        // Every hop inside a range is skipped, from the right.
        assert_eq!(
            client_ip(
                peer("10.200.0.1"),
                Some("5.6.7.8, 10.1.1.1, fd12::3"),
                &ranges
            ),
            ip("5.6.7.8")
        );
        assert_eq!(
            client_ip(peer("fd00::1"), Some("2001:db8::7"), &ranges),
            ip("2001:db8::7")
        );
        // An IPv4 proxy seen through a dual-stack listener is still inside its IPv4 range.
        assert_eq!(
            client_ip(peer("::ffff:10.0.0.9"), Some("5.6.7.8"), &ranges),
            ip("5.6.7.8")
        );
        // Outside every range: the peer itself, whatever it forwards.
        assert_eq!(
            client_ip(peer("11.0.0.1"), Some("5.6.7.8"), &ranges),
            ip("11.0.0.1")
        );
        assert_eq!(
            client_ip(peer("fe00::1"), Some("5.6.7.8"), &ranges),
            ip("fe00::1")
        );
        // Every hop inside a range: the left-most, the internal client the first proxy saw,
        // not the proxy's own address (which every internal client would share).
        assert_eq!(
            client_ip(peer("10.0.0.9"), Some("10.3.3.3, 10.1.1.1"), &ranges),
            ip("10.3.3.3")
        );
        // A hop that is not an address stops the walk at the peer.
        assert_eq!(
            client_ip(peer("10.0.0.9"), Some("5.6.7.8, junk"), &ranges),
            ip("10.0.0.9")
        );
    }
}
