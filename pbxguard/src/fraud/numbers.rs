//! Dialled-number classification for toll-fraud detection: turns the destination of a call
//! record into a risk [`Class`], the E.164 number and the destination country, so that the
//! fraud rules can count calls per extension and class.
//!
//! Numbering-plan data is built in and small on purpose (no libphonenumber):
//!
//! - `COUNTRY_CODES`: every ITU-T E.164 country calling code in use, mapped to its
//!   ISO 3166-1 alpha-2 code, plus the longer prefixes that decide the country inside a
//!   shared code: the NANP area codes (`+1`) of Canada and of the Caribbean and Pacific
//!   members (every other `+1` number is `US`), Kazakhstan inside `+7` (`76`, `77`),
//!   Guernsey, Jersey and the Isle of Man inside `+44`, Åland, Mayotte, Vatican City, the
//!   Caribbean Netherlands and the Cocos and Christmas Islands. Ascension (`+247`) is `AC`,
//!   an ISO "exceptionally reserved" code, because it shares no code with Saint Helena
//!   (`SH`, `+290`); Diego Garcia (`+246`) is `IO` (British Indian Ocean Territory). Kosovo
//!   (`+383`) is `XK`, the user-assigned code in common use.
//! - The non-geographic codes (international freephone `800` and shared-cost `808`,
//!   Inmarsat `870`, `878`, GMSS satellite `881`, international networks `882` and `883`,
//!   `888`, international premium rate `979`) have the pseudo code `XS` ("satellite and
//!   international networks", from the user-assigned `X?` range, never a real country).
//! - The built-in high-risk list, `HIGH_RISK`: destinations commonly abused for
//!   international revenue share fraud (IRSF), compiled from public operator and CFCA
//!   advisories. Small island states and territories of the Pacific and South Atlantic,
//!   several African and European destinations with high termination rates, the Caribbean
//!   NANP members (dialled like a domestic US or Canadian number, the classic "one-ring"
//!   scam) and all of `XS`. [`DialPlan::high_risk`] adds to it, [`DialPlan::not_high_risk`]
//!   removes from it; the most specific match wins.
//!
//! A home number is one under the home country's calling code. Under the shared codes `+1`
//! and `+7` the country decides instead (a US PBX calling Jamaica or Canada calls abroad;
//! Puerto Rico, the US Virgin Islands, Guam, the Northern Marianas and American Samoa count
//! as the US); under other codes the territories are home (a UK PBX calling Jersey).

use serde::{Deserialize, Serialize};

/// Risk class of a dialled number: the fraud rules keep limits per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// An extension or feature code: the call never leaves the PBX.
    Internal,
    /// A number in the home country at normal rates.
    Domestic,
    /// A foreign number not on the high-risk list.
    International,
    /// A destination commonly abused for revenue share fraud.
    HighRisk,
    /// A home-country premium-rate number (the money goes to whoever holds it).
    Premium,
}

impl Class {
    /// Every class that leaves the building (all but Internal), in order: the classes an
    /// outbound-call limit can name.
    pub const OUTBOUND: [Class; 4] = [
        Class::Domestic,
        Class::International,
        Class::HighRisk,
        Class::Premium,
    ];

    /// The config and log name: "internal", "domestic", "international", "high_risk",
    /// "premium" (the same as the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Internal => "internal",
            Class::Domestic => "domestic",
            Class::International => "international",
            Class::HighRisk => "high_risk",
            Class::Premium => "premium",
        }
    }
}

/// How numbers are dialled here, so that "030 1234567" and "0049 30 1234567" are the same
/// domestic number and "1 876 ..." from a US PBX is Jamaica. Part of the `[fraud]` config
/// section (flattened into it by the caller with `#[serde(flatten)]`, so field names are
/// config keys; the caller denies unknown fields).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct DialPlan {
    /// ISO 3166-1 alpha-2 code of the PBX's country, e.g. "DE". Required to recognise
    /// domestic and premium numbers; "" = unset: then every number with an international
    /// prefix ("+", "00" or the configured ones) is foreign and long numbers without one are
    /// `Domestic` with no E.164 form.
    pub home_country: String,
    /// Outbound-route digits removed first, longest match first (e.g. ["9"] for "dial 9 for
    /// an outside line").
    pub strip_prefixes: Vec<String>,
    /// International access prefixes; empty = the home country's usual ones (NANP "011",
    /// AU "0011", JP "010", KR "001"/"002"/"00700", RU/BY/KZ "810" and "00", all others
    /// "00"); "+" is always accepted.
    pub international_prefix: Vec<String>,
    /// Trunk (national) prefix; None = the home country's usual one ("1" for NANP, "8" for
    /// RU/BY/KZ, "06" for HU, none for AD BH BZ CR CY CZ DK EE ES FO GL GR GT HK HN IS IT
    /// KW LI LU LV MC MO MT MX NI NO OM PA PL PT QA SG SM SV VA, "0" for all others);
    /// "" = this plan has no trunk prefix.
    pub national_prefix: Option<String>,
    /// Premium-rate prefixes of the national significant number (after the trunk prefix),
    /// e.g. ["9"] in GB. Empty = the built-in default of the home country: NANP
    /// ["900", "976"], AT ["900", "901", "930", "931", "939"], AU ["190"], BE ["90"],
    /// CH ["900", "901", "906"], DE ["900", "137"], DK ["90"], ES ["803", "806", "807",
    /// "905"], FR ["89"], GB ["9"], IT ["89"], NL ["900", "906", "909"], PL ["70"],
    /// SE ["900", "939", "944"], none elsewhere.
    pub premium_prefixes: Vec<String>,
    /// Extra high-risk destinations: ISO codes ("CU") or E.164 prefixes with "+" ("+881",
    /// "+1876").
    pub high_risk: Vec<String>,
    /// Destinations removed from the built-in high-risk list (ISO codes or "+prefix"), for
    /// a business that really calls them. The more specific entry wins: "+1876" here beats
    /// the built-in "JM"; on a tie with an entry of `high_risk`, `high_risk` wins.
    pub not_high_risk: Vec<String>,
    /// Numbers of at most this many characters (after stripping) that do not start with an
    /// international or trunk prefix are internal (extensions, feature codes). Default 6.
    pub internal_max_digits: usize,
}

