//! Authenticated forced sampling: `<key id>.<unix expiry>.<hex HMAC-SHA256(secret, "<key id>.<unix expiry>")>`.
//! The `sampling.force` configuration is parsed here too.

use crate::bytes::rsplit_once;
use crate::config::json::{
    boolean, check_keys, custom_header, error, header_name, object, positive_integer, string,
    type_name, ConfigError,
};
use crate::headers::HeaderName;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

pub const DEFAULT_MAX_PER_SECOND: u64 = 10;
/// Shorter secrets are guessable; HMAC keys should be at least as long as a block of entropy.
const MIN_SECRET_LEN: usize = 16;

/// Longer values are not tokens (key ids are short; the MAC is 64 hex digits).
const MAX_TOKEN_LEN: usize = 256;
/// The longest key id whose tokens fit [`MAX_TOKEN_LEN`] with any expiry `verify` reads (20
/// digits) and the MAC: `<id>.<expiry>.<64 hex digits>`. A longer id could never verify.
pub const MAX_KEY_ID_LEN: usize = MAX_TOKEN_LEN - 1 - 20 - 1 - 64;

#[derive(Clone, PartialEq, Eq)]
pub struct ForceKey {
    pub id: String,
    pub secret: Vec<u8>,
}

/// The secret never appears in a debug print of the configuration.
impl std::fmt::Debug for ForceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForceKey")
            .field("id", &self.id)
            .field("secret", &"(redacted)")
            .finish()
    }
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
    let (signed, mac_hex) = rsplit_once(token, b'.')?;
    let (key_id, expiry) = rsplit_once(signed, b'.')?;
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

/// `sampling.force`.
#[derive(Clone, Debug, PartialEq)]
pub struct ForceConfig {
    /// Lower-case header name; its index in [`crate::config::Config::custom_headers`] is
    /// `header_index`.
    pub header: String,
    pub header_index: usize,
    pub keys: Vec<ForceKey>,
    pub max_per_second: u64,
    /// A valid token within its limit makes an untrusted caller trusted: its context is
    /// continued (`sampling.force.trust_context`, default `true`).
    pub trust_context: bool,
}

impl ForceConfig {
    /// Parses `sampling.force`; the force header is added to `custom`.
    pub fn parse(value: &Value, custom: &mut Vec<String>) -> Result<ForceConfig, ConfigError> {
        let object = object(value, "sampling.force")?;
        check_keys(
            object,
            "sampling.force.",
            &["header", "keys", "max_per_second", "trust_context"],
        )?;
        let Some(header) = object.get("header") else {
            return Err(error("sampling.force.header", "is required"));
        };
        let header = header_name(header, "sampling.force.header")?;
        if let Some(why) = carried_elsewhere(&header) {
            return Err(error(
                "sampling.force.header",
                format!("\"{header}\" is {why}: the token could travel on in it"),
            ));
        }
        let header_index = custom_header(custom, header.clone(), "sampling.force.header")?;
        let Some(keys_value) = object.get("keys") else {
            return Err(error("sampling.force.keys", "is required"));
        };
        let keys_object = self::object(keys_value, "sampling.force.keys")?;
        if keys_object.is_empty() {
            return Err(error("sampling.force.keys", "must hold at least one key"));
        }
        let mut keys = Vec::new();
        for (id, value) in keys_object {
            let path = format!("sampling.force.keys.{id}");
            if id.len() > MAX_KEY_ID_LEN {
                return Err(error(
                    path,
                    format!(
                        "key ids may be at most {MAX_KEY_ID_LEN} characters long (this one has {}): tokens are at most {MAX_TOKEN_LEN} bytes, so a longer id could never verify",
                        id.len()
                    ),
                ));
            }
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(error(
                    path,
                    "key ids may use only letters, digits, \"_\" and \"-\"",
                ));
            }
            keys.push(ForceKey {
                id: id.clone(),
                secret: secret(value, &path)?,
            });
        }
        let max_per_second = match object.get("max_per_second") {
            None => DEFAULT_MAX_PER_SECOND,
            Some(value) => positive_integer(value, "sampling.force.max_per_second")?,
        };
        let trust_context = match object.get("trust_context") {
            None => true,
            Some(value) => boolean(value, "sampling.force.trust_context")?,
        };
        Ok(ForceConfig {
            header,
            header_index,
            keys,
            max_per_second,
            trust_context,
        })
    }
}

