//! Domain types: the input rules shared with the browser (re-exported from `protocol`) and the
//! server's own identifiers.

mod ids;

pub use ids::{SessionId, UserId};
pub use protocol::domain::{ClientMsgId, DomainError, MessageContent, Username};
