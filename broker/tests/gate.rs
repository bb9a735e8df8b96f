//! The gate in-process, with a scripted `Security`: the deny paths (PUBLISH, SUBSCRIBE,
//! UNSUBSCRIBE, delivery, wills, CONNECT), `$CONTROL` replies and kicks, and the shutdown hook.
//! Raw packets on the wire, so reason codes and packet order are checked exactly.
// A test that cannot go on should stop: unwrapping is how it says so.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dynsec_broker::broker::Broker;
use dynsec_broker::config::Config;
use dynsec_broker::security::{
    Access, BoxFuture, ClientAuthz, ConnectDecision, ConnectRequest, ControlOutcome, ControlReply, ControlSender,
    KickTarget, Security,
};
use dynsec_broker::testkit::*;
use tokio::sync::mpsc;

type Rule = dyn Fn(Option<&str>, Access, &str) -> bool + Send + Sync;
type ControlFn = dyn Fn(&ControlSender, &str, &[u8]) -> Option<ControlOutcome> + Send + Sync;

/// Authentication result chosen by a test.
#[derive(Clone, Copy)]
enum Verdict {
    Accept,
    NotAuthorized,
    BadUsernameOrPassword,
}

/// A `Security` whose every answer comes from closures given by the test.
struct Scripted {
    rule: Arc<Rule>,
    auth: Box<dyn Fn(&ConnectRequest) -> Verdict + Send + Sync>,
    control: Box<ControlFn>,
    kicks: Mutex<Option<mpsc::UnboundedReceiver<KickTarget>>>,
    rule_calls: Arc<AtomicUsize>,
    shut_down: Arc<AtomicBool>,
}

struct ScriptedAuthz {
    username: Option<String>,
    rule: Arc<Rule>,
    calls: Arc<AtomicUsize>,
}

impl ClientAuthz for ScriptedAuthz {
    fn allows(&self, access: Access, topic: &str) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed);
        (self.rule)(self.username.as_deref(), access, topic)
    }
}

impl Scripted {
    fn new(rule: impl Fn(Option<&str>, Access, &str) -> bool + Send + Sync + 'static) -> Self {
        Scripted {
            rule: Arc::new(rule),
            auth: Box::new(|_| Verdict::Accept),
            control: Box::new(|_, _, _| None),
            kicks: Mutex::new(None),
            rule_calls: Arc::new(AtomicUsize::new(0)),
            shut_down: Arc::new(AtomicBool::new(false)),
        }
    }

    fn allow_all() -> Self {
        Scripted::new(|_, _, _| true)
    }
}

impl Security for Scripted {
    fn authenticate(&self, request: ConnectRequest) -> BoxFuture<ConnectDecision> {
        let decision = match (self.auth)(&request) {
            Verdict::Accept => ConnectDecision::Accept {
                username: request.username.clone(),
                authz: Arc::new(ScriptedAuthz {
                    username: request.username.as_deref().map(str::to_owned),
                    rule: self.rule.clone(),
                    calls: self.rule_calls.clone(),
                }),
            },
            Verdict::NotAuthorized => ConnectDecision::NotAuthorized,
            Verdict::BadUsernameOrPassword => ConnectDecision::BadUsernameOrPassword,
        };
        Box::pin(async move { decision })
    }

    fn control(&self, sender: ControlSender, topic: &str, payload: Vec<u8>) -> Option<BoxFuture<ControlOutcome>> {
        let outcome = (self.control)(&sender, topic, &payload)?;
        Some(Box::pin(async move { outcome }))
    }

    fn take_kick_events(&self) -> Option<mpsc::UnboundedReceiver<KickTarget>> {
        self.kicks.lock().unwrap().take()
    }

    fn shutdown(&self) -> BoxFuture<()> {
        let flag = self.shut_down.clone();
        Box::pin(async move { flag.store(true, Ordering::SeqCst) })
    }
}

async fn start_with(extra_config: &str, security: Scripted) -> (Broker, SocketAddr) {
    let text = format!("listener 0 127.0.0.1\nallow_anonymous true\n{extra_config}");
    let config = Config::from_text("gate-test.conf", &text).unwrap();
    let broker = Broker::start(config, Arc::new(security)).await.unwrap();
    let addr = broker.local_addrs()[0];
    (broker, addr)
}

async fn start(security: Scripted) -> (Broker, SocketAddr) {
    start_with("", security).await
}

