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

use super::problem::{ErrorResponse, Problem};
use edict_application::auth::HashPriority;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use ipnet::IpNet;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Request, Response};
use poem_openapi::ApiResponse;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaResponses, Registry};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits, as configured (`EDICT_RATE_*`, `EDICT_TRUSTED_PROXIES`). A count of 0 turns a limit
/// off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// The window every count applies to (`EDICT_RATE_WINDOW_SECS`, default 60 s).
    pub window: Duration,
    /// Sign-in attempts per client address (`EDICT_RATE_LOGIN_PER_ADDRESS`, 20).
    pub login_per_address: u32,
    /// Sign-in attempts per account (`EDICT_RATE_LOGIN_PER_ACCOUNT`, 10).
    pub login_per_account: u32,
    /// Token refreshes per client address (`EDICT_RATE_REFRESH_PER_ADDRESS`, 60).
    pub refresh_per_address: u32,
    /// Device codes created per client address (`EDICT_RATE_DEVICE_CODE_PER_ADDRESS`, 10).
    pub device_code_per_address: u32,
    /// Device-code polls per client address (`EDICT_RATE_DEVICE_POLL_PER_ADDRESS`, 120; an agent polls
    /// every 5 s).
    pub device_poll_per_address: u32,
    /// Enrollments with an enrollment token per client address (`EDICT_RATE_ENROLL_PER_ADDRESS`, 30).
    pub enroll_per_address: u32,
    /// Reports per agent over the gateway (`EDICT_RATE_REPORTS_PER_AGENT`, 120).
    pub reports_per_agent: u32,
    /// Agent-token renewals per agent (`EDICT_RATE_TOKEN_RENEWALS_PER_AGENT`, 10): an agent renews
    /// once in half its token's life, more only after a lost answer.
    pub token_renewals_per_agent: u32,
    /// Costly reads per principal (`EDICT_RATE_COSTLY_READS_PER_PRINCIPAL`, 300): `as_of` replays,
    /// exports, histories, event-log pages with a filter.
    pub costly_reads_per_principal: u32,
    /// How long a successful sign-in makes its address known for its account
    /// (`EDICT_RATE_KNOWN_CLIENT_SECS`, 30 days; 0: nobody is known).
    pub known_client: Duration,
    /// Peers whose `X-Forwarded-For` is believed (`EDICT_TRUSTED_PROXIES`, comma-separated addresses or
    /// CIDR ranges; default none).
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            login_per_address: 20,
            login_per_account: 10,
            refresh_per_address: 60,
            device_code_per_address: 10,
            device_poll_per_address: 120,
            enroll_per_address: 30,
            reports_per_agent: 120,
            token_renewals_per_agent: 10,
            costly_reads_per_principal: 300,
            known_client: Duration::from_secs(30 * 24 * 3600),
            trusted_proxies: Vec::new(),
        }
    }
}

impl RateLimitSettings {
    /// The settings from variables read through `var` (the environment in `edict serve`); a variable
    /// not set keeps its default.
    ///
    /// # Errors
    /// A message naming the variable whose value is not a number, or not an address or range.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut settings = Self::default();
        let number = |name: &str, default: u32| -> Result<u32, String> {
            match var(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name} must be a whole number, got {value:?}")),
            }
        };
        let window = number(
            "EDICT_RATE_WINDOW_SECS",
            u32::try_from(settings.window.as_secs()).unwrap_or(60),
        )?;
        if window == 0 {
            return Err("EDICT_RATE_WINDOW_SECS must be at least 1".into());
        }
        settings.window = Duration::from_secs(u64::from(window));
        settings.login_per_address =
            number("EDICT_RATE_LOGIN_PER_ADDRESS", settings.login_per_address)?;
        settings.login_per_account =
            number("EDICT_RATE_LOGIN_PER_ACCOUNT", settings.login_per_account)?;
        settings.refresh_per_address = number(
            "EDICT_RATE_REFRESH_PER_ADDRESS",
            settings.refresh_per_address,
        )?;
        settings.device_code_per_address = number(
            "EDICT_RATE_DEVICE_CODE_PER_ADDRESS",
            settings.device_code_per_address,
        )?;
        settings.device_poll_per_address = number(
            "EDICT_RATE_DEVICE_POLL_PER_ADDRESS",
            settings.device_poll_per_address,
        )?;
        settings.enroll_per_address =
            number("EDICT_RATE_ENROLL_PER_ADDRESS", settings.enroll_per_address)?;
        settings.reports_per_agent =
            number("EDICT_RATE_REPORTS_PER_AGENT", settings.reports_per_agent)?;
        settings.token_renewals_per_agent = number(
            "EDICT_RATE_TOKEN_RENEWALS_PER_AGENT",
            settings.token_renewals_per_agent,
        )?;
        settings.costly_reads_per_principal = number(
            "EDICT_RATE_COSTLY_READS_PER_PRINCIPAL",
            settings.costly_reads_per_principal,
        )?;
        settings.known_client = Duration::from_secs(u64::from(number(
            "EDICT_RATE_KNOWN_CLIENT_SECS",
            u32::try_from(settings.known_client.as_secs()).unwrap_or(u32::MAX),
        )?));
        if let Some(list) = var("EDICT_TRUSTED_PROXIES") {
            settings.trusted_proxies = parse_proxies(&list)?;
        }
        Ok(settings)
    }

    /// `count` per [`Self::window`] as a quota (a burst of `count`, then one every `window / count`);
    /// `None` for 0 (no limit).
    pub fn quota(&self, count: u32) -> Option<Quota> {
        let count = NonZeroU32::new(count)?;
        let period = self.window / count.get();
        Quota::with_period(period.max(Duration::from_nanos(1))).map(|q| q.allow_burst(count))
    }
}

