//! The force-token check: any header value is a verdict, never a panic. A token the signer makes
//! verifies until its expiry and not from then on, and only with its own key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::force::{sign, verify, ForceKey, ForceToken};
use tracebridge_fuzz::{cost_guard, CostBound, NOW};

fuzz_target!(|data: &[u8]| {
    let keys = [
        ForceKey {
            id: "bench".into(),
            secret: b"0123456789abcdef0123".to_vec(),
        },
        ForceKey {
            id: "k2".into(),
            secret: b"another secret of 32 bytes......".to_vec(),
        },
    ];
    let _ = cost_guard(data.len(), CostBound::DEFAULT, || verify(data, &keys, NOW));

    // The input as a key id, a secret and an expiry offset.
    let Some((&offset, rest)) = data.split_first() else {
        return;
    };
    let (id, secret) = rest.split_at(rest.len().min(usize::from(offset % 64)));
    let Ok(id) = std::str::from_utf8(id) else {
        return;
    };
    if id.is_empty() || id.contains('.') || secret.is_empty() {
        return;
    }
    let key = ForceKey {
        id: id.to_string(),
        secret: secret.to_vec(),
    };
    let expiry = NOW + u64::from(offset) + 1;
    let token = sign(id, secret, expiry);
    let keys = [key];
    assert_eq!(
        verify(token.as_bytes(), &keys, NOW),
        ForceToken::Valid,
        "{token}"
    );
    assert_eq!(
        verify(token.as_bytes(), &keys, expiry),
        ForceToken::Rejected,
        "{token}"
    );
    let other = ForceKey {
        id: id.to_string(),
        secret: [secret, b"x"].concat(),
    };
    assert_eq!(
        verify(token.as_bytes(), &[other], NOW),
        ForceToken::Rejected,
        "{token}"
    );
});
