//! A tree of MQTT topic filters with a value per filter, matched against topics by MQTT's rules:
//! one level per node, `+` and `#` as their own branches, `#` matching its parent level too, and
//! no wildcard at the first level matching a `$` topic (MQTT-4.7.2-1), as the gate's delivery
//! matcher (`gate::subscriptions::matches_mqtt`) does.
//!
//! Shared by the gate's two indexes of filters: `subscribed_filters` (does any filter handed to
//! the router match a topic?) and the fleet hub's fan-out index (`hub`: which connections'
//! filters match?). A walk follows the topic's levels, so a lookup costs the same with ten
//! filters or a hundred thousand.
//!
//! A filter without a wildcard matches exactly one topic, itself: such filters are kept in a
//! hash map by their text rather than as a chain of nodes, one per level. A device fleet
//! subscribes each device to its own command topic, so this is most filters; as a chain, each
//! took two boxed nodes and a map of its own in each index (~690 bytes per device in the two,
//! docs/benchmarks.md, "Per-user and per-subscription data").

use std::collections::HashMap;
use std::ops::ControlFlow;

/// See the module documentation. Filters are in their matching form (no `$share/<group>/`).
#[derive(Debug)]
pub struct FilterTree<T> {
    /// Filters without a `+` or `#` level, by their text.
    exact: HashMap<Box<[u8]>, T>,
    /// Filters with a wildcard level.
    root: Node<T>,
}

#[derive(Debug)]
struct Node<T> {
    /// Boxed children: a map holds at least four slots, and a fleet's device levels each have
    /// one child (`dev7/cmd`), so inline nodes cost ~750 bytes per device in the hub's index
    /// (docs/benchmarks.md, "The gate's memory per connection").
    literal: HashMap<Box<[u8]>, Box<Node<T>>>,
    plus: Option<Box<Node<T>>>,
    /// The value of the filter ending here with `#` (it matches this level's parent and below).
    hash: Option<T>,
    /// The value of the filter ending here.
    end: Option<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { literal: HashMap::new(), plus: None, hash: None, end: None }
    }
}

impl<T> Default for FilterTree<T> {
    fn default() -> Self {
        FilterTree { exact: HashMap::new(), root: Node::default() }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.plus.is_none() && self.hash.is_none() && self.end.is_none()
    }
}

impl<T> FilterTree<T> {
    /// No filter is left.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.root.is_empty()
    }

    /// The value of `filter`, made by `make` if the filter is new; and whether it was.
    pub fn slot(&mut self, filter: &[u8], make: impl FnOnce() -> T) -> (&mut T, bool) {
        if is_exact(filter) {
            let mut new = false;
            let value = self.exact.entry(filter.into()).or_insert_with(|| {
                new = true;
                make()
            });
            return (value, new);
        }
        let mut node = &mut self.root;
        let mut levels = filter.split(|&b| b == b'/').peekable();
        while let Some(level) = levels.next() {
            match level {
                b"#" if levels.peek().is_none() => return insert(&mut node.hash, make),
                b"+" => node = node.plus.get_or_insert_with(Box::default),
                literal => node = node.literal.entry(literal.into()).or_default(),
            }
        }
        insert(&mut node.end, make)
    }

    /// Lets `change` update the value of `filter`, if it is in the tree; a `true` from `change`
    /// means the value is empty now: the filter leaves the tree, with the nodes it leaves empty.
    pub fn update(&mut self, filter: &[u8], change: impl FnOnce(&mut T) -> bool) {
        if is_exact(filter) {
            if self.exact.get_mut(filter).is_some_and(change) {
                self.exact.remove(filter);
            }
            return;
        }
        let levels: Vec<&[u8]> = filter.split(|&b| b == b'/').collect();
        update(&mut self.root, &levels, change);
    }

    /// Calls `visit` with the value of every filter matching `topic`, until it breaks.
    pub fn matching(&self, topic: &[u8], mut visit: impl FnMut(&T) -> ControlFlow<()>) -> ControlFlow<()> {
        if let Some(value) = self.exact.get(topic) {
            visit(value)?;
        }
        if self.root.is_empty() {
            return ControlFlow::Continue(());
        }
        let levels: Vec<&[u8]> = topic.split(|&b| b == b'/').collect();
        matching(&self.root, &levels, topic.first() == Some(&b'$'), &mut visit)
    }
}

