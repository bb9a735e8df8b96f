//! The group commands: `createGroup`, `deleteGroup`, `modifyGroup`, `getGroup`, `listGroups`,
//! `addGroupClient`, `removeGroupClient`, `addGroupRole`, `removeGroupRole`.

use super::*;

impl Processor<'_> {
    pub(super) fn create_group(&mut self, cmd: &Json) -> CommandResult {
        let group = new_name(cmd, "groupname", "Empty groupname")?;
        let textname = optional_str(cmd, "textname").map_err(|()| "Invalid/missing textname")?;
        let textdescription = optional_str(cmd, "textdescription").map_err(|()| "Invalid/missing textdescription")?;
        if self.model.groups.contains_key(group) {
            return Err("Group already exists");
        }
        let roles = match role_list(self.model, cmd) {
            Ok(roles) => roles.unwrap_or_default(),
            Err(RoleListError::NotFound) => return Err("Role not found"),
            Err(RoleListError::Invalid) => return Err("Internal error"),
        };
        self.apply(Mutation::PutGroup(Group {
            name: group.to_owned(),
            textname: textname.map(text),
            textdescription: textdescription.map(text),
            roles,
            members: Default::default(),
        }));
        Ok(None)
    }

    pub(super) fn delete_group(&mut self, cmd: &Json) -> CommandResult {
        let group = groupname(cmd)?;
        if !self.model.groups.contains_key(group) {
            return Err("Group not found");
        }
        if self.model.anonymous_group.as_deref() == Some(group) {
            return Err("Deleting the anonymous group is forbidden");
        }
        self.kick_group(group);
        self.apply(Mutation::DeleteGroup(group.to_owned()));
        Ok(None)
    }

    pub(super) fn modify_group(&mut self, cmd: &Json) -> CommandResult {
        let name = groupname(cmd)?;
        let mut group = self.model.groups.get(name).cloned().ok_or("Group not found")?;
        if let Some(textname) = required_str(cmd, "textname") {
            group.textname = Some(text(textname));
        }
        if let Some(textdescription) = required_str(cmd, "textdescription") {
            group.textdescription = Some(text(textdescription));
        }
        match role_list(self.model, cmd) {
            Ok(Some(roles)) => group.roles = roles,
            Ok(None) => {}
            Err(RoleListError::NotFound) => return Err("Role not found"),
            Err(RoleListError::Invalid) => return Err("'roles' not an array or missing/invalid rolename"),
        }
        let mut members: Option<Vec<(String, i32)>> = None;
        if let Some(entries) = cmd.get("clients").and_then(Json::as_array) {
            let mut list: Vec<(String, i32)> = Vec::new();
            for entry in entries.iter().filter(|e| e.is_object()) {
                let Some(username) = entry.get("username").and_then(Json::as_bytes) else {
                    return Err("'clients' contains an object with an invalid 'username'");
                };
                let username = text(username);
                if !self.model.clients.contains_key(&username) {
                    return Err("'clients' contains an object with a 'username' that does not exist");
                }
                if !list.iter().any(|(u, _)| *u == username) {
                    list.push((username, clamp_priority(int_or(entry, "priority", -1))));
                }
            }
            members = Some(list);
        }
        // Old members (before) and new members (after) are both kicked.
        self.kick_group(name);
        if let Some(members) = members {
            let current: Vec<String> = self.model.groups[name].members.keys().cloned().collect();
            for username in current.into_iter().filter(|u| !members.iter().any(|(m, _)| m == u)) {
                self.apply(Mutation::SetMembership { group: name.to_owned(), username, priority: None });
            }
            for (username, priority) in members {
                self.apply(Mutation::SetMembership { group: name.to_owned(), username, priority: Some(priority) });
            }
        }
        self.apply(Mutation::PutGroup(group));
        self.kick_group(name);
        Ok(None)
    }

    pub(super) fn get_group(&mut self, cmd: &Json) -> CommandResult {
        let group = groupname(cmd)?;
        let group = self.model.groups.get(group).ok_or("Group not found")?;
        Ok(Some(Json::object().with("group", group_info(group))))
    }

    pub(super) fn list_groups(&mut self, cmd: &Json) -> CommandResult {
        let (verbose, count, offset) =
            (bool_or(cmd, "verbose", false), int_or(cmd, "count", -1), int_or(cmd, "offset", 0));
        let groups =
            paged(
                self.model.groups.values(),
                count,
                offset,
                |g| {
                    if verbose { group_info(g) } else { Json::str(&g.name) }
                },
            );
        Ok(Some(Json::object().with("totalCount", Json::int(self.model.groups.len() as i64)).with("groups", groups)))
    }

    /// addGroupClient/removeGroupClient: username is validated before groupname, and the user is
    /// kicked whatever the outcome of the lookups (mosquitto 2.0.x).
    pub(super) fn group_client_names(cmd: &Json) -> Result<(&str, &str), &'static str> {
        let username = username(cmd)?;
        let group = groupname(cmd)?;
        Ok((username, group))
    }

    pub(super) fn add_group_client(&mut self, cmd: &Json) -> CommandResult {
        let (username, group) = Self::group_client_names(cmd)?;
        self.kick_user(username);
        if !self.model.clients.contains_key(username) {
            return Err("Client not found");
        }
        let Some(g) = self.model.groups.get(group) else { return Err("Group not found") };
        if g.members.contains_key(username) {
            return Err("Client is already in this group");
        }
        let priority = clamp_priority(int_or(cmd, "priority", -1));
        self.apply(Mutation::SetMembership {
            group: group.to_owned(),
            username: username.to_owned(),
            priority: Some(priority),
        });
        Ok(None)
    }

    pub(super) fn remove_group_client(&mut self, cmd: &Json) -> CommandResult {
        let (username, group) = Self::group_client_names(cmd)?;
        self.kick_user(username);
        if !self.model.clients.contains_key(username) {
            return Err("Client not found");
        }
        if !self.model.groups.contains_key(group) {
            return Err("Group not found");
        }
        self.apply(Mutation::SetMembership { group: group.to_owned(), username: username.to_owned(), priority: None });
        Ok(None)
    }

    pub(super) fn group_and_role<'c>(&self, cmd: &'c Json) -> Result<(&'c str, &'c str), &'static str> {
        let group = groupname(cmd)?;
        let role = rolename(cmd)?;
        if !self.model.groups.contains_key(group) {
            return Err("Group not found");
        }
        if !self.model.roles.contains_key(role) {
            return Err("Role not found");
        }
        Ok((group, role))
    }

    pub(super) fn add_group_role(&mut self, cmd: &Json) -> CommandResult {
        let (name, role) = self.group_and_role(cmd)?;
        let mut group = self.model.groups[name].clone();
        if !insert_membership(
            &mut group.roles,
            Membership { name: role.to_owned(), priority: clamp_priority(int_or(cmd, "priority", -1)) },
        ) {
            return Err("Group is already in this role");
        }
        self.apply(Mutation::PutGroup(group));
        self.kick_group(name);
        Ok(None)
    }

    pub(super) fn remove_group_role(&mut self, cmd: &Json) -> CommandResult {
        let (name, role) = self.group_and_role(cmd)?;
        let mut group = self.model.groups[name].clone();
        if group.roles.iter().any(|m| m.name == role) {
            group.roles.retain(|m| m.name != role);
            self.apply(Mutation::PutGroup(group));
        }
        self.kick_group(name);
        Ok(None)
    }
}
