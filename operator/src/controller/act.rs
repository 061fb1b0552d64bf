//! Carries out an [`Intent`]: the only place the reconcile writes to the
//! API. Each write is the intent's; nothing here decides.

use api::{RedisCluster, RedisClusterStatus};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::json;

use super::decide::{ChildObject, Intent, Note, ToApply};
use super::events::Events;
use super::memory::ClusterMemory;
use super::{Error, kube_err};
use crate::names::{self, MANAGER};
use crate::telemetry::{DirectionLabels, Metrics};

/// What `act` writes with.
#[derive(Clone)]
pub(super) struct Writer {
    pub(super) client: Client,
    pub(super) events: Events,
    pub(super) metrics: std::sync::Arc<Metrics>,
}

/// Performs `intent` for `rc` in `ns`, and records in `mem` what it did.
pub(super) async fn act(
    w: &Writer,
    rc: &RedisCluster,
    ns: &str,
    intent: Intent,
    mem: &mut ClusterMemory,
) -> Result<Action, Error> {
    let name = rc.meta().name.as_deref().unwrap_or_default();
    for note in &intent.events {
        w.events.note(rc, note).await;
    }
    let mut writes = intent.apply.len();
    for child in &intent.apply {
        apply(&w.client, ns, child).await?;
    }
    if let Some(rendered) = intent.rendered {
        mem.rendered = Some(rendered);
    }
    for &shard in &intent.drop_shards {
        writes += drop_shard(&w.client, ns, name, shard).await?;
        w.events.note(rc, &Note::ShardRemoved(shard)).await;
    }
    if let Some(created) = &intent.created
        && writes > 0
    {
        w.events.note(rc, created).await;
    }
    mem.roll_blocked = intent.roll_blocked;
    if let Some(pod) = &intent.delete_pod {
        // Its StatefulSet (OnDelete) creates it again at the new revision.
        match Api::<Pod>::namespaced(w.client.clone(), ns)
            .delete(pod, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                w.metrics.pods_rolled.inc();
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(kube_err(
                    "deleting for a rolling update",
                    "Pod",
                    &format!("{ns}/{pod}"),
                )(e));
            }
        };
        tracing::info!(cluster = %format_args!("{ns}/{name}"), %pod, "rolling update: pod deleted");
    }
    if let Some(np) = &intent.delete_network_policy {
        match Api::<NetworkPolicy>::namespaced(w.client.clone(), ns)
            .delete(np, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(cluster = %format_args!("{ns}/{name}"), "NetworkPolicy switched off: deleted")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(kube_err("deleting", "NetworkPolicy", &format!("{ns}/{np}"))(e)),
        }
    }
    grow_claims(&w.client, rc, ns, &intent.grow_claims, mem).await;
    if let Some(sts) = &intent.replace_set {
        replace_set(&w.client, ns, sts).await?;
        tracing::info!(cluster = %format_args!("{ns}/{name}"), statefulset = %sts, "deleted with its pods left running, to re-create it with the larger claim template");
    }
    mem.autoscale = intent.autoscale;
    let api: Api<RedisCluster> = Api::namespaced(w.client.clone(), ns);
    if let Some(status) = &intent.status
        && let Err(e) = write_status(&api, name, ns, status).await
    {
        // A step that could not be written must not hold the next decisions.
        mem.autoscale.pending_generation = None;
        return Err(e);
    }
    // The status write above recorded the scaling time first: if we die
    // between the two writes, the cooldown prevents a second step.
    if let Some(step) = intent.scale {
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let patch = Patch::Merge(json!({ "spec": { "replicas": step.to } }));
        if let Err(e) = api.patch_scale(name, &params, &patch).await {
            mem.autoscale.pending_generation = None;
            return Err(kube_err("scaling", "RedisCluster", &format!("{ns}/{name}"))(e));
        }
        let direction = if step.to > step.from { "up" } else { "down" };
        w.metrics
            .scaling_events
            .get_or_create(&DirectionLabels { direction })
            .inc();
        w.events.note(rc, &Note::Scaled(step)).await;
        tracing::info!(cluster = %format_args!("{ns}/{name}"), from = step.from, to = step.to, "scaled");
    }
    Ok(Action::requeue(intent.requeue))
}

