//! The plugin configurations in envoy/istio/ (WasmPlugin `pluginConfig`, the
//! EnvoyFilter's wasm `configuration`), parsed by the filter's own parser.
//!
//! `node tests/istio/validate.mjs` (run first by `make istio-check`) writes each
//! one to target/istio-plugin-configs/: `<name>.json` holds the bytes Envoy hands
//! the plugin (Istio's JSON of `pluginConfig`, or the StringValue's text), and
//! `<name>.env.json` the environment of its VM (vmConfig.env / environment_variables,
//! with HOST values taken from the Deployment in the same directory and a
//! placeholder for those that come from a Secret).
//!
//! Ignored by a plain `cargo test`, which has not run the validator; `make
//! istio-check` runs it with `--ignored` after the validator, and then a
//! missing or empty directory fails.

// Test code, where a failed expectation is a failed test: the lints that keep the filter from
// panicking (Cargo.toml, [lints]) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use tracebridge::config::Config;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/istio-plugin-configs")
}

/// Every `{"env": "NAME"}` in a configuration: the variables it reads.
fn env_references(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            if let (1, Some(Value::String(name))) = (object.len(), object.get("env")) {
                out.insert(name.clone());
            }
            object.values().for_each(|v| env_references(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| env_references(v, out)),
        _ => {}
    }
}

/// One test, so that nothing else in this binary sees the environment changes.
#[test]
#[ignore = "needs target/istio-plugin-configs from tests/istio/validate.mjs: run `make istio-check`"]
fn every_plugin_configuration_under_envoy_istio_is_accepted() {
    let dir = configs_dir();
    let entries = fs::read_dir(&dir).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; `make istio-check` creates it (node tests/istio/validate.mjs)",
            dir.display()
        )
    });
    let mut configs: Vec<PathBuf> = entries
        .map(|entry| entry.expect("read_dir entry").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".json") && !name.ends_with(".env.json")
        })
        .collect();
    configs.sort();
    assert!(
        !configs.is_empty(),
        "{} holds no plugin configuration; `make istio-check` writes them",
        dir.display()
    );

    let mut failures = Vec::new();
    for path in &configs {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = fs::read(path).expect("read configuration");
        let env_path = path.with_file_name(name.replace(".json", ".env.json"));
        let env: BTreeMap<String, String> = serde_json::from_slice(
            &fs::read(&env_path).unwrap_or_else(|e| panic!("{}: {e}", env_path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", env_path.display()));

        let mut referenced = BTreeSet::new();
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            env_references(&value, &mut referenced);
        }
        // Only the VM's environment counts, not whatever this shell exports.
        for variable in referenced.iter().chain(env.keys()) {
            std::env::remove_var(variable);
        }
        for (variable, value) in &env {
            std::env::set_var(variable, value);
        }
        let parsed = Config::from_json(&bytes);
        for variable in env.keys() {
            std::env::remove_var(variable);
        }
        match parsed {
            Ok(config) => println!("ok   {name}: {}", config.summary()),
            Err(error) => failures.push(format!(
                "{name}: tracebridge: invalid configuration: {error}"
            )),
        }
        // A configuration that reads variables must fail without them, so the
        // check above really depended on the VM environment the manifests give.
        if !referenced.is_empty() && Config::from_json(&bytes).is_ok() {
            failures.push(format!(
                "{name}: reads {referenced:?} but was accepted without them"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
