//! Secrets without I/O: argon2id password hashes (PHC strings), the HS256 access token, the
//! SHA-256 digests under which refresh tokens are stored, and the password policy.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ring::hmac;
use serde::{Deserialize, Serialize};

/// argon2id memory cost in KiB (OWASP's recommended minimum: 19 MiB, 2 passes, 1 lane).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// argon2id passes.
pub const ARGON2_T: u32 = 2;
/// argon2id lanes.
pub const ARGON2_P: u32 = 1;
/// Longest accepted password: argon2 accepts anything, but a cap stops CPU abuse via huge inputs.
pub const MAX_PASSWORD_LENGTH: usize = 256;

fn argon(m: u32, t: u32, p: u32) -> Option<Argon2<'static>> {
    let params = Params::new(m, t, p, Some(32)).ok()?;
    Some(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) of `password` with a fresh salt.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; 32];
    argon(ARGON2_M_KIB, ARGON2_T, ARGON2_P)
        .expect("the ARGON2_* constants are valid parameters")
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .expect("a 16-byte salt and 32-byte output are within argon2's limits");
    format!(
        "$argon2id$v=19$m={ARGON2_M_KIB},t={ARGON2_T},p={ARGON2_P}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    )
}

/// Whether `password` matches the PHC string `phc` (false for malformed strings).
pub fn verify_password(password: &str, phc: &str) -> bool {
    let parts: Vec<&str> = phc.split('$').collect();
    let ["", "argon2id", "v=19", params, salt, hash] = parts.as_slice() else {
        return false;
    };
    let mut m = 0;
    let mut t = 0;
    let mut p = 0;
    for kv in params.split(',') {
        match kv.split_once('=') {
            Some(("m", v)) => m = v.parse().unwrap_or(0),
            Some(("t", v)) => t = v.parse().unwrap_or(0),
            Some(("p", v)) => p = v.parse().unwrap_or(0),
            _ => return false,
        }
    }
    let (Ok(salt), Ok(expected)) = (STANDARD_NO_PAD.decode(salt), STANDARD_NO_PAD.decode(hash))
    else {
        return false;
    };
    let Some(a) = argon(m, t, p) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if a.hash_password_into(password.as_bytes(), &salt, &mut out)
        .is_err()
    {
        return false;
    }
    constant_time_eq(&out, &expected)
}

/// Compares without an early exit, so timing does not reveal the matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a new password is refused.
pub fn password_problem(password: &str, username: &str, min_len: usize) -> Option<String> {
    let chars = password.chars().count();
    if chars < min_len {
        return Some(format!(
            "password is too short ({chars} characters, expected at least {min_len})"
        ));
    }
    if password.len() > MAX_PASSWORD_LENGTH {
        return Some(format!(
            "password is too long (expected at most {MAX_PASSWORD_LENGTH} bytes)"
        ));
    }
    if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
        return Some("password must not contain the username".into());
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return Some("password must use at least 5 different characters".into());
    }
    None
}

/// A random secret as URL-safe base64 (`bytes` random bytes).
pub fn random_token(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(raw)
}

/// Hex SHA-256, how refresh tokens and API keys are stored.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

