//! End-to-end MQTT behaviour of the real `dynsec-broker` binary, driven by rumqttc (3.1.1 and 5),
//! the installed mosquitto clients and raw packets: QoS 0/1/2, retained messages, wills, sessions,
//! takeover, session expiry, `$SYS`, client ids, keepalive, packet sizes, configuration and
//! shutdown.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dynsec_broker::routing::backpressure::Lane;
use dynsec_broker::testkit::{self, Connect, Next, RawClient, WAIT};
use dynsec_tests::broker::{BrokerProcess, ScratchDir};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

fn broker(config: &str) -> BrokerProcess {
    BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), config)
}

fn anonymous() -> BrokerProcess {
    broker("allow_anonymous true\n")
}

/// A rumqttc 3.1.1 client whose event loop runs in a task and reports into a channel.
struct V4 {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn v4(broker: &BrokerProcess, id: &str, configure: impl FnOnce(&mut MqttOptions)) -> (V4, rumqttc::ConnAck) {
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    configure(&mut options);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let mut client = V4 { client, events, task };
    let connack = loop {
        match client.next().await {
            Some(Event::Incoming(Packet::ConnAck(connack))) => break connack,
            Some(_) => continue,
            None => panic!("{id}: no CONNACK"),
        }
    };
    (client, connack)
}

impl V4 {
    async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(WAIT, self.events.recv()).await.ok().flatten()
    }

    async fn publish_received(&mut self) -> rumqttc::Publish {
        loop {
            match self.next().await {
                Some(Event::Incoming(Packet::Publish(publish))) => return publish,
                Some(_) => continue,
                None => panic!("no PUBLISH arrived"),
            }
        }
    }

    async fn subscribed(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        loop {
            match self.next().await {
                Some(Event::Incoming(Packet::SubAck(_))) => return,
                Some(_) => continue,
                None => panic!("no SUBACK for {filter}"),
            }
        }
    }
}