impl Default for DialPlan {
    fn default() -> Self {
        DialPlan {
            home_country: String::new(),
            strip_prefixes: Vec::new(),
            international_prefix: Vec::new(),
            national_prefix: None,
            premium_prefixes: Vec::new(),
            high_risk: Vec::new(),
            not_high_risk: Vec::new(),
            internal_max_digits: 6,
        }
    }
}

impl DialPlan {
    /// Checks serde cannot express, so that a typo fails at load time instead of silently
    /// misclassifying calls: returns the config key and a message saying what to do.
    /// An empty `home_country` is accepted (unset); the caller decides whether it is needed.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let home = self.home_country.as_str();
        if !home.is_empty() && (home == PSEUDO || !is_known_code(home)) {
            return Err((
                "fraud.home_country",
                format!(
                    "{home:?} is not a known ISO 3166-1 alpha-2 country code: use two capital \
                     letters, e.g. \"DE\" or \"US\""
                ),
            ));
        }
        for (key, list) in [
            ("fraud.strip_prefixes", &self.strip_prefixes),
            ("fraud.premium_prefixes", &self.premium_prefixes),
        ] {
            if let Some(bad) = list.iter().find(|p| !is_digits(p)) {
                return Err((
                    key,
                    format!("{bad:?} is not a prefix: use digits only, e.g. \"9\""),
                ));
            }
        }
        if let Some(bad) = self
            .international_prefix
            .iter()
            .find(|p| *p != "+" && !is_digits(p.strip_prefix('+').unwrap_or(p)))
        {
            return Err((
                "fraud.international_prefix",
                format!("{bad:?} is not a prefix: use digits, e.g. \"00\" or \"011\""),
            ));
        }
        if let Some(bad) = &self.national_prefix
            && !bad.is_empty()
            && !is_digits(bad)
        {
            return Err((
                "fraud.national_prefix",
                format!(
                    "{bad:?} is not a prefix: use digits, e.g. \"0\", or \"\" for a plan \
                     without a trunk prefix"
                ),
            ));
        }
        for (key, list) in [
            ("fraud.high_risk", &self.high_risk),
            ("fraud.not_high_risk", &self.not_high_risk),
        ] {
            if let Some(bad) = list.iter().find(|entry| match entry.strip_prefix('+') {
                Some(digits) => !is_digits(digits),
                None => !is_known_code(entry),
            }) {
                return Err((
                    key,
                    format!(
                        "{bad:?} is neither an ISO 3166-1 alpha-2 code (\"CU\", or \"XS\" for \
                         the satellite and international networks) nor an E.164 prefix with \
                         \"+\" (\"+881\", \"+1876\")"
                    ),
                ));
            }
        }
        if let Some(both) = self
            .not_high_risk
            .iter()
            .find(|entry| self.high_risk.contains(entry))
        {
            return Err((
                "fraud.not_high_risk",
                format!("{both:?} is also in high_risk: remove it from one of the two lists"),
            ));
        }
        if !(1..=15).contains(&self.internal_max_digits) {
            return Err((
                "fraud.internal_max_digits",
                format!(
                    "{} is out of range: use 1 to 15 (the length of the longest extension or \
                     feature code)",
                    self.internal_max_digits
                ),
            ));
        }
        Ok(())
    }
}

/// A dialled number, classified: what the fraud rules count and what an alert shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Classified {
    /// The number as dialled, made safe to log: the user part of a SIP or tel URI (before
    /// any '@' or ';'), only digits, '+', '*' and '#' kept, at most 40 characters.
    pub dialled: String,
    /// Full E.164 digits (country code first, no "+"), when it leaves the building (None for
    /// `Internal`, and for `Domestic` when the plan has no home country).
    pub e164: Option<String>,
    /// ISO 3166-1 alpha-2 of the destination (or "XS", see the module doc), when known.
    pub country: Option<&'static str>,
    /// The risk class.
    pub class: Class,
}

/// Classifies a dialled number (destination field of a call record) under `plan`. Never
/// panics; input beyond 40 kept characters is ignored.
pub fn classify(dialled: &str, plan: &DialPlan) -> Classified {
    let dialled = sanitise(dialled);
    let home = home_of(plan);
    let number = strip(&dialled, &plan.strip_prefixes);

    let intl_defaults = if plan.international_prefix.is_empty() {
        default_international(home.as_ref())
    } else {
        &[]
    };
    let intl = plan
        .international_prefix
        .iter()
        .map(String::as_str)
        .chain(intl_defaults.iter().copied())
        .chain(["+"]);
    if let Some(len) = longest_match(number, intl) {
        let digits = only_digits(number.get(len..).unwrap_or(""));
        if !digits.is_empty() {
            return destination(dialled, digits, plan, home.as_ref());
        }
    }

    let long = number.len() > plan.internal_max_digits;
    if long
        && let Some(trunk) = national_prefix(plan, home.as_ref())
        && !trunk.is_empty()
        && let Some(rest) = number.strip_prefix(trunk)
    {
        let digits = only_digits(rest);
        if !digits.is_empty() {
            return national(dialled, &digits, plan, home.as_ref());
        }
    }

    let digits = only_digits(number);
    if !long || number.contains(['*', '#']) || digits.is_empty() {
        return Classified {
            dialled,
            e164: None,
            country: None,
            class: Class::Internal,
        };
    }
    national(dialled, &digits, plan, home.as_ref())
}

