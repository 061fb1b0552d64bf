//! Redis Cluster topology: observe over RESP, plan (pure), act.
