//! Growing the Redis nodes' volumes when `spec.storage.size` grows: which
//! claims to enlarge, which StatefulSet to re-create around its running
//! pods (a claim template cannot change in place), and how far it got.
//! Pure; the claims are listed, patched and the StatefulSet deleted by the
//! controller.

use api::VolumeExpansionStatus;

use crate::cache::SetState;

/// A PersistentVolumeClaim of the cluster, as listed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claim {
    pub name: String,
    /// `spec.resources.requests.storage`, in bytes.
    pub requested: Option<u64>,
    /// `status.capacity.storage`, in bytes: what the volume has.
    pub capacity: Option<u64>,
    /// The kubelet has yet to grow the file system
    /// (`FileSystemResizePending`).
    pub fs_pending: bool,
}

/// What an expansion decision is made from.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// `spec.storage.size`, in bytes.
    pub size: u64,
    /// `spec.storage.size` as written, for status and messages.
    pub size_text: &'a str,
    pub sets: &'a [SetState],
    /// The cluster's claims; `None` when they were not listed.
    pub claims: Option<&'a [Claim]>,
    /// Nothing else moves (topology converged, no pod being replaced): a
    /// StatefulSet may be re-created, which hides its pods from the
    /// operator for a moment.
    pub settled: bool,
    /// The API refused the last claim patch: its words.
    pub refused: Option<&'a str>,
}

/// What to do about the volumes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Claims whose request is raised to the spec's size.
    pub grow: Vec<String>,
    /// The shard whose StatefulSet is deleted, leaving its pods running,
    /// so that it is created again with the larger claim template.
    pub replace: Option<u32>,
    /// Shards whose StatefulSet is not applied: its claim template differs
    /// from the spec, which the API refuses in an update.
    pub hold: Vec<u32>,
    /// The status to show; `None` when nothing was listed.
    pub status: Option<VolumeExpansionStatus>,
}

/// Whether this reconcile must list the claims: a StatefulSet's template
/// differs from the spec, or the last expansion is not done for this size.
pub fn needs_claims(
    size_text: &str,
    size: u64,
    sets: &[SetState],
    prior: Option<&VolumeExpansionStatus>,
) -> bool {
    sets.iter()
        .any(|s| s.claim_bytes.is_some_and(|b| b != size))
        || prior.is_some_and(|p| !is_done(p) || p.size != size_text)
}

/// Every volume has the size and every StatefulSet asks for it.
pub fn is_done(s: &VolumeExpansionStatus) -> bool {
    s.expanded == s.volumes && s.statefulsets_left == 0 && s.refused.is_none()
}

/// Decides the next expansion step.
pub fn plan(i: &Inputs<'_>) -> Plan {
    let hold: Vec<u32> = i
        .sets
        .iter()
        .filter(|s| s.claim_bytes.is_some_and(|b| b != i.size))
        .filter_map(|s| s.ownership.shard)
        .collect();
    let Some(claims) = i.claims else {
        return Plan {
            hold,
            ..Plan::default()
        };
    };
    let count = |f: &dyn Fn(&Claim) -> bool| {
        u32::try_from(claims.iter().filter(|c| f(c)).count()).unwrap_or(u32::MAX)
    };
    let volumes = count(&|_| true);
    let expanded = count(&|c| c.capacity.is_some_and(|b| b >= i.size));
    let fs_pending = count(&|c| c.fs_pending);
    let smaller_sets: Vec<&SetState> = i
        .sets
        .iter()
        .filter(|s| s.claim_bytes.is_some_and(|b| b < i.size))
        .collect();
    let statefulsets_left = u32::try_from(smaller_sets.len()).unwrap_or(u32::MAX);
    let mut status = VolumeExpansionStatus {
        size: i.size_text.to_string(),
        volumes,
        expanded,
        statefulsets_left,
        refused: None,
        message: String::new(),
    };
    if let Some(why) = shrink(i, claims) {
        status.message = why.clone();
        status.refused = Some(why);
        return Plan {
            hold,
            status: Some(status),
            ..Plan::default()
        };
    }
    let grow: Vec<String> = claims
        .iter()
        .filter(|c| c.requested.is_none_or(|b| b < i.size))
        .map(|c| c.name.clone())
        .collect();
    // One StatefulSet at a time (once the last one deleted is gone), only
    // once every claim asks for the size (so a refusal leaves the templates
    // alone), and only one whose pods are all up.
    let replacing = smaller_sets.iter().any(|s| s.deleting);
    let replace = (grow.is_empty() && i.settled && !replacing)
        .then(|| {
            smaller_sets
                .iter()
                .find(|s| s.replicas == Some(s.current) && s.ready == s.current)
                .and_then(|s| s.ownership.shard)
        })
        .flatten();
    status.message = match i.refused {
        Some(why) if !grow.is_empty() => {
            status.refused = Some(why.to_string());
            format!("the API refused to grow the claims: {why}")
        }
        _ => progress(&status, grow.len(), fs_pending),
    };
    Plan {
        grow,
        replace,
        hold,
        status: Some(status),
    }
}

