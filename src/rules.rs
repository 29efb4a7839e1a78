//! `sampling.rules`: per-route probabilities. Parsed from the configuration and matched against
//! each request here; the first rule whose every condition matches sets the probability of a
//! root decision.

use crate::config::json::{
    check_keys, custom_header, error, header_name, list, object, probability, string, type_name,
    ConfigError,
};
use crate::headers::{HeaderName, RequestHeaders};
use crate::sampling::Threshold;
use serde_json::Value;

/// `sampling.rules[]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub conditions: RuleMatch,
    pub probability: f64,
    /// Derived from `probability` once, so the request path compares integers only.
    pub threshold: Threshold,
}

/// `sampling.rules[].match`: every condition given must hold.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RuleMatch {
    pub authority: Option<AuthorityPattern>,
    pub path_prefix: Option<String>,
    /// Upper-case, as HTTP methods are sent.
    pub method: Option<String>,
    /// Index into [`crate::config::Config::custom_headers`] and the exact value wanted (`None`:
    /// present).
    pub header: Option<(usize, Option<String>)>,
}

/// `match.authority`: a host, or `*.` and a domain for any of its subdomains; compared without
/// case, and without the request's port unless the pattern names one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityPattern {
    /// The lower-case host, or for `*.example.com` the suffix `.example.com`.
    text: String,
    subdomains: bool,
    /// The pattern names a port, so the request's port takes part in the comparison.
    with_port: bool,
}

impl AuthorityPattern {
    /// Accepts a host (optionally with a port) or `*.` followed by one. `*` anywhere else
    /// (`*example.com`, `a.*.com`, `*.`) is an error: it would otherwise match names it should
    /// not (`*example.com` matching `badexample.com`).
    pub fn parse(pattern: &str) -> Result<AuthorityPattern, String> {
        let pattern = pattern.to_ascii_lowercase();
        let (text, subdomains) = match pattern.strip_prefix("*.") {
            Some(domain) => (format!(".{domain}"), true),
            None => (pattern.clone(), false),
        };
        let domain = if subdomains {
            text.get(1..)
        } else {
            Some(&*text)
        };
        if domain.is_none_or(|domain| domain.is_empty() || domain.contains('*')) {
            return Err(format!(
                "\"{pattern}\": a wildcard is only allowed as \"*.\" followed by a domain, \
                 e.g. \"*.example.com\""
            ));
        }
        let with_port = port_start(pattern.as_bytes()).is_some();
        Ok(AuthorityPattern {
            text,
            subdomains,
            with_port,
        })
    }

    pub fn matches(&self, authority: &[u8]) -> bool {
        let host = match port_start(authority) {
            Some(colon) if !self.with_port => authority.get(..colon).unwrap_or(authority),
            _ => authority,
        };
        if self.subdomains {
            // More than the suffix: `*.example.com` matches subdomains, not `example.com` or
            // `.example.com`.
            host.len() > self.text.len() && ends_with_ignore_case(host, self.text.as_bytes())
        } else {
            host.eq_ignore_ascii_case(self.text.as_bytes())
        }
    }
}

/// Where `:port` starts; a colon inside `[...]` belongs to an IPv6 address.
fn port_start(authority: &[u8]) -> Option<usize> {
    let colon = authority.iter().rposition(|&b| b == b':')?;
    let bracket = authority.iter().rposition(|&b| b == b']');
    (bracket.is_none_or(|bracket| bracket < colon)).then_some(colon)
}

fn ends_with_ignore_case(text: &[u8], suffix: &[u8]) -> bool {
    text.len()
        .checked_sub(suffix.len())
        .and_then(|start| text.get(start..))
        .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
}

impl Rule {
    pub fn matches(&self, headers: &RequestHeaders) -> bool {
        let conditions = &self.conditions;
        if let Some(pattern) = &conditions.authority {
            let Some(authority) = headers.get(HeaderName::Authority) else {
                return false;
            };
            if !pattern.matches(authority) {
                return false;
            }
        }
        if let Some(prefix) = &conditions.path_prefix {
            if !headers
                .get(HeaderName::Path)
                .is_some_and(|path| path.starts_with(prefix.as_bytes()))
            {
                return false;
            }
        }
        if let Some(method) = &conditions.method {
            if headers.get(HeaderName::Method) != Some(method.as_bytes()) {
                return false;
            }
        }
        if let Some((index, wanted)) = &conditions.header {
            match (headers.custom(*index), wanted) {
                (None, _) => return false,
                (Some(value), Some(wanted)) if value != wanted.as_bytes() => return false,
                _ => {}
            }
        }
        true
    }
}