/// Longest-prefix lookup of E.164 digits (a leading "+" is tolerated), so that a number's
/// country is known without a full numbering plan: (the matched table prefix, i.e. the
/// country calling code digits incl. the NANP area code or other digits where they decide
/// the country, ISO alpha-2).
pub fn country_of(e164: &str) -> Option<(&'static str, &'static str)> {
    let e164 = e164.strip_prefix('+').unwrap_or(e164);
    let digits = e164
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count()
        .min(MAX_PREFIX);
    (1..=digits)
        .rev()
        .find_map(|len| e164.get(..len).and_then(exact_code))
}

/// Whether an E.164 number is in the (built-in + plan-adjusted) high-risk list: the
/// destinations a fraudster earns most from, which a PBX should rarely call.
pub fn is_high_risk(e164: &str, plan: &DialPlan) -> bool {
    let e164 = e164.strip_prefix('+').unwrap_or(e164);
    let country = country_of(e164);
    // How specific an entry's match is: the length of the matched prefix.
    let specificity = |entry: &String| -> Option<usize> {
        let entry = entry.trim();
        match entry.strip_prefix('+') {
            Some(prefix) => {
                (!prefix.is_empty() && e164.starts_with(prefix)).then_some(prefix.len())
            }
            None => country
                .filter(|(_, iso)| iso.eq_ignore_ascii_case(entry))
                .map(|(prefix, _)| prefix.len()),
        }
    };
    let builtin = country
        .filter(|(_, iso)| HIGH_RISK.contains(iso))
        .map(|(prefix, _)| prefix.len());
    let extra = plan.high_risk.iter().filter_map(specificity).max();
    let safe = plan.not_high_risk.iter().filter_map(specificity).max();
    (extra.is_some() && extra >= safe) || (builtin.is_some() && builtin > safe)
}

/// The home country as the classifier needs it.
struct Home {
    /// ISO code as in [`COUNTRY_CODES`].
    iso: &'static str,
    /// ITU calling code ("49", "1", "7").
    cc: &'static str,
}

fn home_of(plan: &DialPlan) -> Option<Home> {
    let wanted = plan.home_country.trim();
    if wanted.eq_ignore_ascii_case(PSEUDO) {
        return None;
    }
    let &(prefix, iso) = COUNTRY_CODES
        .iter()
        .find(|(_, iso)| iso.eq_ignore_ascii_case(wanted))?;
    Some(Home {
        iso,
        cc: calling_code(prefix),
    })
}

/// The ITU calling code a table prefix belongs to: "1" and "7" for the shared codes, else
/// its shortest prefix in the table ("441481" -> "44").
fn calling_code(prefix: &'static str) -> &'static str {
    if prefix.starts_with(['1', '7']) {
        return prefix.get(..1).unwrap_or(prefix);
    }
    (1..=3)
        .filter_map(|len| prefix.get(..len))
        .find(|cc| exact_code(cc).is_some())
        .unwrap_or(prefix)
}

fn exact_code(prefix: &str) -> Option<(&'static str, &'static str)> {
    COUNTRY_CODES
        .binary_search_by(|(p, _)| (*p).cmp(prefix))
        .ok()
        .and_then(|i| COUNTRY_CODES.get(i))
        .copied()
}

fn is_known_code(iso: &str) -> bool {
    COUNTRY_CODES.iter().any(|(_, known)| *known == iso)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn only_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Keeps the user part of a URI and only `[0-9+*#]`, at most [`MAX_DIALLED`] of them.
fn sanitise(raw: &str) -> String {
    let user = raw.split(['@', ';']).next().unwrap_or(raw);
    user.chars()
        .filter(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#'))
        .take(MAX_DIALLED)
        .collect()
}

/// Removes the longest matching outbound-route prefix.
fn strip<'a>(number: &'a str, prefixes: &[String]) -> &'a str {
    longest_match(number, prefixes.iter().map(String::as_str))
        .and_then(|len| number.get(len..))
        .unwrap_or(number)
}

/// Length of the longest non-empty candidate `s` starts with.
fn longest_match<'a>(s: &str, candidates: impl Iterator<Item = &'a str>) -> Option<usize> {
    candidates
        .filter(|p| !p.is_empty() && s.starts_with(p))
        .map(str::len)
        .max()
}

/// A number dialled without international prefix, `digits` after any trunk prefix.
fn national(dialled: String, digits: &str, plan: &DialPlan, home: Option<&Home>) -> Classified {
    match home {
        Some(h) => destination(dialled, format!("{}{digits}", h.cc), plan, Some(h)),
        None => Classified {
            dialled,
            e164: None,
            country: None,
            class: Class::Domestic,
        },
    }
}

/// Classifies a number that leaves the building by its E.164 form.
fn destination(dialled: String, e164: String, plan: &DialPlan, home: Option<&Home>) -> Classified {
    let country = country_of(&e164).map(|(_, iso)| iso);
    let class = match home {
        Some(h) if is_home(&e164, h) => {
            let subscriber = e164.get(h.cc.len()..).unwrap_or("");
            let defaults = if plan.premium_prefixes.is_empty() {
                default_premium(h)
            } else {
                &[]
            };
            let premium = plan
                .premium_prefixes
                .iter()
                .map(String::as_str)
                .chain(defaults.iter().copied());
            if longest_match(subscriber, premium).is_some() {
                Class::Premium
            } else {
                Class::Domestic
            }
        }
        _ if is_high_risk(&e164, plan) => Class::HighRisk,
        _ => Class::International,
    };
    Classified {
        dialled,
        e164: Some(e164),
        country,
        class,
    }
}