/// Publishing and subscribing under `secret` is denied; receiving is allowed (so that a routed
/// secret message would be seen).
fn secret_denied(_: Option<&str>, access: Access, topic: &str) -> bool {
    access == Access::Receive || !(topic.starts_with("secret") || topic.starts_with("$share/g/secret"))
}

#[tokio::test]
async fn denied_publish_v5_gets_reason_0x87_and_is_not_routed() {
    let (_broker, addr) = start(Scripted::new(secret_denied)).await;
    let mut sub = RawClient::connected(addr, &Connect::new(4, "watcher")).await;
    sub.subscribe(1, &[("#", 1)]).await;
    let mut publisher = RawClient::connected(addr, &Connect::new(5, "pub5")).await;

    publisher.publish("secret/a", b"q0", 0, false, 0).await;
    publisher.publish("secret/a", b"q1", 1, false, 11).await;
    let puback = publisher.expect(PUBACK).await;
    assert_eq!((puback.pkid(), puback.reason()), (11, 0x87));
    publisher.publish("secret/a", b"q2", 2, false, 12).await;
    let pubrec = publisher.expect(PUBREC).await;
    assert_eq!((pubrec.pkid(), pubrec.reason()), (12, 0x87));
    publisher.publish("public/a", b"ok", 1, false, 13).await;
    let puback = publisher.expect(PUBACK).await;
    assert_eq!((puback.pkid(), puback.reason()), (13, 0));

    let got = sub.expect_publish().await;
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("public/a", &b"ok"[..]), "denied messages never routed");
    sub.send(&ack(PUBACK, got.pkid)).await;
    sub.expect_quiet().await;
    publisher.ping().await; // still connected
}

#[tokio::test]
async fn denied_publish_v3_completes_the_normal_flow_and_drops() {
    let (_broker, addr) = start(Scripted::new(secret_denied)).await;
    let mut sub = RawClient::connected(addr, &Connect::new(4, "watcher3")).await;
    sub.subscribe(1, &[("#", 2)]).await;
    for version in [3, 4] {
        let mut publisher = RawClient::connected(addr, &Connect::new(version, &format!("pub{version}"))).await;
        publisher.publish("secret/x", b"q0", 0, false, 0).await;
        publisher.publish("secret/x", b"q1", 1, false, 1).await;
        let puback = publisher.expect(PUBACK).await;
        assert_eq!((puback.pkid(), puback.body.len()), (1, 2), "plain PUBACK");
        publisher.publish("secret/x", b"q2", 2, false, 2).await;
        assert_eq!(publisher.expect(PUBREC).await.pkid(), 2);
        publisher.send(&ack(PUBREL, 2)).await;
        assert_eq!(publisher.expect(PUBCOMP).await.pkid(), 2);
        assert!(publisher.ping().await.is_empty());
    }
    sub.expect_quiet().await;
}

#[tokio::test]
async fn denied_subscribe_codes_per_protocol_and_no_retained() {
    let (_broker, addr) = start(Scripted::new(secret_denied)).await;
    let mut publisher = RawClient::connected(addr, &Connect::new(4, "retainer")).await;
    publisher.publish("secret/r", b"kept", 1, true, 1).await;
    publisher.expect(PUBACK).await;
    publisher.publish("open/r", b"kept", 1, true, 2).await;
    publisher.expect(PUBACK).await;

    let mut v5 = RawClient::connected(addr, &Connect::new(5, "s5")).await;
    assert_eq!(v5.subscribe(1, &[("secret/#", 1), ("open/#", 2)]).await, [0x87, 2]);
    let mut v311 = RawClient::connected(addr, &Connect::new(4, "s4")).await;
    assert_eq!(v311.subscribe(1, &[("secret/#", 1), ("$share/g/secret/#", 0)]).await, [0x80, 0x80]);
    let mut v31 = RawClient::connected(addr, &Connect::new(3, "s3")).await;
    assert_eq!(v31.subscribe(1, &[("secret/#", 2)]).await, [2], "MQTT 3.1 echoes the requested QoS");

    // Only the allowed filter's retained message arrives.
    let got = v5.expect_publish().await;
    // Retained at QoS 1: delivered at QoS 1 through the QoS 2 subscription (min of both).
    assert_eq!((got.topic.as_str(), got.retain, got.qos), ("open/r", true, 1));
    v5.send(&ack(PUBACK, got.pkid)).await;
    v5.expect_quiet().await;
    v311.expect_quiet().await;
    v31.expect_quiet().await;
}

