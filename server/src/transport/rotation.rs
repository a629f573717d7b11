//! Rotation and reuse detection of session secrets (issue #25 §5), decided at the handshake.
//!
//! A session (its *family*) has one current secret and any number of retired ones, digests only.
//! At a handshake:
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

use std::time::Duration;

use protocol::payloads::SessionInfo;
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;

use super::Viewer;
use crate::domain::SessionId;
use crate::store::{now_ms, Reissue, Rotate, Secret, Session, Store, StoreError};

/// When and how often secrets rotate (`--session-rotate-secs`, `--session-rotate-grace-secs`,
/// `--session-rotate-reissues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A current secret older than this is replaced at the session's next handshake; `None`:
    /// never (rotation off; retired secrets from before are still judged by the grace).
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
    fn due(&self, issued_at: i64, now: i64) -> bool {
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
    let mut viewer = viewer.clone();
    for _ in 0..ATTEMPTS {
        match rotation
            .refresh(store, &viewer.family, &viewer.session_id, false)
            .await
        {
            Ok(Some(newer)) => {
                viewer.session_id = newer;
                announce(socket.within(viewer.session_room()), &viewer).await;
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
