//! Redis Cluster topology: the Redis-side half of the operator.
//!
//! [`step`] is called once per reconcile. It observes every member over RESP
//! (`observe`), asks the pure planner ([`plan`]) for the next safe batch of
//! actions, executes it (`exec`), and repeats until the topology converges,
//! something outside its control blocks it, or its time budget runs out. It
//! returns a [`Report`]; the operator requeues until `converged`, and deletes
//! pods only when the report says they are removable.
//!
//! Safety rules the design rests on, so that no key is ever lost:
//! - slots are only assigned (ADDSLOTS) when no node claims them in any view,
//!   and a node holding slots or keys is never reset, flushed or merged;
//! - a slot moves key by key with MIGRATE while the source is MIGRATING and
//!   the target IMPORTING; the source stays authoritative until the move is
//!   closed, and an interrupted move is always finished towards the importing
//!   node, so each step can stop anywhere and the next one picks it up.
//!   Clients keep working meanwhile: Redis answers ASK for keys already moved
//!   (and TRYAGAIN for multi-key commands split across both nodes);
//! - migrations start only when every node reports `cluster_state:ok` and
//!   every primary agrees on the slot map;
//! - a primary being scaled away hands over with a coordinated failover;
//! - a replica whose primary is gone but still owns slots may hold the only
//!   copy of their keys: it is never re-pointed, reset or forgotten;
//! - nodes are forgotten only once they hold no slots and no keys of their own.

mod bounded;
mod error;
mod exec;
mod fence;
pub mod model;
mod observe;
pub mod plan;
mod readings;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use error::TopologyError;
pub use fence::Fence;
pub use plan::{Action, HandOver, Health, Limits, LostShard, NodeRef, Observation, Outcome, Plan};
pub use readings::{NodeReading, Readings};

/// One Redis pod: its shard (StatefulSet index), ordinal within the
/// StatefulSet, and address (pod IP:6379).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub shard: u32,
    pub ordinal: u32,
    pub addr: SocketAddr,
}

/// The topology to reach: `shards` primaries holding the 16384 slots evenly,
/// each with `nodes_per_shard - 1` replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    pub shards: u32,
    pub nodes_per_shard: u32,
    /// What a node that is gone for good means, and what to do about it.
    pub loss: LossPolicy,
}

/// How the planner treats a node whose pod was replaced.
///
/// The default is the conservative one: storage that survives the pod
/// (wait for the node), and never reassign slots of a lost node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossPolicy {
    /// Data and node id (`nodes.conf`) survive a pod's replacement
    /// (`spec.storage`): a node the cluster knows that no member answers to
    /// may come back, so it is waited for and its slots never reassigned.
    pub persistent: bool,
    /// Without persistent storage, when a shard's only copy is lost: give
    /// its slots to the shard's new empty node (availability back, the loss
    /// reported), or wait for a human.
    pub recover_empty: bool,
}

impl Default for LossPolicy {
    fn default() -> Self {
        Self {
            persistent: true,
            recover_empty: false,
        }
    }
}

/// Bounds on one [`step`] call, so the reconcile loop stays responsive.
#[derive(Debug, Clone)]
pub struct StepOptions {
    /// Wall-clock budget. Checked between commands: a slot move in flight
    /// may be left open and is finished by the next call.
    pub time_budget: Duration,
    /// At most this many slots moved per call.
    pub max_slots_per_step: u32,
    /// Stop after migrating this many keys (a slot may be left open).
    pub max_keys_per_step: Option<u64>,
    /// Keys per MIGRATE command.
    pub keys_per_migrate: u32,
    /// Slots per pipelined migration batch.
    pub slots_per_batch: u32,
    pub connect_timeout: Duration,
    /// Timeout of an ordinary admin command.
    pub command_timeout: Duration,
    /// The timeout MIGRATE is given for talking to the target.
    pub migrate_timeout: Duration,
    /// Pause between two observations while the cluster settles (gossip).
    pub settle_poll: Duration,
    /// Every command that changes Redis checks it first (leadership).
    pub fence: Fence,
    /// A primary a rolling update asks to step down.
    pub hand_over: Option<HandOver>,
    /// The ACL user the operator logs in as, when the nodes require one;
    /// MIGRATE passes it on to the target.
    pub login: Option<Login>,
    /// TLS to the nodes (`spec.tls`); `None`: plain TCP.
    pub tls: Option<TlsClient>,
}

/// Runs one pipeline (made with `ignore_errors`) on one node, fenced and
/// logged in as a step is; a server error in any reply is an error.
pub async fn run_pipeline(
    addr: SocketAddr,
    p: &redis::Pipeline,
    label: &str,
    opts: &StepOptions,
) -> Result<(), TopologyError> {
    let mut conns = exec::Conns::new(opts);
    let replies = conns.pipe(addr, p, label, opts.command_timeout).await?;
    for v in &replies {
        if let Some(message) = exec::server_error(v) {
            return Err(TopologyError::Refused {
                addr,
                command: label.to_string(),
                message,
            });
        }
    }
    Ok(())
}

