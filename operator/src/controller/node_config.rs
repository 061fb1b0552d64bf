//! What each Redis node is given at run time, so that a change needs no
//! restart: its ACL users and replication login (from
//! [`super::credentials`]) and its persistence settings (from the spec).
//! The same values are in the files a node reads when it starts, so a
//! restarted node agrees.
//!
//! A node is given the whole set in one pipeline, again only when the set
//! changed or when [`REAPPLY`] has passed, so the no-op reconcile sends
//! nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::topology;

/// How long a node's configuration is taken as applied before it is set
/// again: this puts right a container that restarted on a stale copy of a
/// mounted Secret, or a `CONFIG SET` made by hand.
const REAPPLY: Duration = Duration::from_secs(60);

/// Which nodes were given which configuration (by fingerprint), and since
/// when the map is kept.
pub(super) struct Pushed {
    applied: HashMap<SocketAddr, u64>,
    since: Instant,
}

impl Default for Pushed {
    fn default() -> Self {
        Self {
            applied: HashMap::new(),
            since: Instant::now(),
        }
    }
}

/// `ACL SETUSER` name and rules for each user, and the replication
/// password (`None`: no replication login).
pub(super) type NodeUsers = (Vec<(String, String)>, Option<String>);

/// One node's run-time configuration.
pub(super) struct NodeConfig {
    /// `None` leaves the users as they are (authentication never was on).
    pub users: Option<NodeUsers>,
    /// `CONFIG SET` parameters and values.
    pub settings: Vec<(&'static str, String)>,
}

impl Pushed {
    /// The nodes of `nodes` that have not been given the configuration
    /// whose fingerprint is `fingerprint`.
    fn pending(&mut self, nodes: &[SocketAddr], fingerprint: u64) -> Vec<SocketAddr> {
        if self.since.elapsed() >= REAPPLY {
            self.applied.clear();
            self.since = Instant::now();
        }
        self.applied.retain(|a, _| nodes.contains(a));
        (nodes.iter().copied())
            .filter(|a| self.applied.get(a) != Some(&fingerprint))
            .collect()
    }
}

/// Gives every node of `nodes` that needs it the configuration that
/// `render` builds (only called when some node does). A node that fails is
/// logged and tried again at the next reconcile. `opts` says how to reach
/// the nodes (fence, login, TLS).
pub(super) async fn push(
    pushed: &mut Pushed,
    (ns, name): (&str, &str),
    nodes: &[SocketAddr],
    (fingerprint, render): (u64, impl FnOnce() -> NodeConfig),
    opts: &topology::StepOptions,
) {
    let pending = pushed.pending(nodes, fingerprint);
    if pending.is_empty() {
        return;
    }
    let config = render();
    let pipe = pipeline(&config);
    for addr in pending {
        match topology::run_pipeline(addr, &pipe, "configuring a node", opts).await {
            Ok(()) => {
                pushed.applied.insert(addr, fingerprint);
            }
            Err(e) => {
                tracing::warn!(cluster = %format_args!("{ns}/{name}"), node = %addr, error = %e, "configuring a node");
            }
        }
    }
}

/// One atomic `ACL SETUSER` per user, then one `CONFIG SET` of every
/// parameter (atomic too: all or none).
fn pipeline(config: &NodeConfig) -> redis::Pipeline {
    let mut p = redis::pipe();
    p.ignore_errors();
    let mut set = redis::cmd("CONFIG");
    set.arg("SET");
    if let Some((users, replication)) = &config.users {
        for (user, rules) in users {
            let c = p.cmd("ACL").arg("SETUSER").arg(user);
            for r in rules.split_whitespace() {
                c.arg(r);
            }
        }
        let user = if replication.is_some() {
            crate::auth::REPLICATION_USER
        } else {
            ""
        };
        set.arg("masteruser").arg(user);
        set.arg("masterauth")
            .arg(replication.as_deref().unwrap_or(""));
    }
    for (name, value) in &config.settings {
        set.arg(*name).arg(value);
    }
    p.add_command(set);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_node_is_pending_until_given_the_current_configuration() {
        let mut p = Pushed::default();
        let nodes = [addr(1), addr(2)];
        assert_eq!(p.pending(&nodes, 7), nodes.to_vec());
        p.applied.insert(addr(1), 7);
        assert_eq!(p.pending(&nodes, 7), vec![addr(2)]);
        // A new configuration is pending everywhere; a gone node is forgotten.
        p.applied.insert(addr(3), 7);
        assert_eq!(p.pending(&nodes, 8), nodes.to_vec());
        assert!(!p.applied.contains_key(&addr(3)));
    }

    #[test]
    fn one_config_set_carries_the_login_and_the_settings() {
        let config = NodeConfig {
            users: Some((vec![("probe".into(), "on >x +ping".into())], None)),
            settings: vec![("appendfsync", "always".into()), ("save", String::new())],
        };
        let cmds: Vec<Vec<u8>> = pipeline(&config)
            .cmd_iter()
            .map(|c| c.get_packed_command())
            .collect();
        let text: Vec<String> = cmds
            .iter()
            .map(|c| String::from_utf8_lossy(c).replace("\r\n", " "))
            .collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("ACL $7 SETUSER $5 probe $2 on $2 >x $5 +ping"),
            "{}",
            text[0]
        );
        assert!(
            text[1].ends_with(
                "masteruser $0  $10 masterauth $0  $11 appendfsync $6 always $4 save $0  "
            ),
            "{}",
            text[1]
        );
        // Without users, the replication login is left alone.
        let config = NodeConfig {
            users: None,
            settings: vec![("appendonly", "no".into())],
        };
        let cmds: Vec<String> = pipeline(&config)
            .cmd_iter()
            .map(|c| String::from_utf8_lossy(&c.get_packed_command()).replace("\r\n", " "))
            .collect();
        assert_eq!(
            cmds,
            vec!["*4 $6 CONFIG $3 SET $10 appendonly $2 no ".to_string()]
        );
    }
}
