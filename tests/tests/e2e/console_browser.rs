//! The console's web UI in a real headless Chromium (issue 19, step 4), driven through the
//! DevTools protocol as a user would drive it (filling the page's forms and pressing its buttons):
//! log in; create a role with ACLs, a client with a password, and assign the role (the "Get
//! started" form, then a second ACL on the Roles page); a real MQTT client connects and publishes
//! (accepted); the Connected page shows it; kick it from there (the client gets DISCONNECT 0x98);
//! the Audit page shows every step, made through the UI.
//!
//! With `DYNSEC_CONSOLE_SCREENSHOTS=<dir>` the main pages are saved there as PNG (that is how the
//! screenshots in docs/console/ were made). Skipped, loudly, only when /usr/bin/chromium is
//! missing (scripts/test.sh installs it).

use std::path::{Path, PathBuf};

use dynsec_broker::testkit::PUBACK;
use dynsec_tests::chromium::{Browser, CHROMIUM, DevTools};
use dynsec_tests::console::{ADMIN, ADMIN_PASSWORD, ConsoleBroker};
use dynsec_tests::dynsec_target::{Login, credentials, kicked, login};

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

/// The page, as the test sees it.
struct Page {
    devtools: DevTools,
    session: String,
    screenshots: Option<PathBuf>,
}

impl Page {
    async fn eval(&mut self, expression: &str) -> serde_json::Value {
        self.devtools.eval(&self.session, expression).await
    }

    async fn wait_for(&mut self, what: &str, expression: &str) {
        if !self.devtools.wait_for(&self.session, expression).await {
            let text = self.eval("document.body.innerText").await;
            panic!("the page never showed {what}; it shows:\n{text}");
        }
    }

