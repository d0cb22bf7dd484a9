//! Rate limits: what a client address, an account or a principal may ask within a window, answered
//! with `429 Too Many Requests`, a `Retry-After` header and a problem+json body past it.
//!
//! Each limit is a keyed GCRA limiter (`governor`): `N` per window means a burst of `N`, then one more
//! every `window / N`. The checks run in the handlers *before* the expensive part (a password hash, a
//! replay of the log), so a refused request costs a map lookup. Keys:
//!
//! - sign-in: the client address and the account (the email as typed, lower-cased); both must have
//!   room, every attempt counts (right or wrong: a script that signs in in a loop is refused too);
//! - refresh, device-code creation, device-code polling, enrollment with a token: the client address;
//! - costly reads (`as_of` replays, exports, histories, event-log pages with a filter): the principal
//!   (`user:<id>`, `agent:<id>`). The default (300 a minute) leaves room for `edict events tail
//!   --server` polling 4 times a second.
//!
//! The client address is the TCP peer. `X-Forwarded-For` is read only when the peer is one of
//! `EDICT_TRUSTED_PROXIES`; then the client is the right-most address of the header that is not a
//! trusted proxy (addresses further left were written by whoever sent the request and prove nothing).
//! IPv6 clients are counted per /64, the block one subscriber usually holds.
//!
//! A client whose sign-in failed within the window, or that has another sign-in running, is
//! *suspect*: its next password hashes wait in a
//! lane of their own that runs one at a time (the auth adapter's password lanes), so a flood of
//! guesses, even within its addresses' budgets, queues behind itself and not in front of
//! legitimate sign-ins. A client that signed in to an account successfully within
//! `EDICT_RATE_KNOWN_CLIENT_SECS` (30 days) is *known* for that account: its next sign-in to it (with
//! no failure since) hashes in a lane strangers cannot reach, so the first guesses of many new
//! addresses do not delay the people who sign in every day. The known pairs (address, account) are
//! kept in memory, at most [`KNOWN_CLIENTS_MAX`]; a process that starts knows none.
//!
//! Limiters keep one small state per key seen; [`RateLimits::retain_recent`], called periodically by
//! `edict serve`, drops the keys that are back to a full budget.
//!
//! Layout: this module holds the limiters ([`RateLimits`]), the sign-in lanes and the client address;
//! `settings` the configuration ([`RateLimitSettings`]); `response` the `429` answer ([`Throttled`],
//! [`LimitedError`]).

mod response;
mod settings;
#[cfg(test)]
mod tests;

use edict_application::auth::HashPriority;
use edict_application::principal::Principal;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use ipnet::IpNet;
use poem::Request;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use response::{LimitedError, LimitedResult, Throttled, with_retry_after};
pub use settings::RateLimitSettings;

/// One keyed limit (or none, when configured to 0).
struct Limit<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(quota: Option<Quota>, what: &'static str) -> Self {
        Self {
            limiter: quota.map(RateLimiter::keyed),
            what,
        }
    }

    fn check(&self, key: &K) -> Result<(), Throttled> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| Throttled {
            what: self.what,
            retry_after: not_until.wait_time_from(limiter.clock().now()),
        })
    }

    fn retain_recent(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, RateLimiter::len)
    }
}

/// A client's sign-ins as the hashing lanes see them.
#[derive(Debug, Default)]
struct SignInState {
    running: u32,
    failed_at: Option<Instant>,
}

/// The most (address, account) pairs kept known at once; past it, a new success makes no pair known
/// until old ones expire (only correct passwords add pairs, so filling it takes valid credentials).
pub const KNOWN_CLIENTS_MAX: usize = 100_000;

/// A running sign-in ([`RateLimits::sign_in`]); its end is recorded when it is dropped.
pub struct SignIn<'a> {
    limits: &'a RateLimits,
    client: IpAddr,
    account: String,
    /// The lane its password hash waits in.
    pub priority: HashPriority,
}