/// An ACL user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// How the operator speaks TLS to a cluster's nodes: the CAs it trusts,
/// and the one name it checks their certificate against, whatever address
/// it dials (a node is reached by its pod IP).
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

/// Why a [`TlsClient`] cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    #[error("no usable CA certificate in the PEM")]
    NoCa,
    #[error("{0:?} is not a valid server name")]
    Name(String),
    #[error("setting up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsClient {
    /// Trusts the CAs of `ca_pem`; checks certificates against `server_name`.
    pub fn new(ca_pem: &str, server_name: &str) -> Result<Self, TlsClientError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
            // A certificate rustls cannot use as a root is skipped; none
            // at all is an error below.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(TlsClientError::NoCa);
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsClientError::Name(server_name.to_string()))?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            name,
        })
    }

    pub(crate) async fn connect(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient({:?})", self.name)
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, <redacted>)", self.user)
    }
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            time_budget: Duration::from_secs(10),
            max_slots_per_step: u32::MAX,
            max_keys_per_step: None,
            keys_per_migrate: 100,
            slots_per_batch: 64,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            migrate_timeout: Duration::from_secs(10),
            settle_poll: Duration::from_millis(200),
            fence: Fence::default(),
            hand_over: None,
            login: None,
            tls: None,
        }
    }
}

/// What one [`step`] did and where the cluster stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Desired topology reached, cluster_state ok everywhere, no open slot.
    pub converged: bool,
    /// Human-readable, for events and logs; capped, with a last line
    /// saying how many more were taken.
    pub actions_taken: Vec<String>,
    /// Actions taken in all, counted also past the cap of `actions_taken`.
    pub actions: u64,
    pub slots_moved: u32,
    pub keys_moved: u64,
    pub slots_left_to_move: u32,
    /// The current step, for status.
    pub message: String,
    /// The last observation, as a rolling update reads it.
    pub readings: Readings,
    /// StatefulSet indexes >= desired.shards whose nodes all answered, hold
    /// no slots and no keys, and have been forgotten by the rest: the
    /// operator may delete them. A member that did not answer keeps its
    /// shard (unknown is unsafe).
    pub removable_shards: Vec<u32>,
    /// True when, in every shard, no member with ordinal >=
    /// desired.nodes_per_shard is a primary, each such member answered and
    /// was forgotten:
    /// the operator may now shrink the StatefulSets.
    pub replicas_removable: bool,
    /// Time spent moving slots (for keys/s and the migration-duration metric).
    pub migration_time: Duration,
    /// Slot ownership and cluster_state as last observed, for `Degraded`.
    pub health: Health,
    /// Shards whose only copy was lost and whose slots this step gave to an
    /// empty node: their keys are gone. Reported loudly (event, metric).
    pub data_lost: Vec<LostShard>,
}

/// A [`step`] that failed part-way, with what it did before the error:
/// that still happened (a lost node's FORGET cannot be undone), so its
/// report must still be recorded, and a loss reported exactly once.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct StepError {
    pub error: TopologyError,
    /// What the step did, and observed, before the error.
    pub report: Box<Report>,
}

impl From<TopologyError> for StepError {
    fn from(error: TopologyError) -> Self {
        StepError {
            error,
            report: Box::default(),
        }
    }
}

impl Report {
    /// Takes in an earlier step's actions and losses, so that a second step
    /// in the same reconcile does not hide what the first one did.
    pub fn absorb(&mut self, earlier: Report) {
        let mut actions = earlier.actions_taken;
        actions.append(&mut self.actions_taken);
        actions.truncate(MAX_ACTION_LOG);
        self.actions_taken = actions;
        self.actions += earlier.actions;
        self.slots_moved += earlier.slots_moved;
        self.keys_moved += earlier.keys_moved;
        self.migration_time += earlier.migration_time;
        let mut lost = earlier.data_lost;
        lost.append(&mut self.data_lost);
        self.data_lost = lost;
    }
}

/// Upper bound on observe/plan/act rounds in one call (the time budget
/// normally ends it much earlier).
const MAX_ROUNDS: u32 = 10_000;
/// Cap on `Report::actions_taken` entries.
const MAX_ACTION_LOG: usize = 200;

/// Moves the cluster formed by `members` towards `desired`, within `opts`.
/// On error, what was done before it comes with the error.
pub async fn step(
    members: &[Member],
    desired: &Desired,
    opts: &StepOptions,
) -> Result<Report, StepError> {
    validate(members, desired)?;
    let mut report = Report::default();
    match step_into(members, desired, opts, &mut report).await {
        Ok(()) => Ok(report),
        Err(error) => Err(StepError {
            error,
            report: Box::new(report),
        }),
    }
}

