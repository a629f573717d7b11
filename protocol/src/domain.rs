//! Input rules, as types: each value is parsed once at the edge through one fallible
//! constructor and cannot be invalid afterwards. The browser uses the same rules for its forms.

use std::fmt;

/// Longest username, in characters, after trimming.
pub const USERNAME_MAX_CHARS: usize = 32;
/// Longest message, in characters.
pub const MESSAGE_MAX_CHARS: usize = 4000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("a username must not be empty")]
    EmptyUsername,
    #[error("a username is at most {USERNAME_MAX_CHARS} characters")]
    UsernameTooLong,
    #[error("a username must not contain control characters")]
    UsernameControlChars,
    #[error("a message must not be empty")]
    EmptyMessage,
    #[error("a message is at most {max} characters")]
    MessageTooLong { max: usize },
    #[error("a client id must be a UUID")]
    InvalidClientId,
}

/// A display name: trimmed, 1 to 32 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(DomainError::EmptyUsername);
        }
        if trimmed.chars().count() > USERNAME_MAX_CHARS {
            return Err(DomainError::UsernameTooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(DomainError::UsernameControlChars);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message body: 1 to `max` characters (the server's configured limit, at most
/// [`MESSAGE_MAX_CHARS`] by default). Whitespace-only bodies are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent(String);

impl MessageContent {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, DomainError> {
        if raw.trim().is_empty() {
            return Err(DomainError::EmptyMessage);
        }
        if raw.chars().count() > max_chars {
            return Err(DomainError::MessageTooLong { max: max_chars });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The id a client gives a message so that a resend is recognised: a UUID in its canonical
/// hyphenated lower-case form (other spellings are normalised to it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let hex: String = raw.chars().filter(|c| *c != '-').collect();
        let well_formed = raw.len() == 36
            && raw
                .char_indices()
                .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'))
            && hex.len() == 32
            && hex.chars().all(|c| c.is_ascii_hexdigit());
        if !well_formed {
            return Err(DomainError::InvalidClientId);
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_is_trimmed() {
        assert_eq!(Username::parse("  ada ").unwrap().as_str(), "ada");
    }

    #[test]
    fn blank_username_is_refused() {
        assert_eq!(Username::parse("   "), Err(DomainError::EmptyUsername));
        assert_eq!(Username::parse(""), Err(DomainError::EmptyUsername));
    }

    #[test]
    fn username_of_32_characters_is_accepted_and_33_refused() {
        assert!(Username::parse(&"é".repeat(32)).is_ok());
        assert_eq!(
            Username::parse(&"a".repeat(33)),
            Err(DomainError::UsernameTooLong)
        );
    }

    #[test]
    fn username_with_control_characters_is_refused() {
        assert_eq!(
            Username::parse("a\u{7}b"),
            Err(DomainError::UsernameControlChars)
        );
        assert_eq!(
            Username::parse("a\nb"),
            Err(DomainError::UsernameControlChars)
        );
    }

    #[test]
    fn message_must_have_visible_content() {
        assert_eq!(
            MessageContent::parse(" \n ", 10),
            Err(DomainError::EmptyMessage)
        );
        assert_eq!(MessageContent::parse(" hi ", 10).unwrap().as_str(), " hi ");
    }

    #[test]
    fn message_length_counts_characters_not_bytes() {
        assert!(MessageContent::parse(&"ü".repeat(4000), MESSAGE_MAX_CHARS).is_ok());
        assert_eq!(
            MessageContent::parse(&"a".repeat(4001), MESSAGE_MAX_CHARS),
            Err(DomainError::MessageTooLong { max: 4000 })
        );
    }

    #[test]
    fn client_id_must_be_a_hyphenated_uuid() {
        assert!(ClientMsgId::parse("0f8fad5b-d9cb-469f-a165-70867728950e").is_ok());
        assert_eq!(
            ClientMsgId::parse("0F8FAD5B-D9CB-469F-A165-70867728950E")
                .unwrap()
                .as_str(),
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        );
        for bad in [
            "",
            "not-a-uuid",
            "0f8fad5bd9cb469fa16570867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "0f8fad5b-d9cb-469f-a16-570867728950e",
        ] {
            assert_eq!(
                ClientMsgId::parse(bad),
                Err(DomainError::InvalidClientId),
                "{bad}"
            );
        }
    }
}