/// Waits (bounded) until the broker's log contains `needle`.
async fn wait_for_log(broker: &BrokerProcess, needle: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !broker.log().contains(needle) {
        assert!(tokio::time::Instant::now() < deadline, "log never showed {needle:?}:\n{}", broker.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs an installed mosquitto client with a bound on its run time.
fn mosquitto_tool(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("timeout")
        .arg("20")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} (install mosquitto-clients; scripts/test.sh does): {e}"));
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn qos_0_1_2_both_ways_v4_and_v5() {
    let broker = anonymous();
    let (mut sub, _) = v4(&broker, "q-sub", |_| {}).await;
    sub.subscribed("q/#", QoS::ExactlyOnce).await;
    let (publisher, _) = v4(&broker, "q-pub", |_| {}).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
        publisher.client.publish(format!("q/{i}"), qos, false, format!("m{i}")).await.unwrap();
        let got = sub.publish_received().await;
        assert_eq!((got.topic.as_str(), &got.payload[..]), (format!("q/{i}").as_str(), format!("m{i}").as_bytes()));
    }

    // MQTT 5 publisher and subscriber, raw, QoS 2 end to end.
    let mut sub5 = RawClient::connected(broker.addr(), &Connect::new(5, "q5-sub")).await;
    assert_eq!(sub5.subscribe(1, &[("q5/#", 2)]).await, [2]);
    let mut pub5 = RawClient::connected(broker.addr(), &Connect::new(5, "q5-pub")).await;
    pub5.publish("q5/x", b"exactly", 2, false, 9).await;
    assert_eq!(pub5.expect(testkit::PUBREC).await.reason(), 0);
    pub5.send(&testkit::ack(testkit::PUBREL, 9)).await;
    assert_eq!(pub5.expect(testkit::PUBCOMP).await.pkid(), 9);
    let got = sub5.expect_publish().await;
    assert_eq!((got.topic.as_str(), got.qos, &got.payload[..]), ("q5/x", 2, &b"exactly"[..]));
    sub5.send(&testkit::ack(testkit::PUBREC, got.pkid)).await;
    assert_eq!(sub5.expect(testkit::PUBREL).await.pkid(), got.pkid);
    sub5.send(&testkit::ack(testkit::PUBCOMP, got.pkid)).await;
    sub5.expect_quiet().await;
}

/// rumqttc's MQTT 5 client: properties pass through, QoS 2 both ways, a persistent session with
/// session expiry resumes with its queue.
#[tokio::test]
async fn rumqttc_v5_properties_qos2_and_session_expiry() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PublishProperties};
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let broker = anonymous();
    let start = |id: &str, clean: bool| {
        let mut options = Options5::new(id, "127.0.0.1", broker.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(clean);
        options.set_session_expiry_interval(Some(300));
        let (client, mut eventloop) = Client5::new(options, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        if tx.send(event).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        eprintln!("rumqttc v5 event loop: {e:?}");
                        break;
                    }
                }
            }
        });
        (client, rx, task)
    };
    async fn next_incoming(rx: &mut mpsc::UnboundedReceiver<Event5>) -> Packet5 {
        loop {
            match tokio::time::timeout(WAIT, rx.recv()).await {
                Ok(Some(Event5::Incoming(packet))) => return packet,
                Ok(Some(_)) => continue,
                other => panic!("rumqttc v5: nothing incoming ({other:?})"),
            }
        }
    }

    let (sub, mut sub_events, sub_task) = start("v5-sub", false);
    let Packet5::ConnAck(connack) = next_incoming(&mut sub_events).await else { panic!("no CONNACK") };
    assert!(!connack.session_present);
    sub.subscribe("v5/#", QoS5::ExactlyOnce).await.unwrap();
    assert!(matches!(next_incoming(&mut sub_events).await, Packet5::SubAck(_)));

    let (publisher, mut pub_events, pub_task) = start("v5-pub", true);
    next_incoming(&mut pub_events).await;
    let properties = PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        response_topic: Some("v5/reply".into()),
        ..Default::default()
    };
    publisher.publish_with_properties("v5/a", QoS5::ExactlyOnce, false, "live", properties).await.unwrap();
    let Packet5::Publish(got) = next_incoming(&mut sub_events).await else { panic!("expected PUBLISH") };
    assert_eq!((&got.topic[..], &got.payload[..], got.qos), (&b"v5/a"[..], &b"live"[..], QoS5::ExactlyOnce));
    let props = got.properties.expect("properties delivered");
    assert_eq!(props.user_properties, [("k".to_string(), "v".to_string())]);
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("v5/reply"));

    // (complete the QoS 2 exchange first: a fresh rumqttc instance would not know its packet id)
    loop {
        match tokio::time::timeout(WAIT, sub_events.recv()).await {
            Ok(Some(Event5::Outgoing(rumqttc::Outgoing::PubComp(_)))) => break,
            Ok(Some(_)) => continue,
            other => panic!("no PUBCOMP sent: {other:?}"),
        }
    }
    // Offline: the session (expiry 300 s) keeps a queue.
    sub.disconnect().await.unwrap();
    while sub_events.recv().await.is_some() {}
    sub_task.abort();
    wait_for_log(&broker, "Client v5-sub disconnected.").await;
    publisher.publish("v5/b", QoS5::AtLeastOnce, false, "queued").await.unwrap();
    loop {
        if let Packet5::PubAck(_) = next_incoming(&mut pub_events).await {
            break;
        }
    }
    let (_sub, mut sub_events, _task) = start("v5-sub", false);
    let Packet5::ConnAck(connack) = next_incoming(&mut sub_events).await else { panic!("no CONNACK") };
    assert!(connack.session_present);
    let Packet5::Publish(got) = next_incoming(&mut sub_events).await else { panic!("expected PUBLISH") };
    assert_eq!(&got.payload[..], b"queued");
    pub_task.abort();
}

#[tokio::test]
async fn retained_messages_with_mosquitto_tools() {
    let broker = anonymous();
    let port = broker.port().to_string();
    let (ok, _) = mosquitto_tool(
        "mosquitto_pub",
        &["-h", "127.0.0.1", "-p", &port, "-t", "ret/a", "-m", "kept", "-r", "-q", "1"],
    );
    assert!(ok);
    for version in ["mqttv31", "mqttv311", "mqttv5"] {
        let (ok, out) = mosquitto_tool(
            "mosquitto_sub",
            &["-h", "127.0.0.1", "-p", &port, "-V", version, "-t", "ret/#", "-C", "1", "-v", "-W", "10"],
        );
        assert!(ok, "{version}");
        assert_eq!(out, "ret/a kept\n", "{version}");
    }
    // An empty retained message clears it. At QoS 1, because mosquitto_pub then exits only after
    // the PUBACK, which the gate writes once the message is in the router: at QoS 0 the late
    // subscription below could overtake a first publish whose router link is still being
    // attached (docs/known-differences.md, "A client's first publish").
    let (ok, _) =
        mosquitto_tool("mosquitto_pub", &["-h", "127.0.0.1", "-p", &port, "-t", "ret/a", "-n", "-r", "-q", "1"]);
    assert!(ok);
    let mut late = RawClient::connected(broker.addr(), &Connect::new(4, "late")).await;
    late.subscribe(1, &[("ret/#", 0)]).await;
    late.expect_quiet().await;
}

