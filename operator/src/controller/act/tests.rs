//! `act` against a mocked API server: each scenario asserts the exact
//! requests made, in order, and that nothing else was asked.

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::Reporter;
use tower_test::mock;

use std::time::Duration;

use super::*;
use crate::controller::decide::Intent;
use crate::controller::fixtures::*;
use crate::topology::Report;
use crate::utilization::Unavailable;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// Runs `intent` against a mocked API server; returns the requests it
/// made ("METHOD path?query"), the outcome, and the memory after it.
async fn run(world: &World, intent: Intent) -> (Vec<String>, Result<Action, Error>, ClusterMemory) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, world.rc.clone()));
    let client = Client::new(service, "team-a");
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: None,
    };
    let w = Writer {
        events: Events::new(client.clone(), reporter),
        client,
        metrics: crate::telemetry::Metrics::new(),
    };
    let mut mem = ClusterMemory::default();
    let outcome = act(&w, &world.rc, "team-a", intent, &mut mem).await;
    // The server's loop ends once every handle on the client is gone.
    drop(w);
    let calls = match server.await {
        Ok(calls) => calls,
        Err(e) => panic!("the mocked API server failed: {e}"),
    };
    (calls, outcome, mem)
}

/// Answers every request as the apiserver would on success, until the
/// client is dropped.
async fn serve(mut handle: Handle, rc: RedisCluster) -> Vec<String> {
    let mut calls = Vec::new();
    while let Some((request, reply)) = handle.next_request().await {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        calls.push(format!("{method} {uri}"));
        let body = request.into_body().collect_bytes().await.unwrap();
        let answer = if method == http::Method::DELETE {
            serde_json::to_vec(&json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"
            }))
        } else if uri.path().ends_with("/status") {
            serde_json::to_vec(&rc)
        } else if uri.path().ends_with("/scale") {
            serde_json::to_vec(&json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "cache", "namespace": "team-a"},
                "spec": {"replicas": 3}
            }))
        } else {
            // An apply or a create returns the object written.
            Ok(body.to_vec())
        };
        reply.send_response(Response::new(Body::from(answer.unwrap())));
    }
    calls
}

const NS: &str = "/namespaces/team-a";

fn apply_call(path: &str) -> String {
    format!("PATCH {path}?&force=true&fieldManager={MANAGER}")
}

#[tokio::test]
async fn create_applies_every_child_then_announces_and_writes_status() {
    let mut world = World::new(rc(2, 2), vec![]);
    world.report = None;
    world.utilization = Err(Unavailable::NoReadyPods);
    let intent = world.decide();
    let (calls, outcome, mem) = run(&world, intent.clone()).await;
    let status = format!("/apis/redis.example.com/v1alpha1{NS}/redisclusters/cache/status");
    assert_eq!(
        calls,
        [
            apply_call(&format!("/api/v1{NS}/configmaps/cache-config")),
            apply_call(&format!("/api/v1{NS}/services/cache-headless")),
            apply_call(&format!("/api/v1{NS}/services/cache")),
            apply_call(&format!("/apis/apps/v1{NS}/statefulsets/cache-shard-0")),
            apply_call(&format!("/apis/apps/v1{NS}/statefulsets/cache-shard-1")),
            apply_call(&format!(
                "/apis/policy/v1{NS}/poddisruptionbudgets/cache-shard-0"
            )),
            apply_call(&format!(
                "/apis/policy/v1{NS}/poddisruptionbudgets/cache-shard-1"
            )),
            format!("POST /apis/events.k8s.io/v1{NS}/events?"),
            apply_call(&status),
        ]
    );
    assert_eq!(outcome.ok(), Some(Action::requeue(Duration::from_secs(3))));
    assert_eq!(mem.rendered, intent.rendered);
}

#[tokio::test]
async fn a_no_op_makes_no_request() {
    let world = settled();
    let (calls, outcome, _) = run(&world, world.decide()).await;
    assert_eq!(calls, [] as [String; 0]);
    assert_eq!(outcome.ok(), Some(Action::requeue(INTERVAL)));
}

#[tokio::test]
async fn a_scale_step_writes_status_first_then_the_scale_and_tells() {
    let mut world = settled();
    world.utilization = cpu(90.0);
    let (calls, outcome, mem) = run(&world, world.decide()).await;
    let rc = format!("/apis/redis.example.com/v1alpha1{NS}/redisclusters/cache");
    assert_eq!(
        calls,
        [
            apply_call(&format!("{rc}/status")),
            format!("PATCH {rc}/scale?&fieldManager={MANAGER}"),
            format!("POST /apis/events.k8s.io/v1{NS}/events?"),
        ]
    );
    assert_eq!(outcome.ok(), Some(Action::requeue(INTERVAL)));
    assert_eq!(mem.autoscale.pending_generation, Some(GENERATION));
}

#[tokio::test]
async fn a_drained_shard_loses_its_statefulset_and_pdb() {
    // Three shards running, their children applied.
    let sets = vec![set(0, 2, 2), set(1, 2, 2), set(2, 2, 2)];
    let three = World::new(rc(3, 2), sets);
    let first = three.decide();
    let mut world = three.after(&first);
    // Then two asked for, and the third shard drained by the topology.
    world.rc = rc(2, 2);
    world.rc.metadata.generation = Some(GENERATION + 1);
    world.report = Some(Report {
        removable_shards: vec![2],
        ..converged()
    });
    let (calls, outcome, _) = run(&world, world.decide()).await;
    assert_eq!(
        calls,
        [
            format!("DELETE /apis/apps/v1{NS}/statefulsets/cache-shard-2?"),
            format!("DELETE /apis/policy/v1{NS}/poddisruptionbudgets/cache-shard-2?"),
            format!(
                "DELETE /api/v1{NS}/persistentvolumeclaims?&labelSelector=redis.example.com%2Fcluster%3Dcache%2Credis.example.com%2Fshard%3D2"
            ),
            format!("POST /apis/events.k8s.io/v1{NS}/events?"),
            apply_call(&format!(
                "/apis/redis.example.com/v1alpha1{NS}/redisclusters/cache/status"
            )),
        ]
    );
    // Until the watch shows the StatefulSet gone, the cluster is resizing.
    assert_eq!(outcome.ok(), Some(Action::requeue(Duration::from_secs(3))));
}

#[tokio::test]
async fn a_roll_step_deletes_exactly_one_pod_and_announces_it() {
    let mut world = settled();
    world.roll = Some(crate::roll::Decision {
        step: crate::roll::Step::Delete {
            pod: "cache-shard-1-0".into(),
            shard: 1,
            primary: false,
        },
        left: 2,
        total: 4,
    });
    let (calls, outcome, _) = run(&world, world.decide()).await;
    let rc = format!("/apis/redis.example.com/v1alpha1{NS}/redisclusters/cache");
    assert_eq!(
        calls,
        [
            format!("POST /apis/events.k8s.io/v1{NS}/events?"),
            format!("DELETE /api/v1{NS}/pods/cache-shard-1-0?"),
            apply_call(&format!("{rc}/status")),
        ]
    );
    assert_eq!(outcome.ok(), Some(Action::requeue(Duration::from_secs(3))));
}
