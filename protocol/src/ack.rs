//! The typed acknowledgement every Tether event with a callback answers with:
//! `{ "ok": … }` or `{ "error": { "code", "message" } }`.

use serde::{Deserialize, Serialize};

/// Machine-readable reasons a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidPayload,
    InvalidContent,
    InvalidClientId,
    UnknownRecipient,
    InvalidCursor,
    RateLimited,
    StoreUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckError {
    pub code: ErrorCode,
    pub message: String,
}

/// `{ ok }` or `{ error }`, serialized as an externally tagged object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ack<T> {
    Ok(T),
    Error(AckError),
}

impl<T> Ack<T> {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Ack::Error(AckError {
            code,
            message: message.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ok_ack_is_an_object_with_an_ok_key() {
        let ack: Ack<u32> = Ack::Ok(7);
        assert_eq!(serde_json::to_value(ack).unwrap(), json!({ "ok": 7 }));
    }

    #[test]
    fn error_ack_carries_a_snake_case_code_and_a_message() {
        let ack: Ack<()> = Ack::error(ErrorCode::UnknownRecipient, "no such user");
        assert_eq!(
            serde_json::to_value(ack).unwrap(),
            json!({ "error": { "code": "unknown_recipient", "message": "no such user" } })
        );
    }
}