#[tokio::test]
async fn request_response_with_mosquitto_rr() {
    let broker = anonymous();
    let (mut responder, _) = v4(&broker, "responder", |_| {}).await;
    responder.subscribed("svc/request", QoS::AtLeastOnce).await;
    let port = broker.port().to_string();
    let rr = tokio::task::spawn_blocking(move || {
        mosquitto_tool(
            "mosquitto_rr",
            &["-h", "127.0.0.1", "-p", &port, "-t", "svc/request", "-e", "svc/response", "-m", "ping", "-W", "10"],
        )
    });
    let request = responder.publish_received().await;
    assert_eq!(&request.payload[..], b"ping");
    responder.client.publish("svc/response", QoS::AtLeastOnce, false, "pong").await.unwrap();
    let (ok, out) = rr.await.unwrap();
    assert!(ok);
    assert_eq!(out, "pong\n");
}

#[tokio::test]
async fn will_on_abrupt_close_and_keepalive_timeout_but_not_on_disconnect() {
    let broker = anonymous();
    let mut watcher = RawClient::connected(broker.addr(), &Connect::new(4, "will-watcher")).await;
    watcher.subscribe(1, &[("will/#", 1)]).await;

    let with_will = |id: &str, keep_alive: u16| {
        let mut connect = Connect::new(4, id);
        connect.keep_alive = keep_alive;
        connect.will = Some((format!("will/{id}"), b"gone".to_vec(), 1, false));
        connect
    };
    // Clean DISCONNECT: no will.
    let mut polite = RawClient::connected(broker.addr(), &with_will("polite", 60)).await;
    polite.send(&testkit::disconnect()).await;
    assert!(polite.expect_closed().await.is_empty());
    watcher.expect_quiet().await;

    // Abrupt close: will.
    drop(RawClient::connected(broker.addr(), &with_will("abrupt", 60)).await);
    let got = watcher.expect_publish().await;
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("will/abrupt", &b"gone"[..]));
    watcher.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;

    // Silent client with keepalive 1 s: closed after 1.5 s, will published.
    let mut silent = RawClient::connected(broker.addr(), &with_will("silent", 1)).await;
    assert!(silent.expect_closed().await.is_empty());
    let got = watcher.expect_publish().await;
    assert_eq!(got.topic, "will/silent");

    // mosquitto_sub killed: its will arrives.
    let mut child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-t", "x", "-i", "killed"])
        .args(["--will-topic", "will/killed", "--will-payload", "bye"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(&broker, " as killed (").await;
    child.kill().unwrap();
    child.wait().unwrap();
    let got = watcher.expect_publish().await;
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("will/killed", &b"bye"[..]));
}

#[tokio::test]
async fn persistent_session_keeps_an_offline_queue() {
    let broker = anonymous();
    let mut persistent = Connect::new(4, "persist-1");
    persistent.clean = false;
    let (mut sub, connack) = RawClient::connect(broker.addr(), &persistent).await;
    let Next::Frame(connack) = connack else { panic!("no CONNACK") };
    assert!(!connack.session_present());
    sub.subscribe(1, &[("offline/#", 1)]).await;
    sub.send(&testkit::disconnect()).await;
    sub.expect_closed().await;

    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "offline-pub")).await;
    for i in 0..5u16 {
        publisher.publish("offline/t", format!("q{i}").as_bytes(), 1, false, i + 1).await;
        publisher.expect(testkit::PUBACK).await;
    }
    publisher.publish("offline/t", b"q5", 2, false, 9).await;
    publisher.expect(testkit::PUBREC).await;

    let (mut sub, connack) = v4(&broker, "persist-1", |o| {
        o.set_clean_session(false);
    })
    .await;
    assert!(connack.session_present);
    let mut payloads = Vec::new();
    for _ in 0..6 {
        payloads.push(String::from_utf8_lossy(&sub.publish_received().await.payload).into_owned());
    }
    assert_eq!(payloads, ["q0", "q1", "q2", "q3", "q4", "q5"]);

    // A clean connection ends the session.
    drop(sub);
    let (_clean, _) = v4(&broker, "persist-1", |o| {
        o.set_clean_session(true);
    })
    .await;
}

#[tokio::test]
async fn persistent_session_with_mosquitto_sub() {
    let broker = anonymous();
    let port = broker.port().to_string();
    let base = ["-h", "127.0.0.1", "-p", &port, "-i", "msub-persist", "-c", "-q", "1", "-t", "ms/#", "-v"];
    // Subscribe once (exits after -W 1 without messages).
    let _ = mosquitto_tool("mosquitto_sub", &[&base[..], &["-W", "1"]].concat());
    for i in 0..3 {
        let (ok, _) = mosquitto_tool(
            "mosquitto_pub",
            &["-h", "127.0.0.1", "-p", &port, "-t", "ms/x", "-m", &format!("m{i}"), "-q", "1"],
        );
        assert!(ok);
    }
    let (ok, out) = mosquitto_tool("mosquitto_sub", &[&base[..], &["-C", "3", "-W", "10"]].concat());
    assert!(ok, "{}", broker.log());
    assert_eq!(out, "ms/x m0\nms/x m1\nms/x m2\n");
}

