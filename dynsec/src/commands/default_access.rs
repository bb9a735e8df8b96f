//! Default access and anonymous clients: `setDefaultACLAccess`, `getDefaultACLAccess`,
//! `setAnonymousGroup`, `getAnonymousGroup`.

use super::*;

impl Processor<'_> {
    pub(super) fn set_default_acl_access(&mut self, cmd: &Json) -> CommandResult {
        let Some(entries) = cmd.get("acls").and_then(Json::as_array) else {
            return Err("Missing/invalid actions array");
        };
        let mut access = self.model.default_access;
        for entry in entries {
            let (Some(kind), Some(allow)) =
                (required_str(entry, "acltype"), entry.get("allow").and_then(Json::as_bool))
            else {
                continue;
            };
            if let Some(i) = DEFAULT_ACCESS_KEYS.iter().position(|k| k.as_bytes().eq_ignore_ascii_case(kind)) {
                access.set(i, allow);
            }
        }
        if access != self.model.default_access {
            self.apply(Mutation::SetDefaultAccess(access));
        }
        Ok(None)
    }

    pub(super) fn get_default_acl_access(&mut self) -> CommandResult {
        let acls = DEFAULT_ACCESS_KEYS
            .iter()
            .enumerate()
            .map(|(i, key)| {
                Json::object()
                    .with("acltype", Json::str(key))
                    .with("allow", Json::Bool(self.model.default_access.get(i)))
            })
            .collect();
        Ok(Some(Json::object().with("acls", Json::Array(acls))))
    }

    /// mosquitto 2.1's `getDetails`: the counts and `changeIndex` (this batch's changes so far
    /// included, as 2.1 counts them at once).
    pub(super) fn set_anonymous_group(&mut self, cmd: &Json) -> CommandResult {
        let group = groupname(cmd)?;
        if !self.model.groups.contains_key(group) {
            return Err("Group not found");
        }
        if self.model.anonymous_group.as_deref() != Some(group) {
            self.apply(Mutation::SetAnonymousGroup(Some(group.to_owned())));
        }
        self.outcome.kicks.anonymous = true;
        Ok(None)
    }

    pub(super) fn get_anonymous_group(&mut self) -> CommandResult {
        let name = self.model.anonymous_group.as_deref().unwrap_or("");
        Ok(Some(Json::object().with("group", Json::object().with("groupname", Json::str(name)))))
    }
}
