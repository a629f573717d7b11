//! Socket.IO v5 packets inside Engine.IO v4 text frames.
//!
//! Encoding and decoding go through `socketioxide-parser-common`, the codec the server uses, so
//! the two ends share one implementation of the packet format. That codec is written for a
//! server: it never decodes CONNECT_ERROR (type 4, which only servers send), so that one packet
//! type is read here. Binary attachments are not used by Tether and are refused.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use socketioxide_core::packet::{Packet, PacketData};
use socketioxide_core::parser::{Parse, ParseConfig, ParserState};
use socketioxide_core::{Str, Value as CoreValue};
use socketioxide_parser_common::CommonParser;

/// An Engine.IO v4 frame, as a websocket text message carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `0{…}`: the handshake, with the heartbeat timers.
    Open(OpenInfo),
    /// `1`: the server closes the session.
    Close,
    /// `2`: heartbeat; must be answered with a pong.
    Ping,
    /// `3`.
    Pong,
    /// `4…`: a Socket.IO packet.
    Message(Incoming),
    /// `6`.
    Noop,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    pub sid: String,
    pub ping_interval: u64,
    pub ping_timeout: u64,
    #[serde(default)]
    pub max_payload: u64,
}

/// One argument of an event or ack, kept as the JSON text it arrived as: each consumer decodes
/// it straight into the type it expects, instead of building a `serde_json::Value` tree first
/// (for a 1,000-user roster that tree was most of a client's CPU in a connect storm).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Arg(Box<RawValue>);

impl Arg {
    /// Decodes the argument into `T`; `None` when it has another shape.
    pub fn parse<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.0.get()).ok()
    }

    /// The argument as a JSON value (for events without a typed payload).
    pub fn value(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }
}

impl From<Value> for Arg {
    fn from(value: Value) -> Self {
        Arg(RawValue::from_string(value.to_string()).expect("a Value serializes to valid JSON"))
    }
}

impl PartialEq for Arg {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// A Socket.IO packet from the server, on the main namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Connect {
        sid: String,
    },
    ConnectError {
        message: String,
    },
    Disconnect,
    Event {
        event: String,
        args: Vec<Arg>,
        ack: Option<i64>,
    },
    Ack {
        id: i64,
        args: Vec<Arg>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty frame")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownFrameType(char),
    #[error("malformed open packet")]
    BadOpen,
    #[error("malformed Socket.IO packet: {0}")]
    BadPacket(String),
    #[error("binary packets are not supported")]
    Binary,
    #[error("packet for another namespace")]
    OtherNamespace,
}

pub fn decode_frame(text: &str) -> Result<Frame, DecodeError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(DecodeError::Empty)?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => Frame::Open(serde_json::from_str(rest).map_err(|_| DecodeError::BadOpen)?),
        '1' => Frame::Close,
        '2' => Frame::Ping,
        '3' => Frame::Pong,
        '4' => Frame::Message(decode_packet(rest)?),
        '6' => Frame::Noop,
        other => return Err(DecodeError::UnknownFrameType(other)),
    })
}

/// Decodes the Socket.IO packet inside an Engine.IO message.
pub fn decode_packet(text: &str) -> Result<Incoming, DecodeError> {
    if let Some(rest) = text.strip_prefix('4') {
        return decode_connect_error(rest);
    }
    let packet = CommonParser
        .decode_str(
            &ParseConfig::default(),
            &ParserState::default(),
            Str::from(text.to_owned()),
        )
        .map_err(|e| DecodeError::BadPacket(e.to_string()))?;
    if &*packet.ns != "/" {
        return Err(DecodeError::OtherNamespace);
    }
    Ok(match packet.inner {
        PacketData::Connect(data) => {
            let data: Value = match data {
                Some(v) => json_of(&v)?,
                None => Value::Null,
            };
            let sid = data
                .get("sid")
                .and_then(Value::as_str)
                .ok_or_else(|| DecodeError::BadPacket("connect without sid".into()))?;
            Incoming::Connect {
                sid: sid.to_owned(),
            }
        }
        PacketData::Disconnect => Incoming::Disconnect,
        PacketData::Event(data, ack) => {
            let mut args = array_of(&data)?;
            if args.is_empty() {
                return Err(DecodeError::BadPacket("event without a name".into()));
            }
            let Some(event) = args.remove(0).parse::<String>() else {
                return Err(DecodeError::BadPacket("event name is not a string".into()));
            };
            Incoming::Event { event, args, ack }
        }
        PacketData::EventAck(data, id) => Incoming::Ack {
            id,
            args: array_of(&data)?,
        },
        PacketData::ConnectError(message) => Incoming::ConnectError { message },
        PacketData::BinaryEvent(..) | PacketData::BinaryAck(..) => return Err(DecodeError::Binary),
    })
}

