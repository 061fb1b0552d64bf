//! Prints the RedisCluster CRD, or writes it to the path given as argument.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yaml = api::crd::crd_yaml()?;
    match std::env::args().nth(1) {
        Some(path) => std::fs::write(&path, yaml).map_err(|e| format!("writing {path}: {e}"))?,
        None => print!("{yaml}"),
    }
    Ok(())
}
