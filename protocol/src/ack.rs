//! The typed acknowledgement every Tether event with a callback answers with:
//! `{ "ok": … }` or `{ "error": { "code", "message" } }`.

use serde::{Deserialize, Serialize};

use crate::json::{self, required, FromJson, JsonError, Reader, ToJson};

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

impl ErrorCode {
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::InvalidPayload,
        ErrorCode::InvalidContent,
        ErrorCode::InvalidClientId,
        ErrorCode::UnknownRecipient,
        ErrorCode::InvalidCursor,
        ErrorCode::RateLimited,
        ErrorCode::StoreUnavailable,
    ];

    /// The code as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::InvalidContent => "invalid_content",
            ErrorCode::InvalidClientId => "invalid_client_id",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StoreUnavailable => "store_unavailable",
        }
    }
}

// The client's codec (`crate::json`), as the serde attributes above spell it; see the test
// `client_codec_agrees_with_serde`.

impl FromJson for ErrorCode {
    fn read_json(r: &mut Reader<'_>) -> json::Result<Self> {
        let at = r.position();
        let name = r.str()?;
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == name)
            .ok_or(JsonError::Expected {
                expected: "an error code",
                at,
            })
    }
}

impl ToJson for ErrorCode {
    fn write_json(&self, out: &mut String) {
        self.as_str().write_json(out);
    }
}

crate::from_json_fields!(AckError { "code" => code, "message" => message } => AckError {
    code: required(code, "code")?,
    message: required(message, "message")?,
});

impl ToJson for AckError {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("code", &self.code).field("message", &self.message);
        });
    }
}

/// Exactly one key, `ok` or `error`, as serde reads an externally tagged enum.
impl<T: FromJson> FromJson for Ack<T> {
    fn read_json(r: &mut Reader<'_>) -> json::Result<Self> {
        let at = r.position();
        let mut ack = None;
        r.object(&mut |name, r| {
            if ack.is_some() {
                return Err(JsonError::Expected {
                    expected: "one key",
                    at,
                });
            }
            ack = Some(match name {
                "ok" => Ack::Ok(T::read_json(r)?),
                "error" => Ack::Error(AckError::read_json(r)?),
                _ => {
                    return Err(JsonError::Expected {
                        expected: "`ok` or `error`",
                        at,
                    })
                }
            });
            Ok(())
        })?;
        required(ack, "ok")
    }
}

impl<T: ToJson> ToJson for Ack<T> {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            match self {
                Ack::Ok(value) => o.field("ok", value),
                Ack::Error(error) => o.field("error", error),
            };
        });
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
