//! The limits as configured (`EDICT_RATE_*`, `EDICT_TRUSTED_PROXIES`), read from the environment.

use governor::Quota;
use ipnet::IpNet;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

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
pub(super) fn parse_proxies(list: &str) -> Result<Vec<IpNet>, String> {
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
