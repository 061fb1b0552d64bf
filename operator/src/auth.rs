//! Who may talk to Redis: the ACL users every node has, what the pods are
//! given to start with, and how a client password change rolls in. Pure;
//! `controller::credentials` reads and writes the Secrets and applies the
//! result to the nodes.
//!
//! Five users:
//! - the clients' user (`default`, or the one the spec names), with the
//!   password from the clients' Secret, and during a rotation the previous
//!   one too;
//! - [`OPERATOR_USER`], limited to the commands the operator sends;
//! - [`REPLICATION_USER`], what a replica logs in to its primary as;
//! - [`PROBE_USER`], for the readiness probe;
//! - [`EXPORTER_USER`], for the metrics exporter sidecar.
//!
//! The last four have passwords the operator generates once and keeps in
//! the cluster's internal Secret ([`internal_secret_name`]), which is also
//! what the pods mount: `users.acl` (SHA-256 hashes only) and `auth.conf`
//! (the replication login). Clients never need that Secret.

use std::fmt::Write as _;

/// The ACL user the operator logs in as.
pub const OPERATOR_USER: &str = "redis-operator";
/// The ACL user replicas log in to their primary as (`masteruser`).
pub const REPLICATION_USER: &str = "replication";
/// The ACL user of the readiness probe.
pub const PROBE_USER: &str = "probe";
/// The ACL user of the metrics exporter sidecar.
pub const EXPORTER_USER: &str = "exporter";
/// The key of the clients' password in their Secret.
pub const PASSWORD_KEY: &str = "password";
/// Where the pods mount the internal Secret.
pub const MOUNT: &str = "/etc/redis-auth";
/// Keys of the internal Secret.
pub const ACL_FILE: &str = "users.acl";
pub const CONF_FILE: &str = "auth.conf";
pub const OPERATOR_KEY: &str = "operator-password";
pub const REPLICATION_KEY: &str = "replication-password";
pub const PROBE_KEY: &str = "probe-password";
pub const EXPORTER_KEY: &str = "exporter-password";
/// The clients' password hashes the nodes accept, newest last, and when
/// the newest arrived (Unix seconds): the rotation's state, kept with the
/// Secret so that it survives an operator restart.
pub const CLIENT_HASHES_KEY: &str = "client-password-sha256";
pub const ROTATION_STARTED_KEY: &str = "rotation-started";
/// The clients' ACL user the nodes have, and when the last rotation ended.
pub const CLIENT_USER_KEY: &str = "client-user";
pub const ROTATED_AT_KEY: &str = "rotated-at";

/// Commands the operator sends: topology work (`CLUSTER`, `MIGRATE` and
/// the `SELECT` and `RESTORE-ASKING` it makes the target run as this
/// user), health
/// readings, and the ACL and replication-login changes of a rotation.
const OPERATOR_RULES: &str = "~* &* -@all +cluster +migrate +restore-asking +select +info +role +dbsize +ping +acl|setuser +acl|getuser +config|set";
/// What a replica needs of its primary.
const REPLICATION_RULES: &str = "-@all +psync +replconf +ping";
const PROBE_RULES: &str = "-@all +ping +info +cluster|info";
/// What the exporter reads, and nothing that reveals a key or a password:
/// it runs with `--config-command=-` (`CONFIG GET` would show
/// `masterauth`) and without `CLIENT SETNAME`.
const EXPORTER_RULES: &str =
    "-@all +ping +info +cluster|info +slowlog|len +slowlog|get +latency|latest +latency|histogram";
const CLIENT_RULES: &str = "~* &* +@all";

/// Whether the cluster's nodes require a login (the default).
pub fn enabled(spec: &api::RedisClusterSpec) -> bool {
    spec.auth.as_ref().is_none_or(|a| a.enabled)
}

/// The Secret clients read their password from.
pub fn client_secret_name(cluster: &str, spec: &api::AuthSpec) -> String {
    spec.secret_name
        .clone()
        .unwrap_or_else(|| format!("{cluster}-auth"))
}

/// The operator's own Secret for a cluster: internal passwords and what
/// the pods mount.
pub fn internal_secret_name(cluster: &str) -> String {
    format!("{cluster}-internal-auth")
}

/// The clients' ACL user.
pub fn client_user(spec: &api::AuthSpec) -> &str {
    spec.username.as_deref().unwrap_or("default")
}

