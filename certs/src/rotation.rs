//! When to renew what: a pure function of the certificates in the Secret,
//! the SANs wanted, and the clock.
//!
//! A CA is replaced in two steps so that no client ever sees a serving
//! certificate it cannot verify: the new CA is first *staged* (added to the
//! trust bundle, which is injected into the webhook configurations), and only
//! once that bundle has been in place for `propagation` does it become the
//! signer and a new serving certificate is issued from it. The previous CA
//! stays in the bundle until it expires or is superseded again.

use time::{Duration, OffsetDateTime};

use crate::issue::CertInfo;

/// Lifetimes and margins of self-managed certificates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotationPolicy {
    pub ca_validity: Duration,
    pub serving_validity: Duration,
    /// Renew a certificate when less than this fraction of its life is left.
    pub renew_fraction: f64,
    /// How long a staged CA must sit in the injected bundle before it signs.
    pub propagation: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            ca_validity: Duration::days(5 * 365),
            serving_validity: Duration::days(365),
            renew_fraction: 1.0 / 3.0,
            propagation: Duration::seconds(30),
        }
    }
}

/// What the Secret and the webhook configurations hold now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The CA that signs serving certificates (absent or unreadable: None).
    pub signer: Option<CertInfo>,
    /// A CA staged for promotion, and when it was staged.
    pub next: Option<(CertInfo, OffsetDateTime)>,
    /// The trust bundle (`ca.crt`).
    pub bundle: Vec<CertInfo>,
    /// The serving certificate, if its key is present too.
    pub serving: Option<CertInfo>,
    /// An admin asked for a CA rotation now.
    pub force: bool,
    /// Both webhook configurations carry exactly this bundle.
    pub bundle_injected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to renew.
    Keep,
    /// No usable CA: make a CA and a serving certificate from scratch.
    Create,
    /// Make a new CA and add it to the bundle, without signing with it yet.
    StageCa,
    /// The staged CA becomes the signer; issue a serving certificate from it.
    PromoteCa,
    /// Issue a new serving certificate from the current signer.
    IssueServing,
    /// Rewrite the bundle: drop expired CAs, make sure the signer is in it.
    RewriteBundle,
}

/// The next step for the Secret.
pub fn decide(
    obs: &Observed,
    wanted_sans: &[String],
    policy: &RotationPolicy,
    now: OffsetDateTime,
) -> Action {
    let Some(signer) = obs.signer.as_ref().filter(|s| s.not_after > now) else {
        return Action::Create;
    };
    let serving_ok = obs.serving.as_ref().is_some_and(|s| {
        s.not_after > now
            && s.signed_by(signer)
            && wanted_sans.iter().all(|w| s.sans.contains(w))
            && s.remaining_fraction(now) >= policy.renew_fraction
    });

    if let Some((_, staged_at)) = &obs.next {
        if obs.bundle_injected && now - *staged_at >= policy.propagation {
            return Action::PromoteCa;
        }
        // Waiting for the bundle to spread; a broken serving cert can't wait.
        return if serving_ok {
            Action::Keep
        } else {
            Action::IssueServing
        };
    }
    if obs.force || signer.remaining_fraction(now) < policy.renew_fraction {
        return Action::StageCa;
    }
    if !serving_ok {
        return Action::IssueServing;
    }
    if pruned_bundle(&obs.bundle, signer, None, now) != obs.bundle {
        return Action::RewriteBundle;
    }
    Action::Keep
}