    /// Fills the form labelled `form` (by input name) and submits it like a user pressing Enter.
    async fn submit(&mut self, form: &str, values: &[(&str, &str)]) {
        let values =
            serde_json::to_string(&values.iter().copied().collect::<std::collections::BTreeMap<_, _>>()).unwrap();
        let script = format!(
            r#"(() => {{ const f = document.querySelector('form[aria-label="{form}"]'); if (!f) return false;
                for (const [k, v] of Object.entries({values})) f.elements[k].value = v;
                f.requestSubmit(); return true; }})()"#
        );
        self.wait_for(
            &format!("the form {form}"),
            &format!(r#"!!document.querySelector('form[aria-label="{form}"]')"#),
        )
        .await;
        assert_eq!(self.eval(&script).await, serde_json::json!(true), "form {form}");
    }

    async fn message_says(&mut self, text: &str) {
        let expression = format!("document.getElementById('message').textContent.includes({text:?})");
        self.wait_for(&format!("the message {text:?}"), &expression).await;
    }

    async fn go(&mut self, hash: &str, ready: &str) {
        self.eval(&format!("location.hash = {hash:?}; true")).await;
        self.wait_for(&format!("page {hash}"), ready).await;
    }

    async fn screenshot(&mut self, name: &str) {
        let Some(dir) = self.screenshots.clone() else { return };
        let png = self.devtools.screenshot(&self.session).await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("save the screenshot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_takes_a_device_from_login_to_publishing_then_kicks_it() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!(
            "\n*** SKIPPED the console UI test: {CHROMIUM} is missing (apt-get install chromium; scripts/test.sh does) ***\n"
        );
        return;
    }
    let c = ConsoleBroker::start(ours(), "");
    let url = format!("http://{}/console/", c.http);
    let mut browser = Browser::launch(&url, &["--window-size=1280,900".to_owned()]);
    let mut devtools = DevTools::connect(&browser.devtools_url().await).await;
    let session = devtools.attach_page("/console/").await.unwrap_or_else(|| panic!("no page: {}", browser.log()));
    let screenshots = std::env::var_os("DYNSEC_CONSOLE_SCREENSHOTS").map(PathBuf::from);
    let mut page = Page { devtools, session, screenshots };

    // 1. Log in.
    page.wait_for(
        "the login form",
        r#"!!document.querySelector('form[aria-label="Log in with a dynamic-security client"]')"#,
    )
    .await;
    page.screenshot("login").await;
    page.submit("Log in with a dynamic-security client", &[("username", ADMIN), ("password", "wrong")]).await;
    page.message_says("Login failed").await;
    page.submit("Log in with a dynamic-security client", &[("username", ADMIN), ("password", ADMIN_PASSWORD)]).await;
    page.wait_for("the navigation", "!document.getElementById('nav').hidden").await;

    // 2. A role with ACLs, a client with a password, the role assigned.
    page.submit(
        "Quick setup",
        &[
            ("rolename", "devices"),
            ("topic", "devices/+/telemetry"),
            ("username", "device1"),
            ("password", "device-pw"),
        ],
    )
    .await;
    page.message_says("Quick setup: done").await;
    page.screenshot("get-started").await;
    page.go("#/roles", r#"!!document.querySelector('form[aria-label="Add an ACL to a role"]')"#).await;
    page.submit(
        "Add an ACL to a role",
        &[
            ("rolename", "devices"),
            ("acltype", "subscribePattern"),
            ("topic", "devices/#"),
            ("priority", "1"),
            ("allow", "allow"),
        ],
    )
    .await;
    page.message_says("Add ACL: done").await;
    page.wait_for("the role's ACLs", "document.querySelector('main').textContent.includes('subscribePattern')").await;
    page.screenshot("roles").await;
    page.go("#/clients", "document.querySelector('main table').textContent.includes('device1')").await;
    page.screenshot("clients").await;

    // 3. A real MQTT client connects and publishes: accepted (v5 PUBACK 0).
    let (accepted, client) = login(c.mqtt, &credentials(5, "device1", Some("device1"), Some(b"device-pw"))).await;
    assert_eq!(accepted, Login::Connack(0));
    let mut client = client.expect("connected");
    client.publish("devices/device1/telemetry", b"21.5", 1, false, 1).await;
    assert_eq!(client.expect(PUBACK).await.reason(), 0, "the role lets it publish");

    // 4. The connected-clients view shows it.
    page.go("#/connected", "document.querySelector('main table').textContent.includes('device1')").await;
    page.screenshot("connected").await;

    // 5. Kick it from there.
    let clicked = page
        .eval(
            "(() => { const row = [...document.querySelectorAll('main tbody tr')].find((r) => r.textContent.includes('device1'));
               const button = row && row.querySelector('button'); if (!button) return false; button.click(); return true; })()",
        )
        .await;
    assert_eq!(clicked, serde_json::json!(true));
    page.message_says("Kick device1: done").await;
    assert_eq!(kicked(&mut client).await, Some(0x98), "kicked as by a dynsec change");

    // 6. The audit trail shows all of it, made through the UI.
    page.go("#/audit", "document.querySelector('main table').textContent.includes('kickClient')").await;
    let rows = page
        .eval("[...document.querySelectorAll('main tbody tr')].map((r) => [...r.cells].slice(1).map((c) => c.textContent).join('|'))")
        .await;
    let rows: Vec<String> = serde_json::from_value(rows).expect("rows");
    for expected in [
        "ui|admin|createRole|rolename=devices|success",
        "ui|admin|addRoleACL|rolename=devices acltype=publishClientSend topic=devices/+/telemetry|success",
        "ui|admin|createClient|username=device1|success",
        "ui|admin|addClientRole|username=device1 rolename=devices|success",
        "ui|admin|addRoleACL|rolename=devices acltype=subscribePattern topic=devices/#|success",
        "ui|admin|kickClient|clientid=device1|success",
    ] {
        assert!(rows.iter().any(|r| r == expected), "{expected} missing from the audit page: {rows:#?}");
    }
    page.screenshot("audit").await;

    // The other main pages render (for the screenshots, and as a smoke test).
    page.go("#/metrics", "document.querySelector('main table') !== null").await;
    page.screenshot("metrics").await;
    page.go("#/explain", r#"!!document.querySelector('form[aria-label="Which rule decides?"]')"#).await;
    page.submit(
        "Which rule decides?",
        &[
            ("username", "device1"),
            ("clientid", "device1"),
            ("topic", "devices/device1/telemetry"),
            ("action", "publishClientSend"),
        ],
    )
    .await;
    page.wait_for("the explanation", "document.querySelector('main pre').textContent.includes('Decision: allow')")
        .await;
    page.screenshot("explain").await;
    // The remaining pages render from the API (groups, anonymous group and defaults, tokens).
    page.go("#/groups", r#"!!document.querySelector('form[aria-label="Create a group"]')"#).await;
    page.go("#/anonymous", "document.querySelector('main').textContent.includes('publishClientSend')").await;
    page.go("#/tokens", r#"!!document.querySelector('form[aria-label="Create a token"]')"#).await;
    page.submit("Create a token", &[("name", "from-the-ui"), ("scope", "read"), ("days", "30")]).await;
    page.wait_for("the new token", "document.querySelector('main pre').textContent.includes('dct_')").await;
    c.broker.assert_no_panic();
    browser.close(page.devtools).await;
}