/// Raises each claim's request to `spec.storage.size`. A refusal (the
/// class cannot expand, a quota) is remembered for the status and tried
/// again on the next reconcile; the StatefulSets are left alone meanwhile.
async fn grow_claims(
    client: &Client,
    rc: &RedisCluster,
    ns: &str,
    claims: &[String],
    mem: &mut ClusterMemory,
) {
    let Some(storage) = rc.spec.storage.as_ref().filter(|_| !claims.is_empty()) else {
        return;
    };
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let patch = Patch::Merge(json!({
        "spec": { "resources": { "requests": { "storage": storage.size } } }
    }));
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let mut refused = None;
    for claim in claims {
        match api.patch(claim, &params, &patch).await {
            Ok(_) => {
                tracing::info!(claim = %format_args!("{ns}/{claim}"), size = %storage.size.0, "claim grown")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                let why = match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                };
                tracing::warn!(claim = %format_args!("{ns}/{claim}"), error = %why, "claim not grown");
                refused = Some(format!("claim {claim}: {why}"));
                break;
            }
        }
    }
    mem.expansion_refused = refused;
}

/// Deletes a StatefulSet and leaves its pods (and their claims) running:
/// the next reconcile creates it again, and it adopts them.
async fn replace_set(client: &Client, ns: &str, name: &str) -> Result<(), Error> {
    let dp = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..Default::default()
    };
    match Api::<StatefulSet>::namespaced(client.clone(), ns)
        .delete(name, &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(kube_err(
            "deleting (pods left running) to re-create with larger claims",
            "StatefulSet",
            &format!("{ns}/{name}"),
        )(e)),
    }
}

/// Applies one child with Server-Side Apply, taking over its fields.
async fn apply(client: &Client, ns: &str, child: &ToApply) -> Result<(), Error> {
    match &child.object {
        ChildObject::ConfigMap(o) => patch(client, ns, &child.name, o).await,
        ChildObject::Service(o) => patch(client, ns, &child.name, o).await,
        ChildObject::StatefulSet(o) => patch(client, ns, &child.name, o).await,
        ChildObject::Pdb(o) => patch(client, ns, &child.name, o).await,
        ChildObject::NetworkPolicy(o) => patch(client, ns, &child.name, o).await,
    }
    .map_err(kube_err(
        "applying",
        child.kind().as_str(),
        &format!("{ns}/{}", child.name),
    ))
}

async fn patch<K>(client: &Client, ns: &str, name: &str, obj: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let params = PatchParams::apply(MANAGER).force();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(name, &params, &Patch::Apply(obj))
        .await
        .map(|_| ())
}

/// Deletes a drained shard's StatefulSet and PDB; returns how many were
/// there to delete.
async fn drop_shard(client: &Client, ns: &str, cluster: &str, shard: u32) -> Result<usize, Error> {
    let name = &names::statefulset_name(cluster, shard);
    let dp = DeleteParams::default();
    let mut deleted = 0;
    for result in [
        Api::<StatefulSet>::namespaced(client.clone(), ns)
            .delete(name, &dp)
            .await
            .map(|_| ()),
        Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
            .delete(name, &dp)
            .await
            .map(|_| ()),
    ] {
        match result {
            Ok(()) => deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(kube_err("deleting", "shard", &format!("{ns}/{name}"))(e)),
        }
    }
    // Its claims too: the shard was drained and forgotten, so they hold
    // nothing of the cluster's, and a later shard of the same index must
    // start empty rather than find a stale node that belongs to no cluster.
    // (Replica scale-downs are covered by the StatefulSet's
    // `whenScaled: Delete`; a deleted RedisCluster keeps its claims.)
    let selector = names::shard_selector_string(cluster, shard);
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .delete_collection(&dp, &ListParams::default().labels(&selector))
        .await
        .map_err(kube_err(
            "deleting the claims of",
            "shard",
            &format!("{ns}/{name}"),
        ))?;
    Ok(deleted + 1)
}

async fn write_status(
    api: &Api<RedisCluster>,
    name: &str,
    ns: &str,
    status: &RedisClusterStatus,
) -> Result<(), Error> {
    // Server-Side Apply, so fields we stop setting are removed.
    let body = json!({
        "apiVersion": "redis.example.com/v1alpha1",
        "kind": "RedisCluster",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_err(
        "writing status of",
        "RedisCluster",
        &format!("{ns}/{name}"),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests;
