//! `dynsec help`: the command summary (our own wording; the syntax is mosquitto_ctrl's).

use std::io::Write;

const HELP: &str = "\
dynsec: administer the Dynamic Security plugin over $CONTROL/dynamic-security/v1

Offline
  init <file> <admin-username> [admin-password]
        write a new dynamic-security.json with one administrator (prompts when no password)
  batch [--batch-size N] <file|->
        send many commands, one per line (command-line words or a JSON command object)
  migrate [--conf mosquitto.conf] [--password-file file] [--acl-file file] <new-file>
        convert password_file + acl_file into a dynamic-security.json that decides the same
  -f <file> <command>   (connection option) run any command below on the file, no broker

Default access and anonymous clients
  getDefaultACLAccess
  setDefaultACLAccess <acltype> allow|deny     acltype: publishClientSend|publishClientReceive
                                                        |subscribe|unsubscribe
  getAnonymousGroup
  setAnonymousGroup <groupname>
  getDetails                                 (mosquitto 2.1: counts and change index)

Clients
  createClient <username> [-c|-i clientid] [-p password]   (prompts when no -p; empty = no password)
  deleteClient <username>
  enableClient <username>
  disableClient <username>
  getClient <username>
  listClients [--verbose] [count [offset]]
  setClientId <username> [clientid]          (no clientid removes the binding)
  setClientPassword <username> [password]    (prompts when omitted)
      with -f FILE: setClientPassword <username> <password> [-i iterations]   (PBKDF2-SHA512 iterations)
  addClientRole <username> <rolename> [priority]
  removeClientRole <username> <rolename>
  modifyClient <username> [-c clientid] [-p password] [-t textname] [-d textdescription]
               [--role name[:priority]]... [--no-roles] [--group name[:priority]]... [--no-groups]

Groups
  createGroup <groupname>
  deleteGroup <groupname>
  getGroup <groupname>
  listGroups [--verbose] [count [offset]]
  addGroupRole <groupname> <rolename> [priority]
  removeGroupRole <groupname> <rolename>
  addGroupClient <groupname> <username> [priority]
  removeGroupClient <groupname> <username>
  modifyGroup <groupname> [-t textname] [-d textdescription]
              [--role name[:priority]]... [--no-roles] [--client username[:priority]]... [--no-clients]

Roles
  createRole <rolename>
  deleteRole <rolename>
  getRole <rolename>
  listRoles [--verbose] [count [offset]]
  addRoleACL <rolename> <acltype> <topic> allow|deny [priority]
  removeRoleACL <rolename> <acltype> <topic>
  modifyRole <rolename> [-t textname] [-d textdescription] [--allow-wildcard-subs true|false]
             [--acl <acltype> <topic> allow|deny [priority]]... [--no-acls]
        acltype: publishClientSend|publishClientReceive|subscribeLiteral|subscribePattern
                 |unsubscribeLiteral|unsubscribePattern

mosquitto_ctrl 2.1's forms work too: modifyClient|modifyGroup|modifyRole <name> textName <text>,
  ... textDescription <text>, modifyRole <rolename> allowWildcardSubs true|false.

Priorities: larger numbers are evaluated first. Command names are case-insensitive.
Global option --json prints the broker's response object instead of formatted text.
";

pub fn print() {
    let _ = std::io::stdout().write_all(HELP.as_bytes());
}
