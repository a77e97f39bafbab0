//! The `crowdsec` thread (`[crowdsec]`): pulls the LAPI's decision stream every `poll`
//! (`crowdsec.rs`) and hands each pull to the engine (`engine/crowdsec.rs`). The first pull,
//! and the first after any failure, is a startup pull (every active decision), so what was
//! missed while the LAPI or pbxguard was down is reconciled; a failed pull changes nothing
//! that is enforced.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    config::Config,
    engine::actor::{Command, EngineHandle},
};

/// Starts the poller when `[crowdsec]` is set.
pub fn spawn(
    config: &Config,
    engine: EngineHandle,
    stop: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let crowdsec = config.crowdsec.clone()?;
    let thread = std::thread::Builder::new()
        .name("crowdsec".into())
        .spawn(move || {
            let mut startup = true;
            let mut next = Instant::now();
            while !stop.load(Ordering::Acquire) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                next = Instant::now() + crowdsec.poll;
                let pulled = crowdsec.key().map_err(|e| e.to_string()).and_then(|key| {
                    crate::crowdsec::fetch_stream(
                        &crowdsec.lapi_url,
                        &key,
                        startup,
                        crowdsec.poll.max(Duration::from_secs(5)),
                    )
                    .map_err(|e| e.to_string())
                });
                let command = match pulled {
                    Ok(delta) => {
                        let command = Command::Crowdsec(delta, startup);
                        startup = false;
                        command
                    }
                    Err(e) => {
                        if !startup {
                            tracing::warn!(error = %e, "CrowdSec LAPI not reachable; enforced decisions stay, resyncing when it answers");
                        }
                        startup = true;
                        Command::CrowdsecFailed(crowdsec.lapi_url.clone(), e)
                    }
                };
                if !engine.send_blocking(command) {
                    return;
                }
            }
        })
        .expect("spawn crowdsec thread");
    Some(thread)
}