#[tokio::test]
async fn takeover_disconnects_the_old_connection_with_0x8e() {
    let broker = anonymous();
    let mut first_connect = Connect::new(5, "dup-id");
    first_connect.will = Some(("will/dup".into(), b"old".to_vec(), 0, false));
    let mut first = RawClient::connected(broker.addr(), &first_connect).await;
    let mut watcher = RawClient::connected(broker.addr(), &Connect::new(4, "dup-watch")).await;
    watcher.subscribe(1, &[("will/#", 0), ("dup/#", 0)]).await;

    let mut second = RawClient::connected(broker.addr(), &Connect::new(4, "dup-id")).await;
    let frames = first.expect_closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!((frames[0].packet_type, frames[0].reason()), (testkit::DISCONNECT, 0x8E));
    assert_eq!(watcher.expect_publish().await.topic, "will/dup", "the old connection's will (mosquitto 2.0.11)");

    second.subscribe(1, &[("dup/#", 0)]).await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "dup-pub")).await;
    publisher.publish("dup/x", b"to the new one", 0, false, 0).await;
    assert_eq!(&second.expect_publish().await.payload[..], b"to the new one");
}

#[tokio::test]
async fn v5_session_expiry() {
    let broker = anonymous();
    let mut watcher = RawClient::connected(broker.addr(), &Connect::new(4, "expiry-watch")).await;
    watcher.subscribe(1, &[("will/#", 0)]).await;

    // Within the expiry the session and its queue survive.
    let mut long = Connect::new(5, "long-lived");
    long.clean = false;
    long.session_expiry = Some(300);
    let mut client = RawClient::connected(broker.addr(), &long).await;
    client.subscribe(1, &[("exp/#", 1)]).await;
    client.send(&testkit::disconnect()).await;
    client.expect_closed().await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "exp-pub")).await;
    publisher.publish("exp/a", b"queued", 1, false, 1).await;
    publisher.expect(testkit::PUBACK).await;
    let (mut client, connack) = RawClient::connect(broker.addr(), &long).await;
    let Next::Frame(connack) = connack else { panic!("no CONNACK") };
    assert!(connack.session_present());
    assert_eq!(&client.expect_publish().await.payload[..], b"queued");

    // After the expiry the session is gone; a will delayed beyond the expiry fires at expiry.
    let mut short = Connect::new(5, "short-lived");
    short.clean = false;
    short.session_expiry = Some(1);
    short.will = Some(("will/short".into(), b"expired".to_vec(), 0, false));
    short.will_delay = Some(3600);
    let mut client = RawClient::connected(broker.addr(), &short).await;
    client.subscribe(1, &[("exp/#", 1)]).await;
    drop(client);
    assert_eq!(&watcher.expect_publish().await.payload[..], b"expired");
    short.will = None;
    let (_client, connack) = RawClient::connect(broker.addr(), &short).await;
    let Next::Frame(connack) = connack else { panic!("no CONNACK") };
    assert!(!connack.session_present(), "the session expired");
}

#[tokio::test]
async fn v5_will_delay_is_cancelled_by_a_resuming_reconnect() {
    let broker = anonymous();
    let mut watcher = RawClient::connected(broker.addr(), &Connect::new(4, "delay-watch")).await;
    watcher.subscribe(1, &[("will/#", 0)]).await;
    let mut connect = Connect::new(5, "delayed");
    connect.clean = false;
    connect.session_expiry = Some(300);
    connect.will = Some(("will/delayed".into(), b"late".to_vec(), 0, false));
    connect.will_delay = Some(3600);
    drop(RawClient::connected(broker.addr(), &connect).await);
    let (mut again, _) = RawClient::connect(broker.addr(), &connect).await;
    again.send(&testkit::disconnect()).await;
    watcher.expect_quiet().await;
}