fn decode_connect_error(rest: &str) -> Result<Incoming, DecodeError> {
    // `4[/nsp,]{"message": "...", "data"?: ...}`
    let (ns, body) = match rest.strip_prefix('/') {
        Some(_) => rest.split_once(',').unwrap_or((rest, "")),
        None => ("/", rest),
    };
    if ns != "/" {
        return Err(DecodeError::OtherNamespace);
    }
    let body: Value = serde_json::from_str(body)
        .map_err(|_| DecodeError::BadPacket("connect error body".into()))?;
    let message = match &body {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    Ok(Incoming::ConnectError { message })
}

fn json_of(value: &CoreValue) -> Result<Value, DecodeError> {
    let text = value.as_str().ok_or(DecodeError::Binary)?;
    serde_json::from_str(text.as_str()).map_err(|e| DecodeError::BadPacket(e.to_string()))
}

fn array_of(value: &CoreValue) -> Result<Vec<Arg>, DecodeError> {
    let text = value.as_str().ok_or(DecodeError::Binary)?;
    serde_json::from_str(text.as_str())
        .map_err(|e| DecodeError::BadPacket(format!("payload is not an array: {e}")))
}

fn frame_of(packet: PacketData) -> String {
    let encoded = CommonParser.encode(Packet {
        inner: packet,
        ns: Str::from("/"),
    });
    let text = encoded.as_str().map(|s| s.as_str()).unwrap_or_default();
    format!("4{text}")
}

fn value_of(text: String) -> CoreValue {
    CoreValue::Str(Str::from(text), None)
}

/// `40{auth}`: connect to the main namespace with this handshake `auth`.
pub fn connect_frame(auth: &Value) -> String {
    let data = (!auth.is_null()).then(|| value_of(auth.to_string()));
    frame_of(PacketData::Connect(data))
}

/// `41`: leave the namespace.
pub fn disconnect_frame() -> String {
    frame_of(PacketData::Disconnect)
}

/// `42[id]["event", data]`: one event with one argument, optionally asking for an ack.
pub fn event_frame(event: &str, data: &Value, ack: Option<i64>) -> String {
    let args = Value::Array(vec![Value::String(event.to_owned()), data.clone()]);
    frame_of(PacketData::Event(value_of(args.to_string()), ack))
}

/// `43id[data]`: answers a server's request for an ack.
pub fn ack_frame(id: i64, data: &Value) -> String {
    let args = Value::Array(vec![data.clone()]);
    frame_of(PacketData::EventAck(value_of(args.to_string()), id))
}

/// The Engine.IO pong that answers a ping.
pub const PONG: &str = "3";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_open_packet_gives_the_heartbeat_timers() {
        let frame = decode_frame(
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        )
        .unwrap();
        let Frame::Open(open) = frame else { panic!() };
        assert_eq!(open.ping_interval, 25000);
        assert_eq!(open.ping_timeout, 20000);
        assert_eq!(open.sid, "lv_VI97HAXpY6yYWAAAC");
    }

    #[test]
    fn connect_with_auth_is_40_and_the_json() {
        assert_eq!(
            connect_frame(&json!({ "sessionID": "s" })),
            r#"40{"sessionID":"s"}"#
        );
        assert_eq!(connect_frame(&Value::Null), "40");
    }

    #[test]
    fn events_and_acks_encode_as_the_reference_client_does() {
        assert_eq!(
            event_frame("private message", &json!({ "to": "u" }), None),
            r#"42["private message",{"to":"u"}]"#
        );
        assert_eq!(
            event_frame("restore_state", &json!({ "since": 3 }), Some(12)),
            r#"4212["restore_state",{"since":3}]"#
        );
        assert_eq!(ack_frame(5, &json!(true)), "435[true]");
        assert_eq!(disconnect_frame(), "41");
    }

    #[test]
    fn server_packets_decode() {
        assert_eq!(
            decode_frame(r#"40{"sid":"abc"}"#).unwrap(),
            Frame::Message(Incoming::Connect { sid: "abc".into() })
        );
        assert_eq!(
            decode_frame(r#"44{"message":"invalid username"}"#).unwrap(),
            Frame::Message(Incoming::ConnectError {
                message: "invalid username".into()
            })
        );
        assert_eq!(
            decode_frame(r#"42["user disconnected","u1"]"#).unwrap(),
            Frame::Message(Incoming::Event {
                event: "user disconnected".into(),
                args: vec![json!("u1").into()],
                ack: None
            })
        );
        assert_eq!(
            decode_frame(r#"437[{"ok":{"id":1,"ts":2}}]"#).unwrap(),
            Frame::Message(Incoming::Ack {
                id: 7,
                args: vec![json!({ "ok": { "id": 1, "ts": 2 } }).into()]
            })
        );
        assert_eq!(
            decode_frame("41").unwrap(),
            Frame::Message(Incoming::Disconnect)
        );
        assert_eq!(decode_frame("2").unwrap(), Frame::Ping);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [
            "",
            "x",
            "0",
            "0{",
            "4",
            "49",
            "42",
            "42[",
            "42[1]",
            "42{}",
            "43[]",
            "44",
            "44{",
            "4/other,0",
            "451-[\"e\",{\"_placeholder\":true,\"num\":0}]",
            "4\u{e9}",
            "42[\"é\"",
        ] {
            let _ = decode_frame(junk);
        }
        assert!(decode_frame("9").is_err());
        assert!(decode_frame("42[1]").is_err());
        assert!(decode_frame("4/admin,0{\"sid\":\"x\"}").is_err());
    }
}

#[cfg(test)]
mod fuzz {
    //! The client's packet decoder against arbitrary frames: an error or a packet, never a
    //! panic. `PROPTEST_CASES=100000 cargo test -p client fuzz_` runs it longer.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fuzz_arbitrary_frames_never_panic(frame in ".{0,200}") {
            let _ = decode_frame(&frame);
        }

        #[test]
        fn fuzz_socket_io_looking_frames_never_panic(
            kind in "[0-9]{1,3}",
            ns in prop_oneof![Just(String::new()), "/[a-z]{0,5},"],
            ack in prop_oneof![Just(String::new()), "[0-9]{1,20}"],
            body in prop_oneof![Just(String::new()), ".{0,80}", Just("[\"e\",{\"a\":1}]".to_owned()), Just("{\"sid\":1}".to_owned())],
        ) {
            let _ = decode_frame(&format!("4{kind}{ns}{ack}{body}"));
        }
    }
}
