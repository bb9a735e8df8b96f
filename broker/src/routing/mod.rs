//! Routing: the link to rumqttd's router and the guards around it; `envelope` carries what the
//! router does not keep about a message. `router_link` drives the
//! router; `lazy_link` attaches a connection's link on first use; `router_guard` refuses what
//! the router cannot take; `topic_form` spells topics and filters so that it can take them;
//! `unsubscribe_repair` completes what its UNSUBSCRIBE leaves undone;
//! `topic_budget` and `filter_budget` bound the topics and filters new to it (with a
//! `token_bucket` per connection); `backpressure` and `ack_sequencer` keep
//! publishers and acknowledgements in step with slow subscribers; `router_drops` counts what the
//! router drops for a subscriber that cannot keep up;
//! `attach_fence` keeps a subscription ahead of publishes read after it; `subscribed_filters`
//! keeps from it the messages no filter matches; `shared_filter` reads `$share/...` filters; `filter_tree` is the filter tree both
//! it and `hub` match topics with;
//! `hub` and `publisher_pool` (`gate_fleet_hub true`) serve clean sessions without a router
//! link of their own; `retained_index` holds the retained messages (the router holds none),
//! which the hub's reader of the router's `#` log keeps in every configuration.

pub mod ack_sequencer;
pub mod attach_fence;
pub mod backpressure;
pub mod envelope;
pub mod filter_budget;
pub mod filter_tree;
pub mod hub;
pub(crate) mod lazy_link;
#[cfg(any(test, feature = "testkit"))]
pub mod null_engine;
pub mod publisher_pool;
pub mod retained_index;
pub mod router_drops;
pub mod router_guard;
pub mod router_link;
pub mod shared_filter;
pub mod subscribed_filters;
pub mod token_bucket;
pub mod topic_budget;
pub mod topic_form;
pub mod unsubscribe_repair;
