//! Rotation and reuse detection of session secrets (issue #25 §5), decided at the handshake and,
//! for sessions that stay connected, while they are connected.
//!
//! A session (its *family*) has one current secret and any number of retired ones, digests only.
//! A connected session bound to a key whose secret is due is rotated by a node its sockets are
//! on, at its next refresh of connected sessions (at least once a minute, [`rotate_connected`]):
//! every socket of the session, on every node, is sent the new secret, so a tab left open for
//! days rotates as one that reconnects does. At a handshake:
//! - a current secret older than `--session-rotate-secs` (or marked due, issued at 0, by a
//!   sign-in from another device) is replaced: the handshake's `session` event carries the new
//!   one, and the family's other sockets, on every node, are sent it too;
//! - a retired secret within `--session-rotate-grace-secs` is accepted and replaced again (the
//!   store keeps digests only, so it cannot send the current one back); every socket of the
//!   family converges on the newest;
//! - a retired secret past the grace is *reuse*: someone holds a copy that was rotated out (a
//!   thief, or the owner after a thief). The whole session ends on every node, refused
//!   `session reused`. Only for unbound sessions: a bound one goes by its proof of possession
//!   (checked first), so a stale secret with a valid proof comes from the key holder and gets a
//!   new one, and without one it is `proof required` and nothing ends;
//! - at most `--session-rotate-reissues` rotations of one session per grace window: past it,
//!   `too many requests`, never reuse.
//!
//! Rotations race safely: [`Store::rotate_secret`] is compare-and-set, and the loser reads its
//! secret again (retired by the winner a moment ago, within the grace) and rotates once more.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use protocol::payloads::SessionInfo;
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;
use socketioxide::SocketIo;

use super::Viewer;
use crate::domain::SessionId;
use crate::store::{now_ms, Reissue, Rotate, Secret, Session, Store, StoreError};

/// When and how often secrets rotate (`--session-rotate-secs`, `--session-rotate-grace-secs`,
/// `--session-rotate-reissues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A current secret older than this is replaced at the session's next handshake, or while
    /// connected for a bound session ([`rotate_connected`]); `None`: never (rotation off;
    /// retired secrets from before are still judged by the grace).
    pub period: Option<Duration>,
    /// How long a retired secret is still accepted.
    pub grace: Duration,
    /// The most rotations of one session per grace window.
    pub reissues: u32,
}

impl Default for Rotation {
    /// The flags' defaults: a day, two minutes, 16.
    fn default() -> Self {
        Self {
            period: Some(Duration::from_secs(24 * 3600)),
            grace: Duration::from_secs(120),
            reissues: 16,
        }
    }
}

/// What a handshake does with the secret it presented.
#[derive(Debug)]
pub(super) enum Settled {
    /// Keep it: it is current and not due.
    Keep,
    /// The session's secret is this new one now.
    Rotated(SessionId),
    /// A retired secret past the grace, of an unbound session: end the session.
    Reused,
    /// A retired secret, of a session that rotated `reissues` times in the grace window
    /// already (a current one is kept instead).
    TooMany,
    /// The session ended meanwhile.
    Gone,
}

/// How many times a handshake tries again after losing a rotation race before it gives up
/// (`too many requests`): each loss means another handshake rotated the same session.
const ATTEMPTS: usize = 4;

impl Rotation {
    fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether a current secret issued at `issued_at` is due at `now`.
    pub(crate) fn due(&self, issued_at: i64, now: i64) -> bool {
        self.period
            .is_some_and(|period| now.saturating_sub(issued_at) >= Self::ms(period))
    }

    /// Whether a secret retired at `retired_at` is past the grace at `now`.
    fn stale(&self, retired_at: i64, now: i64) -> bool {
        now.saturating_sub(retired_at) > Self::ms(self.grace)
    }

    /// Whether presenting the secret `session` was found by is reuse: a retired secret past
    /// the grace, of an unbound session (a bound one got this far only with a valid proof).
    pub(super) fn reused(&self, session: &Session) -> bool {
        match session.secret {
            Secret::Retired { retired_at, .. } => {
                session.pop_key.is_none() && self.stale(retired_at, now_ms())
            }
            Secret::Current { .. } => false,
        }
    }

    /// Whether the handshake that found `session` rotates its secret ([`Rotation::settle`]):
    /// a due current secret, or a retired one.
    pub(super) fn wants(&self, session: &Session) -> bool {
        match session.secret {
            Secret::Current { issued_at } => self.due(issued_at, now_ms()),
            Secret::Retired { .. } => true,
        }
    }

