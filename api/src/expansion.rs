//! Whether a change of `spec.storage.size` may be admitted: growing needs a
//! StorageClass that allows volume expansion (shrinking, or another class,
//! the CRD's own rules refuse).

use serde_json::Value;

/// A StorageClass, as admission needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassFacts {
    pub name: String,
    /// Marked the cluster's default (`storageclass.kubernetes.io/is-default-class`).
    pub default: bool,
    /// `allowVolumeExpansion: true`.
    pub allow_expansion: bool,
}

/// A growth of `spec.storage.size` from one spec to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Growth {
    pub from: String,
    pub to: String,
    /// `spec.storage.storage_class_name`; absent means the default class.
    pub class: Option<String>,
}

/// The growth of the storage size from `old` to `new` (specs), if it grows.
pub fn growth(old: Option<&Value>, new: Option<&Value>) -> Option<Growth> {
    let size = |spec: Option<&Value>| -> Option<String> {
        match spec?.get("storage")?.get("size")? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let (from, to) = (size(old)?, size(new)?);
    let bytes = |q: &str| crate::quantity::bytes(q);
    (bytes(&to)? > bytes(&from)?).then(|| Growth {
        class: new
            .and_then(|s| s.pointer("/storage/storage_class_name"))
            .and_then(Value::as_str)
            .map(str::to_string),
        from,
        to,
    })
}

/// Why `g` cannot be admitted on these classes; `None` when the class
/// allows expansion.
pub fn refusal(g: &Growth, classes: &[ClassFacts]) -> Option<String> {
    let what = format!("spec.storage.size cannot grow from {} to {}", g.from, g.to);
    let class = match &g.class {
        Some(name) => classes.iter().find(|c| &c.name == name).ok_or_else(|| {
            format!("{what}: StorageClass {name} does not exist, so the claims cannot expand")
        }),
        None => classes.iter().find(|c| c.default).ok_or_else(|| {
            format!(
                "{what}: no StorageClass is named and none is the default, so the claims cannot expand"
            )
        }),
    };
    match class {
        Err(why) => Some(why),
        Ok(c) if c.allow_expansion => None,
        Ok(c) => Some(format!(
            "{what}: StorageClass {} does not allow volume expansion (allowVolumeExpansion is not true); an admin can set it if the storage driver can expand volumes",
            c.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(size: Value, class: Option<&str>) -> Value {
        let mut s = json!({"storage": {"size": size}});
        if let Some(c) = class {
            s["storage"]["storage_class_name"] = json!(c);
        }
        s
    }

    fn class(name: &str, default: bool, allow_expansion: bool) -> ClassFacts {
        ClassFacts {
            name: name.into(),
            default,
            allow_expansion,
        }
    }

    #[test]
    fn only_a_larger_size_is_a_growth() {
        let g = growth(
            Some(&spec(json!("1Gi"), Some("fast"))),
            Some(&spec(json!("1536Mi"), Some("fast"))),
        );
        assert_eq!(
            g,
            Some(Growth {
                from: "1Gi".into(),
                to: "1536Mi".into(),
                class: Some("fast".into())
            })
        );
        let same = growth(
            Some(&spec(json!("1Gi"), None)),
            Some(&spec(json!("1024Mi"), None)),
        );
        assert_eq!(same, None);
        let smaller = growth(
            Some(&spec(json!("2Gi"), None)),
            Some(&spec(json!("1Gi"), None)),
        );
        assert_eq!(smaller, None, "the CRD's rule refuses a shrink");
        let plain = growth(
            Some(&spec(json!(1000), None)),
            Some(&spec(json!(2000), None)),
        );
        assert_eq!(plain.map(|g| g.to), Some("2000".into()));
        assert_eq!(
            growth(None, Some(&spec(json!("1Gi"), None))),
            None,
            "a create"
        );
        assert_eq!(
            growth(Some(&json!({})), Some(&json!({}))),
            None,
            "no storage"
        );
    }

    #[test]
    fn the_class_named_or_the_default_must_allow_expansion() {
        let classes = [class("fast", false, true), class("slow", true, false)];
        let grow = |class: Option<&str>| Growth {
            from: "1Gi".into(),
            to: "2Gi".into(),
            class: class.map(str::to_string),
        };
        assert_eq!(refusal(&grow(Some("fast")), &classes), None);
        assert_eq!(
            refusal(&grow(None), &classes).as_deref(),
            Some(
                "spec.storage.size cannot grow from 1Gi to 2Gi: StorageClass slow does not allow volume expansion (allowVolumeExpansion is not true); an admin can set it if the storage driver can expand volumes"
            )
        );
        assert_eq!(
            refusal(&grow(Some("gone")), &classes).as_deref(),
            Some(
                "spec.storage.size cannot grow from 1Gi to 2Gi: StorageClass gone does not exist, so the claims cannot expand"
            )
        );
        assert_eq!(
            refusal(&grow(None), &classes[..1]).as_deref(),
            Some(
                "spec.storage.size cannot grow from 1Gi to 2Gi: no StorageClass is named and none is the default, so the claims cannot expand"
            )
        );
    }
}
