//! Handshake per PROTOCOL.md Part A: resume by `sessionID`, else create by `username`, else
//! refuse with exactly `invalid username`.

use protocol::HandshakeAuth;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::SocketIo;

use super::logout::{close_sockets, Ended};
use super::rotation::Settled;
use super::signup::{ClientAddr, SignupRefusal};
use super::{SocketState, Viewer};
use crate::config::TabPolicy;
use crate::domain::{SessionId, Username};
use crate::identity::device::DeviceLabel;
use crate::refusals::{refused, Refusal};
use crate::store::{Bind, Created, PopKey, Secret, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{}", protocol::events::INVALID_USERNAME)]
    InvalidUsername,
    #[error("too many connections")]
    TooManySockets,
    #[error("{}", protocol::events::SESSION_ALREADY_ACTIVE)]
    SessionActive,
    #[error("{}", protocol::events::NAME_PROTECTED)]
    NameProtected,
    #[error("{}", protocol::events::PROOF_REQUIRED)]
    ProofRequired,
    #[error("{}", protocol::events::SESSION_REUSED)]
    SessionReused,
    /// The session's secret rotated `--session-rotate-reissues` times in its grace window.
    #[error("{}", protocol::events::TOO_MANY_REQUESTS)]
    TooManyReissues,
    #[error("{}", protocol::events::TOO_MANY_SIGNUPS)]
    TooManySignups(super::signup::SignupRefusal),
    #[error("{}", protocol::events::TOO_MANY_REQUESTS)]
    Barred,
    #[error("server unavailable")]
    Store(#[from] StoreError),
}

/// Connect middleware: attaches a [`Viewer`] to the socket or refuses the connection.
pub async fn authenticate<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    TryData(auth): TryData<Value>,
    State(state): State<SocketState>,
) -> Result<(), HandshakeError> {
    let auth = read_auth(auth.ok());
    let client = socket.req_parts().extensions.get::<ClientAddr>().copied();
    // A session whose socket was just disconnected for flooding waits out its cooldown; this
    // is checked before anything reaches the store.
    let barred = claimed_session(&auth).is_some_and(|s| state.penalties.is_barred(&s.digest()));
    let result = if barred {
        Err(HandshakeError::Barred)
    } else {
        // The browser this socket was opened in (from its `User-Agent`, taken by the
        // request-head copy): a new session records it as its device's label.
        let device = socket
            .req_parts()
            .extensions
            .get::<DeviceLabel>()
            .copied()
            .unwrap_or(DeviceLabel::UNKNOWN);
        // The challenge a proof of possession signs: this connection's Engine.IO sid, fresh and
        // server-chosen, sent in OPEN before the client's CONNECT (socketioxide names the
        // socket after it; `the_proof_challenge_is_the_engine_sid` guards that).
        let sid = socket.id.to_string();
        admit(&socket, &io, &auth, &state, client, device, &sid).await
    };
    match &result {
        Ok((viewer, _)) => {
            tracing::debug!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, "handshake accepted")
        }
        // Refusals are counted, and logged a line per kind with its count (`crate::refusals`).
        Err(HandshakeError::InvalidUsername) => refused(Refusal::InvalidUsername),
        Err(HandshakeError::NameProtected) => refused(Refusal::NameProtected),
        Err(HandshakeError::ProofRequired) => refused(Refusal::ProofRequired),
        Err(HandshakeError::SessionReused) => refused(Refusal::SessionReused),
        Err(HandshakeError::TooManyReissues) => refused(Refusal::Reissues),
        Err(HandshakeError::SessionActive) => refused(Refusal::SessionActive),
        Err(HandshakeError::TooManySockets) => refused(Refusal::TooManySockets),
        Err(HandshakeError::TooManySignups(SignupRefusal::Address)) => {
            refused(Refusal::SignupAddress)
        }
        Err(HandshakeError::TooManySignups(SignupRefusal::Overall)) => {
            refused(Refusal::SignupOverall)
        }
        Err(HandshakeError::Barred) => refused(Refusal::Cooldown),
        Err(HandshakeError::Store(e)) => {
            tracing::error!(conn = %crate::telemetry::conn(&socket.id), error = %format_args!("{e:#}"), "handshake failed on the store")
        }
    }
    let (viewer, rotated) = result?;
    // In the session's room from here on, before the connect handler's first await: a logout
    // or an expiry that disconnects the room from now on reaches this socket too.
    socket.join(viewer.session_room());
    if rotated {
        // The connect handler sends it to this socket and the session's others.
        socket.extensions.insert(super::rotation::Rotated);
    }
    socket.extensions.insert(viewer);
    socket.extensions.insert(state.reads.socket_bucket());
    if let Some(held) = HeldThrough::from_auth(&auth) {
        socket.extensions.insert(held);
    }
    // Event handlers are registered here, not in the connect handler: socketioxide sends the
    // CONNECT packet right after this middleware and only then spawns the connect handler, so
    // a client's first event (its `restore_state`, or a queued message) can arrive before that
    // handler has run, and an event without a handler is silently dropped. Measured: under a
    // connect storm ~1 % of clients lost their first request and waited out the 10 s ack
    // timeout.
    super::connection::register_event_handlers(&socket);
    Ok(())
}