#[tokio::test]
async fn sys_subscription_does_not_disconnect() {
    let broker = anonymous();
    let (mut client, _) = v4(&broker, "sys-sub", |_| {}).await;
    client.subscribed("$SYS/#", QoS::AtMostOnce).await;
    client.subscribed("after/sys", QoS::AtMostOnce).await;
    let (publisher, _) = v4(&broker, "sys-pub", |_| {}).await;
    publisher.client.publish("after/sys", QoS::AtMostOnce, false, "still here").await.unwrap();
    assert_eq!(&client.publish_received().await.payload[..], b"still here");
    // mosquitto_sub gets its SUBACK and then simply hears nothing (no $SYS messages are published).
    let (_, out) = mosquitto_tool(
        "mosquitto_sub",
        &["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-t", "$SYS/#", "-W", "1", "-V", "mqttv5", "-d"],
    );
    assert!(out.contains("received SUBACK"), "{out}");
    assert!(!out.contains("received DISCONNECT"), "{out}");
}

#[tokio::test]
async fn client_ids_with_special_characters() {
    let broker = anonymous();
    for id in ["site/dev1", "a+b", "hash#id", "$dollar", "%2F", "site/dev1%"] {
        let (mut client, _) = v4(&broker, id, |o| {
            o.set_clean_session(false);
        })
        .await;
        client.subscribed("ids/#", QoS::AtLeastOnce).await;
        let (publisher, _) = v4(&broker, &format!("pub-{id}"), |_| {}).await;
        publisher.client.publish("ids/x", QoS::AtLeastOnce, false, id).await.unwrap();
        assert_eq!(&client.publish_received().await.payload[..], id.as_bytes());
    }
    // The same id twice in a row (rumqttd's listener poisoned itself on this, defect 2).
    for _ in 0..2 {
        let (_client, connack) = v4(&broker, "a/b", |_| {}).await;
        assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
    }
}

#[tokio::test]
async fn keepalive_zero_is_allowed() {
    let broker = anonymous();
    let mut connect = Connect::new(4, "ka0");
    connect.keep_alive = 0;
    let mut client = RawClient::connected(broker.addr(), &connect).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.ping().await;
    let (_rumqttc, connack) = v4(&broker, "ka0-rumqttc", |o| {
        o.set_keep_alive(Duration::ZERO);
    })
    .await;
    assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
}

#[tokio::test]
async fn max_packet_size_both_ways() {
    let broker = broker("allow_anonymous true\nmax_packet_size 1000\n");
    // Incoming: too large closes the connection (v5: DISCONNECT 0x95); others are unaffected.
    let mut sender = RawClient::connected(broker.addr(), &Connect::new(5, "big-sender")).await;
    let mut bystander = RawClient::connected(broker.addr(), &Connect::new(4, "bystander")).await;
    sender.publish("big/x", &[b'x'; 2000], 0, false, 0).await;
    let frames = sender.expect_closed().await;
    assert_eq!((frames[0].packet_type, frames[0].reason()), (testkit::DISCONNECT, 0x95));
    bystander.ping().await;

    // Outgoing: a v5 client's Maximum Packet Size is honoured; skipped QoS 1 messages are
    // acknowledged to the router, so later ones still come.
    let mut small = Connect::new(5, "small");
    small.max_packet_size = Some(100);
    let mut receiver = RawClient::connected(broker.addr(), &small).await;
    receiver.subscribe(1, &[("size/#", 1)]).await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "sizer")).await;
    for i in 0..150u16 {
        let payload: &[u8] = if i % 2 == 0 { &[b'l'; 500] } else { b"small" };
        publisher.publish("size/t", payload, 1, false, i + 1).await;
    }
    for _ in 0..75 {
        let got = receiver.expect_publish().await;
        assert_eq!(&got.payload[..], b"small");
        receiver.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    }
    receiver.expect_quiet().await;
}

#[tokio::test]
async fn the_mosquitto_dynsec_configuration_starts_unchanged() {
    let dir = ScratchDir::new("conf");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dynsec_file = dir.path().join("dynamic-security.json");
    let config = format!(
        "# as written for mosquitto 2.0\n\
         per_listener_settings false\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous false\n\
         plugin {}\n\
         plugin_opt_config_file {}\n\
         persistence false\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         log_type information\n\
         max_connections -1\n\
         user root\n",
        dynsec_plugin().display(),
        dynsec_file.display()
    );
    // mosquitto itself runs with this file (killed by its PID once it listens).
    let config_path = dir.path().join("mosquitto.conf");
    std::fs::write(&config_path, &config).unwrap();
    let mut mosquitto = Command::new("mosquitto")
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto (scripts/test.sh installs it)");
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = mosquitto.try_wait() {
            panic!("mosquitto refused the configuration: {status}");
        }
        assert!(std::time::Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    mosquitto.kill().unwrap();
    mosquitto.wait().unwrap();

    let broker = BrokerProcess::start_with_text(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), &config);
    assert_eq!(broker.port(), port);
    let (client, reply) = RawClient::connect(broker.addr(), &Connect::new(4, "anon")).await;
    let Next::Frame(connack) = reply else { panic!("no CONNACK") };
    assert_eq!(connack.reason(), 5, "allow_anonymous false refuses anonymous clients");
    drop(client);
}

