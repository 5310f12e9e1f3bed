//! Signed offline licence files for air-gapped probes.
//!
//! Format (JSON):
//! ```json
//! { "payload": "<base64 of the payload JSON bytes>", "signature": "<base64 Ed25519 signature of those bytes>" }
//! ```
//! The payload is [`OfflinePayload`]. The signature covers the exact payload bytes, so
//! re-encoding cannot change what was signed. The verification key is compiled in
//! ([`VERIFY_KEY_HEX`], overridable at build time with `ROOKERY_LICENCE_VERIFY_KEY`); the
//! verifier takes the key as a parameter so tests sign with keys of their own.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Ed25519 public key (hex) that verifies production offline licences. Release builds set
/// `ROOKERY_LICENCE_VERIFY_KEY` to the licensing service's key; its private half is never in
/// this repository.
pub const VERIFY_KEY_HEX: &str = match option_env!("ROOKERY_LICENCE_VERIFY_KEY") {
    Some(k) => k,
    None => "7e0b8ec7f57c8b6e9df4277be549b3eebf0d38961aa47f02fd9dfd1d2bbd4cb5",
};

/// The compiled-in verification key.
pub fn production_key() -> Result<VerifyingKey, OfflineError> {
    let bytes: [u8; 32] = hex::decode(VERIFY_KEY_HEX)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(OfflineError::BadVerifyKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| OfflineError::BadVerifyKey)
}

/// What an offline licence grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflinePayload {
    /// Product it is for (must equal `[licence] product`).
    pub product: String,
    /// Licensee.
    pub customer: String,
    /// Tier name.
    pub tier: String,
    /// Issued, Unix seconds.
    pub issued_at: i64,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Granted feature names.
    pub features: Vec<String>,
    /// When set, only the appliance with this `/etc/machine-id` accepts it.
    #[serde(default)]
    pub machine_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    payload: String,
    signature: String,
}

/// Why an offline licence file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineError {
    /// Not the JSON envelope, or not base64.
    #[error("offline licence file is malformed: {0}")]
    Malformed(String),
    /// The signature does not verify: the file was altered or signed by someone else.
    #[error(
        "offline licence signature does not verify: the file was altered or not issued for this product"
    )]
    Signature,
    /// For another product.
    #[error("offline licence is for product \"{found}\", not \"{expected}\"")]
    Product {
        /// In the file.
        found: String,
        /// Configured.
        expected: String,
    },
    /// For another appliance.
    #[error("offline licence is bound to another appliance (machine-id {0})")]
    Machine(String),
    /// Past its expiry.
    #[error("offline licence expired at {0} (Unix time)")]
    Expired(i64),
    /// The compiled-in key is not a valid Ed25519 key (a bad build-time override).
    #[error(
        "the compiled-in licence verification key is invalid; rebuild with a valid ROOKERY_LICENCE_VERIFY_KEY"
    )]
    BadVerifyKey,
}

/// Signs `payload` with `key` into the file format (used by tests and licence tooling).
pub fn sign(payload: &OfflinePayload, key: &ed25519_dalek::SigningKey) -> String {
    use ed25519_dalek::Signer;
    let bytes = serde_json::to_vec(payload).unwrap_or_default();
    let sig = key.sign(&bytes);
    serde_json::json!({ "payload": B64.encode(&bytes), "signature": B64.encode(sig.to_bytes()) })
        .to_string()
}

/// Verifies `text` with `key` for `product` on `machine_id` at wall time `now`.
pub fn verify(
    text: &str,
    key: &VerifyingKey,
    product: &str,
    machine_id: &str,
    now: i64,
) -> Result<OfflinePayload, OfflineError> {
    let env: Envelope =
        serde_json::from_str(text).map_err(|e| OfflineError::Malformed(e.to_string()))?;
    let bytes = B64
        .decode(env.payload.trim())
        .map_err(|e| OfflineError::Malformed(format!("payload: {e}")))?;
    let sig = B64
        .decode(env.signature.trim())
        .map_err(|e| OfflineError::Malformed(format!("signature: {e}")))?;
    let sig = Signature::from_slice(&sig).map_err(|_| OfflineError::Signature)?;
    key.verify(&bytes, &sig)
        .map_err(|_| OfflineError::Signature)?;
    let payload: OfflinePayload = serde_json::from_slice(&bytes)
        .map_err(|e| OfflineError::Malformed(format!("payload: {e}")))?;
    if payload.product != product {
        return Err(OfflineError::Product {
            found: payload.product,
            expected: product.to_owned(),
        });
    }
    if let Some(m) = &payload.machine_id
        && m != machine_id
    {
        return Err(OfflineError::Machine(m.clone()));
    }
    if payload.expires_at <= now {
        return Err(OfflineError::Expired(payload.expires_at));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> OfflinePayload {
        OfflinePayload {
            product: "rookery".into(),
            customer: "Air-gapped Ltd".into(),
            tier: "enterprise".into(),
            issued_at: 1_800_000_000,
            expires_at: 1_900_000_000,
            features: vec!["autoperf".into()],
            machine_id: None,
        }
    }

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn signed_file_verifies_and_tampering_is_caught() {
        let k = key();
        let text = sign(&payload(), &k);
        let got = verify(&text, &k.verifying_key(), "rookery", "m1", 1_850_000_000).unwrap();
        assert_eq!(got, payload());

        // Change one field inside the signed payload.
        let env: serde_json::Value = serde_json::from_str(&text).unwrap();
        let bytes = B64.decode(env["payload"].as_str().unwrap()).unwrap();
        let forged = String::from_utf8(bytes)
            .unwrap()
            .replace("Air-gapped", "Forged");
        let tampered =
            serde_json::json!({ "payload": B64.encode(forged), "signature": env["signature"] })
                .to_string();
        assert_eq!(
            verify(
                &tampered,
                &k.verifying_key(),
                "rookery",
                "m1",
                1_850_000_000
            ),
            Err(OfflineError::Signature)
        );

        let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        assert_eq!(
            verify(
                &text,
                &other.verifying_key(),
                "rookery",
                "m1",
                1_850_000_000
            ),
            Err(OfflineError::Signature)
        );
    }

    #[test]
    fn product_machine_and_expiry_are_checked() {
        let k = key();
        let vk = k.verifying_key();
        let text = sign(&payload(), &k);
        assert!(matches!(
            verify(&text, &vk, "other", "m1", 1_850_000_000),
            Err(OfflineError::Product { .. })
        ));
        assert_eq!(
            verify(&text, &vk, "rookery", "m1", 1_900_000_000),
            Err(OfflineError::Expired(1_900_000_000))
        );
        let bound = sign(
            &OfflinePayload {
                machine_id: Some("m2".into()),
                ..payload()
            },
            &k,
        );
        assert_eq!(
            verify(&bound, &vk, "rookery", "m1", 1_850_000_000),
            Err(OfflineError::Machine("m2".into()))
        );
        assert!(matches!(
            verify("nope", &vk, "rookery", "m1", 0),
            Err(OfflineError::Malformed(_))
        ));
    }

    #[test]
    fn compiled_in_key_is_valid() {
        production_key().unwrap();
    }
}
