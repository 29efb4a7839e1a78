//! Splitting byte strings around a separator without indexing, for the parsers: what
//! `str::split_once` does for text.

/// `bytes` before and after the first `separator`; `None` when there is none.
pub fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let mut parts = bytes.splitn(2, |&b| b == separator);
    let before = parts.next()?;
    let after = parts.next()?;
    Some((before, after))
}

/// `bytes` before and after the last `separator`; `None` when there is none.
pub fn rsplit_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let mut parts = bytes.rsplitn(2, |&b| b == separator);
    let after = parts.next()?;
    let before = parts.next()?;
    Some((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_text<'a>(pair: Option<(&'a [u8], &'a [u8])>) -> Option<(&'a str, &'a str)> {
        pair.map(|(a, b)| {
            (
                std::str::from_utf8(a).unwrap(),
                std::str::from_utf8(b).unwrap(),
            )
        })
    }

    /// The same answers as the standard library's `str::split_once` and `rsplit_once`.
    #[test]
    fn splits_like_str_split_once() {
        type Split = Option<(&'static str, &'static str)>;
        // (text, split at the first `=`, split at the last)
        let cases: &[(&str, Split, Split)] = &[
            ("k=v", Some(("k", "v")), Some(("k", "v"))),
            ("k=v=w", Some(("k", "v=w")), Some(("k=v", "w"))),
            ("=v", Some(("", "v")), Some(("", "v"))),
            ("k=", Some(("k", "")), Some(("k", ""))),
            ("kv", None, None),
            ("", None, None),
        ];
        for &(text, first, last) in cases {
            assert_eq!(text.split_once('='), first, "{text}");
            assert_eq!(text.rsplit_once('='), last, "{text}");
            assert_eq!(as_text(split_once(text.as_bytes(), b'=')), first, "{text}");
            assert_eq!(as_text(rsplit_once(text.as_bytes(), b'=')), last, "{text}");
        }
    }
}