/// SHA-256 in lower-case hex, as ACL rules (`#<hash>`) take it.
pub fn sha256_hex(password: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, password.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The passwords the operator generates once per cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Internal {
    pub operator: String,
    pub replication: String,
    pub probe: String,
    pub exporter: String,
}

/// What the nodes accept from clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAcl {
    pub user: String,
    /// One hash, or two while a rotation's overlap lasts (newest last).
    pub hashes: Vec<String>,
    /// When the newest hash arrived, while the older one still works.
    pub rotation_started: Option<i64>,
}

/// What the status shows of authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthView {
    pub secret_name: String,
    pub username: String,
    pub rotated_at: Option<i64>,
    /// While both passwords work: until when.
    pub overlap_until: Option<i64>,
}

/// What the next step of a rotation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Nothing to change.
    Steady,
    /// A new password: accept both until `until` (Unix seconds).
    Started { until: i64 },
    /// Overlap running; the old password goes at `until`.
    Overlapping { until: i64 },
    /// The overlap is over: only the newest password works from now.
    Finished,
}

/// The client ACL after seeing `hash` in the clients' Secret at `now`.
/// A second change during an overlap keeps the newest two passwords.
pub fn next(
    current: &ClientAcl,
    user: &str,
    hash: &str,
    now: i64,
    overlap: i64,
) -> (ClientAcl, Rotation) {
    if current.user != user {
        // A new user name: clients must move to it; nothing to overlap with.
        let acl = ClientAcl {
            user: user.to_string(),
            hashes: vec![hash.to_string()],
            rotation_started: None,
        };
        return (acl, Rotation::Finished);
    }
    if current.hashes.last().map(String::as_str) != Some(hash) {
        let mut hashes: Vec<String> = current.hashes.last().cloned().into_iter().collect();
        hashes.retain(|h| h != hash);
        hashes.push(hash.to_string());
        let acl = ClientAcl {
            user: user.to_string(),
            rotation_started: (hashes.len() > 1).then_some(now),
            hashes,
        };
        let step = if acl.hashes.len() > 1 {
            Rotation::Started {
                until: now + overlap,
            }
        } else {
            Rotation::Finished
        };
        return (acl, step);
    }
    match current.rotation_started {
        Some(started) if current.hashes.len() > 1 && now < started + overlap => (
            current.clone(),
            Rotation::Overlapping {
                until: started + overlap,
            },
        ),
        Some(_) => (
            ClientAcl {
                user: user.to_string(),
                hashes: vec![hash.to_string()],
                rotation_started: None,
            },
            Rotation::Finished,
        ),
        None => (current.clone(), Rotation::Steady),
    }
}

/// The full rules of each user, as `ACL SETUSER` arguments after the name.
/// `resetpass` first, so one command sets exactly these passwords,
/// atomically: a client never meets a node that accepts none of them.
pub fn users(client: &ClientAcl, internal: &Internal) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(6);
    let hashes: String = client.hashes.iter().map(|h| format!(" #{h}")).collect();
    if client.user != "default" {
        out.push(("default".to_string(), "off resetpass -@all".to_string()));
    }
    out.push((
        client.user.clone(),
        format!("on resetpass{hashes} {CLIENT_RULES}"),
    ));
    for (user, password, rules) in [
        (OPERATOR_USER, &internal.operator, OPERATOR_RULES),
        (REPLICATION_USER, &internal.replication, REPLICATION_RULES),
        (PROBE_USER, &internal.probe, PROBE_RULES),
        (EXPORTER_USER, &internal.exporter, EXPORTER_RULES),
    ] {
        out.push((
            user.to_string(),
            format!("on resetpass #{} {rules}", sha256_hex(password)),
        ));
    }
    out
}

/// The users of a cluster without authentication: `default` open to all.
pub fn open_users() -> Vec<(String, String)> {
    vec![("default".to_string(), "on nopass ~* &* +@all".to_string())]
}

/// `users.acl`, which a node loads when it starts.
pub fn acl_file(client: &ClientAcl, internal: &Internal) -> String {
    let mut s = String::new();
    for (user, rules) in users(client, internal) {
        let _ = writeln!(s, "user {user} {rules}");
    }
    s
}