impl SignIn<'_> {
    /// The sign-in failed (wrong email or password): the client is suspect for a window, and no longer
    /// known for the account.
    pub fn failed(&self) {
        if let Ok(mut clients) = self.limits.sign_ins.lock() {
            clients.entry(self.client).or_default().failed_at = Some(Instant::now());
        }
        if let Ok(mut known) = self.limits.known.lock() {
            known.remove(&(self.client, self.account.clone()));
        }
    }

    /// The sign-in succeeded: the client is known for the account.
    pub fn succeeded(&self) {
        if self.limits.known_client.is_zero() {
            return;
        }
        if let Ok(mut known) = self.limits.known.lock() {
            let key = (self.client, self.account.clone());
            if known.len() < KNOWN_CLIENTS_MAX || known.contains_key(&key) {
                known.insert(key, Instant::now());
            }
        }
    }
}

impl Drop for SignIn<'_> {
    fn drop(&mut self) {
        if let Ok(mut clients) = self.limits.sign_ins.lock()
            && let Some(state) = clients.get_mut(&self.client)
        {
            state.running = state.running.saturating_sub(1);
        }
    }
}

/// Every HTTP rate limit of one API process (shared by its requests).
pub struct RateLimits {
    trusted_proxies: Vec<IpNet>,
    window: Duration,
    /// Each client's running sign-ins and last failure (kept for a window).
    sign_ins: Mutex<HashMap<IpAddr, SignInState>>,
    /// How long a success keeps its (address, account) known.
    known_client: Duration,
    /// Each (address, account) pair's last successful sign-in.
    known: Mutex<HashMap<(IpAddr, String), Instant>>,
    login_address: Limit<IpAddr>,
    login_account: Limit<String>,
    refresh: Limit<IpAddr>,
    device_code: Limit<IpAddr>,
    device_poll: Limit<IpAddr>,
    enroll: Limit<IpAddr>,
    token_renewals: Limit<String>,
    costly_reads: Limit<String>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("trusted_proxies", &self.trusted_proxies)
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new(&RateLimitSettings::default())
    }
}

