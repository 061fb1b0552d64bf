//! The StorageClasses admission checks a volume expansion against, from a
//! watch when the webhook is given one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use api::expansion::ClassFacts;
use futures::StreamExt;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

/// What the webhook knows of the cluster's StorageClasses.
pub trait StorageClasses: Send + Sync {
    /// Every class, or why they are not known.
    fn classes(&self) -> Result<Vec<ClassFacts>, String>;
}

/// Without `--watch-storage-classes`: nothing is known.
pub struct NotWatched;

impl StorageClasses for NotWatched {
    fn classes(&self) -> Result<Vec<ClassFacts>, String> {
        Err("the webhook does not watch StorageClasses (--watch-storage-classes)".into())
    }
}

/// A watch's cache of the classes.
pub struct Watched {
    store: Store<StorageClass>,
    listed: Arc<AtomicBool>,
}

const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

impl StorageClasses for Watched {
    fn classes(&self) -> Result<Vec<ClassFacts>, String> {
        if !self.listed.load(Ordering::Acquire) {
            return Err("the StorageClasses are not listed yet".into());
        }
        Ok(self.store.state().iter().map(|c| facts(c)).collect())
    }
}

fn facts(c: &StorageClass) -> ClassFacts {
    ClassFacts {
        name: c.name_any(),
        default: c.annotations().get(DEFAULT_CLASS).map(String::as_str) == Some("true"),
        allow_expansion: c.allow_volume_expansion == Some(true),
    }
}

/// Starts the watch; the future runs it until dropped.
pub fn watch(client: Client) -> (Watched, impl Future<Output = ()>) {
    let (store, writer) = reflector::store();
    let listed = Arc::new(AtomicBool::new(false));
    let stream = reflector::reflector(
        writer,
        watcher(Api::<StorageClass>::all(client), watcher::Config::default()),
    )
    .default_backoff();
    let ready = store.clone();
    let flag = listed.clone();
    let run = async move {
        let mark = async move {
            if ready.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
            }
        };
        let drain = stream.for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching StorageClasses");
            }
        });
        futures::join!(mark, drain);
    };
    (Watched { store, listed }, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_annotation_and_the_expansion_flag_are_read() {
        let mut c = StorageClass {
            allow_volume_expansion: Some(true),
            ..Default::default()
        };
        c.metadata.name = Some("fast".into());
        c.metadata.annotations = Some([(DEFAULT_CLASS.to_string(), "true".to_string())].into());
        assert_eq!(
            facts(&c),
            ClassFacts {
                name: "fast".into(),
                default: true,
                allow_expansion: true
            }
        );
        c.allow_volume_expansion = None;
        c.metadata.annotations = None;
        assert!(!facts(&c).default && !facts(&c).allow_expansion);
        assert!(NotWatched.classes().is_err());
    }
}
