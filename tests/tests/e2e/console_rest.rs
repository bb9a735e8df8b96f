//! The console's REST API, step 2 (docs/console.md): every dynsec command family through REST with
//! the MQTT answers and errors, kicks and the audit trail shared with MQTT, read-only versus admin
//! rights from dynsec roles, application tokens, the UI session's CSRF protection, the login
//! throttle shared with MQTT, connected clients with kick, explain, OpenAPI, and bad input.

use std::path::Path;

use dynsec_broker::testkit::RawClient;
use dynsec_tests::console::serde_json_like::{Value, text};
use dynsec_tests::console::{ADMIN, ADMIN_PASSWORD, ConsoleBroker, Response, basic};
use dynsec_tests::dynsec_target::{Login, credentials, kicked, login};

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

const P: &str = "/api/dynsec/v1";

fn ok(response: &Response) -> Value {
    assert!((200..300).contains(&response.status), "{response:?}");
    if response.body.is_empty() { Value::Null } else { response.json() }
}

fn error(response: &Response, status: u16) -> String {
    assert_eq!(response.status, status, "{response:?}");
    text(&response.json(), "error").unwrap_or_else(|| panic!("no error text: {response:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_family_through_rest_with_mqtt_answers() {
    let c = ConsoleBroker::start(ours(), "");
    // Roles and ACLs.
    ok(&c.admin("POST", &format!("{P}/roles"), r#"{"rolename":"sensors","textname":"Sensors"}"#));
    assert_eq!(error(&c.admin("POST", &format!("{P}/roles"), r#"{"rolename":"sensors"}"#), 409), "Role already exists");
    ok(&c.admin(
        "POST",
        &format!("{P}/roles/sensors/acls"),
        r#"{"acltype":"publishClientSend","topic":"sensors/#","priority":5,"allow":true}"#,
    ));
    ok(&c.admin("PATCH", &format!("{P}/roles/sensors"), r#"{"textdescription":"all sensors"}"#));
    let role = ok(&c.admin("GET", &format!("{P}/roles/sensors"), ""));
    let role = role.get("role").expect("role");
    assert_eq!(text(role, "textdescription").as_deref(), Some("all sensors"));
    assert_eq!(role.get("acls").and_then(Value::as_array).map(<[Value]>::len), Some(1));
    // The error text is the engine's, as over MQTT (`Role not found`).
    assert_eq!(error(&c.admin("GET", &format!("{P}/roles/nope"), ""), 404), "Role not found");
    // Clients.
    ok(&c.admin("POST", &format!("{P}/clients"), r#"{"username":"dev1","password":"pw1"}"#));
    ok(&c.admin("POST", &format!("{P}/clients/dev1/roles"), r#"{"rolename":"sensors","priority":1}"#));
    ok(&c.admin("PUT", &format!("{P}/clients/dev1/clientid"), r#"{"clientid":"dev1-id"}"#));
    ok(&c.admin("PUT", &format!("{P}/clients/dev1/password"), r#"{"password":"pw2"}"#));
    ok(&c.admin("PATCH", &format!("{P}/clients/dev1"), r#"{"textname":"Device one"}"#));
    ok(&c.admin("POST", &format!("{P}/clients/dev1/disable"), ""));
    ok(&c.admin("POST", &format!("{P}/clients/dev1/enable"), ""));
    let client = ok(&c.admin("GET", &format!("{P}/clients/dev1"), ""));
    let client = client.get("client").expect("client");
    assert_eq!(text(client, "clientid").as_deref(), Some("dev1-id"));
    assert_eq!(text(client, "textname").as_deref(), Some("Device one"));
    assert_eq!(error(&c.admin("GET", &format!("{P}/clients/ghost"), ""), 404), "Client not found");
    let list = ok(&c.admin("GET", &format!("{P}/clients?verbose=false&count=10&offset=0"), ""));
    assert_eq!(list.get("totalCount").and_then(Value::as_int), Some(2), "{list:?}");
    // Groups and the anonymous group.
    ok(&c.admin("POST", &format!("{P}/groups"), r#"{"groupname":"fleet"}"#));
    ok(&c.admin("POST", &format!("{P}/groups/fleet/clients"), r#"{"username":"dev1","priority":2}"#));
    ok(&c.admin("POST", &format!("{P}/groups/fleet/roles"), r#"{"rolename":"sensors"}"#));
    ok(&c.admin("PATCH", &format!("{P}/groups/fleet"), r#"{"textname":"The fleet"}"#));
    let group = ok(&c.admin("GET", &format!("{P}/groups/fleet"), ""));
    assert_eq!(
        group.get("group").and_then(|g| g.get("clients")).and_then(Value::as_array).map(<[Value]>::len),
        Some(1)
    );
    ok(&c.admin("GET", &format!("{P}/groups"), ""));
    ok(&c.admin("PUT", &format!("{P}/anonymous-group"), r#"{"groupname":"fleet"}"#));
    let anonymous = ok(&c.admin("GET", &format!("{P}/anonymous-group"), ""));
    assert_eq!(anonymous.get("group").and_then(|g| text(g, "groupname")).as_deref(), Some("fleet"));
    // Default ACL access.
    ok(&c.admin("PUT", &format!("{P}/default-acl-access"), r#"{"acls":[{"acltype":"subscribe","allow":true}]}"#));
    let defaults = ok(&c.admin("GET", &format!("{P}/default-acl-access"), ""));
    assert!(String::from_utf8(defaults.to_compact()).unwrap().contains(r#"{"acltype":"subscribe","allow":true}"#));
    // Removals and deletions.
    ok(&c.admin("DELETE", &format!("{P}/roles/sensors/acls?acltype=publishClientSend&topic=sensors%2F%23"), ""));
    assert_eq!(
        error(
            &c.admin("DELETE", &format!("{P}/roles/sensors/acls?acltype=publishClientSend&topic=sensors%2F%23"), ""),
            404
        ),
        "ACL not found"
    );
    ok(&c.admin("DELETE", &format!("{P}/groups/fleet/roles/sensors"), ""));
    ok(&c.admin("DELETE", &format!("{P}/groups/fleet/clients/dev1"), ""));
    ok(&c.admin("DELETE", &format!("{P}/clients/dev1/roles/sensors"), ""));
    ok(&c.admin("DELETE", &format!("{P}/clients/dev1"), ""));
    ok(&c.admin("DELETE", &format!("{P}/roles/sensors"), ""));
    // A whole $CONTROL payload: the MQTT response, byte for byte what MQTT would answer.
    let batch = c.admin("POST", &format!("{P}/commands"), r#"{"commands":[{"command":"getRole","rolename":"nope"}]}"#);
    assert_eq!(ok(&batch).to_compact(), br#"{"responses":[{"command":"getRole","error":"Role not found"}]}"#);
    let mut admin =
        RawClient::connected(c.mqtt, &credentials(5, "mqtt-admin", Some(ADMIN), Some(ADMIN_PASSWORD.as_bytes()))).await;
    admin.subscribe(1, &[("$CONTROL/dynamic-security/v1/response", 0)]).await;
    admin
        .publish(
            "$CONTROL/dynamic-security/v1",
            br#"{"commands":[{"command":"getRole","rolename":"nope"}]}"#,
            0,
            false,
            0,
        )
        .await;
    let reply = admin.expect_publish().await;
    assert_eq!(reply.payload, batch.body.as_bytes());
    // The MQTT request is in the same audit trail.
    let audit = ok(&c.admin("GET", &format!("{P}/audit?limit=1"), ""));
    let newest = String::from_utf8(audit.to_compact()).unwrap();
    assert!(newest.contains(r#""via":"mqtt","clientid":"mqtt-admin","username":"admin""#), "{newest}");
    assert!(newest.contains(r#""error":"Role not found""#), "{newest}");
    // Bad input: 4xx with a clear message, never a crash.
    assert!(error(&c.admin("POST", &format!("{P}/roles"), "{not json"), 400).contains("not valid JSON"));
    assert!(error(&c.admin("POST", &format!("{P}/roles"), "[1,2]"), 400).contains("JSON object"));
    let huge = format!(r#"{{"rolename":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    assert_eq!(c.admin("POST", &format!("{P}/roles"), &huge).status, 413);
    assert_eq!(c.admin("GET", &format!("{P}/clients?count=lots"), "").status, 400);
    let spec = ok(&c.request("GET", &format!("{P}/openapi.json"), &[], ""));
    assert_eq!(text(&spec, "openapi").as_deref(), Some("3.1.0"));
    assert!(spec.get("paths").and_then(|p| p.get("/api/dynsec/v1/clients/{username}")).is_some());
    c.broker.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_changes_kick_and_are_audited_like_mqtt_ones() {
    let c = ConsoleBroker::start(ours(), "");
    ok(&c.admin("POST", &format!("{P}/clients"), r#"{"username":"victim","password":"pw"}"#));
    let (accepted, client) = login(c.mqtt, &credentials(5, "victim-1", Some("victim"), Some(b"pw"))).await;
    assert_eq!(accepted, Login::Connack(0));
    let mut client = client.expect("connected");
    ok(&c.admin("POST", &format!("{P}/clients/victim/disable"), ""));
    assert_eq!(kicked(&mut client).await, Some(0x98), "disabled through REST: kicked as through MQTT");
    let audit = ok(&c.admin("GET", &format!("{P}/audit?limit=10"), ""));
    let entries = String::from_utf8(audit.to_compact()).unwrap();
    assert!(
        entries.contains(r#""via":"rest""#) && entries.contains(r#""command":"disableClient","username":"victim""#),
        "{entries}"
    );
    assert!(!entries.contains(r#""pw""#), "no password in the audit trail: {entries}");
    // On disk, beside the dynsec configuration.
    let file = std::fs::read_to_string(c.dir().join("dynamic-security.json.audit.jsonl")).unwrap();
    assert!(file.contains("createClient") && file.contains("disableClient"), "{file}");
}

/// Creates a client `name` with password `name-pw` and a role with these ACLs.
fn client_with_acls(c: &ConsoleBroker, name: &str, acls: &[(&str, &str)]) {
    ok(&c.admin("POST", &format!("{P}/roles"), &format!(r#"{{"rolename":"{name}-role"}}"#)));
    for (acltype, topic) in acls {
        let body = format!(r#"{{"acltype":"{acltype}","topic":"{topic}","allow":true}}"#);
        ok(&c.admin("POST", &format!("{P}/roles/{name}-role/acls"), &body));
    }
    let body = format!(r#"{{"username":"{name}","password":"{name}-pw","roles":[{{"rolename":"{name}-role"}}]}}"#);
    ok(&c.admin("POST", &format!("{P}/clients"), &body));
}

#[test]
fn read_only_and_admin_rights_come_from_dynsec_roles() {
    let c = ConsoleBroker::start(ours(), "");
    client_with_acls(&c, "viewer", &[("subscribePattern", "$CONTROL/dynamic-security/#")]);
    client_with_acls(&c, "nobody", &[("subscribePattern", "other/#")]);
    let viewer = basic("viewer", "viewer-pw");
    let as_viewer = |method: &str, path: &str, body: &str| c.request(method, path, &[("Authorization", &viewer)], body);
    assert_eq!(text(&ok(&as_viewer("GET", &format!("{P}/me"), "")), "level").as_deref(), Some("read"));
    ok(&as_viewer("GET", &format!("{P}/clients"), ""));
    ok(&as_viewer("GET", &format!("{P}/roles/viewer-role"), ""));
    assert!(error(&as_viewer("POST", &format!("{P}/clients"), r#"{"username":"x"}"#), 403).contains("read-only"));
    assert_eq!(as_viewer("DELETE", &format!("{P}/roles/viewer-role"), "").status, 403);
    ok(&as_viewer(
        "POST",
        &format!("{P}/commands"),
        r#"{"commands":[{"command":"listRoles"},{"command":"getClient","username":"viewer"}]}"#,
    ));
    assert_eq!(
        as_viewer(
            "POST",
            &format!("{P}/commands"),
            r#"{"commands":[{"command":"listRoles"},{"command":"deleteClient","username":"admin"}]}"#
        )
        .status,
        403
    );
    assert_eq!(as_viewer("POST", &format!("{P}/connected/x/kick"), "").status, 403);
    // A client without console rights, and no credentials at all.
    assert_eq!(
        c.request("GET", &format!("{P}/clients"), &[("Authorization", &basic("nobody", "nobody-pw"))], "").status,
        403
    );
    let anonymous = c.request("GET", &format!("{P}/clients"), &[], "");
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_some());
    // Rights follow the roles at once: the viewer's role gains the send right.
    let body = r#"{"acltype":"publishClientSend","topic":"$CONTROL/dynamic-security/v1","allow":true}"#;
    ok(&c.admin("POST", &format!("{P}/roles/viewer-role/acls"), body));
    assert_eq!(text(&ok(&as_viewer("GET", &format!("{P}/me"), "")), "level").as_deref(), Some("admin"));
    ok(&as_viewer("POST", &format!("{P}/groups"), r#"{"groupname":"made-by-viewer"}"#));
}

#[test]
fn application_tokens_life_cycle() {
    let c = ConsoleBroker::start(ours(), "");
    let created = c.admin("POST", &format!("{P}/tokens"), r#"{"name":"ci","scope":"read","expiresIn":86400}"#);
    assert_eq!(created.status, 201, "{created:?}");
    let created = created.json();
    let token = text(&created, "token").expect("the token, once");
    let id = text(&created, "id").expect("id");
    let bearer = format!("Bearer {token}");
    let with_token =
        |method: &str, path: &str, body: &str| c.request(method, path, &[("Authorization", &bearer)], body);
    ok(&with_token("GET", &format!("{P}/clients"), ""));
    assert_eq!(with_token("POST", &format!("{P}/roles"), r#"{"rolename":"r"}"#).status, 403, "read scope");
    assert_eq!(
        with_token("POST", &format!("{P}/tokens"), r#"{"name":"more"}"#).status,
        403,
        "tokens cannot make tokens"
    );
    // Stored hashed: the secret is not in the file.
    let file = std::fs::read_to_string(c.dir().join("dynamic-security.json.console-tokens.json")).unwrap();
    // (The random part may itself contain `_`: it is everything after `dct_<id>_`.)
    assert!(file.contains(&id) && !file.contains(token.splitn(3, '_').nth(2).unwrap()), "{file}");
    let listed = ok(&c.admin("GET", &format!("{P}/tokens"), ""));
    assert!(!String::from_utf8(listed.to_compact()).unwrap().contains(&token));
    // An admin token may write; a read-only user cannot make one.
    let admin_token =
        text(&c.admin("POST", &format!("{P}/tokens"), r#"{"name":"deploy","scope":"admin"}"#).json(), "token").unwrap();
    let admin_bearer = format!("Bearer {admin_token}");
    ok(&c.request("POST", &format!("{P}/roles"), &[("Authorization", &admin_bearer)], r#"{"rolename":"by-token"}"#));
    client_with_acls(&c, "viewer", &[("subscribePattern", "$CONTROL/dynamic-security/#")]);
    let viewer = basic("viewer", "viewer-pw");
    assert_eq!(
        c.request("POST", &format!("{P}/tokens"), &[("Authorization", &viewer)], r#"{"name":"x","scope":"admin"}"#)
            .status,
        403
    );
    assert_eq!(c.admin("POST", &format!("{P}/tokens"), r#"{"name":"x","scope":"root"}"#).status, 400);
    assert_eq!(c.admin("POST", &format!("{P}/tokens"), r#"{"name":"x","expiresIn":-5}"#).status, 400);
    // Revoked: refused at once.
    assert_eq!(c.admin("DELETE", &format!("{P}/tokens/{id}"), "").status, 204);
    assert_eq!(with_token("GET", &format!("{P}/clients"), "").status, 401);
    assert_eq!(c.admin("DELETE", &format!("{P}/tokens/{id}"), "").status, 404);
    assert_eq!(
        c.request("GET", &format!("{P}/clients"), &[("Authorization", "Bearer dct_forged_secret")], "").status,
        401
    );
}

#[test]
fn ui_sessions_need_the_csrf_token_for_changes() {
    let c = ConsoleBroker::start(ours(), "");
    let bad = c.request("POST", &format!("{P}/login"), &[], &format!(r#"{{"username":"{ADMIN}","password":"wrong"}}"#));
    assert_eq!(bad.status, 401);
    assert!(bad.header("www-authenticate").is_none(), "no browser prompt for the form");
    let login = c.request(
        "POST",
        &format!("{P}/login"),
        &[],
        &format!(r#"{{"username":"{ADMIN}","password":"{ADMIN_PASSWORD}"}}"#),
    );
    assert_eq!(login.status, 200, "{login:?}");
    let set_cookie = login.header("set-cookie").expect("a session cookie").to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = text(&login.json(), "csrf").expect("csrf token");
    ok(&c.request("GET", &format!("{P}/clients"), &[("Cookie", &cookie)], ""));
    let me = ok(&c.request("GET", &format!("{P}/me"), &[("Cookie", &cookie)], ""));
    assert_eq!(text(&me, "csrf").as_deref(), Some(csrf.as_str()));
    let create =
        |headers: &[(&str, &str)]| c.request("POST", &format!("{P}/roles"), headers, r#"{"rolename":"from-ui"}"#);
    assert!(error(&create(&[("Cookie", &cookie)]), 403).contains("X-CSRF-Token"));
    assert_eq!(create(&[("Cookie", &cookie), ("X-CSRF-Token", "forged")]).status, 403);
    ok(&create(&[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]));
    let audit = ok(&c.admin("GET", &format!("{P}/audit"), ""));
    assert!(String::from_utf8(audit.to_compact()).unwrap().contains(r#""via":"ui""#));
    // Logging out needs the token too, and ends the session.
    assert_eq!(c.request("POST", &format!("{P}/logout"), &[("Cookie", &cookie)], "").status, 403);
    assert_eq!(
        c.request("POST", &format!("{P}/logout"), &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], "").status,
        204
    );
    assert_eq!(c.request("GET", &format!("{P}/clients"), &[("Cookie", &cookie)], "").status, 401);
    assert_eq!(c.request("GET", &format!("{P}/clients"), &[("Cookie", "dynsec_console=forged")], "").status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_console_logins_are_throttled_with_mqtt_ones() {
    let c = ConsoleBroker::start(ours(), "gate_login_failures_per_address 3\n");
    for _ in 0..3 {
        assert_eq!(
            c.request("GET", &format!("{P}/clients"), &[("Authorization", &basic(ADMIN, "wrong"))], "").status,
            401
        );
    }
    // The address is refused now, even with the right password: on REST and on MQTT alike.
    assert_eq!(c.admin("GET", &format!("{P}/clients"), "").status, 401);
    let (answer, _) =
        login(c.mqtt, &credentials(5, "after-throttle", Some(ADMIN), Some(ADMIN_PASSWORD.as_bytes()))).await;
    assert_eq!(answer, Login::Connack(0x87));
    let metrics = c.request("GET", "/healthz", &[], "");
    assert_eq!(metrics.status, 200, "the broker is fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn connected_clients_kick_and_explain() {
    let c = ConsoleBroker::start(ours(), "");
    client_with_acls(&c, "device", &[("publishClientSend", "devices/%c/#"), ("subscribePattern", "devices/%c/#")]);
    let (accepted, client) = login(c.mqtt, &credentials(5, "dev-7", Some("device"), Some(b"device-pw"))).await;
    assert_eq!(accepted, Login::Connack(0));
    let mut client = client.expect("connected");
    client.subscribe(1, &[("devices/dev-7/cmd", 1)]).await;
    let listed = ok(&c.admin("GET", &format!("{P}/connected?username=dev"), ""));
    let clients = listed.get("clients").and_then(Value::as_array).unwrap().to_vec();
    assert_eq!(clients.len(), 1, "{listed:?}");
    assert_eq!(text(&clients[0], "clientid").as_deref(), Some("dev-7"));
    assert_eq!(text(&clients[0], "address").as_deref(), Some("127.0.0.1"));
    assert_eq!(clients[0].get("connected").and_then(Value::as_bool), Some(true));
    assert_eq!(text(&clients[0], "protocol").as_deref(), Some("5"));
    assert_eq!(clients[0].get("inflight").and_then(Value::as_int), Some(0));
    assert_eq!(clients[0].get("queued").and_then(Value::as_int), Some(0));
    let subscriptions = String::from_utf8(clients[0].get("subscriptions").unwrap().to_compact()).unwrap();
    assert_eq!(subscriptions, r#"["devices/dev-7/cmd"]"#);
    let none = ok(&c.admin("GET", &format!("{P}/connected?clientid=zzz"), ""));
    assert_eq!(none.get("clients").and_then(Value::as_array).map(<[Value]>::len), Some(0));

    let explained =
        ok(&c.admin("GET", &format!("{P}/explain?clientid=dev-7&topic=devices/dev-7/t&action=publishClientSend"), ""));
    assert_eq!(text(&explained, "decision").as_deref(), Some("allow"), "{explained:?}");
    let rule = explained.get("rule").expect("the deciding ACL");
    assert_eq!(text(rule, "role").as_deref(), Some("device-role"));
    assert_eq!(text(rule, "topic").as_deref(), Some("devices/%c/#"));
    let denied = ok(&c.admin(
        "GET",
        &format!("{P}/explain?username=device&clientid=dev-7&topic=elsewhere&action=publishClientSend"),
        "",
    ));
    assert_eq!(text(&denied, "decision").as_deref(), Some("deny"));
    assert!(text(&denied, "reason").unwrap().contains("no ACL matches"));
    assert_eq!(c.admin("GET", &format!("{P}/explain?username=device&topic=t&action=fly"), "").status, 400);

    assert_eq!(c.admin("POST", &format!("{P}/connected/dev-7/kick"), "").status, 204);
    assert_eq!(kicked(&mut client).await, Some(0x98));
    assert_eq!(c.admin("POST", &format!("{P}/connected/nobody-here/kick"), "").status, 404);
    let audit = ok(&c.admin("GET", &format!("{P}/audit"), ""));
    assert!(String::from_utf8(audit.to_compact()).unwrap().contains(r#""command":"kickClient","clientid":"dev-7""#));
    let metrics = c.admin("GET", "/metrics", "").body;
    assert!(metrics.contains(r#"broker_kicks_total{reason="console"} 1"#), "{metrics}");
    // The session is kept: the client may come back.
    let (again, _) = login(c.mqtt, &credentials(5, "dev-7", Some("device"), Some(b"device-pw"))).await;
    assert_eq!(again, Login::Connack(0));
}