/// Addresses (`10.0.0.1`) and ranges (`10.0.0.0/8`), comma-separated.
fn parse_proxies(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("EDICT_TRUSTED_PROXIES: {entry:?} is not an address or a CIDR range")
                })
        })
        .collect()
}

/// A request refused for its rate: when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// What was limited, for the problem's detail (`sign-in attempts from this address`).
    pub what: &'static str,
    /// How long until the next request would be let through.
    pub retry_after: Duration,
}

impl Throttled {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        let secs = self.retry_after_secs();
        TooManyRequests::Limited(
            Json(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!("too many {}; retry in {secs} s", self.what),
            )),
            secs,
        )
        .into_response()
    }
}

/// The 429 answer, as documented in the spec.
#[derive(Debug, ApiResponse)]
enum TooManyRequests {
    /// Too many requests of this kind: wait `Retry-After` seconds (the problem says what was limited).
    #[oai(status = 429, content_type = "application/problem+json")]
    Limited(
        Json<Problem>,
        /// Seconds until a request of this kind is let through again.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

/// The error of an operation that has a rate limit: every [`ErrorResponse`], and 429.
#[derive(Debug)]
pub enum LimitedError {
    /// Refused for its rate.
    Throttled(Throttled),
    /// Any other error.
    Error(ErrorResponse),
}

/// The result of an operation that has a rate limit.
pub type LimitedResult<T> = Result<T, LimitedError>;

impl From<Throttled> for LimitedError {
    fn from(throttled: Throttled) -> Self {
        LimitedError::Throttled(throttled)
    }
}

impl From<ErrorResponse> for LimitedError {
    fn from(error: ErrorResponse) -> Self {
        LimitedError::Error(error)
    }
}

impl From<AppError> for LimitedError {
    fn from(error: AppError) -> Self {
        LimitedError::Error(error.into())
    }
}

impl IntoResponse for LimitedError {
    fn into_response(self) -> Response {
        match self {
            LimitedError::Throttled(throttled) => throttled.into_response(),
            LimitedError::Error(error) => error.into_response(),
        }
    }
}

impl From<LimitedError> for poem::Error {
    fn from(error: LimitedError) -> Self {
        poem::Error::from_response(error.into_response())
    }
}

impl ApiResponse for LimitedError {
    const BAD_REQUEST_HANDLER: bool = true;

    fn meta() -> MetaResponses {
        let mut meta = ErrorResponse::meta();
        meta.responses.extend(TooManyRequests::meta().responses);
        meta.responses.sort_by_key(|r| r.status);
        meta
    }

    fn register(registry: &mut Registry) {
        ErrorResponse::register(registry);
        TooManyRequests::register(registry);
    }

    fn from_parse_request_error(error: poem::Error) -> Self {
        LimitedError::Error(ErrorResponse::from_parse_request_error(error))
    }
}

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

/// `Retry-After` on a response (for limits enforced outside an operation's handler).
pub fn with_retry_after(mut response: Response, secs: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_forwarded_header_of_an_untrusted_peer_is_ignored() {
        assert_eq!(
            client_address(ip("203.0.113.9"), &["198.51.100.1"], &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_right_most_untrusted_address() {
        let trusted = parse_proxies("10.0.0.0/8, 127.0.0.1").unwrap();
        // The client wrote a fake left-most entry; the proxy appended the address it saw.
        let forwarded = ["1.2.3.4", "198.51.100.7", "10.1.1.1"];
        assert_eq!(
            client_address(ip("127.0.0.1"), &forwarded, &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &["garbage", "10.0.0.2"], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &[], &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        assert_eq!(bucket(ip("2001:db8::1")), bucket(ip("2001:db8::ffff:1")));
        assert_ne!(bucket(ip("2001:db8::1")), bucket(ip("2001:db8:0:1::1")));
    }

    #[test]
    fn settings_read_counts_windows_and_proxies() {
        let vars = |name: &str| match name {
            "EDICT_RATE_WINDOW_SECS" => Some("2".to_owned()),
            "EDICT_RATE_LOGIN_PER_ACCOUNT" => Some("3".to_owned()),
            "EDICT_TRUSTED_PROXIES" => Some("127.0.0.1,10.0.0.0/8".to_owned()),
            _ => None,
        };
        let settings = RateLimitSettings::from_vars(vars).unwrap();
        assert_eq!(settings.window, Duration::from_secs(2));
        assert_eq!(settings.login_per_account, 3);
        assert_eq!(settings.login_per_address, 20);
        assert_eq!(settings.trusted_proxies.len(), 2);
        assert!(RateLimitSettings::from_vars(|_| Some("x".into())).is_err());
        assert!(
            RateLimitSettings::from_vars(
                |n| (n == "EDICT_TRUSTED_PROXIES").then(|| "not-an-ip".to_owned())
            )
            .is_err()
        );
    }

    #[test]
    fn a_client_with_a_running_or_failed_sign_in_is_suspect() {
        let limits = RateLimits::default();
        let request = Request::builder().finish();
        let first = limits.sign_in(&request, "a@example.com");
        assert_eq!(first.priority, HashPriority::Normal);
        let second = limits.sign_in(&request, "a@example.com");
        assert_eq!(second.priority, HashPriority::Suspect, "two at once");
        drop(second);
        drop(first);
        let third = limits.sign_in(&request, "a@example.com");
        assert_eq!(third.priority, HashPriority::Normal, "one at a time again");
        third.failed();
        drop(third);
        assert_eq!(
            limits.sign_in(&request, "a@example.com").priority,
            HashPriority::Suspect
        );
    }

    #[test]
    fn a_client_that_signed_in_to_an_account_is_known_for_that_account_only() {
        let limits = RateLimits::default();
        let request = Request::builder().finish();
        let first = limits.sign_in(&request, "a@example.com");
        assert_eq!(first.priority, HashPriority::Normal, "never signed in");
        first.succeeded();
        drop(first);
        let again = limits.sign_in(&request, " A@Example.com");
        assert_eq!(again.priority, HashPriority::Known, "the same account");
        drop(again);
        let other = limits.sign_in(&request, "b@example.com");
        assert_eq!(other.priority, HashPriority::Normal, "another account");
        other.failed();
        drop(other);
        assert_eq!(
            limits.sign_in(&request, "a@example.com").priority,
            HashPriority::Suspect,
            "a failure from the address outranks being known"
        );
        let forgetful = RateLimits::new(&RateLimitSettings {
            known_client: Duration::ZERO,
            ..RateLimitSettings::default()
        });
        let first = forgetful.sign_in(&request, "a@example.com");
        first.succeeded();
        drop(first);
        assert_eq!(
            forgetful.sign_in(&request, "a@example.com").priority,
            HashPriority::Normal,
            "EDICT_RATE_KNOWN_CLIENT_SECS=0 knows nobody"
        );
    }

    #[test]
    fn a_failed_sign_in_forgets_the_pair() {
        let limits = RateLimits::new(&RateLimitSettings {
            window: Duration::from_millis(1),
            ..RateLimitSettings::default()
        });
        let request = Request::builder().finish();
        let first = limits.sign_in(&request, "a@example.com");
        first.succeeded();
        drop(first);
        let wrong = limits.sign_in(&request, "a@example.com");
        assert_eq!(wrong.priority, HashPriority::Known);
        wrong.failed();
        drop(wrong);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            limits.sign_in(&request, "a@example.com").priority,
            HashPriority::Normal,
            "after the suspect window, a failed pair is a stranger again"
        );
    }

    #[test]
    fn a_limit_lets_its_burst_through_then_says_when_to_retry() {
        let settings = RateLimitSettings {
            window: Duration::from_secs(60),
            ..RateLimitSettings::default()
        };
        let limit: Limit<u8> = Limit::new(settings.quota(3), "tries");
        assert!(limit.check(&1).is_ok());
        assert!(limit.check(&1).is_ok());
        assert!(limit.check(&1).is_ok());
        let throttled = limit.check(&1).unwrap_err();
        assert!(throttled.retry_after <= Duration::from_secs(20));
        assert!(throttled.retry_after_secs() >= 19);
        assert!(limit.check(&2).is_ok(), "another key has its own budget");
        let off: Limit<u8> = Limit::new(settings.quota(0), "tries");
        assert!((0..1000).all(|_| off.check(&1).is_ok()));
    }
}