/// Why the spec's size is refused: it is smaller than a template's or a
/// claim's request.
fn shrink(i: &Inputs<'_>, claims: &[Claim]) -> Option<String> {
    let templates = i.sets.iter().filter_map(|s| s.claim_bytes);
    let requests = claims.iter().filter_map(|c| c.requested);
    let have = templates.chain(requests).filter(|&b| b > i.size).max()?;
    Some(format!(
        "spec.storage.size {} is smaller than the volumes' {}: a volume cannot shrink; set the size back",
        i.size_text,
        human(have)
    ))
}

fn progress(s: &VolumeExpansionStatus, to_grow: usize, fs_pending: u32) -> String {
    if is_done(s) {
        return format!("all {} volumes have {}", s.volumes, s.size);
    }
    let mut parts = vec![format!(
        "{} of {} volumes have {}",
        s.expanded, s.volumes, s.size
    )];
    if to_grow > 0 {
        parts.push(format!("{to_grow} claims to grow"));
    }
    if s.statefulsets_left > 0 {
        parts.push(format!(
            "{} StatefulSets to re-create with the larger claim template (their pods keep running)",
            s.statefulsets_left
        ));
    }
    if fs_pending > 0 {
        parts.push(format!(
            "{fs_pending} wait for the kubelet to grow the file system"
        ));
    } else if s.expanded < s.volumes && to_grow == 0 {
        parts.push("the rest wait for the storage driver".into());
    }
    parts.join("; ")
}

