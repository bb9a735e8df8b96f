//! One control request through the real `mosquitto_rr` (MQTT v5 request/response), the way an
//! admin script would send it.

use std::process::{Command, Stdio};

pub const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// Sends `payload` as `user`/`password` to the broker on 127.0.0.1:`port` and returns the reply
/// (without the trailing newline), or `Err` with what mosquitto_rr printed.
pub fn request(port: u16, user: &str, password: &str, payload: &str) -> Result<String, String> {
    let output = Command::new("mosquitto_rr")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", user, "-P", password])
        .args(["-t", REQUEST_TOPIC, "-e", RESPONSE_TOPIC, "-W", "10", "-m", payload])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run mosquitto_rr (install mosquitto-clients; scripts/test.sh does): {e}"))?;
    if !output.status.success() {
        return Err(format!("mosquitto_rr exited with {}: {}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim_end_matches('\n').to_owned())
}
