//! The `broker` module of mosquitto_ctrl 2.1: `listPlugins` and `listListeners` sent to
//! `$CONTROL/broker/v1` (served by brokers with `enable_control_api true`), their replies printed
//! as mosquitto_ctrl 2.1.2 prints them, byte for byte, and `help`.

use std::io::Write;

use dynsec::json::Json;

use crate::control::{ControlClient, Endpoint};
use crate::dynsec::{eprint, prepare_connection, runtime};
use crate::exit_code;
use crate::options::ConnectionOptions;
use crate::text::{eq_ignore_case, lossy};

pub const ENDPOINT: Endpoint = Endpoint { request: "$CONTROL/broker/v1", response: "$CONTROL/broker/v1/response" };

const USAGE: &str = "\nBroker Control module\n=======================\nList plugins    :          listPlugins\nList listeners  :          listListeners\n";

/// Runs `broker <args...>`; returns the exit status.
pub fn run(args: &[Vec<u8>], options: &ConnectionOptions) -> i32 {
    let Some(word) = args.first() else {
        return exit_code::USAGE;
    };
    if eq_ignore_case(word, "help") {
        let _ = std::io::stdout().write_all(USAGE.as_bytes());
        return exit_code::OK;
    }
    let command = if eq_ignore_case(word, "listPlugins") {
        "listPlugins"
    } else if eq_ignore_case(word, "listListeners") {
        "listListeners"
    } else {
        eprint(&format!("Command '{}' not recognised.\n", lossy(word)));
        return exit_code::UNKNOWN_COMMAND;
    };
    let (credentials, tls) = match prepare_connection(options) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let Some(runtime) = runtime() else {
        return exit_code::USAGE;
    };
    let request = Json::object().with("command", Json::str(command));
    let result = runtime.block_on(async {
        let mut client = ControlClient::open_endpoint(options, &credentials, tls, ENDPOINT).await?;
        let reply = client.send(vec![request]).await;
        client.close().await;
        reply
    });
    match result {
        Ok(reply) => {
            let output = print_reply(&reply.tree, options.json_output);
            let _ = std::io::stdout().write_all(&output.0);
            let _ = std::io::stderr().write_all(&output.1);
            exit_code::OK
        }
        Err(error) => {
            eprint(&format!("{}\n", error.message()));
            error.exit_code()
        }
    }
}

/// (stdout, stderr) for a reply, as mosquitto_ctrl 2.1.2 prints it: only the first response, an
/// error as `<command>: Error: <error>.`, otherwise the plugins or listeners. `--json` prints the
/// response object as it came (without the correlationData added here).
pub fn print_reply(tree: &Json, raw_json: bool) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let Some(response) = tree.get("responses").and_then(Json::as_array).and_then(|r| r.first()) else {
        err.extend_from_slice(b"Error: Payload missing data.\n");
        return (out, err);
    };
    let Some(command) = response.get("command") else {
        err.extend_from_slice(b"Error: Payload missing data.\n");
        return (out, err);
    };
    let command = command.as_bytes().unwrap_or(b"(null)");
    if raw_json {
        let members = match response {
            Json::Object(members) => members.iter().filter(|(k, _)| k != b"correlationData").cloned().collect(),
            _ => Vec::new(),
        };
        out.extend_from_slice(&Json::Object(members).to_compact());
        out.push(b'\n');
        return (out, err);
    }
    if let Some(error) = response.get("error").and_then(Json::as_bytes) {
        err.extend_from_slice(command);
        err.extend_from_slice(b": Error: ");
        err.extend_from_slice(error);
        err.extend_from_slice(b".\n");
        return (out, err);
    }
    let data = response.get("data").filter(|d| d.is_object());
    if eq_ignore_case(command, "listPlugins") {
        match data.and_then(|d| d.get("plugins")).and_then(Json::as_array) {
            Some(plugins) => print_plugins(plugins, &mut out, &mut err),
            None => err.extend_from_slice(b"Error: Invalid response from server.\n"),
        }
    } else if eq_ignore_case(command, "listListeners") {
        match data.and_then(|d| d.get("listeners")).and_then(Json::as_array) {
            Some(listeners) => print_listeners(listeners, &mut out),
            None => err.extend_from_slice(b"Error: Invalid response from server.\n"),
        }
    }
    (out, err)
}

fn print_plugins(plugins: &[Json], out: &mut Vec<u8>, err: &mut Vec<u8>) {
    for plugin in plugins {
        let Some(name) = plugin.get("name").and_then(Json::as_bytes) else {
            err.extend_from_slice(b"Error: Invalid response from server.\n");
            return;
        };
        line(out, "Plugin:            ", name);
        if let Some(version) = plugin.get("version").and_then(Json::as_bytes) {
            line(out, "Version:           ", version);
        }
        let endpoints = plugin.get("control-endpoints").and_then(Json::as_array).unwrap_or_default();
        for (i, endpoint) in endpoints.iter().filter_map(Json::as_bytes).enumerate() {
            line(out, if i == 0 { "Control endpoints: " } else { "                   " }, endpoint);
        }
    }
}

fn print_listeners(listeners: &[Json], out: &mut Vec<u8>) {
    for (i, listener) in listeners.iter().enumerate() {
        out.extend_from_slice(format!("Listener {}:\n", i + 1).as_bytes());
        if let Some(port) = listener.get("port").and_then(Json::as_int) {
            out.extend_from_slice(format!("  Port:              {port}\n").as_bytes());
        }
        for (key, label) in [
            ("protocol", "  Protocol:          "),
            ("socket-path", "  Socket path:       "),
            ("bind-address", "  Bind address:      "),
        ] {
            if let Some(value) = listener.get(key).and_then(Json::as_bytes) {
                line(out, label, value);
            }
        }
        let tls = listener.get("tls").and_then(Json::as_bool).unwrap_or(false);
        out.extend_from_slice(format!("  TLS:               {tls}\n\n").as_bytes());
    }
}

fn line(out: &mut Vec<u8>, label: &str, value: &[u8]) {
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(reply: &str) -> (String, String) {
        let (out, err) = print_reply(&dynsec::json::parse(reply.as_bytes()).unwrap(), false);
        (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn plugins_listeners_and_errors_print_as_mosquitto_ctrl_2_1() {
        let plugins = r#"{"responses":[{"command":"listPlugins","data":{"plugins":[{"name":"dynamic-security","control-endpoints":["$CONTROL/a/v1","$CONTROL/b/v1"]}]}}]}"#;
        assert_eq!(
            printed(plugins).0,
            "Plugin:            dynamic-security\nControl endpoints: $CONTROL/a/v1\n                   $CONTROL/b/v1\n"
        );
        let listeners = r#"{"responses":[{"command":"listListeners","data":{"listeners":[{"port":1883,"protocol":"mqtt","bind-address":"::1","tls":true}]}}]}"#;
        assert_eq!(
            printed(listeners).0,
            "Listener 1:\n  Port:              1883\n  Protocol:          mqtt\n  Bind address:      ::1\n  TLS:               true\n\n"
        );
        assert_eq!(
            printed(r#"{"responses":[{"command":"x","error":"Unknown command"}]}"#).1,
            "x: Error: Unknown command.\n"
        );
        assert_eq!(printed(r#"{"error": "endpoint not available"}"#).1, "Error: Payload missing data.\n");
    }
}
