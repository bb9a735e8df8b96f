//! The role commands: `createRole`, `deleteRole`, `modifyRole`, `getRole`, `listRoles`,
//! `addRoleACL`, `removeRoleACL`.

use super::*;

impl Processor<'_> {
    pub(super) fn create_role(&mut self, cmd: &Json) -> LimitedResult {
        let name = new_name(cmd, "rolename", "Empty rolename")?;
        let textname = optional_str(cmd, "textname").map_err(|()| "Invalid/missing textname")?;
        let textdescription = optional_str(cmd, "textdescription").map_err(|()| "Invalid/missing textdescription")?;
        let allow_wildcard_subs = match cmd.get("allowwildcardsubs") {
            None => true,
            Some(value) => value.as_bool().ok_or("Invalid allowwildcardsubs")?,
        };
        if self.model.roles.contains_key(name) {
            return Err("Role already exists".into());
        }
        let mut role = Role::new(name);
        role.textname = textname.map(text);
        role.textdescription = textdescription.map(text);
        role.allow_wildcard_subs = allow_wildcard_subs;
        if let Some(acls) = cmd.get("acls").and_then(Json::as_array) {
            acls_from_json(acls, &mut role);
        }
        if role.acl_count() > self.limits.max_acls_per_role {
            return Err(CommandError::Limit(too_many_acls(self.limits)));
        }
        self.apply(Mutation::PutRole(role));
        Ok(None)
    }

    pub(super) fn delete_role(&mut self, cmd: &Json) -> CommandResult {
        let name = rolename(cmd)?;
        if !self.model.roles.contains_key(name) {
            return Err("Role not found");
        }
        self.kick_role(name);
        self.apply(Mutation::DeleteRole(name.to_owned()));
        Ok(None)
    }

    pub(super) fn modify_role(&mut self, cmd: &Json) -> LimitedResult {
        let name = rolename(cmd)?;
        let mut role = self.model.roles.get(name).cloned().ok_or("Role does not exist")?;
        if let Some(textname) = required_str(cmd, "textname") {
            role.textname = Some(text(textname));
        }
        if let Some(textdescription) = required_str(cmd, "textdescription") {
            role.textdescription = Some(text(textdescription));
        }
        // A non-boolean value is ignored, as in 2.1.
        let mut kick = false;
        if let Some(allow) = cmd.get("allowwildcardsubs").and_then(Json::as_bool)
            && allow != role.allow_wildcard_subs
        {
            role.allow_wildcard_subs = allow;
            kick = true;
        }
        if let Some(acls) = cmd.get("acls").and_then(Json::as_array) {
            role.acls = Default::default();
            acls_from_json(acls, &mut role);
            if role.acl_count() > self.limits.max_acls_per_role {
                return Err(CommandError::Limit(too_many_acls(self.limits)));
            }
            // 2.1 kicks for any `acls` array, even one that changes nothing.
            kick = true;
        }
        if self.model.roles.get(name) != Some(&role) {
            self.apply(Mutation::PutRole(role));
        }
        // 2.1 disconnects the holders when their rights may have changed (2.0.x did not kick).
        if kick {
            self.kick_role(name);
        }
        Ok(None)
    }

    pub(super) fn get_role(&mut self, cmd: &Json) -> CommandResult {
        let name = rolename(cmd)?;
        let role = self.model.roles.get(name).ok_or("Role not found")?;
        Ok(Some(Json::object().with("role", role_info(role))))
    }

    pub(super) fn list_roles(&mut self, cmd: &Json) -> CommandResult {
        let (verbose, count, offset) =
            (bool_or(cmd, "verbose", false), int_or(cmd, "count", -1), int_or(cmd, "offset", 0));
        let roles =
            paged(
                self.model.roles.values(),
                count,
                offset,
                |r| {
                    if verbose { role_info(r) } else { Json::str(&r.name) }
                },
            );
        Ok(Some(Json::object().with("totalCount", Json::int(self.model.roles.len() as i64)).with("roles", roles)))
    }

    /// addRoleACL/removeRoleACL share their checks; the role is looked up before the ACL fields
    /// are validated (mosquitto's order).
    pub(super) fn role_acl_fields(&self, cmd: &Json) -> Result<(String, AclType, String), &'static str> {
        let name = rolename(cmd)?;
        if !self.model.roles.contains_key(name) {
            return Err("Role not found");
        }
        let kind = required_str(cmd, "acltype").ok_or("Invalid/missing acltype")?;
        let acl_type = AclType::parse(kind).ok_or("Unknown acltype")?;
        let topic = required_str(cmd, "topic").ok_or("Invalid/missing topic")?;
        let topic = valid_mqtt_utf8(topic).ok_or("Topic not valid UTF-8")?;
        // 2.1's filter check refuses an empty topic too (2.0.11 accepted it).
        if topic.is_empty() || !valid_filter(topic) {
            return Err("Invalid ACL topic");
        }
        Ok((name.to_owned(), acl_type, topic.to_owned()))
    }

    /// Edits the role in place through [`Mutation::AddAcl`]: copying the role per edit made a
    /// message of many edits quadratic in memory, time and journal size.
    pub(super) fn add_role_acl(&mut self, cmd: &Json) -> LimitedResult {
        let (name, acl_type, topic) = self.role_acl_fields(cmd)?;
        let role = self.model.roles.get(&name).ok_or("Role not found")?;
        const EXISTS: &str = "ACL with this topic already exists";
        if role.acl_count() >= self.limits.max_acls_per_role {
            // A duplicate is reported as such, as below the limit.
            if role.acls[acl_type.index()].iter().any(|a| a.topic == topic) {
                return Err(EXISTS.into());
            }
            return Err(CommandError::Limit(too_many_acls(self.limits)));
        }
        let acl =
            Acl { topic, priority: clamp_priority(int_or(cmd, "priority", 0)), allow: bool_or(cmd, "allow", false) };
        // The duplicate check is the model's own (one scan of the list, not two).
        if !self.apply(Mutation::AddAcl { role: name.clone(), acl_type, acl, at: None }) {
            return Err(EXISTS.into());
        }
        self.kick_role(&name);
        Ok(None)
    }

    pub(super) fn remove_role_acl(&mut self, cmd: &Json) -> CommandResult {
        let (name, acl_type, topic) = self.role_acl_fields(cmd)?;
        if !self.apply(Mutation::RemoveAcl { role: name.clone(), acl_type, topic }) {
            return Err("ACL not found");
        }
        self.kick_role(&name);
        Ok(None)
    }
}