/// Whether an E.164 number is in the home country (see the module doc for shared codes).
fn is_home(e164: &str, home: &Home) -> bool {
    if !e164.starts_with(home.cc) {
        return false;
    }
    if !matches!(home.cc, "1" | "7") {
        return true;
    }
    country_of(e164).is_some_and(|(_, iso)| us_zone(iso) == us_zone(home.iso))
}

/// The US territories under +1 are domestic for the US and each other.
fn us_zone(iso: &str) -> &str {
    match iso {
        "PR" | "VI" | "GU" | "MP" | "AS" => "US",
        other => other,
    }
}

fn national_prefix<'a>(plan: &'a DialPlan, home: Option<&Home>) -> Option<&'a str> {
    if let Some(configured) = &plan.national_prefix {
        return Some(configured.as_str());
    }
    let home = home?;
    if home.cc == "1" {
        return Some("1");
    }
    match home.iso {
        "RU" | "BY" | "KZ" => Some("8"),
        "HU" => Some("06"),
        "AD" | "BH" | "BZ" | "CR" | "CY" | "CZ" | "DK" | "EE" | "ES" | "FO" | "GL" | "GR"
        | "GT" | "HK" | "HN" | "IS" | "IT" | "KW" | "LI" | "LU" | "LV" | "MC" | "MO" | "MT"
        | "MX" | "NI" | "NO" | "OM" | "PA" | "PL" | "PT" | "QA" | "SG" | "SM" | "SV" | "VA" => None,
        _ => Some("0"),
    }
}

fn default_international(home: Option<&Home>) -> &'static [&'static str] {
    let Some(home) = home else {
        return &["00"];
    };
    if home.cc == "1" {
        return &["011"];
    }
    match home.iso {
        "AU" => &["0011"],
        "JP" => &["010"],
        "KR" => &["001", "002", "00700"],
        "RU" | "BY" | "KZ" => &["810", "00"],
        _ => &["00"],
    }
}

fn default_premium(home: &Home) -> &'static [&'static str] {
    if home.cc == "1" {
        return &["900", "976"];
    }
    match home.iso {
        "AT" => &["900", "901", "930", "931", "939"],
        "AU" => &["190"],
        "BE" => &["90"],
        "CH" => &["900", "901", "906"],
        "DE" => &["900", "137"],
        "DK" => &["90"],
        "ES" => &["803", "806", "807", "905"],
        "FR" => &["89"],
        "GB" => &["9"],
        "IT" => &["89"],
        "NL" => &["900", "906", "909"],
        "PL" => &["70"],
        "SE" => &["900", "939", "944"],
        _ => &[],
    }
}

/// The most characters of a dialled number kept.
const MAX_DIALLED: usize = 40;

/// The longest prefix in [`COUNTRY_CODES`].
const MAX_PREFIX: usize = 7;

/// Pseudo country of the non-geographic codes (satellite and international networks).
const PSEUDO: &str = "XS";

/// Built-in high-risk destinations (ISO codes, see the module doc), sorted.
const HIGH_RISK: &[&str] = &[
    "AC", "AG", "AI", "BB", "BM", "BS", "BY", "CD", "CF", "CG", "CK", "CU", "DM", "DO", "ER", "FK",
    "FM", "GD", "GM", "GN", "GW", "IO", "JM", "KI", "KM", "KN", "KY", "LC", "LR", "LT", "LV", "MH",
    "MS", "MV", "NC", "NR", "NU", "PF", "PG", "SB", "SH", "SL", "SO", "ST", "SX", "TC", "TD", "TK",
    "TO", "TT", "TV", "VC", "VG", "VU", "WF", "WS", "XS", "ZW",
];

