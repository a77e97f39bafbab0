//! The ban sets `ban4` / `ban6`: interval sets holding the disjoint ranges that
//! [`BanTable::ranges`] computes, each with its own timeout, so nested bans behave exactly
//! like the XDP LPM tries. A change is a diff against what the sets hold, applied as one
//! transaction per bounded chunk.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use serde_json::{Value, json};

use super::{BATCH, FAMILY, TABLE, run};
use crate::enforce::{
    EnforceError,
    overlap::{BanTable, Expiry, Family, Range},
};

/// What the kernel's ban sets hold: ranges and their expiries.
pub type Held = BTreeMap<Range, Expiry>;

fn set_of(family: Family) -> &'static str {
    match family {
        Family::V4 => "ban4",
        Family::V6 => "ban6",
    }
}

/// The JSON value of a range: an address, or a `range` of two.
fn range_value(r: &Range) -> Value {
    if r.first == r.last {
        json!(r.addr(r.first).to_string())
    } else {
        json!({"range": [r.addr(r.first).to_string(), r.addr(r.last).to_string()]})
    }
}

/// Whole seconds left, rounded up (a ban never ends early), at least 1.
pub fn timeout(expires: Expiry) -> Option<u64> {
    expires.map(|t| {
        let left = t
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        (left.as_millis().div_ceil(1000) as u64).max(1)
    })
}

fn element(set: &str, elems: Vec<Value>) -> Value {
    json!({"family": FAMILY, "table": TABLE, "name": set, "elem": elems})
}

/// Makes the sets hold `table.ranges()`, given they hold `held`; `held` follows every chunk
/// that was applied, so it stays true when a later chunk fails.
pub fn sync(table: &BanTable, held: &mut Held) -> Result<(), EnforceError> {
    let want = table.ranges();
    // Each changed range: delete the old element, add the new; both in the same chunk.
    let mut ops: Vec<(Range, Option<Expiry>, Option<Expiry>)> = Vec::new();
    for (range, old) in held.iter() {
        match want.get(range) {
            Some(new) if new == old => {}
            Some(new) => ops.push((*range, Some(*old), Some(*new))),
            None => ops.push((*range, Some(*old), None)),
        }
    }
    for (range, new) in &want {
        if !held.contains_key(range) {
            ops.push((*range, None, Some(*new)));
        }
    }
    for chunk in ops.chunks(BATCH) {
        let mut commands = Vec::new();
        for family in [Family::V4, Family::V6] {
            let ours = || chunk.iter().filter(move |(r, ..)| r.family == family);
            let deleted: Vec<Value> = ours()
                .filter(|(_, old, _)| old.is_some())
                .map(|(r, ..)| range_value(r))
                .collect();
            if !deleted.is_empty() {
                commands.push(json!({"delete": {"element": element(set_of(family), deleted)}}));
            }
            let added: Vec<Value> = ours()
                .filter_map(|(r, _, new)| {
                    let new = (*new)?;
                    Some(match timeout(new) {
                        Some(secs) => json!({"elem": {"val": range_value(r), "timeout": secs}}),
                        None => range_value(r),
                    })
                })
                .collect();
            if !added.is_empty() {
                commands.push(json!({"add": {"element": element(set_of(family), added)}}));
            }
        }
        run::apply(commands)?;
        for (range, _, new) in chunk {
            match new {
                Some(e) => held.insert(*range, *e),
                None => held.remove(range),
            };
        }
    }
    Ok(())
}

/// Reads what the ban sets hold now (expiries from the kernel's remaining time).
pub fn read_held() -> Result<Held, EnforceError> {
    let mut held = Held::new();
    for family in [Family::V4, Family::V6] {
        let objects = run::list(&["list", "set", FAMILY, TABLE, set_of(family)])?;
        for elem in objects
            .iter()
            .filter_map(|o| o["set"]["elem"].as_array())
            .flatten()
        {
            if let Some((range, expiry)) = parse_held(elem) {
                held.insert(range, expiry);
            }
        }
    }
    Ok(held)
}

/// One listed element: its range and expiry (`expires` seconds from now; none: permanent).
pub fn parse_held(value: &Value) -> Option<(Range, Expiry)> {
    if let Some(inner) = value.get("elem") {
        let (range, _) = parse_held(&inner["val"])?;
        let expiry = inner["expires"]
            .as_u64()
            .or_else(|| inner["timeout"].as_u64())
            .map(|s| SystemTime::now() + Duration::from_secs(s));
        return Some((range, expiry));
    }
    let range = match value {
        Value::String(addr) => {
            Range::of(&ipnet::IpNet::from(addr.parse::<std::net::IpAddr>().ok()?))
        }
        Value::Object(map) => {
            if let Some(prefix) = map.get("prefix") {
                let addr: std::net::IpAddr = prefix["addr"].as_str()?.parse().ok()?;
                Range::of(&ipnet::IpNet::new(addr, prefix["len"].as_u64()? as u8).ok()?)
            } else {
                let ends = map.get("range")?.as_array()?;
                let first = Range::of(&ipnet::IpNet::from(
                    ends.first()?.as_str()?.parse::<std::net::IpAddr>().ok()?,
                ));
                let last = Range::of(&ipnet::IpNet::from(
                    ends.get(1)?.as_str()?.parse::<std::net::IpAddr>().ok()?,
                ));
                Range {
                    last: last.last,
                    ..first
                }
            }
        }
        _ => return None,
    };
    Some((range, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{BanDuration, MAX_DURATION, parse_net};

    #[test]
    fn elements_round_trip_through_nft_json() {
        for text in [
            "198.51.100.7",
            "198.51.100.0/24",
            "2001:db8::1",
            "2001:db8::/48",
        ] {
            let r = Range::of(&parse_net(text).unwrap());
            assert_eq!(parse_held(&range_value(&r)), Some((r, None)));
            let timed = json!({"elem": {"val": range_value(&r), "timeout": 60, "expires": 59}});
            assert_eq!(parse_held(&timed).unwrap().0, r);
        }
        let prefix = json!({"prefix": {"addr": "10.0.0.0", "len": 25}});
        assert_eq!(
            parse_held(&prefix).unwrap().0,
            Range::of(&parse_net("10.0.0.0/25").unwrap())
        );
    }

    proptest::proptest! {
        /// Every accepted ban length becomes a timeout in whole seconds that nftables takes:
        /// the kernel refuses more than about 584 years of milliseconds (ERANGE).
        #[test]
        fn every_accepted_length_is_a_valid_timeout(secs in 1..=MAX_DURATION.as_secs()) {
            let expiry = BanDuration::For(Duration::from_secs(secs)).expiry_from(SystemTime::now());
            let t = timeout(expiry).unwrap();
            proptest::prop_assert!(t >= 1 && t <= secs, "{t} for {secs}");
            proptest::prop_assert!(t.checked_mul(1000).is_some_and(|ms| ms < u64::MAX / 1_000_000));
        }
    }

    #[test]
    fn timeouts_round_up_and_permanent_has_none() {
        assert_eq!(timeout(None), None);
        assert_eq!(timeout(Some(SystemTime::UNIX_EPOCH)), Some(1));
        let t = timeout(Some(SystemTime::now() + Duration::from_millis(90_500))).unwrap();
        assert!((90..=91).contains(&t), "{t}");
    }
}