#[tokio::test]
async fn denied_unsubscribe_keeps_the_subscription() {
    let rule = |_: Option<&str>, access: Access, topic: &str| !(access == Access::Unsubscribe && topic == "keep/#");
    let (_broker, addr) = start(Scripted::new(rule)).await;
    let mut v5 = RawClient::connected(addr, &Connect::new(5, "u5")).await;
    let mut v4 = RawClient::connected(addr, &Connect::new(4, "u4")).await;
    v5.subscribe(1, &[("keep/#", 0)]).await;
    v4.subscribe(1, &[("keep/#", 0)]).await;
    v5.send(&unsubscribe(true, 2, &["keep/#", "never/subscribed"])).await;
    let unsuback = v5.expect(UNSUBACK).await;
    assert_eq!(unsuback.codes(true), [0x87, 0x11]);
    v4.send(&unsubscribe(false, 2, &["keep/#"])).await;
    let unsuback = v4.expect(UNSUBACK).await;
    assert_eq!((unsuback.pkid(), unsuback.body.len()), (2, 2));

    let mut publisher = RawClient::connected(addr, &Connect::new(4, "kp")).await;
    publisher.publish("keep/x", b"still", 0, false, 0).await;
    assert_eq!(v5.expect_publish().await.topic, "keep/x");
    assert_eq!(v4.expect_publish().await.topic, "keep/x");
}

