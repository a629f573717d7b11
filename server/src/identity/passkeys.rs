//! Passkeys (issue #25 slice 4): the WebAuthn ceremonies, behind the one crate that does the
//! cryptography (webauthn-rs, pure-Rust RustCrypto; nothing here verifies a signature itself).
//!
//! - **Relying party.** The RP id is `--passkey-rp-id`, else the host of the server's own
//!   origin (`--public-origin`, or `localhost` for a loopback bind: browsers refuse IP
//!   addresses as RP ids), never that of an `--allowed-origins` one (another site's). Its
//!   WebAuthn origins are the allowed origins whose host is the RP id or below it, each
//!   `https` or `http://localhost` (the secure contexts WebAuthn runs in); without any,
//!   passkeys are off and the startup line says why.
//! - **Registration** (a signed-in socket, `passkey_options` then `passkey_add`): its state
//!   waits in the socket's extensions, never serialised, until the deadline.
//! - **Sign-in** (two HTTP requests, [`super::http`]): its state waits in the store under a
//!   random ceremony id, single use, for `--passkey-ceremony-secs`.
//!
//! The store keeps a passkey as the crate's own JSON ([`StoredPasskey::json`]), keyed by its
//! credential id in hex.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Uuid, Webauthn, WebauthnBuilder,
};

use crate::domain::UserId;
use crate::store::StoredPasskey;

/// Why a ceremony step failed.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The credential did not verify (a wrong signature, challenge, origin or RP, a malformed
    /// credential, or state that is not this server's): nothing is written.
    #[error("the passkey was refused")]
    Refused,
    /// Stored data this release cannot read, or a ceremony the crate would not start.
    #[error("passkeys are unavailable")]
    Unavailable,
}

/// The relying party this server is: its id, and the origins its ceremonies accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub origins: Vec<Url>,
}

/// Why passkeys are off although `--passkeys` (on by default) asks for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRelyingParty {
    /// No `--passkey-rp-id`, and the server's own origin is not a domain served securely.
    #[error(
        "passkeys are off: the public origin is not https://<domain> (nor http://localhost); \
         set --public-origin https://… or --passkey-rp-id"
    )]
    NoSecureOwnOrigin,
    /// No own origin (nor `--passkey-origins` entry) is secure and at or below the RP id.
    #[error(
        "passkeys are off: no own origin (nor --passkey-origins entry) is https:// (or \
         http://localhost) at or below the relying party id {0}"
    )]
    NoOrigin(String),
}

/// Whether WebAuthn runs on a page at `origin`: a secure context, `https`, or `http` on
/// `localhost` (plain `http` elsewhere is not one: browsers refuse it).
fn secure(origin: &Url) -> bool {
    match origin.scheme() {
        "https" => true,
        "http" => origin.host_str() == Some("localhost"),
        _ => false,
    }
}

