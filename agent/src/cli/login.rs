//! `edict-agent login`: enrolls this machine (enrollment token, device code, or an agent token given
//! as it is) and stores what the server answered in the snapshot.

use super::Format;
use crate::login;
use crate::output;
use crate::snapshot::{Snapshot, keys};
use anyhow::bail;
use serde_json::json;
use std::path::Path;

/// What `login` takes from the command line instead of the server's answer.
pub(super) struct Overrides<'a> {
    /// `--gateway`.
    pub gateways: &'a [String],
    /// `--org-key`.
    pub org_key: Option<&'a str>,
}

pub(super) async fn login(
    data_dir: &Path,
    server: &str,
    enrollment_token: Option<&str>,
    agent_token: Option<&str>,
    overrides: Overrides<'_>,
    machine_name: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let Overrides { gateways, org_key } = overrides;
    // Read before any call to the server, so a typo fails before an enrollment token is spent.
    let pinned = org_key.map(login::parse_org_key).transpose()?;
    if agent_token.is_some() && !matches!(pinned, Some(login::PinnedKey::Key(_))) {
        bail!(
            "with --agent-token, give the organization's rule set public key with --org-key (64 hex \
             digits, or a file holding it): nothing else tells the agent which rule sets to trust"
        );
    }
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!("--server must be the API's http(s):// URL, e.g. https://edict.example.com");
    }
    let tls = crate::tls::policy();
    tls.check(server)?;
    for url in gateways {
        tls.check(&crate::client::ws_url(url)?)?;
    }
    let (machine_id, host_name) = login::machine();
    let machine_name = machine_name.unwrap_or(&host_name);
    let credentials = match (enrollment_token, agent_token) {
        (_, Some(token)) => login::Credentials {
            agent_id: String::new(),
            token: token.to_owned(),
            issued_at: None,
            expires_at: None,
            gateway_urls: Vec::new(),
            org_keys: Vec::new(),
            key_sequence: 0,
        },
        (Some(token), None) => {
            login::with_enrollment_token(server, token, &machine_id, machine_name).await?
        }
        (None, None) => {
            let code = login::start_device_flow(server, &machine_id, machine_name).await?;
            if format == Format::Json {
                output::json(&json!({
                    "user_code": code.user_code,
                    "verification_uri": code.verification_uri,
                    "expires_in": code.expires_in,
                }));
            } else {
                output::line(&format!(
                    "To enroll this machine ({machine_name}), open {} , sign in and enter the code\n\n    {}\n\nWaiting for approval (the code expires in {} minutes)…",
                    code.verification_uri,
                    code.user_code,
                    code.expires_in / 60
                ));
            }
            login::finish_device_flow(server, &code).await?
        }
    };
    let gateways = if gateways.is_empty() {
        credentials.gateway_urls.clone()
    } else {
        gateways.to_vec()
    };
    if gateways.is_empty() {
        bail!("the server named no gateway to connect to: pass --gateway ws://HOST:PORT/ws");
    }
    for url in &gateways {
        tls.check(&crate::client::ws_url(url)?)?;
    }
    let org_keys = login::keys_to_pin(&credentials.org_keys, pinned.as_ref())?;
    let snapshot = Snapshot::open(data_dir)?;
    crate::tls::record(&snapshot, tls)?;
    snapshot.set_org_keys(&org_keys, credentials.key_sequence)?;
    snapshot.set_identity(keys::API, server)?;
    snapshot.set_identity(keys::SERVER, &gateways.join("\n"))?;
    // The token with its lifetime, in one transaction (an unknown one is renewed at the first chance).
    let renew_at = crate::renew::renew_at(
        chrono::Utc::now().timestamp(),
        credentials.issued_at,
        credentials.expires_at,
    );
    snapshot.replace_token(
        None,
        &credentials.token,
        &credentials
            .expires_at
            .map(|at| at.to_rfc3339())
            .unwrap_or_default(),
        &renew_at.map(|at| at.to_string()).unwrap_or_default(),
    )?;
    if !credentials.agent_id.is_empty() {
        snapshot.set_identity(keys::AGENT_ID, &credentials.agent_id)?;
    }
    snapshot.set_identity(keys::MACHINE_ID, &machine_id)?;
    if format == Format::Json {
        output::json(&json!({
            "agent_id": credentials.agent_id,
            "gateway_urls": gateways,
            "org_keys": org_keys,
        }));
    } else {
        output::line(&format!(
            "organization rule set key: {}{}",
            login::fingerprints(&org_keys),
            if pinned.is_some() {
                " (matches --org-key)"
            } else {
                " (not checked: compare it with your administrator's, or log in with --org-key)"
            }
        ));
        output::line(&if credentials.agent_id.is_empty() {
            "agent token stored; start the agent with `edict-agent run`".to_owned()
        } else {
            format!(
                "enrolled as agent {}; start it with `edict-agent run`",
                credentials.agent_id
            )
        });
    }
    Ok(())
}
