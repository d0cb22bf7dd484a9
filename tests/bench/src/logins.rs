//! `edict-bench logins`: do legitimate sign-ins keep their latency while bad ones pour in?
//!
//! Starts Edict in this process on a temporary SQLite store with the default rate limits, creates
//! `--good-rate × --seconds` users, then measures, in one run:
//! 1. *baseline*: good sign-ins only, `--good-rate` a second (each user once, from its own address);
//! 2. *attack, known clients*: the same good sign-ins (each user again, from the address it signed in
//!    from) while `--attack-rate` bad sign-ins a second (wrong passwords for unknown accounts) arrive
//!    from `--attackers` other addresses;
//! 3. *attack, first sign-ins*: as many other users, who never signed in, each from a new address,
//!    while the same attack comes from `--attackers` fresh addresses;
//! 4. with `--compare-unlimited`, the attack on first sign-ins again on a second server whose sign-in
//!    limits are off.
//!
//! Every client address is real: on loopback, sockets bound to 127.1.0.x and 127.2.0.x (good) and
//! 127.100.0.x and 127.160.0.x (attackers) are distinct peers to the server. Latency is measured per request from its send to its
//! answer (open loop: a slow answer does not delay the next request). Password hashing (argon2id, in
//! the lanes of `edict_infrastructure::auth::password`) is the expensive part; a bad sign-in over its address's limit is refused before
//! hashing.

use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, bench_settings, serve_until_stopped};
use anyhow::{Context, Result, bail};
use clap::Args;
use edict::app;
use edict::output::{self, OutputFormat};
use edict_api::server::rate_limit::{RateLimitSettings, RateLimits};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};

/// `edict-bench logins` options.
#[derive(Debug, Args)]
pub struct LoginsArgs {
    /// Bad sign-ins a second during the attack.
    #[arg(long, default_value_t = 500)]
    attack_rate: u32,
    /// Addresses the bad sign-ins come from (127.100.0.1 onwards), in turn.
    #[arg(long, default_value_t = 50)]
    attackers: u32,
    /// Good sign-ins a second (each by another user, from its own address).
    #[arg(long, default_value_t = 10)]
    good_rate: u32,
    /// Length of each phase, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Also run the attack against a server whose sign-in limits are off.
    #[arg(long)]
    compare_unlimited: bool,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
}

/// Good sign-ins' latency in one phase.
#[derive(Debug, Serialize)]
struct Phase {
    name: String,
    good_sign_ins: u64,
    good_failures: u64,
    good_p50_ms: f64,
    good_p99_ms: f64,
    good_max_ms: f64,
    bad_sent: u64,
    bad_skipped: u64,
    bad_refused_401: u64,
    bad_limited_429: u64,
    /// Bad sign-ins that got no answer (a connection error or the 60 s client timeout).
    bad_other: u64,
    achieved_attack_rate: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    attack_rate: u32,
    attackers: u32,
    good_rate: u32,
    seconds: u64,
    limits: String,
    phases: Vec<Phase>,
}

/// A server in this process and what it took to start it.
struct Server {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    database: edict_infrastructure::store::Database,
    dir: std::path::PathBuf,
}

const USER_PASSWORD: &str = "good-password-123";