/// `auth.conf`, included by `redis.conf`: how a replica logs in to its
/// primary. It holds a password in clear, as Redis needs it.
pub fn conf_file(internal: &Internal) -> String {
    format!(
        "masteruser {REPLICATION_USER}\nmasterauth {}\n",
        internal.replication
    )
}

/// Parses the rotation state kept in the internal Secret.
pub fn parse_hashes(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// A fresh password: 32 random bytes in hex.
pub fn generate_password() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(hashes: &[&str], started: Option<i64>) -> ClientAcl {
        ClientAcl {
            user: "default".into(),
            hashes: hashes.iter().map(|h| h.to_string()).collect(),
            rotation_started: started,
        }
    }

    fn internal() -> Internal {
        Internal {
            operator: "clear-op".into(),
            replication: "clear-rep".into(),
            probe: "clear-probe".into(),
            exporter: "clear-exp".into(),
        }
    }

    #[test]
    fn sha256_is_what_redis_compares() {
        // `ACL GETUSER` shows this for `>foobar`.
        assert_eq!(
            sha256_hex("foobar"),
            "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
        );
    }

    #[test]
    fn the_same_password_is_steady() {
        let (next_acl, step) = next(&acl(&["a"], None), "default", "a", 100, 60);
        assert_eq!(step, Rotation::Steady);
        assert_eq!(next_acl, acl(&["a"], None));
    }

    #[test]
    fn a_new_password_is_accepted_beside_the_old_for_the_overlap() {
        let (a, step) = next(&acl(&["a"], None), "default", "b", 100, 60);
        assert_eq!(step, Rotation::Started { until: 160 });
        assert_eq!(a, acl(&["a", "b"], Some(100)));
        let (a2, step) = next(&a, "default", "b", 159, 60);
        assert_eq!(step, Rotation::Overlapping { until: 160 });
        assert_eq!(a2, a);
        let (a3, step) = next(&a, "default", "b", 160, 60);
        assert_eq!(step, Rotation::Finished);
        assert_eq!(a3, acl(&["b"], None));
    }

    #[test]
    fn a_second_change_during_the_overlap_keeps_the_newest_two() {
        let (a, _) = next(&acl(&["a", "b"], Some(100)), "default", "c", 120, 60);
        assert_eq!(a, acl(&["b", "c"], Some(120)));
    }

    #[test]
    fn going_back_to_the_old_password_during_the_overlap_drops_the_new_one_after_it() {
        let (a, step) = next(&acl(&["a", "b"], Some(100)), "default", "a", 120, 60);
        assert_eq!(a, acl(&["b", "a"], Some(120)));
        assert_eq!(step, Rotation::Started { until: 180 });
    }

    #[test]
    fn no_overlap_switches_at_once() {
        let (a, step) = next(&acl(&["a"], None), "default", "b", 100, 0);
        assert_eq!(step, Rotation::Started { until: 100 });
        let (a, step) = next(&a, "default", "b", 100, 0);
        assert_eq!(step, Rotation::Finished);
        assert_eq!(a, acl(&["b"], None));
    }

    #[test]
    fn a_named_user_switches_default_off() {
        let mut c = acl(&["h"], None);
        c.user = "app".into();
        let file = acl_file(&c, &internal());
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines[0], "user default off resetpass -@all");
        assert_eq!(lines[1], "user app on resetpass #h ~* &* +@all");
        assert!(lines[2].starts_with(&format!(
            "user redis-operator on resetpass #{}",
            sha256_hex("clear-op")
        )));
        assert!(file.contains("user replication on resetpass"));
        assert!(file.contains("user probe on resetpass"));
        assert!(file.contains(&format!(
            "user exporter on resetpass #{} -@all +ping +info",
            sha256_hex("clear-exp")
        )));
        assert!(!file.contains("clear-"), "no clear passwords: {file}");
        assert_eq!(
            conf_file(&internal()),
            "masteruser replication\nmasterauth clear-rep\n"
        );
    }

    #[test]
    fn both_passwords_are_in_one_rule_during_a_rotation() {
        let users = users(&acl(&["a", "b"], Some(1)), &internal());
        assert_eq!(
            users[0],
            ("default".into(), "on resetpass #a #b ~* &* +@all".into())
        );
    }

    #[test]
    fn generated_passwords_differ() {
        let (a, b) = (generate_password().unwrap(), generate_password().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
