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
mod one_at_a_time;
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
    use protocol::json::{self, RawJson};
    use protocol::HandshakeAuth;

    pub fn raw(value: serde_json::Value) -> RawJson {
        RawJson::new(&value.to_string()).unwrap()
    }

    pub fn auth(value: serde_json::Value) -> HandshakeAuth {
        json::from_str(&value.to_string()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use protocol::agreement::{read_alike, Agreement};
    use protocol::HandshakeAuth;
    use serde_json::json;

    use crate::chat::OutboxEntry;
    use crate::core::{AckFailure, StopReason};
    use crate::link::{HubToTab, SharedState, TabToHub};
    use crate::packet::OpenInfo;
    use crate::testing::raw;

    /// Every type this crate derives `Json` for is written and read as serde's derive of the
    /// same attributes writes and reads it (`protocol::agreement`).
    #[test]
    fn every_derived_type_reads_and_writes_as_serde_does() {
        let mut forms = Agreement::new();
        for state in [
            SharedState::Connecting,
            SharedState::Online { sid: "x".into() },
            SharedState::Offline { retry_in: 1500 },
            SharedState::Stopped {
                reason: StopReason::SessionActive,
            },
        ] {
            forms.check(HubToTab::State {
                state: state.clone(),
                reconnects: 2,
            });
            forms.check(state);
        }
        for reason in [
            StopReason::Unauthorized,
            StopReason::ServerDisconnect,
            StopReason::ClientDisconnect,
            StopReason::SessionActive,
        ] {
            forms.check(reason);
        }
        for reason in [AckFailure::Timeout, AckFailure::Disconnected] {
            forms.check(reason);
            forms.check(HubToTab::AckFailed { id: 5, reason });
        }
        forms
            .check(TabToHub::Connect {
                auth: HandshakeAuth::resume("s"),
            })
            .check(TabToHub::Disconnect)
            .check(TabToHub::Emit {
                event: "e".into(),
                data: raw(json!([1, "é\n"])),
            })
            .check(TabToHub::Request {
                id: 3,
                event: "history".into(),
                data: raw(json!({ "with": "u" })),
                timeout_ms: 10_000,
            })
            .check(TabToHub::Bye)
            .check(HubToTab::Connected {
                sid: "x".into(),
                reconnect: true,
            })
            .check(HubToTab::ConnectError {
                message: "invalid username".into(),
            })
            .check(HubToTab::Message {
                event: "users".into(),
                args: vec![raw(json!([])), raw(json!(null))],
            })
            .check(HubToTab::Ack {
                id: 4,
                args: vec![raw(json!({ "ok": 1 }))],
            })
            .check(OpenInfo {
                sid: "e1".into(),
                ping_interval: 25_000,
                ping_timeout: 20_000,
                max_payload: 1_000_000,
            })
            .check(crate::packet::ConnectErrorBody {
                message: "invalid username".into(),
            })
            .check(OutboxEntry {
                client_id: "c".into(),
                to: "u".into(),
                content: "hi".into(),
                created_at: 7,
                failed: Some("invalid_content".into()),
            });
        read_alike::<OpenInfo>(r#"{"sid":"e1","upgrades":[],"pingInterval":1,"pingTimeout":2}"#);
        forms.covers(&[
            include_str!("chat.rs"),
            include_str!("core.rs"),
            include_str!("hub.rs"),
            include_str!("link.rs"),
            include_str!("packet.rs"),
            include_str!("session.rs"),
        ]);
    }

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