/// E.164 prefix -> ISO 3166-1 alpha-2, sorted by prefix (byte order) for binary search.
/// "1" alone is the US; the NANP area codes of the other members follow as "1AAA".
#[rustfmt::skip]
const COUNTRY_CODES: &[(&str, &str)] = &[
    ("1", "US"), ("1204", "CA"), ("1226", "CA"), ("1236", "CA"), ("1242", "BS"), ("1246", "BB"),
    ("1249", "CA"), ("1250", "CA"), ("1263", "CA"), ("1264", "AI"), ("1268", "AG"), ("1284", "VG"),
    ("1289", "CA"), ("1306", "CA"), ("1340", "VI"), ("1343", "CA"), ("1345", "KY"), ("1354", "CA"),
    ("1365", "CA"), ("1367", "CA"), ("1368", "CA"), ("1382", "CA"), ("1387", "CA"), ("1403", "CA"),
    ("1416", "CA"), ("1418", "CA"), ("1428", "CA"), ("1431", "CA"), ("1437", "CA"), ("1438", "CA"),
    ("1441", "BM"), ("1450", "CA"), ("1468", "CA"), ("1473", "GD"), ("1474", "CA"), ("1506", "CA"),
    ("1514", "CA"), ("1519", "CA"), ("1548", "CA"), ("1579", "CA"), ("1581", "CA"), ("1584", "CA"),
    ("1587", "CA"), ("1600", "CA"), ("1604", "CA"), ("1613", "CA"), ("1639", "CA"), ("1647", "CA"),
    ("1649", "TC"), ("1658", "JM"), ("1664", "MS"), ("1670", "MP"), ("1671", "GU"), ("1672", "CA"),
    ("1683", "CA"), ("1684", "AS"), ("1705", "CA"), ("1709", "CA"), ("1721", "SX"), ("1742", "CA"),
    ("1753", "CA"), ("1758", "LC"), ("1767", "DM"), ("1778", "CA"), ("1780", "CA"), ("1782", "CA"),
    ("1784", "VC"), ("1787", "PR"), ("1807", "CA"), ("1809", "DO"), ("1819", "CA"), ("1825", "CA"),
    ("1829", "DO"), ("1849", "DO"), ("1867", "CA"), ("1868", "TT"), ("1869", "KN"), ("1873", "CA"),
    ("1876", "JM"), ("1879", "CA"), ("1902", "CA"), ("1905", "CA"), ("1939", "PR"), ("20", "EG"),
    ("211", "SS"), ("212", "MA"), ("213", "DZ"), ("216", "TN"), ("218", "LY"), ("220", "GM"),
    ("221", "SN"), ("222", "MR"), ("223", "ML"), ("224", "GN"), ("225", "CI"), ("226", "BF"),
    ("227", "NE"), ("228", "TG"), ("229", "BJ"), ("230", "MU"), ("231", "LR"), ("232", "SL"),
    ("233", "GH"), ("234", "NG"), ("235", "TD"), ("236", "CF"), ("237", "CM"), ("238", "CV"),
    ("239", "ST"), ("240", "GQ"), ("241", "GA"), ("242", "CG"), ("243", "CD"), ("244", "AO"),
    ("245", "GW"), ("246", "IO"), ("247", "AC"), ("248", "SC"), ("249", "SD"), ("250", "RW"),
    ("251", "ET"), ("252", "SO"), ("253", "DJ"), ("254", "KE"), ("255", "TZ"), ("256", "UG"),
    ("257", "BI"), ("258", "MZ"), ("260", "ZM"), ("261", "MG"), ("262", "RE"), ("262269", "YT"),
    ("262639", "YT"), ("263", "ZW"), ("264", "NA"), ("265", "MW"), ("266", "LS"), ("267", "BW"),
    ("268", "SZ"), ("269", "KM"), ("27", "ZA"), ("290", "SH"), ("291", "ER"), ("297", "AW"),
    ("298", "FO"), ("299", "GL"), ("30", "GR"), ("31", "NL"), ("32", "BE"), ("33", "FR"),
    ("34", "ES"), ("350", "GI"), ("351", "PT"), ("352", "LU"), ("353", "IE"), ("354", "IS"),
    ("355", "AL"), ("356", "MT"), ("357", "CY"), ("358", "FI"), ("35818", "AX"), ("359", "BG"),
    ("36", "HU"), ("370", "LT"), ("371", "LV"), ("372", "EE"), ("373", "MD"), ("374", "AM"),
    ("375", "BY"), ("376", "AD"), ("377", "MC"), ("378", "SM"), ("380", "UA"), ("381", "RS"),
    ("382", "ME"), ("383", "XK"), ("385", "HR"), ("386", "SI"), ("387", "BA"), ("389", "MK"),
    ("39", "IT"), ("3906698", "VA"), ("40", "RO"), ("41", "CH"), ("420", "CZ"), ("421", "SK"),
    ("423", "LI"), ("43", "AT"), ("44", "GB"), ("441481", "GG"), ("441534", "JE"),
    ("441624", "IM"), ("45", "DK"), ("46", "SE"), ("47", "NO"), ("48", "PL"), ("49", "DE"),
    ("500", "FK"), ("501", "BZ"), ("502", "GT"), ("503", "SV"), ("504", "HN"), ("505", "NI"),
    ("506", "CR"), ("507", "PA"), ("508", "PM"), ("509", "HT"), ("51", "PE"), ("52", "MX"),
    ("53", "CU"), ("54", "AR"), ("55", "BR"), ("56", "CL"), ("57", "CO"), ("58", "VE"),
    ("590", "GP"), ("591", "BO"), ("592", "GY"), ("593", "EC"), ("594", "GF"), ("595", "PY"),
    ("596", "MQ"), ("597", "SR"), ("598", "UY"), ("599", "CW"), ("5993", "BQ"), ("5994", "BQ"),
    ("5997", "BQ"), ("60", "MY"), ("61", "AU"), ("62", "ID"), ("63", "PH"), ("64", "NZ"),
    ("65", "SG"), ("66", "TH"), ("670", "TL"), ("672", "NF"), ("673", "BN"), ("674", "NR"),
    ("675", "PG"), ("676", "TO"), ("677", "SB"), ("678", "VU"), ("679", "FJ"), ("680", "PW"),
    ("681", "WF"), ("682", "CK"), ("683", "NU"), ("685", "WS"), ("686", "KI"), ("687", "NC"),
    ("688", "TV"), ("689", "PF"), ("690", "TK"), ("691", "FM"), ("692", "MH"), ("7", "RU"),
    ("76", "KZ"), ("77", "KZ"), ("800", "XS"), ("808", "XS"), ("81", "JP"), ("82", "KR"),
    ("84", "VN"), ("850", "KP"), ("852", "HK"), ("853", "MO"), ("855", "KH"), ("856", "LA"),
    ("86", "CN"), ("870", "XS"), ("878", "XS"), ("880", "BD"), ("881", "XS"), ("882", "XS"),
    ("883", "XS"), ("886", "TW"), ("888", "XS"), ("90", "TR"), ("91", "IN"), ("92", "PK"),
    ("93", "AF"), ("94", "LK"), ("95", "MM"), ("960", "MV"), ("961", "LB"), ("962", "JO"),
    ("963", "SY"), ("964", "IQ"), ("965", "KW"), ("966", "SA"), ("967", "YE"), ("968", "OM"),
    ("970", "PS"), ("971", "AE"), ("972", "IL"), ("973", "BH"), ("974", "QA"), ("975", "BT"),
    ("976", "MN"), ("977", "NP"), ("979", "XS"), ("98", "IR"), ("992", "TJ"), ("993", "TM"),
    ("994", "AZ"), ("995", "GE"), ("996", "KG"), ("998", "UZ"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(home: &str) -> DialPlan {
        DialPlan {
            home_country: home.into(),
            ..DialPlan::default()
        }
    }

    /// (input, class, e164, country)
    type Case = (
        &'static str,
        Class,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn check(plan: &DialPlan, cases: &[Case]) {
        for &(input, class, e164, country) in cases {
            let got = classify(input, plan);
            assert_eq!(
                (got.class, got.e164.as_deref(), got.country),
                (class, e164, country),
                "{input:?} under {}",
                plan.home_country
            );
        }
    }

    use Class::*;

    #[test]
    fn germany() {
        check(
            &plan("DE"),
            &[
                ("0049 30 1234567", Domestic, Some("49301234567"), Some("DE")),
                ("+49 30 1234567", Domestic, Some("49301234567"), Some("DE")),
                ("030 1234567", Domestic, Some("49301234567"), Some("DE")),
                ("0151 12345678", Domestic, Some("4915112345678"), Some("DE")),
                ("0900 1234567", Premium, Some("499001234567"), Some("DE")),
                ("+49 900 1234567", Premium, Some("499001234567"), Some("DE")),
                ("0053 7 123 4567", HighRisk, Some("5371234567"), Some("CU")),
                (
                    "00 44 20 7946 0000",
                    International,
                    Some("442079460000"),
                    Some("GB"),
                ),
                (
                    "00 1 876 555 1234",
                    HighRisk,
                    Some("18765551234"),
                    Some("JM"),
                ),
                (
                    "00 1 212 555 1234",
                    International,
                    Some("12125551234"),
                    Some("US"),
                ),
                (
                    "00 7 727 123 4567",
                    International,
                    Some("77271234567"),
                    Some("KZ"),
                ),
                (
                    "00 881 6 1234 5678",
                    HighRisk,
                    Some("881612345678"),
                    Some("XS"),
                ),
                ("00 999 123 4567", International, Some("9991234567"), None),
                (
                    "sip:+4930123456@pbx.example:5060",
                    Domestic,
                    Some("4930123456"),
                    Some("DE"),
                ),
                ("101", Internal, None, None),
                ("*97", Internal, None, None),
                ("0123", Internal, None, None),
                ("*72 0301234567", Internal, None, None),
                ("", Internal, None, None),
                ("+", Internal, None, None),
                ("00", Internal, None, None),
            ],
        );
        let dial_nine = DialPlan {
            strip_prefixes: vec!["9".into(), "99".into()],
            ..plan("DE")
        };
        check(
            &dial_nine,
            &[
                (
                    "9 0049 30 1234567",
                    Domestic,
                    Some("49301234567"),
                    Some("DE"),
                ),
                ("99 030 1234567", Domestic, Some("49301234567"), Some("DE")),
                ("9 0900 1234567", Premium, Some("499001234567"), Some("DE")),
                (
                    "9 00 53 7 123 4567",
                    HighRisk,
                    Some("5371234567"),
                    Some("CU"),
                ),
                ("9101", Internal, None, None),
            ],
        );
        assert_eq!(
            classify("9 0049 30 1234567", &dial_nine).dialled,
            "90049301234567"
        );
    }

    #[test]
    fn united_states() {
        check(
            &plan("US"),
            &[
                (
                    "011 44 20 7946 0000",
                    International,
                    Some("442079460000"),
                    Some("GB"),
                ),
                (
                    "011 53 7 123 4567",
                    HighRisk,
                    Some("5371234567"),
                    Some("CU"),
                ),
                ("1 876 555 1234", HighRisk, Some("18765551234"), Some("JM")),
                ("876 555 1234", HighRisk, Some("18765551234"), Some("JM")),
                ("+1 809 555 1234", HighRisk, Some("18095551234"), Some("DO")),
                ("1 212 555 1234", Domestic, Some("12125551234"), Some("US")),
                ("(212) 555-1234", Domestic, Some("12125551234"), Some("US")),
                ("+1 212 555 1234", Domestic, Some("12125551234"), Some("US")),
                ("1 787 555 1234", Domestic, Some("17875551234"), Some("PR")),
                ("1 900 555 1234", Premium, Some("19005551234"), Some("US")),
                ("976 555 1234", Premium, Some("19765551234"), Some("US")),
                (
                    "1 416 555 1234",
                    International,
                    Some("14165551234"),
                    Some("CA"),
                ),
                ("2001", Internal, None, None),
                ("*69", Internal, None, None),
            ],
        );
        check(
            &plan("CA"),
            &[
                ("416 555 1234", Domestic, Some("14165551234"), Some("CA")),
                (
                    "1 212 555 1234",
                    International,
                    Some("12125551234"),
                    Some("US"),
                ),
                ("1 876 555 1234", HighRisk, Some("18765551234"), Some("JM")),
            ],
        );
        check(
            &plan("JM"),
            &[
                ("876 555 1234", Domestic, Some("18765551234"), Some("JM")),
                ("1 658 555 1234", Domestic, Some("16585551234"), Some("JM")),
                (
                    "1 212 555 1234",
                    International,
                    Some("12125551234"),
                    Some("US"),
                ),
            ],
        );
    }

    #[test]
    fn united_kingdom_and_no_trunk_prefix() {
        check(
            &plan("GB"),
            &[
                (
                    "00 49 30 1234567",
                    International,
                    Some("49301234567"),
                    Some("DE"),
                ),
                ("020 7946 0000", Domestic, Some("442079460000"), Some("GB")),
                ("01481 123456", Domestic, Some("441481123456"), Some("GG")),
                ("0906 123 4567", Premium, Some("449061234567"), Some("GB")),
                (
                    "+44 909 876 5432",
                    Premium,
                    Some("449098765432"),
                    Some("GB"),
                ),
                ("00 290 1234", HighRisk, Some("2901234"), Some("SH")),
            ],
        );
        check(
            &plan("ES"),
            &[
                ("912 345 678", Domestic, Some("34912345678"), Some("ES")),
                ("905 123 456", Premium, Some("34905123456"), Some("ES")),
                ("900 123 456", Domestic, Some("34900123456"), Some("ES")),
            ],
        );
        check(
            &plan("IT"),
            &[("06 1234 5678", Domestic, Some("390612345678"), Some("IT"))],
        );
        check(
            &plan("RU"),
            &[
                ("8 495 123 4567", Domestic, Some("74951234567"), Some("RU")),
                (
                    "8 10 49 30 1234567",
                    International,
                    Some("49301234567"),
                    Some("DE"),
                ),
                (
                    "8 727 123 4567",
                    International,
                    Some("77271234567"),
                    Some("KZ"),
                ),
            ],
        );
    }

    #[test]
    fn plan_overrides() {
        let custom = DialPlan {
            international_prefix: vec!["000".into()],
            national_prefix: Some(String::new()),
            premium_prefixes: vec!["30".into()],
            internal_max_digits: 4,
            ..plan("DE")
        };
        check(
            &custom,
            &[
                (
                    "000 44 20 7946 0000",
                    International,
                    Some("442079460000"),
                    Some("GB"),
                ),
                ("+49 30 1234567", Premium, Some("49301234567"), Some("DE")),
                ("30 1234567", Premium, Some("49301234567"), Some("DE")),
                ("12345", Domestic, Some("4912345"), Some("DE")),
                ("1234", Internal, None, None),
            ],
        );
        let unset = plan("");
        check(
            &unset,
            &[
                (
                    "0049 30 1234567",
                    International,
                    Some("49301234567"),
                    Some("DE"),
                ),
                ("0053 7 123 4567", HighRisk, Some("5371234567"), Some("CU")),
                ("030 1234567", Domestic, None, None),
                ("101", Internal, None, None),
            ],
        );
    }

    #[test]
    fn high_risk_adjustments() {
        let de = plan("DE");
        assert!(is_high_risk("5371234567", &de));
        assert!(is_high_risk("+881612345678", &de));
        assert!(!is_high_risk("442079460000", &de));
        assert!(!is_high_risk("", &de));
        assert!(!is_high_risk("ü", &de));

        let adjusted = DialPlan {
            high_risk: vec!["GB".into(), "+4930".into()],
            not_high_risk: vec!["CU".into(), "+4420".into(), "+1876".into()],
            ..plan("DE")
        };
        assert!(!is_high_risk("5371234567", &adjusted));
        assert!(!is_high_risk("442079460000", &adjusted));
        assert!(is_high_risk("441611234567", &adjusted));
        assert!(!is_high_risk("18765551234", &adjusted));
        assert!(
            is_high_risk("16585551234", &adjusted),
            "the other JM area code"
        );
        assert!(is_high_risk("49301234567", &adjusted));
        check(
            &adjusted,
            &[
                (
                    "0053 7 123 4567",
                    International,
                    Some("5371234567"),
                    Some("CU"),
                ),
                (
                    "0044 161 123 4567",
                    HighRisk,
                    Some("441611234567"),
                    Some("GB"),
                ),
                (
                    "0044 20 7946 0000",
                    International,
                    Some("442079460000"),
                    Some("GB"),
                ),
                // Home numbers are never high-risk.
                ("030 1234567", Domestic, Some("49301234567"), Some("DE")),
            ],
        );
        // Less specific than the built-in entry: still high-risk.
        let broad = DialPlan {
            not_high_risk: vec!["+1".into()],
            ..plan("US")
        };
        assert!(is_high_risk("18765551234", &broad));
    }

    #[test]
    fn country_lookup() {
        for (e164, want) in [
            ("18765551234", Some(("1876", "JM"))),
            ("12125551234", Some(("1", "US"))),
            ("1416", Some(("1416", "CA"))),
            ("1", Some(("1", "US"))),
            ("77271234567", Some(("77", "KZ"))),
            ("74951234567", Some(("7", "RU"))),
            ("44", Some(("44", "GB"))),
            ("441481123456", Some(("441481", "GG"))),
            ("+4930", Some(("49", "DE"))),
            ("881612345678", Some(("881", "XS"))),
            ("3906698", Some(("3906698", "VA"))),
            ("390612345678", Some(("39", "IT"))),
            ("262269123456", Some(("262269", "YT"))),
            ("44é", Some(("44", "GB"))),
            ("999", None),
            ("0", None),
            ("", None),
            ("é44", None),
        ] {
            assert_eq!(country_of(e164), want, "{e164:?}");
        }
    }

    #[test]
    fn tables_are_well_formed() {
        for pair in COUNTRY_CODES.windows(2) {
            if let [a, b] = pair {
                assert!(a.0 < b.0, "not sorted or duplicate: {a:?} {b:?}");
            }
        }
        for &(prefix, iso) in COUNTRY_CODES {
            assert!(
                is_digits(prefix) && prefix.len() <= MAX_PREFIX,
                "{prefix:?}"
            );
            assert!(!prefix.starts_with('0'), "{prefix:?}");
            assert!(
                iso.len() == 2 && iso.bytes().all(|b| b.is_ascii_uppercase()),
                "{iso:?}"
            );
            // Every longer prefix lies under a real calling code.
            assert!(calling_code(prefix).len() <= 3, "{prefix:?}");
        }
        for pair in HIGH_RISK.windows(2) {
            if let [a, b] = pair {
                assert!(a < b, "HIGH_RISK not sorted: {a} {b}");
            }
        }
        for iso in HIGH_RISK {
            assert!(is_known_code(iso), "{iso} is not in COUNTRY_CODES");
        }
        assert!(COUNTRY_CODES.iter().all(|(p, _)| p.len() <= MAX_PREFIX));
        assert!(COUNTRY_CODES.iter().any(|(p, _)| p.len() == MAX_PREFIX));
    }

    #[test]
    fn home_calling_codes() {
        for (iso, cc) in [
            ("DE", "49"),
            ("US", "1"),
            ("CA", "1"),
            ("JM", "1"),
            ("KZ", "7"),
            ("GG", "44"),
            ("VA", "39"),
            ("YT", "262"),
            ("BQ", "599"),
            ("AC", "247"),
        ] {
            assert_eq!(home_of(&plan(iso)).map(|h| h.cc), Some(cc), "{iso}");
        }
        assert!(home_of(&plan("XS")).is_none());
        assert!(home_of(&plan("")).is_none());
    }

    #[test]
    fn validation() {
        assert_eq!(DialPlan::default().validate(), Ok(()));
        let good = DialPlan {
            strip_prefixes: vec!["9".into()],
            international_prefix: vec!["+".into(), "00".into(), "+00".into()],
            national_prefix: Some(String::new()),
            premium_prefixes: vec!["900".into()],
            high_risk: vec!["XS".into(), "+1876".into()],
            not_high_risk: vec!["LV".into(), "+3712".into()],
            ..plan("DE")
        };
        assert_eq!(good.validate(), Ok(()));

        let bad = |plan: DialPlan, key: &str, value: &str| {
            let (got_key, message) = plan.validate().expect_err(value);
            assert_eq!(got_key, key, "{message}");
            assert!(message.contains(value), "{message}");
        };
        bad(plan("XX"), "fraud.home_country", "XX");
        bad(plan("de"), "fraud.home_country", "de");
        bad(plan("XS"), "fraud.home_country", "XS");
        bad(
            DialPlan {
                strip_prefixes: vec!["9a".into()],
                ..plan("DE")
            },
            "fraud.strip_prefixes",
            "9a",
        );
        bad(
            DialPlan {
                premium_prefixes: vec![String::new()],
                ..plan("DE")
            },
            "fraud.premium_prefixes",
            "\"\"",
        );
        bad(
            DialPlan {
                international_prefix: vec!["0+0".into()],
                ..plan("DE")
            },
            "fraud.international_prefix",
            "0+0",
        );
        bad(
            DialPlan {
                national_prefix: Some("O".into()),
                ..plan("DE")
            },
            "fraud.national_prefix",
            "O",
        );
        bad(
            DialPlan {
                high_risk: vec!["ZZ".into()],
                ..plan("DE")
            },
            "fraud.high_risk",
            "ZZ",
        );
        bad(
            DialPlan {
                high_risk: vec!["881".into()],
                ..plan("DE")
            },
            "fraud.high_risk",
            "881",
        );
        bad(
            DialPlan {
                not_high_risk: vec!["+".into()],
                ..plan("DE")
            },
            "fraud.not_high_risk",
            "+",
        );
        bad(
            DialPlan {
                high_risk: vec!["CU".into()],
                not_high_risk: vec!["CU".into()],
                ..plan("DE")
            },
            "fraud.not_high_risk",
            "CU",
        );
        for n in [0, 16] {
            bad(
                DialPlan {
                    internal_max_digits: n,
                    ..plan("DE")
                },
                "fraud.internal_max_digits",
                &n.to_string(),
            );
        }
    }

    #[test]
    fn serde_names() {
        for class in Class::OUTBOUND.into_iter().chain([Internal]) {
            let json = serde_json::to_string(&class).expect("serialises");
            assert_eq!(json, format!("\"{}\"", class.as_str()));
            let back: Class = serde_json::from_str(&json).expect("deserialises");
            assert_eq!(back, class);
        }
        let plan: DialPlan =
            serde_json::from_str(r#"{"home_country": "DE"}"#).expect("deserialises");
        assert_eq!(plan.internal_max_digits, 6);
        assert_eq!(plan.national_prefix, None);
    }

    fn any_plan() -> impl Strategy<Value = DialPlan> {
        let list = || prop::collection::vec(".{0,4}|[0-9+]{1,4}", 0..3);
        (
            "DE|US|GB|ES|RU|JM|XS|.{0,3}",
            list(),
            list(),
            prop::option::of(".{0,3}|[0-9]{1,2}"),
            list(),
            list(),
            list(),
            0usize..40,
        )
            .prop_map(
                |(home, strip, intl, national, premium, high, not_high, max)| DialPlan {
                    home_country: home,
                    strip_prefixes: strip,
                    international_prefix: intl,
                    national_prefix: national,
                    premium_prefixes: premium,
                    high_risk: high,
                    not_high_risk: not_high,
                    internal_max_digits: max,
                },
            )
    }

    fn assert_well_formed(got: &Classified) {
        assert!(got.dialled.chars().count() <= MAX_DIALLED, "{got:?}");
        assert!(
            got.dialled
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#')),
            "{got:?}"
        );
        if let Some(e164) = &got.e164 {
            assert!(is_digits(e164), "{got:?}");
            assert_ne!(got.class, Internal, "{got:?}");
            assert_eq!(got.country, country_of(e164).map(|(_, iso)| iso), "{got:?}");
        }
    }

    proptest! {
        #[test]
        fn classify_never_panics(input in ".{0,80}|[0-9+*# ]{0,60}", home in "DE|US|GB|ES|RU|JM") {
            let got = classify(&input, &plan(&home));
            assert_well_formed(&got);
            prop_assert_eq!(got.class == Internal, got.e164.is_none(), "{:?}", got);
        }

        #[test]
        fn classify_never_panics_on_any_plan(input in ".{0,60}|[0-9+*#]{0,50}", plan in any_plan()) {
            let got = classify(&input, &plan);
            assert_well_formed(&got);
            let _ = plan.validate();
            let _ = is_high_risk(&input, &plan);
            let _ = country_of(&input);
        }
    }
}