impl RelyingParty {
    /// The RP for the `--passkey-rp-id` flag, the server's own origins (`own`:
    /// [`crate::origin::OriginPolicy::own_origins`]) and the origins `--passkey-origins` adds
    /// (`extra`). Without the flag the id is the host of the first secure own origin that is a
    /// domain name. The WebAuthn origins are the secure own and extra origins at or below the
    /// id: an `--allowed-origins` entry (another site, allowed for CORS) neither names the RP
    /// nor may use its passkeys unless `--passkey-origins` names it too (review finding 7).
    pub fn derive(
        flag: Option<&str>,
        own: &[String],
        extra: &[String],
    ) -> Result<RelyingParty, NoRelyingParty> {
        let secure_origins = |list: &[String]| -> Vec<Url> {
            list.iter()
                .filter_map(|o| Url::parse(o).ok())
                .filter(secure)
                .collect()
        };
        let id = match flag.map(str::trim).filter(|f| !f.is_empty()) {
            Some(id) => id.to_ascii_lowercase(),
            None => secure_origins(own)
                .iter()
                .find_map(|o| o.domain().map(str::to_ascii_lowercase))
                .ok_or(NoRelyingParty::NoSecureOwnOrigin)?,
        };
        let under = |o: &Url| {
            o.domain().is_some_and(|d| {
                let d = d.to_ascii_lowercase();
                d == id || d.ends_with(&format!(".{id}"))
            })
        };
        let mut origins: Vec<Url> = Vec::new();
        for origin in secure_origins(own)
            .into_iter()
            .chain(secure_origins(extra))
            .filter(under)
        {
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        if origins.is_empty() {
            return Err(NoRelyingParty::NoOrigin(id));
        }
        Ok(RelyingParty { id, origins })
    }
}

/// The ceremonies of one relying party.
pub struct Passkeys {
    webauthn: Webauthn,
    ceremony: Duration,
    /// The `Host` header of a request for a page at each origin that may use passkeys
    /// (`host`, or `host:port` when the port is not the scheme's), lower case.
    hosts: Vec<String>,
}

/// A sign-in ceremony's state as the store keeps it between its two requests: whose passkeys
/// were offered (by name, looked up again at the end) and the crate's state.
#[derive(Serialize, Deserialize)]
struct SignInState {
    user: String,
    name: String,
    state: PasskeyAuthentication,
}

/// A sign-in ceremony's state read back: the account it is for, and the crate's state.
pub struct PendingSignIn {
    pub user: UserId,
    pub name: String,
    state: PasskeyAuthentication,
}

/// A registration waiting for its `passkey_add`, kept in the socket's extensions.
#[derive(Clone)]
pub struct PendingRegistration {
    pub state: PasskeyRegistration,
    pub deadline: std::time::Instant,
}

impl Passkeys {
    /// The ceremonies of `rp` named `name`; each must finish within `ceremony`.
    pub fn new(rp: &RelyingParty, name: &str, ceremony: Duration) -> Result<Self, String> {
        let first = rp.origins.first().ok_or("no origin")?;
        let mut builder = WebauthnBuilder::new(&rp.id, first)
            .map_err(|e| format!("passkey relying party {}: {e}", rp.id))?
            .rp_name(name)
            .timeout(ceremony);
        for origin in &rp.origins[1..] {
            builder = builder.append_allowed_origin(origin);
        }
        let hosts = rp
            .origins
            .iter()
            .filter_map(|o| {
                let host = o.host_str()?.to_ascii_lowercase();
                Some(match o.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            })
            .collect();
        Ok(Self {
            webauthn: builder
                .build()
                .map_err(|e| format!("passkey relying party {}: {e}", rp.id))?,
            ceremony,
            hosts,
        })
    }

    /// Whether a page requested with this `Host` header is at an origin that may use passkeys
    /// (compared exactly, port included): a page at `http://127.0.0.1:3000` may not (browsers
    /// refuse IP addresses as relying parties), so it does not offer them.
    pub fn serves_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// How long a ceremony may take (the browser's timeout and the stored state's lifetime).
    pub fn ceremony(&self) -> Duration {
        self.ceremony
    }

    /// Starts adding a passkey to `user`'s account: the `publicKey` creation options for the
    /// browser, and the state to finish with. The account's passkeys are excluded (the
    /// authenticator says it holds one already).
    pub fn start_registration(
        &self,
        user: &UserId,
        name: &str,
        existing: &[StoredPasskey],
    ) -> Result<(Value, PasskeyRegistration), PasskeyError> {
        let uuid = Uuid::parse_str(user.as_str()).map_err(|_| PasskeyError::Unavailable)?;
        let exclude = existing
            .iter()
            .filter_map(|p| serde_json::from_str::<Passkey>(&p.json).ok())
            .map(|p| p.cred_id().clone())
            .collect::<Vec<_>>();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(uuid, name, name, Some(exclude))
            .map_err(|_| PasskeyError::Unavailable)?;
        let options =
            serde_json::to_value(options.public_key).map_err(|_| PasskeyError::Unavailable)?;
        Ok((options, state))
    }

    /// Finishes a registration with the browser's credential (`PublicKeyCredential.toJSON()`).
    pub fn finish_registration(
        &self,
        credential: Value,
        state: &PasskeyRegistration,
    ) -> Result<StoredPasskey, PasskeyError> {
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(credential).map_err(|_| PasskeyError::Refused)?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&credential, state)
            .map_err(|e| {
                tracing::debug!(error = %e, "passkey registration refused");
                PasskeyError::Refused
            })?;
        stored(&passkey)
    }

