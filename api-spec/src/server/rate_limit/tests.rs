//! Client addresses behind proxies, the settings read from the environment, suspect and known clients,
//! and a limit's burst.

use super::settings::parse_proxies;
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
