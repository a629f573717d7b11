//! The account's passkeys (issue #25): `passkey_options` and `passkey_add` protect its name
//! with one, `passkeys` lists them and `passkey_remove` removes one.
//!
//! `passkey_options` starts the WebAuthn registration and answers the browser's creation
//! options; its state waits in this socket's extensions (never sent, never stored, dropped with
//! the socket) until `passkey_add` finishes it, at most `--passkey-ceremony-secs` later. One
//! start per token of the user's `--passkey-registrations-per-hour`. Adding and removing need a
//! connection that proved possession of its session's key (a copied session id must neither
//! claim the name nor give it up), and an add ends the account's sessions that are not bound
//! to a key, on every node (a protected name's sessions all prove possession); listing is a read of the viewer's own rows, priced as one.
//! A removal is a write, and takes a token of the bucket `read` marks and device revokes use
//! (`--read-marks-per-sec`). Passkeys are named on the wire by a public id derived from their
//! credential id ([`crate::identity::device::passkey_id`]).

use std::time::Instant;

use protocol::events;
use protocol::payloads::{PasskeyEntry, PasskeyList, PasskeyRemoved, RemovePasskeyRequest};
use serde::de::IgnoredAny;
use serde_json::{json, Value};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::SocketIo;

use super::logout::{close_sockets, Ended};
use super::messages::priced;
use super::overflow::Ack;
use super::{handle, object, object_or_default, price, EventError, SocketState, Viewer};
use crate::identity::device::{is_device_id, passkey_id, DeviceLabel};
use crate::identity::passkeys::{PasskeyError, PendingRegistration};
use crate::store::{
    AccountPasskeys, PasskeyInfo, Protect, RemovedPasskey, DEVICE_LABEL_MAX, PASSKEYS_PER_USER_MAX,
};

/// A passkey entry's JSON without its browser label: `{"passkeyID":"<16>","addedIn":"",
/// "added":…,"lastUsed":…}` with 19-digit numbers, and a separating comma.
const PASSKEY_FIXED: usize = 112;

/// What listing one passkey costs at most: its row, and its entry at its largest.
const PASSKEY_MOST: usize = price::STORE_ROW + PASSKEY_FIXED + 4 * DEVICE_LABEL_MAX;

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

/// The edge of `passkeys`: none, `null` or an object (its keys are ignored).
pub fn parse_list(payload: Option<Value>) -> Result<(), EventError> {
    object_or_default::<IgnoredAny>(payload).map(|_| ())
}

/// The edge of `passkey_remove`: an object whose `passkeyID` has the form of a passkey id,
/// else `invalid_payload` (nothing is read).
pub fn parse_remove(payload: Option<Value>) -> Result<String, EventError> {
    let request: RemovePasskeyRequest = object(payload)?;
    if !is_device_id(&request.passkey_id) {
        return Err(EventError::InvalidPayload);
    }
    Ok(request.passkey_id)
}

fn entry(passkey: &PasskeyInfo) -> PasskeyEntry {
    PasskeyEntry {
        passkey_id: passkey_id(&passkey.cred_id),
        added_in: passkey.added_in.clone(),
        added: passkey.added,
        last_used: passkey.last_used,
    }
}

/// What reading an account's passkeys cost: each one's row and entry.
fn list_cost(list: &AccountPasskeys) -> usize {
    list.passkeys
        .iter()
        .map(|p| price::STORE_ROW + PASSKEY_FIXED + price::json_str_bytes(&p.added_in))
        .sum()
}

/// Every read of an account's passkeys reserves for the most an account holds.
fn reserve_most(state: &SocketState) -> usize {
    (price::REQUEST_BASE + PASSKEYS_PER_USER_MAX * PASSKEY_MOST).min(state.limits.largest_read())
}

/// The viewer's passkeys, priced as a read.
async fn read_passkeys<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
) -> Result<AccountPasskeys, EventError> {
    priced(
        socket,
        state,
        viewer,
        reserve_most(state),
        list_cost,
        async { Ok(state.store.passkeys(&viewer.user_id).await?) },
    )
    .await
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
            // Refused here, before the browser makes a credential it could never use (review
            // finding 4): a full account, and a name an older account has. `protect` keeps the
            // authoritative check (the directory may change before `passkey_add`).
            if existing.len() >= PASSKEYS_PER_USER_MAX {
                return Err(EventError::PasskeysFull);
            }
            if existing.is_empty()
                && state
                    .store
                    .oldest_with_name(&viewer.username)
                    .await?
                    .is_some_and(|oldest| oldest != viewer.user_id)
            {
                return Err(EventError::NameOlder);
            }
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
    io: SocketIo<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    // The account's unbound sessions this add ended: their sockets close after the answer.
    let mut ended: Vec<String> = Vec::new();
    let mut newly_protected = false;
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
        // The browser it is added in, as its device is listed.
        let added_in = socket
            .req_parts()
            .extensions
            .get::<DeviceLabel>()
            .copied()
            .unwrap_or(DeviceLabel::UNKNOWN)
            .label();
        match state
            .store
            .protect(&viewer.user_id, passkey, &added_in)
            .await?
        {
            outcome @ (Protect::Protected | Protect::Added) => {
                tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, "passkey added");
                newly_protected = matches!(outcome, Protect::Protected);
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
                // Review finding 1c: every session of the now protected account that is not
                // bound to a key ends (a tutorial client's, one from before keys, which a copied
                // id could bind to a thief's key, or one made without a key), in one store step;
                // from now on the name's sessions all prove possession. The adding one is bound
                // (only a proving connection may add a passkey).
                ended = state.store.end_unbound(&viewer.user_id).await?;
                Ok(json!({ "protected": true }))
            }
            Protect::NameTaken => Err(EventError::NameTaken),
            Protect::Full => Err(EventError::PasskeysFull),
            // Registered already (to any account), or the account is gone.
            Protect::CredentialTaken | Protect::UnknownUser => Err(EventError::PasskeyRefused),
        }
    })
    .await;
    if !ended.is_empty() {
        tracing::info!(conn = %crate::telemetry::conn(&socket.id), ended = ended.len(), "the account's unbound sessions ended: its name is protected");
        close_sockets(&io, Ended::Sessions(ended)).await;
    }
    if newly_protected {
        if let Some(viewer) = socket.extensions.get::<Viewer>() {
            if let Err(e) = super::presence::protection_changed(&socket, &state, &viewer).await {
                tracing::warn!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %format_args!("{e:#}"), "could not tell who hears of the user that its name is protected");
            }
        }
    }
}

