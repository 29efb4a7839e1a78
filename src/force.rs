//! Authenticated forced sampling: `<key id>.<unix expiry>.<hex HMAC-SHA256(secret, "<key id>.<unix expiry>")>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longer values are not tokens (key ids are short; the MAC is 64 hex digits).
const MAX_TOKEN_LEN: usize = 256;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ForceKey {
    pub id: String,
    pub secret: Vec<u8>,
}

/// What a force header amounted to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ForceToken {
    Valid,
    /// Malformed, unknown key, wrongly signed or expired.
    Rejected,
}

/// Checks a token against the configured keys at `now` (Unix seconds). The MAC comparison is
/// constant-time; the key lookup is not secret (key ids travel in clear).
pub fn verify(token: &[u8], keys: &[ForceKey], now: u64) -> ForceToken {
    if check(token, keys, now).is_some() {
        ForceToken::Valid
    } else {
        ForceToken::Rejected
    }
}

fn check(token: &[u8], keys: &[ForceKey], now: u64) -> Option<()> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let mac_start = token.iter().rposition(|&b| b == b'.')?;
    let (signed, mac_hex) = (&token[..mac_start], &token[mac_start + 1..]);
    let expiry_start = signed.iter().rposition(|&b| b == b'.')?;
    let (key_id, expiry) = (&signed[..expiry_start], &signed[expiry_start + 1..]);
    let expiry = crate::ids::parse_decimal_u64(expiry, 20)?;
    if expiry <= now {
        return None;
    }
    let key = keys.iter().find(|key| key.id.as_bytes() == key_id)?;
    let mac = decode_mac(mac_hex)?;
    let mut hmac = Hmac::<Sha256>::new_from_slice(&key.secret).ok()?;
    hmac.update(signed);
    hmac.verify_slice(&mac).ok()
}

fn decode_mac(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut mac = [0u8; 32];
    for (byte, pair) in mac.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = crate::ids::parse_hex(pair, crate::ids::HexCase::Any)? as u8;
    }
    Some(mac)
}

/// Makes a token (for tests and the README's recipe).
pub fn sign(key_id: &str, secret: &[u8], expiry: u64) -> String {
    let signed = format!("{key_id}.{expiry}");
    let Ok(mut hmac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    hmac.update(signed.as_bytes());
    let mut out = signed;
    out.push('.');
    for byte in hmac.finalize().into_bytes() {
        crate::ids::write_hex(&mut out, u128::from(byte), 2);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"correct horse battery staple";

    fn keys() -> Vec<ForceKey> {
        vec![ForceKey {
            id: "ops".into(),
            secret: SECRET.to_vec(),
        }]
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut hmac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        hmac.update(b"what do ya want for nothing?");
        let mut hex = String::new();
        for byte in hmac.finalize().into_bytes() {
            crate::ids::write_hex(&mut hex, u128::from(byte), 2);
        }
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn token_table() {
        let now = 1_800_000_000;
        let valid = sign("ops", SECRET, now + 60);
        let expired = sign("ops", SECRET, now);
        let other_secret = sign("ops", b"another secret entirely", now + 60);
        let unknown_key = sign("dev", SECRET, now + 60);
        let mut flipped = valid.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let upper = valid.to_uppercase().replacen("OPS", "ops", 1);
        let cases: Vec<(Vec<u8>, ForceToken)> = vec![
            (valid.clone().into_bytes(), ForceToken::Valid),
            (upper.into_bytes(), ForceToken::Valid),
            (expired.into_bytes(), ForceToken::Rejected),
            (other_secret.into_bytes(), ForceToken::Rejected),
            (unknown_key.into_bytes(), ForceToken::Rejected),
            (flipped, ForceToken::Rejected),
            (
                valid.as_bytes()[..valid.len() - 2].to_vec(),
                ForceToken::Rejected,
            ),
            (b"ops.1800000060".to_vec(), ForceToken::Rejected),
            (b"garbage".to_vec(), ForceToken::Rejected),
            (b"".to_vec(), ForceToken::Rejected),
            (
                format!("ops.{}.{}", u128::MAX, "0".repeat(64)).into_bytes(),
                ForceToken::Rejected,
            ),
            (vec![b'.'; 1000], ForceToken::Rejected),
        ];
        for (token, want) in cases {
            assert_eq!(
                verify(&token, &keys(), now),
                want,
                "{}",
                String::from_utf8_lossy(&token)
            );
        }
    }
}