/// Bytes as the largest binary unit that divides them.
fn human(b: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|(_, u)| b >= *u && b.is_multiple_of(*u))
        .map(|(s, u)| format!("{}{s}", b / u))
        .unwrap_or_else(|| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Ownership;

    const GI: u64 = 1 << 30;

    fn set(shard: u32, claim: u64) -> SetState {
        SetState {
            ownership: Ownership {
                shard: Some(shard),
                ..Default::default()
            },
            replicas: Some(2),
            current: 2,
            ready: 2,
            claim_bytes: Some(claim),
            ..Default::default()
        }
    }

    fn claim(name: &str, requested: u64, capacity: u64) -> Claim {
        Claim {
            name: name.into(),
            requested: Some(requested),
            capacity: Some(capacity),
            fs_pending: false,
        }
    }

    fn inputs<'a>(sets: &'a [SetState], claims: &'a [Claim]) -> Inputs<'a> {
        Inputs {
            size: 2 * GI,
            size_text: "2Gi",
            sets,
            claims: Some(claims),
            settled: true,
            refused: None,
        }
    }

    #[test]
    fn claims_grow_first_and_no_statefulset_is_replaced_meanwhile() {
        let sets = [set(0, GI), set(1, GI)];
        let claims = [claim("data-a-0", GI, GI), claim("data-a-1", 2 * GI, GI)];
        let p = plan(&inputs(&sets, &claims));
        assert_eq!(p.grow, vec!["data-a-0".to_string()]);
        assert_eq!(p.replace, None);
        assert_eq!(p.hold, vec![0, 1]);
        let s = p.status.unwrap();
        assert_eq!((s.volumes, s.expanded, s.statefulsets_left), (2, 0, 2));
        assert_eq!(
            s.message,
            "0 of 2 volumes have 2Gi; 1 claims to grow; 2 StatefulSets to re-create with the larger claim template (their pods keep running)"
        );
    }

    #[test]
    fn then_one_statefulset_at_a_time_whose_pods_are_all_up() {
        let mut sets = [set(0, GI), set(1, GI)];
        sets[0].ready = 1;
        let claims = [claim("c0", 2 * GI, 2 * GI), claim("c1", 2 * GI, GI)];
        let p = plan(&inputs(&sets, &claims));
        assert!(p.grow.is_empty());
        assert_eq!(p.replace, Some(1), "shard 0 has a pod not ready");
        let unsettled = Inputs {
            settled: false,
            ..inputs(&sets, &claims)
        };
        assert_eq!(plan(&unsettled).replace, None);
        sets[1].deleting = true;
        let p = plan(&inputs(&sets, &claims));
        assert_eq!(p.replace, None, "one is being replaced: wait for it");
        assert_eq!(p.hold, vec![0, 1]);
    }

    #[test]
    fn done_once_every_volume_has_the_size_and_every_template_asks_for_it() {
        let sets = [set(0, 2 * GI), set(1, 2 * GI)];
        let claims = [claim("c0", 2 * GI, 2 * GI), claim("c1", 2 * GI, 2 * GI)];
        let p = plan(&inputs(&sets, &claims));
        assert_eq!((p.grow.len(), p.replace, p.hold.len()), (0, None, 0));
        let s = p.status.unwrap();
        assert!(is_done(&s));
        assert_eq!(s.message, "all 2 volumes have 2Gi");
        assert!(!needs_claims("2Gi", 2 * GI, &sets, Some(&s)));
        assert!(needs_claims("3Gi", 3 * GI, &sets, Some(&s)), "a new size");
    }

    #[test]
    fn the_storage_driver_and_the_kubelet_are_waited_for() {
        let sets = [set(0, 2 * GI)];
        let mut claims = [claim("c0", 2 * GI, GI), claim("c1", 2 * GI, GI)];
        claims[1].fs_pending = true;
        let s = plan(&inputs(&sets, &claims)).status.unwrap();
        assert!(!is_done(&s));
        assert_eq!(
            s.message,
            "0 of 2 volumes have 2Gi; 1 wait for the kubelet to grow the file system"
        );
        claims[1].fs_pending = false;
        let s = plan(&inputs(&sets, &claims)).status.unwrap();
        assert_eq!(
            s.message,
            "0 of 2 volumes have 2Gi; the rest wait for the storage driver"
        );
        assert!(
            needs_claims("2Gi", 2 * GI, &sets, Some(&s)),
            "not done: keep looking"
        );
    }

    #[test]
    fn a_smaller_size_is_refused_and_nothing_is_touched() {
        let sets = [set(0, 2 * GI)];
        let claims = [claim("c0", 2 * GI, 2 * GI)];
        let i = Inputs {
            size: GI,
            size_text: "1Gi",
            ..inputs(&sets, &claims)
        };
        let p = plan(&i);
        assert_eq!((p.grow.len(), p.replace), (0, None));
        assert_eq!(
            p.hold,
            vec![0],
            "the smaller template is not applied either"
        );
        let s = p.status.unwrap();
        assert_eq!(
            s.refused.as_deref(),
            Some(
                "spec.storage.size 1Gi is smaller than the volumes' 2Gi: a volume cannot shrink; set the size back"
            )
        );
    }

    #[test]
    fn a_refused_patch_is_shown_and_retried_and_blocks_the_templates() {
        let sets = [set(0, GI)];
        let claims = [claim("c0", GI, GI)];
        let i = Inputs {
            refused: Some("claim c0: forbidden"),
            ..inputs(&sets, &claims)
        };
        let p = plan(&i);
        assert_eq!(p.grow, vec!["c0".to_string()]);
        assert_eq!(p.replace, None);
        let s = p.status.unwrap();
        assert_eq!(
            s.message,
            "the API refused to grow the claims: claim c0: forbidden"
        );
        assert!(!is_done(&s));
    }

    #[test]
    fn without_a_listing_only_the_templates_are_held() {
        let sets = [set(0, GI), set(1, 2 * GI)];
        let i = Inputs {
            claims: None,
            ..inputs(&sets, &[])
        };
        assert_eq!(
            plan(&i),
            Plan {
                hold: vec![0],
                ..Plan::default()
            }
        );
        assert!(needs_claims("2Gi", 2 * GI, &sets, None));
        assert!(
            !needs_claims("2Gi", 2 * GI, &[set(0, 2 * GI)], None),
            "steady: no listing"
        );
    }

    #[test]
    fn sizes_read_as_their_unit() {
        assert_eq!(human(2 * GI), "2Gi");
        assert_eq!(human(1536 << 20), "1536Mi");
        assert_eq!(human(1000), "1000");
    }
}
