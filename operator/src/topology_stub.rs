//! TEMPORARY stand-in until the topology module lands.
#![allow(dead_code)]
pub struct Member {
    pub shard: u32,
    pub ordinal: u32,
    pub addr: std::net::SocketAddr,
}
pub struct Desired {
    pub shards: u32,
    pub nodes_per_shard: u32,
}
#[derive(Default)]
pub struct StepOptions {
    pub max_slots_per_step: u32,
}
pub struct Report {
    pub converged: bool,
    pub actions_taken: Vec<String>,
    pub slots_moved: u32,
    pub keys_moved: u64,
    pub slots_left_to_move: u32,
    pub message: String,
    pub removable_shards: Vec<u32>,
    pub replicas_removable: bool,
}
pub async fn step(_m: &[Member], _d: &Desired, _o: &StepOptions) -> Result<Report, String> {
    Err("stub".into())
}