    /// The cap a rotation at `now` is held to.
    fn cap(&self, now: i64) -> Reissue {
        Reissue {
            since: now.saturating_sub(Self::ms(self.grace)),
            max: self.reissues,
        }
    }

    /// Decides what the handshake presenting `presented`, which found `session`, does with it
    /// (rotating it in the store when due). A bound session got here only with a valid proof
    /// (the caller checks it first), so it is never [`Settled::Reused`].
    pub(super) async fn settle(
        &self,
        store: &dyn Store,
        presented: &SessionId,
        session: &Session,
    ) -> Result<Settled, StoreError> {
        let bound = session.pop_key.is_some();
        let mut secret = session.secret.clone();
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let expect = match &secret {
                Secret::Current { issued_at } if !self.due(*issued_at, now) => {
                    return Ok(Settled::Keep)
                }
                Secret::Current { .. } => presented.digest(),
                Secret::Retired { retired_at, .. } if self.stale(*retired_at, now) && !bound => {
                    return Ok(Settled::Reused)
                }
                Secret::Retired { current, .. } => current.clone(),
            };
            match store
                .rotate_secret(&session.family, &expect, self.cap(now))
                .await?
            {
                Rotate::Rotated(new) => return Ok(Settled::Rotated(new)),
                // A current secret stays good: it rotates at a later handshake.
                Rotate::TooMany if matches!(secret, Secret::Current { .. }) => {
                    return Ok(Settled::Keep)
                }
                Rotate::TooMany => return Ok(Settled::TooMany),
                Rotate::Gone => return Ok(Settled::Gone),
                // Another handshake rotated it first: this secret is retired now (within the
                // grace), or was retired again meanwhile. Read it again.
                Rotate::Moved => match store.find_session(presented).await? {
                    Some(again) if again.family == session.family => secret = again.secret,
                    _ => return Ok(Settled::Gone),
                },
            }
        }
        Ok(Settled::TooMany)
    }
}