/// No level of `filter` is a wildcard: it matches the topic spelled as it is, and only that one.
/// (A `#` that is not the last level is kept in the tree, where it is a literal, as before.)
fn is_exact(filter: &[u8]) -> bool {
    !filter.split(|&b| b == b'/').any(|level| level == b"+" || level == b"#")
}

fn insert<T>(slot: &mut Option<T>, make: impl FnOnce() -> T) -> (&mut T, bool) {
    let new = slot.is_none();
    (slot.get_or_insert_with(make), new)
}

/// [`FilterTree::update`] below `node` along the remaining `levels`; true when `node` is left
/// empty.
fn update<T>(node: &mut Node<T>, levels: &[&[u8]], change: impl FnOnce(&mut T) -> bool) -> bool {
    match levels.split_first() {
        None => change_slot(&mut node.end, change),
        Some((&b"#", [])) => change_slot(&mut node.hash, change),
        Some((&b"+", rest)) => {
            if let Some(plus) = node.plus.as_mut()
                && update(plus, rest, change)
            {
                node.plus = None;
            }
        }
        Some((literal, rest)) => {
            if let Some(child) = node.literal.get_mut(*literal)
                && update(child, rest, change)
            {
                node.literal.remove(*literal);
            }
        }
    }
    node.is_empty()
}

fn change_slot<T>(slot: &mut Option<T>, change: impl FnOnce(&mut T) -> bool) {
    if slot.as_mut().is_some_and(change) {
        *slot = None;
    }
}

/// Visits the values of filters below `node` matching the remaining `levels`. `dollar`: at the
/// root of a `$` topic, where wildcards do not match.
fn matching<T>(
    node: &Node<T>,
    levels: &[&[u8]],
    dollar: bool,
    visit: &mut impl FnMut(&T) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if !dollar && let Some(value) = &node.hash {
        visit(value)?;
    }
    let Some((level, rest)) = levels.split_first() else {
        return node.end.as_ref().map_or(ControlFlow::Continue(()), visit);
    };
    if let Some(child) = node.literal.get(*level) {
        matching(child, rest, false, visit)?;
    }
    match &node.plus {
        Some(plus) if !dollar => matching(plus, rest, false, visit),
        _ => ControlFlow::Continue(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(tree: &FilterTree<Vec<u32>>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let _ = tree.matching(topic.as_bytes(), |values| {
            out.extend(values);
            ControlFlow::Continue(())
        });
        out.sort_unstable();
        out
    }

    #[test]
    fn values_follow_their_filters_and_empty_filters_leave_the_tree() {
        let mut tree = FilterTree::default();
        for (filter, value) in [("a/#", 1), ("a/+", 2), ("+/b", 3), ("a/b", 4), ("#", 5), ("$SYS/#", 6)] {
            let (values, new) = tree.slot(filter.as_bytes(), Vec::new);
            assert!(new, "{filter}");
            values.push(value);
        }
        assert!(!tree.slot(b"a/b", Vec::new).1, "an existing filter is not new");
        assert_eq!(matched(&tree, "a/b"), [1, 2, 3, 4, 5]);
        assert_eq!(matched(&tree, "a"), [1, 5], "`a/#` matches its parent");
        assert_eq!(matched(&tree, "$SYS/x"), [6], "no first-level wildcard matches a `$` topic");
        tree.slot(b"$SYS/x", Vec::new).0.push(7);
        assert_eq!(matched(&tree, "$SYS/x"), [6, 7], "an exact `$` filter matches its topic");
        assert_eq!(matched(&tree, "a/b/"), [1, 5], "an exact filter matches no other topic");
        let first = tree.matching(b"a/b", |_| ControlFlow::Break(()));
        assert!(first.is_break(), "a visit can stop the walk");
        for filter in ["a/#", "a/+", "+/b", "a/b", "#", "$SYS/#", "$SYS/x"] {
            tree.update(filter.as_bytes(), |values| {
                values.clear();
                true
            });
        }
        tree.update(b"x/y", |_| unreachable!("not in the tree"));
        assert!(tree.is_empty(), "pruned");
    }
}
