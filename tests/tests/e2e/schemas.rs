//! The JSON Schemas in `schemas/` against everything the golden scripts send and receive, and
//! against configuration files: our snapshots, `dynsec init`'s, and the examples in `config/`.
//!
//! Requests: every command whose own reply succeeded must validate, unless the script marks it
//! `#lenient` (it only works because of mosquitto's lenient parsing — case-insensitive keys,
//! wrong-typed optional fields silently defaulted). A payload refused at the envelope must not.

use std::path::{Path, PathBuf};

use dynsec::commands::Admin;
use dynsec::{Dynsec, Options};
use serde_json::Value;

use dynsec::golden;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("schemas").join(name)).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[test]
fn golden_requests_and_replies_match_the_schemas() {
    let (request_schema, response_schema, file_schema) = (
        schema("control-request.schema.json"),
        schema("control-response.schema.json"),
        schema("dynamic-security.schema.json"),
    );
    let mut failures = Vec::new();
    let mut checked_requests = 0;
    for path in golden::scripts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ds.json");
        let (engine, _) = Dynsec::open_or_init(&file, Options::default(), "admin", || "pw".into()).unwrap();
        for step in golden::parse_script(&path) {
            let at = format!("{}:{}", path.display(), step.line);
            let reply: Value = serde_json::from_str(&step.expected).unwrap();
            for e in errors(&response_schema, &reply) {
                failures.push(format!("{at}: reply: {e}"));
            }
            let envelope_refused =
                step.expected.contains(r#""command":"Unknown command","error":"Payload not valid JSON""#)
                    || step.expected.contains(r#""command":"Unknown command","error":"Invalid/missing commands""#);
            let request: Option<Value> = serde_json::from_str(&step.request).ok();
            if let Some(req) = &request
                && envelope_refused
                && request_schema.is_valid(req)
            {
                failures.push(format!("{at}: the schema accepts a request the broker refuses"));
            }
            // Each command whose own reply succeeded, in a batch answered command by command.
            let commands = request.as_ref().and_then(|r| r.get("commands")).and_then(Value::as_array);
            let replies = reply.get("responses").and_then(Value::as_array);
            if let (Some(commands), Some(replies), false) = (commands, replies, step.lenient)
                && commands.len() == replies.len()
            {
                for (command, reply) in commands.iter().zip(replies) {
                    if reply.get("error").is_none() {
                        checked_requests += 1;
                        let single = serde_json::json!({ "commands": [command] });
                        for e in errors(&request_schema, &single) {
                            failures.push(format!("{at}: request: {e}"));
                        }
                    }
                }
            }
            engine.handle_control(step.request.as_bytes(), Admin::default());
        }
        engine.flush().unwrap();
        let snapshot: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for e in errors(&file_schema, &snapshot) {
            failures.push(format!("{}: snapshot: {e}", path.display()));
        }
    }
    assert!(checked_requests >= 60, "too few canonical requests checked: {checked_requests}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn example_configuration_files_match_the_file_schema() {
    let file_schema = schema("dynamic-security.schema.json");
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let errs = errors(&file_schema, &doc);
            assert!(errs.is_empty(), "{}: {errs:?}", path.display());
            // And the loader reads it without complaint.
            let (_, warnings) = dynsec::file::load(&std::fs::read(&path).unwrap()).unwrap();
            assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "no example configuration in config/");
}

#[test]
fn the_file_schema_rejects_wrong_types() {
    let file_schema = schema("dynamic-security.schema.json");
    for bad in [
        r#"{"clients":{}}"#,
        r#"{"clients":[{"textname":"no username"}]}"#,
        r#"{"roles":[{"rolename":"r","acls":[{"acltype":"subscribe","topic":"x"}]}]}"#,
        r#"{"defaultACLAccess":{"subscribe":"yes"}}"#,
    ] {
        assert!(!file_schema.is_valid(&serde_json::from_str(bad).unwrap()), "{bad}");
    }
}
