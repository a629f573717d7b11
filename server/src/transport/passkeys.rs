//! `passkey_options` and `passkey_add` (issue #25 slice 4): a signed-in socket protects its
//! account's name with a passkey. The first event starts the WebAuthn registration and answers
//! the browser's creation options; its state waits in this socket's extensions (never sent,
//! never stored, dropped with the socket) until `passkey_add` finishes it, at most
//! `--passkey-ceremony-secs` later. One start per token of the user's
//! `--passkey-registrations-per-hour`.
//!
//! Until proof of possession lands (slice 2), any signed-in session of the account may add a
//! passkey: the design's "a bound socket only" and "ending the account's unbound sessions" wait
//! for it.

use std::time::Instant;

use protocol::events;
use serde_json::{json, Value};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::overflow::Ack;
use super::{handle, EventError, SocketState, Viewer};
use crate::identity::passkeys::{PasskeyError, PendingRegistration};
use crate::store::Protect;

/// The edge of `passkey_options`: none, `null` or an object (its keys are ignored).
pub fn parse_options(payload: Option<Value>) -> Result<(), EventError> {
    match payload {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(EventError::InvalidPayload),
    }
}

/// The edge of `passkey_add`: an object whose `credential` is an object (the browser's
/// `PublicKeyCredential.toJSON()`); what is inside is the ceremony's to judge.
pub fn parse_add(payload: Option<Value>) -> Result<Value, EventError> {
    match payload {
        Some(Value::Object(mut fields)) => match fields.remove("credential") {
            Some(credential @ Value::Object(_)) => Ok(credential),
            _ => Err(EventError::InvalidPayload),
        },
        _ => Err(EventError::InvalidPayload),
    }
}

fn ceremony_error(e: PasskeyError) -> EventError {
    match e {
        PasskeyError::Refused => EventError::PasskeyRefused,
        PasskeyError::Unavailable => EventError::PasskeysUnavailable,
    }
}

pub async fn passkey_options<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(
        &socket,
        &state,
        ack,
        events::PASSKEY_OPTIONS,
        async |viewer| {
            parse_options(payload.ok())?;
            let passkeys = state
                .passkeys
                .as_ref()
                .ok_or(EventError::PasskeysUnavailable)?;
            // Only a connection that proved it holds the session's key: a copied session id
            // must not be able to protect (claim) the name and lock its owner out (issue #25).
            if !viewer.bound {
                return Err(EventError::ProofRequired);
            }
            if !state.passkey_registrations.try_take(&viewer.user_id) {
                return Err(EventError::RateLimited);
            }
            // The account's passkeys are excluded (the authenticator says it holds one already);
            // a name another account protected cannot be this one's.
            let existing = match state.store.passkeys_by_name(&viewer.username).await? {
                Some((owner, list)) if owner.user_id == viewer.user_id => list,
                Some(_) => return Err(EventError::NameTaken),
                None => Vec::new(),
            };
            let (options, registration) = passkeys
                .start_registration(&viewer.user_id, &viewer.username, &existing)
                .map_err(ceremony_error)?;
            socket.extensions.insert(PendingRegistration {
                state: registration,
                deadline: Instant::now() + passkeys.ceremony(),
            });
            Ok(json!({ "publicKey": options }))
        },
    )
    .await;
}

pub async fn passkey_add<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(&socket, &state, ack, events::PASSKEY_ADD, async |viewer| {
        let credential = parse_add(payload.ok())?;
        let passkeys = state
            .passkeys
            .as_ref()
            .ok_or(EventError::PasskeysUnavailable)?;
        if !viewer.bound {
            return Err(EventError::ProofRequired);
        }
        // Single use: a second `passkey_add` for the same options finds none.
        let pending = socket
            .extensions
            .remove::<PendingRegistration>()
            .filter(|p| p.deadline >= Instant::now())
            .ok_or(EventError::CeremonyExpired)?;
        let passkey = passkeys
            .finish_registration(credential, &pending.state)
            .map_err(ceremony_error)?;
        match state.store.protect(&viewer.user_id, passkey).await? {
            Protect::Protected | Protect::Added => {
                tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, "passkey added");
                // A change of privilege: the session's secret rotates at once (issue #25 §5),
                // and every socket of it (this one too) is sent the new one.
                let rotated = state
                    .rotation
                    .refresh(state.store.as_ref(), &viewer.family, &viewer.session_id, true)
                    .await?;
                if let Some(secret) = rotated {
                    let viewer = Viewer::of(
                        secret,
                        viewer.family.clone(),
                        viewer.user_id.clone(),
                        viewer.username.clone(),
                    )
                    .proven();
                    super::rotation::announce(socket.within(viewer.session_room()), &viewer)
                        .await;
                    socket.extensions.insert(viewer);
                }
                Ok(json!({ "protected": true }))
            }
            Protect::NameTaken => Err(EventError::NameTaken),
            // Registered already (to any account), one too many, or the account is gone.
            Protect::CredentialTaken | Protect::Full | Protect::UnknownUser => {
                Err(EventError::PasskeyRefused)
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_take_nothing_or_an_object() {
        for ok in [None, Some(json!(null)), Some(json!({ "x": 1 }))] {
            assert!(parse_options(ok).is_ok());
        }
        for bad in [json!(1), json!("x"), json!([])] {
            assert!(matches!(
                parse_options(Some(bad)),
                Err(EventError::InvalidPayload)
            ));
        }
    }

    #[test]
    fn an_add_carries_a_credential_object() {
        let credential = json!({ "id": "abc", "response": {} });
        assert_eq!(
            parse_add(Some(json!({ "credential": credential.clone() }))).unwrap(),
            credential
        );
        for bad in [
            None,
            Some(json!(null)),
            Some(json!({})),
            Some(json!({ "credential": "abc" })),
            Some(json!({ "credential": [1] })),
            Some(json!([{ "credential": {} }])),
        ] {
            assert!(matches!(parse_add(bad), Err(EventError::InvalidPayload)));
        }
    }
}