/// Delivery ACL with QoS 1: denied messages are skipped, and their acks reach the router in order
/// (fake acks), so the router keeps delivering far beyond its 100 in-flight messages.
#[tokio::test]
async fn delivery_filtering_fakes_acks_in_order() {
    let rule =
        |_: Option<&str>, access: Access, topic: &str| !(access == Access::Receive && topic.starts_with("secret"));
    let (_broker, addr) = start(Scripted::new(rule)).await;
    let mut sub = RawClient::connected(addr, &Connect::new(4, "filtered")).await;
    sub.subscribe(1, &[("#", 1)]).await;
    let mut publisher = RawClient::connected(addr, &Connect::new(4, "mixed")).await;
    let total = 450u16;
    for i in 1..=total {
        let topic = if i % 3 == 0 { "public/t" } else { "secret/t" };
        publisher.publish(topic, i.to_string().as_bytes(), 1, false, i).await;
    }
    // Acknowledge every delivery, in reverse order per pair, to exercise the sequencer too.
    let mut received = Vec::new();
    let mut held = None;
    while received.len() < (total / 3) as usize {
        let got = sub.expect_publish().await;
        assert_eq!(got.topic, "public/t", "a denied message was delivered");
        received.push(String::from_utf8_lossy(&got.payload).into_owned());
        match held.take() {
            None => held = Some(got.pkid),
            Some(previous) => {
                sub.send(&ack(PUBACK, got.pkid)).await;
                sub.send(&ack(PUBACK, previous)).await;
            }
        }
    }
    let expected: Vec<String> = (1..=total).filter(|i| i % 3 == 0).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn control_replies_reach_only_authorised_subscribers_after_the_puback() {
    let rule = |user: Option<&str>, access: Access, topic: &str| {
        if topic.starts_with("$CONTROL") {
            // "eve" may subscribe but may not receive replies.
            return user == Some("admin") || (user == Some("eve") && access != Access::Receive);
        }
        true
    };
    let mut security = Scripted::new(rule);
    security.control = Box::new(|sender, topic, payload| {
        (topic == "$CONTROL/test/v1").then(|| ControlOutcome {
            replies: vec![ControlReply {
                topic: "$CONTROL/test/v1/response".into(),
                payload: [format!("{}:", sender.client_id).as_bytes(), payload].concat(),
            }],
            kicks: vec![],
        })
    });
    let (_broker, addr) = start(security).await;
    let mut admin_connect = Connect::new(5, "admin-1");
    admin_connect.username = Some("admin".into());
    let mut admin = RawClient::connected(addr, &admin_connect).await;
    let mut eve_connect = Connect::new(4, "eve-1");
    eve_connect.username = Some("eve".into());
    let mut eve = RawClient::connected(addr, &eve_connect).await;
    let mut everything = RawClient::connected(addr, &Connect::new(4, "all")).await;

    assert_eq!(admin.subscribe(1, &[("$CONTROL/test/v1/response", 0)]).await, [0]);
    assert_eq!(eve.subscribe(1, &[("$CONTROL/#", 0)]).await, [0]);
    assert_eq!(everything.subscribe(1, &[("#", 0)]).await, [0], "allowed, but '#' does not cover $CONTROL");

    admin.publish("$CONTROL/test/v1", b"hello", 1, true, 7).await;
    let puback = admin.expect(PUBACK).await;
    assert_eq!((puback.pkid(), puback.reason()), (7, 0));
    let reply = admin.expect_publish().await;
    assert_eq!(reply.topic, "$CONTROL/test/v1/response");
    assert_eq!(&reply.payload[..], b"admin-1:hello");
    assert_eq!((reply.qos, reply.retain), (0, false));
    eve.expect_quiet().await;
    everything.expect_quiet().await;

    // Never retained: a new subscriber gets nothing.
    let mut late = RawClient::connected(addr, &admin_connect_with_id("admin-2")).await;
    late.subscribe(1, &[("$CONTROL/#", 0)]).await;
    late.expect_quiet().await;
}

fn admin_connect_with_id(id: &str) -> Connect {
    let mut connect = Connect::new(5, id);
    connect.username = Some("admin".into());
    connect
}

/// mosquitto bug #2474: an admin whose own change kicks it must still get PUBACK and reply first.
#[tokio::test]
async fn kick_by_own_command_comes_after_puback_and_reply() {
    let mut security = Scripted::allow_all();
    security.control = Box::new(|_, _, _| {
        Some(ControlOutcome {
            replies: vec![ControlReply { topic: "$CONTROL/k/v1/response".into(), payload: b"done".to_vec() }],
            kicks: vec![KickTarget::Username("admin".into())],
        })
    });
    let (_broker, addr) = start(security).await;
    let mut connect = admin_connect_with_id("self-kicker");
    connect.will = Some(("will/admin".into(), b"gone".to_vec(), 0, false));
    connect.clean = false;
    connect.session_expiry = Some(60);
    let mut admin = RawClient::connected(addr, &connect).await;
    let mut bystander = RawClient::connected(addr, &Connect::new(4, "bystander")).await;
    bystander.subscribe(1, &[("will/#", 0)]).await;
    admin.subscribe(1, &[("$CONTROL/k/v1/response", 0)]).await;

    admin.publish("$CONTROL/k/v1", b"{}", 2, false, 3).await;
    let frames = admin.expect_closed().await;
    let kinds: Vec<u8> = frames.iter().map(|f| f.packet_type).collect();
    assert_eq!(kinds, [PUBREC, PUBLISH, DISCONNECT], "{frames:?}");
    assert_eq!(frames[2].reason(), 0x98);
    bystander.expect_quiet().await; // the will of a kicked client is not published

    // The session survived the kick.
    let (_again, connack) = RawClient::connect(addr, &connect).await;
    let Next::Frame(connack) = connack else { panic!("no CONNACK") };
    assert!(connack.session_present());
}

#[tokio::test]
async fn kick_events_disconnect_matching_clients() {
    let (tx, rx) = mpsc::unbounded_channel();
    let security = Scripted::allow_all();
    *security.kicks.lock().unwrap() = Some(rx);
    let (_broker, addr) = start(security).await;
    let mut anonymous_v4 = RawClient::connected(addr, &Connect::new(4, "anon4")).await;
    let mut anonymous_v5 = RawClient::connected(addr, &Connect::new(5, "anon5")).await;
    let mut named_connect = Connect::new(5, "named");
    named_connect.username = Some("bob".into());
    let mut named = RawClient::connected(addr, &named_connect).await;

    tx.send(KickTarget::Anonymous).unwrap();
    assert!(anonymous_v4.expect_closed().await.is_empty(), "3.x: just closed");
    let frames = anonymous_v5.expect_closed().await;
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].packet_type, frames[0].reason()), (DISCONNECT, 0x98));
    named.ping().await;
    tx.send(KickTarget::Username("bob".into())).unwrap();
    assert_eq!(named.expect_closed().await[0].reason(), 0x98);
}

