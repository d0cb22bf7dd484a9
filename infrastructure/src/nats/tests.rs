//! Unit tests of the NATS settings and names: which prefixes are accepted, the names and subjects they
//! carry, credentials taken out of the URL or read from the environment.

use super::*;

#[test]
fn a_prefix_takes_letters_digits_underscores_and_dashes() {
    assert!(NatsPrefix::parse("").is_ok());
    assert!(NatsPrefix::parse("prod_").is_ok());
    assert!(NatsPrefix::parse("t0123abc-x_").is_ok());
}

#[test]
fn a_prefix_with_dots_spaces_or_wildcards_is_rejected() {
    for bad in ["a.b", "a b", "a*", "a>", "ä", "a/b", &"x".repeat(65)] {
        assert!(
            matches!(NatsPrefix::parse(bad), Err(NatsError::InvalidPrefix(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn every_name_carries_the_prefix() {
    let prefix = NatsPrefix::parse("t1_").unwrap_or_default();
    assert_eq!(prefix.events_stream(), "t1_EDICT_EVENTS");
    assert_eq!(prefix.events_filter(), "t1_edict.events.>");
    assert_eq!(
        prefix.event_subject("Rule", "r1"),
        "t1_edict.events.Rule.r1"
    );
    assert_eq!(
        prefix.projection_consumer("rule_catalog"),
        "t1_projection_rule_catalog"
    );
    assert_eq!(prefix.rulesets_bucket(), "t1_rulesets");
    assert_eq!(prefix.relay_name(), "relay:t1_");
}

#[test]
fn an_aggregate_id_becomes_one_subject_token() {
    let prefix = NatsPrefix::default();
    assert_eq!(
        prefix.event_subject("Rule", "a.b *>c"),
        "edict.events.Rule.a_b___c"
    );
    assert_eq!(prefix.event_subject("Rule", ""), "edict.events.Rule._");
    assert_eq!(message_id("Rule", "a.b", 3), "Rule:a.b:3");
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
    }
}

#[test]
fn credentials_in_the_url_are_taken_out_of_it() {
    let (url, auth) = split_url_credentials("nats://edict:s3cret@nats:4222");
    assert_eq!(url, "nats://nats:4222");
    assert_eq!(
        auth,
        NatsAuth::UserPassword {
            user: "edict".to_owned(),
            password: Secret::new("s3cret".to_owned()),
        }
    );
    let (url, auth) = split_url_credentials("tls://tok@a:4222, nats://b:4222");
    assert_eq!(url, "tls://a:4222,nats://b:4222");
    assert_eq!(auth, NatsAuth::Token(Secret::new("tok".to_owned())));
    let (url, auth) = split_url_credentials("nats://127.0.0.1:4222");
    assert_eq!(
        (url.as_str(), auth),
        ("nats://127.0.0.1:4222", NatsAuth::None)
    );
    let settings = NatsSettings::new("nats://u:p4ss@h:1", "").unwrap_or_else(|_| unreachable!());
    assert!(!format!("{settings:?}").contains("p4ss"));
}

#[test]
fn one_kind_of_credentials_from_the_environment() {
    assert_eq!(NatsAuth::from_vars(vars(&[])).ok(), Some(NatsAuth::None));
    assert_eq!(
        NatsAuth::from_vars(vars(&[("EDICT_NATS_NKEY", " SUABC ")])).ok(),
        Some(NatsAuth::Nkey(Secret::new("SUABC".to_owned())))
    );
    for bad in [
        vec![("EDICT_NATS_USER", "edict")],
        vec![("EDICT_NATS_TOKEN", "t"), ("EDICT_NATS_CREDS", "/x.creds")],
    ] {
        assert!(
            matches!(NatsAuth::from_vars(vars(&bad)), Err(NatsError::Settings(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        NatsTls::from_vars(vars(&[("EDICT_NATS_TLS_CERT", "c.pem")])),
        Err(NatsError::Settings(_))
    ));
    let tls = NatsTls::from_vars(vars(&[("EDICT_NATS_TLS", "true")])).ok();
    assert_eq!(tls.map(|tls| tls.required), Some(true));
    let both = NatsSettings::new("nats://u:p@h:1", "").and_then(|s| {
        s.with_security(
            NatsAuth::Token(Secret::new("t".to_owned())),
            NatsTls::default(),
        )
    });
    assert!(matches!(both, Err(NatsError::Settings(_))));
}
