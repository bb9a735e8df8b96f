//! The one table of the dynamic-security command names: the engine dispatches on [`Command`],
//! and the CLI (`dynsec-ctrl`) takes its list of commands from it. Names are matched without
//! regard to case, as mosquitto does; replies carry the canonical spelling.

/// A dynamic-security command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    SetDefaultAclAccess,
    GetDefaultAclAccess,
    GetDetails,
    CreateClient,
    DeleteClient,
    SetClientPassword,
    SetClientId,
    ModifyClient,
    EnableClient,
    DisableClient,
    GetClient,
    ListClients,
    AddClientRole,
    RemoveClientRole,
    CreateGroup,
    DeleteGroup,
    ModifyGroup,
    GetGroup,
    ListGroups,
    AddGroupClient,
    RemoveGroupClient,
    AddGroupRole,
    RemoveGroupRole,
    SetAnonymousGroup,
    GetAnonymousGroup,
    CreateRole,
    DeleteRole,
    ModifyRole,
    GetRole,
    ListRoles,
    AddRoleAcl,
    RemoveRoleAcl,
}

/// The families the commands are grouped in (one file each beside this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    DefaultAccess,
    Details,
    Clients,
    Groups,
    Roles,
}

/// Every command (in declaration order) with its canonical name, its family and whether it may
/// change the configuration.
const TABLE: [(Command, &str, Family, bool); 32] = [
    (Command::SetDefaultAclAccess, "setDefaultACLAccess", Family::DefaultAccess, true),
    (Command::GetDefaultAclAccess, "getDefaultACLAccess", Family::DefaultAccess, false),
    (Command::GetDetails, "getDetails", Family::Details, false),
    (Command::CreateClient, "createClient", Family::Clients, true),
    (Command::DeleteClient, "deleteClient", Family::Clients, true),
    (Command::SetClientPassword, "setClientPassword", Family::Clients, true),
    (Command::SetClientId, "setClientId", Family::Clients, true),
    (Command::ModifyClient, "modifyClient", Family::Clients, true),
    (Command::EnableClient, "enableClient", Family::Clients, true),
    (Command::DisableClient, "disableClient", Family::Clients, true),
    (Command::GetClient, "getClient", Family::Clients, false),
    (Command::ListClients, "listClients", Family::Clients, false),
    (Command::AddClientRole, "addClientRole", Family::Clients, true),
    (Command::RemoveClientRole, "removeClientRole", Family::Clients, true),
    (Command::CreateGroup, "createGroup", Family::Groups, true),
    (Command::DeleteGroup, "deleteGroup", Family::Groups, true),
    (Command::ModifyGroup, "modifyGroup", Family::Groups, true),
    (Command::GetGroup, "getGroup", Family::Groups, false),
    (Command::ListGroups, "listGroups", Family::Groups, false),
    (Command::AddGroupClient, "addGroupClient", Family::Groups, true),
    (Command::RemoveGroupClient, "removeGroupClient", Family::Groups, true),
    (Command::AddGroupRole, "addGroupRole", Family::Groups, true),
    (Command::RemoveGroupRole, "removeGroupRole", Family::Groups, true),
    (Command::SetAnonymousGroup, "setAnonymousGroup", Family::DefaultAccess, true),
    (Command::GetAnonymousGroup, "getAnonymousGroup", Family::DefaultAccess, false),
    (Command::CreateRole, "createRole", Family::Roles, true),
    (Command::DeleteRole, "deleteRole", Family::Roles, true),
    (Command::ModifyRole, "modifyRole", Family::Roles, true),
    (Command::GetRole, "getRole", Family::Roles, false),
    (Command::ListRoles, "listRoles", Family::Roles, false),
    (Command::AddRoleAcl, "addRoleACL", Family::Roles, true),
    (Command::RemoveRoleAcl, "removeRoleACL", Family::Roles, true),
];

impl Command {
    /// Every command, in the order of mosquitto's documentation.
    pub const ALL: [Command; 32] = {
        let mut all = [Command::SetDefaultAclAccess; 32];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].0;
            i += 1;
        }
        all
    };

    fn entry(self) -> &'static (Command, &'static str, Family, bool) {
        // The table lists every variant in declaration order (checked by the test below).
        &TABLE[self as usize]
    }

    /// The canonical name (what replies carry).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    pub fn family(self) -> Family {
        self.entry().2
    }

    /// Whether a successful run counts in `changeIndex`: mosquitto 2.1.2 adds one for every
    /// command that succeeds and may change something, whether or not it did (enabling an enabled
    /// client counts), and nothing for reads or errors.
    pub fn changes(self) -> bool {
        self.entry().3
    }

    /// Case-insensitive lookup.
    pub fn from_name(name: &[u8]) -> Option<Command> {
        TABLE.iter().find(|(_, canonical, _, _)| canonical.as_bytes().eq_ignore_ascii_case(name)).map(|entry| entry.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_command_once_in_declaration_order() {
        for (index, command) in Command::ALL.iter().enumerate() {
            assert_eq!(*command as usize, index);
            assert_eq!(Command::from_name(command.name().to_ascii_lowercase().as_bytes()), Some(*command));
        }
        assert_eq!(Command::from_name(b"noSuchCommand"), None);
    }
}
