//! Server URLs turned into WebSocket URLs.

use super::*;

#[test]
fn server_urls_become_websocket_urls() -> anyhow::Result<()> {
    assert_eq!(ws_url("http://localhost:8080")?, "ws://localhost:8080/ws");
    assert_eq!(ws_url("https://edict.example/")?, "wss://edict.example/ws");
    assert_eq!(ws_url("ws://gw:1/custom/ws")?, "ws://gw:1/custom/ws");
    assert!(ws_url("ftp://x").is_err());
    assert!(ws_url("localhost").is_err());
    Ok(())
}