async fn start(limits: RateLimitSettings) -> Result<Server> {
    let dir = std::env::temp_dir().join(format!("edict-bench-logins-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let settings = bench_settings(dir.clone())?;
    let listen = settings.listen;
    let built = app::build(&settings, None).await?;
    let endpoint = edict_api::server::app_with_limits(
        built.edict.clone(),
        edict_api::server::GatewayUrls::default(),
        Arc::new(RateLimits::new(&limits)),
    );
    let (stop, task) = serve_until_stopped(listen, endpoint);
    Ok(Server {
        base: format!("http://{listen}"),
        stop,
        task,
        database: built.database,
        dir,
    })
}

impl Server {
    async fn shut(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.database.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `index`-th address from 127.`block`.0.1 (250 per second octet).
fn address(block: u8, index: u32) -> IpAddr {
    let second = block.saturating_add(u8::try_from(index / 250).unwrap_or(u8::MAX));
    let fourth = u8::try_from(index % 250 + 1).unwrap_or(1);
    IpAddr::V4(Ipv4Addr::new(127, second, 0, fourth))
}

fn client_from(ip: IpAddr) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(ip)
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn sign_in(client: &reqwest::Client, base: &str, email: &str, password: &str) -> u16 {
    match client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Who signs in during a phase: users `<prefix>-<i>@example.com`, each from address `i` of `block`,
/// and the attackers' address block.
#[derive(Debug, Clone, Copy)]
struct Cohort {
    prefix: &'static str,
    block: u8,
    attackers: u8,
}

/// Users who signed in during the baseline, attacked from 127.100.0.x.
const KNOWN: Cohort = Cohort {
    prefix: "good",
    block: 1,
    attackers: 100,
};
/// Users who never signed in, attacked from 127.160.0.x.
const NEWCOMERS: Cohort = Cohort {
    prefix: "new",
    block: 2,
    attackers: 160,
};

/// Creates `count` users (`<prefix>-<i>@example.com`) through the API.
async fn create_users(base: &str, prefix: &'static str, count: u32) -> Result<()> {
    let admin = reqwest::Client::new();
    let tokens: serde_json::Value = admin
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = tokens["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let created = Arc::new(Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (admin, token, base, created) = (
            admin.clone(),
            token.clone(),
            base.to_owned(),
            created.clone(),
        );
        tasks.spawn(async move {
            let _permit = created.acquire().await?;
            admin
                .post(format!("{base}/api/v1/users"))
                .bearer_auth(token)
                .json(
                    &json!({"email": format!("{prefix}-{i}@example.com"), "name": format!("User {prefix} {i}"),
                              "password": USER_PASSWORD, "roles": []}),
                )
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    skipped: AtomicU64,
    refused: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
}

/// One phase: good sign-ins (each user once) and, with `attack`, bad ones at the attack rate.
async fn phase(
    name: &str,
    base: &str,
    args: &LoginsArgs,
    users: u32,
    cohort: Cohort,
    attack: bool,
) -> Result<Phase> {
    let good_clients: Vec<reqwest::Client> = (0..users)
        .map(|i| client_from(address(cohort.block, i)))
        .collect::<Result<_>>()?;
    let bad_clients: Vec<reqwest::Client> = (0..args.attackers.max(1))
        .map(|i| client_from(address(cohort.attackers, i)))
        .collect::<Result<_>>()?;
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let good_failures = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let duration = Duration::from_secs(args.seconds);
    let started = Instant::now();

    let attacker = attack.then(|| {
        let (base, tally) = (base.to_owned(), tally.clone());
        let period = Duration::from_secs_f64(1.0 / f64::from(args.attack_rate.max(1)));
        // Requests in flight at most: past it the attacker skips (and says so) rather than queueing
        // unboundedly in this process.
        let in_flight = Arc::new(Semaphore::new(4096));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            let mut tasks = tokio::task::JoinSet::new();
            while started.elapsed() < duration {
                ticks.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    tally.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let client =
                    bad_clients[usize::try_from(n).unwrap_or(0) % bad_clients.len()].clone();
                let (base, tally) = (base.clone(), tally.clone());
                n += 1;
                tally.sent.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    let status = sign_in(
                        &client,
                        &base,
                        &format!("intruder-{n}@example.com"),
                        "wrong-password-123",
                    )
                    .await;
                    let counter = match status {
                        401 => &tally.refused,
                        429 => &tally.limited,
                        _ => &tally.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
            let attacked = started.elapsed().as_secs_f64();
            while tasks.join_next().await.is_some() {}
            attacked
        })
    });

    let mut good = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(args.good_rate.max(1)),
    ));
    for (i, client) in good_clients.into_iter().enumerate() {
        ticks.tick().await;
        let (base, latencies, failures) =
            (base.to_owned(), latencies.clone(), good_failures.clone());
        good.spawn(async move {
            let sent = Instant::now();
            let status = sign_in(
                &client,
                &base,
                &format!("{}-{i}@example.com", cohort.prefix),
                USER_PASSWORD,
            )
            .await;
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            if status == 200 {
                let _ = latencies.lock().await.record(micros.max(1));
            } else {
                failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(status, "a good sign-in failed");
            }
        });
    }
    while good.join_next().await.is_some() {}
    let attacked = match attacker {
        Some(attacker) => attacker.await?,
        None => 1.0,
    };
    let histogram = latencies.lock().await;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Phase {
        name: name.to_owned(),
        good_sign_ins: histogram.len(),
        good_failures: good_failures.load(Ordering::Relaxed),
        good_p50_ms: ms(0.5),
        good_p99_ms: ms(0.99),
        good_max_ms: histogram.max() as f64 / 1000.0,
        bad_sent: tally.sent.load(Ordering::Relaxed),
        bad_skipped: tally.skipped.load(Ordering::Relaxed),
        bad_refused_401: tally.refused.load(Ordering::Relaxed),
        bad_limited_429: tally.limited.load(Ordering::Relaxed),
        bad_other: tally.other.load(Ordering::Relaxed),
        achieved_attack_rate: tally.sent.load(Ordering::Relaxed) as f64 / attacked,
    })
}

/// Runs `edict-bench logins`.
///
/// # Errors
/// When a server cannot start or users cannot be created.
pub async fn logins(args: LoginsArgs) -> Result<()> {
    if args.seconds == 0 || args.good_rate == 0 {
        bail!("--seconds and --good-rate must be at least 1");
    }
    let users = u32::try_from(u64::from(args.good_rate) * args.seconds).unwrap_or(u32::MAX);
    if users > 250 || args.attackers > 250 * 60 {
        bail!("too many users or attackers for the loopback address plan");
    }
    let limits = RateLimitSettings::default();
    let mut phases = Vec::new();

    tracing::info!(users, "starting a server with the default rate limits");
    let server = start(limits.clone()).await?;
    create_users(&server.base, KNOWN.prefix, users).await?;
    create_users(&server.base, NEWCOMERS.prefix, users).await?;
    let on = |base: &str, name: &'static str, cohort, attack| {
        let (base, args) = (base.to_owned(), &args);
        async move { phase(name, &base, args, users, cohort, attack).await }
    };
    tracing::info!("baseline: first sign-ins only");
    phases.push(on(&server.base, "baseline", KNOWN, false).await?);
    tracing::info!(
        rate = args.attack_rate,
        "attack: known clients sign in again among bad sign-ins"
    );
    phases.push(on(&server.base, "attack, known clients", KNOWN, true).await?);
    tracing::info!(
        rate = args.attack_rate,
        "attack: first sign-ins among bad sign-ins"
    );
    phases.push(on(&server.base, "attack, first sign-ins", NEWCOMERS, true).await?);
    server.shut().await;

    if args.compare_unlimited {
        let unlimited = RateLimitSettings {
            login_per_address: 0,
            login_per_account: 0,
            ..limits.clone()
        };
        tracing::info!("attack again, sign-in limits off");
        let server = start(unlimited).await?;
        create_users(&server.base, NEWCOMERS.prefix, users).await?;
        phases.push(on(&server.base, "attack, first, no limits", NEWCOMERS, true).await?);
        server.shut().await;
    }

    let report = Report {
        attack_rate: args.attack_rate,
        attackers: args.attackers,
        good_rate: args.good_rate,
        seconds: args.seconds,
        limits: format!(
            "{} sign-ins per address, {} per account, per {} s",
            limits.login_per_address,
            limits.login_per_account,
            limits.window.as_secs()
        ),
        phases,
    };
    match args.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Text => {
            output::line(&format!(
                "sign-ins: {} good/s, {} bad/s from {} addresses, {} s per phase; limits: {}",
                report.good_rate,
                report.attack_rate,
                report.attackers,
                report.seconds,
                report.limits
            ));
            for p in &report.phases {
                output::line(&format!(
                    "  {:<26} good: {} ok, {} failed, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | \
                     bad: {:.0}/s sent ({} skipped), {} got 401, {} got 429, {} unanswered",
                    p.name,
                    p.good_sign_ins,
                    p.good_failures,
                    p.good_p50_ms,
                    p.good_p99_ms,
                    p.good_max_ms,
                    p.achieved_attack_rate,
                    p.bad_skipped,
                    p.bad_refused_401,
                    p.bad_limited_429,
                    p.bad_other
                ));
            }
        }
    }
    Ok(())
}
