//! Socket.IO v5 packets inside Engine.IO v4 text frames.
//!
//! The packet format is `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`; Tether uses
//! the main namespace and no binary attachments, so packets with either are refused. The JSON
//! goes through the contract's own codec (`protocol::json`), which the browser build needs
//! instead of serde (BENCHMARKS.md, "Front-end"); the server encodes with socketioxide's
//! parser, and the integration tests hold the two ends together.

use protocol::json::{self, JsonError, Reader, ToJson};
use protocol::{HandshakeAuth, Json};

pub use protocol::json::RawJson;

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

#[derive(Debug, Clone, PartialEq, Json)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct OpenInfo {
    pub sid: String,
    #[serde(rename = "pingInterval")]
    pub ping_interval: u64,
    #[serde(rename = "pingTimeout")]
    pub ping_timeout: u64,
    #[serde(rename = "maxPayload", default)]
    pub max_payload: u64,
}

/// A CONNECT_ERROR's body, `{"message": "…", "data"?: …}`; a `message` that is not a string
/// is none.
#[derive(Debug, PartialEq, Json)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct ConnectErrorBody {
    #[serde(default, with = "protocol::field::lenient")]
    pub(crate) message: String,
}

/// One argument of an event or ack, kept as the JSON text it arrived as: each consumer decodes
/// it straight into the type it expects, without building a tree first (for a 1,000-user
/// roster a tree was most of a client's CPU in a connect storm).
pub type Arg = RawJson;

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
    BadPacket(&'static str),
    #[error("malformed Socket.IO payload: {0}")]
    BadJson(#[from] JsonError),
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
        '0' => Frame::Open(json::from_str(rest).map_err(|_| DecodeError::BadOpen)?),
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
    let kind = *text
        .as_bytes()
        .first()
        .ok_or(DecodeError::BadPacket("empty packet"))?;
    if !kind.is_ascii_digit() {
        return Err(DecodeError::BadPacket("unknown packet type"));
    }
    let mut rest = &text[1..];
    if matches!(kind, b'5' | b'6') {
        return Err(DecodeError::Binary);
    }
    if rest.starts_with('/') {
        let (ns, after) = rest.split_once(',').unwrap_or((rest, ""));
        if ns != "/" {
            return Err(DecodeError::OtherNamespace);
        }
        rest = after;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = match digits {
        0 => None,
        _ => Some(
            rest[..digits]
                .parse::<i64>()
                .map_err(|_| DecodeError::BadPacket("ack id"))?,
        ),
    };
    rest = &rest[digits..];
    Ok(match kind {
        b'0' => {
            let mut sid = None;
            json::read_fields(&mut Reader::new(rest), &mut |name, r| {
                if name == "sid" {
                    sid = Some(r.string()?);
                }
                Ok(name == "sid")
            })?;
            Incoming::Connect {
                sid: sid.ok_or(DecodeError::BadPacket("connect without sid"))?,
            }
        }
        b'1' => Incoming::Disconnect,
        b'2' => {
            let mut args: Vec<Arg> = json::from_str(rest)?;
            if args.is_empty() {
                return Err(DecodeError::BadPacket("event without a name"));
            }
            let Some(event) = args.remove(0).parse::<String>() else {
                return Err(DecodeError::BadPacket("event name is not a string"));
            };
            Incoming::Event { event, args, ack }
        }
        b'3' => Incoming::Ack {
            id: ack.ok_or(DecodeError::BadPacket("ack without an id"))?,
            args: json::from_str(rest)?,
        },
        b'4' => {
            // `{"message": "...", "data"?: ...}`, or a bare string from older servers.
            let body = RawJson::new(rest)?;
            let message = body
                .parse::<String>()
                .or_else(|| body.parse::<ConnectErrorBody>().map(|b| b.message))
                .unwrap_or_default();
            Incoming::ConnectError { message }
        }
        _ => return Err(DecodeError::BadPacket("unknown packet type")),
    })
}

/// `40{auth}`: connect to the main namespace with this handshake `auth`.
pub fn connect_frame(auth: &HandshakeAuth) -> String {
    let mut frame = String::from("40");
    auth.write_json(&mut frame);
    frame
}

/// `41`: leave the namespace.
pub fn disconnect_frame() -> String {
    "41".to_owned()
}

/// `42[id]["event", data]`: one event with one argument, optionally asking for an ack.
pub fn event_frame(event: &str, data: &RawJson, ack: Option<i64>) -> String {
    let mut frame = String::from("42");
    if let Some(id) = ack {
        id.write_json(&mut frame);
    }
    frame.push('[');
    json::write_str(&mut frame, event);
    frame.push(',');
    data.write_json(&mut frame);
    frame.push(']');
    frame
}

/// `43id[data]`: answers a server's request for an ack.
pub fn ack_frame(id: i64, data: &RawJson) -> String {
    let mut frame = String::from("43");
    id.write_json(&mut frame);
    [data].write_json(&mut frame);
    frame
}

/// The Engine.IO pong that answers a ping.
pub const PONG: &str = "3";

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawJson {
        RawJson::new(text).unwrap()
    }

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
            connect_frame(&HandshakeAuth::resume("s")),
            r#"40{"sessionID":"s"}"#
        );
        assert_eq!(connect_frame(&HandshakeAuth::default()), "40{}");
    }

    #[test]
    fn events_and_acks_encode_as_the_reference_client_does() {
        assert_eq!(
            event_frame("private message", &raw(r#"{"to":"u"}"#), None),
            r#"42["private message",{"to":"u"}]"#
        );
        assert_eq!(
            event_frame("restore_state", &raw(r#"{"since":3}"#), Some(12)),
            r#"4212["restore_state",{"since":3}]"#
        );
        assert_eq!(ack_frame(5, &raw("true")), "435[true]");
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
                args: vec![raw(r#""u1""#)],
                ack: None
            })
        );
        assert_eq!(
            decode_frame(r#"437[{"ok":{"id":1,"ts":2}}]"#).unwrap(),
            Frame::Message(Incoming::Ack {
                id: 7,
                args: vec![raw(r#"{"ok":{"id":1,"ts":2}}"#)]
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
        assert!(decode_frame("43[]").is_err(), "an ack without an id");
        assert!(decode_frame("40{}").is_err(), "a connect without a sid");
        assert_eq!(
            decode_frame("451-[\"e\",{\"_placeholder\":true,\"num\":0}]"),
            Err(DecodeError::Binary)
        );
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
