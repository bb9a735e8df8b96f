//! Shared subscriptions' filters (`$share/<group>/<filter>`): whether a filter is one, its group,
//! and the filter it matches topics with. Plain string functions, used by the gate's
//! subscriptions, the router's filter index and the cluster's queue groups alike.

/// Whether the filter is a shared subscription.
pub fn is_shared(filter: &str) -> bool {
    filter.starts_with("$share/")
}

/// The group of a shared subscription (`$share/<group>/<filter>` → `<group>`).
pub fn share_group(filter: &str) -> Option<&str> {
    filter.strip_prefix("$share/").and_then(|rest| rest.split_once('/')).map(|(group, _)| group)
}

/// The filter a subscription matches topics with (`$share/<group>/<filter>` matches as `<filter>`).
pub fn matching_path(filter: &str) -> &str {
    if is_shared(filter) {
        filter.strip_prefix("$share/").and_then(|rest| rest.split_once('/')).map_or(filter, |(_, path)| path)
    } else {
        filter
    }
}
