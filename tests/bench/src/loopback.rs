//! `edict-bench loopback`: the floor under `edict-bench agents` on this machine.
//!
//! The same exchange as a push to N agents of one team, with nothing of Edict in it: N loopback TCP
//! connections; one thread (the "gateway") writes a frame of the rule set's size to every
//! connection, one `write` each, then reads the answers; another process (the "agents", this binary
//! again) waits on all of its sockets with epoll and answers each frame at once with an
//! `applied`-sized message. Both share the machine's cores, as the gateway and the simulated agents
//! of `edict-bench agents` do (two processes: each holds one socket per connection). What it prints is
//! the least time the kernel's loopback TCP needs for that exchange here: no implementation of the
//! gateway and the agents on this machine can beat it.

use anyhow::{Context, Result, bail};
use clap::Args;
use edict::output::{self, OutputFormat};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of `edict-bench loopback`.
#[derive(Debug, Args)]
pub struct LoopbackArgs {
    /// Connections (agents of one team).
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Pushes measured.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Bytes of the frame written to each connection (a rule set of 3 rules is about 2,080).
    #[arg(long, default_value_t = 2_080)]
    frame_bytes: usize,
    /// Bytes of each answer (an `applied` frame is about 150).
    #[arg(long, default_value_t = 150)]
    answer_bytes: usize,
    /// Pause between pushes, milliseconds.
    #[arg(long, default_value_t = 300)]
    pause_ms: u64,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
    /// Internal: be the agents' side, connecting to this address.
    #[arg(long, hide = true)]
    agents_of: Option<SocketAddr>,
}

/// One push, milliseconds from its start.
#[derive(Debug, Clone, Serialize)]
struct Round {
    /// The last frame written.
    writes_done_ms: f64,
    /// The last answer written by the agents (what `edict-bench agents` calls the last `applied`).
    last_answer_ms: f64,
    /// Every answer read back by the writer.
    answers_read_ms: f64,
}

/// What `edict-bench loopback` measured.
#[derive(Debug, Clone, Serialize)]
struct LoopbackReport {
    count: usize,
    frame_bytes: usize,
    answer_bytes: usize,
    rounds: Vec<Round>,
    /// From a push's start to each answer written, over every round.
    per_answer_p50_ms: f64,
    per_answer_p99_ms: f64,
    per_answer_max_ms: f64,
}

/// Runs `edict-bench loopback`.
pub async fn loopback(args: LoopbackArgs) -> Result<()> {
    if args.count == 0 || args.frame_bytes == 0 || args.answer_bytes == 0 {
        bail!("--count, --frame-bytes and --answer-bytes must be at least 1");
    }
    super::agents::raise_fd_limit(args.count + 64);
    if let Some(addr) = args.agents_of {
        return tokio::task::spawn_blocking(move || agents(addr, &args))
            .await
            .context("the loopback agents panicked")?;
    }
    let report = tokio::task::spawn_blocking(move || measure(&args).map(|r| (r, args.output)))
        .await
        .context("the loopback bench panicked")??;
    crate::emit(report.1, &report.0, print)
}

