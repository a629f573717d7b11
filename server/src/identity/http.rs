//! Passkey sign-in over HTTP (issue #25 slice 4): a browser without a session gets its account
//! back, on any device, by name and passkey.
//!
//! ```text
//! POST /api/passkey/options {"username":"ada"}
//!   200 {"ceremony":"<32 hex>","publicKey":{…request options…}}
//! POST /api/passkey/signin  {"ceremony":"…","credential":{…PublicKeyCredential.toJSON()…},
//!                           "popKey":"…","pop":"…"}
//!   200 {"sessionID":"…","userID":"…","username":"ada"}   (the shape of the `session` event)
//! ```
//!
//! `popKey` and `pop` are optional: with them the new session is bound from birth to that key
//! (`pop` signs `tether-pop-1:signin:<ceremony>`, see [`protocol::events::SIGN_IN_POP_PREFIX`]);
//! without them it is unbound for good, and cannot add or remove passkeys.
//!
//! Errors are `{"error":{"code","message"}}`: `invalid_payload` 400, `passkey_refused` 401,
//! `proof_required` 401 (a `pop` that does not verify; the ceremony is not used up),
//! `unknown_name` 404, `passkeys_unavailable` 404, `too_many_sessions` 409, `ceremony_expired`
//! 410, `payload_too_large` 413, `rate_limited` 429 (with `Retry-After`: the limiter's own
//! wait), `store_unavailable` 503. Every answer is `Cache-Control: no-store`.
//!
//! **Costs.** Each request takes a token of the per-address and overall buckets
//! (`--passkey-ceremonies-per-ip-per-min` …) once its body has the right shape and before the
//! store is asked anything, so a sign-in (a start and a finish) takes two. A start is then one
//! store read (the account's passkeys) and one write (its state, ~1 KB, kept
//! `--passkey-ceremony-secs`); a finish one single-use take, one read, one signature check,
//! one session write. A ceremony id is exactly 32 lowercase hex digits, as the server draws
//! them: any other is refused `invalid_payload` without a token or a store access. Bodies are
//! read up to [`BODY_MAX`] bytes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde_json::{json, Value};

use super::device::DeviceLabel;
use super::passkeys::{PasskeyError, Passkeys};
use super::pop::PopKey;
use crate::domain::Username;
use crate::refusals::{refused, Refusal};
use crate::store::{NewDevice, Store, StoreError};
use crate::transport::signup::{ClientAddr, SignupLimiter};

/// The largest body read: a sign-in assertion is 1–2 KB.
pub const BODY_MAX: usize = 16 * 1024;

/// A ceremony id as this server draws them: 32 lowercase hex digits (a v4 UUID, simple form).
/// Anything else is refused at the edge, before a token is taken or the store is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CeremonyId(String);

impl CeremonyId {
    const LEN: usize = 32;

    /// A new random id.
    fn random() -> Self {
        CeremonyId(uuid::Uuid::new_v4().simple().to_string())
    }

