//! Converts wall-clock ban expiries to the kernel's boot-time clock.
//!
//! The XDP program compares `bpf_ktime_get_boot_ns()` with the ban's expiry, which lets a
//! ban end on time with no daemon around; boot time also counts suspend, unlike monotonic.

use std::time::SystemTime;

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds since boot now.
pub fn boot_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Boot-time nanoseconds at which wall-clock `expires` happens; 0 (permanent) for `None`.
/// An expiry already in the past maps to 1, which the program treats as expired.
pub fn expiry_to_boot_ns(expires: Option<SystemTime>) -> u64 {
    let Some(expires) = expires else { return 0 };
    match expires.duration_since(SystemTime::now()) {
        Ok(left) => boot_ns()
            .saturating_add(left.as_nanos().min(u64::MAX as u128) as u64)
            .max(1),
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::units::{BanDuration, MAX_DURATION};

    #[test]
    fn permanent_is_zero_and_past_is_expired() {
        assert_eq!(expiry_to_boot_ns(None), 0);
        assert_eq!(expiry_to_boot_ns(Some(SystemTime::UNIX_EPOCH)), 1);
    }

    proptest::proptest! {
        /// Every ban length the parsers accept (1 s to 100 years) fits the program's u64
        /// nanoseconds without saturating, and is never read as permanent (0) or expired (1).
        #[test]
        fn every_accepted_length_fits_the_boot_clock(secs in 1..=MAX_DURATION.as_secs()) {
            let before = boot_ns();
            let expiry = BanDuration::For(Duration::from_secs(secs)).expiry_from(SystemTime::now());
            let at = expiry_to_boot_ns(expiry);
            let after = boot_ns();
            proptest::prop_assert!(at > before && at < u64::MAX, "{at}");
            proptest::prop_assert!(at <= after + secs * 1_000_000_000, "{at} vs {after}");
        }
    }

    #[test]
    fn future_expiry_is_ahead_of_boot_clock() {
        let at = expiry_to_boot_ns(Some(SystemTime::now() + Duration::from_secs(60)));
        let now = boot_ns();
        assert!(
            at > now + 59_000_000_000 && at <= now + 60_000_000_000,
            "{at} vs {now}"
        );
    }
}
