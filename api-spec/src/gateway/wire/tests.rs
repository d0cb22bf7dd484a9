//! Ports and their wires over real sockets: frames arrive whole and in order, slow sockets are not
//! stalled, and offers are written once, queued in order, overflowed or refused as the port stands.

use super::{Offered, Port, Wire, frame};
use futures::{SinkExt, StreamExt};
use std::future::poll_fn;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::task::{Wake, Waker};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{WebSocketStream, accept_async, client_async};

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

#[tokio::test]
async fn encoded_frames_and_tungstenite_writes_arrive_as_whole_messages_in_order() {
    let (client, server) = pair().await;
    let serving = tokio::spawn(async move {
        let mut ws = accept_async(Wire::new(server, 8)).await.unwrap();
        let shared = frame("x".repeat(70_000));
        for text in ["one", "two"] {
            ws.get_ref().port().push(frame(text)).unwrap();
        }
        ws.get_ref().port().push(shared.clone()).unwrap();
        poll_fn(|cx| ws.get_ref().port().poll_drain(cx))
            .await
            .unwrap();
        // tungstenite's own write (a ping) between two queued frames.
        ws.send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        ws.get_ref().port().push(frame("three")).unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    let (mut ws, _) = client_async("ws://localhost/ws", client).await.unwrap();
    let mut got = Vec::new();
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) if text.len() > 100 => got.push(format!("long {}", text.len())),
            Message::Text(text) => got.push(text.to_string()),
            Message::Ping(_) => got.push("ping".into()),
            Message::Close(_) => got.push("close".into()),
            _ => {}
        }
    }
    assert_eq!(
        got,
        ["one", "two", "long 70000", "ping", "three", "close"].map(String::from)
    );
    serving.await.unwrap();
}

#[tokio::test]
async fn a_frame_the_socket_takes_in_parts_is_finished_before_the_next_one() {
    let (mut client, server) = pair().await;
    let wire = Wire::new(server, 4);
    // Larger than the socket buffers: the first writes are partial.
    let big = frame("y".repeat(8 << 20));
    wire.port().push(big.clone()).unwrap();
    wire.port().push(frame("after")).unwrap();
    let draining = tokio::spawn(async move {
        poll_fn(|cx| wire.port().poll_drain(cx)).await.unwrap();
        wire
    });
    let mut received = vec![0u8; big.len() + frame("after").len()];
    client.read_exact(&mut received).await.unwrap();
    let wire = draining.await.unwrap();
    assert!(!wire.port().is_pending());
    assert_eq!(&received[..big.len()], &big[..]);
    assert_eq!(&received[big.len()..], &frame("after")[..]);
}

#[tokio::test]
async fn the_encoded_frames_decode_as_the_messages_they_stand_for() {
    let mut bytes = frame("hello").to_vec();
    bytes.extend_from_slice(&super::ping());
    let mut ws = WebSocketStream::from_raw_socket(Cursor::new(bytes), Role::Client, None).await;
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    assert!(matches!(ws.next().await.unwrap().unwrap(), Message::Ping(p) if p.is_empty()));
}

#[tokio::test]
async fn a_socket_that_takes_bytes_slowly_is_not_stalled() {
    let (mut client, server) = pair().await;
    let wire = Wire::new(server, 4);
    wire.port().push(frame("z".repeat(8 << 20))).unwrap();
    let polled = poll_fn(|cx| Poll::Ready(wire.port().poll_drain(cx))).await;
    assert!(polled.is_pending());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Nothing read: stalled since the push.
    assert!(wire.port().stalled_for().unwrap() >= Duration::from_millis(200));
    let mut read = vec![0u8; 1 << 20];
    client.read_exact(&mut read).await.unwrap();
    // The socket takes more (the rest does not fit): the stall counts from that write.
    let draining = poll_fn(|cx| wire.port().poll_drain(cx));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), draining)
            .await
            .is_err()
    );
    assert!(wire.port().stalled_for().unwrap() < Duration::from_millis(200));
}

#[test]
fn the_payload_is_found_after_each_length_of_header() {
    for len in [0, 125, 126, 65_535, 65_536, 200_000] {
        let payload = vec![b'a'; len];
        assert_eq!(
            super::payload_of(&frame(payload.clone())),
            &payload[..],
            "{len}"
        );
    }
}

#[tokio::test]
async fn a_full_queue_hands_the_frame_back() {
    let (_client, server) = pair().await;
    let wire = Wire::new(server, 2);
    wire.port().push(frame("a")).unwrap();
    wire.port().push(frame("b")).unwrap();
    assert_eq!(wire.port().push(frame("c")), Err(frame("c")));
    assert!(wire.port().stalled_for().is_some());
}

/// A waker that counts its wake-ups.
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    (Arc::clone(&count), Waker::from(count))
}

/// A port on a fresh socket whose readiness the runtime knows (a write went through it).
async fn ready_port(capacity: usize) -> (TcpStream, Arc<Port>) {
    let (client, server) = pair().await;
    let port = Port::new(server, capacity);
    port.push(frame("first")).unwrap();
    poll_fn(|cx| port.poll_drain(cx)).await.unwrap();
    (client, port)
}