/// Who the handshake is ([`resolve`]) and whether it may connect: the user's read debt, its
/// socket limit and the tab policy. Only then does a due or rotated-out secret rotate (`true`):
/// a handshake refused for any of those must not leave its client holding a secret it was
/// never sent the successor of.
async fn admit<A: Adapter>(
    socket: &SocketRef<A>,
    io: &SocketIo<A>,
    auth: &HandshakeAuth,
    state: &SocketState,
    client: Option<ClientAddr>,
    device: DeviceLabel,
    sid: &str,
) -> Result<(Viewer, bool), HandshakeError> {
    let (mut viewer, pending) = resolve(auth, state, io, client, device, sid).await?;
    // What a connect's roster costs is charged after it is sent: a client that reconnects in a
    // loop ends up owing reads, and waits until it has paid.
    if state.reads.in_debt(&viewer.user_id) {
        return Err(HandshakeError::Barred);
    }
    // The usual case gets a clear refusal here; handshakes racing past this check are closed
    // by the connect handler, which counts atomically (`connection::on_connect`).
    if state.store.socket_count(&viewer.user_id).await? >= state.limits.max_sockets_per_user {
        return Err(HandshakeError::TooManySockets);
    }
    if state.limits.tab_policy == TabPolicy::Reject {
        enforce_single_tab(socket, &viewer, auth.takeover).await?;
    }
    let Some(session) = pending else {
        return Ok((viewer, false));
    };
    match state
        .rotation
        .settle(state.store.as_ref(), &viewer.session_id, &session)
        .await?
    {
        Settled::Keep => Ok((viewer, false)),
        Settled::Rotated(new) => {
            viewer.session_id = new;
            viewer.issued_at = crate::store::now_ms();
            Ok((viewer, true))
        }
        // Ended since it was found: as an unknown session.
        Settled::Gone => Err(HandshakeError::InvalidUsername),
        Settled::TooMany => Err(HandshakeError::TooManyReissues),
        // (Its grace ran out while this handshake waited.)
        Settled::Reused => Err(end_reused(state, io, &session).await),
    }
}

/// A rotated-out secret of an unbound session, after its grace: whoever presents it, the
/// thief or the owner, the other's copy must die too. The whole session ends, on every node.
async fn end_reused<A: Adapter>(
    state: &SocketState,
    io: &SocketIo<A>,
    session: &crate::store::Session,
) -> HandshakeError {
    if let Err(e) = state
        .store
        .end_family(&session.user_id, &session.family)
        .await
    {
        return HandshakeError::Store(e);
    }
    close_sockets(io, Ended::Sessions(vec![session.family.clone()])).await;
    metrics::counter!("tether_session_reuse_total").increment(1);
    tracing::warn!(user.id = %session.user_id, "a rotated-out session secret was presented again: session ended");
    HandshakeError::SessionReused
}

/// `auth.since`: the newest message id a resuming client already holds, so its roster need
/// carry only newer messages (PROTOCOL.md, "Roster"). Anything but a positive integer is
/// ignored, and the roster is the tutorial's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeldThrough(pub i64);

impl HeldThrough {
    fn from_auth(auth: &HandshakeAuth) -> Option<Self> {
        auth.since.filter(|since| *since > 0).map(Self)
    }
}

