//! The Dockerfile (for users with Docker) and `make image`
//! (tests/cluster/build-images.sh, no Docker) must build the same product
//! image: both binaries in the same directory, the same user, the same
//! entrypoint. The script also checks its result against these values.

use std::path::Path;

use anyhow::{Context, Result, bail};

fn read(rel: &str) -> Result<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// `KEY=value` from the image script.
fn script_value(script: &str, key: &str) -> Result<String> {
    script
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("{key}= not found in build-images.sh"))
}

/// The arguments of the Dockerfile's last `INSTRUCTION`, outside the build stage.
fn dockerfile_last(dockerfile: &str, instruction: &str) -> Result<String> {
    dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(instruction)?.strip_prefix(' '))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {instruction} in the Dockerfile"))
}

#[test]
fn dockerfile_and_make_image_agree_on_paths_user_and_entrypoint() -> Result<()> {
    let dockerfile = read("Dockerfile")?;
    let script = read("tests/cluster/build-images.sh")?;
    let bin_dir = script_value(&script, "PRODUCT_BIN_DIR")?;
    let user = script_value(&script, "PRODUCT_USER")?;
    let entrypoint = script_value(&script, "PRODUCT_ENTRYPOINT")?;

    // COPY --from=build <...>/redis-operator <...>/redis-webhook /usr/local/bin/
    let copy = dockerfile
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("COPY --from="))
        .context("no COPY --from= in the Dockerfile")?;
    let words: Vec<&str> = copy.split_whitespace().collect();
    let Some((dest, sources)) = words.get(2..).unwrap_or_default().split_last() else {
        bail!("COPY without a destination: {copy}");
    };
    assert_eq!(
        dest.trim_end_matches('/'),
        bin_dir,
        "the Dockerfile copies the binaries to {dest}, make image to {bin_dir}"
    );
    for bin in ["redis-operator", "redis-webhook"] {
        assert!(
            sources.iter().any(|s| s.ends_with(&format!("/{bin}"))),
            "the Dockerfile does not copy {bin}: {copy}"
        );
        assert!(
            script.contains(bin),
            "build-images.sh does not mention {bin}"
        );
    }
    assert_eq!(dockerfile_last(&dockerfile, "USER")?, user);
    let ep: Vec<String> = serde_json::from_str(&dockerfile_last(&dockerfile, "ENTRYPOINT")?)
        .context("the Dockerfile's ENTRYPOINT is not an exec-form JSON array")?;
    assert_eq!(ep, vec![entrypoint.clone()]);
    assert!(
        entrypoint.starts_with(&format!("{bin_dir}/")),
        "{entrypoint} is not in {bin_dir}"
    );
    // The script passes these very values to `umoci config`.
    for flag in [
        "--config.user \"$PRODUCT_USER\"",
        "--config.entrypoint \"$PRODUCT_ENTRYPOINT\"",
    ] {
        assert!(script.contains(flag), "build-images.sh lacks {flag}");
    }
    Ok(())
}