async fn read_frame(client: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn an_offer_to_an_idle_port_is_written_at_once_and_only_once() {
    let (mut client, port) = ready_port(4).await;
    read_frame(&mut client, &frame("first")).await;
    let (count, waker) = counting();
    assert!(!port.watch(&waker));
    let team: Arc<str> = Arc::from("team");
    let rev2 = frame("rev 2");
    let limit = Duration::from_secs(10);
    port.join(&team);
    assert_eq!(port.offer(&team, 2, &rev2, limit), Offered::Written);
    assert!(!port.is_pending());
    read_frame(&mut client, &rev2).await;
    // The same revision again, or an older one: nothing written.
    assert_eq!(port.offer(&team, 2, &rev2, limit), Offered::Stale);
    assert_eq!(port.offer(&team, 1, &frame("rev 1"), limit), Offered::Stale);
    assert_eq!(port.sent("team"), Some(2));
    // Written directly: the connection's task was not woken.
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
    // Another team is tracked apart.
    let other: Arc<str> = Arc::from("other");
    assert_eq!(
        port.offer(&other, 1, &frame("other 1"), limit),
        Offered::NotMember,
        "not a member of that team yet"
    );
    port.join(&other);
    assert_eq!(
        port.offer(&other, 1, &frame("other 1"), limit),
        Offered::Written
    );
    read_frame(&mut client, &frame("other 1")).await;
    port.forget("team");
    assert_eq!(port.sent("team"), None);
    assert_eq!(port.sent("other"), Some(1));
}

#[tokio::test]
async fn an_offer_behind_queued_frames_is_queued_in_order_and_wakes_the_task() {
    let (mut client, port) = ready_port(4).await;
    read_frame(&mut client, &frame("first")).await;
    let (count, waker) = counting();
    port.watch(&waker);
    port.push(frame("reply")).unwrap();
    let team: Arc<str> = Arc::from("team");
    port.join(&team);
    let rev = frame("rev 1");
    assert_eq!(
        port.offer(&team, 1, &rev, Duration::from_secs(10)),
        Offered::Queued
    );
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    poll_fn(|cx| port.poll_drain(cx)).await.unwrap();
    let mut expected = frame("reply").to_vec();
    expected.extend_from_slice(&rev);
    read_frame(&mut client, &expected).await;
}

#[tokio::test]
async fn an_offer_to_a_full_or_stalled_queue_overflows_and_a_closed_port_takes_none() {
    let (_client, port) = ready_port(2).await;
    let (count, waker) = counting();
    port.watch(&waker);
    port.push(frame("a")).unwrap();
    port.push(frame("b")).unwrap();
    let team: Arc<str> = Arc::from("team");
    port.join(&team);
    let limit = Duration::from_secs(10);
    assert_eq!(
        port.offer(&team, 1, &frame("c"), limit),
        Offered::Overflowed
    );
    assert!(port.watch(&waker), "the task learns of the overflow");
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    // Not full, but nothing taken for longer than the limit.
    let (_client, port) = ready_port(8).await;
    port.join(&team);
    port.push(frame("a")).unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let short = Duration::from_millis(10);
    assert_eq!(
        port.offer(&team, 1, &frame("c"), short),
        Offered::Overflowed
    );
    let (_client, port) = ready_port(8).await;
    port.join(&team);
    port.close();
    assert_eq!(port.offer(&team, 1, &frame("c"), limit), Offered::Closed);
    assert_eq!(port.sent("team"), None);
}

/// The fan-out copies a team's ports, then offers to each: a port whose connection left the team
/// between the two (it forgot the team and queued `removed`) must take none of the team's later
/// revisions, or the agent stores the team again after `removed`.
#[tokio::test]
async fn an_offer_after_the_team_was_forgotten_is_refused_and_nothing_follows_removed() {
    let (mut client, port) = ready_port(8).await;
    read_frame(&mut client, &frame("first")).await;
    let team: Arc<str> = Arc::from("team");
    let limit = Duration::from_secs(10);
    port.join(&team);
    assert_eq!(
        port.offer(&team, 1, &frame("rev 1"), limit),
        Offered::Written
    );
    read_frame(&mut client, &frame("rev 1")).await;
    // A fan-out thread that copied this port keeps offering while the connection leaves.
    let offering = {
        let port = Arc::clone(&port);
        let team = Arc::clone(&team);
        std::thread::spawn(move || {
            for revision in 2..2_000u64 {
                let _ = port.offer(&team, revision, &frame(format!("rev {revision}")), limit);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1));
    port.forget("team");
    port.push(frame("removed")).unwrap();
    offering.join().unwrap();
    poll_fn(|cx| port.poll_drain(cx)).await.unwrap();
    port.push(frame("end")).unwrap();
    poll_fn(|cx| port.poll_drain(cx)).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let mut after_removed = Vec::new();
    let mut removed = false;
    while let Some(Ok(Message::Text(text))) = ws.next().await {
        match text.as_str() {
            "end" => break,
            "removed" => removed = true,
            other if removed => after_removed.push(other.to_owned()),
            _ => {}
        }
    }
    assert!(removed);
    assert!(
        after_removed.is_empty(),
        "pushed after removed: {:?}",
        &after_removed[..after_removed.len().min(3)]
    );
    // Offered afterwards: refused too.
    assert_eq!(
        port.offer(&team, 5_000, &frame("late"), limit),
        Offered::NotMember
    );
    assert_eq!(port.sent("team"), None);
    // Joining again (the agent is added back): its revisions are taken again.
    port.join(&team);
    assert_eq!(
        port.offer(&team, 5_001, &frame("back"), limit),
        Offered::Written
    );
}