/// The first rule that matches the request, with its index.
pub fn matching<'r>(rules: &'r [Rule], headers: &RequestHeaders) -> Option<(usize, &'r Rule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, rule)| rule.matches(headers))
}

/// Parses `sampling.rules`; header names the rules read are added to `custom`.
pub fn parse(
    value: &Value,
    precision: u32,
    custom: &mut Vec<String>,
) -> Result<Vec<Rule>, ConfigError> {
    let mut rules = Vec::new();
    for (i, item) in list(value, "sampling.rules")?.iter().enumerate() {
        let path = format!("sampling.rules[{i}]");
        let object = object(item, &path)?;
        check_keys(object, &format!("{path}."), &["match", "probability"])?;
        let conditions = match object.get("match") {
            None => {
                return Err(error(
                    format!("{path}.match"),
                    "is required (use {} to match every request)",
                ))
            }
            Some(value) => rule_match(value, &format!("{path}.match"), custom)?,
        };
        let Some(p) = object.get("probability") else {
            return Err(error(format!("{path}.probability"), "is required"));
        };
        let p = probability(p, &format!("{path}.probability"))?;
        rules.push(Rule {
            conditions,
            probability: p,
            threshold: Threshold::from_probability_with_precision(p, precision),
        });
    }
    Ok(rules)
}

