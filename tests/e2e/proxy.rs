//! What the tests' loopback proxies share: the task accepting their connections, and the relay of
//! every message one way.

use futures::{Sink, SinkExt, Stream, StreamExt};
use std::future::Future;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A task accepting connections on a free loopback port, each handled by a task of its own; it stops
/// accepting when dropped.
pub struct Acceptor {
    /// Its port on 127.0.0.1.
    pub port: u16,
    task: JoinHandle<()>,
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Acceptor {
    /// Listens and hands each connection to `handle`.
    pub async fn start<F, Fut>(handle: F) -> Acceptor
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.push(tokio::spawn(handle(stream)));
            }
        });
        Acceptor { port, task }
    }

    /// `ws://127.0.0.1:<port>/ws`: the gateway URL an agent is given to go through it.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

/// Passes every message of `from` on to `to` until either ends.
pub async fn forward<M, E>(
    mut from: impl Stream<Item = Result<M, E>> + Unpin,
    mut to: impl Sink<M> + Unpin,
) {
    while let Some(Ok(message)) = from.next().await {
        if to.send(message).await.is_err() {
            break;
        }
    }
}
