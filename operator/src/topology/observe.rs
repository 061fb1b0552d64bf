//! Observation: asks every member, concurrently, what it knows about the
//! cluster (`CLUSTER MYID`, `CLUSTER NODES`, `CLUSTER INFO`, `DBSIZE`,
//! `INFO replication`) and turns the answers into an [`Observation`].
//!
//! A member that cannot be reached or answers with an error is recorded as
//! such, not as a failure of the whole observation: the planner decides what
//! that means (a pod not running yet, a node down...).

use std::net::SocketAddr;

use futures::future::join_all;
use redis::aio::MultiplexedConnection;

use super::exec::{self, Conns};
use super::model::{parse_cluster_info, parse_cluster_nodes, parse_replication};
use super::plan::{NodeObs, NodeState, Observation};
use super::{Desired, Member};

pub(crate) async fn observe_with(
    conns: &mut Conns,
    members: &[Member],
    desired: &Desired,
) -> Observation {
    let timeout = conns.command_timeout;
    let connect_timeout = conns.connect_timeout;
    let login = conns.login.clone();
    let tls = conns.tls.clone();
    // Connect to the members we have no connection to, concurrently.
    let missing: Vec<SocketAddr> = members
        .iter()
        .map(|m| m.addr)
        .filter(|a| conns.cached(*a).is_none())
        .collect();
    let fresh = join_all(missing.iter().map(|&a| {
        let (login, tls) = (login.clone(), tls.clone());
        async move {
            let c = exec::connect(a, connect_timeout, login.as_ref(), tls.as_ref()).await;
            (a, c)
        }
    }))
    .await;
    let mut connect_errors = std::collections::HashMap::new();
    for (a, r) in fresh {
        match r {
            Ok(c) => conns.insert(a, c),
            Err(e) => {
                connect_errors.insert(a, format!("cannot connect: {e}"));
            }
        }
    }
    let states = join_all(members.iter().map(|m| {
        let con = conns.cached(m.addr);
        let err = connect_errors.get(&m.addr).cloned();
        async move {
            match (con, err) {
                (Some(c), _) => query(c, timeout).await,
                (None, Some(e)) => Err(e),
                (None, None) => Err("no connection".to_string()),
            }
        }
    }))
    .await;
    let mut obs = Observation::default();
    for (m, st) in members.iter().zip(states) {
        if st.is_err() {
            // Reconnect next time: the node may have restarted.
            conns.invalidate(m.addr);
        }
        obs.nodes.push(NodeObs {
            member: m.clone(),
            state: st,
        });
    }
    fill_uncovered_keys(conns, &mut obs, desired).await;
    obs
}

async fn query(
    mut c: MultiplexedConnection,
    timeout: std::time::Duration,
) -> Result<NodeState, String> {
    let mut p = redis::pipe();
    p.cmd("CLUSTER")
        .arg("MYID")
        .cmd("CLUSTER")
        .arg("NODES")
        .cmd("CLUSTER")
        .arg("INFO")
        .cmd("DBSIZE")
        .cmd("INFO")
        .arg("replication");
    let reply = tokio::time::timeout(
        timeout,
        p.query_async::<(String, String, String, u64, String)>(&mut c),
    )
    .await;
    let (id, nodes, info, dbsize, repl) = match reply {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(format!("observation failed: {e}")),
        Err(_) => return Err(format!("observation timed out after {timeout:?}")),
    };
    let view = parse_cluster_nodes(&nodes).map_err(|e| format!("bad CLUSTER NODES reply: {e}"))?;
    if !view.iter().any(|l| l.flags.myself && l.id == id) {
        return Err(format!("CLUSTER NODES does not list myself ({id})"));
    }
    Ok(NodeState {
        id,
        view,
        info: parse_cluster_info(&info),
        dbsize,
        repl: parse_replication(&repl),
    })
}

/// For slots nobody claims, asks primaries that hold keys how many they hold
/// there, so that such slots go back to the node that has their keys.
async fn fill_uncovered_keys(conns: &mut Conns, obs: &mut Observation, desired: &Desired) {
    let uncovered = super::plan::uncovered_slots(obs, desired);
    if uncovered.is_empty() {
        return;
    }
    let holders: Vec<(SocketAddr, String)> = obs
        .nodes
        .iter()
        .filter_map(|n| n.state.as_ref().ok().map(|s| (n.member.addr, s)))
        .filter(|(_, s)| s.dbsize > 0 && s.repl.is_master)
        .map(|(a, s)| (a, s.id.clone()))
        .collect();
    for (addr, id) in holders {
        let mut p = redis::pipe();
        for s in &uncovered {
            p.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(*s);
        }
        let timeout = conns.command_timeout;
        // Best effort: without the counts, the slot is not assigned to this
        // node, and it stays uncovered (the planner then refuses to guess).
        let Ok(Ok(counts)) = tokio::time::timeout(timeout, async {
            let mut c = conns.get(addr).await.map_err(|e| e.to_string())?;
            p.query_async::<Vec<u64>>(&mut c)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        else {
            obs.keys_unknown = true;
            continue;
        };
        for (s, c) in uncovered.iter().zip(counts) {
            if c > 0 {
                obs.uncovered_keys
                    .entry(*s)
                    .or_default()
                    .push((id.clone(), c));
            }
        }
    }
}
