//! Tether's wire contract, defined once.
//!
//! The server, the browser client and the tests all take event names, payload types and the
//! input rules from here, so the two ends cannot drift apart. Part A of the contract (the
//! socket.io "private messaging" tutorial) is reproduced field for field; Part B's additions are
//! optional fields and extra events. See `docs/PROTOCOL.md` in the repository.

pub mod ack;
pub mod domain;
pub mod events;
pub mod json;
pub mod payloads;

pub use ack::{Ack, AckError, ErrorCode};
pub use domain::{ClientMsgId, DomainError, MessageContent, Username};
