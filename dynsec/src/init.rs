//! The configuration `mosquitto_ctrl dynsec init` creates: one admin client holding an `admin`
//! role that may use the dynamic-security API, read `$SYS/#` and read everything, and default
//! access deny/allow/deny/allow (docs/compatibility.md §2.6). The broker uses it when it starts without a file.

use crate::model::{Acl, AclType, Client, DefaultAccess, Membership, Model, Mutation, Role};
use crate::password::PasswordHash;

/// The admin role's ACLs, in the order mosquitto_ctrl writes them.
pub const ADMIN_ROLE_ACLS: [(AclType, &str); 8] = [
    (AclType::PublishClientSend, "$CONTROL/dynamic-security/#"),
    (AclType::PublishClientReceive, "$CONTROL/dynamic-security/#"),
    (AclType::SubscribePattern, "$CONTROL/dynamic-security/#"),
    (AclType::PublishClientReceive, "$SYS/#"),
    (AclType::SubscribePattern, "$SYS/#"),
    (AclType::PublishClientReceive, "#"),
    (AclType::SubscribePattern, "#"),
    (AclType::UnsubscribePattern, "#"),
];

pub const ADMIN_ROLE: &str = "admin";

/// Default access as `dynsec init` writes it.
pub fn init_default_access() -> DefaultAccess {
    DefaultAccess { publish_client_send: false, publish_client_receive: true, subscribe: false, unsubscribe: true }
}

/// A fresh configuration with `admin_username` holding the `admin` role.
pub fn init_model(admin_username: &str, password: PasswordHash) -> Model {
    let mut model = Model::default();
    let mut role = Role::new(ADMIN_ROLE);
    for (acl_type, topic) in ADMIN_ROLE_ACLS {
        role.insert_acl(acl_type, Acl { topic: topic.to_owned(), priority: 0, allow: true });
    }
    model.apply(Mutation::PutRole(role));
    model.apply(Mutation::PutClient(Client {
        textname: Some("Dynsec admin user".to_owned()),
        password: Some(password),
        roles: vec![Membership { name: ADMIN_ROLE.to_owned(), priority: -1 }],
        ..Client::new(admin_username)
    }));
    model.apply(Mutation::SetDefaultAccess(init_default_access()));
    model
}
