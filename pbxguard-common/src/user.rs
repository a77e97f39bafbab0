//! User-side trait impls: lets the daemon read and write these types in BPF maps.

use crate::{BanEntry, Bucket, Counter, DetectionEvent, PortKey, Settings, Signature};

// SAFETY: both are #[repr(C)], contain only u64 fields and have no padding.
unsafe impl aya::Pod for BanEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for Counter {}
// SAFETY: #[repr(C)], plain integers, explicit padding fields (no implicit padding).
unsafe impl aya::Pod for PortKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Settings {}
// SAFETY: as above.
unsafe impl aya::Pod for Bucket {}
// SAFETY: as above (eight u64).
unsafe impl aya::Pod for Signature {}
// SAFETY: as above (4 + 4 + 16 + 2 + 2 + 4 bytes).
unsafe impl aya::Pod for DetectionEvent {}
