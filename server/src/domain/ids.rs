use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A user's public address (the tutorial's `userID`): a UUID v4 from the OS CSPRNG.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn random() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    /// Accepts only the canonical form the server hands out, so a lookup with anything else
    /// is known to miss without asking the store.
    pub fn parse(raw: &str) -> Option<Self> {
        let uuid = Uuid::try_parse(raw).ok()?;
        let canonical = uuid.to_string();
        (canonical == raw).then_some(Self(canonical))
    }

    /// Wraps a value read back from the store, which only ever holds canonical ids.
    pub(crate) fn from_store(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The private bearer secret of a session (the tutorial's `sessionID`).
///
/// It deliberately implements neither `Display` nor `Serialize`, and its `Debug` is redacted,
/// so it cannot slip into a log line or another user's payload. The store keeps only its
/// SHA-256 digest ([`SessionId::digest`]); the plain value exists once, in the `session` event
/// to its owner.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    pub fn random() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    /// Lenient: any string is a candidate to look up (an unknown one simply finds nothing).
    pub fn from_client(raw: &str) -> Option<Self> {
        (!raw.is_empty() && raw.len() <= 128).then(|| Self(raw.to_owned()))
    }

    /// The value to hand to the session's owner, and nobody else.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the secret: what the store keeps and looks up by.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_canonical_uuids_and_differ() {
        let (a, b) = (UserId::random(), UserId::random());
        assert_ne!(a, b);
        assert_eq!(UserId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn user_id_parse_refuses_other_spellings() {
        let id = UserId::random();
        assert_eq!(UserId::parse(&id.as_str().to_uppercase()), None);
        assert_eq!(UserId::parse("bob"), None);
        assert_eq!(UserId::parse(""), None);
    }

    #[test]
    fn session_id_debug_never_shows_the_secret() {
        let id = SessionId::random();
        let shown = format!("{id:?}");
        assert!(!shown.contains(id.expose_secret()));
    }

    #[test]
    fn session_digest_is_stable_and_not_the_secret() {
        let id = SessionId::from_client("abc").unwrap();
        assert_eq!(id.digest(), SessionId::from_client("abc").unwrap().digest());
        assert_ne!(id.digest(), "abc");
        assert_eq!(id.digest().len(), 64);
    }

    #[test]
    fn empty_or_huge_session_ids_are_not_looked_up() {
        assert!(SessionId::from_client("").is_none());
        assert!(SessionId::from_client(&"x".repeat(129)).is_none());
    }
}