/// Under the `reject` policy: refuse a second connection of a session, or, when it asks to take
/// over, tell the session's other sockets it moved and end them.
async fn enforce_single_tab<A: Adapter>(
    socket: &SocketRef<A>,
    viewer: &Viewer,
    takeover: bool,
) -> Result<(), HandshakeError> {
    let others = socket.within(viewer.session_room());
    // fetch_sockets asks every node, so the policy holds across a cluster too.
    let active = others
        .clone()
        .fetch_sockets()
        .await
        .map(|s| s.len())
        .unwrap_or(0);
    if active == 0 {
        return Ok(());
    }
    if !takeover {
        return Err(HandshakeError::SessionActive);
    }
    tracing::info!(user.id = %viewer.user_id, replaced = active, "session taken over by a new tab");
    let _ = others
        .clone()
        .emit(protocol::events::SESSION_MOVED, &())
        .await;
    let _ = others.disconnect().await;
    Ok(())
}

/// The session `auth` resumes, else a new account for `auth.username` (a sign-up, limited per
/// `client` address and overall: a refused one creates nothing). `sid` is the connection's
/// Engine.IO sid, the challenge a proof of possession signs. A resumed session whose secret is
/// due or rotated out comes with it ([`admit`] rotates it once the handshake is admitted).
async fn resolve<A: Adapter>(
    auth: &HandshakeAuth,
    state: &SocketState,
    io: &SocketIo<A>,
    client: Option<ClientAddr>,
    device: DeviceLabel,
    sid: &str,
) -> Result<(Viewer, Option<crate::store::Session>), HandshakeError> {
    // Lenient: a sessionID that is not a string is treated as absent, never as a parse error.
    let claimed = claimed_session(auth);
    if let Some(session_id) = claimed {
        if let Some(session) = state.store.find_session(&session_id).await? {
            if let Some(viewer) = resume(auth, state, io, sid, session_id, session).await? {
                return Ok(viewer);
            }
        }
    }
    // A name of invisible characters only (its name key is empty) reads as no name at all.
    let username = auth
        .username
        .as_deref()
        .and_then(|raw| Username::parse(raw).ok())
        .filter(|name| !crate::store::name_key(name.as_str()).is_empty())
        .ok_or(HandshakeError::InvalidUsername)?;
    // A sign-up that offers a key must prove it, else nothing is created.
    let bind = match possession(auth, sid, None) {
        Possession::Binds(key) => Some(key),
        Possession::Unbound | Possession::Proven => None,
        Possession::Refused => return Err(HandshakeError::ProofRequired),
    };
    if let Err(limit) = state.signups.try_admit(client) {
        metrics::counter!("tether_signups_refused_total", "limit" => limit.as_str()).increment(1);
        return Err(HandshakeError::TooManySignups(limit));
    }
    // A name a passkey protects is its account's alone (issue #25): the store checks it in the
    // same step as the insert, after the limiter took its token.
    // Bound at birth, in the same write, to the key it proved; else unbound for good.
    let Created::Session(session_id, session) = state
        .store
        .create_session(&username, &device.label(), bind.as_ref())
        .await?
    else {
        return Err(HandshakeError::NameProtected);
    };
    let mut viewer = Viewer::new(session_id, session.user_id, session.username);
    if bind.is_some() {
        viewer = viewer.proven();
    }
    tracing::info!(user.id = %viewer.user_id, bound = bind.is_some(), "new session");
    Ok((viewer, None))
}

/// A handshake resuming `session`, found by the secret `presented`: its proof of possession
/// first, then reuse detection (`super::rotation`), then binding. Returns the viewer (holding
/// `presented`) and, when its secret is to rotate, the session. `None` when the session ended
/// meanwhile (as if it had not been found).
async fn resume<A: Adapter>(
    auth: &HandshakeAuth,
    state: &SocketState,
    io: &SocketIo<A>,
    sid: &str,
    presented: SessionId,
    session: crate::store::Session,
) -> Result<Option<(Viewer, Option<crate::store::Session>)>, HandshakeError> {
    let proof = possession(auth, sid, session.pop_key.as_ref());
    if proof == Possession::Refused {
        // Neither the session nor the user's other sessions are touched: a thief holding a
        // copied id (current or rotated out) must not be able to sign its owner out.
        state.penalties.proof_failed(&presented.digest());
        return Err(HandshakeError::ProofRequired);
    }
    if state.rotation.reused(&session) {
        return Err(end_reused(state, io, &session).await);
    }
    // A retired secret rotates below (its successor was issued when it was retired).
    let issued_at = match session.secret {
        Secret::Current { issued_at } => issued_at,
        Secret::Retired { retired_at, .. } => retired_at,
    };
    let viewer = Viewer::of(
        presented,
        session.family.clone(),
        session.user_id.clone(),
        session.username.clone(),
    )
    .issued(issued_at);
    let viewer = match proof {
        Possession::Proven => viewer.proven(),
        Possession::Unbound => viewer,
        // (Answered above, before anything was written.)
        Possession::Refused => return Err(HandshakeError::ProofRequired),
        // Trust on first use, for a session from before keys only: it is bound to the key that
        // proved it. A session made since without a key stays unbound (the store says
        // `Never`): the key offered is not trusted with it, since whoever holds a copy of its
        // id could offer one.
        Possession::Binds(key) => match state.store.bind_key(&viewer.family, &key).await? {
            Bind::Bound | Bind::AlreadyThis => {
                tracing::info!(user.id = %viewer.user_id, "session bound to a key");
                viewer.proven()
            }
            Bind::Never => viewer,
            Bind::OtherKey => {
                state.penalties.proof_failed(&viewer.session_id.digest());
                return Err(HandshakeError::ProofRequired);
            }
            // Ended since it was found: as if it had not been.
            Bind::Gone => return Ok(None),
        },
    };
    let pending = state.rotation.wants(&session).then_some(session);
    Ok(Some((viewer, pending)))
}

