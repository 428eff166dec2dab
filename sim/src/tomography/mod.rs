//! Network tomography evaluation: replay measured-latency observation
//! streams through cairn's Vivaldi clients and score the coordinates
//! against the full matrix, in the same format as the Serf reference
//! harness (`shared/anchors/serf-vivaldi`).
//!
//! [`accuracy`] holds the same kind of score for a simulated run: how well
//! the coordinates predicted the model's RTTs, each virtual second and
//! pair by pair at the end, as both engines measure it.

pub mod accuracy;
pub mod algorithm;
pub mod matrix;
pub mod pyrandom;
pub mod replay;
pub mod report;
pub mod stream;
pub mod study;

pub use accuracy::{Accuracy, PairError};
pub use matrix::{Matrix, MatrixError, Pair};
pub use replay::{percentile, replay, time_per_update, to_csv, Checkpoint, Replay};
pub use stream::{generate, Noise, Observation, Stream, StreamError};
