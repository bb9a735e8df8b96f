//! `getDetails` (mosquitto 2.1): how many clients, groups and roles there are, and the change
//! index.

use super::*;

impl Processor<'_> {
    pub(super) fn get_details(&mut self) -> CommandResult {
        let count = |n: usize| Json::int(n as i64);
        Ok(Some(
            Json::object()
                .with("clientCount", count(self.model.clients.len()))
                .with("groupCount", count(self.model.groups.len()))
                .with("roleCount", count(self.model.roles.len()))
                .with("changeIndex", Json::int(self.model.change_index.saturating_add(self.changes_counted))),
        ))
    }
}