/// What a handshake's `pop`/`popKey` say about the session it names.
#[derive(Debug, PartialEq, Eq)]
enum Possession {
    /// The session is bound and `pop` signs this connection's sid with its key.
    Proven,
    /// Unbound, and no key offered: a tutorial client, as before.
    Unbound,
    /// Unbound, and `popKey` with a valid `pop` for it: bind it to this key.
    Binds(PopKey),
    /// Bound without a valid proof, or a key offered without a valid proof of it.
    Refused,
}

/// Checks the proof against the session's key (`bound`), or against `popKey` when unbound. At
/// most one P-256 verification, and only for a session that exists (or a sign-up).
fn possession(auth: &HandshakeAuth, sid: &str, bound: Option<&PopKey>) -> Possession {
    let pop = auth.pop.as_deref();
    match bound {
        Some(key) => match pop {
            Some(pop) if key.verifies(sid, pop) => Possession::Proven,
            _ => Possession::Refused,
        },
        None => {
            let Some(offered) = auth.pop_key.as_deref() else {
                return Possession::Unbound;
            };
            match (PopKey::from_wire(offered), pop) {
                (Some(key), Some(pop)) if key.verifies(sid, pop) => Possession::Binds(key),
                _ => Possession::Refused,
            }
        }
    }
}

/// `auth.sessionID`, read leniently: a value that is not a well-formed session id is absent.
fn claimed_session(auth: &HandshakeAuth) -> Option<SessionId> {
    auth.session_id.as_deref().and_then(SessionId::from_client)
}

/// The handshake's `auth` as [`HandshakeAuth`] reads it, each key leniently; anything but an
/// object (none, a string, an array) has no keys. Read from the parsed value rather than the
/// text, so that a repeated key keeps its last value, as it always has.
fn read_auth(auth: Option<Value>) -> HandshakeAuth {
    auth.filter(Value::is_object)
        .and_then(|auth| serde_json::from_value(auth).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_positive_integer_since_shortens_the_roster() {
        let held = |auth: Value| HeldThrough::from_auth(&read_auth(Some(auth)));
        assert_eq!(
            held(json!({ "sessionID": "s", "since": 42 })),
            Some(HeldThrough(42))
        );
        for ignored in [
            json!({ "sessionID": "s" }),
            json!({ "since": 0 }),
            json!({ "since": -3 }),
            json!({ "since": 4.5 }),
            json!({ "since": "42" }),
            json!({ "since": null }),
            json!({ "since": u64::MAX }),
            Value::Null,
        ] {
            assert_eq!(held(ignored.clone()), None, "{ignored}");
        }
    }

    #[test]
    fn auth_keys_of_another_type_are_absent_and_only_an_object_has_keys() {
        assert_eq!(
            read_auth(Some(json!({
                "sessionID": 5, "username": "ada", "since": "42", "takeover": "yes", "x": [1]
            }))),
            HandshakeAuth::sign_up("ada")
        );
        for not_an_object in [json!(["s", "ada"]), json!("s"), json!(3), Value::Null] {
            assert_eq!(read_auth(Some(not_an_object)), HandshakeAuth::default());
        }
        assert_eq!(read_auth(None), HandshakeAuth::default());
        let repeated = serde_json::from_str(r#"{"sessionID":"a","sessionID":"b"}"#).unwrap();
        assert_eq!(read_auth(Some(repeated)), HandshakeAuth::resume("b"));
    }
}
