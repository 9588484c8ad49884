//! Cross-crate scenarios, one integration binary (compiled once).
//!
//! Every test drives the real `cairn` binary in its own temporary data directory and checks the
//! results on disk, through the store library where it needs to look inside.

mod anvil;
mod browser;
mod cli;
mod devnet;
mod gated;
mod gateway;
mod leases;
mod mtls;
mod names;
mod net;
mod private;
mod repair;
mod resume;
mod tensors;
mod usage;
mod util;
mod vectors;
