//! The typed acknowledgement every Tether event with a callback answers with:
//! `{ "ok": … }` or `{ "error": { "code", "message" } }`.

use serde::{Deserialize, Serialize};

use crate::Json;

/// Machine-readable reasons a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Json)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidPayload,
    InvalidContent,
    InvalidClientId,
    UnknownRecipient,
    InvalidCursor,
    RateLimited,
    StoreUnavailable,
    UnknownDevice,
    CeremonyExpired,
    PasskeyRefused,
    NameTaken,
    PasskeysUnavailable,
    ProofRequired,
    UnknownPasskey,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct AckError {
    pub code: ErrorCode,
    pub message: String,
}

/// `{ ok }` or `{ error }`, serialized as an externally tagged object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Json)]
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

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidPayload,
        ErrorCode::InvalidContent,
        ErrorCode::InvalidClientId,
        ErrorCode::UnknownRecipient,
        ErrorCode::InvalidCursor,
        ErrorCode::RateLimited,
        ErrorCode::StoreUnavailable,
        ErrorCode::UnknownDevice,
        ErrorCode::CeremonyExpired,
        ErrorCode::PasskeyRefused,
        ErrorCode::NameTaken,
        ErrorCode::PasskeysUnavailable,
        ErrorCode::ProofRequired,
        ErrorCode::UnknownPasskey,
    ];

    /// The code as the wire spells it (a test checks this against the derived forms).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::InvalidContent => "invalid_content",
            ErrorCode::InvalidClientId => "invalid_client_id",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::UnknownDevice => "unknown_device",
            ErrorCode::CeremonyExpired => "ceremony_expired",
            ErrorCode::PasskeyRefused => "passkey_refused",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::PasskeysUnavailable => "passkeys_unavailable",
            ErrorCode::ProofRequired => "proof_required",
            ErrorCode::UnknownPasskey => "unknown_passkey",
        }
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

    #[test]
    fn each_code_is_named_as_both_forms_name_it() {
        for code in ErrorCode::ALL {
            let quoted = format!("\"{}\"", code.as_str());
            assert_eq!(serde_json::to_string(&code).unwrap(), quoted);
            assert_eq!(crate::json::to_string(&code), quoted);
        }
    }
}