/// Where distributions install mosquitto's dynamic security plugin.
fn dynsec_plugin() -> std::path::PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
    ];
    candidates
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto_dynamic_security.so installed")
}

#[test]
fn bad_configurations_are_refused_with_file_and_line() {
    let binary = Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"));
    let (code, out) = BrokerProcess::expect_start_failure(binary, "listener 0 127.0.0.1\nbogus_directive 1\n");
    assert_ne!(code, 0);
    assert!(out.contains("broker.conf:2: unknown configuration directive \"bogus_directive\""), "{out}");
    let (code, out) =
        BrokerProcess::expect_start_failure(binary, "listener 0 127.0.0.1\ncertfile /x.pem\nkeyfile /k.pem\n");
    assert_ne!(code, 0);
    assert!(out.contains("TLS") && out.contains("broker.conf:2"), "{out}");
    let (code, out) = BrokerProcess::expect_start_failure(binary, "connection bridge1\naddress 10.0.0.1\n");
    assert_ne!(code, 0);
    assert!(out.contains("bridges are not supported"), "{out}");
}

#[tokio::test]
async fn sigterm_disconnects_clients_and_exits_cleanly() {
    let broker = anonymous();
    let mut v5 = RawClient::connected(broker.addr(), &Connect::new(5, "stopping")).await;
    let mut watcher_connect = Connect::new(4, "stop-will");
    watcher_connect.will = Some(("will/stop".into(), b"x".to_vec(), 0, false));
    let _with_will = RawClient::connected(broker.addr(), &watcher_connect).await;
    let (code, log) = broker.terminate();
    assert_eq!(code, Some(0), "{log}");
    let frames = v5.expect_closed().await;
    assert_eq!((frames[0].packet_type, frames[0].reason()), (testkit::DISCONNECT, 0x8B));
    assert!(log.contains("shutdown complete"), "{log}");
}

#[tokio::test]
async fn max_connections_refuses_extra_clients() {
    let broker = broker("allow_anonymous true\nmax_connections 2\n");
    let _a = RawClient::connected(broker.addr(), &Connect::new(4, "c1")).await;
    let mut b = RawClient::connected(broker.addr(), &Connect::new(4, "c2")).await;
    let (mut c, reply) = RawClient::connect(broker.addr(), &Connect::new(4, "c3")).await;
    assert_eq!(reply, Next::Closed);
    drop(c.expect_closed().await);
    b.ping().await;
}

/// Idle clients hold no router link (rumqttd gives each link ~43 KB of fixed buffers): with a
/// router table of 16, forty clients connect, and a persistent session that never used the router
/// is still resumed. Links are attached on first use; when the table is full, that client (and
/// only it) is told "server busy" (v5 DISCONNECT 0x89) and the others keep working.
///
/// With the fleet hub off: with it (the default) clean sessions' subscriptions take no link of
/// their own, so these forty clean subscribers would never fill the table — lazy attachment
/// still serves persistent sessions and `$share` (the test below) and every client when the
/// hub is off.
#[tokio::test]
async fn router_links_are_attached_on_first_use() {
    let broker = broker("allow_anonymous true\ngate_router_connections 16\ngate_fleet_hub false\n");
    let mut idle = Vec::new();
    for index in 0..40 {
        idle.push(RawClient::connected(broker.addr(), &Connect::new(5, &format!("idle-{index}"))).await);
    }
    let mut persistent = Connect::new(4, "idle-persistent");
    persistent.clean = false;
    let client = RawClient::connected(broker.addr(), &persistent).await;
    drop(client);
    let (_client, connack) = RawClient::connect(broker.addr(), &persistent).await;
    let Next::Frame(connack) = connack else { panic!("no CONNACK") };
    assert!(connack.session_present(), "the session without router state was kept");

    let (mut attached, mut refused) = (Vec::new(), 0);
    for client in idle {
        match subscribed_or_busy(client).await {
            Some(client) => attached.push(client),
            None => refused += 1,
        }
    }
    assert!((1..16).contains(&attached.len()), "{} links attached in a table of 16", attached.len());
    assert_eq!(attached.len() + refused, 40);
    let publisher = attached.last_mut().unwrap();
    publisher.publish("first/use", b"still routed", 1, false, 9).await;
    for client in attached.iter_mut() {
        let frame = loop {
            match client.next(WAIT).await {
                Next::Frame(frame) if frame.packet_type == testkit::PUBACK => continue, // the publisher's
                Next::Frame(frame) => break frame,
                other => panic!("PUBLISH expected, got {other:?}"),
            }
        };
        assert_eq!(frame.packet_type, testkit::PUBLISH);
        assert_eq!(&frame.publish(true).payload[..], b"still routed");
    }
}