fn measure(args: &LoopbackArgs) -> Result<LoopbackReport> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut child = Command::new(exe)
        .args(["loopback", "--agents-of", &addr.to_string()])
        .args(["--count", &args.count.to_string()])
        .args(["--rounds", &args.rounds.to_string()])
        .args(["--frame-bytes", &args.frame_bytes.to_string()])
        .args(["--answer-bytes", &args.answer_bytes.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the agents' process")?;
    let result = serve(args, &listener, &mut child);
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The writer's side, with the agents in `child` (connecting to `listener`).
fn serve(
    args: &LoopbackArgs,
    listener: &std::net::TcpListener,
    child: &mut std::process::Child,
) -> Result<LoopbackReport> {
    let mut lines = BufReader::new(child.stdout.take().context("no pipe from the agents")?).lines();
    let (mut servers, mut poll) = polled(args.count, || Ok(listener.accept()?.0))?;
    let frame = vec![b'x'; args.frame_bytes];
    let mut buffer = vec![0u8; 64 << 10];
    let mut events = Events::with_capacity(1024);
    let mut rounds = Vec::new();
    let mut per_answer = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for _ in 0..args.rounds {
        std::thread::sleep(Duration::from_millis(args.pause_ms));
        let start = Instant::now();
        let start_unix = unix_nanos();
        for server in &mut servers {
            let wrote = server.write(&frame)?;
            if wrote != frame.len() {
                bail!("a socket took {wrote} of {} bytes", frame.len());
            }
        }
        let writes_done = start.elapsed();
        let mut answered = 0;
        let want = args.count * args.answer_bytes;
        while answered < want {
            poll.poll(&mut events, Some(Duration::from_secs(20)))?;
            if events.is_empty() {
                bail!("no answer for 20 s ({answered} of {want} bytes)");
            }
            for event in &events {
                answered += drain(&mut servers[event.token().0], &mut buffer)?;
            }
        }
        let answers_read = start.elapsed();
        let line = lines
            .next()
            .context("the agents ended before reporting the round")??;
        let times: Vec<u64> = serde_json::from_str::<Vec<u64>>(&line)
            .context("the agents' report")?
            .into_iter()
            .map(|at| at.saturating_sub(start_unix))
            .collect();
        let last = times.iter().copied().max().unwrap_or(0);
        for t in &times {
            let _ = per_answer.record((t / 1_000).max(1));
        }
        rounds.push(Round {
            writes_done_ms: ms(writes_done),
            last_answer_ms: last as f64 / 1e6,
            answers_read_ms: ms(answers_read),
        });
    }
    Ok(LoopbackReport {
        count: args.count,
        frame_bytes: args.frame_bytes,
        answer_bytes: args.answer_bytes,
        rounds,
        per_answer_p50_ms: per_answer.value_at_quantile(0.5) as f64 / 1e3,
        per_answer_p99_ms: per_answer.value_at_quantile(0.99) as f64 / 1e3,
        per_answer_max_ms: per_answer.max() as f64 / 1e3,
    })
}

/// The agents' side: `--count` connections to `addr`; each frame read whole is answered at once;
/// after each round, the time of every answer (nanoseconds since the Unix epoch) as one JSON line on
/// stdout.
fn agents(addr: SocketAddr, args: &LoopbackArgs) -> Result<()> {
    let (mut clients, mut poll) = polled(args.count, || {
        std::net::TcpStream::connect(addr).context("cannot connect")
    })?;
    let reply = vec![b'a'; args.answer_bytes];
    let mut buffer = vec![0u8; 64 << 10];
    let mut received = vec![0usize; clients.len()];
    let mut events = Events::with_capacity(1024);
    for _ in 0..args.rounds {
        let mut times = Vec::with_capacity(clients.len());
        while times.len() < clients.len() {
            poll.poll(&mut events, Some(Duration::from_secs(60)))?;
            if events.is_empty() {
                bail!("no frame for 60 s");
            }
            for event in &events {
                let i = event.token().0;
                let client = &mut clients[i];
                received[i] += drain(client, &mut buffer)?;
                while received[i] >= args.frame_bytes {
                    received[i] -= args.frame_bytes;
                    client.write_all(&reply)?;
                    times.push(unix_nanos());
                }
            }
        }
        output::line(&serde_json::to_string(&times)?);
    }
    // The connections stay open until the writer is done (it closes our stdin, or is gone): it may
    // still be reading the last answers.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

/// `count` connections from `open`, without Nagle's delay, non-blocking, registered for reading with
/// a poll (token: the index).
fn polled(
    count: usize,
    mut open: impl FnMut() -> Result<std::net::TcpStream>,
) -> Result<(Vec<TcpStream>, Poll)> {
    let poll = Poll::new()?;
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let stream = open()?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        streams.push(stream);
    }
    Ok((streams, poll))
}

/// Reads what `stream` holds (until it would block): how many bytes.
fn drain(stream: &mut TcpStream, buffer: &mut [u8]) -> Result<usize> {
    let mut read = 0;
    loop {
        match stream.read(buffer) {
            Ok(0) => bail!("the other side closed a connection"),
            Ok(n) => read += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(read),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Now, nanoseconds since the Unix epoch (the two processes share the clock).
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print(report: &LoopbackReport) {
    output::line(&format!(
        "loopback TCP floor: {} connections, a {}-byte frame to each, a {}-byte answer from each, two processes on this machine's cores",
        report.count, report.frame_bytes, report.answer_bytes
    ));
    for (i, round) in report.rounds.iter().enumerate() {
        output::line(&format!(
            "  push {:>2}: frames written {:7.1} ms, last answer written {:7.1} ms, answers read back {:7.1} ms",
            i + 1,
            round.writes_done_ms,
            round.last_answer_ms,
            round.answers_read_ms
        ));
    }
    output::line(&format!(
        "  push → answer written, per connection: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.per_answer_p50_ms, report.per_answer_p99_ms, report.per_answer_max_ms
    ));
}