impl Rotation {
    /// Rotates the session `family`, from `held`, a secret of it (current or retired):
    /// whatever its age with `always` (a change of privilege: a passkey added, issue #25 §5),
    /// else only if `held` is no longer current (another handshake rotated it meanwhile).
    /// Returns the new secret; `None` when nothing rotated: `held` is current (without
    /// `always`), the session is gone, or it rotated `reissues` times in its grace window
    /// already (it keeps its secret, which the next due rotation replaces).
    pub(crate) async fn refresh(
        &self,
        store: &dyn Store,
        family: &str,
        held: &SessionId,
        always: bool,
    ) -> Result<Option<SessionId>, StoreError> {
        for _ in 0..ATTEMPTS {
            let current = match store.find_session(held).await? {
                Some(found) if found.family == family => match found.secret {
                    Secret::Current { .. } if !always => return Ok(None),
                    Secret::Current { .. } => held.digest(),
                    Secret::Retired { current, .. } => current,
                },
                _ => return Ok(None),
            };
            match store
                .rotate_secret(family, &current, self.cap(now_ms()))
                .await?
            {
                Rotate::Rotated(new) => return Ok(Some(new)),
                Rotate::Moved => continue,
                Rotate::Gone | Rotate::TooMany => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// What [`Rotation::rotate_due`] did.
#[derive(Debug)]
enum Live {
    /// The session's current secret is this new one.
    Rotated(SessionId),
    /// Not rotated here: the current secret, issued at this time, is not due; or this node's
    /// sockets hold a secret already rotated out (by a handshake or another node, whose
    /// sockets hold the current one and rotate it when due; else its next handshake does), so
    /// this node looks again a period after this time.
    Later(i64),
    /// Nothing to do now: the session is gone (the refresh of connected sessions closes its
    /// sockets), or it rotated `reissues` times in its grace window (it rotates at a later
    /// refresh).
    Nothing,
}

impl Rotation {
    /// Rotates the bound session `family`, whose connected sockets hold `held`, if `held` is
    /// still its current secret and due. Only from the current secret: the issue time of a
    /// successor is known only to the sockets that hold it, so a node holding a rotated-out
    /// one could take a fresh successor for a due one and rotate twice in a row.
    async fn rotate_due(
        &self,
        store: &dyn Store,
        family: &str,
        held: &SessionId,
    ) -> Result<Live, StoreError> {
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let found = store
                .find_session(held)
                .await?
                .filter(|found| found.family == family && found.pop_key.is_some());
            let Some(found) = found else {
                return Ok(Live::Nothing);
            };
            match found.secret {
                Secret::Current { issued_at } if !self.due(issued_at, now) => {
                    return Ok(Live::Later(issued_at))
                }
                Secret::Current { .. } => {}
                Secret::Retired { .. } => return Ok(Live::Later(now)),
            }
            match store
                .rotate_secret(family, &held.digest(), self.cap(now))
                .await?
            {
                Rotate::Rotated(new) => return Ok(Live::Rotated(new)),
                // Rotated meanwhile (read again: retired now).
                Rotate::Moved => continue,
                Rotate::Gone | Rotate::TooMany => return Ok(Live::Nothing),
            }
        }
        Ok(Live::Nothing)
    }
}

/// The most connected sessions one refresh rotates; the rest rotate at the next (secrets are
/// due spread over the day their sessions connected in, so this bounds only a burst).
const ROTATE_BATCH: usize = 256;
/// Rotations of one refresh under way at once (each a few store round trips).
const ROTATE_CONCURRENCY: usize = 8;

/// Rotates the due secrets of the bound sessions connected to this node (touch-time rotation,
/// issue #25 §5), run with each refresh of connected sessions: a session's secret older than
/// the period, or that the store marked due (`marked_due`, from that refresh: a sign-in from
/// another device), is replaced, and every socket of it, on every node, is sent the new one
/// (`session`), so a session that stays connected for days rotates on the same schedule as one
/// that reconnects.
///
/// Only sessions bound to a key (Tether's own client): a socket can look connected for a
/// while after its network died silently (up to a heartbeat), and a `session` sent into it is
/// lost. A bound session's holder gets a new secret at its next handshake whatever it
/// presents, with its proof; an unbound one's would present a secret rotated out long ago and
/// be taken for reuse (its session ended). Unbound sessions rotate at their handshakes, where
/// the new secret is the handshake's own answer.
///
/// Sockets on several nodes race safely: [`Store::rotate_secret`] is compare-and-set, and a
/// node that finds the secret rotated elsewhere only notes when, to look again a period later.
pub(crate) async fn rotate_connected<A: Adapter>(
    io: &SocketIo<A>,
    store: &dyn Store,
    rotation: &Rotation,
    marked_due: &HashSet<String>,
) {
    use futures_util::stream::{self, StreamExt};

    if rotation.period.is_none() {
        return;
    }
    let Some(sockets) = io.of("/").map(|ns| ns.sockets()) else {
        return;
    };
    // Per session, the newest secret this node's sockets hold: a socket whose handshake
    // rotated holds a newer one than the session's other sockets here.
    let mut newest: HashMap<String, Viewer> = HashMap::new();
    for socket in &sockets {
        let Some(viewer) = socket.extensions.get::<Viewer>() else {
            continue;
        };
        if !viewer.bound {
            continue;
        }
        match newest.get(&viewer.family) {
            Some(held) if held.issued_at >= viewer.issued_at => {}
            _ => {
                newest.insert(viewer.family.clone(), viewer);
            }
        }
    }
    let now = now_ms();
    let due: Vec<Viewer> = newest
        .into_values()
        .filter(|viewer| rotation.due(viewer.issued_at, now) || marked_due.contains(&viewer.family))
        .take(ROTATE_BATCH)
        .collect();
    if due.is_empty() {
        return;
    }
    let outcomes: Vec<(String, Result<Live, StoreError>)> = stream::iter(due)
        .map(|viewer| async move {
            let outcome = rotation
                .rotate_due(store, &viewer.family, &viewer.session_id)
                .await;
            let outcome = match outcome {
                Ok(Live::Rotated(new)) => {
                    let mut rotated = viewer.clone();
                    rotated.session_id = new;
                    let room = rotated.session_room();
                    announce(io.to(room.clone()), &rotated).await;
                    Ok(Live::Rotated(
                        settle_on_newest(rotation, store, &rotated, || io.to(room.clone())).await,
                    ))
                }
                other => other,
            };
            (viewer.family, outcome)
        })
        .buffer_unordered(ROTATE_CONCURRENCY)
        .collect()
        .await;
    let mut failed = Vec::new();
    let mut noted: HashMap<String, (Option<SessionId>, i64)> = HashMap::new();
    for (family, outcome) in outcomes {
        match outcome {
            Ok(Live::Rotated(secret)) => {
                noted.insert(family, (Some(secret), now_ms()));
            }
            Ok(Live::Later(issued_at)) => {
                noted.insert(family, (None, issued_at));
            }
            Ok(Live::Nothing) => {}
            Err(e) => failed.push(e),
        }
    }
    if let Some(e) = failed.first() {
        tracing::warn!(sessions = failed.len(), error = %format_args!("{e:#}"), "rotating connected sessions failed; retrying at the next refresh");
    }
    if noted.is_empty() {
        return;
    }
    // What this node's sockets of those sessions hold now (each was sent the new secret).
    for socket in &sockets {
        let Some(mut viewer) = socket.extensions.get::<Viewer>() else {
            continue;
        };
        let Some((secret, issued_at)) = noted.get(&viewer.family) else {
            continue;
        };
        if let Some(secret) = secret {
            viewer.session_id = secret.clone();
        }
        viewer.issued_at = *issued_at;
        socket.extensions.insert(viewer);
    }
}

/// Marks a socket whose handshake rotated its session's secret: its connect handler
/// [`converge`]s the session's sockets on the newest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotated;

/// After a socket whose handshake rotated its session's secret was sent it (its own `session`):
/// sends it to the session's other sockets, then checks it is still current, and while it is
/// not (another handshake rotated meanwhile, and its announce may have reached some sockets
/// before this one's), rotates again and sends the newest to every socket of the session, this
/// one too. Every rotation is followed by such a check after its announce, so the last
/// announce any socket of the session gets is the current secret, on every node (an announce
/// is published before its check runs, so Redis orders it before any later rotation's).
/// Returns the secret this socket ends with.
pub(crate) async fn converge<A: Adapter>(
    rotation: &Rotation,
    store: &dyn Store,
    socket: &socketioxide::extract::SocketRef<A>,
    viewer: &Viewer,
) -> SessionId {
    announce(socket.to(viewer.session_room()), viewer).await;
    settle_on_newest(rotation, store, viewer, || {
        socket.within(viewer.session_room())
    })
    .await
}

/// After `viewer`'s rotation was announced: while its secret is no longer current (another
/// rotation won meanwhile), rotates again and announces the newest to every socket of the
/// session (`everyone`). Returns the secret the session ends with.
async fn settle_on_newest<A: Adapter>(
    rotation: &Rotation,
    store: &dyn Store,
    viewer: &Viewer,
    everyone: impl Fn() -> BroadcastOperators<A>,
) -> SessionId {
    let mut viewer = viewer.clone();
    for _ in 0..ATTEMPTS {
        match rotation
            .refresh(store, &viewer.family, &viewer.session_id, false)
            .await
        {
            Ok(Some(newer)) => {
                viewer.session_id = newer;
                announce(everyone(), &viewer).await;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(user.id = %viewer.user_id, error = %format_args!("{e:#}"), "could not check a rotated session is still current");
                break;
            }
        }
    }
    viewer.session_id
}

/// Sends `viewer`'s session secret (just rotated) as `session` to `to`: the session's room, on
/// every node, so every tab and device of the session converges on the newest. The secret
/// crosses the adapter (Redis pub/sub) as every message body does; no store keeps it.
pub(crate) async fn announce<A: Adapter>(to: BroadcastOperators<A>, viewer: &Viewer) {
    metrics::counter!("tether_session_rotations_total").increment(1);
    let info = SessionInfo {
        session_id: viewer.session_id.expose_secret().to_owned(),
        user_id: viewer.user_id.to_string(),
    };
    if let Err(e) = to.emit(protocol::events::SESSION, &info).await {
        tracing::warn!(user.id = %viewer.user_id, error = %e, "could not send a rotated session to its other sockets");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_and_stale_follow_the_flags_and_zero_turns_rotation_off() {
        let rotation = Rotation {
            period: Some(Duration::from_secs(10)),
            grace: Duration::from_secs(2),
            reissues: 16,
        };
        assert!(!rotation.due(1_000, 10_999));
        assert!(rotation.due(1_000, 11_000));
        assert!(
            rotation.due(0, 1_764_000_000_000),
            "marked due (issued at 0)"
        );
        assert!(!rotation.stale(1_000, 3_000), "within the grace");
        assert!(rotation.stale(1_000, 3_001));
        assert_eq!(
            rotation.cap(10_000),
            Reissue {
                since: 8_000,
                max: 16
            }
        );
        let off = Rotation {
            period: None,
            ..rotation
        };
        assert!(!off.due(0, i64::MAX));
    }
}