/// TOTP time step (RFC 6238 default; what authenticator apps use).
pub const TOTP_STEP: i64 = 30;
/// Steps accepted either side of now, for clock drift between phone and appliance.
pub const TOTP_SKEW: i64 = 1;

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (the form authenticator apps take).
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(B32[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(B32[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes [`base32_encode`] output (case-insensitive, padding and spaces ignored).
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.chars().filter(|c| *c != '=' && !c.is_whitespace()) {
        let c = c.to_ascii_uppercase();
        let v = B32.iter().position(|&x| char::from(x) == c)?;
        buf = (buf << 5) | u32::try_from(v).ok()?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// The 6-digit TOTP (HMAC-SHA1, RFC 6238) of `secret` at time step `step`.
pub fn totp(secret: &[u8], step: i64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let h = tag.as_ref();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    bin % 1_000_000
}

/// The time step at which `code` is valid for `secret` around `now`, if any.
pub fn totp_match(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let want: u32 = code.parse().ok()?;
    let step = now.div_euclid(TOTP_STEP);
    (step - TOTP_SKEW..=step + TOTP_SKEW).find(|s| totp(secret, *s) == want)
}

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User ID.
    pub sub: i64,
    /// Username, for logs.
    pub name: String,
    /// The user's token generation: bumped by a password change, which voids older tokens.
    pub r#gen: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token signed by this appliance.
    Invalid,
    /// Signed by us but past its expiry.
    Expired,
}

const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The HS256 JWT of `claims` under `key`.
pub fn sign_token(key: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(JWT_HEADER);
    let body = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(claims).expect("claims are plain numbers and strings"));
    let input = format!("{header}.{body}");
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Checks signature, algorithm and expiry of `token` at time `now`.
pub fn verify_token(key: &[u8], token: &str, now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid);
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Invalid)?;
    let input = &token[..header.len() + 1 + body.len()];
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        input.as_bytes(),
        &sig,
    )
    .map_err(|_| TokenError::Invalid)?;
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Invalid)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| TokenError::Invalid)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(TokenError::Invalid);
    }
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Invalid)?;
    let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Invalid)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip_and_tamper() {
        let phc = hash_password("correct horse battery");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("correct horse batterY", &phc));
        assert!(!verify_password("x", "$argon2i$v=19$m=8,t=1,p=1$AAAA$AAAA"));
        assert_ne!(phc, hash_password("correct horse battery"), "salted");
    }

    #[test]
    fn policy_names_what_is_wrong() {
        assert!(
            password_problem("short", "bob", 12)
                .unwrap()
                .contains("too short")
        );
        assert!(
            password_problem("xxbobxxbobxx123", "bob", 12)
                .unwrap()
                .contains("username")
        );
        assert!(
            password_problem("aaaaaaaaaaaabbb", "bob", 12)
                .unwrap()
                .contains("different")
        );
        assert!(password_problem("Tr0ub4dor&3-horse", "bob", 12).is_none());
    }

    #[test]
    fn totp_matches_rfc6238_vectors_and_base32_round_trips() {
        // RFC 6238 appendix B, SHA-1 seed, truncated to 6 digits.
        let seed = b"12345678901234567890";
        assert_eq!(totp(seed, 59 / 30), 287_082);
        assert_eq!(totp(seed, 1_111_111_109 / 30), 81_804);
        assert_eq!(totp(seed, 20_000_000_000 / 30), 353_130);
        let b32 = base32_encode(seed);
        assert_eq!(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(base32_decode(&b32.to_lowercase()).unwrap(), seed);
        assert_eq!(totp_match(seed, "287082", 59), Some(1));
        assert_eq!(totp_match(seed, "287082", 59 + 30), Some(1));
        assert_eq!(totp_match(seed, "287082", 59 + 90), None);
        assert_eq!(totp_match(seed, "28708x", 59), None);
    }

    #[test]
    fn tokens_verify_expire_and_reject_tampering() {
        let key = b"0123456789abcdef0123456789abcdef";
        let c = Claims {
            sub: 7,
            name: "ann".into(),
            r#gen: 0,
            iat: 100,
            exp: 200,
        };
        let t = sign_token(key, &c);
        assert_eq!(verify_token(key, &t, 150), Ok(c.clone()));
        assert_eq!(verify_token(key, &t, 200), Err(TokenError::Expired));
        assert_eq!(
            verify_token(b"other key", &t, 150),
            Err(TokenError::Invalid)
        );
        let mut forged = c;
        forged.sub = 1;
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = t.split('.').collect();
        let tampered = format!("{}.{body}.{}", parts[0], parts[2]);
        assert_eq!(verify_token(key, &tampered, 150), Err(TokenError::Invalid));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(verify_token(key, &none, 150), Err(TokenError::Invalid));
    }
}
