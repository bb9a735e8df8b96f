//! SUBSCRIBE and UNSUBSCRIBE: each filter is checked (syntax, per-client limit, ACL, what the
//! router can take, the budget of filters new to it) and sent where its kind belongs: the router, the `$CONTROL` registry or the
//! `$SYS` tree. Back-pressure then tracks the connection in the lane of its filters. Also the
//! subscriptions' side of deliveries: which ones belong to the client as far as the router cannot
//! tell, and the re-check of a persistent session's subscriptions when the client's rights
//! changed (mosquitto's fix for CVE-2021-34434).

use rumqttd::protocol::{RetainForwardRule, Subscribe, SubscribeProperties, Unsubscribe};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::Connection;
use super::exit::Exit;
use crate::gate::client_log;
use crate::gate::codec::reason;
use crate::gate::saved_session::{Subscription, SubscriptionKind};
use crate::gate::subscriptions::{self, PendingAcks};
use crate::logging::client_text;
use crate::routing::backpressure::Lane;
use crate::routing::router_guard::{self, ToRouter};
use crate::routing::router_link::{RouterLink, RoutingEngine};
use crate::security::{Access, Protocol};

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    pub(super) fn on_subscribe(
        &mut self,
        subscribe: Subscribe,
        properties: Option<SubscribeProperties>,
    ) -> Result<(), Exit> {
        let id = properties.as_ref().and_then(|p| p.id);
        if id == Some(0) {
            return Err(Exit::Protocol(reason::PROTOCOL_ERROR));
        }
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut routed = Vec::new();
        let mut retained = Vec::new();
        let mut renewed = Vec::new();
        let mut hub_filters = Vec::new();
        for mut filter in subscribe.filters {
            // mosquitto_validate_utf8 (no U+0000, no control characters): a malformed packet.
            if dynsec::topic::valid_mqtt_utf8(filter.path.as_bytes()).is_none() {
                info!(client_id = %client_text(&self.client_id), "subscription filter is not valid MQTT UTF-8");
                return Err(Exit::Protocol(reason::MALFORMED_PACKET));
            }
            if !subscriptions::valid_filter(&filter.path) {
                info!(client_id = %client_text(&self.client_id), filter = %client_text(&filter.path), "invalid subscription filter");
                return Err(Exit::Protocol(reason::MALFORMED_PACKET));
            }
            if filter.nolocal && subscriptions::is_shared(&filter.path) {
                return Err(Exit::Protocol(reason::PROTOCOL_ERROR));
            }
            let qos = filter.qos as u8;
            client_log::subscribe_filter(&self.client_id, &filter.path, qos);
            let limit = self.shared.config.gate.max_subscriptions_per_client;
            if limit > 0 && self.subscriptions.len() >= limit && !self.subscriptions.contains_key(&filter.path) {
                debug!(client_id = %self.client_id, filter = %filter.path, "subscription over the per-client limit");
                codes.push(if self.protocol == Protocol::V5 {
                    reason::QUOTA_EXCEEDED
                } else {
                    reason::UNSPECIFIED_ERROR
                });
                continue;
            }
            if !self.authz.allows(Access::Subscribe, &filter.path) {
                debug!(client_id = %client_text(&self.client_id), filter = %client_text(&filter.path), "SUBSCRIBE denied");
                codes.push(subscriptions::denied_code(self.protocol, qos));
                continue;
            }
            let kind = subscriptions::kind_of(&filter.path);
            match kind {
                SubscriptionKind::Routed => {
                    if let Err(hazard) =
                        router_guard::admit(ToRouter::Subscribe { filter: &filter.path, subscription_id: id })
                    {
                        info!(client_id = %client_text(&self.client_id), filter = %client_text(&filter.path), %hazard, "filter the router cannot take");
                        codes.push(subscriptions::refused_code(self.protocol, hazard));
                        continue;
                    }
                    if self.uses_hub(&filter.path) {
                        // The fleet hub serves it (`routing::hub`): granted as asked, at once;
                        // retained messages follow the SUBACK unless Retain Handling says no
                        // (1 on an existing subscription: none).
                        if self.subscriptions.contains_key(&filter.path)
                            && filter.retain_forward_rule == RetainForwardRule::OnNewSubscribe
                        {
                            filter.retain_forward_rule = RetainForwardRule::Never;
                        }
                        codes.push(qos);
                        hub_filters.push(filter.clone());
                    } else {
                        let gate = &self.shared.config.gate;
                        if !self.shared.router_filters.admit(
                            &filter.path,
                            &mut self.extras.make(self.conn_id).filter_budget,
                            gate.new_filters_per_second,
                            gate.new_filters_burst,
                        ) {
                            debug!(client_id = %client_text(&self.client_id), filter = %client_text(&filter.path), "filter new to the router over the budget");
                            codes.push(if self.protocol == Protocol::V5 {
                                reason::QUOTA_EXCEEDED
                            } else {
                                reason::UNSPECIFIED_ERROR
                            });
                            continue;
                        }
                        codes.push(PendingAcks::ROUTED);
                        routed.push(filter.clone());
                        if let Some(previous) = self.subscriptions.get(&filter.path) {
                            // A repeated SUBSCRIBE replaces the subscription. rumqttd keeps its first
                            // QoS (docs/rumqttd.md defect 15): make it new again when the QoS
                            // changes. (Retained messages due to it come from the gate's index.)
                            if !subscriptions::is_shared(&filter.path) && previous.filter.qos != filter.qos {
                                renewed.push(filter.path.clone());
                            }
                            if filter.retain_forward_rule == RetainForwardRule::OnNewSubscribe {
                                // Retain Handling 1 on an existing subscription: no retained messages,
                                // now or when the router renews it.
                                filter.retain_forward_rule = RetainForwardRule::Never;
                            }
                        }
                    }
                }
                SubscriptionKind::Control => {
                    self.shared.control.subscribe(
                        self.conn_id,
                        self.listener.id,
                        &filter.path,
                        &self.mailbox_tx,
                        &self.authz,
                    );
                    codes.push(qos);
                }
                SubscriptionKind::Local => {
                    retained.extend(self.shared.sys.subscribe(
                        self.conn_id,
                        &filter.path,
                        &self.mailbox_tx,
                        &self.authz,
                        true,
                    ));
                    codes.push(qos)
                }
            }
            let count = crate::metrics::SubscriptionCount::new(subscriptions::is_shared(&filter.path));
            let share = crate::cluster::shared_groups::ShareMembership::join(&filter.path);
            self.subscriptions.insert(Subscription { filter, kind, id, count, share });
        }
        if !renewed.is_empty() {
            // (The router's UNSUBACK is not passed on: the gate answers UNSUBSCRIBEs itself.)
            self.link.unsubscribe(subscribe.pkid, &renewed);
        }
        if !hub_filters.is_empty() {
            // Before the SUBACK: a PUBLISH read after this SUBSCRIBE must reach this client.
            self.hub_subscribe(hub_filters);
        }
        if !routed.is_empty() {
            // Before the router has it: a PUBLISH read after this SUBSCRIBE must be routed.
            for filter in &routed {
                self.shared.subscribed_filters.insert(&filter.path);
            }
            self.replay_retained_for_routed(&routed);
            self.link.subscribe(subscribe.pkid, routed, properties);
        }
        self.pending_acks.subscribe(subscribe.pkid, codes, retained);
        self.write_ready_acks();
        self.track_backlog();
        if self.persist.is_some() {
            self.session_subscriptions_changed();
        }
        Ok(())
    }

    pub(super) fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Exit> {
        // MQTT 3.1.1 [MQTT-3.10.3-2] and 5.0 [MQTT-3.10.3-2]: at least one filter. (mosquitto
        // 2.0 answers an empty 3.1 UNSUBSCRIBE, which that version did not forbid.)
        if unsubscribe.filters.is_empty() && self.protocol != Protocol::V31 {
            info!(client_id = %client_text(&self.client_id), "UNSUBSCRIBE without filters");
            return Err(Exit::Protocol(reason::MALFORMED_PACKET));
        }
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        let mut routed = Vec::new();
        for filter in unsubscribe.filters {
            if dynsec::topic::valid_mqtt_utf8(filter.as_bytes()).is_none() {
                info!(client_id = %client_text(&self.client_id), "unsubscription filter is not valid MQTT UTF-8");
                return Err(Exit::Protocol(reason::MALFORMED_PACKET));
            }
            if !subscriptions::valid_filter(&filter) {
                return Err(Exit::Protocol(reason::MALFORMED_PACKET));
            }
            client_log::unsubscribe_filter(&self.client_id, &filter);
            if !self.authz.allows(Access::Unsubscribe, &filter) {
                codes.push(reason::NOT_AUTHORIZED); // the subscription is kept
                continue;
            }
            match self.subscriptions.remove(&filter) {
                None => codes.push(reason::NO_SUBSCRIPTION_EXISTED),
                Some(subscription) => {
                    codes.push(0);
                    match subscription.kind {
                        // (It was admitted when subscribed.)
                        SubscriptionKind::Routed => {
                            if !self.hub_unsubscribe(&filter) {
                                routed.push(filter)
                            }
                        }
                        SubscriptionKind::Control => self.shared.control.unsubscribe(self.conn_id, &filter),
                        SubscriptionKind::Local => self.shared.sys.unsubscribe(self.conn_id, &filter),
                    }
                }
            }
        }
        if !routed.is_empty() {
            self.link.unsubscribe(unsubscribe.pkid, &routed);
        }
        self.pending_acks.unsubscribe(unsubscribe.pkid, codes);
        self.write_ready_acks();
        self.track_backlog();
        if self.persist.is_some() {
            self.session_subscriptions_changed();
        }
        Ok(())
    }

    /// Removes the subscriptions the client may no longer make (its rights changed since it made
    /// them), everywhere they are served; returns the routed ones. mosquitto 2.0.12+ does this
    /// when it kicks a client with a persistent session (CVE-2021-34434); the gate also does it
    /// when a session resumes, for changes made while its client was away.
    pub(super) fn drop_revoked_subscriptions(&mut self) -> Vec<String> {
        let authz = &self.authz;
        let revoked: Vec<String> =
            self.subscriptions.keys().filter(|filter| !authz.allows(Access::Subscribe, filter)).cloned().collect();
        let mut routed = Vec::new();
        for filter in revoked {
            let Some(subscription) = self.subscriptions.remove(&filter) else { continue };
            info!(client_id = %client_text(&self.client_id), filter = %client_text(&filter), "subscription removed: no longer allowed");
            match subscription.kind {
                SubscriptionKind::Routed => {
                    if !self.hub_unsubscribe(&filter) {
                        routed.push(filter)
                    }
                }
                SubscriptionKind::Control => self.shared.control.unsubscribe(self.conn_id, &filter),
                SubscriptionKind::Local => self.shared.sys.unsubscribe(self.conn_id, &filter),
            }
        }
        if !routed.is_empty() {
            self.link.unsubscribe(0, &routed); // (the router's UNSUBACK is never written)
            self.track_backlog();
        }
        routed
    }

    /// Whether a message the router delivers may still belong to this client (which of its
    /// subscriptions match, by MQTT's rules, is `gate::delivery`'s decision): while the
    /// subscriptions of a resumed session are being re-sent, nothing for a filter dropped by
    /// [`Self::drop_revoked_subscriptions`]:
    /// the router may have queued it before it took the UNSUBSCRIBE, and what it queued comes
    /// before its answer to the re-sent subscriptions.
    pub(super) fn wants_delivery(&self, topic: &str) -> bool {
        let revoked = self.extras.get().map_or(&[][..], |extras| &extras.revoked_on_resume[..]);
        if revoked.is_empty() || !self.pending_acks.resubscribing() {
            return true;
        }
        let matches = |filter: &String| subscriptions::matches_mqtt(filter, topic.as_bytes());
        !revoked.iter().any(matches) || self.subscriptions.keys().any(matches)
    }

    /// Back-pressure tracks connections with non-shared routed subscriptions (QoS 0 included: a
    /// burst must not roll the router's log over under a subscriber that keeps up on average),
    /// in the lane of their filters; not the hub's (its bounded queues drop for a subscriber
    /// that cannot keep up, `routing::hub`).
    pub(super) fn track_backlog(&mut self) {
        let mut tracked = self
            .subscriptions
            .values()
            .filter(|s| {
                s.kind == SubscriptionKind::Routed
                    && !subscriptions::is_shared(&s.filter.path)
                    && !self.is_hub_filter(&s.filter.path) // (hub queues drop instead)
            })
            .map(|s| s.filter.path.as_str())
            .peekable();
        let lane = tracked.peek().is_some().then(|| Lane::of_filters(tracked));
        // (Untracked and staying so: nothing to change, and no occasional state to make.)
        let backlog = match lane {
            Some(_) => &mut self.extras.make(self.conn_id).backlog,
            None => match self.extras.get_mut() {
                Some(extras) => &mut extras.backlog,
                None => return,
            },
        };
        let before = backlog.lane();
        backlog.track(&self.shared.pressure, lane);
        if let Some(lane) = backlog.lane()
            && Some(lane) != before
        {
            self.probe_requests = self.shared.pressure.watch_probe_requests(lane);
        }
    }
}