pub async fn passkeys<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(&socket, &state, ack, events::PASSKEYS, async |viewer| {
        parse_list(payload.ok())?;
        state
            .passkeys
            .as_ref()
            .ok_or(EventError::PasskeysUnavailable)?;
        let list = read_passkeys(&socket, &state, viewer).await?;
        Ok(PasskeyList {
            protected: list.protected,
            passkeys: list.passkeys.iter().map(entry).collect(),
        })
    })
    .await;
}

pub async fn passkey_remove<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    let mut given_up = false;
    handle(&socket, &state, ack, events::PASSKEY_REMOVE, async |viewer| {
        let wanted = parse_remove(payload.ok())?;
        state
            .passkeys
            .as_ref()
            .ok_or(EventError::PasskeysUnavailable)?;
        if !viewer.bound {
            return Err(EventError::ProofRequired);
        }
        if !state.marks.try_take(&viewer.user_id) {
            return Err(EventError::RateLimited);
        }
        // Found among the viewer's own passkeys only: another account's is unknown.
        let cred_id = read_passkeys(&socket, &state, viewer)
            .await?
            .passkeys
            .into_iter()
            .find(|p| passkey_id(&p.cred_id) == wanted)
            .map(|p| p.cred_id)
            .ok_or(EventError::UnknownPasskey)?;
        match state.store.remove_passkey(&viewer.user_id, &cred_id).await? {
            // Removed meanwhile (by another tab).
            RemovedPasskey::Unknown => Err(EventError::UnknownPasskey),
            RemovedPasskey::Removed { protected } => {
                tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, protected, "passkey removed");
                given_up = !protected;
                Ok(PasskeyRemoved { protected })
            }
        }
    })
    .await;
    // The last passkey went: the mark goes at once too, for those who hear of the account's
    // connects and in its own tabs.
    if given_up {
        if let Some(viewer) = socket.extensions.get::<Viewer>() {
            if let Err(e) = super::presence::protection_changed(&socket, &state, &viewer).await {
                tracing::warn!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %format_args!("{e:#}"), "could not tell who hears of the user that its name is no longer protected");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_takes_nothing_or_an_object_and_a_removal_names_one_passkey_id() {
        assert!(parse_list(None).is_ok());
        assert!(parse_list(Some(json!({ "x": 1 }))).is_ok());
        assert!(matches!(
            parse_list(Some(json!([]))),
            Err(EventError::InvalidPayload)
        ));
        let id = passkey_id("ab01");
        assert_eq!(parse_remove(Some(json!({ "passkeyID": id }))).unwrap(), id);
        for bad in [
            json!(null),
            json!(id),
            json!({}),
            json!({ "passkeyID": 5 }),
            json!({ "passkeyID": "" }),
            json!({ "passkeyID": "x".repeat(10_000) }),
            json!({ "passkeyID": "0123456789ABCDEF" }),
            json!({ "passkeyID": "ab01" }),
        ] {
            assert!(
                matches!(
                    parse_remove(Some(bad.clone())),
                    Err(EventError::InvalidPayload)
                ),
                "{bad}"
            );
        }
        assert!(parse_remove(None).is_err());
    }

    #[test]
    fn a_listed_passkey_is_named_by_its_public_id_and_priced_by_its_entry() {
        let passkey = PasskeyInfo {
            cred_id: "ab".repeat(32),
            added_in: "Chrome on Linux".into(),
            added: 1_764_790_000_000,
            last_used: 1_764_797_000_000,
        };
        let listed = entry(&passkey);
        assert_eq!(listed.passkey_id.len(), 16);
        assert!(!passkey.cred_id.contains(&listed.passkey_id));
        let list = AccountPasskeys {
            protected: true,
            passkeys: vec![passkey],
        };
        let wire = serde_json::to_string(&PasskeyList {
            protected: true,
            passkeys: vec![listed],
        })
        .unwrap();
        assert!(list_cost(&list) >= wire.len() - 30);
        assert!(PASSKEY_MOST * PASSKEYS_PER_USER_MAX > list_cost(&list));
    }

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