async fn step_into(
    members: &[Member],
    desired: &Desired,
    opts: &StepOptions,
    report: &mut Report,
) -> Result<(), TopologyError> {
    let start = Instant::now();
    let mut budget = exec::Budget::new(start + opts.time_budget, opts);
    let mut conns = exec::Conns::new(opts);
    let limits = Limits {
        max_slots: 512.min(opts.max_slots_per_step.max(1)),
        slots_per_batch: opts.slots_per_batch.max(1),
        hand_over: opts.hand_over,
    };
    let mut logged = 0usize;
    for round in 0..MAX_ROUNDS {
        let obs = observe::observe_with(&mut conns, members, desired).await;
        let plan = plan::plan(&obs, desired, &limits);
        tracing::debug!(
            outcome = ?plan.outcome,
            message = %plan.message,
            actions = plan.actions.len(),
            "topology plan"
        );
        report.converged = plan.outcome == Outcome::Converged;
        report.message = plan.message.clone();
        report.slots_left_to_move = plan.slots_left_to_move;
        report.removable_shards = plan.removable_shards.clone();
        report.replicas_removable = plan.replicas_removable;
        report.health = plan.health.clone();
        report.readings = Readings::of(&obs, desired);
        match plan.outcome {
            Outcome::Converged | Outcome::Pending => break,
            Outcome::Settling => {
                if Instant::now() + opts.settle_poll >= budget.deadline {
                    break;
                }
                tokio::time::sleep(opts.settle_poll).await;
                continue;
            }
            Outcome::Act => {}
        }
        if round > 0 && budget.exhausted() {
            break;
        }
        for action in &plan.actions {
            let t0 = Instant::now();
            tracing::debug!(%action, "topology action");
            // A loss is recorded as its FORGET is sent: from then on the
            // node is gone whatever happens next, and the next step sees
            // the slots as merely uncovered.
            if let Action::Forget { id, .. } = action {
                report
                    .data_lost
                    .extend(plan.data_lost.iter().filter(|l| l.node_id == *id).cloned());
            }
            let detail = exec::run(&mut conns, action, opts, &mut budget).await;
            report.slots_moved = budget.slots_moved;
            report.keys_moved = budget.keys_moved;
            let detail = detail?;
            if matches!(action, Action::MoveSlots { .. }) {
                report.migration_time += t0.elapsed();
            }
            if logged < MAX_ACTION_LOG {
                report.actions_taken.push(match detail {
                    Some(d) => format!("{action} ({d})"),
                    None => action.to_string(),
                });
            }
            logged += 1;
            report.actions += 1;
            if budget.exhausted() {
                break;
            }
        }
        report.slots_moved = budget.slots_moved;
        report.keys_moved = budget.keys_moved;
    }
    if logged > MAX_ACTION_LOG {
        report
            .actions_taken
            .push(format!("... and {} more", logged - MAX_ACTION_LOG));
    }
    report.slots_moved = budget.slots_moved;
    report.keys_moved = budget.keys_moved;
    Ok(())
}

fn validate(members: &[Member], d: &Desired) -> Result<(), TopologyError> {
    if d.shards == 0 || d.shards > u32::from(model::SLOTS) {
        return Err(TopologyError::InvalidDesired(format!(
            "shards must be 1..={}, got {}",
            model::SLOTS,
            d.shards
        )));
    }
    if d.nodes_per_shard == 0 {
        return Err(TopologyError::InvalidDesired(
            "nodes_per_shard must be at least 1".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for m in members {
        if !seen.insert(m.addr) {
            return Err(TopologyError::InvalidDesired(format!(
                "address {} is listed for two members",
                m.addr
            )));
        }
    }
    let mut slots = std::collections::HashSet::new();
    for m in members {
        if !slots.insert((m.shard, m.ordinal)) {
            return Err(TopologyError::InvalidDesired(format!(
                "shard {} ordinal {} is listed twice",
                m.shard, m.ordinal
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_step_keeps_the_first_steps_actions_and_losses() {
        let lost = LostShard {
            shard: 1,
            node_id: "a".repeat(40),
            ranges: vec![(5462, 10922)],
        };
        let first = Report {
            actions_taken: vec!["CLUSTER FORGET".into()],
            actions: 2,
            data_lost: vec![lost.clone()],
            ..Report::default()
        };
        let mut second = Report {
            actions_taken: vec!["CLUSTER FAILOVER".into()],
            actions: 1,
            converged: true,
            ..Report::default()
        };
        second.absorb(first);
        assert_eq!(second.actions_taken, ["CLUSTER FORGET", "CLUSTER FAILOVER"]);
        assert_eq!(second.actions, 3);
        assert_eq!(second.data_lost, [lost]);
        assert!(
            second.converged,
            "the later step says where the cluster stands"
        );
    }
}
