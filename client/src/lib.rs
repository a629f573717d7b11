//! Tether's Socket.IO client.
//!
//! No maintained Socket.IO client for wasm32 exists in the Rust registry, so Tether has its own:
//! a sans-IO [`core::Core`] (Engine.IO v4 over websocket + Socket.IO v5, heartbeat, acks with
//! timeouts, reconnection with backoff) that takes frames and time in and gives frames and events
//! out; [`chat`] state (roster, conversations, outbox) as plain data; and, behind the `native`
//! feature, a tokio adapter for tests and tools. The browser adapter lives in `app`.

pub mod backoff;
pub mod chat;
pub mod core;
pub mod hub;
pub mod link;
#[cfg(feature = "native")]
pub mod native;
pub mod packet;
pub mod session;

/// The Engine.IO endpoint for a page or server origin (`http(s)://host[:port]`).
pub fn websocket_url(origin: &str) -> String {
    let origin = origin.trim_end_matches('/');
    let rest = origin
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| origin.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| origin.to_owned());
    format!("{rest}/socket.io/?EIO=4&transport=websocket")
}

/// Test values written with `serde_json::json!`, in the client's own JSON types.
#[cfg(test)]
pub(crate) mod testing {
    use protocol::json::{self, Json, RawJson};

    pub fn raw(value: serde_json::Value) -> RawJson {
        RawJson::new(&value.to_string()).unwrap()
    }

    pub fn tree(value: serde_json::Value) -> Json {
        json::from_str(&value.to_string()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_websocket_url_follows_the_origin_scheme() {
        assert_eq!(
            super::websocket_url("http://127.0.0.1:3000"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            super::websocket_url("https://chat.example/"),
            "wss://chat.example/socket.io/?EIO=4&transport=websocket"
        );
    }
}