/// Subscribes `client` (v5) to `first/use`: the client once its SUBACK came, `None` when the
/// broker answered "server busy" (no room for its router link).
async fn subscribed_or_busy(mut client: RawClient) -> Option<RawClient> {
    client.send(&testkit::subscribe(true, 1, &[("first/use", 1)])).await;
    match client.next(Duration::from_secs(10)).await {
        Next::Frame(frame) if frame.packet_type == testkit::SUBACK => Some(client),
        Next::Frame(frame) if frame.packet_type == testkit::DISCONNECT => {
            assert_eq!(frame.reason(), 0x89, "server busy");
            None
        }
        other => panic!("SUBACK or DISCONNECT expected, got {other:?}"),
    }
}

/// With the fleet hub (the default), the router table holds the hub's link and the publisher
/// pool's, and clean sessions' subscriptions take no entry: in a table of 16, forty clean
/// subscribers are all served (none is refused), while persistent sessions still attach a link
/// on first use, at most as many as the table has room for, the rest told "server busy".
#[tokio::test]
async fn with_the_hub_clean_subscribers_take_no_router_table_entry() {
    let broker = broker("allow_anonymous true\ngate_router_connections 16\n");
    let mut clean = Vec::new();
    for index in 0..40 {
        let mut client = RawClient::connected(broker.addr(), &Connect::new(5, &format!("clean-{index}"))).await;
        assert_eq!(client.subscribe(1, &[("first/use", 1)]).await, [1], "clean-{index}");
        clean.push(client);
    }
    let (mut attached, mut refused) = (Vec::new(), 0);
    for index in 0..20 {
        let mut connect = Connect::new(5, &format!("persistent-{index}"));
        connect.clean = false;
        connect.session_expiry = Some(3600);
        let client = RawClient::connected(broker.addr(), &connect).await;
        match subscribed_or_busy(client).await {
            Some(client) => attached.push(client),
            None => refused += 1,
        }
    }
    assert!((1..16).contains(&attached.len()), "{} persistent links attached in a table of 16", attached.len());
    assert!(refused > 0, "the table is bounded");
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(5, "publisher")).await;
    publisher.publish("first/use", b"still routed", 1, false, 9).await;
    for client in clean.iter_mut().chain(attached.iter_mut()) {
        let got = client.expect_publish().await;
        assert_eq!(&got.payload[..], b"still routed");
    }
}

/// A small router log (4 × 64 KiB per filter), a 32 KiB back-pressure window and a hold long
/// enough that a test never sees it expire.
const SMALL_ROUTER_LOG: &str = "allow_anonymous true\n\
    gate_segment_size 65536\n\
    gate_segment_count 4\n\
    gate_backpressure_window 32768\n\
    gate_backpressure_max_hold 60\n";

/// Back-pressure: with a small router log (4 × 64 KiB per filter), a fast publisher (1 MB at
/// QoS 0, as fast as the socket takes it) and a slow QoS 1 subscriber, every message still
/// arrives exactly once, in order. Without the gate's back-pressure
/// (`gate_backpressure_window 0`) rumqttd rolls its log over under the subscriber and skips
/// messages. Run with a filter counted in the total (`bp/#`), one counted in its topic lane
/// (`bp/dev1/#`) and an exact topic.
async fn slow_qos1_subscriber_gets_every_message_exactly_once(filter: &str, topic: &'static str) {
    let broker = broker(SMALL_ROUTER_LOG);
    let total: u32 = 10_000;
    let mut sub = RawClient::connected(broker.addr(), &Connect::new(4, "slow")).await;
    sub.subscribe(1, &[(filter, 1)]).await;
    let addr = broker.addr();
    let publisher = tokio::spawn(async move {
        let mut publisher = RawClient::connected(addr, &Connect::new(4, "fast")).await;
        let mut batch = Vec::new();
        for i in 0..total {
            let payload = format!("{i:08}{}", "p".repeat(92));
            batch.extend(testkit::publish(false, topic, payload.as_bytes(), 0, false, 0));
            if batch.len() > 16 * 1024 {
                publisher.send(&batch).await;
                batch.clear();
            }
        }
        publisher.send(&batch).await;
        publisher.ping().await;
        publisher
    });
    read_slowly_in_order(&mut sub, total).await;
    let _publisher = publisher.await.unwrap();
    sub.expect_quiet().await;
}

