#![no_std]
// Exists so that the daemon can name this crate as a build-dependency (cache invalidation);
// the program itself is the `pbxguard` binary target, built for bpfel-unknown-none.
