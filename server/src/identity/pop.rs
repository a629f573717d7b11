//! Proof of possession (issue #25 §3): a session made by Tether's own client is bound to a P-256
//! key that never leaves the browser (a non-extractable WebCrypto key). Each handshake signs
//! `tether-pop-1:` followed by the connection's Engine.IO sid: fresh, server-chosen and sent in
//! OPEN before the client's CONNECT, so a captured CONNECT is useless on any other connection.
//! Verified with RustCrypto's `p256` (the version webauthn-rs already builds), never by hand.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};

/// Bytes of an uncompressed SEC1 P-256 point (`04 ‖ x ‖ y`), as WebCrypto's `exportKey("raw")`
/// gives it.
pub const POP_KEY_LEN: usize = 65;
/// Characters of a key and of a signature (64 bytes, r‖s) in unpadded base64url.
const KEY_CHARS: usize = 87;
const SIGNATURE_CHARS: usize = 86;

/// A session's proof-of-possession key: a valid uncompressed P-256 point.
#[derive(Clone, PartialEq, Eq)]
pub struct PopKey(Box<[u8]>);

impl std::fmt::Debug for PopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PopKey(..)")
    }
}

impl PopKey {
    /// `auth.popKey` as sent (unpadded base64url of the 65-byte point); `None` for anything
    /// else, read without decoding more than a key's length.
    pub fn from_wire(text: &str) -> Option<Self> {
        if text.len() != KEY_CHARS {
            return None;
        }
        Self::from_bytes(&URL_SAFE_NO_PAD.decode(text).ok()?)
    }

    /// A key as a store keeps it; `None` unless it is a point on the curve, uncompressed.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != POP_KEY_LEN || bytes[0] != 4 {
            return None;
        }
        VerifyingKey::from_sec1_bytes(bytes).ok()?;
        Some(Self(bytes.into()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `pop` (unpadded base64url of r‖s) signs the challenge of the connection `sid`.
    /// One P-256 verification; anything malformed is simply not a proof.
    pub fn verifies(&self, sid: &str, pop: &str) -> bool {
        if pop.len() != SIGNATURE_CHARS {
            return false;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(pop) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        let Ok(key) = VerifyingKey::from_sec1_bytes(&self.0) else {
            return false;
        };
        key.verify(protocol::pop_challenge(sid).as_bytes(), &signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;

    fn signer(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn wire_key(key: &SigningKey) -> String {
        URL_SAFE_NO_PAD.encode(key.verifying_key().to_sec1_bytes())
    }

    fn prove(key: &SigningKey, sid: &str) -> String {
        let signature: Signature = key.sign(protocol::pop_challenge(sid).as_bytes());
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    }

    #[test]
    fn a_proof_verifies_for_its_own_sid_and_key_only() {
        let (ours, theirs) = (signer(7), signer(9));
        let key = PopKey::from_wire(&wire_key(&ours)).unwrap();
        let pop = prove(&ours, "SmVmP6i2hWmJ_pcxAAAB");
        assert_eq!(pop.len(), SIGNATURE_CHARS);
        assert!(key.verifies("SmVmP6i2hWmJ_pcxAAAB", &pop));
        assert!(!key.verifies("SmVmP6i2hWmJ_pcxAAAC", &pop), "another sid");
        assert!(!key.verifies(
            "SmVmP6i2hWmJ_pcxAAAB",
            &prove(&theirs, "SmVmP6i2hWmJ_pcxAAAB")
        ));
    }

    #[test]
    fn malformed_keys_and_proofs_are_no_proof() {
        let ours = signer(7);
        let wire = wire_key(&ours);
        assert_eq!(wire.len(), KEY_CHARS);
        let key = PopKey::from_wire(&wire).unwrap();
        assert_eq!(PopKey::from_bytes(key.as_bytes()), Some(key.clone()));
        let compressed =
            URL_SAFE_NO_PAD.encode(ours.verifying_key().to_sec1_point(true).as_bytes());
        for bad in [
            String::new(),
            "A".repeat(KEY_CHARS),
            compressed,
            format!("{wire}="),
        ] {
            assert_eq!(PopKey::from_wire(&bad), None, "{bad}");
        }
        let pop = prove(&ours, "sid");
        for bad in [
            String::new(),
            "A".repeat(SIGNATURE_CHARS),
            format!("{pop}A"),
            "x".repeat(10_000),
        ] {
            assert!(!key.verifies("sid", &bad));
        }
    }
}
