//! Tollgate's gRPC definitions (tonic 0.14 + prost, generated with `tonic-prost-build` and `protox`): Raft
//! RPCs and cluster admin. Not built yet; arrives with the Raft control plane.