/// Why the force header may not be called `name`, if it may not: the filter removes the force
/// header, but a name that a format, baggage or the response also reads or writes would carry
/// the token on (a `uberctx-` name, for one, becomes `baggage: <key>=<token>` upstream). Every
/// such name is refused whatever is configured, so that no later change of `extract`, `inject`
/// or `baggage` can open the leak.
fn carried_elsewhere(name: &str) -> Option<&'static str> {
    use crate::headers::{JAEGER_BAGGAGE_PREFIX, OPENTRACING_BAGGAGE_PREFIX};
    use crate::response::{SERVER_TIMING, TIMING_ALLOW_ORIGIN, TRACERESPONSE};
    if HeaderName::from_lowercase(name).is_some() {
        Some("a header tracebridge already reads")
    } else if name.starts_with(JAEGER_BAGGAGE_PREFIX)
        || name.starts_with(OPENTRACING_BAGGAGE_PREFIX)
    {
        Some("a baggage header (uberctx-* and ot-baggage-* carry baggage entries)")
    } else if [SERVER_TIMING, TRACERESPONSE, TIMING_ALLOW_ORIGIN].contains(&name) {
        Some("a header tracebridge writes on responses")
    } else {
        None
    }
}

/// A secret given inline, or `{"env": "NAME"}` read from the proxy's environment (Istio
/// `WasmPlugin.vmConfig.env`) so that it stays out of configuration dumps.
fn secret(value: &Value, path: &str) -> Result<Vec<u8>, ConfigError> {
    let secret = match value {
        Value::String(text) => text.clone(),
        Value::Object(object) => {
            check_keys(object, &format!("{path}."), &["env"])?;
            let env_path = format!("{path}.env");
            let Some(name) = object.get("env") else {
                return Err(error(env_path, "is required"));
            };
            let name = string(name, &env_path)?;
            std::env::var(name).map_err(|_| {
                error(
                    &env_path,
                    format!("environment variable \"{name}\" is not set (or not UTF-8)"),
                )
            })?
        }
        _ => {
            return Err(error(
                path,
                format!(
                    "must be a secret string or {{\"env\": \"VARIABLE\"}}, got {}",
                    type_name(value)
                ),
            ))
        }
    };
    if secret.len() < MIN_SECRET_LEN {
        return Err(error(
            path,
            format!("the secret must be at least {MIN_SECRET_LEN} bytes long"),
        ));
    }
    Ok(secret.into_bytes())
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

    /// Issue 10, defect 6: the longest key id whose token fits the 256 bytes `verify` reads
    /// is accepted and verifies, with the longest expiry; one character more is refused at
    /// configuration time, naming the key.
    #[test]
    fn key_ids_are_as_long_as_a_token_allows() {
        let longest = "k".repeat(MAX_KEY_ID_LEN);
        let config = |id: &str| {
            format!(
                r#"{{"sampling": {{"force": {{"header": "x-f", "keys": {{"{id}": "0123456789abcdef"}}}}}}}}"#
            )
        };
        let parsed = crate::config::Config::from_json(config(&longest).as_bytes()).unwrap();
        let keys = parsed.sampling.force.unwrap().keys;
        let token = sign(&longest, b"0123456789abcdef", u64::MAX);
        assert_eq!(token.len(), MAX_TOKEN_LEN);
        assert_eq!(verify(token.as_bytes(), &keys, 1), ForceToken::Valid);
        let too_long = "k".repeat(MAX_KEY_ID_LEN + 1);
        let err = crate::config::Config::from_json(config(&too_long).as_bytes()).unwrap_err();
        assert_eq!(err.path, format!("sampling.force.keys.{too_long}"));
        assert!(
            err.problem.contains("at most 170 characters"),
            "{}",
            err.problem
        );
    }

    /// The MAC comparison is constant-time because it is the hmac crate's `verify_slice`
    /// (RustCrypto; it compares with `subtle`'s `ConstantTimeEq`), not a comparison of bytes
    /// here. Timing cannot be asserted on a shared machine, so this checks the code: `check`
    /// ends in `verify_slice`, and no MAC bytes are compared with `==` anywhere in this file.
    #[test]
    fn the_mac_is_compared_by_the_hmac_crate_in_constant_time() {
        let source = include_str!("force.rs");
        let check =
            &source[source.find("fn check(").unwrap()..source.find("fn decode_mac(").unwrap()];
        assert!(check.contains("hmac.verify_slice(&mac)"), "{check}");
        let library = &source[..source.find("#[cfg(test)]").unwrap()];
        for forbidden in ["mac ==", "== mac", "mac.eq(", "finalize().into_bytes() =="] {
            assert!(!library.contains(forbidden), "{forbidden}");
        }
        // And it is the comparison that decides: a MAC wrong in its first or in its last
        // byte is rejected alike.
        let now = 1_800_000_000;
        let valid = sign("ops", SECRET, now + 60);
        let mac_at = valid.rfind('.').unwrap() + 1;
        for at in [mac_at, valid.len() - 1] {
            let mut wrong = valid.clone().into_bytes();
            wrong[at] = if wrong[at] == b'0' { b'1' } else { b'0' };
            assert_eq!(verify(&wrong, &keys(), now), ForceToken::Rejected);
        }
    }

    /// Secrets stay out of what the filter logs: the configuration summary (logged at start)
    /// and any debug print of the configuration.
    #[test]
    fn secrets_appear_in_no_summary_or_debug_print() {
        let secret = "a-secret-nobody-may-log-0123";
        let text = format!(
            r#"{{"sampling": {{"force": {{"header": "x-f", "keys": {{"ops": "{secret}"}}}}}}}}"#
        );
        let config = crate::config::Config::from_json(text.as_bytes()).unwrap();
        assert!(!config.summary().contains(secret));
        assert!(!format!("{config:?}").contains(secret));
        assert!(!format!("{config:?}").contains(&format!("{:?}", secret.as_bytes())));
        assert!(format!("{config:?}").contains("(redacted)"));
    }

    #[test]
    fn trust_context_defaults_to_true() {
        let parse = |extra: &str| {
            let text = format!(
                r#"{{"sampling": {{"force": {{"header": "x-f", "keys": {{"a": "0123456789abcdef"}}{extra}}}}}}}"#
            );
            let config = crate::config::Config::from_json(text.as_bytes()).unwrap();
            config.sampling.force.unwrap().trust_context
        };
        assert!(parse(""));
        assert!(parse(r#", "trust_context": true"#));
        assert!(!parse(r#", "trust_context": false"#));
    }

    /// Problems in `sampling.force`, named by their field path.
    #[test]
    fn configuration_errors_name_the_field() {
        crate::config::tests::assert_errors(&[
            (
                r#"{"sampling": {"force": {"keys": {"a": "0123456789abcdef"}}}}"#,
                "sampling.force.header",
                "is required",
            ),
            (
                r#"{"sampling": {"force": {"header": "traceparent", "keys": {"a": "0123456789abcdef"}}}}"#,
                "sampling.force.header",
                "already reads",
            ),
            (
                r#"{"sampling": {"force": {"header": "uberctx-force", "keys": {"a": "0123456789abcdef"}}}}"#,
                "sampling.force.header",
                "a baggage header",
            ),
            (
                r#"{"sampling": {"force": {"header": "OT-Baggage-Force", "keys": {"a": "0123456789abcdef"}}}}"#,
                "sampling.force.header",
                "a baggage header",
            ),
            (
                r#"{"sampling": {"force": {"header": "baggage", "keys": {"a": "0123456789abcdef"}}}}"#,
                "sampling.force.header",
                "already reads",
            ),
            (
                r#"{"sampling": {"force": {"header": "server-timing", "keys": {"a": "0123456789abcdef"}}}}"#,
                "sampling.force.header",
                "writes on responses",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-trace-link", "keys": {"a": "0123456789abcdef"}}},
                    "response": {"link": {"header": "X-Trace-Link", "template": "https://t/{trace_id}"}}}"#,
                "sampling.force.header",
                "also response.link.header",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {}}}}"#,
                "sampling.force.keys",
                "at least one key",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a.b": "0123456789abcdef"}}}}"#,
                "sampling.force.keys.a.b",
                "key ids may use only",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": "short"}}}}"#,
                "sampling.force.keys.a",
                "at least 16 bytes",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": {"env": "TRACEBRIDGE_UNSET_VARIABLE"}}}}}"#,
                "sampling.force.keys.a.env",
                "is not set",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": 5}}}}"#,
                "sampling.force.keys.a",
                "must be a secret string",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": "0123456789abcdef"}, "max_per_second": 0}}}"#,
                "sampling.force.max_per_second",
                "at least 1",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": "0123456789abcdef"}, "trust_context": "yes"}}}"#,
                "sampling.force.trust_context",
                "true or false",
            ),
        ]);
    }
}