    /// Starts a sign-in to `user` (named `name`) with its passkeys: the `publicKey` request
    /// options for the browser, and the state to keep in the store until the finish.
    pub fn start_sign_in(
        &self,
        user: &UserId,
        name: &str,
        passkeys: &[StoredPasskey],
    ) -> Result<(Value, String), PasskeyError> {
        let passkeys = parse_all(passkeys)?;
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|_| PasskeyError::Unavailable)?;
        let options =
            serde_json::to_value(options.public_key).map_err(|_| PasskeyError::Unavailable)?;
        let state = serde_json::to_string(&SignInState {
            user: user.as_str().to_owned(),
            name: name.to_owned(),
            state,
        })
        .map_err(|_| PasskeyError::Unavailable)?;
        Ok((options, state))
    }

    /// Reads a stored sign-in state back.
    pub fn pending_sign_in(&self, stored: &str) -> Result<PendingSignIn, PasskeyError> {
        let read: SignInState =
            serde_json::from_str(stored).map_err(|_| PasskeyError::Unavailable)?;
        let user = UserId::parse(&read.user).ok_or(PasskeyError::Unavailable)?;
        Ok(PendingSignIn {
            user,
            name: read.name,
            state: read.state,
        })
    }

    /// Finishes a sign-in with the browser's assertion, against the account's passkeys as
    /// they are now (`passkeys`, read after the ceremony was taken). On success, the passkey
    /// as read and as it must be written back ([`crate::store::Store::passkey_used`],
    /// compare-and-set, which also records when it was last used): changed when the sign-in
    /// moved its counter or backup state, else the same.
    ///
    /// The crate checks the counter against the ceremony's state, taken at its start; a
    /// sign-in that finished meanwhile may have moved it. So it is checked again here: an
    /// authenticator that counts (either counter nonzero) must present a counter above the
    /// stored one, else the assertion is refused as a possible clone.
    pub fn finish_sign_in(
        &self,
        credential: Value,
        pending: &PendingSignIn,
        passkeys: &[StoredPasskey],
    ) -> Result<(StoredPasskey, StoredPasskey), PasskeyError> {
        let credential: PublicKeyCredential =
            serde_json::from_value(credential).map_err(|_| PasskeyError::Refused)?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&credential, &pending.state)
            .map_err(|e| {
                tracing::debug!(error = %e, "passkey sign-in refused");
                PasskeyError::Refused
            })?;
        for (was, mut passkey) in passkeys.iter().zip(parse_all(passkeys)?) {
            let Some(changed) = passkey.update_credential(&result) else {
                continue;
            };
            if !counter_advances(stored_counter(was)?, result.counter()) {
                tracing::info!(
                    "passkey sign-in refused: its counter did not advance (a possible clone)"
                );
                return Err(PasskeyError::Refused);
            }
            return if changed {
                Ok((was.clone(), stored(&passkey)?))
            } else {
                Ok((was.clone(), was.clone()))
            };
        }
        // Verified against the state's credentials, but none is the account's any more.
        Err(PasskeyError::Refused)
    }
}

/// Whether an assertion's signature counter `now` may follow the stored `held`: both zero (an
/// authenticator that does not count, as synced passkeys), or above it (WebAuthn §6.1.1).
fn counter_advances(held: u32, now: u32) -> bool {
    (held == 0 && now == 0) || now > held
}

