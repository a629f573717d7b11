//! Who holds a session (issue #25): the devices of an account. A session is a *device*, keyed by
//! its *family*: the digest of its first secret (today every session's only secret, so the
//! family is the session digest the store already keys it by, and nothing is rewritten).
//!
//! - [`device`]: the browser label taken from a handshake's `User-Agent`, and the public
//!   device id derived from a family.
//! - [`passkeys`]: the WebAuthn ceremonies (webauthn-rs) a passkey is added and signed in with.
//! - [`pop`]: proof of possession, the key a session is bound to and its handshake proof.
//! - [`http`]: passkey sign-in over HTTP (`/api/passkey/options`, `/api/passkey/signin`).

pub mod device;
pub mod http;
pub mod passkeys;
pub mod pop;