    fn parse(raw: &str) -> Option<Self> {
        (raw.len() == Self::LEN && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| CeremonyId(raw.to_owned()))
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a request is for these routes (the Origin check and the client address apply).
pub fn is_api_path(path: &str) -> bool {
    path.starts_with("/api/")
}

/// What the routes share.
#[derive(Clone)]
pub struct PasskeyRoutes {
    pub store: Arc<dyn Store>,
    /// `None`: passkeys are off (no domain to be the relying party).
    pub passkeys: Option<Arc<Passkeys>>,
    /// Ceremonies per client address and overall.
    pub limiter: Arc<SignupLimiter>,
    /// `--max-sessions-per-user`: a sign-in past it makes no session.
    pub max_sessions_per_user: u32,
}

pub fn router(state: PasskeyRoutes) -> Router {
    Router::new()
        .route("/api/passkey/options", post(options))
        .route("/api/passkey/signin", post(sign_in))
        .with_state(state)
}

/// A refused request: its status, code and message.
#[derive(Debug)]
enum ApiError {
    InvalidPayload,
    TooLarge,
    Unavailable,
    UnknownName,
    /// Over the ceremony budget; the same request is admitted again after this long.
    RateLimited(std::time::Duration),
    Expired,
    Refused,
    /// `popKey` with a `pop` that does not sign this ceremony.
    ProofRequired,
    TooManySessions,
    Store(StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

impl From<PasskeyError> for ApiError {
    fn from(e: PasskeyError) -> Self {
        match e {
            PasskeyError::Refused => ApiError::Refused,
            PasskeyError::Unavailable => ApiError::Unavailable,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::InvalidPayload => (
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                "the body does not have the expected shape",
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large",
            ),
            ApiError::Unavailable => (
                StatusCode::NOT_FOUND,
                "passkeys_unavailable",
                "passkeys are not available on this server",
            ),
            ApiError::UnknownName => (
                StatusCode::NOT_FOUND,
                "unknown_name",
                "no passkey protects that name",
            ),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; wait a moment and try again",
            ),
            ApiError::Expired => (
                StatusCode::GONE,
                "ceremony_expired",
                "this sign-in took too long or was used already; start again",
            ),
            ApiError::Refused => (
                StatusCode::UNAUTHORIZED,
                "passkey_refused",
                "the passkey was refused",
            ),
            ApiError::ProofRequired => (
                StatusCode::UNAUTHORIZED,
                "proof_required",
                "the proof of possession does not sign this ceremony",
            ),
            ApiError::TooManySessions => (
                StatusCode::CONFLICT,
                "too_many_sessions",
                "this account has too many sessions; end one (devices) and try again",
            ),
            ApiError::Store(e) => {
                tracing::error!(error = %format_args!("{e:#}"), "passkey sign-in failed on the store");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable, try again",
                )
            }
        };
        match &self {
            ApiError::RateLimited(_) => refused(Refusal::PasskeyRate),
            ApiError::Store(_) => {}
            _ => refused(Refusal::InvalidRequest),
        }
        let mut response = (
            status,
            axum::Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response();
        if let ApiError::RateLimited(wait) = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        no_store(response)
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The body as a JSON object, read up to [`BODY_MAX`] bytes.
async fn read_object(
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > BODY_MAX) {
        return Err(ApiError::TooLarge);
    }
    let bytes: Bytes = axum::body::to_bytes(body, BODY_MAX)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(ApiError::InvalidPayload),
    }
}

fn take_token(limiter: &SignupLimiter, client: Option<ClientAddr>) -> Result<(), ApiError> {
    limiter.try_admit_or_wait(client).map_err(|refused| {
        metrics::counter!("tether_passkey_ceremonies_refused_total", "limit" => refused.why.as_str())
            .increment(1);
        ApiError::RateLimited(refused.wait)
    })
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    secs.max(1)
}

async fn options(
    State(routes): State<PasskeyRoutes>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let passkeys = routes.passkeys.as_ref().ok_or(ApiError::Unavailable)?;
    let fields = read_object(&headers, body).await?;
    let name = match fields.get("username") {
        Some(Value::String(name)) => name,
        _ => return Err(ApiError::InvalidPayload),
    };
    take_token(&routes.limiter, client.map(|Extension(c)| c))?;
    // A name that could not be signed up cannot be protected.
    let name = Username::parse(name).map_err(|_| ApiError::UnknownName)?;
    let (user, list) = routes
        .store
        .passkeys_by_name(name.as_str())
        .await?
        .ok_or(ApiError::UnknownName)?;
    // Protected still, by passkeys that are all gone: none can sign in.
    if list.is_empty() {
        return Err(ApiError::UnknownName);
    }
    let (options, state) = passkeys.start_sign_in(&user.user_id, &user.username, &list)?;
    let ceremony = CeremonyId::random();
    routes
        .store
        .put_ceremony(ceremony.as_str(), state, passkeys.ceremony())
        .await?;
    Ok(no_store(
        axum::Json(json!({ "ceremony": ceremony.as_str(), "publicKey": options })).into_response(),
    ))
}

async fn sign_in(
    State(routes): State<PasskeyRoutes>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let passkeys = routes.passkeys.as_ref().ok_or(ApiError::Unavailable)?;
    let mut fields = read_object(&headers, body).await?;
    let ceremony = match fields.remove("ceremony") {
        Some(Value::String(id)) => CeremonyId::parse(&id).ok_or(ApiError::InvalidPayload)?,
        _ => return Err(ApiError::InvalidPayload),
    };
    let credential = match fields.remove("credential") {
        Some(credential @ Value::Object(_)) => credential,
        _ => return Err(ApiError::InvalidPayload),
    };
    let proof = match (fields.remove("popKey"), fields.remove("pop")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => None,
        (Some(Value::String(key)), Some(Value::String(pop))) => Some((
            PopKey::from_wire(&key).ok_or(ApiError::InvalidPayload)?,
            pop,
        )),
        _ => return Err(ApiError::InvalidPayload),
    };
    // Every finish pays before the store is asked anything: a guess (or a replay) costs what
    // a start does, and a flood of them is refused without a single take.
    take_token(&routes.limiter, client.map(|Extension(c)| c))?;
    // One P-256 verification, paid for; a bad proof leaves the ceremony for a good one.
    let key = match proof {
        Some((key, pop)) => {
            let signed = format!(
                "{}{}",
                protocol::events::SIGN_IN_POP_PREFIX,
                ceremony.as_str()
            );
            if !key.verifies(&signed, &pop) {
                return Err(ApiError::ProofRequired);
            }
            Some(key)
        }
        None => None,
    };
    // Single use, on any node: whoever takes it first finishes it.
    let Some(stored) = routes.store.take_ceremony(ceremony.as_str()).await? else {
        return Err(ApiError::Expired);
    };
    let pending = passkeys
        .pending_sign_in(&stored)
        .map_err(|_| ApiError::Expired)?;
    // The account's passkeys as they are now (one removed meanwhile no longer signs in).
    let list = match routes.store.passkeys_by_name(&pending.name).await? {
        Some((owner, list)) if owner.user_id == pending.user => list,
        _ => return Err(ApiError::Refused),
    };
    // Compare-and-set: a counter written by a sign-in that finished meanwhile (a race, or a
    // clone's) is never written over; this one is refused instead. Written even when nothing
    // changed: it records when the passkey was last used.
    let (was, now) = passkeys.finish_sign_in(credential, &pending, &list)?;
    if !routes.store.passkey_used(&pending.user, &was, now).await? {
        tracing::info!("passkey sign-in refused: its passkey changed meanwhile");
        return Err(ApiError::Refused);
    }
    let device = headers
        .get(header::USER_AGENT)
        .map(|ua| DeviceLabel::from_user_agent(ua.as_bytes()))
        .unwrap_or(DeviceLabel::UNKNOWN);
    let (session_id, session) = match routes
        .store
        .create_device_session(
            &pending.user,
            &device.label(),
            routes.max_sessions_per_user,
            key.as_ref(),
        )
        .await?
    {
        NewDevice::Created(id, session) => (id, session),
        NewDevice::TooManySessions => return Err(ApiError::TooManySessions),
        NewDevice::UnknownUser => return Err(ApiError::Refused),
    };
    // A sign-in from a new device: every other session of the account rotates its secret at
    // its next handshake (issue #25 §5), so a copy taken from any of them stops working soon.
    routes
        .store
        .mark_rotation_due(&session.user_id, &session.family)
        .await?;
    tracing::info!(user.id = %session.user_id, bound = session.pop_key.is_some(), "signed in with a passkey");
    Ok(no_store(
        axum::Json(json!({
            "sessionID": session_id.expose_secret(),
            "userID": session.user_id.as_str(),
            "username": session.username,
        }))
        .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_the_wait_in_whole_seconds_rounded_up() {
        use std::time::Duration;
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(6)), 6);
        assert_eq!(retry_after_secs(Duration::from_millis(59_001)), 60);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_ceremony_id_is_exactly_32_lowercase_hex_digits() {
        let drawn = CeremonyId::random();
        assert_eq!(CeremonyId::parse(drawn.as_str()), Some(drawn));
        assert!(CeremonyId::parse("0123456789abcdef0123456789abcdef").is_some());
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdeg",
            "{0123456789abcdef0123456789abcd}",
            "0123456789abcdef:123456789abcdef",
            "01234567-89ab-cdef-0123-456789abcdef",
            "0123456789abcdef0123456789abcdé",
        ] {
            assert_eq!(CeremonyId::parse(bad), None, "{bad:?}");
        }
    }
}