#[tokio::test]
async fn refused_connects_get_the_right_code_and_no_will() {
    let mut security = Scripted::allow_all();
    security.auth = Box::new(|request| match request.username.as_deref() {
        Some("bad") => Verdict::BadUsernameOrPassword,
        Some("no") => Verdict::NotAuthorized,
        _ => Verdict::Accept,
    });
    let (_broker, addr) = start(security).await;
    let mut watcher = RawClient::connected(addr, &Connect::new(4, "will-watcher")).await;
    watcher.subscribe(1, &[("will/#", 0)]).await;
    for (version, user, code) in [(4, "no", 5), (5, "no", 0x87), (3, "bad", 4), (5, "bad", 0x86)] {
        let mut connect = Connect::new(version, "refused");
        connect.username = Some(user.into());
        connect.will = Some(("will/refused".into(), b"x".to_vec(), 0, false));
        let (mut client, reply) = RawClient::connect(addr, &connect).await;
        let Next::Frame(connack) = reply else { panic!("no CONNACK for {user} v{version}") };
        assert_eq!((connack.packet_type, connack.reason()), (CONNACK, code), "{user} v{version}");
        assert!(client.expect_closed().await.is_empty());
    }
    watcher.expect_quiet().await;
}

#[tokio::test]
async fn wills_are_checked_when_they_fire() {
    let rule = |_: Option<&str>, access: Access, topic: &str| !(access == Access::Publish && topic == "will/denied");
    let (_broker, addr) = start(Scripted::new(rule)).await;
    let mut watcher = RawClient::connected(addr, &Connect::new(4, "w")).await;
    watcher.subscribe(1, &[("will/#", 0)]).await;
    for topic in ["will/denied", "will/allowed"] {
        let mut connect = Connect::new(4, topic);
        connect.will = Some((topic.into(), b"bye".to_vec(), 1, false));
        let client = RawClient::connected(addr, &connect).await;
        drop(client); // abrupt close
    }
    let got = watcher.expect_publish().await;
    assert_eq!(got.topic, "will/allowed");
    watcher.expect_quiet().await;
}

/// The next PUBACK, skipping `$SYS` deliveries (bounded: the broker publishes a few dozen).
async fn puback_past_sys_messages(client: &mut RawClient) -> Frame {
    for _ in 0..1000 {
        let Next::Frame(frame) = client.next(std::time::Duration::from_secs(10)).await else {
            panic!("closed or silent while waiting for a PUBACK");
        };
        if frame.packet_type == PUBACK {
            return frame;
        }
        assert_eq!(frame.packet_type, PUBLISH, "expected PUBACK or a $SYS PUBLISH");
        assert!(frame.publish(true).topic.starts_with("$SYS/broker/"));
    }
    panic!("no PUBACK among 1000 frames");
}

#[tokio::test]
async fn sys_topics_never_disconnect_and_are_never_publishable() {
    let rule = |_: Option<&str>, _: Access, topic: &str| topic != "$SYS/denied/#";
    let (_broker, addr) = start(Scripted::new(rule)).await;
    let mut v5 = RawClient::connected(addr, &Connect::new(5, "sys5")).await;
    assert_eq!(v5.subscribe(1, &[("$SYS/#", 0), ("$SYS/denied/#", 0)]).await, [0, 0x87]);
    // (The retained $SYS/broker messages arrive on the subscription meanwhile.)
    v5.publish("$SYS/broker/x", b"no", 1, false, 2).await;
    assert_eq!(puback_past_sys_messages(&mut v5).await.reason(), 0x87);
    v5.publish("$share/g/x", b"no", 1, false, 3).await;
    assert_eq!(puback_past_sys_messages(&mut v5).await.reason(), 0x87);
    let mut v4 = RawClient::connected(addr, &Connect::new(4, "sys4")).await;
    assert_eq!(v4.subscribe(1, &[("$SYS/#", 0)]).await, [0]);
    v4.ping().await;
    v5.ping().await;
}

#[tokio::test]
async fn acl_decisions_are_live() {
    let allowed = Arc::new(AtomicBool::new(true));
    let switch = allowed.clone();
    let rule =
        move |_: Option<&str>, access: Access, _: &str| access != Access::Receive || switch.load(Ordering::SeqCst);
    let (_broker, addr) = start(Scripted::new(rule)).await;
    let mut sub = RawClient::connected(addr, &Connect::new(4, "live")).await;
    sub.subscribe(1, &[("t", 0)]).await;
    let mut publisher = RawClient::connected(addr, &Connect::new(4, "live-pub")).await;
    publisher.publish("t", b"1", 0, false, 0).await;
    assert_eq!(&sub.expect_publish().await.payload[..], b"1");
    allowed.store(false, Ordering::SeqCst);
    publisher.publish("t", b"2", 0, false, 0).await;
    sub.expect_quiet().await;
    allowed.store(true, Ordering::SeqCst);
    publisher.publish("t", b"3", 0, false, 0).await;
    assert_eq!(&sub.expect_publish().await.payload[..], b"3");
}

