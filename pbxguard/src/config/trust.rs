//! `[trust]`: addresses trusted because the PBX itself is configured to talk to them.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::units::duration_serde;

/// `[trust]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Trust the trunks and fixed peers named in the PBX's own configs (PJSIP identify and
    /// aor contacts, chan_sip hosts, sofia gateways, dispatcher and permissions lists):
    /// never banned, whatever a forged packet or log line says.
    pub pbx_configs: bool,
    /// Where the PBX configs are (`/`: `/etc/asterisk`, `/etc/freeswitch`, ...); a
    /// different root is for containers and tests.
    pub root: PathBuf,
    /// How often host names in those configs are resolved again (file changes are picked
    /// up within seconds).
    #[serde(with = "duration_serde")]
    pub refresh: Duration,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            pbx_configs: true,
            root: "/".into(),
            refresh: Duration::from_secs(300),
        }
    }
}