/// The signature counter of a stored passkey, as the crate's own JSON holds it (`Passkey` has
/// no getter for it).
fn stored_counter(passkey: &StoredPasskey) -> Result<u32, PasskeyError> {
    #[derive(Deserialize)]
    struct Counted {
        cred: Counter,
    }
    #[derive(Deserialize)]
    struct Counter {
        counter: u32,
    }
    serde_json::from_str::<Counted>(&passkey.json)
        .map(|c| c.cred.counter)
        .map_err(|_| PasskeyError::Unavailable)
}

/// A passkey as the store keeps it.
fn stored(passkey: &Passkey) -> Result<StoredPasskey, PasskeyError> {
    Ok(StoredPasskey {
        cred_id: hex::encode(passkey.cred_id()),
        json: serde_json::to_string(passkey).map_err(|_| PasskeyError::Unavailable)?,
    })
}

fn parse_all(passkeys: &[StoredPasskey]) -> Result<Vec<Passkey>, PasskeyError> {
    passkeys
        .iter()
        .map(|p| serde_json::from_str(&p.json).map_err(|_| PasskeyError::Unavailable))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_rp_is_the_own_origins_domain_and_only_origins_at_or_below_it_count() {
        let loopback = origins(&["http://127.0.0.1:3000", "http://localhost:3000"]);
        let rp = RelyingParty::derive(None, &loopback, &[]).expect("localhost");
        assert_eq!(rp.id, "localhost");
        assert_eq!(rp.origins, [Url::parse("http://localhost:3000").unwrap()]);

        let rp = RelyingParty::derive(
            None,
            &origins(&["https://chat.example"]),
            &origins(&[
                "https://chat.example",
                "https://app.chat.example",
                "https://other.example",
                "https://notchat.example",
            ]),
        )
        .unwrap();
        assert_eq!(rp.id, "chat.example");
        assert_eq!(
            rp.origins,
            [
                Url::parse("https://chat.example").unwrap(),
                Url::parse("https://app.chat.example").unwrap()
            ],
            "once each, and only at or below the id"
        );

        let own = origins(&["https://chat.example"]);
        let rp = RelyingParty::derive(Some("example"), &own, &origins(&["https://other.example"]))
            .unwrap();
        assert_eq!(rp.origins.len(), 2, "a parent domain covers both");
    }

    /// Review finding 7: an origin allowed for CORS (`--allowed-origins`) is not a WebAuthn
    /// origin: only the server's own are, and those `--passkey-origins` names.
    #[test]
    fn passkey_origins_are_the_own_ones_unless_named() {
        let own = origins(&["https://chat.example"]);
        // What `--allowed-origins https://app.chat.example` alone gives: nothing extra.
        let rp = RelyingParty::derive(None, &own, &[]).unwrap();
        assert_eq!(rp.origins, [Url::parse("https://chat.example").unwrap()]);
        let rp = RelyingParty::derive(None, &own, &origins(&["https://app.chat.example"])).unwrap();
        assert_eq!(
            rp.origins,
            [
                Url::parse("https://chat.example").unwrap(),
                Url::parse("https://app.chat.example").unwrap()
            ]
        );
        // The tutorial's page on :8080, allowed for CORS, does not get the user's passkeys.
        let loopback = origins(&["http://127.0.0.1:3000", "http://localhost:3000"]);
        let rp = RelyingParty::derive(None, &loopback, &[]).unwrap();
        assert!(!rp
            .origins
            .contains(&Url::parse("http://localhost:8080").unwrap()));
    }

    #[test]
    fn another_sites_origin_never_names_the_rp() {
        // Listening on every address: the own origin is an IP; only another site's origin
        // is a domain. It used to become the RP id.
        let own = origins(&["http://0.0.0.0:3000"]);
        let partner = origins(&["https://partner.example"]);
        assert_eq!(
            RelyingParty::derive(None, &own, &partner),
            Err(NoRelyingParty::NoSecureOwnOrigin)
        );
        // The operator may still name it.
        let rp = RelyingParty::derive(Some("partner.example"), &own, &partner).unwrap();
        assert_eq!(rp.origins, [Url::parse("https://partner.example").unwrap()]);
    }

    #[test]
    fn only_https_and_http_localhost_origins_use_passkeys() {
        let own = origins(&["http://chat.example"]);
        let extra = origins(&["http://chat.example", "https://chat.example:8443"]);
        assert_eq!(
            RelyingParty::derive(None, &own, &extra),
            Err(NoRelyingParty::NoSecureOwnOrigin),
            "a plain http public origin names no RP"
        );
        let rp = RelyingParty::derive(Some("chat.example"), &own, &extra).unwrap();
        assert_eq!(
            rp.origins,
            [Url::parse("https://chat.example:8443").unwrap()],
            "plain http is left out"
        );
        assert_eq!(
            RelyingParty::derive(Some("chat.example"), &own, &[]),
            Err(NoRelyingParty::NoOrigin("chat.example".into()))
        );
        let local = origins(&["http://localhost:8080"]);
        let rp =
            RelyingParty::derive(None, &local, &origins(&["http://app.localhost:8080"])).unwrap();
        assert_eq!(rp.id, "localhost");
        assert_eq!(rp.origins, [Url::parse("http://localhost:8080").unwrap()]);
    }

    #[test]
    fn without_a_domain_passkeys_are_off() {
        let lan = origins(&["http://192.168.1.5:3000"]);
        assert_eq!(
            RelyingParty::derive(None, &lan, &[]),
            Err(NoRelyingParty::NoSecureOwnOrigin)
        );
        let public = origins(&["https://chat.example"]);
        assert_eq!(
            RelyingParty::derive(Some("elsewhere.example"), &public, &[]),
            Err(NoRelyingParty::NoOrigin("elsewhere.example".into()))
        );
    }

    #[test]
    fn a_counter_must_advance_unless_the_authenticator_does_not_count() {
        assert!(counter_advances(0, 0), "no counter (a synced passkey)");
        assert!(counter_advances(0, 1));
        assert!(counter_advances(6, 7));
        for (held, now) in [(1, 1), (7, 6), (5, 0), (u32::MAX, u32::MAX)] {
            assert!(!counter_advances(held, now), "{held} then {now}");
        }
    }

    #[test]
    fn a_stored_counter_is_read_from_the_crates_json() {
        let passkey = |json: &str| StoredPasskey {
            cred_id: "00".into(),
            json: json.into(),
        };
        assert_eq!(
            stored_counter(&passkey(r#"{"cred":{"counter":7,"cred_id":"x"}}"#)).unwrap(),
            7
        );
        assert!(matches!(
            stored_counter(&passkey(r#"{"counter":7}"#)),
            Err(PasskeyError::Unavailable)
        ));
    }

    #[test]
    fn a_stored_state_that_is_not_ours_is_unavailable_and_a_junk_credential_is_refused() {
        let local = origins(&["http://localhost:3000"]);
        let rp = RelyingParty::derive(None, &local, &local).unwrap();
        let passkeys = Passkeys::new(&rp, "Tether", Duration::from_secs(60)).unwrap();
        assert!(matches!(
            passkeys.pending_sign_in("{}"),
            Err(PasskeyError::Unavailable)
        ));
        let user = UserId::random();
        let (options, state) = passkeys.start_registration(&user, "ada", &[]).unwrap();
        assert_eq!(options["rp"]["id"], "localhost");
        assert_eq!(
            options["authenticatorSelection"]["userVerification"],
            "required"
        );
        assert!(matches!(
            passkeys.finish_registration(serde_json::json!({ "id": "x" }), &state),
            Err(PasskeyError::Refused)
        ));
    }
}
