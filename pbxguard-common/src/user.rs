//! User-side trait impls: lets the daemon read and write these types in BPF maps.

use crate::{BanEntry, Counter};

// SAFETY: both are #[repr(C)], contain only u64 fields and have no padding.
unsafe impl aya::Pod for BanEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for Counter {}
