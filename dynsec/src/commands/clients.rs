//! The client commands: `createClient`, `deleteClient`, `setClientPassword`, `setClientId`,
//! `modifyClient`, `enableClient`, `disableClient`, `getClient`, `listClients`, `addClientRole`,
//! `removeClientRole`.

use super::*;

impl Processor<'_> {
    pub(super) fn create_client(&mut self, cmd: &Json, index: usize) -> CommandResult {
        let username = new_name(cmd, "username", "Empty username")?;
        let password = optional_str(cmd, "password").map_err(|()| "Invalid/missing password")?;
        let clientid = optional_str(cmd, "clientid").map_err(|()| "Invalid/missing client id")?;
        let clientid = match clientid {
            Some(c) => Some(valid_mqtt_utf8(c).ok_or("Client ID not valid UTF-8")?),
            None => None,
        };
        let textname = optional_str(cmd, "textname").map_err(|()| "Invalid/missing textname")?;
        let textdescription = optional_str(cmd, "textdescription").map_err(|()| "Invalid/missing textdescription")?;
        if self.model.clients.contains_key(username) {
            return Err("Client already exists");
        }
        let roles = match role_list(self.model, cmd) {
            Ok(roles) => roles.unwrap_or_default(),
            Err(RoleListError::NotFound) => return Err("Role not found"),
            Err(RoleListError::Invalid) => return Err("'roles' not an array or missing/invalid rolename"),
        };
        let mut groups: Vec<(String, i32)> = Vec::new();
        for entry in cmd.get("groups").and_then(Json::as_array).unwrap_or(&[]) {
            let Some(group) = entry.get("groupname").and_then(Json::as_bytes) else { continue };
            let group = text(group);
            if !self.model.groups.contains_key(&group) {
                return Err("Group not found");
            }
            if groups.iter().any(|(g, _)| *g == group) {
                return Err("Internal error");
            }
            groups.push((group, capped_above(int_or(entry, "priority", -1))));
        }
        let password = match password {
            Some(pw) => Some(self.password_for(index, pw)?),
            None => None,
        };
        self.apply(Mutation::PutClient(Client {
            username: username.to_owned(),
            clientid: clientid.filter(|c| !c.is_empty()).map(str::to_owned),
            textname: textname.map(text),
            textdescription: textdescription.map(text),
            disabled: false,
            password,
            roles,
            groups: Vec::new(),
        }));
        for (group, priority) in groups {
            self.apply(Mutation::SetMembership { group, username: username.to_owned(), priority: Some(priority) });
        }
        Ok(None)
    }

    pub(super) fn delete_client(&mut self, cmd: &Json) -> CommandResult {
        // No UTF-8 check in mosquitto: bytes that are not UTF-8 simply name no client.
        let name = required_str(cmd, "username").ok_or("Invalid/missing username")?;
        let Some(username) = std::str::from_utf8(name).ok().filter(|u| self.model.clients.contains_key(*u)) else {
            return Err("Client not found");
        };
        let username = username.to_owned();
        self.apply(Mutation::DeleteClient(username.clone()));
        self.kick_user(&username);
        Ok(None)
    }

    pub(super) fn existing_client(&self, username: &str) -> Result<Client, &'static str> {
        self.model.clients.get(username).cloned().ok_or("Client not found")
    }

    pub(super) fn set_client_password(&mut self, cmd: &Json, index: usize) -> CommandResult {
        let username = username(cmd)?;
        let password = required_str(cmd, "password").ok_or("Invalid/missing password")?;
        if password.is_empty() {
            return Err("Empty password is not allowed");
        }
        let mut client = self.existing_client(username)?;
        client.password = Some(self.password_for(index, password)?);
        self.apply(Mutation::PutClient(client));
        self.kick_user(username);
        Ok(None)
    }

    pub(super) fn set_client_id(&mut self, cmd: &Json) -> CommandResult {
        let username = username(cmd)?;
        let clientid = optional_str(cmd, "clientid").map_err(|()| "Invalid/missing client ID")?;
        let clientid = match clientid {
            Some(c) => Some(valid_mqtt_utf8(c).ok_or("Client ID not valid UTF-8")?),
            None => None,
        };
        let mut client = self.existing_client(username)?;
        client.clientid = clientid.filter(|c| !c.is_empty()).map(str::to_owned);
        self.apply(Mutation::PutClient(client));
        self.kick_user(username);
        Ok(None)
    }

    pub(super) fn modify_client(&mut self, cmd: &Json, index: usize) -> CommandResult {
        let username = username(cmd)?;
        let mut client = self.existing_client(username)?;
        // Optional fields apply only when present with the right type (wrong types are ignored).
        if let Some(clientid) = required_str(cmd, "clientid") {
            client.clientid = Some(text(clientid)).filter(|c| !c.is_empty());
        }
        let password = required_str(cmd, "password").filter(|p| !p.is_empty());
        if let Some(textname) = required_str(cmd, "textname") {
            client.textname = Some(text(textname));
        }
        if let Some(textdescription) = required_str(cmd, "textdescription") {
            client.textdescription = Some(text(textdescription));
        }
        match role_list(self.model, cmd) {
            Ok(Some(roles)) => client.roles = roles,
            Ok(None) => {}
            Err(RoleListError::NotFound) => return Err("Role not found"),
            Err(RoleListError::Invalid) => return Err("'roles' not an array or missing/invalid rolename"),
        }
        let mut groups: Option<Vec<(String, i32)>> = None;
        if let Some(entries) = cmd.get("groups").and_then(Json::as_array) {
            let mut list: Vec<(String, i32)> = Vec::new();
            for entry in entries.iter().filter(|e| e.is_object()) {
                let Some(group) = entry.get("groupname").and_then(Json::as_bytes) else {
                    return Err("'groups' contains an object with an invalid 'groupname'");
                };
                let group = text(group);
                if !self.model.groups.contains_key(&group) {
                    return Err("'groups' contains an object with a 'groupname' that does not exist");
                }
                if !list.iter().any(|(g, _)| *g == group) {
                    list.push((group, capped_above(int_or(entry, "priority", -1))));
                }
            }
            groups = Some(list);
        }
        if let Some(password) = password {
            client.password = Some(self.password_for(index, password)?);
        }
        if let Some(groups) = groups {
            let current: Vec<Membership> = self.model.clients[username].groups.clone();
            for old in current.iter().filter(|m| !groups.iter().any(|(g, _)| *g == m.name)) {
                self.apply(Mutation::SetMembership {
                    group: old.name.clone(),
                    username: username.to_owned(),
                    priority: None,
                });
            }
            for (group, priority) in groups {
                self.apply(Mutation::SetMembership { group, username: username.to_owned(), priority: Some(priority) });
            }
        }
        self.apply(Mutation::PutClient(client));
        self.kick_user(username);
        Ok(None)
    }

    pub(super) fn set_client_disabled(&mut self, cmd: &Json, disabled: bool) -> CommandResult {
        let username = username(cmd)?;
        let mut client = self.existing_client(username)?;
        if client.disabled != disabled {
            client.disabled = disabled;
            self.apply(Mutation::PutClient(client));
        }
        if disabled {
            self.kick_user(username);
        }
        Ok(None)
    }

    pub(super) fn get_client(&mut self, cmd: &Json) -> CommandResult {
        let username = username(cmd)?;
        let client = self.model.clients.get(username).ok_or("Client not found")?;
        Ok(Some(Json::object().with("client", self.client_json(client))))
    }

    pub(super) fn list_clients(&mut self, cmd: &Json) -> CommandResult {
        let (verbose, count, offset) =
            (bool_or(cmd, "verbose", false), int_or(cmd, "count", -1), int_or(cmd, "offset", 0));
        let clients = paged(self.model.clients.values(), count, offset, |c| {
            if verbose { self.client_json(c) } else { Json::str(&c.username) }
        });
        Ok(Some(Json::object().with("totalCount", Json::int(self.model.clients.len() as i64)).with("clients", clients)))
    }

    pub(super) fn client_and_role<'c>(&self, cmd: &'c Json) -> Result<(&'c str, &'c str), &'static str> {
        let username = username(cmd)?;
        let role = rolename(cmd)?;
        if !self.model.clients.contains_key(username) {
            return Err("Client not found");
        }
        if !self.model.roles.contains_key(role) {
            return Err("Role not found");
        }
        Ok((username, role))
    }

    pub(super) fn add_client_role(&mut self, cmd: &Json) -> CommandResult {
        let (username, role) = self.client_and_role(cmd)?;
        let mut client = self.existing_client(username)?;
        let membership = Membership { name: role.to_owned(), priority: capped_above(int_or(cmd, "priority", -1)) };
        if !insert_membership(&mut client.roles, membership) {
            return Err("Internal error");
        }
        self.apply(Mutation::PutClient(client));
        self.kick_user(username);
        Ok(None)
    }

    pub(super) fn remove_client_role(&mut self, cmd: &Json) -> CommandResult {
        let (username, role) = self.client_and_role(cmd)?;
        let mut client = self.existing_client(username)?;
        if client.roles.iter().any(|m| m.name == role) {
            client.roles.retain(|m| m.name != role);
            self.apply(Mutation::PutClient(client));
        }
        self.kick_user(username);
        Ok(None)
    }
}
