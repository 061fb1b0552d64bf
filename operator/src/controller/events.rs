//! Kubernetes Events: a decision's [`Note`]s rendered and published.

use api::RedisCluster;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::decide::Note;
use crate::names::MANAGER;

pub(super) fn reporter() -> Reporter {
    Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// Where events go: one recorder that folds repeats, and a client for
/// events that must each stand alone.
#[derive(Clone)]
pub(super) struct Events {
    client: Client,
    reporter: Reporter,
    recorder: Recorder,
}

impl Events {
    pub(super) fn new(client: Client, reporter: Reporter) -> Self {
        Events {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
        }
    }

    /// Publishes `note` about `rc`.
    pub(super) async fn note(&self, rc: &RedisCluster, note: &Note) {
        let (type_, reason) = kind(note);
        let text = render(note);
        if distinct(note) {
            // The recorder would fold a second "ScaledUp" into the first,
            // keeping only "replicas 1 -> 2": a fresh one keeps each note.
            self.publish_fresh(rc, type_, reason, text).await;
        } else {
            self.publish(rc, type_, reason, text).await;
        }
    }

    /// Publishes an event of its own: the shared recorder would fold it
    /// into an earlier one of the same reason and keep that one's note.
    pub(super) async fn publish_fresh<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        publish_with(&recorder, obj, type_, reason, note).await;
    }

    /// Publishes an event; repeats (same reason, within minutes) become one
    /// Event with a growing `series.count`, keeping the first note.
    pub(super) async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        publish_with(&self.recorder, obj, type_, reason, note).await;
    }
}

/// Notes whose text matters each time: a scaling step, a shard removed.
fn distinct(note: &Note) -> bool {
    matches!(
        note,
        Note::ShardRemoved(_)
            | Note::Scaled(_)
            | Note::DataLost(_)
            | Note::Rolling(_)
            | Note::Expanding(_)
    )
}

fn kind(note: &Note) -> (EventType, &'static str) {
    match note {
        Note::TopologyChanged { .. } => (EventType::Normal, "TopologyChanged"),
        Note::MetricsUnavailable(_) => (EventType::Warning, "MetricsUnavailable"),
        Note::Created { .. } => (EventType::Normal, "Created"),
        Note::ShardRemoved(_) => (EventType::Normal, "ShardRemoved"),
        Note::Scaled(s) if s.to > s.from => (EventType::Normal, "ScaledUp"),
        Note::Scaled(_) => (EventType::Normal, "ScaledDown"),
        Note::DataLost(_) => (EventType::Warning, "DataLost"),
        Note::Rolling(_) => (EventType::Normal, "RollingUpdate"),
        Note::RollBlocked(_) => (EventType::Warning, "UpdateBlocked"),
        Note::Expanding(_) => (EventType::Normal, "ExpandingVolumes"),
    }
}

/// The event's note, as a human reads it.
pub(super) fn render(note: &Note) -> String {
    match note {
        Note::TopologyChanged { shown, taken } => {
            let mut text = shown.join("; ");
            let more = taken.saturating_sub(shown.len() as u64);
            if more > 0 {
                text.push_str(&format!(" (+{more} more)"));
            }
            text
        }
        Note::MetricsUnavailable(why) => why.to_string(),
        Note::Created {
            statefulsets,
            nodes,
        } => format!("created {statefulsets} StatefulSets with {nodes} nodes each"),
        Note::ShardRemoved(shard) => format!("shard {shard} drained and removed"),
        Note::DataLost(l) => format!(
            "shard {} lost its only copy (node {}): slots {} serve again, empty; their keys are gone",
            l.shard,
            l.node_id,
            crate::topology::model::fmt_ranges(&l.ranges)
        ),
        Note::Scaled(s) => {
            let cpu = s.cpu.map(|u| format!("{u:.1}%")).unwrap_or_default();
            format!(
                "replicas {} -> {}: CPU {cpu} against a target of {}%",
                s.from, s.to, s.threshold
            )
        }
        Note::Rolling(text) | Note::RollBlocked(text) | Note::Expanding(text) => text.clone(),
    }
}

async fn publish_with<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::debug!(error = %e, "event not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::Step;

    #[test]
    fn notes_render_as_before_with_the_true_action_count() {
        let shown: Vec<String> = (0..5).map(|i| format!("a{i}")).collect();
        let topology = Note::TopologyChanged { shown, taken: 250 };
        assert_eq!(render(&topology), "a0; a1; a2; a3; a4 (+245 more)");
        let step = Step {
            from: 2,
            to: 3,
            cpu: Some(91.04),
            threshold: 70.0,
        };
        assert_eq!(
            render(&Note::Scaled(step)),
            "replicas 2 -> 3: CPU 91.0% against a target of 70%"
        );
        assert_eq!(kind(&Note::Scaled(Step { to: 1, ..step })).1, "ScaledDown");
        assert_eq!(
            render(&Note::Created {
                statefulsets: 3,
                nodes: 2
            }),
            "created 3 StatefulSets with 2 nodes each"
        );
    }
}