fn rule_match(
    value: &Value,
    path: &str,
    custom: &mut Vec<String>,
) -> Result<RuleMatch, ConfigError> {
    let object = object(value, path)?;
    check_keys(
        object,
        &format!("{path}."),
        &["authority", "path_prefix", "method", "header"],
    )?;
    let mut conditions = RuleMatch::default();
    if let Some(value) = object.get("authority") {
        let authority_path = format!("{path}.authority");
        let pattern = AuthorityPattern::parse(string(value, &authority_path)?)
            .map_err(|problem| error(&authority_path, problem))?;
        conditions.authority = Some(pattern);
    }
    if let Some(value) = object.get("path_prefix") {
        let path_prefix = string(value, &format!("{path}.path_prefix"))?;
        if !path_prefix.starts_with('/') {
            return Err(error(
                format!("{path}.path_prefix"),
                "must start with \"/\"",
            ));
        }
        conditions.path_prefix = Some(path_prefix.to_string());
    }
    if let Some(value) = object.get("method") {
        conditions.method = Some(string(value, &format!("{path}.method"))?.to_ascii_uppercase());
    }
    if let Some(value) = object.get("header") {
        let header_path = format!("{path}.header");
        let header = self::object(value, &header_path)?;
        check_keys(header, &format!("{header_path}."), &["name", "value"])?;
        let name_path = format!("{header_path}.name");
        let Some(name) = header.get("name") else {
            return Err(error(name_path, "is required"));
        };
        let name = header_name(name, &name_path)?;
        let wanted = match header.get("value") {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                return Err(error(
                    format!("{header_path}.value"),
                    format!("must be a string, got {}", type_name(other)),
                ))
            }
        };
        conditions.header = Some((custom_header(custom, name, &name_path)?, wanted));
    }
    Ok(conditions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's rule semantics: a host compared without case and without the request's port
    /// unless the pattern names one; `*.example.com` for subdomains only (not the domain itself).
    #[test]
    fn authority_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("api.example.com", "api.example.com", true),
            ("api.example.com", "API.Example.com:8443", true),
            ("API.example.com", "api.example.com", true),
            ("api.example.com", "www.example.com", false),
            ("api.example.com", "api.example.com.evil", false),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "www.example.com:8443", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", ".example.com", false),
            // The wildcard is a whole label: a name that merely ends in the domain's text is
            // not a subdomain.
            ("*.example.com", "badexample.com", false),
            ("*.example.com", "www.badexample.com", false),
            ("*.example.com:8443", "www.example.com:8443", true),
            ("*.example.com:8443", "www.example.com", false),
            ("api.example.com:8443", "api.example.com:8443", true),
            ("api.example.com:8443", "api.example.com", false),
            ("[::1]", "[::1]:80", true),
            ("[::1]", "[::1]", true),
            ("[::1]:80", "[::1]:8080", false),
        ];
        for &(pattern, authority, want) in cases {
            let parsed = AuthorityPattern::parse(pattern).unwrap();
            assert_eq!(
                parsed.matches(authority.as_bytes()),
                want,
                "{pattern} vs {authority}"
            );
        }
    }

    /// `*example.com` used to be taken as a wildcard and matched `badexample.com`: a `*` is
    /// only a wildcard as the README documents it, `*.` before a domain.
    #[test]
    fn misplaced_wildcards_are_rejected() {
        for pattern in [
            "*example.com",
            "*",
            "*.",
            "a.*.example.com",
            "*.*.example.com",
        ] {
            let err = AuthorityPattern::parse(pattern).unwrap_err();
            assert!(
                err.contains("\"*.\" followed by a domain"),
                "{pattern}: {err}"
            );
        }
        let config = r#"{"sampling": {"rules": [
            {"match": {"authority": "api.example.com"}, "probability": 1},
            {"match": {"authority": "*example.com"}, "probability": 1}
        ]}}"#;
        let err = crate::config::Config::from_json(config.as_bytes()).unwrap_err();
        assert_eq!(err.path, "sampling.rules[1].match.authority");
        assert!(err.problem.starts_with("\"*example.com\": a wildcard"));
    }

    fn rules(json: &str) -> Vec<Rule> {
        parse(
            &serde_json::from_str(json).unwrap(),
            4,
            &mut vec!["x-env".to_string()],
        )
        .unwrap()
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = rules(
            r#"[
                {"match": {"path_prefix": "/checkout", "method": "post"}, "probability": 1},
                {"match": {"header": {"name": "X-Env", "value": "load"}}, "probability": 0.5},
                {"match": {"header": {"name": "x-debug"}}, "probability": 0.25},
                {"match": {}, "probability": 0}
            ]"#,
        );
        // The rules read x-env (index 0, given) and x-debug (index 1, added).
        let custom = ["x-env".to_string(), "x-debug".to_string()];
        let cases: &[(&[(&str, &str)], usize)] = &[
            (&[(":path", "/checkout/cart"), (":method", "POST")], 0),
            (&[(":path", "/checkout/cart"), (":method", "GET")], 3),
            (&[(":path", "/checkout"), ("x-env", "load")], 1),
            (&[("x-env", "prod")], 3),
            (&[("x-env", "prod"), ("x-debug", "")], 2),
            (&[], 3),
        ];
        for &(pairs, want) in cases {
            let headers = RequestHeaders::with_custom(
                pairs.iter().map(|(name, value)| (*name, value.as_bytes())),
                &custom,
            );
            let got = matching(&rules, &headers).map(|(i, _)| i);
            assert_eq!(got, Some(want), "{pairs:?}");
        }
        assert_eq!(rules[0].conditions.method.as_deref(), Some("POST"));
        assert_eq!(rules[1].threshold, Threshold::from_probability(0.5));
    }

    /// Problems in `sampling.rules`, named by their field path.
    #[test]
    fn configuration_errors_name_the_field() {
        crate::config::tests::assert_errors(&[
            (
                r#"{"sampling": {"rules": {}}}"#,
                "sampling.rules",
                "must be a list",
            ),
            (
                r#"{"sampling": {"rules": [{"probability": 1}]}}"#,
                "sampling.rules[0].match",
                "is required",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {}}]}}"#,
                "sampling.rules[0].probability",
                "is required",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {}, "probability": 2}]}}"#,
                "sampling.rules[0].probability",
                "between 0 and 1",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {"host": "a"}, "probability": 1}]}}"#,
                "sampling.rules[0].match.host",
                "unknown key",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {"path_prefix": "api"}, "probability": 1}]}}"#,
                "sampling.rules[0].match.path_prefix",
                "must start with",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {"header": {"value": "x"}}, "probability": 1}]}}"#,
                "sampling.rules[0].match.header.name",
                "is required",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {"header": {"name": "a b"}}, "probability": 1}]}}"#,
                "sampling.rules[0].match.header.name",
                "not a valid HTTP header name",
            ),
        ]);
    }
}