/// Reads `total` QoS 1 PUBLISHes whose payloads start with their index (8 digits), checking
/// that each comes once and in order, as a slow consumer (a pause every 50) that acknowledges
/// each. Also used by `cluster`'s back-pressure test.
pub(crate) async fn read_slowly_in_order(sub: &mut RawClient, total: u32) {
    let mut next = 0u32;
    while next < total {
        let got = sub.expect_publish().await;
        let index: u32 = std::str::from_utf8(&got.payload[..8]).unwrap().parse().unwrap();
        assert_eq!(index, next, "lost or duplicated message");
        next += 1;
        if next.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(5)).await; // a slow consumer
        }
        sub.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    }
}

#[tokio::test]
async fn slow_qos1_wildcard_subscriber_gets_every_message_exactly_once() {
    slow_qos1_subscriber_gets_every_message_exactly_once("bp/#", "bp/t").await;
}

#[tokio::test]
async fn slow_qos1_device_subscriber_gets_every_message_exactly_once() {
    slow_qos1_subscriber_gets_every_message_exactly_once("bp/dev1/#", "bp/dev1/t").await;
}

#[tokio::test]
async fn slow_qos1_exact_subscriber_gets_every_message_exactly_once() {
    slow_qos1_subscriber_gets_every_message_exactly_once("bp/dev2/t", "bp/dev2/t").await;
}

/// Back-pressure is per topic lane: a subscriber that acknowledges nothing holds the publishers
/// of its own device's topics, and nobody else. Another device's traffic flows meanwhile, and the
/// held publisher continues once the subscriber catches up.
#[tokio::test]
async fn a_stalled_device_subscriber_holds_only_its_own_lane() {
    let broker = broker(SMALL_ROUTER_LOG);
    assert_ne!(Lane::of_filters(["fleet/dev1/cmd"]), Lane::of_filters(["fleet/dev2/cmd"]));
    let addr = broker.addr();
    let mut stalled = RawClient::connected(addr, &Connect::new(4, "stalled")).await;
    stalled.subscribe(1, &[("fleet/dev1/cmd", 1)]).await;
    let mut other = RawClient::connected(addr, &Connect::new(4, "other")).await;
    other.subscribe(1, &[("fleet/dev2/cmd", 1)]).await;

    // 100 KB for the stalled subscriber: three windows. (Sent from a task: a held publisher's
    // socket buffers fill up.)
    let pingresp = Arc::new(AtomicBool::new(false));
    let held = tokio::spawn({
        let pingresp = pingresp.clone();
        async move {
            let mut held = RawClient::connected(addr, &Connect::new(4, "held")).await;
            let mut flood = Vec::new();
            // QoS 1: a QoS 0 message reaches a QoS 1 subscription at QoS 0, with no
            // acknowledgement to withhold.
            for i in 0..1000u16 {
                let payload = format!("{i:0100}");
                flood.extend(testkit::publish(false, "fleet/dev1/cmd", payload.as_bytes(), 1, false, i + 1));
            }
            flood.extend(testkit::pingreq());
            held.send(&flood).await;
            loop {
                match held.next(Duration::from_secs(60)).await {
                    Next::Frame(frame) if frame.packet_type == testkit::PUBACK => continue,
                    Next::Frame(frame) if frame.packet_type == testkit::PINGRESP => {
                        break pingresp.store(true, Ordering::SeqCst);
                    }
                    other => panic!("expected PUBACK or PINGRESP, got {other:?}"),
                }
            }
        }
    });

    // Another lane: 2,000 messages pass and are acknowledged while the flood is held.
    let mut free = RawClient::connected(addr, &Connect::new(4, "free")).await;
    for chunk in 0..20u32 {
        let mut batch = Vec::new();
        for i in 0..100u32 {
            batch.extend(testkit::publish(
                false,
                "fleet/dev2/cmd",
                format!("{:0100}", chunk * 100 + i).as_bytes(),
                0,
                false,
                0,
            ));
        }
        free.send(&batch).await;
    }
    for expected in 0..2000u32 {
        let got = other.expect_publish().await;
        assert_eq!(&got.payload[..], format!("{expected:0100}").as_bytes());
        other.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    }
    free.ping().await;
    assert!(!pingresp.load(Ordering::SeqCst), "the flood's publisher should still be held");

    // The stalled subscriber reads and acknowledges: the flood arrives whole, and the publisher
    // gets its PINGRESP.
    for expected in 0..1000u32 {
        let got = stalled.expect_publish().await;
        assert_eq!(&got.payload[..], format!("{expected:0100}").as_bytes(), "lost or duplicated");
        stalled.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    }
    held.await.unwrap();
    assert!(pingresp.load(Ordering::SeqCst));
}
