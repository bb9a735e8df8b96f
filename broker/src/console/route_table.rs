//! The dynsec routes of the REST API as data: each route's method, path and [`Spec`] (the
//! command it runs and where its fields come from). The router (`rest`) and the OpenAPI
//! description (`openapi`) are both built from this one table.

use axum::http::Method;

pub(super) const PREFIX: &str = "/api/dynsec/v1";

/// How one REST route becomes one dynsec command.
pub(super) struct Spec {
    pub command: &'static str,
    /// Path parameters, each copied into the command field of the same name.
    pub path: &'static [&'static str],
    /// Whether a JSON object body supplies further fields.
    pub body: bool,
    /// Query parameters copied into fields: (name, is a number or boolean).
    pub query: &'static [(&'static str, bool)],
}

const fn spec(command: &'static str, path: &'static [&'static str], body: bool) -> Spec {
    Spec { command, path, body, query: &[] }
}

const LIST_QUERY: &[(&str, bool)] = &[("verbose", true), ("count", true), ("offset", true)];

/// Every dynsec route: (method, path, spec). The OpenAPI description is generated from it.
pub(super) fn dynsec_routes() -> Vec<(Method, &'static str, Spec)> {
    use Method as M;
    vec![
        (M::GET, "/clients", Spec { command: "listClients", path: &[], body: false, query: LIST_QUERY }),
        (M::POST, "/clients", spec("createClient", &[], true)),
        (M::GET, "/clients/{username}", spec("getClient", &["username"], false)),
        (M::PATCH, "/clients/{username}", spec("modifyClient", &["username"], true)),
        (M::DELETE, "/clients/{username}", spec("deleteClient", &["username"], false)),
        (M::POST, "/clients/{username}/enable", spec("enableClient", &["username"], false)),
        (M::POST, "/clients/{username}/disable", spec("disableClient", &["username"], false)),
        (M::PUT, "/clients/{username}/password", spec("setClientPassword", &["username"], true)),
        (M::PUT, "/clients/{username}/clientid", spec("setClientId", &["username"], true)),
        (M::POST, "/clients/{username}/roles", spec("addClientRole", &["username"], true)),
        (M::DELETE, "/clients/{username}/roles/{rolename}", spec("removeClientRole", &["username", "rolename"], false)),
        (M::GET, "/groups", Spec { command: "listGroups", path: &[], body: false, query: LIST_QUERY }),
        (M::POST, "/groups", spec("createGroup", &[], true)),
        (M::GET, "/groups/{groupname}", spec("getGroup", &["groupname"], false)),
        (M::PATCH, "/groups/{groupname}", spec("modifyGroup", &["groupname"], true)),
        (M::DELETE, "/groups/{groupname}", spec("deleteGroup", &["groupname"], false)),
        (M::POST, "/groups/{groupname}/clients", spec("addGroupClient", &["groupname"], true)),
        (
            M::DELETE,
            "/groups/{groupname}/clients/{username}",
            spec("removeGroupClient", &["groupname", "username"], false),
        ),
        (M::POST, "/groups/{groupname}/roles", spec("addGroupRole", &["groupname"], true)),
        (M::DELETE, "/groups/{groupname}/roles/{rolename}", spec("removeGroupRole", &["groupname", "rolename"], false)),
        (M::GET, "/anonymous-group", spec("getAnonymousGroup", &[], false)),
        (M::PUT, "/anonymous-group", spec("setAnonymousGroup", &[], true)),
        (M::GET, "/roles", Spec { command: "listRoles", path: &[], body: false, query: LIST_QUERY }),
        (M::POST, "/roles", spec("createRole", &[], true)),
        (M::GET, "/roles/{rolename}", spec("getRole", &["rolename"], false)),
        (M::PATCH, "/roles/{rolename}", spec("modifyRole", &["rolename"], true)),
        (M::DELETE, "/roles/{rolename}", spec("deleteRole", &["rolename"], false)),
        (M::POST, "/roles/{rolename}/acls", spec("addRoleACL", &["rolename"], true)),
        (
            M::DELETE,
            "/roles/{rolename}/acls",
            Spec {
                command: "removeRoleACL",
                path: &["rolename"],
                body: false,
                query: &[("acltype", false), ("topic", false)],
            },
        ),
        (M::GET, "/default-acl-access", spec("getDefaultACLAccess", &[], false)),
        (M::PUT, "/default-acl-access", spec("setDefaultACLAccess", &[], true)),
    ]
}
