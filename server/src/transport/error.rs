//! Errors a socket event can end in, and how each is told to the client: a typed ack
//! `{ error: { code, message } }`. Internal failures are logged once, here, and the client only
//! learns that the store is unavailable.

use protocol::{Ack, ErrorCode};

use crate::domain::DomainError;
use crate::refusals::{refused, Refusal};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the payload does not have the expected shape")]
    InvalidPayload,
    #[error("{0}")]
    InvalidContent(DomainError),
    #[error("{0}")]
    InvalidClientId(DomainError),
    #[error("no such user")]
    UnknownRecipient,
    #[error("no such device among yours")]
    UnknownDevice,
    #[error("no such passkey among yours")]
    UnknownPasskey,
    #[error("the cursor must be a non-negative message id")]
    InvalidCursor,
    #[error("too many requests; wait a moment and try again")]
    RateLimited,
    #[error(
        "no passkey ceremony is waiting on this connection (or it took too long); start again"
    )]
    CeremonyExpired,
    #[error("the passkey was refused")]
    PasskeyRefused,
    #[error("another account protected this name first")]
    NameTaken,
    /// The name is not this account's to protect: an older account with the same name key
    /// exists (the same wire code as [`EventError::NameTaken`], its own text).
    #[error("An older account already has this name; only it can protect it.")]
    NameOlder,
    /// The account holds the most passkeys it may ([`crate::store::PASSKEYS_PER_USER_MAX`]).
    #[error("this account has the most passkeys it may hold; remove one to add another")]
    PasskeysFull,
    #[error("passkeys are not available on this server")]
    PasskeysUnavailable,
    /// Shown to the person as it is (review finding 9): what happened and what to do.
    #[error(
        "Only a session this browser can prove is its own may add or remove a passkey. This one \
         cannot: it was made without a key this browser keeps (by another app, or in a browser \
         without IndexedDB). Sign in with a passkey here, or sign up again in a browser that keeps \
         keys."
    )]
    ProofRequired,
    #[error("the store is unavailable, try again")]
    Store(#[from] StoreError),
}

impl EventError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EventError::InvalidPayload => ErrorCode::InvalidPayload,
            EventError::InvalidContent(_) => ErrorCode::InvalidContent,
            EventError::InvalidClientId(_) => ErrorCode::InvalidClientId,
            EventError::UnknownRecipient => ErrorCode::UnknownRecipient,
            EventError::UnknownDevice => ErrorCode::UnknownDevice,
            EventError::UnknownPasskey => ErrorCode::UnknownPasskey,
            EventError::InvalidCursor => ErrorCode::InvalidCursor,
            EventError::RateLimited => ErrorCode::RateLimited,
            EventError::CeremonyExpired => ErrorCode::CeremonyExpired,
            EventError::PasskeyRefused => ErrorCode::PasskeyRefused,
            EventError::NameTaken | EventError::NameOlder => ErrorCode::NameTaken,
            EventError::PasskeysFull => ErrorCode::PasskeyRefused,
            EventError::PasskeysUnavailable => ErrorCode::PasskeysUnavailable,
            EventError::ProofRequired => ErrorCode::ProofRequired,
            EventError::Store(_) => ErrorCode::StoreUnavailable,
        }
    }

    /// The ack for this error. Store failures are logged here (their detail never leaves the
    /// server); client mistakes are counted, and logged a line per kind with its count
    /// (`crate::refusals`).
    pub fn into_ack<T>(self, event: &str) -> Ack<T> {
        match &self {
            EventError::Store(inner) => {
                tracing::error!(event, error = %format_args!("{inner:#}"), "store failure")
            }
            EventError::RateLimited => refused(Refusal::RateLimited),
            _ => refused(Refusal::InvalidRequest),
        }
        Ack::error(self.code(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_do_not_leak_their_detail() {
        let ack: Ack<()> = EventError::Store(StoreError::Unavailable(
            "disk I/O error at /secret/path".into(),
        ))
        .into_ack("test");
        let text = serde_json::to_string(&ack).unwrap();
        assert!(text.contains("store_unavailable"));
        assert!(!text.contains("/secret/path"));
    }
}