/// The bundle to publish: `next` (if staged) and the signer first, then
/// the other unexpired CAs, at most one of them (the predecessor).
pub fn pruned_bundle(
    bundle: &[CertInfo],
    signer: &CertInfo,
    next: Option<&CertInfo>,
    now: OffsetDateTime,
) -> Vec<CertInfo> {
    let mut out: Vec<CertInfo> = next.into_iter().cloned().collect();
    if !out.iter().any(|c| c.der == signer.der) {
        out.push(signer.clone());
    }
    if let Some(prev) = bundle
        .iter()
        .find(|c| c.not_after > now && !out.iter().any(|o| o.der == c.der))
    {
        // With a CA staged, signer and next already make the overlap.
        if next.is_none() {
            out.push(prev.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{KeyMaterial, issue_serving, new_ca};

    fn sans() -> Vec<String> {
        vec!["svc.ns.svc".into(), "127.0.0.1".into()]
    }

    fn info(k: &KeyMaterial) -> CertInfo {
        CertInfo::parse(&k.cert_pem, "test").unwrap()
    }

    struct Fixture {
        now: OffsetDateTime,
        ca: KeyMaterial,
        serving: KeyMaterial,
    }

    fn fixture(ca_days: i64, serving_days: i64) -> Fixture {
        let now = OffsetDateTime::now_utc();
        let ca = new_ca("ca", Duration::days(ca_days), now).unwrap();
        let serving = issue_serving(&ca, &sans(), Duration::days(serving_days), now).unwrap();
        Fixture { now, ca, serving }
    }

    fn observed(f: &Fixture) -> Observed {
        Observed {
            signer: Some(info(&f.ca)),
            next: None,
            bundle: vec![info(&f.ca)],
            serving: Some(info(&f.serving)),
            force: false,
            bundle_injected: true,
        }
    }

    fn decide_at(obs: &Observed, now: OffsetDateTime) -> Action {
        decide(obs, &sans(), &RotationPolicy::default(), now)
    }

    #[test]
    fn empty_secret_is_created() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(decide_at(&Observed::default(), now), Action::Create);
    }

    #[test]
    fn fresh_certificates_are_kept() {
        let f = fixture(1000, 300);
        assert_eq!(decide_at(&observed(&f), f.now), Action::Keep);
    }

    #[test]
    fn serving_is_renewed_when_a_third_of_its_life_is_left() {
        let f = fixture(1000, 300);
        let obs = observed(&f);
        assert_eq!(decide_at(&obs, f.now + Duration::days(190)), Action::Keep);
        assert_eq!(
            decide_at(&obs, f.now + Duration::days(210)),
            Action::IssueServing
        );
        assert_eq!(
            decide_at(&obs, f.now + Duration::days(400)),
            Action::IssueServing
        );
    }

    #[test]
    fn serving_missing_sans_or_foreign_signer_is_reissued() {
        let f = fixture(1000, 300);
        let mut obs = observed(&f);
        let wanted = vec!["other.ns.svc".to_string()];
        assert_eq!(
            decide(&obs, &wanted, &RotationPolicy::default(), f.now),
            Action::IssueServing
        );
        let other = fixture(1000, 300);
        obs.serving = Some(info(&other.serving));
        assert_eq!(decide_at(&obs, f.now), Action::IssueServing);
        obs.serving = None;
        assert_eq!(decide_at(&obs, f.now), Action::IssueServing);
    }

    #[test]
    fn ca_near_expiry_is_staged_then_promoted_after_propagation() {
        let f = fixture(300, 100);
        let mut obs = observed(&f);
        let later = f.now + Duration::days(210);
        assert_eq!(decide_at(&obs, later), Action::StageCa);

        let next = new_ca("next", Duration::days(300), later).unwrap();
        obs.next = Some((info(&next), later));
        obs.bundle_injected = false;
        // Serving still fine for a while (issued at day 0 for 100 days is
        // expired here, so use a fresh one).
        obs.serving = Some(info(
            &issue_serving(&f.ca, &sans(), Duration::days(300), later).unwrap(),
        ));
        assert_eq!(decide_at(&obs, later + Duration::hours(1)), Action::Keep);
        obs.bundle_injected = true;
        assert_eq!(decide_at(&obs, later + Duration::seconds(5)), Action::Keep);
        assert_eq!(
            decide_at(&obs, later + Duration::seconds(31)),
            Action::PromoteCa
        );
    }

    #[test]
    fn force_stages_a_new_ca_even_when_fresh() {
        let f = fixture(1000, 300);
        let mut obs = observed(&f);
        obs.force = true;
        assert_eq!(decide_at(&obs, f.now), Action::StageCa);
    }

    #[test]
    fn expired_signer_starts_over() {
        let f = fixture(10, 5);
        assert_eq!(
            decide_at(&observed(&f), f.now + Duration::days(11)),
            Action::Create
        );
    }

    #[test]
    fn bundle_keeps_signer_and_one_unexpired_predecessor() {
        let now = OffsetDateTime::now_utc();
        let old = info(&new_ca("old", Duration::days(10), now).unwrap());
        let older = info(&new_ca("older", Duration::days(20), now).unwrap());
        let cur = info(&new_ca("cur", Duration::days(100), now).unwrap());
        let b = pruned_bundle(&[cur.clone(), old.clone(), older.clone()], &cur, None, now);
        assert_eq!(b, vec![cur.clone(), old.clone()]);
        // Once the predecessor expires it is dropped.
        let b = pruned_bundle(&[cur.clone(), old], &cur, None, now + Duration::days(15));
        assert_eq!(b, vec![cur.clone()]);
        // A staged CA goes first, beside the signer.
        let next = info(&new_ca("next", Duration::days(100), now).unwrap());
        let b = pruned_bundle(std::slice::from_ref(&cur), &cur, Some(&next), now);
        assert_eq!(b, vec![next, cur]);
    }

    #[test]
    fn stale_bundle_is_rewritten() {
        let f = fixture(1000, 300);
        let mut obs = observed(&f);
        obs.bundle = vec![];
        assert_eq!(decide_at(&obs, f.now), Action::RewriteBundle);
    }
}
