//! Locating the control-plane binaries built by `tests/cluster/build-tools.sh`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Environment variable naming the directory that holds the binaries.
pub const TOOLS_ENV: &str = "CLUSTER_TOOLS_BIN";

/// Every binary the harness runs.
pub const BINARIES: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "metrics-server",
    "helm",
    "promtool",
    "prometheus",
    "redis_exporter",
    "kube-router",
];

/// The directory of control-plane binaries.
#[derive(Debug, Clone)]
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Reads [`TOOLS_ENV`] and checks that every binary is there, so a
    /// missing one fails up front with a clear message, never mid-test.
    pub fn from_env() -> Result<Self> {
        let Some(dir) = std::env::var_os(TOOLS_ENV) else {
            bail!(
                "{TOOLS_ENV} is not set. Build the control plane with `make cluster-tools` \
                 (tests/cluster/build-tools.sh) and set {TOOLS_ENV} to the directory it prints"
            );
        };
        let tools = Self::new(dir)?;
        for name in BINARIES {
            tools.path(name)?;
        }
        Ok(tools)
    }

    /// Uses `dir` as the binary directory.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let dir = std::fs::canonicalize(&dir).with_context(|| {
            format!(
                "{TOOLS_ENV}={} is not a directory; run `make cluster-tools`",
                dir.display()
            )
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of binary `name`, or an error naming it if it is missing.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(p),
            _ => bail!(
                "{name} not found in {} ({TOOLS_ENV}); run `make cluster-tools` to build it",
                self.dir.display()
            ),
        }
    }
}

/// Version of a Go module pinned in `tests/cluster/versions.env`
/// (e.g. `KWOK_VERSION`).
pub fn pinned_version(key: &str) -> Result<String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/versions.env");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("{key} not set in {}", file.display()))
}

/// The extracted source of Go module `module@version` in the module cache,
/// where `go install` left it while building the tools.
pub fn go_module_dir(module: &str, version: &str) -> Result<PathBuf> {
    let mut caches: Vec<PathBuf> = Vec::new();
    if let Some(c) = std::env::var_os("GOMODCACHE").filter(|c| !c.is_empty()) {
        caches.push(c.into());
    }
    if let Ok(out) = std::process::Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output()
        && out.status.success()
    {
        let c = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !c.is_empty() {
            caches.push(c.into());
        }
    }
    if let Some(gopath) = std::env::var_os("GOPATH").filter(|c| !c.is_empty()) {
        for p in std::env::split_paths(&gopath) {
            caches.push(p.join("pkg/mod"));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        caches.push(Path::new(&home).join("go/pkg/mod"));
    }
    // The module cache escapes upper-case letters as `!` + lower case.
    let escaped: String = module
        .chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['!', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect();
    let rel = format!("{escaped}@{version}");
    caches
        .iter()
        .map(|c| c.join(&rel))
        .find(|d| d.is_dir())
        .with_context(|| {
            format!(
                "Go module {module}@{version} not found in the module cache (looked in {caches:?}); \
                 run `make cluster-tools` or `go mod download {module}@{version}`"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_is_named_with_the_fix() {
        let dir = std::env::temp_dir();
        let tools = Tools::new(&dir).expect("temp dir exists");
        let err = tools.path("no-such-kube-binary").unwrap_err().to_string();
        assert!(err.contains("no-such-kube-binary not found"), "{err}");
        assert!(err.contains("make cluster-tools"), "{err}");
    }

    #[test]
    fn missing_dir_says_how_to_build() {
        let err = Tools::new("/nonexistent/tools").unwrap_err().to_string();
        assert!(err.contains("make cluster-tools"), "{err}");
    }

    #[test]
    fn reads_pinned_versions() {
        assert!(pinned_version("KWOK_VERSION").unwrap().starts_with('v'));
        assert!(pinned_version("NO_SUCH_VERSION").is_err());
    }
}