#[tokio::test]
async fn shutdown_disconnects_clients_then_calls_the_hook() {
    let security = Scripted::allow_all();
    let flag = security.shut_down.clone();
    let (broker, addr) = start(security).await;
    let mut v5 = RawClient::connected(addr, &Connect::new(5, "stay")).await;
    let mut v4 = RawClient::connected(addr, &Connect::new(4, "stay4")).await;
    broker.shutdown().await;
    assert!(flag.load(Ordering::SeqCst));
    let frames = v5.expect_closed().await;
    assert_eq!((frames[0].packet_type, frames[0].reason()), (DISCONNECT, 0x8B));
    assert!(v4.expect_closed().await.is_empty());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn packets_pipelined_behind_the_connect_are_handled() {
    let (_broker, addr) = start(Scripted::allow_all()).await;
    let mut client = RawClient::open(addr).await;
    let mut bytes = Connect::new(4, "eager").encode();
    bytes.extend(subscribe(false, 1, &[("eager/#", 0)]));
    bytes.extend(pingreq());
    client.send(&bytes).await;
    assert_eq!(client.expect(CONNACK).await.reason(), 0);
    // (The PINGRESP is answered at once, the SUBACK after the router's: either order.)
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let Next::Frame(frame) = client.next(WAIT).await else { panic!("missing answer after {kinds:?}") };
        kinds.push(frame.packet_type);
    }
    kinds.sort();
    assert_eq!(kinds, [SUBACK, PINGRESP]);
}

#[tokio::test]
async fn keepalive_above_max_keepalive() {
    let (_broker, addr) = start_with("max_keepalive 60\n", Scripted::allow_all()).await;
    let mut connect = Connect::new(4, "ka-high");
    connect.keep_alive = 61;
    let (_client, reply) = RawClient::connect(addr, &connect).await;
    let Next::Frame(connack) = reply else { panic!("no CONNACK") };
    assert_eq!(connack.reason(), 2, "3.x: identifier rejected, as mosquitto");
    connect.version = 5;
    let (_client, reply) = RawClient::connect(addr, &connect).await;
    let Next::Frame(connack) = reply else { panic!("no CONNACK") };
    assert_eq!(connack.reason(), 0);
    assert!(connack.body.ends_with(&[19, 0, 60]), "v5: Server Keep Alive 60, {connack:?}");
}

#[tokio::test]
async fn takeover_of_a_persistent_session_hands_it_over() {
    let (_broker, addr) = start(Scripted::allow_all()).await;
    let mut connect = Connect::new(5, "handover");
    connect.clean = false;
    connect.session_expiry = Some(600);
    let mut first = RawClient::connected(addr, &connect).await;
    first.subscribe(1, &[("handover/#", 1)]).await;
    let (mut second, reply) = RawClient::connect(addr, &connect).await;
    let Next::Frame(connack) = reply else { panic!("no CONNACK") };
    assert!(connack.session_present(), "the session moved to the new connection");
    let frames = first.expect_closed().await;
    assert_eq!((frames[0].packet_type, frames[0].reason()), (DISCONNECT, 0x8E));
    let mut publisher = RawClient::connected(addr, &Connect::new(4, "handover-pub")).await;
    publisher.publish("handover/x", b"after takeover", 1, false, 1).await;
    publisher.expect(PUBACK).await;
    assert_eq!(&second.expect_publish().await.payload[..], b"after takeover");
}

#[tokio::test]
async fn subscription_identifiers_survive_a_resumed_session() {
    let (_broker, addr) = start(Scripted::allow_all()).await;
    let mut connect = Connect::new(5, "sub-ids");
    connect.clean = false;
    connect.session_expiry = Some(600);
    let mut client = RawClient::connected(addr, &connect).await;
    // SUBSCRIBE with Subscription Identifier 7.
    client.send(&packet(0x82, &[0, 1, 2, 11, 7, 0, 4, b'i', b'd', b'/', b'#', 0])).await;
    client.expect(SUBACK).await;
    client.send(&disconnect()).await;
    client.expect_closed().await;
    let mut client = RawClient::connected(addr, &connect).await;
    let mut publisher = RawClient::connected(addr, &Connect::new(4, "ids-pub")).await;
    publisher.publish("id/x", b"tagged", 0, false, 0).await;
    let got = client.expect_publish().await;
    assert_eq!(&got.payload[..], b"tagged");
    assert_eq!(&got.properties[..], &[11, 7], "Subscription Identifier 7 after resuming");
}
