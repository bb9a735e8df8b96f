//! An admin connection to `$CONTROL/dynamic-security/v1` over the raw test client, for load and
//! fault programs (crash harness, soak) that must count failures instead of panicking on them.

use std::net::SocketAddr;
use std::time::Duration;

use dynsec::json::{self, Json};
use dynsec_broker::testkit::{Connect, Next, PUBLISH, RawClient};

pub const REQUEST: &str = "$CONTROL/dynamic-security/v1";
pub const RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";
/// Upper bound for any single wait on the broker.
pub const WAIT: Duration = Duration::from_secs(10);

/// Connects as `username` (MQTT 5) and subscribes to the response topic.
pub async fn admin(addr: SocketAddr, client_id: &str, username: &str, password: &str) -> Result<RawClient, String> {
    let mut connect = Connect::new(5, client_id);
    connect.username = Some(username.into());
    connect.password = Some(password.as_bytes().to_vec());
    let mut client = RawClient::try_open(addr).await.map_err(|e| format!("admin cannot connect: {e}"))?;
    client.v5 = true;
    client.send(&connect.encode()).await;
    match client.next(WAIT).await {
        Next::Frame(f) if f.reason() == 0 => {}
        other => return Err(format!("admin not connected: {other:?}")),
    }
    client.subscribe(1, &[(RESPONSE, 0)]).await;
    Ok(client)
}

/// Sends one control request and returns the `responses` array of its reply, or `None` if the
/// connection ended or no reply came within [`WAIT`].
pub async fn request(client: &mut RawClient, payload: &str, pkid: u16) -> Option<Vec<Json>> {
    client.publish(REQUEST, payload.as_bytes(), 1, false, pkid).await;
    loop {
        match client.next(WAIT).await {
            Next::Frame(frame) if frame.packet_type == PUBLISH => {
                let received = frame.publish(true);
                if received.topic == RESPONSE {
                    return json::parse(&received.payload).ok()?.get("responses")?.as_array().map(<[Json]>::to_vec);
                }
            }
            Next::Frame(_) => continue,
            Next::Closed | Next::Timeout => return None,
        }
    }
}

/// The `error` of a response object, if it has one.
pub fn error_of(response: &Json) -> Option<String> {
    response.get("error").and_then(Json::as_bytes).map(|e| String::from_utf8_lossy(e).into_owned())
}
