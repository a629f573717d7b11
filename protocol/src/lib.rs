//! Tether's wire contract, defined once.
//!
//! The server, the browser client and the tests all take event names, payload types and the
//! input rules from here, so the two ends cannot drift apart. Part A of the contract (the
//! socket.io "private messaging" tutorial) is reproduced field for field; Part B's additions are
//! optional fields and extra events. See `docs/PROTOCOL.md` in the repository.
//!
//! Each wire type is declared once, with `#[derive(Serialize, Deserialize, Json)]`: serde gives
//! the server's form and [`Json`] the browser's small codec ([`json`]), both from the same
//! `#[serde(...)]` attributes.

// `derive(Json)` names this crate `::protocol`, here as everywhere else.
extern crate self as protocol;

pub mod ack;
#[cfg(any(test, feature = "testing"))]
pub mod agreement;
pub mod domain;
pub mod events;
pub mod field;
pub mod json;
pub mod payloads;

pub use ack::{Ack, AckError, ErrorCode};
pub use domain::{ClientMsgId, DomainError, MessageContent, Username};
pub use payloads::{pop_challenge, HandshakeAuth};
/// The browser codec of a wire type, from its `#[serde]` attributes (`protocol/derive`).
///
/// ```
/// use protocol::{json, Json};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize, Json)]
/// struct Point {
///     x: i64,
///     #[serde(rename = "label", default, skip_serializing_if = "Option::is_none")]
///     name: Option<String>,
/// }
/// let p: Point = json::from_str(r#"{"z":[],"x":3}"#).unwrap();
/// assert_eq!(p, Point { x: 3, name: None });
/// assert_eq!(json::to_string(&p), serde_json::to_string(&p).unwrap());
/// ```
///
/// A serde attribute it does not read is a compile error, not a silent disagreement:
///
/// ```compile_fail
/// #[derive(protocol::Json)]
/// struct Wrapped {
///     #[serde(flatten)]
///     inner: std::collections::BTreeMap<String, i64>,
/// }
/// ```
///
/// ```compile_fail
/// #[derive(protocol::Json)]
/// #[serde(tag = "type")]
/// enum Tagged {
///     A { x: i64 },
/// }
/// ```
pub use protocol_derive::Json;