impl RateLimits {
    /// The limiters for `settings`.
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            trusted_proxies: settings.trusted_proxies.clone(),
            window: settings.window,
            sign_ins: Mutex::new(HashMap::new()),
            known_client: settings.known_client,
            known: Mutex::new(HashMap::new()),
            login_address: Limit::new(
                settings.quota(settings.login_per_address),
                "sign-in attempts from this address",
            ),
            login_account: Limit::new(
                settings.quota(settings.login_per_account),
                "sign-in attempts for this account",
            ),
            refresh: Limit::new(
                settings.quota(settings.refresh_per_address),
                "token refreshes from this address",
            ),
            device_code: Limit::new(
                settings.quota(settings.device_code_per_address),
                "device codes from this address",
            ),
            device_poll: Limit::new(
                settings.quota(settings.device_poll_per_address),
                "device-code polls from this address",
            ),
            enroll: Limit::new(
                settings.quota(settings.enroll_per_address),
                "enrollments from this address",
            ),
            token_renewals: Limit::new(
                settings.quota(settings.token_renewals_per_agent),
                "token renewals by this agent",
            ),
            costly_reads: Limit::new(
                settings.quota(settings.costly_reads_per_principal),
                "costly reads (as_of, exports, histories, filtered event pages) by this principal",
            ),
        }
    }

    /// A sign-in attempt for `email` from the client of `request`: checked before the password is.
    ///
    /// # Errors
    /// [`Throttled`] when the address or the account has no room left.
    pub fn login(&self, request: &Request, email: &str) -> Result<(), Throttled> {
        self.login_address.check(&self.client(request))?;
        self.login_account.check(&account_key(email))
    }

    /// Starts a sign-in to `email` from the client of `request`: its password hash is suspect when a
    /// sign-in of this client failed within the window, or another one of it is still running (a
    /// guesser sends many at once; a person signs in once); else known when this client signed in to
    /// this account lately. Hand the guard the outcome when it is known.
    pub fn sign_in(&self, request: &Request, email: &str) -> SignIn<'_> {
        let client = self.client(request);
        let account = account_key(email);
        let suspect = self.sign_ins.lock().is_ok_and(|mut clients| {
            let state = clients.entry(client).or_default();
            state.running += 1;
            state.running > 1 || state.failed_at.is_some_and(|at| at.elapsed() < self.window)
        });
        let known = !suspect
            && self.known.lock().is_ok_and(|known| {
                known
                    .get(&(client, account.clone()))
                    .is_some_and(|at| at.elapsed() < self.known_client)
            });
        SignIn {
            limits: self,
            client,
            account,
            priority: if suspect {
                HashPriority::Suspect
            } else if known {
                HashPriority::Known
            } else {
                HashPriority::Normal
            },
        }
    }

    /// A token refresh from the client of `request`.
    ///
    /// # Errors
    /// [`Throttled`].
    pub fn refresh(&self, request: &Request) -> Result<(), Throttled> {
        self.refresh.check(&self.client(request))
    }

    /// A new device code for the client of `request`.
    ///
    /// # Errors
    /// [`Throttled`].
    pub fn device_code(&self, request: &Request) -> Result<(), Throttled> {
        self.device_code.check(&self.client(request))
    }

    /// A device-code poll from the client of `request`.
    ///
    /// # Errors
    /// [`Throttled`].
    pub fn device_poll(&self, request: &Request) -> Result<(), Throttled> {
        self.device_poll.check(&self.client(request))
    }

    /// An enrollment with an enrollment token from the client of `request`.
    ///
    /// # Errors
    /// [`Throttled`].
    pub fn enroll(&self, request: &Request) -> Result<(), Throttled> {
        self.enroll.check(&self.client(request))
    }

    /// A renewal of its token by the agent `principal` (the budget is the agent's, whichever of its
    /// tokens asks).
    ///
    /// # Errors
    /// [`Throttled`].
    pub fn token_renewal(&self, principal: &Principal) -> Result<(), Throttled> {
        self.token_renewals.check(&principal.actor())
    }

    /// A costly read by `principal`.
    ///
    /// # Errors
    /// [`Throttled`].
    pub fn costly_read(&self, principal: &Principal) -> Result<(), Throttled> {
        self.costly_reads.check(&principal.actor())
    }

    /// Drops the state of keys that are back to a full budget (call it about once a window).
    pub fn retain_recent(&self) {
        if let Ok(mut clients) = self.sign_ins.lock() {
            clients.retain(|_, state| {
                state.running > 0 || state.failed_at.is_some_and(|at| at.elapsed() < self.window)
            });
            clients.shrink_to_fit();
        }
        if let Ok(mut known) = self.known.lock() {
            known.retain(|_, at| at.elapsed() < self.known_client);
            known.shrink_to_fit();
        }
        self.login_address.retain_recent();
        self.login_account.retain_recent();
        self.refresh.retain_recent();
        self.device_code.retain_recent();
        self.device_poll.retain_recent();
        self.enroll.retain_recent();
        self.token_renewals.retain_recent();
        self.costly_reads.retain_recent();
    }

    /// How many keys the limiters hold now.
    pub fn keys(&self) -> usize {
        self.login_address.len()
            + self.login_account.len()
            + self.refresh.len()
            + self.device_code.len()
            + self.device_poll.len()
            + self.enroll.len()
            + self.token_renewals.len()
            + self.costly_reads.len()
    }

    /// The client of `request`, as the limits count it (see the module's doc).
    pub fn client(&self, request: &Request) -> IpAddr {
        bucket(self.origin(request))
    }

    /// The client of `request`: the TCP peer, or the address a trusted proxy names (see the module's
    /// doc), not grouped by network.
    pub fn origin(&self, request: &Request) -> IpAddr {
        let peer = request
            .remote_addr()
            .as_socket_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip().to_canonical());
        let forwarded: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .collect();
        client_address(peer, &forwarded, &self.trusted_proxies)
    }
}

/// An account as the limits count it: the email as typed, trimmed and lower-cased.
fn account_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy, else the right-most address
/// of `forwarded` that is not a trusted proxy (the left-most when all are; the last one believed when
/// an entry is not an address).
fn client_address(peer: IpAddr, forwarded: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

/// IPv6 addresses count per /64; IPv4 addresses each.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}
